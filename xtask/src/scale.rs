//! `cargo xtask bench scale`: how Vantage, vmagent and Prometheus in agent
//! mode grow with the number of active series: 10,000 and 100,000 series on
//! one target, 1,000,000 as ten targets of 100,000, all at 15 s.
//!
//! Each agent runs alone, pushing to a receiving Prometheus of its own (a
//! fresh one, so one agent's million series do not slow the next one's
//! writes). Left out of the window: start-up and the first two scrapes,
//! which fill the peers' caches (a 30 s window measured vmagent at half its
//! steady cost). Then, over the window (two minutes unless told):
//! - CPU: user + system of the agent's cgroup (`cpu.rs`), per sample
//!   scraped in the window;
//! - peak memory: VmHWM, which the kernel keeps from exec on, start-up
//!   included;
//! - every scrape within its interval: the largest `scrape_duration_seconds`
//!   that reached the receiver, and the fewest bodies any target served in
//!   the window;
//! - every sample delivered: after the window the targets stop answering,
//!   and once the agent has sent what it holds, the samples of the
//!   application series in the receiver (`count_over_time`, which leaves
//!   stale markers out) must equal the bodies the targets served whole
//!   times the series in a body.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::bench::{self, Endpoint, Guard, Receiver, Sources};
use crate::cpu::CpuGroup;
use crate::deps::{apt_install, status};

/// (targets, series per target) of each size.
const SIZES: &[(usize, usize)] = &[(1, 10_000), (1, 100_000), (10, 100_000)];

const AGENTS: &[&str] = &["vantage", "vmagent", "prometheus agent"];

/// Where the plot goes, relative to the workspace (BENCHMARKS.md links it).
const PLOT: &str = "bench/scale.png";

struct Options {
    interval: Duration,
    window: Duration,
    /// Only the sizes of at most this many series (a quicker look).
    max_series: usize,
    /// A Vantage binary to measure instead of building the shipped one.
    vantage: Option<std::path::PathBuf>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        interval: Duration::from_secs(15),
        window: Duration::from_secs(120),
        max_series: usize::MAX,
        vantage: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            let v = it.next().with_context(|| format!("{name} needs a number"))?;
            v.parse().with_context(|| format!("{name} {v:?}: not a whole number"))
        };
        match a.as_str() {
            "--interval" => o.interval = Duration::from_secs(value("--interval")?),
            "--window" => o.window = Duration::from_secs(value("--window")?),
            "--max-series" => o.max_series = value("--max-series")? as usize,
            "--vantage" => o.vantage = Some(it.next().context("--vantage needs a path")?.into()),
            other => bail!(
                "unknown bench scale option {other:?} (use --window S, --interval S, --max-series N, --vantage PATH)"
            ),
        }
    }
    if o.window < o.interval * 2 {
        bail!("--window must hold at least two intervals");
    }
    Ok(o)
}

/// The targets of one size, serving the same body.
struct Targets {
    endpoints: Vec<Endpoint>,
    /// Series per body.
    each: usize,
}

impl Targets {
    /// Bodies each target has served whole so far.
    fn served(&self) -> Vec<u64> {
        self.endpoints.iter().map(Endpoint::served).collect()
    }

    fn pause(&self, paused: bool) {
        for e in &self.endpoints {
            e.pause(paused);
        }
    }
}

/// One agent at one size.
struct Row {
    agent: &'static str,
    series: usize,
    cpu_seconds: f64,
    /// Samples scraped in the window (bodies served × series per body).
    window_samples: u64,
    peak_rss: u64,
    final_rss: u64,
    /// The largest scrape duration the receiver got, seconds.
    max_scrape: f64,
    /// The fewest bodies one target served in the window.
    min_scrapes: u64,
    /// Bodies served whole over the whole run × series per body.
    expected: u64,
    delivered: u64,
}

impl Row {
    fn on_time(&self, opts: &Options) -> bool {
        // A target scraped once per interval serves window/interval bodies,
        // give or take the one at either edge.
        let due = opts.window.as_secs() / opts.interval.as_secs();
        self.max_scrape < opts.interval.as_secs_f64() && self.min_scrapes + 1 >= due
    }

