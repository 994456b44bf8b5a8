//! Fuzzes the static binary's memcpy and memmove (agent/src/memory/copy.rs)
//! against a byte loop: any length, any offsets, distinct ranges for the
//! memcpy and overlapping ones in both directions for the memmove; bytes
//! outside the destination must stay as they were.
//! Run: `cd fuzz && cargo +nightly fuzz run copy -- -max_total_time=600`.
#![no_main]

// The routines, compiled straight from the agent's source (this crate has
// no --wrap: the byte loops below may become the C library's memcpy).
#[allow(dead_code)]
#[path = "../../agent/src/memory/copy.rs"]
mod copy;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, bytes)) = data.split_first_chunk::<6>() else { return };
    let pick = |i: usize| usize::from(u16::from_le_bytes([head[i], head[i + 1]]));
    let (a, b, c) = (pick(0), pick(2), pick(4));
    let len = bytes.len();
    let n = c % (len + 1);

    // memcpy: from `bytes` into a fresh buffer with a margin on both sides.
    let src_at = a % (len - n + 1);
    let dst_at = b % 64;
    let mut got = vec![0xA5u8; n + 128];
    let mut want = got.clone();
    for i in 0..n {
        want[dst_at + i] = bytes[src_at + i];
    }
    // SAFETY: n bytes are readable at src and writable at dst, distinct.
    unsafe { copy::forward(got.as_mut_ptr().add(dst_at), bytes.as_ptr().add(src_at), n) };
    assert_eq!(got, want, "memcpy of {n} bytes to offset {dst_at}");

    // memmove: within one buffer, ranges overlapping or not.
    let from = a % (len - n + 1);
    let to = b % (len - n + 1);
    let mut got = bytes.to_vec();
    let mut want = got.clone();
    let moved: Vec<u8> = (0..n).map(|i| bytes[from + i]).collect();
    for (i, byte) in moved.into_iter().enumerate() {
        want[to + i] = byte;
    }
    let p = got.as_mut_ptr();
    // SAFETY: both ranges lie inside `got`.
    unsafe { copy::copy(p.add(to), p.add(from), n) };
    assert_eq!(got, want, "memmove of {n} bytes from {from} to {to}");
});
