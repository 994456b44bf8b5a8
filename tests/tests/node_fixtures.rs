//! The node source on node_exporter v1.5.0's own end-to-end fixtures
//! (`../shared/conformance/node_exporter-1.5.0`): `vantage collect --once`
//! reads the fixture procfs/sysfs/root with the options node_exporter's
//! `end-to-end-test.sh` used, and every family Vantage produces is compared
//! with the `e2e-output.txt` that script recorded: type, help text, label
//! sets and exact values. Every collector Vantage runs is covered, found from
//! its own `node_scrape_collector_success` series, so a collector added to
//! the registry is checked without editing this file. The differences
//! tolerated are the named ones in [`Tolerance`] and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use vantage_tests::{vantage_bin, workspace, TempDir};

/// Where the fixtures are, relative to the workspace (read-only in CI).
const FIXTURES: &str = "../shared/conformance/node_exporter-1.5.0";

/// The collectors `end-to-end-test.sh` turns on beyond node_exporter's
/// defaults (`--collector.<name>`); Vantage runs those it has.
const E2E_ENABLED: &[&str] = &[
    "arp",
    "bcache",
    "bonding",
    "btrfs",
    "buddyinfo",
    "cgroups",
    "conntrack",
    "cpu",
    "cpufreq",
    "diskstats",
    "dmi",
    "drbd",
    "edac",
    "entropy",
    "fibrechannel",
    "filefd",
    "hwmon",
    "infiniband",
    "interrupts",
    "ipvs",
    "ksmd",
    "lnstat",
    "loadavg",
    "mdadm",
    "meminfo",
    "meminfo_numa",
    "mountstats",
    "netdev",
    "netstat",
    "nfs",
    "nfsd",
    "pressure",
    "processes",
    "qdisc",
    "rapl",
    "schedstat",
    "selinux",
    "slabinfo",
    "sockstat",
    "stat",
    "sysctl",
    "textfile",
    "thermal_zone",
    "udp_queues",
    "vmstat",
    "wifi",
    "xfs",
    "zfs",
    "zoneinfo",
];

/// The collectors `end-to-end-test.sh` turns off (`--no-collector.<name>`).
const E2E_DISABLED: &[&str] = &["filesystem", "timex", "uname"];

