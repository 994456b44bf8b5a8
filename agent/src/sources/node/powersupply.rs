//! `powersupplyclass`: batteries, mains adapters and UPSes from
//! /sys/class/power_supply, as node_exporter 1.5 reads them.

use std::path::{Path, PathBuf};

use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// (attribute file, metric suffix, divisor) of the numeric attributes.
const NUMBERS: [(&str, &str, f64); 49] = [
    ("authentic", "authentic", 1.0),
    ("calibrate", "calibrate", 1.0),
    ("capacity", "capacity", 1.0),
    ("capacity_alert_max", "capacity_alert_max", 1.0),
    ("capacity_alert_min", "capacity_alert_min", 1.0),
    ("cycle_count", "cyclecount", 1.0),
    ("online", "online", 1.0),
    ("present", "present", 1.0),
    ("time_to_empty_now", "time_to_empty_seconds", 1.0),
    ("time_to_full_now", "time_to_full_seconds", 1.0),
    // Micro-units (µA, µV, µWh, µW) to base units.
    ("current_boot", "current_boot", 1e6),
    ("current_max", "current_max", 1e6),
    ("current_now", "current_ampere", 1e6),
    ("energy_empty", "energy_empty", 1e6),
    ("energy_empty_design", "energy_empty_design", 1e6),
    ("energy_full", "energy_full", 1e6),
    ("energy_full_design", "energy_full_design", 1e6),
    ("energy_now", "energy_watthour", 1e6),
    ("voltage_boot", "voltage_boot", 1e6),
    ("voltage_max", "voltage_max", 1e6),
    ("voltage_max_design", "voltage_max_design", 1e6),
    ("voltage_min", "voltage_min", 1e6),
    ("voltage_min_design", "voltage_min_design", 1e6),
    ("voltage_now", "voltage_volt", 1e6),
    ("voltage_ocv", "voltage_ocv", 1e6),
    ("charge_control_limit", "charge_control_limit", 1e6),
    ("charge_control_limit_max", "charge_control_limit_max", 1e6),
    ("charge_counter", "charge_counter", 1e6),
    ("charge_empty", "charge_empty", 1e6),
    ("charge_empty_design", "charge_empty_design", 1e6),
    ("charge_full", "charge_full", 1e6),
    ("charge_full_design", "charge_full_design", 1e6),
    ("charge_now", "charge_ampere", 1e6),
    ("charge_term_current", "charge_term_current", 1e6),
    ("constant_charge_current", "constant_charge_current", 1e6),
    ("constant_charge_current_max", "constant_charge_current_max", 1e6),
    ("constant_charge_voltage", "constant_charge_voltage", 1e6),
    ("constant_charge_voltage_max", "constant_charge_voltage_max", 1e6),
    ("precharge_current", "precharge_current", 1e6),
    ("input_current_limit", "input_current_limit", 1e6),
    ("power_now", "power_watt", 1e6),
    // Tenths of a degree.
    ("temp", "temp_celsius", 10.0),
    ("temp_alert_max", "temp_alert_max_celsius", 10.0),
    ("temp_alert_min", "temp_alert_min_celsius", 10.0),
    ("temp_ambient", "temp_ambient_celsius", 10.0),
    ("temp_ambient_max", "temp_ambient_max_celsius", 10.0),
    ("temp_ambient_min", "temp_ambient_min_celsius", 10.0),
    ("temp_max", "temp_max_celsius", 10.0),
    ("temp_min", "temp_min_celsius", 10.0),
];

/// Numeric attributes procfs parses (and so validates) but node_exporter does not export.
const PARSED_ONLY: [&str; 7] =
    ["charge_avg", "current_avg", "energy_avg", "power_avg", "time_to_empty_avg", "time_to_full_avg", "voltage_avg"];

/// Text attributes that become labels of `node_power_supply_info`.
const TEXTS: [&str; 11] = [
    "capacity_level",
    "charge_type",
    "health",
    "manufacturer",
    "model_name",
    "serial_number",
    "status",
    "technology",
    "type",
    "usb_type",
    "scope",
];

/// The `powersupplyclass` collector.
pub(super) struct PowerSupply {
    class: PathBuf,
    ignored: regex::Regex,
    names: Vec<(String, String)>,
}

impl PowerSupply {
    pub fn new(c: &NodeConfig) -> Self {
        let names = NUMBERS
            .iter()
            .map(|(_, n, _)| {
                (format!("node_power_supply_{n}"), format!("{n} value of /sys/class/power_supply/<power_supply>."))
            })
            .collect();
        PowerSupply {
            class: c.sys_path.join("class/power_supply"),
            ignored: super::regex_or(&c.powersupply_ignored_supplies, "^$"),
            names,
        }
    }
}

