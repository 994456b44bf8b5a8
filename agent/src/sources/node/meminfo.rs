//! `meminfo` (/proc/meminfo) and `vmstat` (/proc/vmstat).

use super::{num, FileBuf, NameCache, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `meminfo` collector: every field, `kB` ones as bytes.
pub(super) struct Meminfo {
    file: FileBuf,
    names: NameCache,
}

impl Meminfo {
    pub fn new(c: &NodeConfig) -> Self {
        Meminfo { file: FileBuf::new(c.proc_path.join("meminfo")), names: NameCache::default() }
    }
}

impl Sub for Meminfo {
    fn name(&self) -> &'static str {
        "meminfo"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            let Some((key, rest)) = line.split_once(':') else {
                return Err(NodeError::parse(path, format!("line without ':' {line:?}")));
            };
            let mut parts = rest.split_ascii_whitespace();
            let value =
                num(path, parts.next().ok_or_else(|| NodeError::parse(path, format!("no value in {line:?}")))?)?;
            let (value, suffix) = match parts.next() {
                Some("kB") => (value * 1024.0, "_bytes"),
                None => (value, ""),
                Some(unit) => return Err(NodeError::parse(path, format!("unknown unit {unit:?} in {line:?}"))),
            };
            // As node_exporter: "Active(anon)" becomes "Active_anon".
            let Some((name, help)) = self.names.get(i, key, |k| {
                let field = format!("{}{suffix}", k.replace('(', "_").replace(')', ""));
                Some((format!("node_memory_{field}"), format!("Memory information field {field}.")))
            }) else {
                continue;
            };
            out.single(name, MetricType::Gauge, help, &[], value);
            n += 1;
        }
        if n == 0 {
            return Err(NodeError::parse(path, "no fields"));
        }
        Ok(())
    }
}

/// The `vmstat` collector: the fields matching the configured regex.
pub(super) struct Vmstat {
    file: FileBuf,
    names: NameCache,
    fields: regex::Regex,
}

impl Vmstat {
    pub fn new(c: &NodeConfig) -> Self {
        Vmstat {
            file: FileBuf::new(c.proc_path.join("vmstat")),
            names: NameCache::default(),
            fields: super::regex_or(&c.vmstat_fields, super::DEFAULT_VMSTAT_FIELDS),
        }
    }
}

impl Sub for Vmstat {
    fn name(&self) -> &'static str {
        "vmstat"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        for (i, line) in text.lines().enumerate() {
            let Some((key, value)) = line.split_once(' ') else {
                return Err(NodeError::parse(path, format!("bad line {line:?}")));
            };
            let fields = &self.fields;
            let Some((name, help)) = self.names.get(i, key, |k| {
                fields.is_match(k).then(|| (format!("node_vmstat_{k}"), format!("/proc/vmstat information field {k}.")))
            }) else {
                continue;
            };
            let value = num(path, value.trim())?;
            out.single(name, MetricType::Untyped, help, &[], value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, value, Tree};
    use super::*;

    #[test]
    fn meminfo_fields_and_units() {
        let t = Tree::new("mem");
        t.write(
            "proc/meminfo",
            "MemTotal:       16384 kB\nActive(anon):      10 kB\nHugePages_Total:       4\nHugepagesize:       2048 kB\n",
        );
        let mut m = Meminfo::new(&t.config());
        for _ in 0..2 {
            let got = run(&mut m).unwrap();
            assert_eq!(
                got,
                [
                    ("node_memory_Active_anon_bytes{}".into(), 10240.0),
                    ("node_memory_HugePages_Total{}".into(), 4.0),
                    ("node_memory_Hugepagesize_bytes{}".into(), 2048.0 * 1024.0),
                    ("node_memory_MemTotal_bytes{}".into(), 16384.0 * 1024.0),
                ]
            );
        }
        let (families, _) = super::super::testing::run_families(&mut m);
        assert_eq!(families[1].help, "Memory information field Active_anon_bytes.");
        t.write("proc/meminfo", "MemTotal 16384 kB\n");
        assert!(run(&mut m).is_err());
        t.write("proc/meminfo", "MemTotal: 16384 MB\n");
        assert!(run(&mut m).unwrap_err().to_string().contains("MB"));
    }

    #[test]
    fn vmstat_default_fields() {
        let t = Tree::new("vmstat");
        t.write(
            "proc/vmstat",
            "nr_free_pages 100\npgfault 52853041\npgmajfault 11384\npgpgin 7\noom_kill 0\npswpin 3\nnuma_hit 9\n",
        );
        let got = run(&mut Vmstat::new(&t.config())).unwrap();
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(value(&got, "node_vmstat_pgfault{}"), 52853041.0);
        assert_eq!(value(&got, "node_vmstat_pswpin{}"), 3.0);
        t.write("proc/vmstat", "pgfault lots\n");
        assert!(run(&mut Vmstat::new(&t.config())).is_err());
    }
}
