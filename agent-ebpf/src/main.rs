//! Vantage's kernel programs. They aggregate in maps (per-CPU counters, log2
//! histograms) and never send per-event data to userspace: the agent reads
//! the maps once per collection.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod sched;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a real panic.
    loop {}
}

/// BTF tracepoints and the helpers they use are GPL-only.
#[cfg(target_arch = "bpf")]
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("agent-ebpf only runs in the kernel: build it with `cargo xtask build-ebpf`");
}
