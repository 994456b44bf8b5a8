//! `cargo xtask test`: the README's test command. Installs what the tests
//! need when it is missing (Debian packages for the real servers, the eBPF
//! toolchain), checks formatting and clippy (`-D warnings`), builds the
//! agent, runs every test of the workspace, the kernel matrix (`cargo
//! xtask kernels`), then a smoke run of `cargo xtask bench` (each setup
//! must deliver samples).

use std::process::Command;

use crate::deps::{apt_install, status};

/// Debian packages the end-to-end tests use, each with a file it installs.
pub const TEST_PACKAGES: &[(&str, &str)] = &[
    ("prometheus", "/usr/bin/prometheus"),
    ("openssl", "/usr/bin/openssl"),
    ("prometheus-node-exporter", "/usr/bin/prometheus-node-exporter"),
    ("victoria-metrics", "/usr/bin/victoria-metrics"),
    ("docker.io", "/usr/sbin/dockerd"),
    ("busybox-static", "/bin/busybox"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("linux-perf", "/usr/bin/perf"),
    ("libbpf-tools", "/usr/sbin/runqlat"),
    ("iproute2", "/usr/sbin/ip"),
    ("util-linux", "/usr/sbin/losetup"),
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    ("docker-compose", "/usr/bin/docker-compose"),
    ("runc", "/usr/sbin/runc"),
    ("systemd", "/usr/bin/systemd-analyze"),
    ("musl-tools", "/usr/bin/musl-gcc"),
    ("python3-fusepy", "/usr/lib/python3/dist-packages/fusepy.py"),
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    apt_install(TEST_PACKAGES)?;
    crate::build_ebpf::run()?;
    // Habits before behaviour: one format, and no lint left standing.
    status(Command::new("cargo").args(["fmt", "--all", "--", "--check"]))?;
    status(Command::new("cargo").args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // dockerd runs like the service it is on a host, before any test needs
    // it: tests running in parallel would otherwise race to start it.
    crate::docker::ensure_dockerd()?;
    // The end-to-end tests run the real binary.
    status(Command::new("cargo").args(["build", "-p", "vantage"]))?;
    status(Command::new("cargo").args(["test", "--no-fail-fast"]).args(args))?;
    // Debian's kernels from 5.10 to the newest backports, booted under qemu.
    crate::kernels::run(&[])?;
    // cgroup v2 exists here only inside a VM (this host is v1).
    crate::kernels_cgroup::run(&[])?;
    // A few seconds per benchmark setup: every setup must deliver samples.
    crate::bench::run(&["--smoke".to_string()])
}