/// Which node_exporter collector makes a family, by name prefix (the longest
/// prefix wins): facts about node_exporter, so the fixture's families can be
/// attributed even for collectors Vantage does not have yet. `exporter` is
/// node_exporter's own process, not a collector.
const OWNERS: &[(&str, &str)] = &[
    ("node_arp_", "arp"),
    ("node_bcache_", "bcache"),
    ("node_bonding_", "bonding"),
    ("node_btrfs_", "btrfs"),
    ("node_buddyinfo_", "buddyinfo"),
    ("node_cgroups_", "cgroups"),
    ("node_nf_conntrack_", "conntrack"),
    ("node_cpu_", "cpu"),
    ("node_cpu_frequency_", "cpufreq"),
    ("node_cpu_scaling_", "cpufreq"),
    ("node_disk_", "diskstats"),
    ("node_dmi_", "dmi"),
    ("node_drbd_", "drbd"),
    ("node_edac_", "edac"),
    ("node_entropy_", "entropy"),
    ("node_fibrechannel_", "fibrechannel"),
    ("node_filefd_", "filefd"),
    ("node_filesystem_", "filesystem"),
    ("node_hwmon_", "hwmon"),
    ("node_infiniband_", "infiniband"),
    ("node_interrupts_", "interrupts"),
    ("node_ipvs_", "ipvs"),
    ("node_ksmd_", "ksmd"),
    ("node_lnstat_", "lnstat"),
    ("node_load1", "loadavg"),
    ("node_load5", "loadavg"),
    ("node_load15", "loadavg"),
    ("node_md_", "mdadm"),
    ("node_memory_", "meminfo"),
    ("node_memory_numa_", "meminfo_numa"),
    ("node_mountstats_", "mountstats"),
    ("node_network_", "netclass"),
    ("node_network_receive_", "netdev"),
    ("node_network_transmit_", "netdev"),
    ("node_network_transmit_queue_length", "netclass"),
    ("node_netstat_", "netstat"),
    ("node_nfs_", "nfs"),
    ("node_nfsd_", "nfsd"),
    ("node_nvme_", "nvme"),
    ("node_os_", "os"),
    ("node_power_supply_", "powersupplyclass"),
    ("node_pressure_", "pressure"),
    ("node_processes_", "processes"),
    ("node_qdisc_", "qdisc"),
    ("node_rapl_", "rapl"),
    ("node_schedstat_", "schedstat"),
    ("node_selinux_", "selinux"),
    ("node_slabinfo_", "slabinfo"),
    ("node_sockstat_", "sockstat"),
    ("node_softnet_", "softnet"),
    ("node_boot_time_seconds", "stat"),
    ("node_context_switches_total", "stat"),
    ("node_forks_total", "stat"),
    ("node_intr_total", "stat"),
    ("node_procs_", "stat"),
    ("node_softirqs_", "stat"),
    ("node_sysctl_", "sysctl"),
    ("node_tape_", "tapestats"),
    ("node_textfile_", "textfile"),
    ("node_thermal_zone_", "thermal_zone"),
    ("node_cooling_device_", "thermal_zone"),
    ("node_time_", "time"),
    ("node_timex_", "timex"),
    ("node_udp_queues", "udp_queues"),
    ("node_uname_", "uname"),
    ("node_vmstat_", "vmstat"),
    ("node_wifi_", "wifi"),
    ("node_xfs_", "xfs"),
    ("node_zfs_", "zfs"),
    ("node_zoneinfo_", "zoneinfo"),
    ("node_scrape_collector_", "exporter"),
    ("node_exporter_", "exporter"),
    ("go_", "exporter"),
    ("process_", "exporter"),
    ("promhttp_", "exporter"),
];

/// The differences between Vantage's output and `e2e-output.txt` that are
/// not errors, each for a stated reason. Anything else fails the test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tolerance {
    /// Vantage labels its series with the configured job and instance
    /// (Prometheus adds them at scrape time for node_exporter): both are
    /// left out before comparing.
    JobInstance,
    /// Values are compared as numbers, not text: Go writes `1.5e-05` where
    /// Rust writes `0.000015`.
    FloatFormat,
    /// The same quantity computed in another order differs in its last
    /// bits: Go multiplies milliseconds by 0.001 where Vantage divides by
    /// 1000. At most 4 units in the last place.
    LastBits,
    /// The textfile collector's help names the file by the directory given
    /// on the command line: the script's relative
    /// `collector/fixtures/textfile/two_metric_files`, the test's absolute
    /// path. The directory part is replaced before comparing.
    TextfilePath,
    /// The script passes `--collector.netclass.ignore-invalid-speed`, which
    /// Vantage does not implement: the fixture's bond0 has speed -1, which
    /// node_exporter drops and Vantage reports as -125000. Only a negative
    /// speed is let through.
    InvalidSpeed,
    /// A family of a collector Vantage has but does not produce yet, listed
    /// in [`KNOWN_GAPS`] with its reason: reported on every run, and the test
    /// fails once Vantage produces it (then it is compared like the others).
    KnownGap,
    /// A label with an empty value is the same as no label in Prometheus;
    /// node_exporter writes some (`node_disk_info`'s missing udev fields),
    /// Vantage leaves them out. Dropped on both sides.
    EmptyLabels,
    /// The script's `skip_re` strips the samples (not the HELP/TYPE lines) of
    /// live values: node_time_*, node_textfile_mtime_seconds,
    /// node_scrape_collector_duration_seconds, process_*, go_*, netdev's
    /// bytes and packets. Only their type and help are compared.
    SkipRe,
    /// Families only Vantage has (`up`, `vantage_*`): about the agent, not the
    /// node, and not part of node_exporter.
    VantageOwn,
    /// node_exporter 1.5's netdev reads the live machine's `lo` over netlink,
    /// not the fixtures (the fixture procfs has no net/dev): its values are
    /// that machine's on the day, and Vantage's netdev finds nothing to read.
    NetdevLive,
    /// A collector of the script that Vantage does not have: its families
    /// and its `node_scrape_collector_success` series are not comparable.
    CollectorAbsent,
    /// rapl's `path` label is the sysfs path node_exporter was given: the
    /// script's relative `collector/fixtures/sys`, the test's absolute one.
    /// The directory part is replaced before comparing.
    RaplPath,
    /// node_exporter's own process families (go_*, promhttp_*,
    /// node_exporter_build_info), which an agent written in Rust has no
    /// equivalent of.
    ExporterOwn,
}

