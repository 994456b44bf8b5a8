//! The node source against the reference: Debian's node_exporter 1.5 runs
//! on a loopback port and `vantage collect --once` runs at the same moment;
//! every family of the collectors Vantage implements must match in name,
//! type, label names and value (see `check_value` for the tolerances).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use vantage_tests::{free_port, http_get, require_program, vantage_bin, wait_for, Proc, TempDir};

/// One exposition family: type and series (labels without empty values,
/// job and instance) to value.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    series: BTreeMap<String, f64>,
    label_names: BTreeSet<String>,
}

/// Parses Prometheus text exposition into families by name; a sample goes
/// to the family of the TYPE line above it (histogram parts included).
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            current = name.to_string();
            out.entry(current.clone()).or_default().kind = kind.to_string();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series_name, labels, value) = parse_sample(line);
        let family = if series_name.starts_with(&current) { current.clone() } else { series_name.clone() };
        let f = out.entry(family).or_default();
        let mut key = series_name.clone();
        let kept: Vec<(String, String)> =
            labels.into_iter().filter(|(k, v)| !v.is_empty() && k != "job" && k != "instance").collect();
        for (k, _) in &kept {
            f.label_names.insert(k.clone());
        }
        key.push('{');
        key.push_str(&kept.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(","));
        key.push('}');
        f.series.insert(key, value);
    }
    out
}

fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
    let end = line.find(['{', ' ']).expect("sample line");
    let name = line[..end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[end..];
    if rest.starts_with('{') {
        let mut chars = rest.char_indices().skip(1).peekable();
        let mut key = String::new();
        let close;
        loop {
            let (i, c) = chars.next().expect("unterminated labels");
            match c {
                '}' => {
                    close = i;
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("unterminated value").1 {
                            '"' => break,
                            '\\' => match chars.next().expect("escape").1 {
                                'n' => value.push('\n'),
                                c => value.push(c),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        }
        rest = &rest[close + 1..];
    }
    let v = rest.trim();
    let value = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    (name, labels, value)
}

/// Prefixes of the families produced by the collectors Vantage implements.
const IN_SCOPE: &[&str] = &[
    "node_cpu_seconds_total",
    "node_cpu_guest_seconds_total",
    "node_memory_",
    "node_load",
    "node_disk_",
    "node_network_",
    "node_filesystem_",
    "node_context_switches_total",
    "node_forks_total",
    "node_intr_total",
    "node_boot_time_seconds",
    "node_procs_",
    "node_vmstat_",
    "node_netstat_",
    "node_sockstat_",
    "node_pressure_",
    "node_schedstat_",
    "node_filefd_",
    "node_entropy_",
    "node_time_",
    "node_timex_",
    "node_uname_info",
    "node_os_",
    "node_nf_conntrack_",
    "node_softnet_",
    "node_textfile_",
    "node_scrape_collector_success",
    "node_arp_",
    "node_udp_queues",
    "node_hwmon_",
    "node_thermal_zone_",
    "node_cooling_device_",
    "node_cpu_frequency_",
    "node_cpu_scaling_",
    "node_power_supply_",
    "node_bonding_",
    "node_rapl_",
    "node_nfs_",
    "node_nfsd_",
    "node_ipvs_",
    "node_cpu_isolated",
    "node_cpu_core_throttles_total",
    "node_cpu_package_throttles_total",
    // From the text file below.
    "vantage_test_",
];

/// The collectors Vantage implements (agent/src/sources/node/mod.rs).
const VANTAGE_COLLECTORS: &[&str] = &[
    "arp",
    "bcache",
    "bonding",
    "btrfs",
    "conntrack",
    "cpu",
    "cpufreq",
    "diskstats",
    "dmi",
    "edac",
    "entropy",
    "fibrechannel",
    "filefd",
    "filesystem",
    "hwmon",
    "infiniband",
    "ipvs",
    "loadavg",
    "mdadm",
    "meminfo",
    "netclass",
    "netdev",
    "netstat",
    "nfs",
    "nfsd",
    "nvme",
    "os",
    "powersupplyclass",
    "pressure",
    "processes",
    "rapl",
    "schedstat",
    "selinux",
    "sockstat",
    "softnet",
    "stat",
    "tapestats",
    "textfile",
    "thermal_zone",
    "time",
    "timex",
    "udp_queues",
    "uname",
    "vmstat",
    "xfs",
    "zfs",
];

/// Whether `name`'s values are fixed facts (info metrics, mtimes, ...),
/// compared exactly.
fn exact(name: &str) -> bool {
    name.ends_with("_info")
        || matches!(
            name,
            "node_os_version"
                | "node_textfile_mtime_seconds"
                | "node_textfile_scrape_error"
                | "node_time_zone_offset_seconds"
                | "node_scrape_collector_success"
                | "node_boot_time_seconds"
                | "node_memory_MemTotal_bytes"
                | "node_filefd_maximum"
                | "node_nf_conntrack_entries_limit"
                | "node_entropy_pool_size_bits"
        )
        || name.starts_with("vantage_test_")
        || name.starts_with("node_network_") && !name.contains("_total") && !name.ends_with("_up")
}

/// Checks Vantage's value `v` against node_exporter's before (`a`, taken
/// at the same moment) and after (`b`, about a second later).
///
/// - Exact families must be equal.
/// - Counters (and untyped vmstat/netstat counters) must lie between the
///   two node_exporter readings, widened by their difference on both sides:
///   the drift of a second or two.
/// - Gauges must be within 2 % of the same-moment reading, or within the
///   range node_exporter itself saw move over that second widened by 2 %:
///   free memory, sockets, open files, conntrack entries and I/Os in flight
///   move faster than 2 % a second on this shared 2-core machine.
///   `node_time_seconds` gets 5 s; running/blocked process counts (which
///   count the collectors themselves) get 3 processes; TCP socket counts get
///   4 sockets, as node_exporter counts its own scrape connection's ends;
///   allocated file handles get 32 (see below);
///   memory gauges get at least 32 MiB, as Vantage's own reading includes
///   its freshly started debug binary paging in (see below).
fn check_value(family: &str, kind: &str, v: f64, a: f64, b: f64) -> bool {
    if exact(family) {
        return v == a || (v.is_nan() && a.is_nan());
    }
    let (lo, hi) = (a.min(b), a.max(b));
    let d = hi - lo;
    match family {
        "node_time_seconds" => return (v - a).abs() < 5.0,
        "node_procs_running" | "node_procs_blocked" => return v >= lo - 3.0 && v <= hi + 3.0,
        // A machine-wide count that every process moves: node_exporter's
        // collectors each hold a file open while its scrape runs, and
        // cargo's other test binaries come and go (CI once saw 428 against
        // 438, 2.3 %).
        "node_filefd_allocated" => return v >= lo - 32.0 && v <= hi + 32.0,
        // node_exporter is always measured with its own scrape connection
        // open (both ends are on this host); Vantage reads with none.
        "node_netstat_Tcp_CurrEstab"
        | "node_sockstat_TCP_inuse"
        | "node_sockstat_TCP_alloc"
        | "node_sockstat_sockets_used" => return v >= lo - 4.0 && v <= hi + 4.0,
        _ => {}
    }
    if kind == "counter" || kind == "untyped" {
        let slack = d + 1e-9 * hi.abs();
        return v >= lo - slack && v <= hi + slack;
    }
    let mut pct = 0.02 * a.abs().max(b.abs());
    if family.starts_with("node_memory_") && family.ends_with("_bytes") {
        // The reading Vantage takes includes Vantage itself: a freshly
        // started debug binary (about 100 MiB on disk) paging itself in
        // (Mapped, Active_file, Cached ...), its threads' kernel stacks and
        // page tables. node_exporter's two readings never contain it.
        pct = pct.max(32.0 * 1024.0 * 1024.0);
    }
    (v - a).abs() <= pct || (v >= lo - d - pct && v <= hi + d + pct)
}

fn in_scope(name: &str) -> bool {
    IN_SCOPE.iter().any(|p| name.starts_with(p))
}

const TEXTFILE: &str = "# HELP vantage_test_backup_ok Whether the last backup worked.\n\
# TYPE vantage_test_backup_ok gauge\n\
vantage_test_backup_ok{db=\"main\",note=\"a \\\"quoted\\\" word\"} 1\n\
vantage_test_backup_ok{db=\"logs\"} 0\n\
# TYPE vantage_test_latency_seconds histogram\n\
vantage_test_latency_seconds_bucket{le=\"0.1\"} 3\n\
vantage_test_latency_seconds_bucket{le=\"+Inf\"} 5\n\
vantage_test_latency_seconds_sum 1.25\n\
vantage_test_latency_seconds_count 5\n";

/// Held by the tests that start processes, so the family-by-family
/// comparison never runs beside the hung-mount test's FUSE server.
static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn matches_node_exporter_family_by_family() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let ne_bin = require_program("prometheus-node-exporter", "prometheus-node-exporter");
    let dir = TempDir::new("node");
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    std::fs::write(textfiles.join("backup.prom"), TEXTFILE).unwrap();

    let port = free_port();
    let mut cmd = Command::new(ne_bin);
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--collector.textfile.directory={}", textfiles.display()));
    let _ne = Proc::spawn("node_exporter", cmd, &dir.path().join("node_exporter.log"));
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_for(Duration::from_secs(10), || http_get(&url).filter(|(s, _)| *s == 200))
        .expect("node_exporter did not answer on /metrics within 10 s");

    let config = dir.write(
        "vantage.toml",
        &format!(
            "[node]\njob = \"t-node-exporter\"\ninstance = \"t-host\"\ntextfile_directory = \"{}\"\n\
             [ebpf]\nenabled = false\n[docker]\nenabled = false\n",
            textfiles.display()
        ),
    );
    // Both at the same moment, then node_exporter once more a second later
    // to see how fast each value moves.
    let bin = vantage_bin();
    let config_arg = config.display().to_string();
    let vantage = std::thread::spawn(move || {
        Command::new(bin).args(["collect", "--once", "--config", &config_arg]).output().expect("run vantage")
    });
    let (_, ne_text) = http_get(&url).expect("node_exporter /metrics");
    let out = vantage.join().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let (_, ne_later) = http_get(&url).expect("node_exporter /metrics");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vantage collect failed: {stderr}");
    let vantage_text = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::write(dir.path().join("vantage.prom"), &vantage_text).unwrap();

    let ne = parse(&ne_text);
    let ne2 = parse(&ne_later);
    let ours = parse(&vantage_text);
    let mut problems = Vec::new();
    let mut compared_families = 0;
    let mut compared_series = 0;
    for (name, theirs) in ne.iter().filter(|(n, _)| in_scope(n)) {
        let Some(mine) = ours.get(name) else {
            problems.push(format!("{name}: missing from Vantage"));
            continue;
        };
        compared_families += 1;
        if mine.kind != theirs.kind {
            problems.push(format!("{name}: type {} here, {} in node_exporter", mine.kind, theirs.kind));
        }
        if mine.label_names != theirs.label_names {
            problems.push(format!(
                "{name}: label names {:?} here, {:?} in node_exporter",
                mine.label_names, theirs.label_names
            ));
        }
        for (series, &a) in &theirs.series {
            // node_exporter reports collectors Vantage lacks; those are not compared.
            if name == "node_scrape_collector_success"
                && !VANTAGE_COLLECTORS.iter().any(|c| series.contains(&format!("\"{c}\"")))
            {
                continue;
            }
            let Some(&v) = mine.series.get(series) else {
                problems.push(format!("{series}: missing from Vantage"));
                continue;
            };
            let b = ne2.get(name).and_then(|f| f.series.get(series)).copied().unwrap_or(a);
            compared_series += 1;
            if !check_value(name, &theirs.kind, v, a, b) {
                problems.push(format!("{series}: {v} here, node_exporter {a} then {b}"));
            }
        }
        for series in mine.series.keys() {
            if !theirs.series.contains_key(series) && name != "node_scrape_collector_success" {
                problems.push(format!("{series}: only in Vantage"));
            }
        }
    }
    // Every node series carries the configured job and instance.
    let node_lines: Vec<&str> = vantage_text.lines().filter(|l| l.starts_with("node_")).collect();
    assert!(node_lines.len() > 300, "only {} node series", node_lines.len());
    for line in &node_lines {
        if !(line.contains("job=\"t-node-exporter\"") && line.contains("instance=\"t-host\"")) {
            problems.push(format!("without job/instance: {line}"));
        }
    }
    assert!(vantage_text.contains("up{instance=\"t-host\",job=\"t-node-exporter\"} 1"), "no up series");
    eprintln!("compared {compared_families} families, {compared_series} series");
    assert!(compared_families >= 150, "only {compared_families} families compared");
    assert!(problems.is_empty(), "{} differences from node_exporter:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn host_paths_from_the_environment_and_one_warning_for_foreign_collectors() {
    let dir = TempDir::new("node-env");
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    dir.write("proc/loadavg", "7.25 3.50 1.75 2/300 999\n");
    let config = dir.write(
        "vantage.toml",
        "[node]\njob = \"e-node-exporter\"\ninstance = \"e\"\n\
         disable = [\"wifi\", \"drbd\", \"ksmd\", \"qdisc\", \"meminfo\"]\n\
         [ebpf]\nenabled = false\n[docker]\nenabled = false\n",
    );
    let out = Command::new(vantage_bin())
        .args(["collect", "--once", "--config", &config.display().to_string()])
        .env("HOST_PROC", dir.path().join("proc"))
        .env("HOST_SYS", dir.path().join("sys"))
        .env("HOST_ROOT", dir.path())
        .output()
        .expect("run vantage");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<(String, f64)> = vantage_tests::parse_text(&stdout);
    let get = |series: &str| lines.iter().find(|(s, _)| s == series).map(|(_, v)| *v);
    assert_eq!(get("node_load1{instance=\"e\",job=\"e-node-exporter\"}"), Some(7.25), "{stdout}");
    assert_eq!(get("node_load15{instance=\"e\",job=\"e-node-exporter\"}"), Some(1.75));
    // The host's /proc/stat is not under HOST_PROC: that collector fails, alone.
    assert_eq!(
        get("node_scrape_collector_success{collector=\"cpu\",instance=\"e\",job=\"e-node-exporter\"}"),
        Some(0.0)
    );
    assert_eq!(
        get("node_scrape_collector_success{collector=\"loadavg\",instance=\"e\",job=\"e-node-exporter\"}"),
        Some(1.0)
    );
    assert!(!stdout.contains("collector=\"meminfo\""), "meminfo was disabled");
    assert_eq!(stderr.matches("not part of Vantage").count(), 1, "{stderr}");
    for name in ["wifi", "drbd", "ksmd", "qdisc"] {
        assert!(stderr.contains(name), "{stderr}");
    }
}

/// A FUSE filesystem whose statfs answers only after `delay` seconds,
/// standing in for a dead NFS server (python3-fusepy).
const HANGFS: &str = r#"
import sys, time, errno, stat
from fusepy import FUSE, Operations, FuseOSError

class Hang(Operations):
    def __init__(self, delay):
        self.delay = delay
    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        raise FuseOSError(errno.ENOENT)
    def readdir(self, path, fh):
        return [".", ".."]
    def statfs(self, path):
        time.sleep(self.delay)
        return {"f_bsize": 4096, "f_blocks": 100, "f_bfree": 50, "f_bavail": 40, "f_files": 10, "f_ffree": 5, "f_frsize": 4096, "f_namemax": 255}

FUSE(Hang(float(sys.argv[2])), sys.argv[1], foreground=True)
"#;

#[test]
fn a_hung_mount_does_not_stall_the_collection() {
    let _machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    let python = std::path::Path::new("/usr/bin/python3");
    assert!(python.exists(), "/usr/bin/python3 missing: install the Debian package python3");
    let probe = Command::new(python).args(["-c", "import fusepy"]).output().unwrap();
    assert!(probe.status.success(), "python3 cannot import fusepy: install the Debian package python3-fusepy");
    let unshare = require_program("unshare", "util-linux");
    let dir = TempDir::new("node-hung");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let script = dir.write("hangfs.py", HANGFS);
    // proc_path /proc/self: the mounts of this private mount namespace
    // (<proc>/1/mounts is absent there, so <proc>/mounts is read), so the
    // hung mount is seen by nothing else on the machine.
    let config = dir.write(
        "vantage.toml",
        "[node]\njob = \"h\"\ninstance = \"h\"\nproc_path = \"/proc/self\"\nenable = [\"filesystem\"]\nmount_timeout = \"1s\"\n\
         [ebpf]\nenabled = false\n[docker]\nenabled = false\n",
    );
    let out = dir.path().join("out.prom");
    // In a private mount namespace: mount the hung filesystem, run one
    // collection, and time until its output is complete (the process's
    // exit itself waits in the kernel for the FUSE request to finish).
    let sh = format!(
        "set -e\n\
         /usr/bin/python3 {script} {mnt} 8 & FS=$!\n\
         for i in $(seq 100); do grep -q ' {mnt} fuse' /proc/self/mounts && break; sleep 0.05; done\n\
         grep -q ' {mnt} fuse' /proc/self/mounts\n\
         start=$(date +%s%N)\n\
         {vantage} collect --once --config {config} > {out} 2>{out}.err & V=$!\n\
         for i in $(seq 400); do grep -q '^up' {out} && break; sleep 0.02; done\n\
         end=$(date +%s%N)\n\
         echo elapsed_ms $(( (end - start) / 1000000 ))\n\
         umount -l {mnt}; kill $FS; wait $V || true\n",
        script = script.display(),
        mnt = mnt.display(),
        vantage = vantage_bin().display(),
        config = config.display(),
        out = out.display(),
    );
    let run =
        Command::new(unshare).args(["-m", "--propagation", "private", "sh", "-c", &sh]).output().expect("run unshare");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let err = std::fs::read_to_string(format!("{}.err", out.display())).unwrap_or_default();
    assert!(run.status.success(), "{stdout}\n{}\n{err}", String::from_utf8_lossy(&run.stderr));
    let elapsed: u64 = stdout.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("elapsed_ms");
    eprintln!("collection with a hung mount: {elapsed} ms");
    // One 1 s timeout, not the 8 s the statfs takes.
    assert!(elapsed < 4000, "collection took {elapsed} ms with a hung mount");
    let series = vantage_tests::parse_text(&text);
    let get = |s: &str| series.iter().find(|(n, _)| n == s).map(|(_, v)| *v);
    let m = mnt.display();
    assert_eq!(
        get(&format!("node_filesystem_device_error{{device=\"Hang\",fstype=\"fuse\",instance=\"h\",job=\"h\",mountpoint=\"{m}\"}}")),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("node_filesystem_size_bytes{device=\"Hang\""), "no sizes for the hung mount");
    assert_eq!(
        series
            .iter()
            .find(|(n, _)| n.starts_with("node_filesystem_device_error") && n.ends_with("mountpoint=\"/\"}"))
            .map(|(_, v)| *v),
        Some(0.0),
        "the root filesystem is still measured: {text}"
    );
    assert!(series
        .iter()
        .any(|(n, v)| n.starts_with("node_filesystem_size_bytes") && n.ends_with("mountpoint=\"/\"}") && *v > 0.0));
    assert!(err.contains("statfs timed out"), "{err}");
}
