//! `hwmon`: temperatures, fans, voltages, currents, power and the rest of
//! /sys/class/hwmon, named and labelled as node_exporter 1.5 does (chip
//! name from the device path, `sensor` = type + number, one family per
//! sensor type and attribute).

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::path::{Path, PathBuf};

use super::{Dir, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// Sensor types node_exporter reads; other attribute files are ignored.
const SENSOR_TYPES: [&str; 13] = [
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
];

/// Attributes of one chip: sensor ("temp1") -> attribute ("input", "" for
/// a bare `pwm1`) -> raw text.
type Sensors = BTreeMap<String, BTreeMap<String, String>>;

/// The `hwmon` collector.
pub(super) struct Hwmon {
    class: PathBuf,
    buf: Vec<u8>,
    name: Vec<u8>,
}

impl Hwmon {
    pub fn new(c: &NodeConfig) -> Self {
        Hwmon { class: c.sys_path.join("class/hwmon"), buf: Vec::with_capacity(128), name: Vec::with_capacity(64) }
    }
}

/// node_exporter's metric-name cleaning: lower case, anything outside
/// `[a-z0-9:_]` becomes `_`, then `_` trimmed from both ends.
pub(super) fn clean_name(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            let l = c.to_lowercase().next().unwrap_or(c);
            if l.is_ascii_lowercase() || l.is_ascii_digit() || l == ':' || l == '_' {
                l
            } else {
                '_'
            }
        })
        .collect();
    mapped.trim_matches('_').to_string()
}

/// Splits an attribute file name into (type, number, property) as
/// node_exporter's `^([^0-9]+)([0-9]*)?(_(.+))?$` does: `temp1_crit_alarm`
/// is ("temp", 1, "crit_alarm"), `beep_enable` is ("beep_enable", 0, "").
fn explode(file: &str) -> Option<(&str, u32, &str)> {
    let digits_at = file.find(|c: char| c.is_ascii_digit()).unwrap_or(file.len());
    if digits_at == 0 {
        return None;
    }
    let (kind, rest) = file.split_at(digits_at);
    let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let (digits, rest) = rest.split_at(digits_end);
    let property = if rest.is_empty() {
        ""
    } else {
        // After the number only `_` + something may follow.
        let p = rest.strip_prefix('_')?;
        if p.is_empty() {
            return None;
        }
        p
    };
    let n = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    Some((kind, n, property))
}

impl Hwmon {
    /// Reads the sensor attribute files of `dir` into `data`; unreadable
    /// files (directories, drivers answering EAGAIN) are skipped.
    fn read_sensors(&mut self, dir: &Path, data: &mut Sensors) -> Result<(), NodeError> {
        let entries = std::fs::read_dir(dir).map_err(|e| NodeError::read(dir, e))?;
        let handle = Dir::open(dir).map_err(|e| NodeError::read(dir, e))?;
        for entry in entries.flatten() {
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            let Some((kind, n, property)) = explode(file) else { continue };
            if !SENSOR_TYPES.contains(&kind) {
                continue;
            }
            self.name.clear();
            self.name.extend_from_slice(file.as_bytes());
            self.name.push(0);
            let Ok(cname) = CStr::from_bytes_with_nul(&self.name) else { continue };
            let Ok(value) = handle.read(cname, &mut self.buf) else { continue };
            let value = value.trim_start_matches('\n');
            data.entry(format!("{kind}{n}")).or_default().insert(property.to_string(), value.to_string());
        }
        Ok(())
    }

    fn chip(&mut self, dir: &Path, out: &mut Out<'_>, from: usize) -> Result<(), NodeError> {
        let chip = chip_name(dir)?;
        let mut data = Sensors::new();
        self.read_sensors(dir, &mut data)?;
        let device = dir.join("device");
        if device.exists() {
            self.read_sensors(&device, &mut data)?;
        }
        if let Ok(raw) = std::fs::read_to_string(dir.join("name")) {
            let human = clean_name(&raw);
            if !human.is_empty() {
                out.add_to(
                    from,
                    "node_hwmon_chip_names",
                    MetricType::Gauge,
                    "Annotation metric for human-readable chip names",
                    &[("chip", &chip), ("chip_name", &human)],
                    1.0,
                );
            }
        }
        for (sensor, attrs) in &data {
            emit_sensor(out, from, &chip, sensor, attrs);
        }
        Ok(())
    }
}

/// The `chip` label: `<parent>_<device>` of the resolved device path
/// (`platform_coretemp_0`), else the cleaned `name` file, else `hwmonN`.
fn chip_name(dir: &Path) -> Result<String, NodeError> {
    if let Ok(device) = std::fs::canonicalize(dir.join("device")) {
        let dev = device.file_name().and_then(|n| n.to_str()).map(clean_name).unwrap_or_default();
        let parent =
            device.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).map(clean_name).unwrap_or_default();
        if !parent.is_empty() && !dev.is_empty() {
            return Ok(format!("{parent}_{dev}"));
        }
        if !dev.is_empty() {
            return Ok(dev);
        }
    }
    if let Ok(raw) = std::fs::read_to_string(dir.join("name")) {
        let name = clean_name(&raw);
        if !name.is_empty() {
            return Ok(name);
        }
    }
    let real = std::fs::canonicalize(dir).map_err(|e| NodeError::read(dir, e))?;
    let name = real.file_name().and_then(|n| n.to_str()).map(clean_name).unwrap_or_default();
    if name.is_empty() {
        return Err(NodeError::parse(dir, "cannot derive a chip name"));
    }
    Ok(name)
}

