//! Reads the block I/O histograms per (disk, operation) and names disks by
//! their kernel name through /sys/class/block/*/dev.

use std::collections::{BTreeMap, HashMap as StdHashMap};

use agent_common::{
    BlockFirst, BlockHists, BlockKey, Log2Hist, BLOCK_OPS, BLOCK_OP_DISCARD, BLOCK_OP_FLUSH, BLOCK_OP_READ,
    BLOCK_OP_WRITE,
};
use aya::maps::{PerCpuArray, PerCpuHashMap};
use aya::Ebpf;

use super::programs::Reader;
use super::{histogram, push_histogram, Buckets, Names, LATENCY_NS};
use crate::sample::Family;

/// Byte slots exported from 512 B to 16 MiB (smaller requests count in the
/// first bucket, larger ones only in +Inf).
const SIZE_BYTES: Buckets = Buckets { unit: 1.0, first: 9, last: 24, sum_unit: 1.0 };

/// Kernel device names by "major:minor", reloaded when an unknown device
/// shows up (a loop device attached after start).
#[derive(Default)]
pub(super) struct DeviceNames {
    names: StdHashMap<(u32, u32), String>,
}

impl DeviceNames {
    fn name(&mut self, major: u32, minor: u32) -> String {
        if !self.names.contains_key(&(major, minor)) {
            self.reload();
        }
        self.names.get(&(major, minor)).cloned().unwrap_or_else(|| format!("{major}:{minor}"))
    }

    fn reload(&mut self) {
        self.names.clear();
        let Ok(dir) = std::fs::read_dir("/sys/class/block") else {
            return;
        };
        for entry in dir.flatten() {
            let Ok(dev) = std::fs::read_to_string(entry.path().join("dev")) else {
                continue;
            };
            let Some((major, minor)) = dev.trim().split_once(':') else {
                continue;
            };
            if let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) {
                self.names.insert((major, minor), entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
}

fn op_name(op: u32) -> Option<&'static str> {
    match op {
        BLOCK_OP_READ => Some("read"),
        BLOCK_OP_WRITE => Some("write"),
        BLOCK_OP_FLUSH => Some("flush"),
        BLOCK_OP_DISCARD => Some("discard"),
        _ => None,
    }
}

const ZERO: BlockHists = BlockHists { latency: Log2Hist::ZERO, size: Log2Hist::ZERO };

/// Adds one CPU's histograms to a total.
fn add(total: &mut BlockHists, part: &BlockHists) {
    for (sum, part) in [(&mut total.latency, &part.latency), (&mut total.size, &part.size)] {
        for (a, b) in sum.slots.iter_mut().zip(part.slots.iter()) {
            *a += b;
        }
        sum.sum += part.sum;
    }
}

/// `ebpf_block_io_latency_seconds` and `ebpf_block_io_size_bytes`.
pub(super) static BLOCK_IO: Reader = Reader { maps: &["BLOCK_IO", "BLOCK_IO_FIRST"], read };

fn read(ebpf: &Ebpf, names: &mut Names, now_ms: i64, out: &mut Vec<Family>) -> Result<(), String> {
    let Some(map) = ebpf.map("BLOCK_IO") else {
        return Ok(());
    };
    let map: PerCpuHashMap<_, BlockKey, BlockHists> =
        PerCpuHashMap::try_from(map).map_err(|e| format!("BLOCK_IO: {e}"))?;
    // One copy per CPU (the kernel side adds without atomics): summed here,
    // with each CPU's first disk per operation from BLOCK_IO_FIRST.
    let mut totals: BTreeMap<BlockKey, BlockHists> = BTreeMap::new();
    for (key, per_cpu) in map.iter().filter_map(Result::ok) {
        for h in per_cpu.iter() {
            add(totals.entry(key).or_insert(ZERO), h);
        }
    }
    if let Some(map) = ebpf.map("BLOCK_IO_FIRST") {
        let first: PerCpuArray<_, BlockFirst> =
            PerCpuArray::try_from(map).map_err(|e| format!("BLOCK_IO_FIRST: {e}"))?;
        for op in 0..BLOCK_OPS {
            let per_cpu = first.get(&op, 0).map_err(|e| format!("BLOCK_IO_FIRST[{op}]: {e}"))?;
            for f in per_cpu.iter().filter(|f| f.key.major != 0) {
                add(totals.entry(f.key).or_insert(ZERO), &f.hists);
            }
        }
    }
    let mut latency = histogram(
        "ebpf_block_io_latency_seconds",
        "Block I/O latency from issue to the device to completion, per disk and operation.",
    );
    let mut size = histogram("ebpf_block_io_size_bytes", "Block I/O request sizes, per disk and operation.");
    for (key, hists) in &totals {
        let Some(op) = op_name(key.op) else { continue };
        let device = names.devices.name(key.major, key.minor);
        let labels = [("device", device.as_str()), ("op", op)];
        push_histogram(&mut latency, &labels, &hists.latency, &LATENCY_NS, now_ms);
        push_histogram(&mut size, &labels, &hists.size, &SIZE_BYTES, now_ms);
    }
    out.push(latency);
    out.push(size);
    Ok(())
}
