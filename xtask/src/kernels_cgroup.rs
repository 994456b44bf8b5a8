//! `cargo xtask cgroup-v2`: container metrics (cAdvisor's names) and the
//! eBPF `container` label on a real cgroup v2 hierarchy. This host mounts
//! cgroup v1 only, so the check boots Debian kernels under qemu (the
//! kernel matrix's [`vm`] harness), mounts the unified hierarchy there and
//! makes two containers' cgroups as runc does under Docker's two cgroup
//! drivers: `system.slice/docker-<id>.scope` (systemd) and `docker/<id>`
//! (cgroupfs), with the cpu, memory, io and pids controllers enabled
//! through `cgroup.subtree_control` and busy processes inside.
//!
//! No dockerd runs in the guest: it needs containerd, runc (trixie's wants
//! a newer glibc than this host's), a storage driver and an image, which
//! would multiply the initramfs and the TCG boot time. The agent's Docker
//! inventory is served instead by a small responder on a unix socket (this
//! program, `docker-api-responder`) that answers the three calls
//! `vantage collect --once` makes (network list, container list, container
//! inspect) with the Engine API 1.45 JSON dockerd 26 returns for such
//! containers, and the containers' `config.v2.json` is written where
//! dockerd keeps it (the eBPF label's names come from there).
//!
//! The guest reads each cgroup's `cpu.stat`, `memory.current` and
//! `memory.stat` just before and just after `vantage collect --once`; the
//! agent's values must lie between the two readings (cumulative CPU time
//! exactly; memory within 256 KiB of them, for the kernel's own
//! allocations in between), and run-queue latency must carry each
//! container's name in its `container` label.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::vm::{self, Boot, Initramfs};

/// The kernels booted by default: Debian 12's (most of the fleet) and
/// Debian 13's.
const DEFAULT_KERNELS: &[&str] = &["bookworm", "trixie"];

/// Memory may move this much between the guest's readings and the agent's
/// (slab and page-table pages of the shells, the agent reading /proc).
const MEMORY_SLACK: f64 = 256.0 * 1024.0;

/// A container the guest makes.
struct Fake {
    id: &'static str,
    name: &'static str,
    /// The cgroup path as runc makes it under this cgroup driver.
    cgroup: &'static str,
    /// MiB written to a tmpfs file from inside the cgroup (charged to it as
    /// file/shmem pages).
    tmpfs_mib: u32,
}

const CONTAINERS: &[Fake] = &[
    Fake {
        id: "3f4c1b2a9d8e7f6051a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8",
        name: "wallet-api",
        cgroup: "/system.slice/docker-3f4c1b2a9d8e7f6051a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a8.scope",
        tmpfs_mib: 8,
    },
    Fake {
        id: "9a8b7c6d5e4f30211f2e3d4c5b6a79880a1b2c3d4e5f60718293a4b5c6d7e8f9",
        name: "kyc-worker",
        cgroup: "/docker/9a8b7c6d5e4f30211f2e3d4c5b6a79880a1b2c3d4e5f60718293a4b5c6d7e8f9",
        tmpfs_mib: 4,
    },
];

