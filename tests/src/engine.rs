//! A current Docker Engine beside the system one, for what this machine's
//! Debian 12 dockerd (20.10) cannot do (CAP_BPF, CAP_PERFMON): Debian
//! trixie's docker.io (dockerd 26), docker-cli and containerd, fetched with
//! `apt-get download` from the suite Debian's registry serves, unpacked
//! under `target/engines/trixie` once, and started with a data root, exec
//! root, pid file, config file and socket of its own. The system dockerd at
//! /var/run/docker.sock, which other tests use, is never touched.
//!
//! runc is bookworm's (1.1.5, the `runc` test package): trixie's runc needs
//! glibc 2.38 and this host has 2.36. runc only applies what dockerd puts in
//! the OCI spec (capabilities, the seccomp filter), and it knows CAP_BPF and
//! CAP_PERFMON; the engine, its capability list and its default seccomp
//! profile are trixie's dockerd's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{require_program, wait_for, workspace, Proc, TempDir};

/// The suite whose engine is fetched, and the packages that make it.
const SUITE: &str = "trixie";
const PACKAGES: &[&str] = &["docker.io", "docker-cli", "containerd"];

/// Where Debian's mirror is named on this host (deb822 sources).
const SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

/// The Debian mirror this host uses (`URIs:` of the main archive).
fn mirror() -> String {
    let text = std::fs::read_to_string(SOURCES).unwrap_or_else(|e| panic!("read {SOURCES}: {e}"));
    text.lines()
        .filter_map(|l| l.strip_prefix("URIs:"))
        .flat_map(str::split_whitespace)
        .find(|uri| uri.trim_end_matches('/').ends_with("/debian"))
        .unwrap_or_else(|| panic!("{SOURCES} names no Debian archive (a URIs: line ending in /debian)"))
        .to_string()
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({cmd:?}): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The unpacked engine (its root, holding usr/sbin/dockerd), fetched on
/// first use. A registry that cannot serve it fails the test by name.
pub fn trixie_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = target_dir().join("engines").join(SUITE);
        let root = base.join("root");
        let done = base.join("unpacked");
        if done.exists() {
            return root;
        }
        require_program("runc", "runc");
        let _ = std::fs::remove_dir_all(&base);
        for d in ["lists/partial", "cache/archives/partial", "debs", "root"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        let sources = base.join("sources.list");
        std::fs::write(
            &sources,
            format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {} {SUITE} main\n", mirror()),
        )
        .unwrap();
        // Our own lists and cache: the host's apt state stays as it is.
        let apt = |args: &[&str]| {
            let mut cmd = Command::new("apt-get");
            cmd.arg("-q")
                .arg("-o")
                .arg(format!("Dir::Etc::sourcelist={}", sources.display()))
                .args(["-o", "Dir::Etc::sourceparts=-"])
                .arg("-o")
                .arg(format!("Dir::State::Lists={}", base.join("lists").display()))
                .arg("-o")
                .arg(format!("Dir::Cache={}", base.join("cache").display()))
                .args(["-o", "APT::Sandbox::User=root"])
                .args(args)
                .current_dir(base.join("debs"));
            cmd
        };
        run(&mut apt(&["update"]), &format!("apt-get update for {SUITE}"));
        let mut download = apt(&["download"]);
        download.args(PACKAGES);
        run(&mut download, &format!("apt-get download {PACKAGES:?} from {SUITE}"));
        for deb in std::fs::read_dir(base.join("debs")).unwrap().flatten() {
            run(Command::new("dpkg-deb").arg("-x").arg(deb.path()).arg(&root), "dpkg-deb -x");
        }
        // Not the engine's runc: see the module comment.
        let _ = std::fs::remove_file(root.join("usr/sbin/runc"));
        assert!(root.join("usr/sbin/dockerd").is_file(), "{SUITE}'s docker.io has no usr/sbin/dockerd");
        std::fs::write(&done, PACKAGES.join(" ")).unwrap();
        root
    })
}

