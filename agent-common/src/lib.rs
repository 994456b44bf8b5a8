//! Types shared by Vantage's kernel programs (`agent-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]` with no padding so that the kernel side
//! and userspace agree on the byte layout of map values. Each map's comment
//! names the program that writes it and the collector that reads it.
#![no_std]

/// Index of the only slot of the `CPU_CONTEXT_SWITCHES` per-CPU array.
///
/// Written by `sched_switch` (agent-ebpf `sched.rs`), read by the agent's
/// `sources::ebpf` collector, which exports one series per CPU.
pub const CONTEXT_SWITCHES_SLOT: u32 = 0;
