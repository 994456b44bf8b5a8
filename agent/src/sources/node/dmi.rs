//! The `dmi` collector: `node_dmi_info` from /sys/class/dmi/id, read once
//! (the values only change with a reboot), as node_exporter 1.5 does. No
//! DMI directory is "no data" on every collection, at no cost after the
//! first.

use std::path::Path;

use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// node_exporter's label for each file it exposes (chassis_type is read
/// by procfs but not exposed).
const FIELDS: [(&str, &str); 20] = [
    ("bios_date", "bios_date"),
    ("bios_release", "bios_release"),
    ("bios_vendor", "bios_vendor"),
    ("bios_version", "bios_version"),
    ("board_asset_tag", "board_asset_tag"),
    ("board_name", "board_name"),
    ("board_serial", "board_serial"),
    ("board_vendor", "board_vendor"),
    ("board_version", "board_version"),
    ("chassis_asset_tag", "chassis_asset_tag"),
    ("chassis_serial", "chassis_serial"),
    ("chassis_vendor", "chassis_vendor"),
    ("chassis_version", "chassis_version"),
    ("product_family", "product_family"),
    ("product_name", "product_name"),
    ("product_serial", "product_serial"),
    ("product_sku", "product_sku"),
    ("product_uuid", "product_uuid"),
    ("product_version", "product_version"),
    ("sys_vendor", "system_vendor"),
];

const HELP: &str = "A metric with a constant '1' value labeled by bios_date, bios_release, bios_vendor, bios_version, \
board_asset_tag, board_name, board_serial, board_vendor, board_version, chassis_asset_tag, chassis_serial, \
chassis_vendor, chassis_version, product_family, product_name, product_serial, product_sku, product_uuid, \
product_version, system_vendor if provided by DMI.";

/// Invalid UTF-8 as Go's strings.ToValidUTF8(s, "\u{fffd}"): one
/// replacement character per run of invalid bytes.
fn valid_utf8(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut replaced = false;
    for chunk in bytes.utf8_chunks() {
        if !chunk.valid().is_empty() {
            out.push_str(chunk.valid());
            replaced = false;
        }
        if !chunk.invalid().is_empty() && !replaced {
            out.push('\u{fffd}');
            replaced = true;
        }
    }
    out
}

/// The label pairs, or None when there is no DMI directory.
fn read_dmi(dir: &Path) -> Result<Option<Vec<(&'static str, String)>>, NodeError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NodeError::read(dir, e)),
    };
    let mut labels = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| NodeError::read(dir, e))?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = entry.file_name();
        let Some(&(_, label)) = FIELDS.iter().find(|(f, _)| name.to_str() == Some(*f)) else { continue };
        let path = entry.path();
        match std::fs::read(&path) {
            Ok(bytes) => labels.push((label, valid_utf8(bytes.trim_ascii()))),
            // Serials are root-only: skipped when unreadable, as node_exporter does.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(e) => return Err(NodeError::read(&path, e)),
        }
    }
    labels.sort();
    Ok(Some(labels))
}

pub(super) struct Dmi {
    dir: std::path::PathBuf,
    /// Read at the first collection: None before, Some(None) without DMI.
    labels: Option<Option<Vec<(&'static str, String)>>>,
}

impl Dmi {
    pub fn new(c: &NodeConfig) -> Self {
        Dmi { dir: c.sys_path.join("class/dmi/id"), labels: None }
    }
}

impl Sub for Dmi {
    fn name(&self) -> &'static str {
        "dmi"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        if self.labels.is_none() {
            self.labels = Some(read_dmi(&self.dir)?);
        }
        match self.labels.as_ref().and_then(Option::as_ref) {
            Some(labels) if !labels.is_empty() => {
                let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                out.single("node_dmi_info", MetricType::Gauge, HELP, &pairs, 1.0);
                Ok(())
            }
            _ => Err(NodeError::no_data(&self.dir)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, run_families, Tree};
    use super::*;

    #[test]
    fn info_from_the_files_present() {
        let t = Tree::new("dmi");
        t.write("sys/class/dmi/id/bios_vendor", "Dell Inc.\n");
        t.write("sys/class/dmi/id/sys_vendor", "Dell Inc.\n");
        t.write("sys/class/dmi/id/chassis_type", "23\n");
        t.write("sys/class/dmi/id/uevent", "MODALIAS=dmi:x\n");
        std::fs::write(t.0.join("sys/class/dmi/id/product_version"), b"\xc0\x1c[\x87\x87\n").unwrap();
        let got = run(&mut Dmi::new(&t.config())).unwrap();
        assert_eq!(
            got,
            vec![(
                "node_dmi_info{bios_vendor=\"Dell Inc.\", product_version=\"\u{fffd}\u{1c}[\u{fffd}\", system_vendor=\"Dell Inc.\"}"
                    .to_string(),
                1.0
            )]
        );
    }

    #[test]
    fn no_dmi_is_no_data() {
        let t = Tree::new("dmi-none");
        let mut dmi = Dmi::new(&t.config());
        for _ in 0..2 {
            let (families, r) = run_families(&mut dmi);
            assert!(matches!(r, Err(NodeError::NoData { .. })), "{r:?}");
            assert!(families.is_empty());
        }
    }
}