/// A running trixie dockerd, stopped (with its containers) on drop.
pub struct Engine {
    pub socket: PathBuf,
    root: &'static Path,
    daemon: Option<Proc>,
    dir: TempDir,
    bridge: String,
}

impl Engine {
    /// Starts the engine and waits until it answers. `tag` names its
    /// temp dir and cgroup parent (unique per test).
    pub fn start(tag: &str) -> Engine {
        let root = trixie_root();
        let dir = TempDir::new(&format!("engine-{tag}"));
        let socket = dir.path().join("docker.sock");
        let config = dir.write("daemon.json", "{}\n");
        // Named and numbered by this test process, so engines of parallel
        // test binaries never share one.
        let n = std::process::id() % 10000;
        let bridge = format!("vteng{n}");
        let bip = format!("10.215.{}.1/24", n % 250);
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        run(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]), "ip link add (the engine's bridge)");
        // dockerd takes a given bridge's network from its address.
        run(Command::new("ip").args(["addr", "add", &bip, "dev", &bridge]), "ip addr add (the engine's bridge)");
        let mut cmd = Command::new(root.join("usr/sbin/dockerd"));
        cmd.env("PATH", search_path(root))
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            // A bridge of its own, and no iptables rules beside the system
            // dockerd's. Not `--bridge=none`: with it dockerd deletes any
            // `docker0` it finds at start, the system dockerd's bridge, and
            // every later container on the system dockerd fails to start.
            .arg(format!("--bridge={bridge}"))
            .args(["--iptables=false", "--ip6tables=false", "--userland-proxy=false"])
            // Its containers' cgroups apart from the system dockerd's.
            .arg(format!("--cgroup-parent=/vantage-engine-{tag}-{}", std::process::id()));
        let log = dir.path().join("dockerd.log");
        let daemon = Proc::spawn("dockerd (trixie)", cmd, &log);
        let mut engine = Engine { socket, root, daemon: Some(daemon), dir, bridge };
        let up = wait_for(Duration::from_secs(60), || {
            if let Some(Ok(Some(status))) = engine.daemon.as_mut().map(|d| d.child.try_wait()) {
                panic!("trixie's dockerd exited ({status}):\n{}", engine.log());
            }
            engine.docker(&["version"]).status.success().then_some(())
        });
        assert!(up.is_some(), "trixie's dockerd did not answer within 60 s:\n{}", engine.log());
        engine
    }

    /// The engine's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `docker` (trixie's client) aimed at this engine.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.root.join("usr/bin/docker"));
        cmd.env("DOCKER_HOST", self.host()).env("PATH", search_path(self.root));
        cmd
    }

    /// Runs `docker <args>` against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.command().args(args).stdin(Stdio::null()).output().expect("run trixie's docker client")
    }

    /// Runs `docker <args>`; its stdout, or a panic with stderr.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.status.success(), "docker {args:?} (trixie engine): {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `unix://` address of the engine.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The engine's version (`26.1.5+dfsg1`).
    pub fn version(&self) -> String {
        self.docker_ok(&["version", "--format", "{{.Server.Version}}"])
    }

    /// PATH for commands that must find this engine's binaries first
    /// (containerd, its shim, the docker client) and then the host's runc.
    pub fn path(&self) -> String {
        search_path(self.root)
    }
}

fn search_path(root: &Path) -> String {
    let host = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    format!("{}:{}:{host}", root.join("usr/bin").display(), root.join("usr/sbin").display())
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Only this engine's containers: it is ours alone.
        if let Ok(out) = self.command().args(["ps", "-aq"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.command().args(["rm", "-f", "-v", id]).output();
            }
        }
        if let Some(mut daemon) = self.daemon.take() {
            // SIGTERM lets dockerd stop its containerd and unmount its layers.
            daemon.signal(libc::SIGTERM);
            if daemon.wait_timeout(Duration::from_secs(20)).is_none() {
                eprintln!("trixie's dockerd ignored SIGTERM for 20 s; killing it");
            }
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}
