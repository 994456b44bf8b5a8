//! `cpu`: per-CPU time by mode from /proc/stat, thermal throttle counts
//! and isolated CPUs from sysfs, and with `cpu_info` the CPU models,
//! flags and bugs of /proc/cpuinfo, as node_exporter 1.5's cpu collector.

use std::path::{Path, PathBuf};

use super::thermal::numbered;
use super::{FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
const SECONDS: &str = "node_cpu_seconds_total";
const GUEST: &str = "node_cpu_guest_seconds_total";

/// The `cpu` collector.
pub(super) struct Cpu {
    file: FileBuf,
    /// USER_HZ: /proc/stat's times are divided by it, as procfs does
    /// (multiplying by its inverse differs in the last digit).
    hz: f64,
    guest: bool,
    /// /proc/cpuinfo with the flags and bugs patterns, when `cpu_info` is on.
    info: Option<Info>,
    cpus: PathBuf,
    /// CPUs listed in /sys/devices/system/cpu/isolated, read once at start.
    isolated: Vec<String>,
}

struct Info {
    file: FileBuf,
    flags: Option<regex::Regex>,
    bugs: Option<regex::Regex>,
}

impl Cpu {
    pub fn new(c: &NodeConfig) -> Self {
        let compile =
            |p: &Option<String>| p.as_deref().filter(|p| !p.is_empty()).and_then(|p| regex::Regex::new(p).ok());
        let (flags, bugs) = (compile(&c.cpu_info_flags_include), compile(&c.cpu_info_bugs_include));
        // Either pattern turns the info on, as in node_exporter.
        let info = (c.cpu_info || flags.is_some() || bugs.is_some()).then(|| Info {
            file: FileBuf::new(c.proc_path.join("cpuinfo")),
            flags,
            bugs,
        });
        let cpus = c.sys_path.join("devices/system/cpu");
        let isolated =
            std::fs::read_to_string(cpus.join("isolated")).ok().and_then(|t| parse_cpu_list(&t)).unwrap_or_default();
        Cpu {
            file: FileBuf::new(c.proc_path.join("stat")),
            hz: clock_ticks(),
            guest: c.cpu_guest,
            info,
            cpus,
            isolated,
        }
    }
}

/// USER_HZ, the unit of /proc/stat's times (100 on every Linux we know).
pub(super) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `1,3-5,9` to ["1", "3", "4", "5", "9"]; None when malformed.
fn parse_cpu_list(text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for part in text.trim_end_matches('\n').split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
                out.extend((a..=b).map(|i| i.to_string()));
            }
            None => out.push(part.parse::<u16>().ok()?.to_string()),
        }
    }
    Some(out)
}

impl Cpu {
    fn update_info(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let Some(info) = &mut self.info else { return Ok(()) };
        let (path, text) = info.file.read()?;
        let cpus = parse_cpuinfo(path, text)?;
        out.family("node_cpu_info", MetricType::Gauge, "CPU information from /proc/cpuinfo.");
        for cpu in &cpus {
            let get = |k: &str| cpu.fields.iter().find(|(f, _)| *f == k).map_or("", |(_, v)| *v);
            out.add(
                &[
                    ("package", get("physical id")),
                    ("core", get("core id")),
                    ("cpu", &cpu.processor),
                    ("vendor", get("vendor_id")),
                    ("family", get("cpu family")),
                    ("model", get("model")),
                    ("model_name", get("model name")),
                    ("microcode", get("microcode")),
                    ("stepping", get("stepping")),
                    ("cachesize", get("cache size")),
                ],
                1.0,
            );
        }
        if let Some(first) = cpus.first() {
            let get = |k: &str| first.fields.iter().find(|(f, _)| *f == k).map_or("", |(_, v)| *v);
            for (pattern, key, name, label, help) in [
                (
                    &info.flags,
                    "flags",
                    "node_cpu_flag_info",
                    "flag",
                    "The `flags` field of CPU information from /proc/cpuinfo taken from the first core.",
                ),
                (
                    &info.bugs,
                    "bugs",
                    "node_cpu_bug_info",
                    "bug",
                    "The `bugs` field of CPU information from /proc/cpuinfo taken from the first core.",
                ),
            ] {
                let Some(re) = pattern else { continue };
                let from = out.mark();
                for v in get(key).split_ascii_whitespace().filter(|v| re.is_match(v)) {
                    out.add_to(from, name, MetricType::Gauge, help, &[(label, v)], 1.0);
                }
            }
        }
        Ok(())
    }

