//! The container deployment: `cargo xtask docker` builds the FROM scratch
//! image with no registry, and the image runs with docker-compose.yml's
//! hardening (capabilities read from the compose file itself, read-only
//! root, host network and PID namespace, the host paths mounted), becomes
//! ready, attaches its eBPF programs and reads host metrics via /host/proc.
//!
//! Two runtimes, because of this machine's Debian dockerd (20.10.24): it
//! rejects `--cap-add BPF` and `PERFMON` as unknown capabilities (Docker
//! releases that know them accept the compose file as is). So the image is
//! run (1) by dockerd with every compose capability dockerd accepts, which
//! checks the hardening, the healthcheck and that the agent runs on without
//! eBPF, and (2) by runc, the runtime under dockerd, from the image's own
//! filesystem and settings with exactly the compose capabilities, which
//! checks that CAP_BPF + CAP_PERFMON are enough for the kernel programs,
//! inside a 24 MiB memory cgroup with a peak from exec of at most 16 MiB.
//! The sandbox this runs in has no CAP_SYS_RESOURCE in its own bounding set,
//! so no runtime here can grant it; the test says so and allows only that
//! one to be missing (it only matters on kernels before 5.11).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vantage_tests::engine::Engine;
use vantage_tests::{free_port, http_get, parse_text, require_program, wait_for, workspace, TempDir};

/// Capability numbers (linux/capability.h) of the names compose uses.
const CAP_NUMBERS: &[(&str, u32)] =
    &[("DAC_READ_SEARCH", 2), ("SYS_PTRACE", 19), ("SYS_RESOURCE", 24), ("PERFMON", 38), ("BPF", 39)];

/// Builds the image once per test run through the real xtask; returns its
/// reference. Cheap when nothing changed (cargo and Docker's cache).
fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        require_program("dockerd", "docker.io");
        let start = Instant::now();
        let out = Command::new("cargo")
            .current_dir(workspace())
            .args(["run", "--quiet", "-p", "xtask", "--", "docker", "--print-image"])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo xtask docker");
        assert!(out.status.success(), "cargo xtask docker failed");
        let image = String::from_utf8_lossy(&out.stdout).trim().to_string();
        eprintln!("cargo xtask docker: {image} in {:.1} s", start.elapsed().as_secs_f64());
        assert_eq!(image, format!("vantage:{}", env!("CARGO_PKG_VERSION")));
        image
    })
}

/// The `cap_add` list of docker-compose.yml, in order.
fn compose_caps() -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join("docker-compose.yml")).expect("read docker-compose.yml");
    let mut caps = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        if t == "cap_add:" {
            inside = true;
        } else if inside {
            match t.strip_prefix("- ") {
                Some(cap) => caps.push(cap.trim().to_string()),
                None => break,
            }
        }
    }
    caps
}

/// This process's bounding set (what any container started from here can get).
fn own_bounding_set() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).unwrap().trim();
    u64::from_str_radix(hex, 16).unwrap()
}

fn cap_number(name: &str) -> u32 {
    CAP_NUMBERS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("unknown capability {name} in compose")).1
}

/// The compose capabilities this environment can grant at all; panics when
/// one other than SYS_RESOURCE is missing.
fn grantable_caps() -> Vec<String> {
    let bounding = own_bounding_set();
    let (ok, missing): (Vec<String>, Vec<String>) =
        compose_caps().into_iter().partition(|c| bounding & (1u64 << cap_number(c)) != 0);
    if !missing.is_empty() {
        eprintln!("this environment's own bounding set lacks {missing:?}: no runtime here can grant them");
    }
    assert!(missing.iter().all(|c| c == "SYS_RESOURCE"), "missing from the bounding set: {missing:?}");
    ok
}