/// Families of collectors Vantage runs that it does not produce yet.
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// The sample lines `end-to-end-test.sh` strips (its `skip_re`).
fn skip_re(name: &str) -> bool {
    ["go_", "node_exporter_build_info", "node_scrape_collector_duration_seconds", "process_"]
        .iter()
        .any(|p| name.starts_with(p))
        || name == "node_textfile_mtime_seconds"
        || name.starts_with("node_time_zone")
        || name.starts_with("node_time_seconds")
        || ["receive", "transmit"]
            .iter()
            .any(|d| ["bytes", "packets"].iter().any(|w| name.starts_with(&format!("node_network_{d}_{w}_total"))))
}

/// One exposition family: type, help and series (`name{labels}`, labels
/// sorted without job, instance and empty values) to value.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
    series: BTreeMap<String, f64>,
}

/// Parses Prometheus text exposition into families by name; a sample goes
/// to the family of the TYPE line above it when its name extends it
/// (histogram and summary parts), else to a family of its own name.
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            current = name.to_string();
            out.entry(current.clone()).or_default().help = unescape_help(help);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            current = name.to_string();
            out.entry(current.clone()).or_default().kind = kind.to_string();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, mut labels, value) = parse_sample(line);
        let family = if !current.is_empty() && name.starts_with(&current) { current.clone() } else { name.clone() };
        labels.retain(|(k, v)| !v.is_empty() && k != "job" && k != "instance");
        labels.sort();
        let key =
            format!("{name}{{{}}}", labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(","));
        out.entry(family).or_default().series.insert(key, value);
    }
    out
}

