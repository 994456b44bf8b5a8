//! The `entropy` collector: the kernel's random pool.

use super::{one_number, FileBuf, NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `entropy` collector.
pub(super) struct Entropy {
    avail: FileBuf,
    pool: FileBuf,
}

impl Entropy {
    pub fn new(c: &NodeConfig) -> Self {
        let p = c.proc_path.join("sys/kernel/random");
        Entropy { avail: FileBuf::new(p.join("entropy_avail")), pool: FileBuf::new(p.join("poolsize")) }
    }
}

impl Sub for Entropy {
    fn name(&self) -> &'static str {
        "entropy"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let avail = one_number(&mut self.avail)?;
        out.single("node_entropy_available_bits", MetricType::Gauge, "Bits of available entropy.", &[], avail);
        let pool = one_number(&mut self.pool)?;
        out.single("node_entropy_pool_size_bits", MetricType::Gauge, "Bits of entropy pool.", &[], pool);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, Tree};
    use super::*;

    #[test]
    fn entropy() {
        let t = Tree::new("entropy");
        t.write("proc/sys/kernel/random/entropy_avail", "256\n");
        t.write("proc/sys/kernel/random/poolsize", "256\n");
        let got = run(&mut Entropy::new(&t.config())).unwrap();
        assert_eq!(
            got,
            [("node_entropy_available_bits{}".into(), 256.0), ("node_entropy_pool_size_bits{}".into(), 256.0)]
        );
    }
}
