//! `cargo xtask kernels`: the kernel matrix. Boots each of Debian's cloud
//! kernels in [`vm::SUITES`] with the agent in an initramfs, makes known
//! kernel work inside (null_blk direct reads and writes, refused and
//! dropped loopback connections, CPU-bound shells preempting each other),
//! reads the agent's /metrics and checks them against the README's
//! "Kernels" table: a program or metric the table says a kernel has must
//! be up and have moved, and one it says the kernel lacks must not (so the
//! table stays true both ways). A kernel that cannot be fetched fails by
//! name.
//!
//! `--release` boots the release binary (a fat-LTO build costs minutes of
//! compile; the debug binary, stripped, is what `cargo xtask test` already
//! built). `--only <name>` boots one kernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::deps::status;
use crate::vm::{self, Boot, Initramfs};

/// The agent's /metrics inside the guest.
const LISTEN: &str = "127.0.0.1:9100";

/// What the guest does, by name: a metric that moves when its work is
/// done, and the least it must reach. `key` is the row of the README's
/// table; `series` selects what is summed (`name` or `name{k="v",...}`).
struct Check {
    key: &'static str,
    series: &'static str,
    at_least: f64,
}

impl Check {
    /// A check whose row in the table is its series.
    const fn row(series: &'static str, at_least: f64) -> Check {
        Check { key: series, series, at_least }
    }
}