    fn update_throttles(&self, out: &mut Out<'_>) {
        // (package, core) -> core count, package -> package count; each read once.
        let mut cores: Vec<(u64, u64, Option<u64>)> = Vec::new();
        let mut packages: Vec<(u64, Option<u64>)> = Vec::new();
        let read = |p: &Path| std::fs::read_to_string(p).ok().and_then(|t| t.trim().parse::<u64>().ok());
        for (_, dir) in numbered(&self.cpus, "cpu") {
            let Some(package) = read(&dir.join("topology/physical_package_id")) else { continue };
            let Some(core) = read(&dir.join("topology/core_id")) else { continue };
            if !cores.iter().any(|(p, c, _)| *p == package && *c == core) {
                cores.push((package, core, read(&dir.join("thermal_throttle/core_throttle_count"))));
            }
            if !packages.iter().any(|(p, _)| *p == package) {
                packages.push((package, read(&dir.join("thermal_throttle/package_throttle_count"))));
            }
        }
        let from = out.mark();
        for (package, count) in &packages {
            let Some(count) = count else { continue };
            out.add_to(
                from,
                "node_cpu_package_throttles_total",
                MetricType::Counter,
                "Number of times this CPU package has been throttled.",
                &[("package", &package.to_string())],
                *count as f64,
            );
        }
        for (package, core, count) in &cores {
            let Some(count) = count else { continue };
            out.add_to(
                from,
                "node_cpu_core_throttles_total",
                MetricType::Counter,
                "Number of times this CPU core has been throttled.",
                &[("package", &package.to_string()), ("core", &core.to_string())],
                *count as f64,
            );
        }
    }
}

/// One processor block of /proc/cpuinfo.
struct CpuInfo<'a> {
    processor: String,
    fields: Vec<(&'a str, &'a str)>,
}

/// Splits /proc/cpuinfo (x86 layout) into processor blocks, as procfs does:
/// the first line must be `processor`, and numeric fields must parse.
fn parse_cpuinfo<'a>(path: &Path, text: &'a str) -> Result<Vec<CpuInfo<'a>>, NodeError> {
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let first = lines.next().unwrap_or("");
    if !first.starts_with("processor") || !first.contains(':') {
        return Err(NodeError::parse(path, format!("invalid cpuinfo file: {first:?}")));
    }
    let mut cpus: Vec<CpuInfo<'a>> = Vec::new();
    for line in std::iter::once(first).chain(lines) {
        let Some((key, value)) = line.split_once(": ").or_else(|| line.contains(':').then_some((line, ""))) else {
            continue;
        };
        let key = key.trim().trim_end_matches(':').trim();
        let bad = || NodeError::parse(path, format!("bad {key:?} value {value:?}"));
        match key {
            "processor" => {
                let n = value.parse::<u32>().map_err(|_| bad())?;
                cpus.push(CpuInfo { processor: n.to_string(), fields: Vec::new() });
                continue;
            }
            "cpu MHz" | "bogomips" => {
                value.parse::<f64>().map_err(|_| bad())?;
            }
            "siblings" | "cpu cores" | "cpuid level" | "clflush size" | "cache_alignment" => {
                value.parse::<u32>().map_err(|_| bad())?;
            }
            _ => {}
        }
        if let Some(cpu) = cpus.last_mut() {
            cpu.fields.push((key, value));
        }
    }
    Ok(cpus)
}

