//! Builds the kernel programs (agent-ebpf) for bpfel-unknown-none with the
//! nightly toolchain and leaves the object in OUT_DIR, where `sources::ebpf`
//! embeds it. The prerequisites (nightly rust-src, bpf-linker) are installed
//! by `cargo xtask build-ebpf`; without them this build stops and says so.
use std::process::Command;

use anyhow::{bail, Context as _};

fn main() -> anyhow::Result<()> {
    // The static binary's memcpy and memmove are the agent's own (see
    // src/memory/copy.rs; feature own-memcpy): every reference to musl's
    // goes to the wrappers.
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let own_memcpy = std::env::var_os("CARGO_FEATURE_OWN_MEMCPY").is_some();
    if own_memcpy && var("CARGO_CFG_TARGET_ENV") == "musl" && var("CARGO_CFG_TARGET_ARCH") == "x86_64" {
        println!("cargo:rustc-link-arg=-Wl,--wrap=memcpy,--wrap=memmove");
    }
    let hint =
        "run `cargo xtask build-ebpf` once: it installs rust-src for the nightly toolchain and bpf-linker 0.10.0";
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
        .with_context(|| format!("building the kernel programs failed; {hint}"))?;
    // Two objects: the metric programs and the security programs.
    for name in ["agent-ebpf", "agent-security"] {
        let object = std::path::Path::new(&std::env::var("OUT_DIR")?).join(name);
        let mut bytes = std::fs::read(&object).with_context(|| format!("read {}", object.display()))?;
        sanitize_btf_names(&mut bytes).with_context(|| format!("BTF of {}", object.display()))?;
        std::fs::write(&object, bytes).with_context(|| format!("write {}", object.display()))?;
    }
    Ok(())
}

/// Makes every type name in the object's BTF a C identifier, in place.
/// bpf-linker 0.10 rewrites Rust's generic struct names (`Global<u8>`) but
/// not union names, and aya-log-ebpf's level global holds a
/// `MaybeUninit<u8>` union: the kernel rejects the whole BTF blob for that
/// one name ("Invalid name"), and with it every program. Same-length
/// replacement keeps every string offset valid.
fn sanitize_btf_names(elf: &mut [u8]) -> anyhow::Result<()> {
    use object::{Object, ObjectSection};
    let (start, size) = {
        let file = object::File::parse(&*elf)?;
        let Some(section) = file.section_by_name(".BTF") else { return Ok(()) };
        section.file_range().context("no file range for .BTF")?
    };
    let btf = &mut elf[start as usize..(start + size) as usize];
    let word = |b: &[u8], at: usize| -> anyhow::Result<u32> {
        let bytes = b.get(at..at + 4).context("BTF truncated")?;
        Ok(u32::from_le_bytes(bytes.try_into()?))
    };
    if btf.get(..2) != Some(&[0x9f, 0xeb][..]) {
        bail!("not little-endian BTF");
    }
    let hdr_len = word(btf, 4)? as usize;
    let (type_off, type_len) = (word(btf, 8)? as usize, word(btf, 12)? as usize);
    let str_off = word(btf, 16)? as usize;
    let (types, strings) = (hdr_len + type_off, hdr_len + str_off);
    let mut at = types;
    let mut names = Vec::new();
    while at < types + type_len {
        let (name_off, info) = (word(btf, at)? as usize, word(btf, at + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        // Kinds whose names the kernel checks as identifiers: struct, union,
        // enum, fwd, typedef, func, enum64.
        if matches!(kind, 4 | 5 | 6 | 7 | 8 | 12 | 19) && name_off != 0 {
            names.push(strings + name_off);
        }
        // Bytes that follow the 12-byte common header, by kind.
        let extra = match kind {
            1 | 14 | 17 => 4,
            3 => 12,
            4 | 5 | 15 | 19 => vlen * 12,
            6 | 13 => vlen * 8,
            _ => 0,
        };
        at += 12 + extra;
    }
    for start in names {
        for b in btf.iter_mut().skip(start).take_while(|b| **b != 0) {
            if !(b.is_ascii_alphanumeric() || *b == b'_') {
                *b = b'_';
            }
        }
    }
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file())
}