    fn ok(&self, opts: &Options) -> bool {
        self.delivered == self.expected && self.on_time(opts)
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = parse(args)?;
    apt_install(&[
        ("prometheus", "/usr/bin/prometheus"),
        ("victoria-metrics", "/usr/bin/vmagent"),
        ("gnuplot-nox", "/usr/bin/gnuplot"),
    ])?;
    // What is deployed: the static musl release build of the image.
    let vantage = match &opts.vantage {
        Some(path) => path.clone(),
        None => {
            crate::docker::ensure_toolchain()?;
            let build = ["build", "--release", "--target", crate::docker::TARGET, "-p", "vantage"];
            status(Command::new("cargo").args(build))?;
            crate::docker::target_dir(&bench::workspace()).join(crate::docker::TARGET).join("release/vantage")
        }
    };
    let work = std::env::temp_dir().join(format!("vantage-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let iv = format!("{}s", opts.interval.as_secs());

    let mut rows = Vec::new();
    for &(targets, each) in SIZES.iter().filter(|(t, e)| t * e <= opts.max_series) {
        let body = Arc::new(bench::exposition(each));
        let endpoints: Vec<Endpoint> =
            (0..targets).map(|_| Endpoint::serve(body.clone())).collect::<anyhow::Result<_>>()?;
        drop(body);
        let size = Targets { endpoints, each };
        let ports: Vec<u16> = size.endpoints.iter().map(|e| e.port).collect();
        for &agent in AGENTS {
            let tag = format!("{}-{}", targets * each, agent.replace(' ', "-"));
            let dir = work.join(&tag);
            std::fs::create_dir_all(&dir)?;
            eprintln!("bench scale: {agent}, {} series, {:?} window", targets * each, opts.window);
            let receiver = Receiver::start(&dir)?;
            size.pause(false);
            let before = size.served();
            let children = match agent {
                "vantage" => {
                    let sources = Sources { node: false, ebpf: false, docker: false, targets: &ports };
                    bench::vantage_setup(&vantage, &dir, &tag, &iv, sources, &receiver)?
                }
                "vmagent" => bench::vmagent(&dir, &tag, &iv, &ports, &receiver)?,
                _ => bench::prom_agent(&dir, &tag, &iv, &ports, &receiver)?,
            };
            let row = measure(agent, &tag, children, &size, &before, &receiver, &opts)?;
            eprintln!(
                "bench scale: {agent} at {}: cpu {:.2} s, {:.2} us/sample, VmHWM {:.1} MiB, delivered {}/{}, slowest scrape {:.2} s",
                row.series,
                row.cpu_seconds,
                1e6 * row.cpu_seconds / row.window_samples.max(1) as f64,
                bench::mib(row.peak_rss),
                row.delivered,
                row.expected,
                row.max_scrape
            );
            rows.push(row);
        }
    }

    let table = render(&rows, &opts);
    println!("{table}");
    plot(&rows, &work)?;
    bench::replace_generated(
        "scale",
        &format!("\n{table}\n![Peak memory and CPU per sample against active series]({PLOT})\n\n"),
    )?;
    let _ = std::fs::remove_dir_all(&work);
    // Written down above all the same: a miss is a figure too. A peer's
    // miss is its own; Vantage's fails the run.
    let failed: Vec<String> =
        rows.iter().filter(|r| r.agent == "vantage" && !r.ok(&opts)).map(|r| format!("{} series", r.series)).collect();
    if !failed.is_empty() {
        bail!("Vantage did not deliver every sample within its interval at {}", failed.join(", "));
    }
    Ok(())
}

/// Runs one started agent through warm-up, window and drain; `before`:
/// what each target had served when the agent started.
fn measure(
    agent: &'static str,
    tag: &str,
    children: Vec<Child>,
    size: &Targets,
    before: &[u64],
    receiver: &Receiver,
    opts: &Options,
) -> anyhow::Result<Row> {
    let mut cpu = CpuGroup::new(tag);
    for c in &children {
        cpu.add(c.id());
    }
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let guards: Vec<Guard> = children.into_iter().map(Guard).collect();
    let (served, each) = (|| size.served(), size.each);
    // Start-up and the first two scrapes are not steady state.
    std::thread::sleep(opts.interval * 2 + Duration::from_secs(5));
    let (served0, cpu0) = (served(), cpu.seconds());
    std::thread::sleep(opts.window);
    let (served1, cpu1) = (served(), cpu.seconds());
    let final_rss: u64 = pids.iter().map(|&p| bench::rss(p)).sum();
    let peak_rss: u64 = pids.iter().map(|&p| bench::status_bytes(p, "VmHWM:")).sum();
    let in_window: Vec<u64> = served1.iter().zip(&served0).map(|(b, a)| b - a).collect();

    // No more samples from here on; wait until what the agent holds has
    // reached the receiver (the count stops growing at what was served).
    size.pause(true);
    let expected = (served().iter().sum::<u64>() - before.iter().sum::<u64>()) * each as u64;
    let started = Instant::now();
    let (mut delivered, mut last_change) = (0u64, Instant::now());
    while started.elapsed() < Duration::from_secs(180) {
        std::thread::sleep(Duration::from_secs(5));
        let now = delivered_samples(receiver, tag)?;
        if now != delivered {
            (delivered, last_change) = (now, Instant::now());
        }
        if delivered >= expected || last_change.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    let max_scrape = receiver
        .count(&format!("max(max_over_time(scrape_duration_seconds{{bench_setup=\"{tag}\"}}[1h]))"))
        .with_context(|| format!("{tag}: slowest scrape"))?;
    drop(guards);
    Ok(Row {
        agent,
        series: size.endpoints.len() * each,
        cpu_seconds: cpu1 - cpu0,
        window_samples: in_window.iter().sum::<u64>() * each as u64,
        peak_rss,
        final_rss,
        max_scrape,
        min_scrapes: in_window.iter().copied().min().unwrap_or(0),
        expected,
        delivered,
    })
}

/// Application samples of `tag` in the receiver, stale markers left out.
/// One query per family: across families the series differ only by name,
/// which `count_over_time` drops, and PromQL refuses such a vector.
fn delivered_samples(receiver: &Receiver, tag: &str) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for family in 0..bench::FAMILIES {
        let query = format!("sum(count_over_time(app_metric_{family}{{bench_setup=\"{tag}\"}}[1h]))");
        total += receiver.count(&query).with_context(|| format!("{tag}: count delivered samples"))? as u64;
    }
    Ok(total)
}

fn render(rows: &[Row], opts: &Options) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Each agent alone, scraping at {} s, pushing to a Prometheus of its own; measured over {} s after start-up and two scrapes. \
         1,000,000 series are ten targets of 100,000. CPU per sample: the agent's cgroup CPU over the window / samples scraped in it. \
         Bytes per series: VmHWM (from exec) / active series. Delivered: application samples in the receiver / bodies served whole × series per body.\n",
        opts.interval.as_secs(),
        opts.window.as_secs()
    );
    let _ = writeln!(
        t,
        "| series | agent | CPU µs / sample | % of a core | peak RSS MiB (VmHWM) | final RSS MiB | bytes / series | slowest scrape s | delivered | ok |"
    );
    let _ = writeln!(t, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.0} | {:.3} | {} / {} | {} |",
            r.series,
            r.agent,
            per_sample_us(r),
            100.0 * r.cpu_seconds / opts.window.as_secs_f64(),
            bench::mib(r.peak_rss),
            bench::mib(r.final_rss),
            r.peak_rss as f64 / r.series as f64,
            r.max_scrape,
            r.delivered,
            r.expected,
            if r.ok(opts) { "yes" } else { "no" }
        );
    }
    let _ = writeln!(t, "\n| series | Vantage / vmagent CPU | Vantage / vmagent peak RSS | Vantage / Prometheus agent CPU | Vantage / Prometheus agent peak RSS |");
    let _ = writeln!(t, "|---:|---:|---:|---:|---:|");
    let find = |agent: &str, series: usize| rows.iter().find(|r| r.agent == agent && r.series == series);
    for v in rows.iter().filter(|r| r.agent == "vantage") {
        let ratio = |peer: &str| {
            find(peer, v.series).map_or(("-".to_string(), "-".to_string()), |p| {
                (
                    format!("{:.2}", per_sample_us(v) / per_sample_us(p).max(1e-9)),
                    format!("{:.2}", v.peak_rss as f64 / (p.peak_rss as f64).max(1.0)),
                )
            })
        };
        let ((vc, vm), (pc, pm)) = (ratio("vmagent"), ratio("prometheus agent"));
        let _ = writeln!(t, "| {} | {vc} | {vm} | {pc} | {pm} |", v.series);
    }
    t
}