#[test]
fn compose_file_is_hardened_and_valid() {
    assert_eq!(compose_caps(), ["BPF", "PERFMON", "DAC_READ_SEARCH", "SYS_PTRACE", "SYS_RESOURCE"]);
    let text = std::fs::read_to_string(workspace().join("docker-compose.yml")).unwrap();
    for needed in [
        "network_mode: host",
        "pid: host",
        "read_only: true",
        "no-new-privileges:true",
        "- ALL",
        "/proc:/host/proc:ro",
        "/sys:/host/sys:ro",
        "/:/rootfs:ro",
        "/var/run/docker.sock:/var/run/docker.sock:ro",
        "/var/log:/var/log:ro",
        "./config:/etc/vantage:ro",
        "vantage-data:/var/lib/vantage",
        "/tmp:noexec",
        "restart: unless-stopped",
        "[\"CMD\", \"/vantage\", \"probe\"]",
    ] {
        assert!(text.contains(needed), "docker-compose.yml lacks {needed:?}");
    }
    let code: String = text.lines().map(|l| l.split('#').next().unwrap()).collect::<Vec<_>>().join("\n");
    assert!(!code.contains("SYS_ADMIN") && !code.contains("privileged"), "no SYS_ADMIN, no privileged");

    // docker-compose itself must accept the file.
    let compose = require_program("docker-compose", "docker-compose");
    let dir = TempDir::new("compose-config");
    std::fs::copy(workspace().join("docker-compose.yml"), dir.path().join("docker-compose.yml")).unwrap();
    std::fs::copy(workspace().join(".env.example"), dir.path().join(".env")).unwrap();
    let out = Command::new(compose).current_dir(dir.path()).arg("config").output().unwrap();
    let rendered = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&out.stderr));
    assert!(rendered.contains("VANTAGE_CONFIG: /etc/vantage/unified.toml"), "{rendered}");
    assert!(rendered.contains("LISTEN_ADDR: 127.0.0.1:12345"), "{rendered}");
}

/// The agent's /metrics and /api/v1/status once it is ready on `port`.
fn wait_ready(port: u16, logs: &dyn Fn() -> String) -> (String, serde_json::Value) {
    let ready = wait_for(Duration::from_secs(60), || {
        http_get(&format!("http://127.0.0.1:{port}/-/ready")).filter(|(s, _)| *s == 200)
    });
    assert!(ready.is_some(), "not ready within 60 s; logs:\n{}", logs());
    let (_, metrics) = http_get(&format!("http://127.0.0.1:{port}/metrics")).unwrap();
    let (_, status) = http_get(&format!("http://127.0.0.1:{port}/api/v1/status")).unwrap();
    (metrics, serde_json::from_str(&status).unwrap())
}

/// Checks common to both runtimes: host metrics through /host/proc.
fn assert_host_metrics(metrics: &str, status: &serde_json::Value) {
    let samples = parse_text(metrics);
    let load = samples
        .iter()
        .find(|(s, _)| s.starts_with("node_load1{"))
        .unwrap_or_else(|| panic!("no node_load1:\n{metrics}"));
    let host_load: f64 =
        std::fs::read_to_string("/proc/loadavg").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!((load.1 - host_load).abs() < 2.0, "node_load1 {} far from the host's {host_load}", load.1);
    assert_eq!(status["config"]["node"]["proc_path"], "/host/proc", "the image's HOST_PROC reaches the node source");
    assert_eq!(status["config"]["node"]["sys_path"], "/host/sys");
    assert_eq!(status["config"]["agent"]["data_dir"], "/var/lib/vantage");
    assert_eq!(status["sources"]["node"]["health"], "up", "{status}");
}

struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// `docker run` arguments for docker-compose.yml's service with `caps`:
/// its hardening, namespaces and mounts, the agent listening on `port`,
/// its data in `data` and the engine's socket `socket` mounted where the
/// compose file mounts it. Health checks every second, so the test does
/// not wait 15.
fn compose_run_args(name: &str, caps: &[String], port: u16, data: &Path, socket: &Path) -> Vec<String> {
    let mut args: Vec<String> = ["run", "-d", "--name", name, "--cap-drop", "ALL"].map(String::from).to_vec();
    for c in caps {
        args.extend(["--cap-add".to_string(), c.clone()]);
    }
    for a in [
        "--read-only",
        "--network",
        "host",
        "--pid",
        "host",
        "--security-opt",
        "no-new-privileges:true",
        "--user",
        "0:0",
        "--tmpfs",
        "/tmp:noexec,nosuid,nodev,size=16m",
        "-v",
        "/proc:/host/proc:ro",
        "-v",
        "/sys:/host/sys:ro",
        "-v",
        "/:/rootfs:ro",
        "-v",
        "/var/log:/var/log:ro",
        "--health-interval",
        "1s",
        "--health-start-period",
        "1s",
    ] {
        args.push(a.to_string());
    }
    args.extend(["-v".into(), format!("{}:/var/run/docker.sock:ro", socket.display())]);
    args.extend(["-v".into(), format!("{}:/var/lib/vantage", data.display())]);
    args.extend(["-e".into(), format!("LISTEN_ADDR=127.0.0.1:{port}")]);
    args
}

