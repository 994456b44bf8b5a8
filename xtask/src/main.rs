//! Developer tasks for Vantage: `cargo xtask <task>`.
//!
//! - `build-ebpf`: install what the kernel programs need (rust-src for the
//!   nightly, bpf-linker 0.10.0) and build them.
//! - `test`: install the test suite's servers (Debian packages), build, and
//!   run every test: the README's test command.
//! - `run`: build and run the agent on the embedded default config.
//! - `bench`: the benchmarks (see BENCHMARKS.md); `bench scale`: growth with
//!   active series.
//! - `docker`: a static binary and a `FROM scratch` image, no registry needed.
//! - `kernels`: the kernel matrix: Debian's kernels booted under qemu.
//! - `cgroup-v2`: container metrics and the eBPF container label on cgroup v2, in a VM.

mod bench;
mod build_ebpf;
mod cpu;
mod deps;
mod docker;
mod kernels;
mod kernels_cgroup;
mod scale;
mod test;
mod vm;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match task {
        "build-ebpf" => build_ebpf::run(),
        "test" => test::run(rest),
        "run" => run(rest),
        "bench" => bench::run(rest),
        "docker" => docker::run(rest),
        "kernels" => kernels::run(rest),
        "cgroup-v2" => kernels_cgroup::run(rest),
        // Runs inside the cgroup-v2 guest, not meant to be called by hand.
        "docker-api-responder" => kernels_cgroup::responder(rest),
        "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <build-ebpf|test|run|bench|docker|kernels|cgroup-v2> [args]");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!(
                "unknown task {other:?}; usage: cargo xtask <build-ebpf|test|run|bench|docker|kernels|cgroup-v2>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask run [agent args]`: build-ebpf, then `vantage run` (the
/// embedded default unless args say otherwise).
fn run(args: &[String]) -> anyhow::Result<()> {
    build_ebpf::run()?;
    let mut cmd = std::process::Command::new("cargo");
    cmd.args(["run", "--release", "-p", "vantage", "--", "run"]).args(args);
    deps::status(&mut cmd)
}
