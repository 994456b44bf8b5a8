//! One full node collection (every collector, this machine's real /proc and
//! /sys), plus the figures the README quotes: CPU, allocations and RSS per
//! collection over 10,000 collections, and node_exporter's CPU per scrape
//! on the same machine for comparison.
//!
//! `cargo bench -p vantage --bench node` (node_exporter from the Debian
//! package prometheus-node-exporter; skipped with a note when absent).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use vantage::sources::node::{NodeCollector, NodeConfig};
use vantage::sources::Collector;

/// Counts allocations so the bench can report them per collection.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn collector() -> NodeCollector {
    NodeCollector::new(NodeConfig { instance: "bench".into(), ..NodeConfig::default() })
}

/// utime + stime of `pid` ("self" allowed), in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after = &text[text.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn rss_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = text.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn tick_ms() -> f64 {
    // SAFETY: sysconf has no preconditions.
    1000.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// CPU, allocations and RSS over 10,000 collections.
fn steady_state() {
    let mut c = collector();
    let mut series = 0;
    for _ in 0..100 {
        series = c.collect(vantage::sample::now_ms()).unwrap().iter().map(|f| f.samples.len()).sum::<usize>();
    }
    let n = 10_000u64;
    let rss_before = rss_kib();
    let cpu_before = cpu_ticks("self");
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut rss_mid = 0;
    for i in 0..n {
        let families = c.collect(vantage::sample::now_ms()).unwrap();
        std::hint::black_box(&families);
        if i == n / 10 {
            rss_mid = rss_kib();
        }
    }
    let wall = started.elapsed();
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs_before;
    let cpu_ms = (cpu_ticks("self") - cpu_before) as f64 * tick_ms();
    let rss_after = rss_kib();
    println!(
        "vantage node: {series} series; over {n} collections: {:.3} ms CPU and {:.3} ms wall per collection, {} allocations per collection; RSS {rss_before} KiB before, {rss_mid} KiB after 1,000, {rss_after} KiB after {n}",
        cpu_ms / n as f64,
        wall.as_secs_f64() * 1000.0 / n as f64,
        allocs / n
    );
}

fn http_get(port: u16) -> usize {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect node_exporter");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    body.len()
}

/// node_exporter's CPU per scrape, from its /proc/<pid>/stat ticks.
fn node_exporter() {
    let bin = "/usr/bin/prometheus-node-exporter";
    if !std::path::Path::new(bin).exists() {
        println!("node_exporter: {bin} missing (apt-get install prometheus-node-exporter); not measured");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(bin)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start node_exporter");
    let pid = child.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..10 {
        http_get(port);
    }
    let n = 300;
    let before = cpu_ticks(&pid);
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        bytes = http_get(port);
    }
    let wall = started.elapsed();
    let cpu_ms = (cpu_ticks(&pid) - before) as f64 * tick_ms();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.to_string()))
        .unwrap_or_default();
    println!(
        "node_exporter 1.5: over {n} scrapes ({bytes} bytes each): {:.3} ms CPU and {:.3} ms wall per scrape; {rss}",
        cpu_ms / n as f64,
        wall.as_secs_f64() * 1000.0 / n as f64
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let mut c = collector();
    criterion.bench_function("node_full_collection", |b| {
        b.iter(|| std::hint::black_box(c.collect(vantage::sample::now_ms()).unwrap()))
    });
    steady_state();
    node_exporter();
    criterion.final_summary();
}