/// The families of one sensor, by node_exporter's rules for its type and
/// each attribute.
fn emit_sensor(out: &mut Out<'_>, from: usize, chip: &str, sensor: &str, attrs: &BTreeMap<String, String>) {
    let kind = explode(sensor).map_or("", |(k, _, _)| k);
    let labels = [("chip", chip), ("sensor", sensor)];
    if let Some(text) = attrs.get("label") {
        out.add_to(
            from,
            "node_hwmon_sensor_label",
            MetricType::Gauge,
            "Label for given chip and sensor",
            &[("chip", chip), ("sensor", sensor), ("label", text)],
            1.0,
        );
    }
    let plain = attrs.get("");
    match kind {
        "beep_enable" => {
            let v = if plain.map(String::as_str) == Some("1") { 1.0 } else { 0.0 };
            out.add_to(from, "node_hwmon_beep_enabled", MetricType::Gauge, "Hardware beep enabled", &labels, v);
            return;
        }
        "vrm" => {
            if let Some(v) = plain.and_then(|p| p.parse::<f64>().ok()) {
                out.add_to(
                    from,
                    "node_hwmon_voltage_regulator_version",
                    MetricType::Gauge,
                    "Hardware voltage regulator",
                    &labels,
                    v,
                );
            }
            return;
        }
        "update_interval" => {
            if let Some(v) = plain.and_then(|p| p.parse::<f64>().ok()) {
                out.add_to(
                    from,
                    "node_hwmon_update_interval_seconds",
                    MetricType::Gauge,
                    "Hardware monitor update interval",
                    &labels,
                    v * 0.001,
                );
            }
            return;
        }
        _ => {}
    }
    for (element, text) in attrs {
        if element == "label" {
            continue;
        }
        let Ok(v) = text.parse::<f64>() else { continue };
        let mut name = format!("node_hwmon_{kind}");
        if element == "input" {
            if plain.is_some() {
                name.push_str("_input");
            }
        } else if !element.is_empty() {
            name.push('_');
            name.push_str(&clean_name(element));
        }
        let (suffix, help, kind_out, value) = describe(kind, element, v);
        name.push_str(suffix);
        out.add_to(from, &name, kind_out, &help, &labels, value);
    }
}

/// Unit suffix, help text, type and scaled value of one attribute.
fn describe(kind: &str, element: &str, v: f64) -> (&'static str, String, MetricType, f64) {
    let g = MetricType::Gauge;
    match (kind, element) {
        (_, "fault" | "alarm") => ("", format!("Hardware sensor {element} status ({kind})"), g, v),
        (_, "beep") => ("_enabled", "Hardware monitor sensor has beeping enabled".into(), g, v),
        ("in" | "cpu", _) => ("_volts", format!("Hardware monitor for voltage ({element})"), g, v * 0.001),
        ("temp", e) if e != "type" => {
            let e = if e.is_empty() { "input" } else { e };
            ("_celsius", format!("Hardware monitor for temperature ({e})"), g, v * 0.001)
        }
        ("curr", _) => ("_amps", format!("Hardware monitor for current ({element})"), g, v * 0.001),
        ("energy", _) => (
            "_joule_total",
            format!("Hardware monitor for joules used so far ({element})"),
            MetricType::Counter,
            v / 1_000_000.0,
        ),
        ("power", "accuracy") => ("", "Hardware monitor power meter accuracy, as a ratio".into(), g, v / 1_000_000.0),
        ("power", "average_interval" | "average_interval_min" | "average_interval_max") => {
            ("_seconds", format!("Hardware monitor power usage update interval ({element})"), g, v * 0.001)
        }
        ("power", _) => ("_watt", format!("Hardware monitor for power usage in watts ({element})"), g, v / 1_000_000.0),
        ("humidity", _) => (
            "",
            format!(
                "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) ({element})"
            ),
            g,
            v / 1_000_000.0,
        ),
        ("fan", "input" | "min" | "max" | "target") => {
            ("_rpm", format!("Hardware monitor for fan revolutions per minute ({element})"), g, v)
        }
        _ => ("", format!("Hardware monitor {kind} element {element}"), g, v),
    }
}

