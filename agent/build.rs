//! Builds the kernel programs (agent-ebpf) for bpfel-unknown-none with the
//! nightly toolchain and leaves the object in OUT_DIR, where `sources::ebpf`
//! embeds it. The prerequisites (nightly rust-src, bpf-linker) are installed
//! by `cargo xtask build-ebpf`; without them this build stops and says so.
use std::process::Command;

use anyhow::{bail, Context as _};

fn main() -> anyhow::Result<()> {
    let hint = "run `cargo xtask build-ebpf` once: it installs rust-src for the nightly toolchain and bpf-linker 0.10.0";
    if which("bpf-linker").is_none() {
        bail!("bpf-linker is not installed; {hint}");
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .with_context(|| format!("cannot run the nightly toolchain through rustup; {hint}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let rust_src = std::path::Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
    if !rust_src.exists() {
        bail!("rust-src is missing for the nightly toolchain ({} not found); {hint}", rust_src.display());
    }
    // aya-build watches agent-ebpf; the shared map types live next door.
    println!("cargo:rerun-if-changed=../agent-common/src");
    let package = aya_build::Package { name: "agent-ebpf", root_dir: "../agent-ebpf", ..Default::default() };
    aya_build::build_ebpf([package], aya_build::Toolchain::Nightly)
        .with_context(|| format!("building the kernel programs failed; {hint}"))
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}
