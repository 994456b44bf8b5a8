//! `rapl`: RAPL energy counters from /sys/class/powercap, one family per
//! zone name (`node_rapl_package_joules_total` ...) as node_exporter 1.5
//! names them, or one family with a `rapl_zone` label when asked.

use std::path::{Path, PathBuf};

use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `rapl` collector.
pub(super) struct Rapl {
    class: PathBuf,
    zone_label: bool,
}

impl Rapl {
    pub fn new(c: &NodeConfig) -> Self {
        Rapl { class: c.sys_path.join("class/powercap"), zone_label: c.rapl_zone_label }
    }
}

/// node_exporter's SanitizeMetricName: every run of characters outside
/// `[0-9A-Za-z_]`, with the underscores around it, becomes one `_`.
pub(super) fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let bytes: Vec<char> = name.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_';
        // A run of `_*[^ok]+_*`: find the underscores before a bad character.
        let mut j = i;
        while j < bytes.len() && bytes[j] == '_' {
            j += 1;
        }
        if j < bytes.len() && !ok(bytes[j]) {
            while j < bytes.len() && !ok(bytes[j]) {
                j += 1;
            }
            while j < bytes.len() && bytes[j] == '_' {
                j += 1;
            }
            out.push('_');
            i = j;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Access problems that mean "no RAPL here" rather than a failure.
fn no_data(path: &Path, e: std::io::Error) -> NodeError {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => NodeError::no_data(path),
        _ => NodeError::read(path, e),
    }
}

fn read_u64(path: &Path) -> Result<u64, NodeError> {
    let text = std::fs::read_to_string(path).map_err(|e| no_data(path, e))?;
    let t = text.trim();
    t.parse().map_err(|_| NodeError::parse(path, format!("bad number {t:?}")))
}

impl Sub for Rapl {
    fn name(&self) -> &'static str {
        "rapl"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let entries = std::fs::read_dir(&self.class).map_err(|e| no_data(&self.class, e))?;
        let mut dirs: Vec<String> = entries.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
        dirs.sort_unstable();
        // (name, index, path): a zone named `package-0` is index 0 of
        // `package`; repeated names without an index are numbered by use.
        let mut zones: Vec<(String, usize, PathBuf)> = Vec::new();
        let mut uses: Vec<(String, usize)> = Vec::new();
        for dir in &dirs {
            let path = self.class.join(dir);
            let Ok(raw) = std::fs::read_to_string(path.join("name")) else { continue };
            let raw = raw.trim();
            let embedded = raw
                .split_once('-')
                .filter(|(_, i)| !i.contains('-'))
                .and_then(|(n, i)| i.parse::<usize>().ok().map(|i| (n, i)));
            let (name, index) = match embedded {
                Some((n, i)) => (n.to_string(), i),
                None => (raw.to_string(), uses.iter().find(|(n, _)| n == raw).map_or(0, |(_, c)| *c)),
            };
            read_u64(&path.join("max_energy_range_uj"))?;
            match uses.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => *c = index + 1,
                None => uses.push((name.clone(), index + 1)),
            }
            zones.push((name, index, path));
        }
        let from = out.mark();
        for (name, index, path) in &zones {
            let joules = read_u64(&path.join("energy_uj"))? as f64 / 1_000_000.0;
            let index = index.to_string();
            let path = path.display().to_string();
            if self.zone_label {
                out.add_to(
                    from,
                    "node_rapl_joules_total",
                    MetricType::Counter,
                    "Current RAPL value in joules",
                    &[("index", &index), ("path", &path), ("rapl_zone", name)],
                    joules,
                );
            } else {
                out.add_to(
                    from,
                    &format!("node_rapl_{}_joules_total", sanitize(name)),
                    MetricType::Counter,
                    &format!("Current RAPL {name} value in joules"),
                    &[("index", &index), ("path", &path)],
                    joules,
                );
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
    fn zones_by_name_and_index() {
        let t = Tree::new("rapl");
        for (dir, name, uj) in [
            ("intel-rapl:0", "package-0", "240422366267"),
            ("intel-rapl:0:0", "core", "118821284256"),
            ("intel-rapl:0:1", "core", "5"),
        ] {
            t.write(&format!("sys/class/powercap/{dir}/name"), &format!("{name}\n"));
            t.write(&format!("sys/class/powercap/{dir}/energy_uj"), &format!("{uj}\n"));
            t.write(&format!("sys/class/powercap/{dir}/max_energy_range_uj"), "262143328850\n");
        }
        let base = t.0.join("sys/class/powercap").display().to_string();
        let got = run(&mut Rapl::new(&t.config())).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            value(&got, &format!("node_rapl_package_joules_total{{index=\"0\", path=\"{base}/intel-rapl:0\"}}")),
            240422.366267
        );
        assert_eq!(
            value(&got, &format!("node_rapl_core_joules_total{{index=\"1\", path=\"{base}/intel-rapl:0:1\"}}")),
            5e-6
        );
        let c = NodeConfig { rapl_zone_label: true, ..t.config() };
        let got = run(&mut Rapl::new(&c)).unwrap();
        assert!(got.iter().all(|(s, _)| s.starts_with("node_rapl_joules_total{")), "{got:?}");
        assert!(got[0].0.contains("rapl_zone=\"package\""), "{got:?}");
        assert_eq!(sanitize("a-b__.c"), "a_b_c");
        assert!(matches!(run(&mut Rapl::new(&Tree::new("rapl-none").config())), Err(NodeError::NoData(_))));
    }
}
