//! The standard `process_*` families about the agent itself, read from a
//! running `vantage run`'s /metrics and checked against what the kernel
//! says about the same pid in /proc, read just before and just after the
//! scrape.

use std::process::Command;
use std::time::Duration;

use vantage_tests::{free_port, http_get, vantage_bin, wait_for, Proc, TempDir};

/// What /proc/<pid> says, in the units of the process_* families.
#[derive(Debug, Clone, Copy)]
struct Kernel {
    cpu_seconds: f64,
    start_time: f64,
    vsize: f64,
    rss: f64,
    open_fds: f64,
    max_fds: f64,
    max_address_space: f64,
}

fn kernel(pid: u32) -> Kernel {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<f64> = rest.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(f64::NAN)).collect();
    // fields[0] is proc(5)'s field 4 (ppid).
    let field = |n: usize| fields[n - 4];
    // SAFETY: sysconf has no preconditions.
    let (hz, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK) as f64, libc::sysconf(libc::_SC_PAGESIZE) as f64) };
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft = |name: &str| -> f64 {
        let line = limits.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {limits}"));
        match line[name.len()..].split_whitespace().next().unwrap() {
            "unlimited" => u64::MAX as f64,
            v => v.parse().unwrap(),
        }
    };
    Kernel {
        cpu_seconds: (field(14) + field(15)) / hz,
        start_time: btime + field(22) / hz,
        vsize: field(23),
        rss: field(24) * page,
        open_fds: std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as f64,
        max_fds: soft("Max open files"),
        max_address_space: soft("Max address space"),
    }
}

/// The one sample of `name` (no labels, or only those the agent adds).
fn value(metrics: &str, name: &str) -> f64 {
    let mut found = metrics
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')));
    let line = found.next().unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"));
    assert!(found.next().is_none(), "{name} more than once");
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

#[test]
fn process_families_match_proc_of_the_running_agent() {
    let dir = TempDir::new("selfmetrics");
    let port = free_port();
    let config = dir.write(
        "agent.toml",
        &format!(
            "[agent]\nlisten_addr = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[ebpf]\nenabled = false\n\
             [docker]\nenabled = false\n[node]\nenabled = false\n",
            dir.path().display()
        ),
    );
    // No source runs, so nothing but the scrape opens files or allocates
    // between the kernel readings and the agent's own.
    let mut cmd = Command::new(vantage_bin());
    cmd.args(["run", "--config", config.to_str().unwrap()]);
    let agent = Proc::spawn("vantage", cmd, &dir.path().join("agent.log"));
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_for(Duration::from_secs(10), || http_get(&url).filter(|(s, _)| *s == 200)).unwrap_or_else(|| {
        panic!("no /metrics within 10 s; log: {}", std::fs::read_to_string(dir.path().join("agent.log")).unwrap())
    });
    let pid = agent.pid();

    let before = kernel(pid);
    let (_, metrics) = http_get(&url).expect("/metrics");
    let after = kernel(pid);
    eprintln!("before {before:?}\nafter  {after:?}");

    for (name, kind, help) in [
        ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds."),
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes."),
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes."),
        ("process_virtual_memory_max_bytes", "gauge", "Maximum amount of virtual memory available in bytes."),
        ("process_open_fds", "gauge", "Number of open file descriptors."),
        ("process_max_fds", "gauge", "Maximum number of open file descriptors."),
        ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds."),
    ] {
        assert!(metrics.contains(&format!("# HELP {name} {help}\n")), "help of {name}:\n{metrics}");
        assert!(metrics.contains(&format!("# TYPE {name} {kind}\n")), "type of {name}:\n{metrics}");
    }
    assert!(!metrics.contains("vantage_process_"), "the old vantage_process_* names are gone:\n{metrics}");

    // Fixed for the process's life: exact.
    assert_eq!(value(&metrics, "process_start_time_seconds"), before.start_time);
    assert_eq!(value(&metrics, "process_max_fds"), before.max_fds);
    assert_eq!(value(&metrics, "process_virtual_memory_max_bytes"), before.max_address_space);
    // A counter read between the two kernel readings.
    let cpu = value(&metrics, "process_cpu_seconds_total");
    assert!(cpu >= before.cpu_seconds && cpu <= after.cpu_seconds, "cpu {cpu} outside {before:?}..{after:?}");
    let within = |name: &str, v: f64, a: f64, b: f64, slack: f64| {
        assert!(v >= a.min(b) - slack && v <= a.max(b) + slack, "{name} {v}: kernel said {a} then {b} (±{slack})");
    };
    // Serving the scrape allocates (the response body, the connection's
    // buffers): 4 MiB of resident memory either way.
    within("rss", value(&metrics, "process_resident_memory_bytes"), before.rss, after.rss, 4.0 * 1048576.0);
    // A runtime thread may reserve or release a 64 MiB malloc arena at
    // any moment; the mapping changes by at most one of those.
    within("vsize", value(&metrics, "process_virtual_memory_bytes"), before.vsize, after.vsize, 64.0 * 1048576.0);
    // The scrape's own connection is open while the agent counts: 2 more
    // descriptors at most (the accepted socket, and one the runtime may use).
    within("open fds", value(&metrics, "process_open_fds"), before.open_fds, after.open_fds + 2.0, 0.0);
}