#[test]
fn image_under_dockerd_with_the_compose_hardening() {
    let image = image();
    let port = free_port();
    let data = TempDir::new("deploy-data");
    // Not the deploy script test's name: the two run at once on one dockerd.
    let name = format!("vantage-compose-hardening-{}", std::process::id());
    let mut caps = grantable_caps();
    let mut refused = Vec::new();
    let container = loop {
        let mut cmd = Command::new("docker");
        cmd.args(compose_run_args(&name, &caps, port, data.path(), Path::new("/var/run/docker.sock"))).arg(image);
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.success() {
            break Container(name.clone());
        }
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        // dockerd names the first capability it does not know.
        let unknown = caps.iter().position(|c| err.contains(&format!("unknown capability: \"CAP_{c}\"")));
        match unknown {
            Some(i) => refused.push(caps.remove(i)),
            None => panic!("docker run failed: {err}"),
        }
    };
    if !refused.is_empty() {
        eprintln!("this dockerd does not know {refused:?}; ran with {caps:?}");
        assert!(refused.iter().all(|c| c == "BPF" || c == "PERFMON"), "dockerd refused {refused:?}");
    }
    let logs = || {
        let out = Command::new("docker").args(["logs", &container.0]).output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let (metrics, status) = wait_ready(port, &logs);
    assert_host_metrics(&metrics, &status);

    // The container runs as root with exactly the granted capabilities.
    let inspect = Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &container.0]).output().unwrap();
    let pid = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    assert_eq!(effective_caps(&pid), caps.iter().fold(0u64, |m, c| m | 1 << cap_number(c)), "CapEff of pid {pid}");

    let programs = status["programs"].as_object().expect("programs in status");
    assert!(!programs.is_empty(), "{status}");
    let with_bpf = caps.iter().any(|c| c == "BPF") && caps.iter().any(|c| c == "PERFMON");
    for (name, p) in programs {
        let line = format!("vantage_ebpf_program_up{{program=\"{name}\"}} {}", if with_bpf { 1 } else { 0 });
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
        if !with_bpf {
            // Without CAP_BPF the agent says why and keeps running.
            assert!(!p["error"].as_str().unwrap().is_empty(), "{name}: no reason given: {p}");
        }
    }

    // The image's healthcheck (`vantage probe`) turns the container healthy.
    let healthy = wait_for(Duration::from_secs(30), || {
        let out =
            Command::new("docker").args(["inspect", "-f", "{{.State.Health.Status}}", &container.0]).output().ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == "healthy").then_some(())
    });
    assert!(healthy.is_some(), "the container never became healthy; logs:\n{}", logs());
}

fn effective_caps(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    u64::from_str_radix(hex, 16).unwrap()
}

/// A runc container, deleted (killed) on drop.
struct RuncContainer(String);

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = Command::new("runc").args(["delete", "--force", &self.0]).output();
    }
}

