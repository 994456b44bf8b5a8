//! `cargo xtask docker`: a static binary and a `FROM scratch` image.
//!
//! The image is built from a context holding only the musl binary and a
//! three-line Dockerfile, so no base image and no registry are needed. The
//! steps are cheap when nothing changed: cargo rebuilds nothing and Docker's
//! layer cache keeps the image, so tests may call this task every run.
//!
//! Flags: `--no-build` skips cargo (uses the binary already built), and
//! `--print-image` prints only the image reference on stdout at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::deps::{apt_install, output, status};

/// The static target: musl links everything into the binary.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// Image name; tagged with the workspace version and `latest`.
pub const IMAGE: &str = "vantage";

/// Where dockerd writes its log when this task starts it.
const DOCKERD_LOG: &str = "/var/log/vantage-xtask-dockerd.log";

/// The image's Dockerfile. HOST_* point the node source at the host's
/// filesystems mounted by docker-compose.yml; `run` uses VANTAGE_CONFIG or
/// the embedded default.
const DOCKERFILE: &str = "\
FROM scratch
COPY vantage /vantage
ENV HOST_PROC=/host/proc HOST_SYS=/host/sys HOST_ROOT=/rootfs DATA_DIR=/var/lib/vantage
LABEL org.opencontainers.image.title=\"vantage\" \\
      org.opencontainers.image.description=\"Low-overhead host agent\" \\
      org.opencontainers.image.version=\"@VERSION@\"
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s CMD [\"/vantage\", \"probe\"]
ENTRYPOINT [\"/vantage\"]
CMD [\"run\"]
";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut build = true;
    let mut print_image = false;
    for a in args {
        match a.as_str() {
            "--no-build" => build = false,
            "--print-image" => print_image = true,
            other => bail!("unknown argument {other:?}; usage: cargo xtask docker [--no-build] [--print-image]"),
        }
    }
    let root = workspace();
    let binary = target_dir(&root).join(TARGET).join("release").join("vantage");
    if build {
        ensure_toolchain()?;
        // The agent's build.rs builds the kernel object for any target and
        // names `cargo xtask build-ebpf` when its prerequisites are missing.
        let started = Instant::now();
        status(
            Command::new("cargo")
                .current_dir(&root)
                .args(["build", "--release", "--target", TARGET, "-p", "vantage"])
                .stdout(Stdio::null()),
        )?;
        eprintln!("static binary built in {:.0} s", started.elapsed().as_secs_f64());
    }
    if !binary.is_file() {
        bail!("{} is missing: run `cargo xtask docker` without --no-build", binary.display());
    }
    if has_interpreter(&binary)? {
        bail!(
            "{} is dynamically linked (has an ELF interpreter); a FROM scratch image needs a static binary",
            binary.display()
        );
    }
    ensure_dockerd()?;

    let version = env!("CARGO_PKG_VERSION");
    let context = target_dir(&root).join("docker-context");
    std::fs::create_dir_all(&context).with_context(|| format!("create {}", context.display()))?;
    copy_if_changed(&binary, &context.join("vantage"))?;
    std::fs::write(context.join("Dockerfile"), DOCKERFILE.replace("@VERSION@", version))
        .with_context(|| format!("write {}/Dockerfile", context.display()))?;
    let tag = format!("{IMAGE}:{version}");
    status(
        Command::new("docker")
            .args(["build", "--quiet", "-t", &tag, "-t", &format!("{IMAGE}:latest")])
            .arg(&context)
            .stdout(Stdio::null()),
    )?;
    eprintln!("built image {tag} and {IMAGE}:latest from {}", context.display());
    if print_image {
        println!("{tag}");
    }
    Ok(())
}

/// The workspace root (xtask's manifest is one level down).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, or `target` in the workspace.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// The musl target for rustup, and musl-tools for crates that compile C
/// (ring): cc finds its `x86_64-linux-musl-gcc` by itself.
pub fn ensure_toolchain() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == TARGET) {
        eprintln!("adding the {TARGET} target");
        status(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    apt_install(&[("musl-tools", "/usr/bin/musl-gcc")])
}

/// True when the ELF file has a PT_INTERP segment (needs a dynamic loader).
fn has_interpreter(path: &Path) -> anyhow::Result<bool> {
    let data = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        bail!("{} is not a 64-bit ELF file", path.display());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let Some(bytes) = data.get(o..o + 4) else { bail!("{}: truncated program headers", path.display()) };
        if u32::from_le_bytes(bytes.try_into().unwrap()) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Copies only when the content differs, so the context's mtime stays and
/// Docker's cache (which hashes content anyway) has nothing new to read.
fn copy_if_changed(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let new = std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, &new).with_context(|| format!("write {}", to.display()))?;
    }
    // COPY keeps the mode; the image's root has no CAP_DAC_OVERRIDE, so the
    // executable bits must be there.
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", to.display()))
}

/// Serialises starting dockerd: tests and xtask runs beside one another may
/// all find it down at once, and a second daemon started while the first is
/// still coming up fails on its pid file and truncates the shared log.
const DOCKERD_LOCK: &str = "/run/vantage-dockerd.lock";

/// The system dockerd's pid file.
const DOCKERD_PID: &str = "/var/run/docker.pid";

/// How long a starting dockerd may take: its first start creates its data
/// root and containerd's, which on a loaded two-core host took over 60 s.
const DOCKERD_START: Duration = Duration::from_secs(180);

/// Starts dockerd in the background when `docker info` cannot reach it.
pub fn ensure_dockerd() -> anyhow::Result<()> {
    if docker_reachable() {
        return Ok(());
    }
    apt_install(&[("docker.io", "/usr/sbin/dockerd")])?;
    let lock = std::fs::File::create(DOCKERD_LOCK).with_context(|| format!("create {DOCKERD_LOCK}"))?;
    lock.lock().with_context(|| format!("lock {DOCKERD_LOCK}"))?;
    if docker_reachable() {
        return Ok(());
    }
    let mut child = None;
    if let Some(pid) = running_dockerd() {
        eprintln!("dockerd (pid {pid}) is running but not answering yet; waiting for it");
    } else {
        eprintln!("starting dockerd (log: {DOCKERD_LOG})");
        let log = std::fs::File::create(DOCKERD_LOG).with_context(|| format!("create {DOCKERD_LOG}"))?;
        let err = log.try_clone()?;
        // Detached on purpose: the daemon outlives this task, like a service.
        child = Some(
            Command::new("dockerd")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .context("cannot start dockerd")?,
        );
    }
    let start = Instant::now();
    while start.elapsed() < DOCKERD_START {
        if docker_reachable() {
            eprintln!("dockerd answers after {:.1} s", start.elapsed().as_secs_f64());
            return Ok(());
        }
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!("dockerd exited ({status}) before answering; the end of {DOCKERD_LOG}:\n{}", log_tail());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("dockerd did not answer within {} s; the end of {DOCKERD_LOG}:\n{}", DOCKERD_START.as_secs(), log_tail())
}

/// The pid in dockerd's pid file, when that process is alive.
fn running_dockerd() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(DOCKERD_PID).ok()?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "dockerd").then_some(pid)
}

/// The last lines of dockerd's log, for an error.
fn log_tail() -> String {
    let text = std::fs::read_to_string(DOCKERD_LOG).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn docker_reachable() -> bool {
    Command::new("docker").arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}