impl Sub for Hwmon {
    fn name(&self) -> &'static str {
        "hwmon"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let entries = match std::fs::read_dir(&self.class) {
            Ok(e) => e,
            Err(e) => return Err(NodeError::read_or_absent(&self.class, e)),
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            // Symlinks are followed; plain files are not chips.
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort_unstable();
        let from = out.mark();
        // node_exporter carries on past a broken chip and reports the last error.
        let mut result = Ok(());
        for dir in &dirs {
            if let Err(e) = self.chip(dir, out, from) {
                result = Err(e);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn file_names_split_as_node_exporter() {
        assert_eq!(explode("temp1_crit_alarm"), Some(("temp", 1, "crit_alarm")));
        assert_eq!(explode("pwm1"), Some(("pwm", 1, "")));
        assert_eq!(explode("beep_enable"), Some(("beep_enable", 0, "")));
        assert_eq!(explode("pwm1_auto_point2_temp"), Some(("pwm", 1, "auto_point2_temp")));
        assert_eq!(explode("in0_input"), Some(("in", 0, "input")));
        assert_eq!(explode("1abc"), None);
        assert_eq!(explode("fan1x"), None);
        assert_eq!(clean_name("Coretemp.0\n"), "coretemp_0");
        assert_eq!(clean_name("__nct6779__"), "nct6779");
    }

    #[test]
    fn chips_sensors_and_units() {
        let t = Tree::new("hwmon");
        // A chip with a device link: named from the device path.
        t.write("sys/devices/platform/coretemp.0/hwmon/hwmon0/name", "coretemp\n");
        t.write("sys/devices/platform/coretemp.0/hwmon/hwmon0/temp1_input", "55000\n");
        t.write("sys/devices/platform/coretemp.0/hwmon/hwmon0/temp1_label", "Physical id 0\n");
        t.write("sys/devices/platform/coretemp.0/hwmon/hwmon0/temp1_crit_alarm", "0\n");
        std::os::unix::fs::symlink(
            "../../../coretemp.0",
            t.0.join("sys/devices/platform/coretemp.0/hwmon/hwmon0/device"),
        )
        .unwrap();
        std::fs::create_dir_all(t.0.join("sys/class/hwmon")).unwrap();
        std::os::unix::fs::symlink(
            "../../devices/platform/coretemp.0/hwmon/hwmon0",
            t.0.join("sys/class/hwmon/hwmon0"),
        )
        .unwrap();
        // A chip named by its name file only.
        t.write("sys/class/hwmon/hwmon1/name", "nct6779\n");
        t.write("sys/class/hwmon/hwmon1/in0_input", "792\n");
        t.write("sys/class/hwmon/hwmon1/in0_alarm", "1\n");
        t.write("sys/class/hwmon/hwmon1/fan2_input", "1098\n");
        t.write("sys/class/hwmon/hwmon1/fan2_pulses", "2\n");
        t.write("sys/class/hwmon/hwmon1/fan2_beep", "0\n");
        t.write("sys/class/hwmon/hwmon1/pwm1", "255\n");
        t.write("sys/class/hwmon/hwmon1/power1_average", "12500000\n");
        t.write("sys/class/hwmon/hwmon1/beep_enable", "1\n");
        t.write("sys/class/hwmon/hwmon1/uevent", "x\n");
        let got = run(&mut Hwmon::new(&t.config())).unwrap();
        let c0 = "chip=\"platform_coretemp_0\", sensor=\"temp1\"";
        assert_eq!(value(&got, &format!("node_hwmon_temp_celsius{{{c0}}}")), 55.0);
        assert_eq!(value(&got, &format!("node_hwmon_temp_crit_alarm_celsius{{{c0}}}")), 0.0);
        assert_eq!(
            value(
                &got,
                "node_hwmon_sensor_label{chip=\"platform_coretemp_0\", label=\"Physical id 0\", sensor=\"temp1\"}"
            ),
            1.0
        );
        assert_eq!(value(&got, "node_hwmon_chip_names{chip=\"platform_coretemp_0\", chip_name=\"coretemp\"}"), 1.0);
        let n = |s: &str| format!("{{chip=\"nct6779\", sensor=\"{s}\"}}");
        assert_eq!(value(&got, &format!("node_hwmon_in_volts{}", n("in0"))), 0.792);
        assert_eq!(value(&got, &format!("node_hwmon_in_alarm{}", n("in0"))), 1.0);
        assert_eq!(value(&got, &format!("node_hwmon_fan_rpm{}", n("fan2"))), 1098.0);
        assert_eq!(value(&got, &format!("node_hwmon_fan_pulses{}", n("fan2"))), 2.0);
        assert_eq!(value(&got, &format!("node_hwmon_fan_beep_enabled{}", n("fan2"))), 0.0);
        assert_eq!(value(&got, &format!("node_hwmon_pwm{}", n("pwm1"))), 255.0);
        assert_eq!(value(&got, &format!("node_hwmon_power_average_watt{}", n("power1"))), 12.5);
        assert_eq!(value(&got, &format!("node_hwmon_beep_enabled{}", n("beep_enable0"))), 1.0);
        assert_eq!(got.len(), 13, "{got:#?}");
    }

    #[test]
    fn absent_class_is_no_data() {
        let t = Tree::new("hwmon-none");
        assert!(matches!(run(&mut Hwmon::new(&t.config())), Err(NodeError::NoData(_))));
    }
}
