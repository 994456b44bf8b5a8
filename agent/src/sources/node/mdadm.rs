//! The `mdadm` collector: software RAID arrays from /proc/mdstat, with
//! node_exporter 1.5's reading of it (prometheus/procfs 0.8's rules for
//! disk counts, sync progress and state).

use regex::Regex;

use super::{FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// One array as node_exporter reports it.
#[derive(Debug, PartialEq)]
struct Array<'a> {
    name: &'a str,
    /// "active", "inactive", "recovering", "resyncing", "checking" or what
    /// the device line says (`(auto-read-only)` ...).
    state: &'a str,
    disks_active: u64,
    disks_total: u64,
    disks_failed: u64,
    disks_spare: u64,
    blocks_total: u64,
    blocks_synced: u64,
}

pub(super) struct Mdadm {
    file: FileBuf,
    rules: Rules,
}

/// The patterns of procfs's mdstat parser.
struct Rules {
    status: Regex,
    synced: Regex,
    pct: Regex,
    finish: Regex,
    speed: Regex,
}

impl Mdadm {
    pub fn new(c: &NodeConfig) -> Self {
        let re = |s: &str| Regex::new(s).expect("static regex");
        Mdadm {
            file: FileBuf::new(c.proc_path.join("mdstat")),
            rules: Rules {
                status: re(r"(\d+) blocks .*\[(\d+)/(\d+)\] \[([U_]+)\]"),
                synced: re(r"\((\d+)/\d+\)"),
                pct: re(r"= (.+)%"),
                finish: re(r"finish=(.+)min"),
                speed: re(r"speed=(.+)[A-Z]"),
            },
        }
    }
}

impl Rules {
    fn parse<'a>(&self, text: &'a str) -> Result<Vec<Array<'a>>, String> {
        let lines: Vec<&str> = text.split('\n').collect();
        let mut arrays = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty()
                || line.starts_with(' ')
                || line.starts_with("Personalities")
                || line.starts_with("unused")
            {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 3 {
                return Err(format!("not enough fields in md line {line:?}"));
            }
            let name = fields[0];
            if lines.len() <= i + 3 {
                return Err(format!("too few lines for {name}"));
            }
            let (disks_active, disks_total, blocks_total) = self.status_line(line, lines[i + 1])?;
            let mut state = fields[2];
            let sync_line = lines[if lines[i + 2].contains("bitmap") { i + 3 } else { i + 2 }];
            let mut blocks_synced = blocks_total;
            let (recovering, resyncing, checking) =
                (sync_line.contains("recovery"), sync_line.contains("resync"), sync_line.contains("check"));
            if recovering || resyncing || checking {
                state = if recovering {
                    "recovering"
                } else if checking {
                    "checking"
                } else {
                    "resyncing"
                };
                if sync_line.contains("PENDING") || sync_line.contains("DELAYED") {
                    blocks_synced = 0;
                } else {
                    blocks_synced = self.sync_line(sync_line).ok_or_else(|| format!("bad sync line {sync_line:?}"))?;
                }
            }
            arrays.push(Array {
                name,
                state,
                disks_active,
                disks_total,
                disks_failed: line.matches("(F)").count() as u64,
                disks_spare: line.matches("(S)").count() as u64,
                blocks_total,
                blocks_synced,
            });
        }
        Ok(arrays)
    }

    /// (active, total, size) from the device line and the status line below it.
    fn status_line(&self, device: &str, status: &str) -> Result<(u64, u64, u64), String> {
        let bad = || format!("unexpected status line {status:?}");
        let size: u64 = status.split_whitespace().next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        if device.contains("raid0") || device.contains("linear") {
            // Only member disks carry a [n] on the device line.
            let n = device.matches('[').count() as u64;
            return Ok((n, n, size));
        }
        if device.contains("inactive") {
            return Ok((0, 0, size));
        }
        let caps = self.status.captures(status).ok_or_else(bad)?;
        let total = caps[2].parse().map_err(|_| bad())?;
        let active = caps[3].parse().map_err(|_| bad())?;
        Ok((active, total, size))
    }

    /// Blocks synced so far from a recovery/resync/check line; like
    /// node_exporter, the line must also hold a percentage, a finish time
    /// and a speed.
    fn sync_line(&self, line: &str) -> Option<u64> {
        let synced = self.synced.captures(line)?[1].parse().ok()?;
        self.pct.captures(line)?[1].trim().parse::<f64>().ok()?;
        self.finish.captures(line)?[1].parse::<f64>().ok()?;
        self.speed.captures(line)?[1].parse::<f64>().ok()?;
        Some(synced)
    }
}

impl Sub for Mdadm {
    fn name(&self) -> &'static str {
        "mdadm"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read_or_no_data()?;
        let arrays = self.rules.parse(text).map_err(|e| NodeError::parse(path, e))?;
        emit(out, &arrays);
        Ok(())
    }
}