/// Parses an integer as Go's ParseInt with base 0 (decimal, 0x, 0o, 0b, leading 0 octal).
fn parse_int(text: &str) -> Option<i64> {
    let (neg, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let t = t.replace('_', "");
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        i64::from_str_radix(b, 2).ok()?
    } else if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        i64::from_str_radix(o, 8).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else {
        t.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Text with each run of invalid UTF-8 replaced by one U+FFFD, as Go's
/// strings.ToValidUTF8 does (model names of cheap batteries carry junk).
pub(super) fn to_valid_utf8(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut in_run = false;
    for chunk in bytes.utf8_chunks() {
        if !chunk.valid().is_empty() {
            out.push_str(chunk.valid());
            in_run = false;
        }
        if !chunk.invalid().is_empty() && !in_run {
            out.push(char::REPLACEMENT_CHARACTER);
            in_run = true;
        }
    }
    out
}

/// One supply's attributes: numeric by [`NUMBERS`] index, texts by [`TEXTS`] index.
fn read_supply(dir: &Path) -> Result<([Option<i64>; 49], [String; 11]), NodeError> {
    let mut numbers = [None; 49];
    let mut texts: [String; 11] = Default::default();
    let entries = std::fs::read_dir(dir).map_err(|e| NodeError::read(dir, e))?;
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let path = entry.path();
        let value = match std::fs::read(&path) {
            Ok(v) => to_valid_utf8(&v).trim().to_string(),
            // Attributes a driver lists but cannot answer.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) =>
            {
                continue
            }
            Err(e) => return Err(NodeError::read(&path, e)),
        };
        if let Some(i) = NUMBERS.iter().position(|(f, _, _)| *f == file) {
            numbers[i] =
                Some(parse_int(&value).ok_or_else(|| NodeError::parse(&path, format!("bad number {value:?}")))?);
        } else if PARSED_ONLY.contains(&file) {
            parse_int(&value).ok_or_else(|| NodeError::parse(&path, format!("bad number {value:?}")))?;
        } else if let Some(i) = TEXTS.iter().position(|f| *f == file) {
            texts[i] = value;
        }
    }
    Ok((numbers, texts))
}

impl Sub for PowerSupply {
    fn name(&self) -> &'static str {
        "powersupplyclass"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let entries = std::fs::read_dir(&self.class).map_err(|e| NodeError::read_or_absent(&self.class, e))?;
        let mut supplies: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
        supplies.sort_unstable();
        // Every supply is parsed first: one that fails fails the collector, ignored or not.
        let mut parsed = Vec::with_capacity(supplies.len());
        for name in supplies {
            let attrs = read_supply(&self.class.join(&name))?;
            if !self.ignored.is_match(&name) {
                parsed.push((name, attrs));
            }
        }
        let from = out.mark();
        for (name, (numbers, texts)) in &parsed {
            for (((_, _, div), (metric, help)), v) in NUMBERS.iter().zip(&self.names).zip(numbers) {
                if let Some(v) = v {
                    let value = if *div == 1.0 { *v as f64 } else { *v as f64 / div };
                    out.add_to(from, metric, MetricType::Gauge, help, &[("power_supply", name)], value);
                }
            }
            let mut labels: Vec<(&str, &str)> = vec![("power_supply", name)];
            labels.extend(TEXTS.iter().zip(texts).map(|(k, v)| (*k, v.as_str())));
            out.add_to(
                from,
                "node_power_supply_info",
                MetricType::Gauge,
                "info of /sys/class/power_supply/<power_supply>.",
                &labels,
                1.0,
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
    fn battery_values_and_info() {
        let t = Tree::new("psu");
        for (k, v) in [
            ("capacity", "98"),
            ("cycle_count", "0"),
            ("energy_now", "42830000"),
            ("power_now", "4830000"),
            ("voltage_now", "12229000"),
            ("temp", "305"),
            ("status", "Discharging"),
            ("type", "Battery"),
            ("manufacturer", "LGC"),
            ("charge_avg", "0x10"),
        ] {
            t.write(&format!("sys/class/power_supply/BAT0/{k}"), &format!("{v}\n"));
        }
        t.write("sys/class/power_supply/AC/online", "0\n");
        let got = run(&mut PowerSupply::new(&t.config())).unwrap();
        assert_eq!(value(&got, "node_power_supply_capacity{power_supply=\"BAT0\"}"), 98.0);
        assert_eq!(value(&got, "node_power_supply_cyclecount{power_supply=\"BAT0\"}"), 0.0);
        assert_eq!(value(&got, "node_power_supply_energy_watthour{power_supply=\"BAT0\"}"), 42.83);
        assert_eq!(value(&got, "node_power_supply_power_watt{power_supply=\"BAT0\"}"), 4.83);
        assert_eq!(value(&got, "node_power_supply_temp_celsius{power_supply=\"BAT0\"}"), 30.5);
        assert_eq!(value(&got, "node_power_supply_online{power_supply=\"AC\"}"), 0.0);
        assert_eq!(
            value(
                &got,
                "node_power_supply_info{manufacturer=\"LGC\", power_supply=\"BAT0\", status=\"Discharging\", type=\"Battery\"}"
            ),
            1.0
        );
        assert_eq!(got.len(), 9, "{got:#?}");
        assert_eq!(to_valid_utf8(b"LNV-45N1\xc0\xc0\n"), "LNV-45N1\u{fffd}\n");
        t.write("sys/class/power_supply/AC/online", "yes\n");
        assert!(run(&mut PowerSupply::new(&t.config())).unwrap_err().to_string().contains("online"));
        let none = Tree::new("psu-none");
        assert!(matches!(run(&mut PowerSupply::new(&none.config())), Err(NodeError::NoData(_))));
    }
}