#[test]
fn image_with_exactly_the_compose_capabilities_attaches_ebpf() {
    let image = image();
    let runc = require_program("runc", "runc");
    let bundle = TempDir::new("deploy-runc");
    let rootfs = bundle.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();

    // The image's filesystem and settings, as dockerd would hand them to runc.
    let created = Command::new("docker").args(["create", image]).output().unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let cid = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let _created = Container(cid.clone());
    let export = Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {cid} | tar -x -C {}", rootfs.display()))
        .status()
        .unwrap();
    assert!(export.success());
    let inspect = Command::new("docker").args(["image", "inspect", image]).output().unwrap();
    let config: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let config = &config[0]["Config"];
    let mut args: Vec<String> = serde_json::from_value(config["Entrypoint"].clone()).unwrap();
    args.extend(serde_json::from_value::<Vec<String>>(config["Cmd"].clone()).unwrap());
    assert_eq!(args, ["/vantage", "run"]);
    let port = free_port();
    let mut env: Vec<String> = serde_json::from_value(config["Env"].clone()).unwrap();
    env.push(format!("LISTEN_ADDR=127.0.0.1:{port}"));
    for (name, expected) in [
        ("HOST_PROC", "/host/proc"),
        ("HOST_SYS", "/host/sys"),
        ("HOST_ROOT", "/rootfs"),
        ("DATA_DIR", "/var/lib/vantage"),
    ] {
        assert!(env.contains(&format!("{name}={expected}")), "image env {env:?} lacks {name}={expected}");
    }

    let caps: Vec<String> = grantable_caps().iter().map(|c| format!("CAP_{c}")).collect();
    let data = bundle.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let bind = |src: &str, dst: &str, opts: &[&str]| serde_json::json!({"destination": dst, "type": "bind", "source": src, "options": opts});
    // Compose's mounts; the container's own /proc and /sys are the host's
    // too, since it shares the host's PID namespace and network.
    let mounts = vec![
        bind("/proc", "/proc", &["rbind", "ro"]),
        bind("/sys", "/sys", &["rbind", "ro"]),
        serde_json::json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        bind("/proc", "/host/proc", &["rbind", "ro"]),
        bind("/sys", "/host/sys", &["rbind", "ro"]),
        bind("/", "/rootfs", &["rbind", "ro"]),
        bind("/var/run/docker.sock", "/var/run/docker.sock", &["bind", "ro"]),
        bind("/var/log", "/var/log", &["rbind", "ro"]),
        bind(data.to_str().unwrap(), "/var/lib/vantage", &["bind", "rw"]),
        serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["noexec", "nosuid", "nodev", "size=16m"]}),
    ];
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "vantage",
        "mounts": mounts,
        // No network or PID namespace: compose's network_mode and pid host.
        // A memory cgroup of its own with a ceiling from exec on, as a
        // systemd MemoryMax= or compose's mem_limit would set: loading the
        // eBPF programs must fit under it (issue 17's start-up spike).
        "linux": {
            "namespaces": [{"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
            "cgroupsPath": format!("/vantage-runc-test-{}", std::process::id()),
            "resources": {"memory": {"limit": MEMORY_LIMIT}}
        }
    });
    std::fs::write(bundle.path().join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let id = format!("vantage-runc-test-{}", std::process::id());
    let log_path = bundle.path().join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let status = Command::new(runc)
        .args(["run", "--detach", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    let _container = RuncContainer(id.clone());
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "runc run failed: {}", logs());

    let (metrics, status) = wait_ready(port, &logs);
    assert_host_metrics(&metrics, &status);
    let programs = status["programs"].as_object().expect("programs in status");
    assert!(!programs.is_empty(), "{status}");
    for (name, p) in programs {
        assert_eq!(p["attached"], true, "{name} not attached with {caps:?}: {p}\n{}", logs());
        let line = format!("vantage_ebpf_program_up{{program=\"{name}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    // And the kernel counts through them: the eBPF source produced series.
    assert!(status["sources"]["ebpf"]["series"].as_u64().unwrap() > 0, "{status}");

    let state = Command::new("runc").args(["state", &id]).output().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    let pid = state["pid"].to_string();
    let expected = caps.iter().fold(0u64, |m, c| m | 1 << cap_number(c.trim_start_matches("CAP_")));
    assert_eq!(effective_caps(&pid), expected, "the agent runs with exactly {caps:?}");
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    // It got there under the ceiling, without the kernel killing anything
    // in its cgroup, and its peak from exec (VmHWM) stayed well below it.
    let memory = MemoryCgroup::of(&pid);
    assert_eq!(memory.limit(), MEMORY_LIMIT, "runc set the limit on {}", memory.dir.display());
    assert_eq!(memory.oom_kills(), 0, "OOM kills in {}; logs:\n{}", memory.dir.display(), logs());
    let hwm = vantage_tests::status_kib(&pid, "VmHWM:");
    eprintln!(
        "the image's agent under a {} MiB limit: VmHWM {:.1} MiB, VmRSS {:.1} MiB",
        MEMORY_LIMIT >> 20,
        hwm as f64 / 1024.0,
        vantage_tests::status_kib(&pid, "VmRSS:") as f64 / 1024.0
    );
    assert!(hwm <= PEAK_BUDGET_KIB, "VmHWM {hwm} kB from exec, budget {PEAK_BUDGET_KIB} kB");
}

/// The runc test's memory ceiling: 24 MiB, twice the steady budget.
const MEMORY_LIMIT: u64 = 24 << 20;
/// Peak resident memory from exec allowed on the embedded default (node,
/// eBPF, Docker): issue 17's start-up budget, in kB.
const PEAK_BUDGET_KIB: u64 = 16 * 1024;

/// The memory cgroup a process is in, v1 (this host) or v2.
struct MemoryCgroup {
    dir: std::path::PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    fn of(pid: &str) -> MemoryCgroup {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let path_of = |prefix: &str| cgroups.lines().find_map(|l| l.split_once(prefix).map(|(_, p)| p.to_string()));
        // v1: "4:memory:/path"; v2 only: "0::/path".
        match cgroups.lines().find(|l| l.split(':').nth(1).is_some_and(|c| c.split(',').any(|c| c == "memory"))) {
            Some(line) => {
                let path = line.splitn(3, ':').nth(2).unwrap();
                MemoryCgroup { dir: Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')), v2: false }
            }
            None => {
                let path = path_of("0::").unwrap_or_else(|| panic!("no memory cgroup for {pid}: {cgroups}"));
                MemoryCgroup { dir: Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')), v2: true }
            }
        }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_else(|e| panic!("{}/{file}: {e}", self.dir.display()))
    }

    fn limit(&self) -> u64 {
        self.read(if self.v2 { "memory.max" } else { "memory.limit_in_bytes" }).trim().parse().unwrap()
    }

    /// Processes the kernel's OOM killer took in this cgroup.
    fn oom_kills(&self) -> u64 {
        let text = self.read(if self.v2 { "memory.events" } else { "memory.oom_control" });
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).map_or(0, |n| n.trim().parse().unwrap())
    }
}

/// The compose capabilities this Docker daemon accepts and can grant:
/// engines before CAP_BPF/CAP_PERFMON were known refuse them, and a daemon
/// without CAP_SYS_RESOURCE itself cannot grant it.
fn engine_caps(image: &str) -> (Vec<String>, Vec<String>) {
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for cap in compose_caps() {
        let out = Command::new("docker")
            .args(["run", "--rm", "--network", "none", "--cap-drop", "ALL", "--cap-add", &cap, image, "version"])
            .output()
            .unwrap();
        if out.status.success() {
            ok.push(cap);
        } else {
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(err.contains("unknown capability") || err.contains("unable to apply caps"), "{cap}: {err}");
            refused.push(cap);
        }
    }
    (ok, refused)
}

/// Removes the compose project the deploy test started (the project is
/// named after the container) and the image tags it made.
struct ComposeProject(std::path::PathBuf, String, Vec<String>);

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .current_dir(&self.0)
            .env("VANTAGE_CONTAINER", &self.1)
            .args(["-p", &self.1, "down", "-v"])
            .output();
        for tag in &self.2 {
            let _ = Command::new("docker").args(["rmi", tag]).output();
        }
    }
}

fn container_id(name: &str) -> String {
    let out = Command::new("docker").args(["container", "inspect", "-f", "{{.Id}}", name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn deploy_script_checks_starts_updates_and_reports() {
    let image = image();
    require_program("docker-compose", "docker-compose");
    let dir = TempDir::new("deploy-script");
    let root = workspace();
    for file in ["deploy.sh", "docker-compose.yml"] {
        std::fs::copy(root.join(file), dir.path().join(file)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::copy(root.join("config/local.toml"), dir.path().join("config/local.toml")).unwrap();
    dir.write("config/bad.toml", "[node]\nbogus = 1\n");
    let port = free_port();
    let env = std::fs::read_to_string(root.join(".env.example")).unwrap();
    let env: String = env
        .lines()
        .map(|l| if l.starts_with("LISTEN_ADDR=") { format!("LISTEN_ADDR=127.0.0.1:{port}") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    dir.write(".env", &env);
    // A container, project and image tags of this test's own: other tests
    // (and other checkouts) may deploy on the same dockerd meanwhile.
    let name = format!("vantage-deploy-test-{}", std::process::id());
    let tag = format!("deploy-test-{}", std::process::id());
    let changed_tag = format!("{tag}-changed");
    let status = Command::new("docker").args(["tag", image, &format!("vantage:{tag}")]).status().unwrap();
    assert!(status.success(), "docker tag {image}");
    let _project = ComposeProject(
        dir.path().to_path_buf(),
        name.clone(),
        vec![format!("vantage:{tag}"), format!("vantage:{changed_tag}")],
    );
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();

    // The compose file as is, unless this engine cannot run it: then the
    // same file without the capabilities it refuses (named in the output).
    let (_, refused) = engine_caps(image);
    let deploy_tag = |config: &str, tag: &str| {
        let mut cmd = Command::new(dir.path().join("deploy.sh"));
        cmd.arg(config).env("SERVER_NAME", "host-b").env_remove("LISTEN_ADDR").env_remove("APP_NAME");
        cmd.env("VANTAGE_CONTAINER", &name).env("VANTAGE_VERSION", tag);
        if !refused.is_empty() {
            let text = std::fs::read_to_string(dir.path().join("docker-compose.yml")).unwrap();
            let kept: Vec<&str> =
                text.lines().filter(|l| !refused.iter().any(|c| l.trim() == format!("- {c}"))).collect();
            std::fs::write(dir.path().join("docker-compose.engine.yml"), kept.join("\n")).unwrap();
            cmd.env("COMPOSE_FILE", "docker-compose.engine.yml");
        }
        let out = cmd.output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
    };
    let deploy = |config: &str| deploy_tag(config, &tag);
    let status_json = || -> serde_json::Value {
        let (_, body) = http_get(&format!("http://127.0.0.1:{port}/api/v1/status")).unwrap();
        serde_json::from_str(&body).unwrap()
    };
    if !refused.is_empty() {
        eprintln!("this Docker engine refuses {refused:?}: deploying docker-compose.yml without them");
    }

    // An invalid config stops before anything starts.
    let (ok, out) = deploy("bad.toml");
    assert!(!ok, "{out}");
    assert!(out.contains("unknown field `bogus`") && out.contains("nothing was changed"), "{out}");
    assert_eq!(container_id(&name), "", "nothing started for an invalid config");

    // An engine that does not know CAP_BPF: deploy.sh names the way out.
    if refused.iter().any(|c| c == "BPF") {
        let out = Command::new(dir.path().join("deploy.sh"))
            .arg("local.toml")
            .env("SERVER_NAME", "host-b")
            .env("VANTAGE_CONTAINER", &name)
            .env_remove("LISTEN_ADDR")
            .env_remove("APP_NAME")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("does not know CAP_BPF/CAP_PERFMON (Docker Engine 23.0 and later do)"), "{text}");
        assert!(text.contains("replace BPF and PERFMON with SYS_ADMIN"), "{text}");
        assert_eq!(container_id(&name), "", "nothing started on an engine that refuses the compose file");
    }

    // A valid one starts, becomes ready and reports.
    let start = Instant::now();
    let (ok, out) = deploy("local.toml");
    assert!(ok, "{out}");
    eprintln!("deploy.sh took {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        out.contains("job \"host-b-node-exporter\", proc /host/proc"),
        "the per-host override reached the check: {out}"
    );
    assert!(out.contains("vantage 0.1.0: ready"), "{out}");
    // node, ebpf, docker and docker/discovery; a source that has not
    // reported yet counts as neither up nor down.
    assert!(out.contains(" up, 0 down"), "{out}");
    for source in ["node ", "docker/discovery "] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(source) && l.contains(" up ")), "{source}not up: {out}");
    }
    assert!(out.contains("eBPF programs:") && out.contains("sinks: none"), "{out}");
    let status = status_json();
    assert_eq!(status["config"]["node"]["job"], "host-b-node-exporter");
    let first = container_id(&name);
    assert!(!first.is_empty());
    // Attached or not per program (under an engine that refuses CAP_BPF none
    // is, and the kernel's reason names whichever map failed first).
    let attached = |status: &serde_json::Value| -> Vec<(String, bool)> {
        let programs = status["programs"].as_object().cloned().unwrap_or_default();
        programs.iter().map(|(name, p)| (name.clone(), p["attached"] == true)).collect()
    };
    let programs = attached(&status);

    // Again with nothing changed: the same container keeps running.
    let (ok, out) = deploy("local.toml");
    assert!(ok, "{out}");
    assert!(out.contains("unchanged: nothing to do"), "{out}");
    assert_eq!(container_id(&name), first, "an unchanged deploy must not recreate the container");
    assert_eq!(status_json()["reload"]["reloads"], 0, "nothing to reload");

    // A changed .env is reloaded in the running container.
    let env = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    let env = env.replace("SCRAPE_INTERVAL=15s", "SCRAPE_INTERVAL=7s");
    assert!(env.contains("SCRAPE_INTERVAL=7s"), ".env.example sets SCRAPE_INTERVAL");
    dir.write(".env", &env);
    let (ok, out) = deploy("local.toml");
    assert!(ok, "{out}");
    assert!(out.contains("reloading the running agent") && out.contains("deploy: reloaded"), "{out}");
    assert_eq!(container_id(&name), first, "a changed .env must reload, not recreate");
    let status = status_json();
    assert_eq!(status["config"]["agent"]["scrape_interval"], "7s", "{}", status["config"]["agent"]);
    assert_eq!(status["reload"]["reloads"], 1);
    assert_eq!(status["reload"]["last_successful"], true);

    // A changed config too: a new scrape job appears in the same container.
    let mut text = std::fs::read_to_string(dir.path().join("config/local.toml")).unwrap();
    text.push_str(
        "\n[[scrape]]\njob_name = \"deploy-reload\"\n[[scrape.static_configs]]\ntargets = [\"127.0.0.1:1\"]\n",
    );
    std::fs::write(dir.path().join("config/local.toml"), text).unwrap();
    let (ok, out) = deploy("local.toml");
    assert!(ok, "{out}");
    assert!(out.contains("deploy: reloaded"), "{out}");
    assert_eq!(container_id(&name), first, "a changed config must reload, not recreate");
    let status = status_json();
    assert_eq!(status["reload"]["reloads"], 2);
    let jobs: Vec<&str> =
        status["config"]["scrape"].as_array().unwrap().iter().filter_map(|j| j["job_name"].as_str()).collect();
    assert!(jobs.contains(&"deploy-reload"), "{jobs:?}");
    assert_eq!(attached(&status), programs, "every eBPF program is as attached as before");

    // A changed image recreates the container.
    let mut build = Command::new("docker")
        .args(["build", "--quiet", "-t", &format!("vantage:{changed_tag}"), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    write!(build.stdin.take().unwrap(), "FROM vantage:{tag}\nLABEL org.example.deploy-test=\"changed\"\n").unwrap();
    assert!(build.wait().unwrap().success(), "docker build of the changed image");
    let (ok, out) = deploy_tag("local.toml", &changed_tag);
    assert!(ok, "{out}");
    assert!(out.contains("container recreated"), "{out}");
    assert_ne!(container_id(&name), first, "a changed image must recreate the container");
}

#[test]
fn systemd_unit_verifies_with_the_compose_capabilities() {
    let unit = std::fs::read_to_string(workspace().join("deploy/vantage.service")).unwrap();
    let expected: Vec<String> = compose_caps().iter().map(|c| format!("CAP_{c}")).collect();
    for key in ["AmbientCapabilities=", "CapabilityBoundingSet="] {
        let line = unit.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key}"));
        let caps: Vec<&str> = line[key.len()..].split_whitespace().collect();
        assert_eq!(caps, expected, "{key} must match docker-compose.yml's cap_add");
    }
    for needed in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=vantage",
        "ReadWritePaths=/var/lib/vantage",
        "RestartPreventExitStatus=78",
    ] {
        assert!(unit.lines().any(|l| l == needed), "vantage.service lacks {needed}");
    }
    // systemd's own checks, with the binary path pointed at the built agent.
    let analyze = require_program("systemd-analyze", "systemd");
    let dir = TempDir::new("unit");
    let path = dir.write(
        "vantage.service",
        &unit.replace("/usr/local/bin/vantage", vantage_tests::vantage_bin().to_str().unwrap()),
    );
    let out = Command::new(&analyze).arg("verify").arg(&path).output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&analyze).args(["security", "--offline=yes"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for vantage.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 4.5, "systemd-analyze security exposure {level} (was 4.0 when written)");
}

/// Builds the image with the real xtask into `engine` (its client and
/// socket through PATH and DOCKER_HOST); returns its reference.
fn image_in(engine: &Engine) -> String {
    let start = Instant::now();
    let out = Command::new("cargo")
        .current_dir(workspace())
        .args(["run", "--quiet", "-p", "xtask", "--", "docker", "--print-image"])
        // The host's docker client (any that speaks API 1.41 or later),
        // aimed at the engine: PATH stays as it is, so cargo's build of the
        // static binary is the one every other test reuses.
        .env("DOCKER_HOST", engine.host())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo xtask docker");
    assert!(out.status.success(), "cargo xtask docker into the trixie engine failed");
    let image = String::from_utf8_lossy(&out.stdout).trim().to_string();
    eprintln!(
        "cargo xtask docker into dockerd {}: {image} in {:.1} s",
        engine.version(),
        start.elapsed().as_secs_f64()
    );
    image
}

/// The compose service on an engine that knows CAP_BPF and CAP_PERFMON
/// (Debian trixie's dockerd 26), with exactly the compose file's
/// capabilities (less SYS_RESOURCE, which this sandbox's bounding set
/// lacks: see `grantable_caps`) and Docker's default seccomp profile: no
/// `seccomp=` option, so the engine's built-in profile filters the agent's
/// syscalls, bpf(2) and perf_event_open(2) among them.
#[test]
fn image_under_an_engine_that_knows_cap_bpf_with_the_default_seccomp_profile() {
    let engine = Engine::start("deploy");
    let version = engine.version();
    let major: u32 = version.split('.').next().unwrap().parse().unwrap();
    assert!(major >= 23, "trixie's dockerd is {version}; engines before 23.0 do not know CAP_BPF");
    let security = engine.docker_ok(&["info", "--format", "{{json .SecurityOptions}}"]);
    assert!(security.contains("name=seccomp,profile=builtin"), "the engine's seccomp profile: {security}");
    let image = image_in(&engine);
    let caps = grantable_caps();
    let port = free_port();
    let data = TempDir::new("deploy-engine-data");
    let name = format!("engines-vantage-{}", std::process::id());
    let out = engine.docker(
        &compose_run_args(&name, &caps, port, data.path(), &engine.socket)
            .iter()
            .map(String::as_str)
            .chain([image.as_str()])
            .collect::<Vec<_>>(),
    );
    assert!(
        out.status.success(),
        "dockerd {version} refused the compose capabilities {caps:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logs = || {
        let out = engine.docker(&["logs", &name]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let (metrics, status) = wait_ready(port, &logs);
    assert_host_metrics(&metrics, &status);

    // No seccomp option: the engine's default profile is in force.
    // (dockerd adds label=disable itself for a container in the host's pid
    // namespace.)
    let opts = engine.docker_ok(&["inspect", "-f", "{{json .HostConfig.SecurityOpt}}", &name]);
    assert!(opts.contains(r#""no-new-privileges:true""#) && !opts.contains("seccomp"), "SecurityOpt {opts}");
    let pid = engine.docker_ok(&["inspect", "-f", "{{.State.Pid}}", &name]);
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |key: &str| proc_status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim).unwrap_or("");
    assert_eq!(field("Seccomp:"), "2", "the agent (pid {pid}) runs under a seccomp filter");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(effective_caps(&pid), caps.iter().fold(0u64, |m, c| m | 1 << cap_number(c)), "CapEff of pid {pid}");

    // Every kernel program loaded and attached through bpf(2) under that
    // filter, and counts.
    let programs = status["programs"].as_object().expect("programs in status");
    assert!(!programs.is_empty(), "{status}");
    for (program, p) in programs {
        assert_eq!(
            p["attached"],
            true,
            "{program} not attached under dockerd {version} with {caps:?}: {p}\n{}",
            logs()
        );
        let line = format!("vantage_ebpf_program_up{{program=\"{program}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    assert!(status["sources"]["ebpf"]["series"].as_u64().unwrap() > 0, "{status}");
    eprintln!("dockerd {version}: {} eBPF programs up with {caps:?} and the default seccomp profile", programs.len());

    // The agent's docker source reaches the engine through the mounted
    // socket and finds its own container.
    let own = wait_for(Duration::from_secs(30), || {
        let (_, m) = http_get(&format!("http://127.0.0.1:{port}/metrics"))?;
        m.lines()
            .any(|l| l.starts_with("container_memory_usage_bytes{") && l.contains(&format!("name=\"{name}\"")))
            .then_some(())
    });
    assert!(own.is_some(), "no container_memory_usage_bytes for {name}; logs:\n{}", logs());

    let healthy = wait_for(Duration::from_secs(30), || {
        (engine.docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", &name]) == "healthy").then_some(())
    });
    assert!(healthy.is_some(), "the container never became healthy; logs:\n{}", logs());
}

/// The fallback the README and deploy.sh give for engines that do not know
/// CAP_BPF/CAP_PERFMON (Debian 12's dockerd 20.10 here): SYS_ADMIN in their
/// place, which holds both. That engine's default seccomp profile allows
/// bpf(2) and perf_event_open(2) only with CAP_SYS_ADMIN, so this is the
/// least it can run the kernel programs with.
#[test]
fn image_under_dockerd_20_with_sys_admin_in_place_of_bpf_and_perfmon() {
    let image = image();
    let port = free_port();
    let data = TempDir::new("deploy-sys-admin-data");
    let name = format!("vantage-deploy-sys-admin-{}", std::process::id());
    let mut caps: Vec<String> = grantable_caps().into_iter().filter(|c| c != "BPF" && c != "PERFMON").collect();
    caps.push("SYS_ADMIN".into());
    let out = Command::new("docker")
        .args(compose_run_args(&name, &caps, port, data.path(), Path::new("/var/run/docker.sock")))
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "docker run with {caps:?}: {}", String::from_utf8_lossy(&out.stderr));
    let container = Container(name);
    let logs = || {
        let out = Command::new("docker").args(["logs", &container.0]).output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let (metrics, status) = wait_ready(port, &logs);
    let version = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let inspect = Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &container.0]).output().unwrap();
    let pid = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(proc_status.lines().any(|l| l == "Seccomp:\t2"), "the engine's default seccomp profile applies");
    let programs = status["programs"].as_object().expect("programs in status");
    assert!(!programs.is_empty(), "{status}");
    for (program, p) in programs {
        assert_eq!(p["attached"], true, "{program} not attached under dockerd {version} with {caps:?}: {p}");
        let line = format!("vantage_ebpf_program_up{{program=\"{program}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    eprintln!("dockerd {version}: {} eBPF programs up with {caps:?}", programs.len());
}
