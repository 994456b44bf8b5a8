//! memcpy and memmove for the static (musl) binary on x86_64.
//!
//! musl's x86_64 memcpy starts every copy with `rep movsq` and moves the
//! last 0-7 bytes one `movsb` at a time; its memmove does the same. A scrape
//! copies millions of short strings (label names and values into label
//! sets, then into remote_write requests), and with musl's routines those
//! copies took a third of the scrape's CPU. The linker's `--wrap` option
//! (set by agent/build.rs for musl targets) sends every call to memcpy and
//! memmove, the C library's own included, to `__wrap_memcpy` and
//! `__wrap_memmove` here: up to 64 bytes are moved with a few overlapping
//! unaligned loads and stores, more with `rep movsb` forwards (fast on
//! every x86_64 processor with ERMS, i.e. since 2012) or 16-byte blocks
//! backwards.
//!
//! The wrappers are in the build with the `own-memcpy` feature (default).
//! They stay although the scrape cache removed the scrape's own label
//! copies: remote_write still encodes every label name and value of every
//! sample into its WAL record, a dozen short copies per sample. The fuzz
//! target `copy` (fuzz/fuzz_targets/copy.rs) compares both routines with a
//! byte loop.
//!
//! Nothing here may call memcpy or memmove, or hold a loop the compiler
//! could turn into such a call: with `--wrap`, that call would land here
//! again. The only loop is in assembly.

// Only the musl build installs the wrappers; elsewhere the routines are
// compiled for their tests.
#![cfg_attr(not(target_env = "musl"), allow(dead_code))]

use std::arch::asm;

/// Copies `n <= 64` bytes. Every load happens before the first store, so
/// the ranges may overlap in any way.
#[inline(always)]
unsafe fn up_to_64(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY (whole body): the caller guarantees `n` readable bytes at
    // `src` and `n` writable bytes at `dst`; every access below lies inside
    // them (the second access of each pair ends exactly at byte `n`).
    unsafe {
        if n >= 32 {
            let a = src.cast::<u128>().read_unaligned();
            let b = src.add(16).cast::<u128>().read_unaligned();
            let c = src.add(n - 32).cast::<u128>().read_unaligned();
            let d = src.add(n - 16).cast::<u128>().read_unaligned();
            dst.cast::<u128>().write_unaligned(a);
            dst.add(16).cast::<u128>().write_unaligned(b);
            dst.add(n - 32).cast::<u128>().write_unaligned(c);
            dst.add(n - 16).cast::<u128>().write_unaligned(d);
        } else if n >= 16 {
            let a = src.cast::<u128>().read_unaligned();
            let b = src.add(n - 16).cast::<u128>().read_unaligned();
            dst.cast::<u128>().write_unaligned(a);
            dst.add(n - 16).cast::<u128>().write_unaligned(b);
        } else if n >= 8 {
            let a = src.cast::<u64>().read_unaligned();
            let b = src.add(n - 8).cast::<u64>().read_unaligned();
            dst.cast::<u64>().write_unaligned(a);
            dst.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let a = src.cast::<u32>().read_unaligned();
            let b = src.add(n - 4).cast::<u32>().read_unaligned();
            dst.cast::<u32>().write_unaligned(a);
            dst.add(n - 4).cast::<u32>().write_unaligned(b);
        } else if n >= 2 {
            let a = src.cast::<u16>().read_unaligned();
            let b = src.add(n - 2).cast::<u16>().read_unaligned();
            dst.cast::<u16>().write_unaligned(a);
            dst.add(n - 2).cast::<u16>().write_unaligned(b);
        } else if n == 1 {
            *dst = *src;
        }
    }
}

/// Copies `n` bytes front to back: right for distinct ranges and for
/// `dst < src` (rep movsb is defined byte by byte, in order).
#[inline(always)]
pub(crate) unsafe fn forward(dst: *mut u8, src: *const u8, n: usize) {
    if n <= 64 {
        // SAFETY: as the caller's.
        unsafe { up_to_64(dst, src, n) };
        return;
    }
    // SAFETY: rep movsb copies rcx bytes from rsi to rdi with the
    // direction flag clear, which the ABI guarantees on entry.
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
}

