//! `thermal_zone`: zone temperatures and cooling-device states from
//! /sys/class/thermal, as node_exporter 1.5 reads them.

use std::path::{Path, PathBuf};

use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `thermal_zone` collector.
pub(super) struct ThermalZone {
    class: PathBuf,
}

impl ThermalZone {
    pub fn new(c: &NodeConfig) -> Self {
        ThermalZone { class: c.sys_path.join("class/thermal") }
    }
}

/// A sysfs attribute, whitespace-trimmed.
pub(super) fn read_trimmed(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string())
}

/// Entries of `dir` named `<prefix><digits...>`, sorted by name (a glob
/// `prefix[0-9]*`); none when `dir` is absent.
pub(super) fn numbered(dir: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(prefix)?;
            rest.starts_with(|c: char| c.is_ascii_digit()).then(|| (rest.to_string(), e.path()))
        })
        .collect();
    v.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    v
}

fn is_enodata(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENODATA)
}

/// One zone's (type, temperature in m°C); None for a zone whose sensor
/// answers ENODATA (skipped, as node_exporter does).
fn zone(dir: &Path) -> Result<Option<(String, i64)>, NodeError> {
    let read = |name: &str| {
        let p = dir.join(name);
        read_trimmed(&p).map_err(|e| (is_enodata(&e), NodeError::read(&p, e)))
    };
    let result = (|| {
        let kind = read("type")?;
        read("policy")?;
        let temp_text = read("temp")?;
        let temp = temp_text
            .parse::<i64>()
            .map_err(|_| (false, NodeError::parse(&dir.join("temp"), format!("bad number {temp_text:?}"))))?;
        // Optional attributes: absent or unreadable is fine, other errors fail the zone.
        for name in ["mode", "passive"] {
            let p = dir.join(name);
            match read_trimmed(&p) {
                Ok(text) if name == "passive" && text.parse::<u64>().is_err() => {
                    return Err((false, NodeError::parse(&p, format!("bad number {text:?}"))));
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) => {}
                Err(e) => return Err((is_enodata(&e), NodeError::read(&p, e))),
            }
        }
        Ok((kind, temp))
    })();
    match result {
        Ok(z) => Ok(Some(z)),
        Err((true, _)) => Ok(None),
        Err((false, e)) => Err(e),
    }
}

/// One cooling device's (type, max state, current state).
fn cooling(dir: &Path) -> Result<(String, i64, i64), NodeError> {
    let read = |name: &str| {
        let p = dir.join(name);
        read_trimmed(&p).map_err(|e| NodeError::read(&p, e))
    };
    let int = |name: &str| -> Result<i64, NodeError> {
        let text = read(name)?;
        text.parse::<i64>().map_err(|_| NodeError::parse(&dir.join(name), format!("bad number {text:?}")))
    };
    let kind = read("type")?;
    let max = int("max_state")?;
    // cur_state may be -1 (intel powerclamp).
    let cur = int("cur_state")?;
    Ok((kind, max, cur))
}

impl Sub for ThermalZone {
    fn name(&self) -> &'static str {
        "thermal_zone"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let from = out.mark();
        for (name, dir) in numbered(&self.class, "thermal_zone") {
            let Some((kind, temp)) = zone(&dir)? else { continue };
            out.add_to(
                from,
                "node_thermal_zone_temp",
                MetricType::Gauge,
                "Zone temperature in Celsius",
                &[("zone", &name), ("type", &kind)],
                temp as f64 / 1000.0,
            );
        }
        let mut devices = Vec::new();
        for (name, dir) in numbered(&self.class, "cooling_device") {
            // One broken device fails the lot, as in node_exporter.
            devices.push((name, cooling(&dir)?));
        }
        for (name, (kind, max, cur)) in &devices {
            let labels = [("name", name.as_str()), ("type", kind.as_str())];
            out.add_to(
                from,
                "node_cooling_device_cur_state",
                MetricType::Gauge,
                "Current throttle state of the cooling device",
                &labels,
                *cur as f64,
            );
            out.add_to(
                from,
                "node_cooling_device_max_state",
                MetricType::Gauge,
                "Maximum throttle state of the cooling device",
                &labels,
                *max as f64,
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
    fn zones_and_cooling_devices() {
        let t = Tree::new("thermal");
        for (k, v) in [("type", "x86_pkg_temp"), ("policy", "step_wise"), ("temp", "12376"), ("mode", "enabled")] {
            t.write(&format!("sys/class/thermal/thermal_zone0/{k}"), &format!("{v}\n"));
        }
        for (k, v) in [("type", "Processor"), ("max_state", "50"), ("cur_state", "-1")] {
            t.write(&format!("sys/class/thermal/cooling_device0/{k}"), &format!("{v}\n"));
        }
        t.write("sys/class/thermal/thermal_zoneX/type", "ignored\n");
        let got = run(&mut ThermalZone::new(&t.config())).unwrap();
        assert_eq!(got.len(), 3, "{got:#?}");
        assert_eq!(value(&got, "node_thermal_zone_temp{type=\"x86_pkg_temp\", zone=\"0\"}"), 12.376);
        assert_eq!(value(&got, "node_cooling_device_cur_state{name=\"0\", type=\"Processor\"}"), -1.0);
        assert_eq!(value(&got, "node_cooling_device_max_state{name=\"0\", type=\"Processor\"}"), 50.0);
        // An empty or absent class is a success with nothing, as in node_exporter.
        assert!(run(&mut ThermalZone::new(&Tree::new("thermal-none").config())).unwrap().is_empty());
        t.write("sys/class/thermal/cooling_device0/max_state", "many\n");
        let err = run(&mut ThermalZone::new(&t.config())).unwrap_err().to_string();
        assert!(err.contains("max_state") && err.contains("many"), "{err}");
    }
}
