//! `[security]` end to end: the security programs in this kernel, a real
//! dockerd and its busybox containers, events arriving at the wire-format
//! Loki receiver as JSON lines with the container named.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use vantage_tests::docker::{busybox_image, docker};
use vantage_tests::loki::{Entry, Loki};
use vantage_tests::{free_port, http_get, parse_text, vantage_bin, wait_for, Proc, TempDir};

/// Runs this file's tests one at a time. Each agent's programs see every
/// exec on the host: the storm's 100,000 flood the other tests' agents,
/// and their execs would count in the storm agent's drop counter.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Agent {
    proc: Proc,
    port: u16,
}

impl Agent {
    /// Starts the agent and waits until `programs` are up (`a|b`: either).
    fn start(dir: &Path, loki: &Loki, security: &str, programs: &[&str]) -> Agent {
        let config = dir.join("security.toml");
        let text = format!(
            r#"
[agent]
listen_addr = "127.0.0.1:0"
data_dir = "{data}"
external_labels = {{ server_name = "test-host" }}
[node]
enabled = false
[ebpf]
enabled = false
[docker]
enabled = true
container_metrics = false
[loki]
url = "{url}"
batch_wait = "200ms"
min_backoff = "100ms"
max_backoff = "1s"
[security]
enabled = true
{security}
"#,
            data = dir.join("data").display(),
            url = loki.url(),
        );
        std::fs::write(&config, text).unwrap();
        let port = free_port();
        let mut cmd = Command::new(vantage_bin());
        cmd.args(["run", "--config"]).arg(&config).args(["--listen", &format!("127.0.0.1:{port}")]);
        let log = dir.join("vantage.log");
        let proc = Proc::spawn("vantage", cmd, &log);
        let agent = Agent { proc, port };
        // Ready once the programs are up: the events of this test must not
        // race their loading.
        let up = wait_for(Duration::from_secs(30), || {
            let up = |p: &str| agent.metric("vantage_ebpf_program_up", &[("program", p)]) == 1.0;
            programs.iter().all(|any| any.split('|').any(up)).then_some(())
        });
        up.unwrap_or_else(|| panic!("security programs not up; see {}", log.display()));
        agent
    }

    /// The sum of the self-metric series of `name` that carry every one of
    /// `labels` (in whatever order they are rendered).
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Some((_, text)) = http_get(&format!("http://127.0.0.1:{}/metrics", self.port)) else { return -1.0 };
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        parse_text(&text)
            .into_iter()
            .filter(|(s, _)| s.split('{').next() == Some(name) && wanted.iter().all(|w| s.contains(w.as_str())))
            .map(|(_, v)| v)
            .sum()
    }

    fn rss_kib(&self) -> u64 {
        vantage_tests::status_kib(self.proc.pid(), "VmRSS:")
    }
}

/// A busybox container on the host's network, removed when dropped.
struct Container(String);