fn emit(out: &mut Out<'_>, arrays: &[Array<'_>]) {
    const G: MetricType = MetricType::Gauge;
    out.family("node_md_disks_required", G, "Total number of disks of device.");
    for a in arrays {
        out.add(&[("device", a.name)], a.disks_total as f64);
    }
    out.family("node_md_disks", G, "Number of active/failed/spare disks of device.");
    for a in arrays {
        for (state, n) in [("active", a.disks_active), ("failed", a.disks_failed), ("spare", a.disks_spare)] {
            out.add(&[("device", a.name), ("state", state)], n as f64);
        }
    }
    out.family("node_md_state", G, "Indicates the state of md-device.");
    for a in arrays {
        for (label, state) in [
            ("active", "active"),
            ("inactive", "inactive"),
            ("recovering", "recovering"),
            ("resync", "resyncing"),
            ("check", "checking"),
        ] {
            out.add(&[("device", a.name), ("state", label)], if a.state == state { 1.0 } else { 0.0 });
        }
    }
    out.family("node_md_blocks", G, "Total number of blocks on device.");
    for a in arrays {
        out.add(&[("device", a.name)], a.blocks_total as f64);
    }
    out.family("node_md_blocks_synced", G, "Number of blocks synced on device.");
    for a in arrays {
        out.add(&[("device", a.name)], a.blocks_synced as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, run_families, value, Tree};
    use super::*;

    // Lines from node_exporter's fixture; the indentation is part of the format.
    const MDSTAT: &str = r"Personalities : [raid1] [raid6] [raid0]
md3 : active raid6 sda1[8] sdh1[7] sdg1[6] sdf1[5] sde1[11] sdd1[3] sdc1[10] sdb1[9] sdd1[10](S) sdd2[11](S)
      5853468288 blocks super 1.2 level 6, 64k chunk, algorithm 2 [8/8] [UUUUUUUU]

md6 : active raid1 sdb2[2](F) sdc[1](S) sda2[0]
      195310144 blocks [2/1] [U_]
      [=>...................]  recovery =  8.5% (16775552/195310144) finish=17.0min speed=259783K/sec

md7 : active raid6 sdb1[0] sde1[3] sdd1[2] sdc1[1](F)
      7813735424 blocks super 1.2 level 6, 512k chunk, algorithm 2 [4/3] [U_UU]
      bitmap: 0/30 pages [0KB], 65536KB chunk

md9 : active raid1 sdc2[2] sdd2[3] sdb2[1] sda2[0] sde[4](F) sdf[5](F) sdg[6](S)
      523968 blocks super 1.2 [4/4] [UUUU]
      resync=DELAYED

md10 : active raid0 sda1[0] sdb1[1]
       314159265 blocks 64k chunks

md219 : inactive sdb[2](S) sdc[1](S) sda[0](S)
        7932 blocks super external:imsm

unused devices: <none>
";

    #[test]
    fn arrays_disks_states_and_sync_progress() {
        let t = Tree::new("mdadm");
        t.write("proc/mdstat", MDSTAT);
        let got = run(&mut Mdadm::new(&t.config())).unwrap();
        assert_eq!(value(&got, r#"node_md_disks{device="md3", state="active"}"#), 8.0);
        assert_eq!(value(&got, r#"node_md_disks{device="md3", state="spare"}"#), 2.0);
        assert_eq!(value(&got, r#"node_md_disks_required{device="md6"}"#), 2.0);
        assert_eq!(value(&got, r#"node_md_disks{device="md6", state="active"}"#), 1.0);
        assert_eq!(value(&got, r#"node_md_disks{device="md6", state="failed"}"#), 1.0);
        assert_eq!(value(&got, r#"node_md_state{device="md6", state="recovering"}"#), 1.0);
        assert_eq!(value(&got, r#"node_md_state{device="md6", state="active"}"#), 0.0);
        assert_eq!(value(&got, r#"node_md_blocks_synced{device="md6"}"#), 16775552.0);
        assert_eq!(value(&got, r#"node_md_state{device="md7", state="active"}"#), 1.0);
        assert_eq!(value(&got, r#"node_md_blocks_synced{device="md7"}"#), 7813735424.0);
        assert_eq!(value(&got, r#"node_md_state{device="md9", state="resync"}"#), 1.0);
        assert_eq!(value(&got, r#"node_md_blocks_synced{device="md9"}"#), 0.0);
        assert_eq!(value(&got, r#"node_md_disks{device="md10", state="active"}"#), 2.0);
        assert_eq!(value(&got, r#"node_md_disks_required{device="md219"}"#), 0.0);
        assert_eq!(value(&got, r#"node_md_disks{device="md219", state="spare"}"#), 3.0);
        assert_eq!(value(&got, r#"node_md_state{device="md219", state="inactive"}"#), 1.0);
        assert_eq!(got.len(), 6 * (1 + 3 + 5 + 2));
    }

    #[test]
    fn no_data_is_success_0_and_not_a_failure() {
        use crate::sources::Collector;
        let t = Tree::new("mdadm-collector");
        let config = NodeConfig { enable: vec!["mdadm".into()], instance: "h".into(), ..t.config() };
        let mut c = super::super::NodeCollector::new(config);
        let families = c.collect(1).unwrap();
        let success = families.iter().find(|f| f.name == "node_scrape_collector_success").unwrap();
        assert_eq!(success.samples[0].labels.get("collector"), Some("mdadm"));
        assert_eq!(success.samples[0].value, 0.0, "node_exporter reports ErrNoData as success 0");
        assert_eq!(c.failing, [false], "an absent subsystem is not logged as a failing collector");
    }

    #[test]
    fn absent_mdstat_is_no_data_and_a_bad_one_names_the_file() {
        let t = Tree::new("mdadm-none");
        let (families, r) = run_families(&mut Mdadm::new(&t.config()));
        assert!(matches!(r, Err(NodeError::NoData { .. })), "{r:?}");
        assert!(families.is_empty());
        t.write("proc/mdstat", "md0 : active raid1 sda[0]\n  garbage\n\n\n");
        let e = run(&mut Mdadm::new(&t.config())).unwrap_err().to_string();
        assert!(e.contains("proc/mdstat") && e.contains("garbage"), "{e}");
    }
}
