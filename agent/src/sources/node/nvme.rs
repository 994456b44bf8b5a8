//! The `nvme` collector: `node_nvme_info` for each controller in
//! /sys/class/nvme. Like node_exporter 1.5, a missing class directory (or
//! attribute) is "no data", not a failure.

use std::path::PathBuf;

use super::{Dir, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

pub(super) struct Nvme {
    dir: PathBuf,
    bufs: [Vec<u8>; 4],
}

impl Nvme {
    pub fn new(c: &NodeConfig) -> Self {
        Nvme { dir: c.sys_path.join("class/nvme"), bufs: Default::default() }
    }
}

impl Sub for Nvme {
    fn name(&self) -> &'static str {
        "nvme"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| NodeError::read_or_absent(&self.dir, e))?;
        let mut names: Vec<String> =
            entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect();
        names.sort();
        if names.is_empty() {
            return Ok(());
        }
        out.family(
            "node_nvme_info",
            MetricType::Gauge,
            "Non-numeric data from /sys/class/nvme/<device>, value is always 1.",
        );
        for name in &names {
            let path = self.dir.join(name);
            let dir = Dir::open(&path).map_err(|e| NodeError::read_or_absent(&path, e))?;
            let [b0, b1, b2, b3] = &mut self.bufs;
            let read = |attr: &std::ffi::CStr, buf: &'_ mut Vec<u8>| -> Result<(), NodeError> {
                dir.read(attr, buf)
                    .map(|_| ())
                    .map_err(|e| NodeError::read_or_absent(&path.join(attr.to_str().unwrap_or_default()), e))
            };
            read(c"firmware_rev", b0)?;
            read(c"model", b1)?;
            read(c"serial", b2)?;
            read(c"state", b3)?;
            let text = |b: &Vec<u8>| std::str::from_utf8(b).unwrap_or_default().trim().to_string();
            let (fw, model, serial, state) = (text(b0), text(b1), text(b2), text(b3));
            out.add(
                &[
                    ("device", name),
                    ("firmware_revision", &fw),
                    ("model", &model),
                    ("serial", &serial),
                    ("state", &state),
                ],
                1.0,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, run_families, Tree};
    use super::*;

    #[test]
    fn one_info_series_per_controller() {
        let t = Tree::new("nvme");
        for (f, v) in [
            ("firmware_rev", "1B2QEXP7\n"),
            ("model", "Samsung SSD 970 PRO 512GB  \n"),
            ("serial", "S680HF8N190894I\n"),
            ("state", "live\n"),
        ] {
            t.write(&format!("sys/class/nvme/nvme0/{f}"), v);
        }
        let got = run(&mut Nvme::new(&t.config())).unwrap();
        assert_eq!(
            got,
            vec![(
                r#"node_nvme_info{device="nvme0", firmware_revision="1B2QEXP7", model="Samsung SSD 970 PRO 512GB", serial="S680HF8N190894I", state="live"}"#.to_string(),
                1.0
            )]
        );
    }

    #[test]
    fn absent_class_is_no_data() {
        let t = Tree::new("nvme-none");
        let (families, r) = run_families(&mut Nvme::new(&t.config()));
        assert!(matches!(r, Err(NodeError::NoData(_))), "{r:?}");
        assert!(families.is_empty());
    }
}
