//! The positions file from arbitrary bytes: loading never fails or panics
//! (a damaged file is set aside and tailing starts without positions), and
//! what it saves loads back as the same positions.
//! Run: `cd fuzz && cargo +nightly fuzz run positions -- -max_total_time=600`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vantage::logs::positions::Positions;

fuzz_target!(|data: &[u8]| {
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
    let d = base.join(format!("vantage-fuzz-pos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let file = d.join("positions.json");
    std::fs::write(&file, data).unwrap();
    let p = Positions::load(&file).expect("a damaged positions file is not an error");
    let files: Vec<_> = p.claim_files(|_| true).into_iter().map(|f| (f.id, f.offset)).collect();
    for (id, offset) in &files {
        p.track(vantage::logs::positions::CursorKey::File(id.clone()), *offset);
    }
    p.save().unwrap();
    let q = Positions::load(&file).unwrap();
    let again: Vec<_> = q.claim_files(|_| true).into_iter().map(|f| (f.id, f.offset)).collect();
    assert_eq!(files, again);
    let _ = std::fs::remove_dir_all(&d);
});
