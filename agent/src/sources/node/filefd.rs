//! The `filefd` collector: allocated and maximum file handles.

use super::{num, FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `filefd` collector.
pub(super) struct Filefd {
    file: FileBuf,
}

impl Filefd {
    pub fn new(c: &NodeConfig) -> Self {
        Filefd { file: FileBuf::new(c.proc_path.join("sys/fs/file-nr")) }
    }
}

impl Sub for Filefd {
    fn name(&self) -> &'static str {
        "filefd"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let (path, text) = self.file.read()?;
        let f: Vec<&str> = text.split_ascii_whitespace().collect();
        if f.len() != 3 {
            return Err(NodeError::parse(path, format!("{} fields, expected 3", f.len())));
        }
        out.single(
            "node_filefd_allocated",
            MetricType::Gauge,
            "File descriptor statistics: allocated.",
            &[],
            num(path, f[0])?,
        );
        out.single(
            "node_filefd_maximum",
            MetricType::Gauge,
            "File descriptor statistics: maximum.",
            &[],
            num(path, f[2])?,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, Tree};
    use super::*;

    #[test]
    fn filefd() {
        let t = Tree::new("filefd");
        t.write("proc/sys/fs/file-nr", "864\t0\t2466170\n");
        let got = run(&mut Filefd::new(&t.config())).unwrap();
        assert_eq!(got, [("node_filefd_allocated{}".into(), 864.0), ("node_filefd_maximum{}".into(), 2466170.0)]);
        t.write("proc/sys/fs/file-nr", "864 0\n");
        assert!(run(&mut Filefd::new(&t.config())).is_err());
    }
}
