//! `cargo xtask bench`: Vantage against the tools users run today, one setup
//! after the other in the same run, all pushing to one receiving Prometheus.
//!
//! For each setup: CPU seconds (user + system time of every process of the
//! setup over the measured window, counted by a cgroup of its own: see
//! `cpu.rs`), peak and final RSS, samples delivered
//! (counted in the receiver, by a `bench_setup` external label) and bytes
//! sent (each agent's own counter). The table goes into BENCHMARKS.md
//! between markers; `--smoke` runs a few seconds per setup and only checks
//! that each delivered samples (part of the README's test command).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::cpu::CpuGroup;
use crate::deps::{apt_install, status};

const PACKAGES: &[(&str, &str)] = &[
    ("prometheus", "/usr/bin/prometheus"),
    ("prometheus-node-exporter", "/usr/bin/prometheus-node-exporter"),
    ("victoria-metrics", "/usr/bin/vmagent"),
    ("docker.io", "/usr/sbin/dockerd"),
    ("busybox-static", "/bin/busybox"),
];

/// Series in the large application endpoint of setup 5.
const LARGE_SERIES: usize = 100_000;

/// The full host of the design's budget: node + eBPF + Docker with this
/// many containers + three scrape targets of `TARGET_SERIES` series each.
const FULL_HOST: &str = "vantage full host";
const CONTAINERS: usize = 20;
const TARGET_SERIES: usize = 2_000;

struct Options {
    duration: Duration,
    interval: Duration,
    smoke: bool,
}

/// Starts one setup's processes: (tag, work dir) → the children to measure.
type StartSetup<'a> = dyn Fn(&str, &Path) -> anyhow::Result<Vec<Child>> + 'a;

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options { duration: Duration::from_secs(60), interval: Duration::from_secs(15), smoke: false };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => {
                o.smoke = true;
                o.duration = Duration::from_secs(8);
                o.interval = Duration::from_secs(1);
            }
            "--duration" => o.duration = Duration::from_secs(it.next().context("--duration SECONDS")?.parse()?),
            "--interval" => o.interval = Duration::from_secs(it.next().context("--interval SECONDS")?.parse()?),
            other => bail!("unknown bench option {other:?} (use --smoke, --duration S, --interval S)"),
        }
    }
    Ok(o)
}