impl Sub for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        self.update_info(out)?;
        let hz = self.hz;
        let guest = self.guest;
        let (path, text) = self.file.read()?;
        let from = out.mark();
        out.family(SECONDS, MetricType::Counter, "Seconds the CPUs spent in each mode.");
        if guest {
            out.family(GUEST, MetricType::Counter, "Seconds the CPUs spent in guests (VMs) for each mode.");
        }
        let mut any = false;
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let Some(cpu) = fields.next().and_then(|f| f.strip_prefix("cpu")) else { continue };
            if cpu.is_empty() {
                continue; // the all-CPU total line
            }
            if !cpu.bytes().all(|b| b.is_ascii_digit()) {
                return Err(NodeError::parse(path, format!("bad cpu line {line:?}")));
            }
            let mut values = [0f64; 10];
            let mut n = 0;
            for (slot, f) in values.iter_mut().zip(fields) {
                *slot = f.parse::<u64>().map_err(|_| NodeError::parse(path, format!("bad number {f:?} in {line:?}")))?
                    as f64
                    / hz;
                n += 1;
            }
            if n < 8 {
                return Err(NodeError::parse(path, format!("too few fields in {line:?}")));
            }
            any = true;
            for (mode, v) in MODES.iter().zip(values) {
                out.add_to(from, SECONDS, MetricType::Counter, "", &[("cpu", cpu), ("mode", mode)], v);
            }
            // Guest time is also counted in user and nice; older kernels without the columns count zero.
            if guest {
                out.add_to(from, GUEST, MetricType::Counter, "", &[("cpu", cpu), ("mode", "user")], values[8]);
                out.add_to(from, GUEST, MetricType::Counter, "", &[("cpu", cpu), ("mode", "nice")], values[9]);
            }
        }
        if !any {
            return Err(NodeError::parse(path, "no per-CPU lines"));
        }
        if !self.isolated.is_empty() {
            out.family(
                "node_cpu_isolated",
                MetricType::Gauge,
                "Whether each core is isolated, information from /sys/devices/system/cpu/isolated.",
            );
            for cpu in &self.isolated {
                out.add(&[("cpu", cpu)], 1.0);
            }
        }
        self.update_throttles(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn per_cpu_modes_and_guest() {
        let t = Tree::new("cpu");
        t.write(
            "proc/stat",
            "cpu  10 20 30 40 50 60 70 80 90 100\ncpu0 100 200 300 400 500 600 700 800 900 1000\ncpu1 1 2 3 4 5 6 7 8 9 10\nintr 5 1 2\n",
        );
        let mut c = Cpu::new(&t.config());
        c.hz = 100.0;
        let got = run(&mut c).unwrap();
        assert_eq!(got.len(), 20);
        assert_eq!(value(&got, "node_cpu_seconds_total{cpu=\"0\", mode=\"user\"}"), 1.0);
        assert_eq!(value(&got, "node_cpu_seconds_total{cpu=\"0\", mode=\"steal\"}"), 8.0);
        assert_eq!(value(&got, "node_cpu_seconds_total{cpu=\"1\", mode=\"iowait\"}"), 0.05);
        assert_eq!(value(&got, "node_cpu_guest_seconds_total{cpu=\"0\", mode=\"nice\"}"), 10.0);
    }

    #[test]
    fn info_flags_bugs_throttles_and_isolated() {
        let t = Tree::new("cpu-info");
        t.write("proc/stat", "cpu  1 2 3 4 5 6 7 8\ncpu0 1 2 3 4 5 6 7 8\ncpu1 1 2 3 4 5 6 7 8\n");
        let block = |n: u32, core: u32| {
            format!(
                "processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 142\n\
                 model name\t: Intel(R) Core(TM) i7-8650U\nstepping\t: 10\nmicrocode\t: 0xb4\ncpu MHz\t\t: 799.998\n\
                 cache size\t: 8192 KB\nphysical id\t: 0\ncore id\t\t: {core}\n\
                 flags\t\t: fpu aes avx avx2 sse\nbugs\t\t: cpu_meltdown spectre_v1 swapgs\npower management:\n\n"
            )
        };
        t.write("proc/cpuinfo", &(block(0, 0) + &block(1, 0)));
        for (cpu, core, core_count, package_count) in [(0, 0, "5", "30"), (1, 1, "0", "31")] {
            let d = format!("sys/devices/system/cpu/cpu{cpu}");
            t.write(&format!("{d}/topology/physical_package_id"), "0\n");
            t.write(&format!("{d}/topology/core_id"), &format!("{core}\n"));
            t.write(&format!("{d}/thermal_throttle/core_throttle_count"), &format!("{core_count}\n"));
            t.write(&format!("{d}/thermal_throttle/package_throttle_count"), &format!("{package_count}\n"));
        }
        t.write("sys/devices/system/cpu/isolated", "1,3-4\n");
        let c = NodeConfig {
            cpu_info_flags_include: Some("^avx.?$".into()),
            cpu_info_bugs_include: Some("^spectre_.*".into()),
            cpu_guest: false,
            ..t.config()
        };
        let got = run(&mut Cpu::new(&c)).unwrap();
        let info = "cachesize=\"8192 KB\", core=\"0\", cpu=\"1\", family=\"6\", microcode=\"0xb4\", model=\"142\", \
                    model_name=\"Intel(R) Core(TM) i7-8650U\", package=\"0\", stepping=\"10\", vendor=\"GenuineIntel\"";
        assert_eq!(value(&got, &format!("node_cpu_info{{{info}}}")), 1.0);
        assert_eq!(value(&got, "node_cpu_flag_info{flag=\"avx2\"}"), 1.0);
        assert_eq!(value(&got, "node_cpu_bug_info{bug=\"spectre_v1\"}"), 1.0);
        assert_eq!(value(&got, "node_cpu_core_throttles_total{core=\"0\", package=\"0\"}"), 5.0);
        // The package count is read from the package's first CPU only.
        assert_eq!(value(&got, "node_cpu_package_throttles_total{package=\"0\"}"), 30.0);
        assert_eq!(value(&got, "node_cpu_isolated{cpu=\"4\"}"), 1.0);
        assert!(!got.iter().any(|(s, _)| s.starts_with(GUEST)), "cpu_guest = false");
        // 2 info, 2 flags, 1 bug, 16 seconds, 3 isolated, 1 package, 2 cores.
        assert_eq!(got.len(), 27, "{got:#?}");
        // Without the option nothing is read from /proc/cpuinfo.
        let got = run(&mut Cpu::new(&t.config())).unwrap();
        assert!(!got.iter().any(|(s, _)| s.contains("_info")));
        assert_eq!(parse_cpu_list("0-2,x"), None);
    }

    #[test]
    fn malformed_lines_fail_with_the_file() {
        let t = Tree::new("cpu-bad");
        t.write("proc/stat", "cpu0 1 2 x 4 5 6 7 8\n");
        let err = run(&mut Cpu::new(&t.config())).unwrap_err().to_string();
        assert!(err.contains("proc/stat") && err.contains("\"x\""), "{err}");
        t.write("proc/stat", "cpu0 1 2 3\n");
        assert!(run(&mut Cpu::new(&t.config())).is_err());
        t.write("proc/stat", "intr 1\n");
        assert!(run(&mut Cpu::new(&t.config())).is_err());
    }
}
