//! WAL replay from arbitrary bytes: the input, cut in two at its first
//! byte, becomes two segment files. Opening must never fail or panic, every
//! record it counts must be read back, and the repaired segments must open
//! a second time with no damage left and the same records.
//! Run: `cd fuzz && cargo +nightly fuzz run wal_replay -- -max_total_time=600`.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use vantage::sinks::remote_write::wal::{read_record, Pos, Read, Wal};

fn dir() -> PathBuf {
    // tmpfs when there is one: the target writes files on every input.
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
    base.join(format!("vantage-fuzz-wal-{}", std::process::id()))
}

fn read_all(wal: &Wal) -> Vec<Vec<u8>> {
    let (mut pos, mut file, mut out) = (Pos::default(), None, Vec::new());
    for _ in 0..1_000_000 {
        match read_record(wal, &mut file, pos) {
            Read::Record { body, next, .. } => {
                out.push(body);
                pos = next;
            }
            Read::Skip(p) => {
                assert!(p > pos, "the reader must move forward: {pos:?} -> {p:?}");
                pos = p;
            }
            Read::End => return out,
        }
    }
    panic!("the reader never reached the end");
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let split = data.first().map_or(0, |b| *b as usize).min(data.len().saturating_sub(1));
    let (a, b) = data.get(1..).map_or((&[][..], &[][..]), |rest| rest.split_at(split.min(rest.len())));
    std::fs::write(d.join("0000000000000004.seg"), a).unwrap();
    std::fs::write(d.join("0000000000000005.seg"), b).unwrap();

    let (wal, report) = Wal::open(&d, 1 << 30).expect("open never fails on damaged segments");
    let first = read_all(&wal);
    assert_eq!(first.len(), report.records, "{report:?}");
    drop(wal);
    let (wal, again) = Wal::open(&d, 1 << 30).unwrap();
    assert_eq!(again.corrupt_records, 0, "damage left after repair: {again:?}");
    assert_eq!(again.records, report.records);
    assert_eq!(read_all(&wal), first);
    let _ = std::fs::remove_dir_all(&d);
});