fn per_sample_us(r: &Row) -> f64 {
    1e6 * r.cpu_seconds / r.window_samples.max(1) as f64
}

/// Peak memory and CPU per sample against series, one line per agent, as a
/// PNG next to BENCHMARKS.md (gnuplot, from Debian).
fn plot(rows: &[Row], work: &Path) -> anyhow::Result<()> {
    let mut script = format!(
        "set terminal pngcairo size 1100,450 font ',10'\nset output '{}'\nset multiplot layout 1,2\n\
         set logscale x\nset xlabel 'active series'\nset key top left\nset grid\n",
        bench::workspace().join(PLOT).display()
    );
    // Memory spans two orders of magnitude: a log scale for it too.
    let mut lines = |column: usize, title: &str, log_y: bool| {
        let y = if log_y { "set logscale y" } else { "unset logscale y" };
        let _ = write!(script, "{y}\nset title '{title}'\nplot ");
        let parts: Vec<String> = AGENTS
            .iter()
            .map(|a| format!("'{}' using 1:{column} with linespoints lw 2 title '{a}'", data_file(work, a).display()))
            .collect();
        let _ = writeln!(script, "{}", parts.join(", "));
    };
    lines(2, "peak RSS (VmHWM), MiB", true);
    lines(3, "CPU per sample, µs", false);
    script.push_str("unset multiplot\n");
    for agent in AGENTS {
        let mut data = String::new();
        for r in rows.iter().filter(|r| r.agent == *agent) {
            let _ = writeln!(data, "{} {:.2} {:.3}", r.series, bench::mib(r.peak_rss), per_sample_us(r));
        }
        std::fs::write(data_file(work, agent), data)?;
    }
    let gp = work.join("scale.gp");
    std::fs::write(&gp, script)?;
    status(Command::new("gnuplot").arg(&gp))
}

fn data_file(work: &Path, agent: &str) -> std::path::PathBuf {
    work.join(format!("{}.dat", agent.replace(' ', "-")))
}
