//! Vantage's kernel programs. They aggregate in maps (per-CPU counters, log2
//! histograms) and never send per-event data to userspace: the agent reads
//! the maps once per collection.
//!
//! Every program is a BTF tracepoint (tp_btf): no tracefs needed, and the
//! kernel hands over its own argument pointers, which are read directly at
//! offsets the agent found in the running kernel's BTF (the `OFFSETS`
//! global), never at offsets known at build time.
//!
//! Where a tracepoint's arguments changed between kernels (sched_switch's
//! prev_state in 5.18, block_rq_issue's queue before 5.11, kfree_skb's
//! reason in 5.17), the object holds one program per prototype, sharing
//! their body, and the agent loads the one the running kernel's
//! `btf_trace_<name>` prototype matches: the verifier rejects a program
//! that reads an argument the kernel does not pass. Member differences
//! (where a request's disk is) are read-only globals instead: the verifier
//! skips the branch a constant rules out.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The bpf target has no core::sync::atomic; the intrinsic becomes BPF's
// atomic add instruction.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod block;
#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod sched;

#[cfg(target_arch = "bpf")]
mod shared;

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
