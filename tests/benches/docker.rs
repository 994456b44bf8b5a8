//! One container-metrics collection with 50 running containers, against a
//! real dockerd (started by the harness when none runs): criterion's median
//! of `ContainerCollector::collect`, plus CPU per collection over 1,000
//! collections. For scale, the same run times `docker stats --no-stream`
//! for the same 50 containers, the Docker stats API that the issue rules
//! out (about a second per container, in parallel).
//!
//! `cargo bench -p vantage-tests --bench docker` (root; docker.io).

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use vantage::sources::docker::{discovery, metrics::ContainerCollector, DockerConfig};
use vantage::sources::Collector;
use vantage_tests::docker::{busybox_image, docker};

const CONTAINERS: usize = 50;

/// The bench's containers, removed at the end whatever happens.
struct Fleet(Vec<String>);

impl Drop for Fleet {
    fn drop(&mut self) {
        let mut args = vec!["rm".to_string(), "-f".into()];
        args.extend(self.0.iter().cloned());
        let _ = Command::new("docker").args(&args).output();
    }
}

fn cpu_seconds_of_self() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn main() {
    let image = busybox_image();
    let tag = std::process::id();
    let mut fleet = Fleet(Vec::new());
    for i in 0..CONTAINERS {
        let name = format!("vtb-{tag}-{i}");
        fleet.0.push(name.clone());
        docker(&["run", "-d", "--name", &name, "-l", "bench=docker", image, "sleep", "3600"]);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let inventory = runtime.block_on(discovery::list_once("")).expect("list containers");
    let running = inventory.iter().filter(|c| c.state == "running").count();
    let (_tx, rx) = tokio::sync::watch::channel(inventory);
    let mut collector = ContainerCollector::new(&DockerConfig::default(), rx);
    let series: usize = collector.collect(vantage::sample::now_ms()).unwrap().iter().map(|f| f.samples.len()).sum();
    println!("{running} running containers ({CONTAINERS} of them the bench's), {series} series per collection");

    let mut c = Criterion::default().configure_from_args().measurement_time(Duration::from_secs(5));
    c.bench_function("docker/collect 50 containers", |b| {
        b.iter(|| std::hint::black_box(collector.collect(vantage::sample::now_ms()).unwrap()))
    });

    let n = 1000;
    let before = cpu_seconds_of_self();
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(collector.collect(vantage::sample::now_ms()).unwrap());
    }
    println!(
        "vantage: {:.3} ms CPU and {:.3} ms wall per collection of {running} containers (over {n})",
        (cpu_seconds_of_self() - before) * 1000.0 / n as f64,
        started.elapsed().as_secs_f64() * 1000.0 / n as f64
    );

    let mut args = vec!["stats", "--no-stream", "--format", "{{.Name}}"];
    args.extend(fleet.0.iter().map(String::as_str));
    let started = Instant::now();
    docker(&args);
    println!("docker stats --no-stream for the {CONTAINERS} containers: {:.2} s wall", started.elapsed().as_secs_f64());
    c.final_summary();
    drop(fleet);
}
