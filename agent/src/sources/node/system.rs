//! `time`, `uname` and `os`: what the host is and what time it has.

use std::ffi::CStr;
use std::path::PathBuf;
use std::time::SystemTime;

use super::{Dir, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `time` collector: wall clock, zone offset and clock sources.
pub(super) struct Time {
    clocksource: PathBuf,
    bufs: [Vec<u8>; 2],
}

impl Time {
    pub fn new(c: &NodeConfig) -> Self {
        Time { clocksource: c.sys_path.join("devices/system/clocksource"), bufs: Default::default() }
    }
}

/// Offset from UTC in seconds and the zone's abbreviation, as localtime(3)
/// sees them (TZ, then /etc/localtime, else UTC), for `now`.
fn zone(now: i64) -> (i64, String) {
    // SAFETY: localtime_r fills `tm` from `t`; tm_zone points into libc's
    // static zone names, valid for the life of the process.
    unsafe {
        // libc marks musl's time_t deprecated (it is to become 64-bit on
        // 32-bit targets); on x86_64 it is i64 either way.
        #[allow(deprecated)]
        let t: libc::time_t = now;
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() || tm.tm_zone.is_null() {
            return (0, "UTC".into());
        }
        (tm.tm_gmtoff, CStr::from_ptr(tm.tm_zone).to_string_lossy().into_owned())
    }
}

impl Sub for Time {
    fn name(&self) -> &'static str {
        "time"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        out.single(
            "node_time_seconds",
            MetricType::Gauge,
            "System time in seconds since epoch (1970).",
            &[],
            now.as_secs_f64(),
        );
        let (offset, name) = zone(now.as_secs() as i64);
        out.single(
            "node_time_zone_offset_seconds",
            MetricType::Gauge,
            "System time zone offset in seconds.",
            &[("time_zone", &name)],
            offset as f64,
        );
        // Clock sources: clocksource0 on every machine we know; missing is fine.
        let Ok(dir) = Dir::open(&self.clocksource.join("clocksource0")) else { return Ok(()) };
        let [a, b] = &mut self.bufs;
        if let Ok(available) = dir.read(c"available_clocksource", a) {
            out.family(
                "node_time_clocksource_available_info",
                MetricType::Gauge,
                "Available clocksources read from '/sys/devices/system/clocksource'.",
            );
            for source in available.split_ascii_whitespace() {
                out.add(&[("clocksource", source), ("device", "0")], 1.0);
            }
        }
        if let Ok(current) = dir.read(c"current_clocksource", b) {
            out.single(
                "node_time_clocksource_current_info",
                MetricType::Gauge,
                "Current clocksource read from '/sys/devices/system/clocksource'.",
                &[("clocksource", current.trim()), ("device", "0")],
                1.0,
            );
        }
        Ok(())
    }
}

/// The `uname` collector.
pub(super) struct Uname;

impl Sub for Uname {
    fn name(&self) -> &'static str {
        "uname"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        // SAFETY: uname fills the zeroed struct; its fields are NUL-terminated.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut u) } != 0 {
            return Err(NodeError::Read { path: "uname(2)".into(), source: std::io::Error::last_os_error() });
        }
        let field = |f: &[libc::c_char]| {
            // SAFETY: the kernel NUL-terminates every utsname field.
            unsafe { CStr::from_ptr(f.as_ptr()) }.to_str().unwrap_or("")
        };
        out.single(
            "node_uname_info",
            MetricType::Gauge,
            "Labeled system information as provided by the uname system call.",
            &[
                ("domainname", field(&u.domainname)),
                ("machine", field(&u.machine)),
                ("nodename", field(&u.nodename)),
                ("release", field(&u.release)),
                ("sysname", field(&u.sysname)),
                ("version", field(&u.version)),
            ],
            1.0,
        );
        Ok(())
    }
}

/// The `timex` collector: the kernel clock discipline from adjtimex(2).
pub(super) struct Timex;

/// adjtimex's 16-bit fraction of parts per million.
const PPM16: f64 = 1_000_000.0 * 65_536.0;