/// The work in the init script (see [`init_script`]) makes at least these.
const CHECKS: &[Check] = &[
    Check::row("ebpf_cpu_context_switches_total", 100.0),
    // Four shells spinning on one vCPU preempt each other for seconds.
    Check { key: "ebpf_runqueue_latency_seconds", series: "ebpf_runqueue_latency_seconds_count", at_least: 20.0 },
    // 200 direct 4 KiB reads and 200 writes on /dev/nullb0.
    Check {
        key: "ebpf_block_io_latency_seconds",
        series: r#"ebpf_block_io_latency_seconds_count{device="nullb0",op="read"}"#,
        at_least: 200.0,
    },
    Check {
        key: "ebpf_block_io_latency_seconds",
        series: r#"ebpf_block_io_latency_seconds_count{device="nullb0",op="write"}"#,
        at_least: 200.0,
    },
    Check {
        key: "ebpf_block_io_size_bytes",
        series: r#"ebpf_block_io_size_bytes_sum{device="nullb0"}"#,
        at_least: 400.0 * 4096.0,
    },
    // 25 connects to a closed loopback port.
    Check::row(r#"ebpf_tcp_resets_total{direction="sent"}"#, 25.0),
    Check::row(r#"ebpf_tcp_resets_total{direction="received"}"#, 25.0),
    Check::row("ebpf_tcp_connection_failures_total", 25.0),
    // The readiness probes: wget connecting to the agent and closing.
    Check::row("ebpf_tcp_connections_total", 2.0),
    Check { key: "ebpf_tcp_rtt_seconds", series: "ebpf_tcp_rtt_seconds_count", at_least: 1.0 },
    // A connect to an address routed into lo that nobody answers: its SYN
    // is sent again after the 1 s initial timeout.
    Check::row("ebpf_tcp_retransmits_total", 1.0),
    // The closed port's SYNs are freed as drops (no socket).
    Check::row("ebpf_skb_drops_total", 25.0),
    // Security events: the 25 nc processes and their connects, the
    // agent's accept of the probe after the work, a listener started and
    // stopped, a set-user-ID root executable run by uid 1234.
    Check::row(r#"ebpf_security_events_total{kind="exec"}"#, 25.0),
    Check::row(r#"ebpf_security_events_total{kind="connect"}"#, 25.0),
    Check::row(r#"ebpf_security_events_total{kind="accept"}"#, 1.0),
    Check::row(r#"ebpf_security_events_total{kind="listen"}"#, 2.0),
    Check::row(r#"ebpf_security_events_total{kind="credentials"}"#, 1.0),
];

/// The programs, as `vantage_ebpf_program_up` names them (the agent's
/// `sources::ebpf::PROGRAMS`, then `sources::ebpf::security`'s).
const PROGRAMS: &[&str] = &[
    "sched_switch",
    "sched_wakeup",
    "sched_wakeup_new",
    "block_rq_issue",
    "block_rq_complete",
    "tcp_retransmit_skb",
    "tcp_send_reset",
    "tcp_receive_reset",
    "inet_sock_set_state",
    "kfree_skb",
    "security_exec",
    "security_sock",
    "security_creds",
    "security_exec_creds",
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let release = args.iter().any(|a| a == "--release");
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1));
    for a in args {
        if !matches!(a.as_str(), "--release" | "--only") && Some(a) != only {
            bail!("unknown argument {a:?}; usage: cargo xtask kernels [--release] [--only <kernel>]");
        }
    }
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let table = KernelTable::from_readme(&readme)?;
    let agent = agent_binary(release)?;
    let suites: Vec<&vm::Suite> = vm::SUITES.iter().filter(|s| only.is_none_or(|o| o == s.name)).collect();
    if suites.is_empty() {
        bail!("no kernel named {:?} (known: {})", only.unwrap(), names().join(", "));
    }
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for suite in suites {
        let outcome = check_kernel(suite, &agent, &table);
        match &outcome {
            Ok(row) => rows.push(row.clone()),
            Err(e) => {
                eprintln!("kernels: {}: {e:#}", suite.name);
                failed.push(suite.name);
                rows.push(Row { name: suite.name.into(), result: "FAILED".into(), ..Row::default() });
            }
        }
    }
    println!(
        "\n{:<20} {:<28} {:>6} {:>8} {:>8} {:>5}  result",
        "kernel", "release", "boot s", "prog up", "moved", "boots"
    );
    for r in &rows {
        println!(
            "{:<20} {:<28} {:>6.1} {:>8} {:>8} {:>5}  {}",
            r.name, r.release, r.seconds, r.programs_up, r.moved, r.attempts, r.result
        );
    }
    if !failed.is_empty() {
        bail!("kernel matrix failed on {}", failed.join(", "));
    }
    Ok(())
}

fn names() -> Vec<&'static str> {
    vm::SUITES.iter().map(|s| s.name).collect()
}

/// One line of the summary.
#[derive(Clone, Debug, Default)]
struct Row {
    name: String,
    release: String,
    seconds: f64,
    programs_up: String,
    moved: String,
    attempts: u32,
    result: String,
}

/// The agent binary to put in the guest: the release build, or the debug
/// build without its debug info (a 170 MB initramfs is slow to load).
pub fn agent_binary(release: bool) -> anyhow::Result<PathBuf> {
    let target = vm::cache_dir().parent().unwrap().to_path_buf();
    let mut build = Command::new("cargo");
    build.args(["build", "-p", "vantage"]);
    if release {
        build.arg("--release");
    }
    status(&mut build)?;
    let built = target.join(if release { "release/vantage" } else { "debug/vantage" });
    if release {
        return Ok(built);
    }
    std::fs::create_dir_all(vm::cache_dir())?;
    let stripped = vm::cache_dir().join("vantage-debug-stripped");
    status(Command::new("objcopy").arg("--strip-debug").arg(&built).arg(&stripped))?;
    Ok(stripped)
}

/// The guest's /init: mounts, null_blk, the agent, the work, /metrics.
fn init_script(modules: &[String]) -> String {
    let insmod: String = modules.iter().map(|m| format!("insmod {m} || echo 'insmod {m} failed'\n")).collect();
    format!(
        r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
mount -t debugfs nodev /sys/kernel/debug 2>/dev/null
ip link set lo up
# An address routed into lo that nobody owns: a connect there is never
# answered, so its SYN is retransmitted.
ip addr add 10.200.0.1/32 dev lo
ip route add 10.200.1.0/24 dev lo src 10.200.0.1
{insmod}{uname}
NO_COLOR=1 /vantage --log-level info run --config /vantage.toml >/tmp/vantage.log 2>&1 &
i=0
until wget -q -O /dev/null http://{LISTEN}/-/ready 2>/dev/null; do
  i=$((i+1)); [ $i -gt 300 ] && echo 'agent not ready after 60 s' && break
  sleep 0.2
done
wget -q -O /dev/null http://{LISTEN}/-/ready
# The security object loads beside the log sinks, one program at a time:
# wait until all of them are attached (the log says so once, at the end).
i=0
until grep -q 'security programs attached' /tmp/vantage.log; do
  i=$((i+1)); [ $i -gt 150 ] && echo 'security programs not attached after 30 s' && break
  sleep 0.2
done
nc -l -p 7000 & listener=$!
sleep 0.3
kill $listener
# uid 1234 runs a set-user-ID root copy of busybox (its true applet):
# credentials gained. busybox's setpriv cannot change uid; su can.
cp /bin/busybox /tmp/true && chmod 4755 /tmp/true
mkdir -p /etc && echo "probe:x:1234:1234::/:/bin/sh" >>/etc/passwd
su -s /tmp/true probe
nc -w 3 10.200.1.2 80 </dev/null 2>/dev/null &
syn=$!
dd if=/dev/nullb0 of=/dev/null bs=4096 count=200 iflag=direct 2>/dev/null
dd if=/dev/zero of=/dev/nullb0 bs=4096 count=200 oflag=direct 2>/dev/null
i=0
while [ $i -lt 25 ]; do nc 127.0.0.1 1 </dev/null 2>/dev/null; i=$((i+1)); done
spin() {{ n=0; while [ $n -lt 4000 ]; do n=$((n+1)); done; }}
spin & a=$!; spin & b=$!; spin & c=$!; spin & d=$!
wait $a $b $c $d $syn
# A connection the agent accepts now that every program is attached. The
# final /metrics fetch is one too, but it is answered before the agent
# reads its event.
wget -q -O /dev/null http://{LISTEN}/-/ready
# Two collections (1 s interval) after the work.
sleep 2.5
{metrics}{log}poweroff -f
"#,
        uname = vm::marked("uname", "uname -r"),
        // busybox's wget has crashed here once in a while: three tries.
        metrics = vm::marked(
            "metrics",
            &format!(
                "for try in 1 2 3; do wget -q -O /tmp/metrics http://{LISTEN}/metrics && break; done; cat /tmp/metrics"
            )
        ),
        log = vm::marked("log", "cat /tmp/vantage.log"),
    )
}

/// The agent's configuration in the guest: node, eBPF and security
/// events (to a Loki nobody runs: they are counted as they are read),
/// served locally.
fn agent_config() -> String {
    format!(
        "[agent]\nlisten_addr = \"{LISTEN}\"\nserve_collected = true\n\
         [docker]\nenabled = false\n[ebpf]\ninterval = \"1s\"\n\
         [security]\nenabled = true\nrate_limit = 0\n\
         [loki]\nurl = \"http://127.0.0.1:9/loki/api/v1/push\"\n"
    )
}

fn check_kernel(suite: &vm::Suite, agent: &Path, table: &KernelTable) -> anyhow::Result<Row> {
    let kernel = vm::fetch(suite)?;
    let mut initramfs = Initramfs::with_busybox()?;
    let modules = initramfs.modules(&kernel, &["null_blk"])?;
    initramfs.binary("vantage", agent)?;
    initramfs.file("vantage.toml", agent_config(), 0o644);
    initramfs.file("init", init_script(&modules), 0o755);
    let image = initramfs.write_to(&vm::cache_dir().join(format!("{}.cpio", suite.name)))?;
    let how = Boot { cmdline: "quiet loglevel=3".into(), ..Boot::default() };
    // Under TCG, Debian's 6.12.95 (bookworm-backports) double-faults now
    // and then in the slab allocator, sometimes before /init runs: the
    // emulator's fault, not the programs' (BPF cannot oops a kernel): the
    // trace is init's own clone, before the agent starts. Beside two busy
    // cores it did so three boots in a row (CI run F) and four in a row
    // another time, so such a boot is said and tried again, seven times at
    // most (a crashed boot costs about 5 s).
    let mut attempt = 1;
    let booted = loop {
        let result = vm::boot(&kernel, &image, &how);
        let text = match &result {
            Ok(b) => b.console.clone(),
            Err(e) => format!("{e:#}"),
        };
        match text.lines().find(|l| l.contains("Oops:") || l.contains("Kernel panic")) {
            Some(line) if attempt < 8 => {
                eprintln!("kernels: {} crashed under the emulator (attempt {attempt}): {}", suite.name, line.trim());
                attempt += 1;
            }
            _ => break result?,
        }
    };
    let console = &booted.console;
    let context = || format!("console of {} ({}):\n{console}", suite.name, kernel.release);
    let uname = vm::between(console, "uname").map(str::trim).with_context(context)?;
    if uname != kernel.release {
        bail!("booted {uname:?}, expected {:?}", kernel.release);
    }
    let metrics = vm::between(console, "metrics").with_context(context)?;
    let log = vm::between(console, "log").unwrap_or_default();
    let samples = parse(metrics);
    if samples.is_empty() {
        bail!("no metrics from the agent; {}", context());
    }
    let mut problems = Vec::new();
    let mut up_count = 0;
    for program in PROGRAMS {
        let expected = table.cell(program, suite.name)?;
        let up = sum(&samples, &format!(r#"vantage_ebpf_program_up{{program="{program}"}}"#));
        match (&expected, up == 1.0) {
            (Expect::Yes, true) => up_count += 1,
            (Expect::Yes, false) => problems.push(format!("program {program} is down; the table says it runs")),
            (Expect::No { .. }, true) => {
                problems.push(format!("program {program} is up; the table says it cannot run here"))
            }
            (Expect::No { phrase }, false) => {
                if let Some(phrase) = phrase {
                    let said = log.lines().any(|l| l.contains(program) && l.contains(phrase.as_str()));
                    if !said {
                        problems.push(format!("program {program} is down but the log does not say {phrase:?}"));
                    }
                }
            }
        }
    }
    let mut moved = 0;
    for check in CHECKS {
        let value = sum(&samples, check.series);
        match table.cell(check.key, suite.name)? {
            Expect::Yes if value >= check.at_least => moved += 1,
            Expect::Yes => problems.push(format!("{} = {value}, expected at least {}", check.series, check.at_least)),
            Expect::No { .. } if value == 0.0 => {}
            Expect::No { .. } => {
                problems.push(format!("{} = {value}; the table says it cannot move here", check.series))
            }
        }
    }
    if !problems.is_empty() {
        bail!("{} ({}):\n  {}\nagent log:\n{log}", suite.name, kernel.release, problems.join("\n  "));
    }
    Ok(Row {
        name: suite.name.into(),
        release: kernel.release,
        seconds: booted.elapsed.as_secs_f64(),
        programs_up: format!("{up_count}/{}", PROGRAMS.len()),
        attempts: attempt,
        moved: format!("{moved}/{}", CHECKS.len()),
        result: "ok".into(),
    })
}

/// Prometheus text as (series, value): `name{k="v",...}` as printed.
fn parse(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series matching `selector` (`name` or
/// `name{k="v",...}`: each label must be present with that value).
fn sum(samples: &[(String, f64)], selector: &str) -> f64 {
    let (name, wanted) = split_series(selector);
    samples
        .iter()
        .filter(|(series, _)| {
            let (n, labels) = split_series(series);
            n == name && wanted.iter().all(|w| labels.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}').split(',').filter(|p| !p.is_empty()).collect()),
        None => (series, Vec::new()),
    }
}

/// What the README's table says of one program or metric on one kernel.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    Yes,
    /// Not on this kernel; a `quoted` phrase in the cell is what the
    /// agent's log must say about it.
    No {
        phrase: Option<String>,
    },
}

/// The README's "Kernels" table: row key (the text in the first cell's
/// backticks) -> kernel name (first word of the header) -> expectation.
struct KernelTable {
    cells: BTreeMap<String, BTreeMap<String, Expect>>,
}

impl KernelTable {
    fn from_readme(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}: the \"## Kernels\" table", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let section = text.split("\n## Kernels").nth(1).context("no \"## Kernels\" section")?;
        let section = section.split("\n## ").next().unwrap_or(section);
        let rows: Vec<Vec<String>> = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
            .collect();
        let header = rows.first().context("no table")?;
        let kernels: Vec<String> =
            header.iter().skip(1).map(|h| h.split_whitespace().next().unwrap_or_default().to_string()).collect();
        for name in names() {
            if !kernels.iter().any(|k| k == name) {
                bail!("no column for kernel {name}");
            }
        }
        let mut cells = BTreeMap::new();
        for row in rows.iter().skip(2) {
            let Some(key) = row[0].split('`').nth(1) else { continue };
            let mut by_kernel = BTreeMap::new();
            for (kernel, cell) in kernels.iter().zip(row.iter().skip(1)) {
                let expect = if cell.starts_with("yes") {
                    Expect::Yes
                } else if cell.starts_with("no") {
                    Expect::No { phrase: cell.split('"').nth(1).map(String::from) }
                } else {
                    bail!("row `{key}`, kernel {kernel}: {cell:?} starts with neither yes nor no");
                };
                by_kernel.insert(kernel.clone(), expect);
            }
            cells.insert(key.to_string(), by_kernel);
        }
        Ok(KernelTable { cells })
    }

    fn cell(&self, key: &str, kernel: &str) -> anyhow::Result<Expect> {
        let row = self.cells.get(key).with_context(|| format!("the README's Kernels table has no row `{key}`"))?;
        row.get(kernel)
            .cloned()
            .with_context(|| format!("the README's Kernels table has no cell for `{key}` on {kernel}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_yes_no_and_the_quoted_reason() {
        let text = "# x\n## Kernels\n\nintro\n\n| | bullseye 5.10 | bookworm 6.1 | bookworm-backports | trixie | trixie-backports |\n\
                    |---|---|---|---|---|---|\n\
                    | `kfree_skb` | yes (no reason) | yes | yes | yes | yes |\n\
                    | `ebpf_tcp_resets_total{direction=\"sent\"}` | yes | no: \"not traced\" | yes | yes | yes |\n\n## Next\n";
        let t = KernelTable::parse(text).unwrap();
        assert_eq!(t.cell("kfree_skb", "bullseye").unwrap(), Expect::Yes);
        assert_eq!(
            t.cell(r#"ebpf_tcp_resets_total{direction="sent"}"#, "bookworm").unwrap(),
            Expect::No { phrase: Some("not traced".into()) }
        );
        assert!(t.cell("sched_switch", "bullseye").is_err());
    }

    #[test]
    fn sums_match_every_label_asked_for() {
        let samples = parse(
            "# HELP x\nx_count{device=\"nullb0\",op=\"read\"} 3\nx_count{device=\"nullb0\",op=\"write\"} 4\nx_count{device=\"sda\",op=\"read\"} 5\n",
        );
        assert_eq!(sum(&samples, "x_count"), 12.0);
        assert_eq!(sum(&samples, r#"x_count{device="nullb0"}"#), 7.0);
        assert_eq!(sum(&samples, r#"x_count{op="read",device="nullb0"}"#), 3.0);
    }
}