impl Container {
    fn run(name: &str, labels: &[&str]) -> Container {
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
        let mut args = vec!["run", "-d", "--name", name, "--network", "host"];
        for l in labels {
            args.extend(["-l", l]);
        }
        args.extend([busybox_image(), "/bin/sleep", "600"]);
        docker(&args);
        Container(name.to_string())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn json(e: &Entry) -> Value {
    serde_json::from_str(&e.line).unwrap_or_else(|err| panic!("not JSON ({err}): {}", e.line))
}

/// The entries of `kind` whose JSON satisfies `pick`.
fn events(loki: &Loki, kind: &str, pick: impl Fn(&Value) -> bool) -> Vec<(Entry, Value)> {
    loki.entries()
        .into_iter()
        .filter(|e| e.labels.get("kind").map(String::as_str) == Some(kind))
        .map(|e| {
            let v = json(&e);
            (e, v)
        })
        .filter(|(_, v)| pick(v))
        .collect()
}

fn args_of(v: &Value) -> Vec<String> {
    v["args"].as_array().map(|a| a.iter().map(|x| x.as_str().unwrap_or("").to_string()).collect()).unwrap_or_default()
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// `docker exec` of a shell, a connect to a loopback port, a listener and
/// the expectations: each arrives once, as its kind, naming the container.
#[test]
fn container_exec_connect_and_listen_arrive_as_events_naming_the_container() {
    let _one_at_a_time = serial();
    let dir = TempDir::new("security-events");
    let loki = Loki::start();
    let name = unique("vt-sec");
    let _c = Container::run(&name, &["com.example.role=wallet"]);
    let listen_port = free_port();
    let config = format!(
        r#"
[[security.expect]]
container = "^{name}$"
executables = ["/bin/sh", "sleep", "/bin/busybox"]
connect_ports = [1]
listen_ports = [{listen_port}]
"#
    );
    let agent = Agent::start(dir.path(), &loki, &config, &["security_exec", "security_sock"]);
    let started = Instant::now();
    let image = busybox_image();

    // A shell, as uid 1234, with a marker only this exec carries.
    let marker = unique("marker");
    docker(&["exec", "-u", "1234:1234", &name, "/bin/sh", "-c", &format!("echo {marker} > /dev/null")]);
    // (The docker CLI's own exec on the host carries the marker too.)
    let mine = |v: &Value| v["container"]["name"] == name.as_str() && args_of(v).iter().any(|a| a.contains(&marker));
    wait_for(Duration::from_secs(15), || Some(events(&loki, "exec", mine)).filter(|e| !e.is_empty()))
        .unwrap_or_else(|| panic!("no exec event; Loki has {:?}", loki.entries().iter().take(5).collect::<Vec<_>>()));
    std::thread::sleep(Duration::from_millis(500));
    let exec = events(&loki, "exec", mine);
    assert_eq!(exec.len(), 1, "one exec event: {exec:?}");
    let (entry, v) = &exec[0];
    assert_eq!(v["executable"], "/bin/sh");
    assert_eq!(args_of(v), vec!["/bin/sh".to_string(), "-c".into(), format!("echo {marker} > /dev/null")]);
    assert_eq!((v["uid"].as_u64(), v["gid"].as_u64()), (Some(1234), Some(1234)));
    assert_eq!(v["container"]["name"], name.as_str());
    assert_eq!(v["container"]["image"], image);
    assert_eq!(v["container"]["labels"]["com.example.role"], "wallet");
    assert!(v.get("unexpected").is_none(), "/bin/sh is expected: {v}");
    assert_eq!(entry.labels.get("container"), Some(&name));
    assert_eq!(entry.labels.get("job").map(String::as_str), Some("security"));
    assert_eq!(entry.labels.get("server_name").map(String::as_str), Some("test-host"));
    assert_eq!(entry.labels.get("unexpected"), None);
    // The kernel's clock, in Unix time: within this test's run.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let age = Duration::from_nanos((now - entry.timestamp_ns).max(0) as u64);
    assert!(entry.timestamp_ns <= now && age <= started.elapsed(), "timestamp {} is {age:?} old", entry.timestamp_ns);
    assert_eq!(v["time_unix_nano"].as_i64(), Some(entry.timestamp_ns));

    // An executable the expectations do not list.
    docker(&["exec", &name, "/bin/cat", "/dev/null"]);
    let cat = |v: &Value| v["executable"] == "/bin/cat" && v["container"]["name"] == name.as_str();
    let odd = wait_for(Duration::from_secs(15), || Some(events(&loki, "exec", cat)).filter(|e| !e.is_empty()))
        .expect("the cat exec event");
    assert_eq!(odd.len(), 1, "{odd:?}");
    assert_eq!(odd[0].0.labels.get("unexpected").map(String::as_str), Some("true"));
    assert_eq!(odd[0].1["unexpected"], true);

    // A connect from the container to a loopback port of the host.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
    });
    let out = Command::new("docker")
        .args(["exec", &name, "/bin/busybox", "nc", "-w", "2", "127.0.0.1", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "nc: {}", String::from_utf8_lossy(&out.stderr));
    server.join().unwrap();
    let dest = format!("127.0.0.1:{port}");
    let to_port = |v: &Value| v["destination"] == dest.as_str();
    let connect =
        wait_for(Duration::from_secs(15), || Some(events(&loki, "connect", to_port)).filter(|e| !e.is_empty()))
            .expect("the connect event");
    assert_eq!(connect.len(), 1, "{connect:?}");
    let (entry, v) = &connect[0];
    assert_eq!(v["container"]["name"], name.as_str());
    assert_eq!(v["destination_port"].as_u64(), Some(port as u64));
    assert_eq!(v["comm"], "busybox");
    // Port `port` is not among the expected destination ports (only 1).
    assert_eq!(entry.labels.get("unexpected").map(String::as_str), Some("true"));
    // The test's own accept of it: a host socket, no container.
    let from_nc = |v: &Value| v["source"] == dest.as_str();
    let accept = wait_for(Duration::from_secs(15), || Some(events(&loki, "accept", from_nc)).filter(|e| !e.is_empty()))
        .expect("the accept event");
    assert!(
        accept.iter().all(|(e, v)| v.get("container").is_none() && !e.labels.contains_key("container")),
        "{accept:?}"
    );

    // A listener in the container, expected; then one on another port.
    for (port, expected) in [(listen_port, true), (free_port(), false)] {
        docker(&["exec", "-d", &name, "/bin/busybox", "nc", "-l", "-p", &port.to_string()]);
        // (free_port's own probe listened on it too, from this process.)
        let on = |v: &Value| {
            v["port"].as_u64() == Some(port as u64)
                && v["state"] == "listening"
                && v["container"]["name"] == name.as_str()
        };
        let listen = wait_for(Duration::from_secs(15), || Some(events(&loki, "listen", on)).filter(|e| !e.is_empty()))
            .unwrap_or_else(|| panic!("no listen event for port {port}"));
        assert_eq!(listen.len(), 1, "{listen:?}");
        let (entry, v) = &listen[0];
        assert_eq!(v["comm"], "busybox", "{v}");
        assert_eq!(!entry.labels.contains_key("unexpected"), expected, "port {port}: {v}");
    }

    // The counters agree with what arrived.
    let listens = agent.metric("ebpf_security_events_total", &[("container", &name), ("kind", "listen")]);
    assert_eq!(listens, 2.0, "listen events of {name}");
    let odd = agent.metric("ebpf_security_unexpected_events_total", &[("container", &name), ("kind", "exec")]);
    assert_eq!(odd, 1.0, "unexpected exec events of {name}");
}

/// A set-user-ID root executable run by uid 1234 in a container: one
/// credentials event, judged unexpected; the same user's plain exec, and
/// root's, gain nothing and send none.
#[test]
fn a_setuid_exec_in_a_container_arrives_as_credentials_gained() {
    let _one_at_a_time = serial();
    let dir = TempDir::new("security-creds");
    let loki = Loki::start();
    let name = unique("vt-creds");
    let _c = Container::run(&name, &[]);
    // Before the agent starts: root's copy and chmod gain nothing either.
    docker(&["exec", &name, "/bin/sh", "-c", "mkdir -p /tmp && cp /bin/busybox /tmp/true && chmod 4755 /tmp/true"]);
    let config =
        format!("kinds = [\"credentials\"]\n[[security.expect]]\ncontainer = \"^{name}$\"\ncredentials = false\n");
    // fentry where the kernel allows it, the exec tracepoint where not.
    let agent = Agent::start(dir.path(), &loki, &config, &["security_creds|security_exec_creds"]);
    docker(&["exec", "-u", "1234:1234", &name, "/bin/true"]);
    docker(&["exec", &name, "/bin/true"]);
    docker(&["exec", "-u", "1234:1234", &name, "/tmp/true"]);
    let mine = |v: &Value| v["container"]["name"] == name.as_str();
    wait_for(Duration::from_secs(15), || Some(events(&loki, "credentials", mine)).filter(|e| !e.is_empty()))
        .unwrap_or_else(|| panic!("no credentials event; Loki has {:?}", loki.entries()));
    std::thread::sleep(Duration::from_millis(500));
    let creds = events(&loki, "credentials", mine);
    assert_eq!(creds.len(), 1, "one credentials event (and not one per program): {creds:?}");
    let (entry, v) = &creds[0];
    assert_eq!(v["comm"], "true", "{v}");
    assert_eq!((v["old"]["uid"].as_u64(), v["old"]["gid"].as_u64()), (Some(1234), Some(1234)), "{v}");
    assert_eq!((v["new"]["uid"].as_u64(), v["new"]["euid"].as_u64()), (Some(1234), Some(0)), "{v}");
    assert_eq!(v["new"]["egid"].as_u64(), Some(1234), "{v}");
    assert_ne!(v["new"]["cap_effective"], "0x0", "a setuid-root exec gains capabilities: {v}");
    match v["via"].as_str() {
        Some("commit_creds") => assert_eq!(v["old"]["euid"].as_u64(), Some(1234), "{v}"),
        Some("exec") => assert!(v["old"].get("euid").is_none(), "exec cannot know the old euid: {v}"),
        other => panic!("via {other:?}: {v}"),
    }
    assert_eq!(entry.labels.get("unexpected").map(String::as_str), Some("true"));
    let odd = agent.metric("ebpf_security_unexpected_events_total", &[("container", &name), ("kind", "credentials")]);
    assert_eq!(odd, 1.0);
}

/// A cgroup v2 directory, removed when dropped (once its processes are gone).
struct Cgroup(std::path::PathBuf);

impl Cgroup {
    fn create(name: &str) -> Cgroup {
        let path = Path::new("/sys/fs/cgroup").join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        Cgroup(path)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A 129-byte static x86-64 ELF executable that calls exit(0): the
/// cheapest exec there is (no dynamic loader, one page), so the storm
/// measures the kernel and the agent rather than a C library's start-up.
fn exit0_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    // xor edi, edi; mov eax, 60 (exit); syscall
    const CODE: [u8; 9] = [0x31, 0xff, 0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05];
    const HEADERS: u64 = 64 + 56;
    let size = HEADERS + CODE.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // e_entry: the code
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [64u16, 56, 1, 0, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        elf.extend_from_slice(&half.to_le_bytes());
    }
    // One PT_LOAD of the whole file, read and execute.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    for word in [0, BASE, BASE, size, size, 0x1000] {
        // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&CODE);
    assert_eq!(elf.len() as u64, size);
    elf
}

/// A storm of execs: what the rate limit lets through arrives, the rest is
/// counted in the kernel, none goes missing; a pace below the limit (in a
/// container) loses nothing; the agent's memory stays flat.
#[test]
fn an_exec_storm_is_rate_limited_and_every_exec_is_sent_or_counted() {
    let _one_at_a_time = serial();
    let dir = TempDir::new("security-storm");
    let loki = Loki::start();
    let name = unique("vt-storm");
    let _c = Container::run(&name, &[]);
    const LIMIT: u64 = 200;
    let agent =
        Agent::start(dir.path(), &loki, &format!("kinds = [\"exec\"]\nrate_limit = {LIMIT}\n"), &["security_exec"]);
    let dropped = || agent.metric("vantage_security_events_dropped_total", &[("kind", "exec")]);
    let trues = |loki: &Loki| {
        events(loki, "exec", |v| v["executable"] == "/bin/true" && v["container"]["name"] == name.as_str()).len() as u64
    };

    // Below the limit: 100 execs at about 50 a second (busybox's sleep may
    // be an exec too: at most 100 a second in all), every one arrives.
    let before = dropped();
    docker(&["exec", &name, "/bin/sh", "-c", "i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); sleep 0.02; done"]);
    wait_for(Duration::from_secs(20), || (trues(&loki) >= 100).then_some(())).expect("100 paced execs");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(trues(&loki), 100);
    assert_eq!(dropped(), before, "nothing dropped below the limit");

    // The storm: 100,000 execs of a program that exits at once, from two
    // threads in a cgroup of their own, as fast as this machine forks.
    let rss_before = agent.rss_kib();
    const STORM: u64 = 100_000;
    let exit0 = dir.path().join("exit0");
    std::fs::write(&exit0, exit0_elf()).unwrap();
    std::fs::set_permissions(&exit0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let executable = exit0.to_str().unwrap().to_string();
    let cgroup = Cgroup::create(&format!("vantage-storm-{}", std::process::id()));
    let started = Instant::now();
    let storm = Command::new(env!("CARGO_BIN_EXE_exec_storm"))
        .arg(&cgroup.0)
        .arg(&exit0)
        .args([STORM.to_string(), "2".into()])
        .status()
        .unwrap();
    assert!(storm.success(), "exec_storm: {storm}");
    let took = started.elapsed();
    // Events of the storm that arrived, each counted once (a push the
    // agent resent after a slow answer arrives twice), and all arrivals.
    let exits = |loki: &Loki| {
        let got = events(loki, "exec", |v| v["executable"] == executable.as_str());
        let unique: std::collections::HashSet<(i64, u64)> =
            got.iter().map(|(e, v)| (e.timestamp_ns, v["pid"].as_u64().unwrap_or(0))).collect();
        (unique.len() as u64, got.len() as u64)
    };
    // Sent plus dropped is every exec; the sent ones arrive.
    let settled = wait_for(Duration::from_secs(30), || {
        let ((sent, arrived), lost) = (exits(&loki), (dropped() - before) as u64);
        (sent + lost == STORM).then_some((sent, arrived, lost))
    });
    let (sent, arrived, lost) = settled
        .unwrap_or_else(|| panic!("sent {:?} (unique, all) + dropped {} != {STORM}", exits(&loki), dropped() - before));
    eprintln!("storm: {} duplicates", arrived - sent);
    eprintln!(
        "storm: {STORM} execs in {:.1} s ({:.0}/s): {sent} sent, {lost} dropped by the limit of {LIMIT}/s",
        took.as_secs_f64(),
        STORM as f64 / took.as_secs_f64()
    );
    // At most the limit per second of the storm, the first and the last
    // window each counted whole.
    let windows = took.as_secs() + 2;
    assert!(sent <= LIMIT * windows, "{sent} sent in {windows} windows of {LIMIT}");
    assert!(lost > 0, "{STORM} execs in {took:?} never reached {LIMIT}/s?");
    let ring_full = agent.metric("vantage_security_events_dropped_total", &[("kind", "exec"), ("reason", "ring_full")]);
    assert_eq!(ring_full, 0.0, "the agent kept up with {LIMIT}/s");
    let rss_after = agent.rss_kib();
    assert!(rss_after <= rss_before + 2048, "RSS grew from {rss_before} to {rss_after} KiB");
}