impl Sub for Timex {
    fn name(&self) -> &'static str {
        "timex"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        // SAFETY: adjtimex with modes 0 only reads into the zeroed struct.
        let mut t: libc::timex = unsafe { std::mem::zeroed() };
        let state = unsafe { libc::adjtimex(&mut t) };
        if state < 0 {
            return Err(NodeError::Read { path: "adjtimex(2)".into(), source: std::io::Error::last_os_error() });
        }
        // Offsets and jitter are in ns with STA_NANO, else in µs.
        let div = if t.status & libc::STA_NANO != 0 { 1e9 } else { 1e6 };
        let g = MetricType::Gauge;
        let c = MetricType::Counter;
        let sync = if state == libc::TIME_ERROR { 0.0 } else { 1.0 };
        let rows: [(&str, MetricType, &str, f64); 17] = [
            (
                "node_timex_offset_seconds",
                g,
                "Time offset in between local system and reference clock.",
                t.offset as f64 / div,
            ),
            (
                "node_timex_frequency_adjustment_ratio",
                g,
                "Local clock frequency adjustment.",
                1.0 + t.freq as f64 / PPM16,
            ),
            ("node_timex_maxerror_seconds", g, "Maximum error in seconds.", t.maxerror as f64 / 1e6),
            ("node_timex_estimated_error_seconds", g, "Estimated error in seconds.", t.esterror as f64 / 1e6),
            ("node_timex_status", g, "Value of the status array bits.", t.status as f64),
            ("node_timex_loop_time_constant", g, "Phase-locked loop time constant.", t.constant as f64),
            ("node_timex_tick_seconds", g, "Seconds between clock ticks.", t.tick as f64 / 1e6),
            ("node_timex_pps_frequency_hertz", g, "Pulse per second frequency.", t.ppsfreq as f64 / PPM16),
            ("node_timex_pps_jitter_seconds", g, "Pulse per second jitter.", t.jitter as f64 / div),
            ("node_timex_pps_shift_seconds", g, "Pulse per second interval duration.", t.shift as f64),
            (
                "node_timex_pps_stability_hertz",
                g,
                "Pulse per second stability, average of recent frequency changes.",
                t.stabil as f64 / PPM16,
            ),
            (
                "node_timex_pps_jitter_total",
                c,
                "Pulse per second count of jitter limit exceeded events.",
                t.jitcnt as f64,
            ),
            (
                "node_timex_pps_calibration_total",
                c,
                "Pulse per second count of calibration intervals.",
                t.calcnt as f64,
            ),
            ("node_timex_pps_error_total", c, "Pulse per second count of calibration errors.", t.errcnt as f64),
            (
                "node_timex_pps_stability_exceeded_total",
                c,
                "Pulse per second count of stability limit exceeded events.",
                t.stbcnt as f64,
            ),
            ("node_timex_tai_offset_seconds", g, "International Atomic Time (TAI) offset.", t.tai as f64),
            ("node_timex_sync_status", g, "Is clock synchronized to a reliable server (1 = yes, 0 = no).", sync),
        ];
        for (name, kind, help, value) in rows {
            out.single(name, kind, help, &[], value);
        }
        Ok(())
    }
}

/// os-release keys of `node_os_info`, with their label names.
const OS_KEYS: [(&str, &str); 12] = [
    ("BUILD_ID", "build_id"),
    ("ID", "id"),
    ("ID_LIKE", "id_like"),
    ("IMAGE_ID", "image_id"),
    ("IMAGE_VERSION", "image_version"),
    ("NAME", "name"),
    ("PRETTY_NAME", "pretty_name"),
    ("VARIANT", "variant"),
    ("VARIANT_ID", "variant_id"),
    ("VERSION", "version"),
    ("VERSION_CODENAME", "version_codename"),
    ("VERSION_ID", "version_id"),
];

/// The `os` collector: /etc/os-release (or /usr/lib/os-release) under
/// root_path, parsed again only when the file changes.
pub(super) struct Os {
    paths: [PathBuf; 2],
    /// Values of [`OS_KEYS`] and the (path, mtime) they came from.
    values: [String; 12],
    from: Option<(usize, SystemTime)>,
}

impl Os {
    pub fn new(c: &NodeConfig) -> Self {
        Os {
            paths: [c.root_path.join("etc/os-release"), c.root_path.join("usr/lib/os-release")],
            values: Default::default(),
            from: None,
        }
    }
}

/// Unquotes an os-release value ("a \"b\"" or 'c').
fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2 && (v.starts_with('"') && v.ends_with('"') || v.starts_with('\'') && v.ends_with('\'')) {
        let inner = &v[1..v.len() - 1];
        let mut s = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                if let Some(n) = chars.next() {
                    s.push(n);
                }
            } else {
                s.push(c);
            }
        }
        s
    } else {
        v.to_string()
    }
}

