//! The kernel object links with bpf-linker; fail early with the command that
//! installs it rather than with a linker error deep in a nested build.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => panic!("bpf-linker is not installed: run `cargo xtask build-ebpf`, which installs bpf-linker 0.10.0"),
    }
}