fn unescape_help(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
    let end = line.find(['{', ' ']).unwrap_or_else(|| panic!("sample line {line:?}"));
    let name = line[..end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[end..];
    if rest.starts_with('{') {
        let mut chars = rest.char_indices().skip(1);
        let mut key = String::new();
        let close;
        loop {
            let (i, c) = chars.next().unwrap_or_else(|| panic!("unterminated labels in {line:?}"));
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
                        match chars.next().unwrap_or_else(|| panic!("unterminated value in {line:?}")).1 {
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
    let v = rest.split_whitespace().next().unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    (name, labels, value)
}

/// The node_exporter collector that makes `family` (longest prefix of
/// [`OWNERS`]), or `textfile` for the families of the fixture's text files.
fn owner(family: &str, textfile_families: &BTreeSet<String>) -> &'static str {
    if textfile_families.contains(family) {
        return "textfile";
    }
    OWNERS
        .iter()
        .filter(|(prefix, _)| family.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map_or("unknown", |(_, c)| c)
}

/// Unpacks a ttar archive of the fixtures with the script node_exporter
/// ships (the archives keep sysfs's symlinks, which a plain copy could not).
fn untar(fixtures: &Path, archive: &str, into: &Path) -> std::thread::JoinHandle<()> {
    std::fs::create_dir_all(into).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(fixtures.join("ttar")).arg("-C").arg(into).arg("-x").arg("-f").arg(fixtures.join(archive));
    let archive = archive.to_string();
    std::thread::spawn(move || {
        let out = cmd.output().expect("run bash ttar");
        assert!(out.status.success(), "ttar -x {archive} failed: {}", String::from_utf8_lossy(&out.stderr));
    })
}

/// Runs `vantage collect --once` with `node` as the `[node]` section body
/// and only the node source on.
fn collect(dir: &TempDir, tag: &str, node: &str) -> String {
    let config = dir.write(
        &format!("{tag}.toml"),
        &format!("[node]\n{node}\n[ebpf]\nenabled = false\n[docker]\nenabled = false\n"),
    );
    let out = Command::new(vantage_bin())
        .args(["collect", "--once", "--config"])
        .arg(&config)
        .output()
        .expect("run vantage collect --once");
    assert!(out.status.success(), "vantage collect --once ({tag}) failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 exposition")
}

/// The collectors that ran, from `node_scrape_collector_success`.
fn ran(families: &BTreeMap<String, Family>) -> BTreeSet<String> {
    families
        .get("node_scrape_collector_success")
        .map(|f| {
            f.series
                .keys()
                .filter_map(|k| k.split("collector=\"").nth(1).and_then(|r| r.split('"').next()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn toml_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// Per-collector tallies for the report.
#[derive(Default)]
struct Tally {
    families: usize,
    series: usize,
    matched: usize,
}

#[test]
fn every_collector_matches_node_exporter_fixtures() {
    let fixtures: PathBuf = workspace().join(FIXTURES);
    assert!(
        fixtures.join("e2e-output.txt").is_file(),
        "node_exporter v1.5.0 fixtures are absent: expected {} (proc/, sys.ttar, udev.ttar, usr/, textfile/, \
         e2e-output.txt, ttar) from node_exporter's collector/fixtures at tag v1.5.0",
        fixtures.display()
    );
    let dir = TempDir::new("node-fixtures");
    let root = dir.path().join("root");
    // node_exporter ran with --path.rootfs=collector/fixtures,
    // --path.sysfs=collector/fixtures/sys and
    // --path.udev.data=collector/fixtures/udev/data; Vantage reads udev's
    // database under <root>/run/udev/data, so udev.ttar goes there.
    let jobs = [untar(&fixtures, "sys.ttar", &root), untar(&fixtures, "udev.ttar", &root.join("run"))];
    std::os::unix::fs::symlink(fixtures.join("usr"), root.join("usr")).unwrap();
    for job in jobs {
        job.join().expect("ttar thread");
    }
    let textfile_dir = fixtures.join("textfile/two_metric_files");
    let paths = format!(
        "instance = \"fixture\"\nproc_path = {}\nsys_path = {}\nroot_path = {}\ntextfile_directory = {}\n",
        toml_str(&fixtures.join("proc")),
        toml_str(&root.join("sys")),
        toml_str(&root),
        toml_str(&textfile_dir),
    );

    // First Vantage's defaults, to learn which collectors it runs by
    // default; then the set node_exporter ran: its defaults plus the
    // script's --collector.<name>, less its --no-collector.<name>.
    let defaults = ran(&parse(&collect(&dir, "defaults", &paths)));
    assert!(defaults.len() >= 20, "only {} collectors run by default: {defaults:?}", defaults.len());
    let enable: BTreeSet<&str> = defaults.iter().map(String::as_str).chain(E2E_ENABLED.iter().copied()).collect();
    let quoted =
        |names: &mut dyn Iterator<Item = &&str>| names.map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
    let node = format!(
        "{paths}enable = [{}]\ndisable = [{}]\n\
         # --collector.netclass.ignored-devices=\"(dmz|int)\"\n\
         netclass_ignored_devices = \"(dmz|int)\"\n\
         # --collector.netdev.device-include=\"lo\", as an exclude of every other name\n\
         netdev_device_exclude = \"^([^l]|l$|l[^o]|lo.)\"\n\
         # --collector.arp.device-exclude=\"nope\"\n\
         arp_device_exclude = \"nope\"\n\
         # --collector.cpu.info with its bugs-include and flags-include\n\
         cpu_info = true\n\
         cpu_info_bugs_include = \"^(cpu_meltdown|spectre_.*|mds)$\"\n\
         cpu_info_flags_include = \"^(aes|avx.?|constant_tsc)$\"\n\
         # --collector.stat.softirq\n\
         stat_softirq = true\n\
         # --collector.bcache.priorityStats\n\
         bcache_priority_stats = true\n",
        quoted(&mut enable.iter()),
        quoted(&mut E2E_DISABLED.iter()),
    );
    let text = collect(&dir, "e2e", &node);
    std::fs::write(dir.path().join("vantage.prom"), &text).unwrap();
    let mut ours = parse(&text);
    let theirs = parse(&std::fs::read_to_string(fixtures.join("e2e-output.txt")).unwrap());
    let running = ran(&ours);
    for c in E2E_DISABLED {
        assert!(!running.contains(*c), "{c} ran although the script turns it off");
    }
    let mut textfile_families = BTreeSet::new();
    for entry in std::fs::read_dir(&textfile_dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "prom") {
            textfile_families.extend(parse(&std::fs::read_to_string(&p).unwrap()).into_keys());
        }
    }

    let mut problems: Vec<String> = Vec::new();
    let mut tolerated: BTreeMap<Tolerance, BTreeSet<String>> = BTreeMap::new();
    let mut note = |why: Tolerance, what: &str| {
        tolerated.entry(why).or_default().insert(what.to_string());
    };
    let sys_dir = root.join("sys").display().to_string();
    for (name, family) in ours.iter_mut().filter(|(n, _)| n.starts_with("node_rapl_")) {
        family.series = std::mem::take(&mut family.series)
            .into_iter()
            .map(|(k, v)| (k.replace(&sys_dir, "collector/fixtures/sys"), v))
            .collect();
        note(Tolerance::RaplPath, name);
    }
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    for c in &running {
        if !OWNERS.iter().any(|(_, o)| o == c) {
            problems.push(format!("{c}: a collector this test cannot attribute families to: add it to OWNERS"));
        }
    }
    let script_textfile_dir = "collector/fixtures/textfile/two_metric_files";
    let names: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    for name in names {
        let collector = owner(name, &textfile_families);
        if name == "up" || name.starts_with("vantage_") {
            note(Tolerance::VantageOwn, name);
            continue;
        }
        if collector == "netdev" {
            note(Tolerance::NetdevLive, name);
            continue;
        }
        let (mine, theirs_f) = match (ours.get(name), theirs.get(name)) {
            (Some(m), Some(t)) => (m, t),
            (Some(m), None) => {
                problems.push(format!("{name} ({collector}): only in Vantage ({} series)", m.series.len()));
                continue;
            }
            (None, _) if collector == "exporter" => {
                note(Tolerance::ExporterOwn, name);
                continue;
            }
            (None, _) if !running.contains(collector) => {
                note(Tolerance::CollectorAbsent, collector);
                continue;
            }
            (None, _) if KNOWN_GAPS.iter().any(|(f, _)| f == name) => {
                note(Tolerance::KnownGap, name);
                continue;
            }
            (None, _) => {
                problems.push(format!("{name} ({collector}): missing from Vantage"));
                continue;
            }
        };
        if let Some((_, why)) = KNOWN_GAPS.iter().find(|(f, _)| f == name) {
            problems.push(format!("{name}: Vantage produces it now ({why} is done): remove it from KNOWN_GAPS"));
        }
        let is_success = name == "node_scrape_collector_success";
        tally.entry(if is_success { "exporter".into() } else { collector.into() }).or_default().families += 1;
        if mine.kind != theirs_f.kind {
            problems.push(format!("{name}: type {} here, {} in node_exporter", mine.kind, theirs_f.kind));
        }
        let mut help = mine.help.clone();
        if collector == "textfile" && textfile_families.contains(name.as_str()) {
            let ours_dir = textfile_dir.display().to_string();
            if help.contains(&ours_dir) {
                help = help.replace(&ours_dir, script_textfile_dir);
                note(Tolerance::TextfilePath, name);
            }
        }
        if help != theirs_f.help {
            problems.push(format!("{name}: help {:?} here, {:?} in node_exporter", mine.help, theirs_f.help));
        }
        if skip_re(name) {
            note(Tolerance::SkipRe, name);
            continue;
        }
        let collector_of = |series: &str| {
            series.split("collector=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string()
        };
        for (series, &want) in &theirs_f.series {
            let mut owner = collector.to_string();
            if is_success {
                owner = collector_of(series);
                if owner == "netdev" {
                    note(Tolerance::NetdevLive, series);
                    continue;
                }
                if !running.contains(&owner) {
                    note(Tolerance::CollectorAbsent, &owner);
                    continue;
                }
            }
            let t = tally.entry(owner).or_default();
            t.series += 1;
            match mine.series.get(series) {
                None => problems.push(format!("{series}: missing from Vantage")),
                Some(&got) if same(got, want) => {
                    t.matched += 1;
                    if got != want && !(got.is_nan() && want.is_nan()) {
                        note(Tolerance::LastBits, series);
                    }
                }
                Some(&got) => problems.push(format!("{series}: {got} here, {want} in node_exporter")),
            }
        }
        for (series, &v) in &mine.series {
            if theirs_f.series.contains_key(series) {
                continue;
            }
            if name == "node_network_speed_bytes" && v < 0.0 {
                note(Tolerance::InvalidSpeed, series);
            } else if is_success && collector_of(series) == "netdev" {
                note(Tolerance::NetdevLive, series);
            } else {
                problems.push(format!("{series}: only in Vantage"));
            }
        }
    }
    for why in [Tolerance::JobInstance, Tolerance::FloatFormat, Tolerance::EmptyLabels] {
        tolerated.entry(why).or_default();
    }

    eprintln!("collector            families  series  matched");
    let (mut series, mut matched) = (0, 0);
    for (c, t) in &tally {
        eprintln!("{c:<20} {:>8} {:>7} {:>8}", t.families, t.series, t.matched);
        series += t.series;
        matched += t.matched;
    }
    eprintln!("all                  {:>8} {series:>7} {matched:>8}", tally.values().map(|t| t.families).sum::<usize>());
    for (why, what) in &tolerated {
        let list: Vec<&str> = what.iter().map(String::as_str).collect();
        let shown = if list.len() > 12 { format!("{} ...", list[..12].join(" ")) } else { list.join(" ") };
        eprintln!("tolerated {why:?} ({}): {shown}", list.len());
    }
    for (family, why) in KNOWN_GAPS {
        eprintln!("known gap: {family}: {why}");
    }
    for c in &running {
        let compared = tally.get(c.as_str()).map_or(0, |t| t.series);
        if compared == 0 && c != "netdev" && !all_skipped(c) {
            problems.push(format!("{c}: ran but none of its series was compared"));
        }
    }
    assert!(series >= 490, "only {series} series compared");
    assert!(
        problems.is_empty(),
        "{} differences from node_exporter's fixture output ({matched} of {series} series match):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(matched, series, "every comparable series must match");
}

/// Equal as numbers, within 4 units in the last place ([`Tolerance::LastBits`]).
fn same(got: f64, want: f64) -> bool {
    if got == want || (got.is_nan() && want.is_nan()) {
        return true;
    }
    if got.is_sign_negative() != want.is_sign_negative() || !got.is_finite() || !want.is_finite() {
        return false;
    }
    got.to_bits().abs_diff(want.to_bits()) <= 4
}

/// Collectors whose every family the script's `skip_re` strips, so none of
/// their series can be compared (their type and help still are).
fn all_skipped(collector: &str) -> bool {
    collector == "time"
}