/// The leading major.minor of a VERSION_ID ("22.04.3" is 22.04).
fn major_minor(version_id: &str) -> Option<f64> {
    let mut end = 0;
    let mut dots = 0;
    for (i, c) in version_id.char_indices() {
        if c == '.' {
            dots += 1;
            if dots > 1 {
                break;
            }
        } else if !c.is_ascii_digit() {
            break;
        }
        end = i + c.len_utf8();
    }
    version_id[..end].trim_end_matches('.').parse().ok()
}

impl Sub for Os {
    fn name(&self) -> &'static str {
        "os"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let mut found = None;
        for (i, p) in self.paths.iter().enumerate() {
            if let Ok(m) = std::fs::metadata(p) {
                found = Some((i, m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
                break;
            }
        }
        let Some(now) = found else {
            return Err(NodeError::read(&self.paths[0], std::io::ErrorKind::NotFound.into()));
        };
        if self.from != Some(now) {
            let path = &self.paths[now.0];
            let text = std::fs::read_to_string(path).map_err(|e| NodeError::read(path, e))?;
            self.values = Default::default();
            for line in text.lines() {
                let Some((k, v)) = line.split_once('=') else { continue };
                if let Some(i) = OS_KEYS.iter().position(|(key, _)| *key == k.trim()) {
                    self.values[i] = unquote(v);
                }
            }
            self.from = Some(now);
        }
        let v = &self.values;
        let pairs: [(&str, &str); 12] = std::array::from_fn(|i| (OS_KEYS[i].1, v[i].as_str()));
        out.single(
            "node_os_info",
            MetricType::Gauge,
            "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
            &pairs,
            1.0,
        );
        if let Some(version) = major_minor(&v[11]) {
            out.single(
                "node_os_version",
                MetricType::Gauge,
                "Metric containing the major.minor part of the OS version.",
                &[("id", &v[1]), ("id_like", &v[2]), ("name", &v[5])],
                version,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn os_release_parsed_and_reparsed_on_change() {
        let t = Tree::new("os");
        t.write(
            "usr/lib/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n# comment\n",
        );
        let mut os = Os::new(&t.config());
        let got = run(&mut os).unwrap();
        assert_eq!(value(&got, "node_os_version{id=\"debian\", name=\"Debian GNU/Linux\"}"), 12.0);
        assert_eq!(
            value(&got, "node_os_info{id=\"debian\", name=\"Debian GNU/Linux\", pretty_name=\"Debian GNU/Linux 12 (bookworm)\", version=\"12 (bookworm)\", version_codename=\"bookworm\", version_id=\"12\"}"),
            1.0
        );
        t.write("etc/os-release", "ID=ubuntu\nID_LIKE=debian\nVERSION_ID='22.04.3'\nNAME=\"Ub \\\"x\\\"\"\n");
        let got = run(&mut os).unwrap();
        assert_eq!(value(&got, "node_os_version{id=\"ubuntu\", id_like=\"debian\", name=\"Ub \\\"x\\\"\"}"), 22.04);
        assert!(run(&mut Os::new(&Tree::new("os-none").config())).is_err());
    }

    #[test]
    fn major_minor_forms() {
        assert_eq!(major_minor("12"), Some(12.0));
        assert_eq!(major_minor("22.04.3"), Some(22.04));
        assert_eq!(major_minor("3.18."), Some(3.18));
        assert_eq!(major_minor("rolling"), None);
    }

    #[test]
    fn time_and_uname() {
        let t = Tree::new("time");
        t.write("sys/devices/system/clocksource/clocksource0/available_clocksource", "kvm-clock tsc acpi_pm \n");
        t.write("sys/devices/system/clocksource/clocksource0/current_clocksource", "tsc\n");
        let got = run(&mut Time::new(&t.config())).unwrap();
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((value(&got, "node_time_seconds{}") - now).abs() < 5.0);
        assert_eq!(value(&got, "node_time_clocksource_current_info{clocksource=\"tsc\", device=\"0\"}"), 1.0);
        assert_eq!(value(&got, "node_time_clocksource_available_info{clocksource=\"acpi_pm\", device=\"0\"}"), 1.0);
        assert_eq!(got.iter().filter(|(s, _)| s.starts_with("node_time_zone_offset_seconds{time_zone=")).count(), 1);
        let got = run(&mut Timex).unwrap();
        assert_eq!(got.len(), 17);
        assert!(value(&got, "node_timex_tick_seconds{}") > 0.0);
        let got = run(&mut Uname).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].0.contains("sysname=\"Linux\""), "{got:?}");
    }
}