/// The Docker socket in the guest.
const SOCKET: &str = "/run/docker.sock";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut kernels: Vec<String> = DEFAULT_KERNELS.iter().map(|s| s.to_string()).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => kernels = vec![it.next().context("--only needs a kernel name")?.clone()],
            other => bail!("unknown argument {other:?}; usage: cargo xtask cgroup-v2 [--only <kernel>]"),
        }
    }
    let agent = crate::kernels::agent_binary(false)?;
    let responder = std::env::current_exe().context("the xtask binary (the guest's Docker API responder)")?;
    let mut failed = Vec::new();
    for name in &kernels {
        let suite = vm::SUITES
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no kernel named {name:?} in the matrix"))?;
        match check(suite, &agent, &responder) {
            Ok(summary) => println!("cgroup-v2 {name}: {summary}"),
            Err(e) => {
                eprintln!("cgroup-v2 {name}: {e:#}");
                failed.push(name.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!("cgroup v2 checks failed on {}", failed.join(", "));
    }
    Ok(())
}

fn check(suite: &vm::Suite, agent: &Path, responder: &Path) -> anyhow::Result<String> {
    let kernel = vm::fetch(suite)?;
    let mut initramfs = Initramfs::with_busybox()?;
    initramfs.binary("vantage", agent)?;
    initramfs.binary("xtask", responder)?;
    initramfs.file("vantage.toml", agent_config(), 0o644);
    initramfs.file("docker-api/networks.json", networks_json(), 0o644);
    initramfs.file("docker-api/containers.json", list_json(), 0o644);
    for c in CONTAINERS {
        // The pid is known only in the guest: the init script fills it in.
        initramfs.file(&format!("docker-api/containers/{}.json", c.id), inspect_json(c), 0o644);
        initramfs.file(&format!("var/lib/docker/containers/{}/config.v2.json", c.id), config_v2_json(c), 0o644);
    }
    initramfs.file("init", init_script(), 0o755);
    let image = initramfs.write_to(&vm::cache_dir().join(format!("{}-cgroup-v2.cpio", suite.name)))?;
    let booted = vm::boot(&kernel, &image, &Boot { cmdline: "quiet loglevel=3".into(), ..Boot::default() })?;
    let console = &booted.console;
    let context = || format!("console of {} ({}):\n{console}", suite.name, kernel.release);
    let metrics = vm::between(console, "metrics").with_context(context)?;
    let samples = parse(metrics);
    let mut problems = Vec::new();
    let mut summary = Vec::new();
    for c in CONTAINERS {
        let before = Reading::parse(vm::between(console, &format!("{} before", c.name)).with_context(context)?)
            .with_context(|| format!("{}: the guest's first reading", c.name))?;
        let after = Reading::parse(vm::between(console, &format!("{} after", c.name)).with_context(context)?)
            .with_context(|| format!("{}: the guest's second reading", c.name))?;
        let pid = vm::between(console, &format!("{} pid", c.name)).with_context(context)?.trim().to_string();
        let labels = format!(r#"id="{}",image="exchange/{}:1.4.2",name="{}""#, c.cgroup, c.name, c.name);
        let get = |metric: &str| {
            samples
                .iter()
                .find(|(s, _)| s.starts_with(&format!("{metric}{{")) && labels.split(',').all(|l| s.contains(l)))
                .map(|(_, v)| *v)
        };
        // The agent's value of `metric`, which must lie in [low, high].
        let mut within = |metric: &str, low: f64, high: f64| match get(metric) {
            Some(v) if v >= low && v <= high => v,
            Some(v) => {
                problems.push(format!("{}: {metric} {v} outside the cgroup's [{low}, {high}]", c.name));
                v
            }
            None => {
                problems.push(format!("{}: no {metric}{{{labels}}}", c.name));
                f64::NAN
            }
        };
        // cpu.stat is in microseconds, the agent's counters in seconds. A
        // counter read between the two readings lies between them: no slack.
        let cpu = within("container_cpu_usage_seconds_total", before.cpu_usage_usec / 1e6, after.cpu_usage_usec / 1e6);
        within("container_cpu_user_seconds_total", before.cpu_user_usec / 1e6, after.cpu_user_usec / 1e6);
        within("container_cpu_system_seconds_total", before.cpu_system_usec / 1e6, after.cpu_system_usec / 1e6);
        let gauge = |a: f64, b: f64| (a.min(b) - MEMORY_SLACK, a.max(b) + MEMORY_SLACK);
        let (l, h) = gauge(before.memory_current, after.memory_current);
        let mem = within("container_memory_usage_bytes", l, h);
        let (l, h) = gauge(before.file, after.file);
        let cache = within("container_memory_cache", l, h);
        let (l, h) = gauge(before.anon, after.anon);
        within("container_memory_rss", l, h);
        let (l, h) = gauge(before.memory_current - before.inactive_file, after.memory_current - after.inactive_file);
        within("container_memory_working_set_bytes", l, h);
        // The busy shell and its sleep.
        within("container_processes", 2.0, 2.0);
        // No memory.max: unlimited, which cAdvisor reports as 0.
        within("container_spec_memory_limit_bytes", 0.0, 0.0);
        // The tmpfs file is charged to the container: its cache holds it.
        let written = f64::from(c.tmpfs_mib) * 1024.0 * 1024.0;
        if cache < written {
            problems.push(format!("{}: container_memory_cache {cache} below the {written} bytes written", c.name));
        }
        // The busy loop ran on the one vCPU before the first reading.
        if before.cpu_usage_usec < 100_000.0 {
            problems.push(format!("{}: only {} us of CPU before the collection", c.name, before.cpu_usage_usec));
        }
        // The eBPF label: the busy shell waited on the run queue behind the
        // other container's, under this container's cgroup.
        let label = format!(r#"container="{}""#, c.name);
        let runq: f64 = samples
            .iter()
            .filter(|(s, _)| s.starts_with("ebpf_runqueue_latency_seconds_count{") && s.contains(&label))
            .map(|(_, v)| v)
            .sum();
        if runq < 1.0 {
            problems.push(format!("{}: no ebpf_runqueue_latency_seconds_count{{{label}}}", c.name));
        }
        summary.push(format!(
            "{} (pid {pid}, {}): cpu {cpu:.3} s, memory {:.1} MiB, run-queue waits {runq}",
            c.name,
            c.cgroup.split('/').nth(1).unwrap_or_default(),
            mem / 1048576.0
        ));
    }
    if !problems.is_empty() {
        let log = vm::between(console, "log").unwrap_or_default();
        bail!("{}\nagent log:\n{log}\nmetrics:\n{metrics}", problems.join("\n"));
    }
    Ok(format!("kernel {}, {:.1} s: {}", kernel.release, booted.elapsed.as_secs_f64(), summary.join("; ")))
}

/// The agent in the guest: Docker metrics through the responder, eBPF with
/// the container label; nothing else.
fn agent_config() -> String {
    format!("[node]\nenabled = false\n[docker]\nhost = \"unix://{SOCKET}\"\ninstance = \"vm\"\n[ebpf]\ncontainer_label = true\n")
}

/// The guest's /init.
fn init_script() -> String {
    let mut s = String::from(
        r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up
# The unified hierarchy, with the controllers runc needs delegated down to
# the container cgroups, as systemd (or dockerd's cgroupfs driver) does.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo '+cpu +memory +io +pids' > /sys/fs/cgroup/cgroup.subtree_control
for parent in system.slice docker; do
  mkdir -p /sys/fs/cgroup/$parent
  echo '+cpu +memory +io +pids' > /sys/fs/cgroup/$parent/cgroup.subtree_control
done
echo "controllers: $(cat /sys/fs/cgroup/system.slice/cgroup.subtree_control)"
"#,
    );
    for c in CONTAINERS {
        let cg = format!("/sys/fs/cgroup{}", c.cgroup);
        // The container's init joins its cgroup first (runc's order), then
        // writes the tmpfs file, starts a sleep and spins.
        s.push_str(&format!(
            r#"mkdir -p {cg} /tmp/{name}
sh -c 'echo $$ > {cg}/cgroup.procs
dd if=/dev/zero of=/tmp/{name}/data bs=1048576 count={mib} 2>/dev/null
sleep 600 &
while :; do :; done' &
pid=$!
{mark_pid}sed -i "s/\"Pid\": 0,/\"Pid\": $pid,/" /docker-api/containers/{id}.json
"#,
            name = c.name,
            mib = c.tmpfs_mib,
            id = c.id,
            mark_pid = vm::marked(&format!("{} pid", c.name), "echo $pid"),
        ));
    }
    s.push_str(&format!(
        r#"/xtask docker-api-responder /docker-api {SOCKET} 2>/tmp/responder.log &
i=0
until [ -S {SOCKET} ]; do i=$((i+1)); [ $i -gt 100 ] && echo 'no responder socket' && break; sleep 0.1; done
# Let the busy loops run up some CPU time and the tmpfs writes settle.
sleep 2
"#
    ));
    let read = |c: &Fake| {
        format!("cat /sys/fs/cgroup{cg}/cpu.stat /sys/fs/cgroup{cg}/memory.stat; echo memory.current $(cat /sys/fs/cgroup{cg}/memory.current)", cg = c.cgroup)
    };
    for c in CONTAINERS {
        s.push_str(&vm::marked(&format!("{} before", c.name), &read(c)));
    }
    s.push_str(&vm::marked(
        "metrics",
        "NO_COLOR=1 /vantage --log-level info collect --once --config /vantage.toml 2>/tmp/vantage.log",
    ));
    for c in CONTAINERS {
        s.push_str(&vm::marked(&format!("{} after", c.name), &read(c)));
    }
    s.push_str(&vm::marked("log", "cat /tmp/vantage.log /tmp/responder.log"));
    s.push_str("poweroff -f\n");
    s
}

/// The figures the check compares, from one reading of a cgroup's files.
#[derive(Debug, Default)]
struct Reading {
    cpu_usage_usec: f64,
    cpu_user_usec: f64,
    cpu_system_usec: f64,
    memory_current: f64,
    anon: f64,
    file: f64,
    inactive_file: f64,
}

impl Reading {
    fn parse(text: &str) -> anyhow::Result<Reading> {
        let value = |key: &str| -> anyhow::Result<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
                .with_context(|| format!("no {key} in:\n{text}"))?
                .trim()
                .parse()
                .with_context(|| format!("{key} is not a number in:\n{text}"))
        };
        Ok(Reading {
            cpu_usage_usec: value("usage_usec")?,
            cpu_user_usec: value("user_usec")?,
            cpu_system_usec: value("system_usec")?,
            memory_current: value("memory.current")?,
            anon: value("anon")?,
            file: value("file")?,
            inactive_file: value("inactive_file")?,
        })
    }
}

fn parse(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

// Engine API 1.45 bodies, in the shape and field names dockerd 26.1
// returns them (trimmed of fields no client here reads: mounts, graph
// driver, log paths).

const HOST_NETWORK: &str = "7118a0ef5ce7239282f28662b7f277b86976cc823ce8664414cdf1676b19b2b7";

fn networks_json() -> String {
    format!(
        r#"[{{"Name":"host","Id":"{HOST_NETWORK}","Created":"2026-12-02T03:20:48.156387181Z","Scope":"local","Driver":"host","EnableIPv6":false,"IPAM":{{"Driver":"default","Options":null,"Config":null}},"Internal":false,"Attachable":false,"Ingress":false,"ConfigFrom":{{"Network":""}},"ConfigOnly":false,"Containers":{{}},"Options":{{}},"Labels":{{}}}}]"#
    )
}

fn endpoint_json() -> String {
    format!(
        r#"{{"host":{{"IPAMConfig":null,"Links":null,"Aliases":null,"MacAddress":"","NetworkID":"{HOST_NETWORK}","EndpointID":"f8dda4d8412ec7ec6ff0ce86775437c2c7a6cd82ed1f6b8ad7891f8d7cde4823","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DriverOpts":null,"DNSNames":null}}}}"#
    )
}

fn list_json() -> String {
    let items: Vec<String> = CONTAINERS
        .iter()
        .map(|c| {
            format!(
                r#"{{"Id":"{id}","Names":["/{name}"],"Image":"exchange/{name}:1.4.2","ImageID":"sha256:e1b65da50e7504a399f59b9376395bcdf27492955eeb222e53e3a1f48d14ddaf","Command":"sh","Created":1796182567,"Ports":[],"Labels":{{"team":"platform"}},"State":"running","Status":"Up 2 seconds","HostConfig":{{"NetworkMode":"host"}},"NetworkSettings":{{"Networks":{endpoint}}},"Mounts":[]}}"#,
                id = c.id,
                name = c.name,
                endpoint = endpoint_json(),
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// The inspect body; `"Pid": 0,` is replaced with the guest's pid.
fn inspect_json(c: &Fake) -> String {
    format!(
        r#"{{"Id":"{id}","Created":"2026-12-02T03:36:07.872540228Z","Path":"sh","Args":[],"State":{{"Status":"running","Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,"Dead":false,"Pid": 0,"ExitCode":0,"Error":"","StartedAt":"2026-12-02T03:36:09.267523081Z","FinishedAt":"0001-01-01T00:00:00Z"}},"Image":"sha256:e1b65da50e7504a399f59b9376395bcdf27492955eeb222e53e3a1f48d14ddaf","Name":"/{name}","RestartCount":0,"Driver":"overlay2","Platform":"linux","HostConfig":{{"NetworkMode":"host","CgroupnsMode":"private","Cgroup":"","CgroupParent":"","PidMode":"","Privileged":false,"Memory":0,"CpuShares":0,"CpuQuota":0,"CpuPeriod":0,"Runtime":"runc"}},"Config":{{"Hostname":"vm","Domainname":"","User":"","Tty":false,"Env":null,"Cmd":["sh"],"Image":"exchange/{name}:1.4.2","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{{"team":"platform"}}}},"NetworkSettings":{{"Bridge":"","SandboxID":"45aeb0b10aa7fd40826daec5893e1c8a1bd8481fa373b85b00d49f1592543de1","SandboxKey":"/var/run/docker/netns/default","Ports":{{}},"HairpinMode":false,"EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"MacAddress":"","Networks":{endpoint}}}}}"#,
        id = c.id,
        name = c.name,
        endpoint = endpoint_json(),
    )
}

/// The part of dockerd's state file the eBPF container label reads.
fn config_v2_json(c: &Fake) -> String {
    format!(r#"{{"ID":"{}","Name":"/{}","Driver":"overlay2","State":{{"Running":true}}}}"#, c.id, c.name)
}

/// `xtask docker-api-responder <dir> <socket>`: serves the Engine API calls
/// the agent makes from the files in `dir` (`networks.json`,
/// `containers.json`, `containers/<id>.json`) on the unix socket, HTTP/1.1
/// with keep-alive, one thread per connection. `/events` is answered with
/// an open stream that never sends an event.
pub fn responder(args: &[String]) -> anyhow::Result<()> {
    let [dir, socket] = args else { bail!("usage: xtask docker-api-responder <dir> <socket>") };
    let dir = PathBuf::from(dir);
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).with_context(|| format!("bind {socket}"))?;
    for stream in listener.incoming() {
        let stream = stream.context("accept")?;
        let dir = dir.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, &dir) {
                eprintln!("docker-api-responder: {e:#}");
            }
        });
    }
    Ok(())
}

fn serve(stream: UnixStream, dir: &Path) -> anyhow::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let mut parts = request.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        eprintln!("docker-api-responder: {method} {target}");
        let path = target.split('?').next().unwrap_or("");
        // Clients prefix the API version (/v1.45/...); dockerd accepts both.
        let path = match path.strip_prefix("/v1.") {
            Some(rest) => rest.find('/').map_or("", |i| &rest[i..]),
            None => path,
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let file = match (method, segments.as_slice()) {
            ("GET", ["_ping"]) => {
                respond(&mut out, 200, "text/plain; charset=utf-8", b"OK")?;
                continue;
            }
            ("GET", ["events"]) => {
                // Headers only, then silence: the stream stays open.
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nApi-Version: 1.45\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                )?;
                out.flush()?;
                loop {
                    std::thread::park();
                }
            }
            ("GET", ["networks"]) => dir.join("networks.json"),
            ("GET", ["containers", "json"]) => dir.join("containers.json"),
            ("GET", ["containers", id, "json"]) => dir.join("containers").join(format!("{id}.json")),
            _ => {
                respond(&mut out, 404, "application/json", br#"{"message":"page not found"}"#)?;
                continue;
            }
        };
        match std::fs::read(&file) {
            Ok(body) => respond(&mut out, 200, "application/json", &body)?,
            Err(_) => {
                let id = segments.get(1).unwrap_or(&"");
                respond(
                    &mut out,
                    404,
                    "application/json",
                    format!(r#"{{"message":"No such container: {id}"}}"#).as_bytes(),
                )?
            }
        }
    }
}

fn respond(out: &mut UnixStream, status: u16, content_type: &str, body: &[u8]) -> anyhow::Result<()> {
    let reason = if status == 200 { "OK" } else { "Not Found" };
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nApi-Version: 1.45\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    out.write_all(body)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_takes_each_key_whole() {
        // As the guest prints it: cpu.stat, memory.stat (a subset), then
        // memory.current; `file_mapped` and `anon_thp` must not be taken
        // for `file` and `anon`.
        let text = "usage_usec 13289000\nuser_usec 13001000\nsystem_usec 288000\nnr_periods 0\n\
                    anon_thp 0\nanon 1245184\nfile_mapped 0\nfile 8388608\ninactive_file 8192\n\
                    memory.current 9830400\n";
        let r = Reading::parse(text).unwrap();
        assert_eq!((r.cpu_usage_usec, r.cpu_user_usec, r.cpu_system_usec), (13289000.0, 13001000.0, 288000.0));
        assert_eq!((r.anon, r.file, r.inactive_file, r.memory_current), (1245184.0, 8388608.0, 8192.0, 9830400.0));
        let err = Reading::parse("usage_usec 1\n").unwrap_err().to_string();
        assert!(err.contains("no user_usec"), "{err}");
    }
}