/// What one setup measured.
struct Outcome {
    name: String,
    cpu_seconds: f64,
    peak_rss: u64,
    final_rss: u64,
    samples: f64,
    bytes: f64,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some("ebpf") {
        // Kernel-side cost against libbpf-tools, measured with bpf_stats.
        apt_install(&[
            ("libbpf-tools", "/usr/sbin/runqlat"),
            ("bpftool", "/usr/sbin/bpftool"),
            ("linux-perf", "/usr/bin/perf"),
        ])?;
        crate::build_ebpf::run()?;
        return status(Command::new("bash").arg(workspace().join("bench/ebpf-overhead.sh")).args(&args[1..]));
    }
    if args.first().map(String::as_str) == Some("scale") {
        // Growth with active series against vmagent and Prometheus agent mode.
        return crate::scale::run(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("security") {
        // The security programs' kernel-side cost, measured with bpf_stats.
        apt_install(&[("bpftool", "/usr/sbin/bpftool")])?;
        // The release build: the agent's CPU per event is measured too.
        status(Command::new("cargo").args(["build", "--release", "-p", "vantage"]))?;
        let vantage = crate::docker::target_dir(&workspace()).join("release/vantage");
        return status(
            Command::new("bash")
                .arg(workspace().join("bench/security-overhead.sh"))
                .args(&args[1..])
                .env("VANTAGE", vantage),
        );
    }
    let opts = parse(args)?;
    apt_install(PACKAGES)?;
    crate::build_ebpf::run()?;
    // The full run measures what is deployed: the static musl binary of the
    // image and the systemd unit. The smoke run only checks that every setup
    // delivers: the debug build that the tests use is enough.
    let vantage = if opts.smoke {
        status(Command::new("cargo").args(["build", "-p", "vantage"]))?;
        crate::docker::target_dir(&workspace()).join("debug/vantage")
    } else {
        crate::docker::ensure_toolchain()?;
        status(Command::new("cargo").args(["build", "--release", "--target", crate::docker::TARGET, "-p", "vantage"]))?;
        crate::docker::target_dir(&workspace()).join(crate::docker::TARGET).join("release/vantage")
    };
    let work = std::env::temp_dir().join(format!("vantage-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let receiver = Receiver::start(&work)?;
    let node_port = free_port();
    let node_exporter = Guard(spawn(
        Command::new("/usr/bin/prometheus-node-exporter").arg(format!("--web.listen-address=127.0.0.1:{node_port}")),
        &work.join("node_exporter.log"),
    )?);
    wait_http(&format!("http://127.0.0.1:{node_port}/metrics"))?;
    let mut node_exporter_cpu = CpuGroup::new("node-exporter");
    node_exporter_cpu.add(node_exporter.0.id());
    let precision = node_exporter_cpu.precision();
    let large = Endpoint::start(&work, "large", LARGE_SERIES)?;
    let apps: Vec<u16> = (0..3)
        .map(|i| Endpoint::start(&work, &format!("app{i}"), TARGET_SERIES).map(|e| e.port))
        .collect::<anyhow::Result<_>>()?;

    let interval = opts.interval;
    let iv = format!("{}s", interval.as_secs());
    // The large endpoint is scraped at 15 s, or at the smoke run's interval.
    let large_iv = if opts.smoke { iv.clone() } else { "15s".to_string() };
    let mut outcomes = Vec::new();
    let setups: Vec<(&str, Box<StartSetup>)> = vec![
        (
            "node_exporter + prometheus agent",
            Box::new(|tag: &str, dir: &Path| prom_agent(dir, tag, &iv, &[node_port], &receiver)),
        ),
        ("node_exporter + vmagent", Box::new(|tag: &str, dir: &Path| vmagent(dir, tag, &iv, &[node_port], &receiver))),
        (
            "vantage node",
            Box::new(|tag: &str, dir: &Path| vantage_setup(&vantage, dir, tag, &iv, Sources::NODE, &receiver)),
        ),
        (
            "vantage node + ebpf",
            Box::new(|tag: &str, dir: &Path| vantage_setup(&vantage, dir, tag, &iv, Sources::NODE_EBPF, &receiver)),
        ),
        (
            "vantage node + ebpf @1s",
            Box::new(|tag: &str, dir: &Path| vantage_setup(&vantage, dir, tag, "1s", Sources::NODE_EBPF, &receiver)),
        ),
        (
            FULL_HOST,
            Box::new(|tag: &str, dir: &Path| {
                let sources = Sources { docker: true, targets: &apps, ..Sources::NODE_EBPF };
                vantage_setup(&vantage, dir, tag, &iv, sources, &receiver)
            }),
        ),
        (
            "100k series: prometheus agent",
            Box::new(|tag: &str, dir: &Path| prom_agent(dir, tag, &large_iv, &[large.port], &receiver)),
        ),
        (
            "100k series: vmagent",
            Box::new(|tag: &str, dir: &Path| vmagent(dir, tag, &large_iv, &[large.port], &receiver)),
        ),
        (
            "100k series: vantage",
            Box::new(|tag: &str, dir: &Path| {
                let sources = Sources { node: false, ebpf: false, docker: false, targets: &[large.port] };
                vantage_setup(&vantage, dir, tag, &large_iv, sources, &receiver)
            }),
        ),
    ];
    for (i, (name, start)) in setups.iter().enumerate() {
        let tag = format!("s{i}");
        let dir = work.join(&tag);
        std::fs::create_dir_all(&dir)?;
        eprintln!("bench: {name} for {:?}", opts.duration);
        // The containers exist only for the setup that watches them, so the
        // other setups see the same host as before.
        let _fleet = if *name == FULL_HOST { Some(Fleet::start(CONTAINERS)?) } else { None };
        let children = start(&tag, &dir)?;
        // node_exporter belongs to the setups that scrape it: its CPU and
        // memory count with theirs.
        let shared = name.starts_with("node_exporter").then_some(&node_exporter_cpu);
        let outcome = measure(name, &tag, &dir, children, shared, &opts, &receiver)?;
        eprintln!(
            "bench: {name}: cpu {:.3}s, peak rss {:.1} MiB, samples {}, bytes {}",
            outcome.cpu_seconds,
            mib(outcome.peak_rss),
            outcome.samples,
            outcome.bytes
        );
        outcomes.push(outcome);
    }

    let failed: Vec<&str> = outcomes.iter().filter(|o| o.samples <= 0.0).map(|o| o.name.as_str()).collect();
    if !failed.is_empty() {
        bail!("these setups delivered no samples to the receiver: {}", failed.join(", "));
    }
    let table = render(&outcomes, &opts, precision);
    println!("{table}");
    let summary = summary_line(&outcomes);
    if opts.smoke {
        println!("bench smoke: {} setups delivered samples: {} passed, 0 failed", outcomes.len(), outcomes.len());
    } else {
        write_benchmarks_md(&table)?;
        println!("{summary}");
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Runs a started setup for the warm-up plus the measured window.
fn measure(
    name: &str,
    tag: &str,
    dir: &Path,
    children: Vec<Child>,
    shared: Option<&CpuGroup>,
    opts: &Options,
    receiver: &Receiver,
) -> anyhow::Result<Outcome> {
    let mut own_cpu = CpuGroup::new(tag);
    for c in &children {
        own_cpu.add(c.id());
    }
    let children: Vec<Guard> = children.into_iter().map(Guard).collect();
    let groups: Vec<&CpuGroup> = std::iter::once(&own_cpu).chain(shared).collect();
    let cpu = || groups.iter().map(|g| g.seconds()).sum::<f64>();
    let pids: Vec<u32> = children.iter().map(|c| c.0.id()).chain(shared.into_iter().flat_map(|g| g.pids())).collect();
    // Let the setup start (replaying nothing, loading programs) before measuring.
    std::thread::sleep(if opts.smoke { Duration::from_secs(2) } else { Duration::from_secs(5) });
    let appended0 = receiver.appended()?;
    let cpu0 = cpu();
    let started = Instant::now();
    let mut peak = 0u64;
    while started.elapsed() < opts.duration {
        std::thread::sleep(Duration::from_millis(500));
        peak = peak.max(pids.iter().map(|&p| rss(p)).sum());
    }
    let cpu1 = cpu();
    let final_rss: u64 = pids.iter().map(|&p| rss(p)).sum();
    // The kernel's high-water mark covers start-up (the eBPF load), which
    // the samples above, taken after it, would miss.
    peak = peak.max(pids.iter().map(|&p| status_bytes(p, "VmHWM:")).sum());
    let bytes = sent_bytes(dir);
    let delivered = || receiver.count(&format!("count({{bench_setup=\"{tag}\"}})")).is_ok_and(|n| n > 0.0);
    if opts.smoke {
        // The smoke run only checks delivery. A machine kept busy by other
        // work may need more than its 8 s for a 100,000-series scrape and
        // push: the setup keeps running until its series arrive (30 s at
        // most), after the figures above were taken.
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(30) && !delivered() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    drop(children);
    // Give the receiver a moment to ingest the last pushes.
    std::thread::sleep(Duration::from_secs(2));
    // Setups run one at a time, so what the receiver appended meanwhile is
    // what this setup delivered; the series count makes sure it was this
    // setup's (its external label) and not something else.
    let samples = receiver.appended()? - appended0;
    let series = receiver.count(&format!("count({{bench_setup=\"{tag}\"}})"))?;
    if series <= 0.0 {
        bail!("{name}: the receiver holds no series labelled bench_setup=\"{tag}\"");
    }
    Ok(Outcome { name: name.to_string(), cpu_seconds: cpu1 - cpu0, peak_rss: peak, final_rss, samples, bytes })
}

/// The `targets: [...]` list of a Prometheus-style static config.
fn target_list(targets: &[u16]) -> String {
    let list: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    list.join(", ")
}

pub(crate) fn prom_agent(
    dir: &Path,
    tag: &str,
    interval: &str,
    targets: &[u16],
    receiver: &Receiver,
) -> anyhow::Result<Vec<Child>> {
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: {interval}\n  external_labels:\n    bench_setup: {tag}\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: [{}]\nremote_write:\n  - url: {}\n",
        target_list(targets),
        receiver.write_url()
    );
    std::fs::write(dir.join("agent.yml"), config)?;
    let child = spawn(
        Command::new("/usr/bin/prometheus")
            .arg("--enable-feature=agent")
            .arg(format!("--config.file={}", dir.join("agent.yml").display()))
            .arg(format!("--storage.agent.path={}", dir.join("wal").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}")),
        &dir.join("prometheus-agent.log"),
    )?;
    std::fs::write(
        dir.join("metrics_url"),
        format!("http://127.0.0.1:{port}/metrics\nprometheus_remote_storage_bytes_total"),
    )?;
    Ok(vec![child])
}

pub(crate) fn vmagent(
    dir: &Path,
    tag: &str,
    interval: &str,
    targets: &[u16],
    receiver: &Receiver,
) -> anyhow::Result<Vec<Child>> {
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: {interval}\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: [{}]\n",
        target_list(targets)
    );
    std::fs::write(dir.join("vmagent.yml"), config)?;
    let child = spawn(
        Command::new("/usr/bin/vmagent")
            .arg(format!("-promscrape.config={}", dir.join("vmagent.yml").display()))
            .arg(format!("-remoteWrite.url={}", receiver.write_url()))
            .arg(format!("-remoteWrite.tmpDataPath={}", dir.join("queue").display()))
            .arg(format!("-remoteWrite.label=bench_setup={tag}"))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}")),
        &dir.join("vmagent.log"),
    )?;
    std::fs::write(
        dir.join("metrics_url"),
        format!("http://127.0.0.1:{port}/metrics\nvmagent_remotewrite_bytes_sent_total"),
    )?;
    Ok(vec![child])
}

/// What a Vantage setup collects.
#[derive(Clone, Copy)]
pub(crate) struct Sources<'a> {
    pub node: bool,
    pub ebpf: bool,
    pub docker: bool,
    /// Loopback ports of the scrape targets, one job.
    pub targets: &'a [u16],
}

impl Sources<'_> {
    const NODE: Sources<'static> = Sources { node: true, ebpf: false, docker: false, targets: &[] };
    const NODE_EBPF: Sources<'static> = Sources { ebpf: true, ..Sources::NODE };
}

pub(crate) fn vantage_setup(
    bin: &Path,
    dir: &Path,
    tag: &str,
    interval: &str,
    sources: Sources,
    receiver: &Receiver,
) -> anyhow::Result<Vec<Child>> {
    let port = free_port();
    let Sources { node, ebpf, docker, targets } = sources;
    let mut config = format!(
        "[agent]\nlisten_addr = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nscrape_interval = \"{interval}\"\nexternal_labels = {{ bench_setup = \"{tag}\" }}\n\n[node]\nenabled = {node}\njob = \"node\"\n\n[ebpf]\nenabled = {ebpf}\n\n[docker]\nenabled = {docker}\n\n[[remote_write]]\nurl = \"{}\"\n",
        dir.display(),
        receiver.write_url()
    );
    if !targets.is_empty() {
        let list: Vec<String> = targets.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let _ = write!(
            config,
            "\n[[scrape]]\njob_name = \"app\"\n[[scrape.static_configs]]\ntargets = [{}]\n",
            list.join(", ")
        );
    }
    std::fs::write(dir.join("vantage.toml"), config)?;
    let child =
        spawn(Command::new(bin).args(["run", "--config"]).arg(dir.join("vantage.toml")), &dir.join("vantage.log"))?;
    std::fs::write(
        dir.join("metrics_url"),
        format!("http://127.0.0.1:{port}/metrics\nvantage_remote_write_bytes_sent_total"),
    )?;
    Ok(vec![child])
}

/// Bytes a setup says it sent, read from its own metrics just before it
/// stops: `metrics_url` in its directory names the URL and the counter.
fn sent_bytes(dir: &Path) -> f64 {
    let Ok(spec) = std::fs::read_to_string(dir.join("metrics_url")) else { return 0.0 };
    let Some((url, metric)) = spec.split_once('\n') else { return 0.0 };
    let Some(rest) = url.strip_prefix("http://") else { return 0.0 };
    let Some((host, path)) = rest.split_once('/') else { return 0.0 };
    let Ok(body) = http_get(host, &format!("/{path}")) else { return 0.0 };
    body.lines()
        .filter(|l| l.starts_with(metric.trim()) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The receiving Prometheus.
pub(crate) struct Receiver {
    port: u16,
    _proc: Guard,
}

impl Receiver {
    pub(crate) fn start(work: &Path) -> anyhow::Result<Receiver> {
        let port = free_port();
        std::fs::write(work.join("receiver.yml"), "global:\n  scrape_interval: 15s\n")?;
        let proc = Guard(spawn(
            Command::new("/usr/bin/prometheus")
                .arg(format!("--config.file={}", work.join("receiver.yml").display()))
                .arg(format!("--storage.tsdb.path={}", work.join("receiver-data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-remote-write-receiver"),
            &work.join("receiver.log"),
        )?);
        wait_http(&format!("http://127.0.0.1:{port}/-/ready"))?;
        Ok(Receiver { port, _proc: proc })
    }

    fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// Samples the receiver has appended since it started.
    fn appended(&self) -> anyhow::Result<f64> {
        let body = http_get(&format!("127.0.0.1:{}", self.port), "/metrics")?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with("prometheus_tsdb_head_samples_appended_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum())
    }

    /// The scalar value of an instant query, 0 when empty.
    pub(crate) fn count(&self, query: &str) -> anyhow::Result<f64> {
        let body = http_get(&format!("127.0.0.1:{}", self.port), &format!("/api/v1/query?query={}", urlencode(query)))?;
        // Tiny extraction rather than a JSON dependency: "value":[ts,"N"].
        Ok(body
            .split("\"value\":[")
            .nth(1)
            .and_then(|v| v.split('"').nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0))
    }
}

/// A loopback HTTP server answering every request with the same exposition
/// body of `series` gauges in 100 families (the application endpoints).
pub(crate) struct Endpoint {
    pub port: u16,
    /// Bodies written out whole, while not paused.
    served: Arc<AtomicU64>,
    /// While set, connections are closed unanswered (a failed scrape).
    paused: Arc<AtomicBool>,
}

/// Metric families of an application endpoint.
pub(crate) const FAMILIES: usize = 100;

/// The exposition text of `series` gauges in [`FAMILIES`] families.
pub(crate) fn exposition(series: usize) -> String {
    let mut body = String::with_capacity(series * 80);
    for family in 0..FAMILIES {
        let _ = writeln!(body, "# HELP app_metric_{family} Synthetic application metric {family}.");
        let _ = writeln!(body, "# TYPE app_metric_{family} gauge");
        for series in 0..series / FAMILIES {
            let _ = writeln!(
                body,
                "app_metric_{family}{{shard=\"{}\",path=\"/api/v1/item/{series}\"}} {}",
                series % 16,
                series * 3 + family
            );
        }
    }
    body
}

impl Endpoint {
    fn start(work: &Path, name: &str, series: usize) -> anyhow::Result<Endpoint> {
        let body = exposition(series);
        std::fs::write(work.join(format!("{name}.prom")), &body)?;
        Endpoint::serve(Arc::new(body))
    }

    /// Serves `body` on a new loopback port.
    pub(crate) fn serve(body: Arc<String>) -> anyhow::Result<Endpoint> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let served = Arc::new(AtomicU64::new(0));
        let paused = Arc::new(AtomicBool::new(false));
        let (count, pause) = (served.clone(), paused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (body, count, pause) = (body.clone(), count.clone(), pause.clone());
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf);
                    if pause.load(Ordering::SeqCst) {
                        return;
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    if stream.write_all(head.as_bytes()).is_ok() && stream.write_all(body.as_bytes()).is_ok() {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Ok(Endpoint { port, served, paused })
    }

    /// Bodies served whole so far.
    pub(crate) fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// Fails every scrape from now on, or serves again.
    pub(crate) fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }
}

/// Idle containers for the full-host setup (busybox `sleep`, from an image
/// made with `docker import`: no registry needed), removed on drop.
struct Fleet(Vec<String>);

impl Fleet {
    fn start(count: usize) -> anyhow::Result<Fleet> {
        crate::docker::ensure_dockerd()?;
        let image = "vantage-bench-busybox:1";
        if !Command::new("docker")
            .args(["image", "inspect", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?
            .success()
        {
            let rootfs = std::env::temp_dir().join(format!("vantage-bench-rootfs-{}", std::process::id()));
            std::fs::create_dir_all(rootfs.join("bin"))?;
            std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).context("copy /bin/busybox (busybox-static)")?;
            std::os::unix::fs::symlink("busybox", rootfs.join("bin/sleep"))?;
            let tar = rootfs.with_extension("tar");
            status(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."))?;
            status(Command::new("docker").arg("import").arg(&tar).arg(image).stdout(Stdio::null()))?;
            let _ = std::fs::remove_dir_all(&rootfs);
            let _ = std::fs::remove_file(&tar);
        }
        let mut fleet = Fleet(Vec::new());
        for i in 0..count {
            let name = format!("vantage-bench-{}-{i}", std::process::id());
            status(
                Command::new("docker")
                    .args(["run", "-d", "--name", &name, "-l", "com.example.team=bench", image, "/bin/sleep", "86400"])
                    .stdout(Stdio::null()),
            )?;
            fleet.0.push(name);
        }
        Ok(fleet)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("docker").args(["rm", "-f"]).args(&self.0).stdout(Stdio::null()).status();
        }
    }
}

fn render(outcomes: &[Outcome], opts: &Options, precision: &str) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Measured window {} s per setup, interval {} s (the 100k-series setups: 15 s; \"@1s\": 1 s). CPU counted by {precision}. \
         \"{FULL_HOST}\": node + eBPF + Docker with {CONTAINERS} idle containers + 3 scrape targets of {TARGET_SERIES} series.\n",
        opts.duration.as_secs(),
        opts.interval.as_secs()
    );
    let _ = writeln!(t, "| setup | CPU s | % of a core | peak RSS MiB (VmHWM from exec) | final RSS MiB | samples delivered | bytes sent | CPU µs / sample |");
    let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for o in outcomes {
        let _ = writeln!(
            t,
            "| {} | {:.3} | {:.3} | {:.1} | {:.1} | {} | {} | {:.2} |",
            o.name,
            o.cpu_seconds,
            100.0 * o.cpu_seconds / opts.duration.as_secs_f64(),
            mib(o.peak_rss),
            mib(o.final_rss),
            o.samples,
            o.bytes,
            1e6 * o.cpu_seconds / o.samples.max(1.0)
        );
    }
    let by: BTreeMap<&str, &Outcome> = outcomes.iter().map(|o| (o.name.as_str(), o)).collect();
    let ratio = |a: &str, b: &str| -> Option<(f64, f64)> {
        let (a, b) = (by.get(a)?, by.get(b)?);
        Some((a.cpu_seconds / b.cpu_seconds.max(1e-9), a.peak_rss as f64 / (b.peak_rss as f64).max(1.0)))
    };
    let _ = writeln!(t, "\n| ratio | CPU | peak RSS |\n|---|---:|---:|");
    for (a, b) in [
        ("vantage node + ebpf", "node_exporter + vmagent"),
        ("vantage node + ebpf", "node_exporter + prometheus agent"),
        ("vantage node", "node_exporter + vmagent"),
        (FULL_HOST, "node_exporter + vmagent"),
        ("100k series: vantage", "100k series: vmagent"),
        ("100k series: vantage", "100k series: prometheus agent"),
    ] {
        if let Some((cpu, mem)) = ratio(a, b) {
            let _ = writeln!(t, "| {a} / {b} | {cpu:.3} | {mem:.3} |");
        }
    }
    t
}

fn summary_line(outcomes: &[Outcome]) -> String {
    let find = |n: &str| outcomes.iter().find(|o| o.name == n);
    let Some(peer) = find("node_exporter + vmagent") else { return "summary: incomplete run".into() };
    let against = |name: &str| {
        find(name).map(|v| {
            format!(
                "{name} used {:.2}x the CPU and {:.2}x the peak memory of node_exporter + vmagent",
                v.cpu_seconds / peer.cpu_seconds.max(1e-9),
                v.peak_rss as f64 / (peer.peak_rss as f64).max(1.0)
            )
        })
    };
    let parts: Vec<String> = ["vantage node + ebpf", FULL_HOST].into_iter().filter_map(against).collect();
    format!("summary: {}", parts.join("; "))
}

/// Replaces the generated part of BENCHMARKS.md, keeping the rest.
fn write_benchmarks_md(table: &str) -> anyhow::Result<()> {
    let versions = format!(
        "Versions: prometheus 2.42, node_exporter 1.5, vmagent (Debian victoria-metrics), vantage {} (the static musl release build that the image and the systemd unit ship).",
        env!("CARGO_PKG_VERSION")
    );
    replace_generated("bench", &format!("{versions}\n\n{table}"))
}

/// Replaces what lies between `<!-- {marker}:start -->` and `<!-- {marker}:end -->`
/// in BENCHMARKS.md (appending both when absent), headed by when, where
/// and by which command it was made.
pub(crate) fn replace_generated(marker: &str, text: &str) -> anyhow::Result<()> {
    let path = workspace().join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let (start, end) = (format!("<!-- {marker}:start -->"), format!("<!-- {marker}:end -->"));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let date = crate::deps::output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default();
    let command =
        if marker == "bench" { "cargo xtask bench".to_string() } else { format!("cargo xtask bench {marker}") };
    let generated = format!(
        "{start}\nRun on {} with {cores} cores, kernel {}, by `{command}`.\n{text}{end}",
        date.trim(),
        kernel.trim(),
    );
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{}{}", &old[..a], generated, &old[b + end.len()..]),
        _ => format!("{old}\n{generated}\n"),
    };
    std::fs::write(&path, new).with_context(|| format!("write {}", path.display()))
}

pub(crate) struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM first so agents flush, then make sure.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc_kill(self.0.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub(crate) fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))
}

/// A loopback port below the ephemeral range (32768 and up), so no outgoing
/// connection can take it between this check and the bind that follows.
pub(crate) fn free_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 10_000) as u16;
    (0..10_000)
        .map(|_| 20_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 10_000)
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .unwrap_or(0)
}

fn wait_http(url: &str) -> anyhow::Result<()> {
    let rest = url.strip_prefix("http://").context("http URL")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    for _ in 0..300 {
        if http_get(host, &path).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{url} did not answer within 30 s")
}

/// A minimal HTTP/1.0 GET on loopback; the body when the status is 200.
fn http_get(host: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(host)?;
    // A query over a million series can take seconds on a busy machine.
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {host}{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// A kB field of /proc/<pid>/status, in bytes (0 once the process is gone).
pub(crate) fn status_bytes(pid: u32, field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0 };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_path_buf()
}