/// Copies `n > 64` bytes back to front, for overlapping ranges with
/// `dst > src`: 16-byte blocks from the end, then the first 16 bytes,
/// loaded before anything was stored.
#[inline(always)]
unsafe fn backward(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller guarantees n > 64 bytes at both ends. The loop
    // moves [16 + k*16 .. n) down to 16 in blocks ending at offsets n,
    // n-16, ...; each block is loaded before it is stored, and the bytes it
    // overwrites in `src` (dst > src) lie above the ones still to be read.
    unsafe {
        let head = src.cast::<u128>().read_unaligned();
        asm!(
            "2:",
            "sub {n}, 16",
            "movdqu {t}, xmmword ptr [{src} + {n}]",
            "movdqu xmmword ptr [{dst} + {n}], {t}",
            "cmp {n}, 16",
            "ja 2b",
            n = inout(reg) n => _,
            src = in(reg) src,
            dst = in(reg) dst,
            t = out(xmm_reg) _,
            options(nostack)
        );
        dst.cast::<u128>().write_unaligned(head);
    }
}

/// memcpy(3), for `--wrap=memcpy`.
///
/// # Safety
/// As memcpy: `n` readable bytes at `src`, `n` writable bytes at `dst`,
/// the ranges distinct.
#[cfg(target_env = "musl")]
#[no_mangle]
pub unsafe extern "C" fn __wrap_memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: as the caller's.
    unsafe { forward(dst, src, n) };
    dst
}

/// memmove(3), for `--wrap=memmove`.
///
/// # Safety
/// As memmove: `n` readable bytes at `src`, `n` writable bytes at `dst`.
#[cfg(target_env = "musl")]
#[no_mangle]
pub unsafe extern "C" fn __wrap_memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: as the caller's.
    unsafe { copy(dst, src, n) };
    dst
}

/// memmove's work: backwards only where a forward copy would overwrite
/// source bytes before reading them.
#[inline(always)]
pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
    let overlapping_above = (dst as usize).wrapping_sub(src as usize) < n;
    // SAFETY: as the caller's.
    unsafe {
        if n > 64 && overlapping_above && !std::ptr::eq(dst.cast_const(), src) {
            backward(dst, src, n)
        } else {
            forward(dst, src, n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer of distinct byte values (no two positions equal mod 251).
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn copies_every_length_and_alignment_like_a_byte_loop() {
        for n in 0..300 {
            for (s_off, d_off) in [(0, 0), (1, 0), (0, 3), (7, 5), (15, 1)] {
                let src = pattern(n + s_off);
                let mut dst = vec![0xAAu8; n + d_off + 8];
                unsafe { forward(dst.as_mut_ptr().add(d_off), src.as_ptr().add(s_off), n) };
                assert_eq!(&dst[d_off..d_off + n], &src[s_off..s_off + n], "n {n} offsets {s_off}/{d_off}");
                assert!(dst[..d_off].iter().chain(&dst[d_off + n..]).all(|&b| b == 0xAA), "wrote outside: n {n}");
            }
        }
    }

    #[test]
    fn moves_overlapping_ranges_in_both_directions() {
        for n in 0..300 {
            for shift in [1usize, 2, 7, 8, 15, 16, 17, 48, 63, 64, 65, 200] {
                let len = n + shift + 4;
                // Up: dst = src + shift (a Vec::insert).
                let mut buf = pattern(len);
                let mut want = buf.clone();
                want.copy_within(2..2 + n, 2 + shift);
                unsafe { copy(buf.as_mut_ptr().add(2 + shift), buf.as_ptr().add(2), n) };
                assert_eq!(buf, want, "up: n {n} shift {shift}");
                // Down: dst = src - shift (a Vec::remove).
                let mut buf = pattern(len);
                let mut want = buf.clone();
                want.copy_within(2 + shift..2 + shift + n, 2);
                unsafe { copy(buf.as_mut_ptr().add(2), buf.as_ptr().add(2 + shift), n) };
                assert_eq!(buf, want, "down: n {n} shift {shift}");
            }
        }
    }

    #[test]
    fn a_move_onto_itself_leaves_the_bytes() {
        let mut buf = pattern(200);
        let p = buf.as_mut_ptr();
        unsafe { copy(p, p, 200) };
        assert_eq!(buf, pattern(200));
    }
}
