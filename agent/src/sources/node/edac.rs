//! The `edac` collector: memory controller error counts from
//! /sys/devices/system/edac/mc, per controller and per csrow, as
//! node_exporter 1.5 reports them (errors without csrow information under
//! `csrow="unknown"`). No controller is no series and no failure.

use std::path::PathBuf;

use super::{Dir, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

const CE: &str = "node_edac_correctable_errors_total";
const UE: &str = "node_edac_uncorrectable_errors_total";
const CSROW_CE: &str = "node_edac_csrow_correctable_errors_total";
const CSROW_UE: &str = "node_edac_csrow_uncorrectable_errors_total";
const CE_HELP: &str = "Total correctable memory errors.";
const UE_HELP: &str = "Total uncorrectable memory errors.";
const CSROW_CE_HELP: &str = "Total correctable memory errors for this csrow.";
const CSROW_UE_HELP: &str = "Total uncorrectable memory errors for this csrow.";

pub(super) struct Edac {
    dir: PathBuf,
    buf: Vec<u8>,
}

impl Edac {
    pub fn new(c: &NodeConfig) -> Self {
        Edac { dir: c.sys_path.join("devices/system/edac/mc"), buf: Vec::with_capacity(64) }
    }
}

/// Entries of `dir` named `<prefix><digit>...`, sorted as a glob sorts
/// them, with the number after the prefix (its leading digits).
pub(super) fn numbered(dir: &std::path::Path, prefix: &str) -> std::io::Result<Vec<(String, String)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(prefix) else { continue };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        found.push((name.to_string(), digits));
    }
    found.sort();
    Ok(found)
}

/// Reads an unsigned counter attribute of `dir`.
fn counter(dir: &Dir, path: &std::path::Path, name: &std::ffi::CStr, buf: &mut Vec<u8>) -> Result<f64, NodeError> {
    let file = || path.join(name.to_str().unwrap_or_default());
    let text = dir.read(name, buf).map_err(|e| NodeError::read(&file(), e))?;
    text.trim().parse::<u64>().map(|v| v as f64).map_err(|_| NodeError::parse(&file(), format!("bad count {text:?}")))
}

impl Sub for Edac {
    fn name(&self) -> &'static str {
        "edac"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let controllers = match numbered(&self.dir, "mc") {
            Ok(c) => c,
            // node_exporter globs: no directory is no controller.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(NodeError::read(&self.dir, e)),
        };
        let from = out.mark();
        let buf = &mut self.buf;
        for (name, mc) in &controllers {
            let path = self.dir.join(name);
            let dir = Dir::open(&path).map_err(|e| NodeError::read(&path, e))?;
            let ce = counter(&dir, &path, c"ce_count", buf)?;
            out.add_to(from, CE, MetricType::Counter, CE_HELP, &[("controller", mc)], ce);
            let ce = counter(&dir, &path, c"ce_noinfo_count", buf)?;
            let unknown = [("controller", mc.as_str()), ("csrow", "unknown")];
            out.add_to(from, CSROW_CE, MetricType::Counter, CSROW_CE_HELP, &unknown, ce);
            let ue = counter(&dir, &path, c"ue_count", buf)?;
            out.add_to(from, UE, MetricType::Counter, UE_HELP, &[("controller", mc)], ue);
            let ue = counter(&dir, &path, c"ue_noinfo_count", buf)?;
            out.add_to(from, CSROW_UE, MetricType::Counter, CSROW_UE_HELP, &unknown, ue);
            for (row_name, row) in numbered(&path, "csrow").map_err(|e| NodeError::read(&path, e))? {
                let row_path = path.join(&row_name);
                let row_dir = Dir::open(&row_path).map_err(|e| NodeError::read(&row_path, e))?;
                let labels = [("controller", mc.as_str()), ("csrow", row.as_str())];
                let ce = counter(&row_dir, &row_path, c"ce_count", buf)?;
                out.add_to(from, CSROW_CE, MetricType::Counter, CSROW_CE_HELP, &labels, ce);
                let ue = counter(&row_dir, &row_path, c"ue_count", buf)?;
                out.add_to(from, CSROW_UE, MetricType::Counter, CSROW_UE_HELP, &labels, ue);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn controllers_and_csrows() {
        let t = Tree::new("edac");
        for (f, v) in [
            ("mc0/ce_count", "1\n"),
            ("mc0/ce_noinfo_count", "2\n"),
            ("mc0/ue_count", "5\n"),
            ("mc0/ue_noinfo_count", "6\n"),
            ("mc0/csrow0/ce_count", "3\n"),
            ("mc0/csrow0/ue_count", "4\n"),
            ("mc12/ce_count", "0\n"),
            ("mc12/ce_noinfo_count", "0\n"),
            ("mc12/ue_count", "7\n"),
            ("mc12/ue_noinfo_count", "0\n"),
            ("mcx/ce_count", "9\n"),
        ] {
            t.write(&format!("sys/devices/system/edac/mc/{f}"), v);
        }
        let got = run(&mut Edac::new(&t.config())).unwrap();
        assert_eq!(value(&got, r#"node_edac_correctable_errors_total{controller="0"}"#), 1.0);
        assert_eq!(value(&got, r#"node_edac_csrow_correctable_errors_total{controller="0", csrow="unknown"}"#), 2.0);
        assert_eq!(value(&got, r#"node_edac_csrow_correctable_errors_total{controller="0", csrow="0"}"#), 3.0);
        assert_eq!(value(&got, r#"node_edac_csrow_uncorrectable_errors_total{controller="0", csrow="0"}"#), 4.0);
        assert_eq!(value(&got, r#"node_edac_uncorrectable_errors_total{controller="0"}"#), 5.0);
        assert_eq!(value(&got, r#"node_edac_csrow_uncorrectable_errors_total{controller="0", csrow="unknown"}"#), 6.0);
        assert_eq!(value(&got, r#"node_edac_uncorrectable_errors_total{controller="12"}"#), 7.0);
        assert_eq!(got.len(), 6 + 4, "mcx is not a controller: {got:?}");
    }

    #[test]
    fn no_edac_is_no_series_and_success() {
        let t = Tree::new("edac-none");
        assert_eq!(run(&mut Edac::new(&t.config())).unwrap(), vec![]);
        t.write("sys/devices/system/edac/mc/mc0/ce_count", "x\n");
        let e = run(&mut Edac::new(&t.config())).unwrap_err().to_string();
        assert!(e.contains("mc0/ce_count"), "{e}");
    }
}
