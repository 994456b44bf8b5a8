//! `cargo xtask build-ebpf`: installs rust-src for the nightly toolchain and
//! bpf-linker 0.10.0 when missing, then builds the kernel programs the way
//! the agent's build.rs does (and so checks them).

use std::process::Command;

use crate::deps::{on_path, output, status};

/// The bpf-linker release that links with the installed nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.10.0";

pub fn run() -> anyhow::Result<()> {
    let sysroot = output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
        .ok_or_else(|| anyhow::anyhow!("the nightly toolchain is missing: `rustup toolchain install nightly`"))?;
    let core_src = std::path::Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if !core_src.exists() {
        eprintln!("installing rust-src for the nightly toolchain");
        status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    let linker_ok = output(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if !on_path("bpf-linker") || !linker_ok {
        eprintln!("installing bpf-linker {BPF_LINKER_VERSION} (about 75 s)");
        status(Command::new("cargo").args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--force",
        ]))?;
    }
    // The agent's build.rs builds agent-ebpf (through aya-build) and embeds
    // it; building the agent is therefore the one way to build the object.
    status(Command::new("cargo").args(["build", "-p", "vantage"]))
}
