//! Scrape hot path: parse a 100,000-series body and build its samples with
//! target labels and two metric relabel rules, as one scrape does; then the
//! same followed by remote_write encoding (protobuf 1.0 + snappy, requests
//! of 2000 samples, converted as the sink does). Each twice: the first
//! scrape of a target (an empty scrape cache: every series parsed and
//! relabeled) and the steady state (the same body again through the
//! target's cache, its end-of-scrape sweep for stale series included).
//!
//! `cargo bench -p vantage --bench scrape` prints criterion's median per
//! body, then samples/s on one core, the peak heap of one pass and the
//! allocations per series (counted by the allocator below).
//!
//! With `SCRAPE_BENCH_PROMETHEUS=1` it also runs a real Prometheus (Debian
//! package `prometheus`) scraping the same body once a second and reports
//! Prometheus's CPU seconds per scrape from its process_cpu_seconds_total.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use vantage::relabel::{RelabelConfig, Relabeler};
use vantage::sample::Family;
use vantage::sample::Labels;
use vantage::sinks::remote_write::encode_series;
use vantage::sources::scrape::cache::Cache;
use vantage::sources::scrape::ingest::{ingest, Ingested, Options};
use vantage::sources::scrape::parser::Format;

/// The C library's allocator (the agent binary's), counting allocations
/// and live and peak bytes while COUNTING is set (off during the timed
/// runs, so the counting costs nothing there).
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
    }
    // Forwarded, so a growing Vec costs what it costs in the agent (the
    // default would allocate, copy and free every time).
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SERIES: usize = 100_000;

/// A body shaped like a busy service's: histograms, counters, gauges,
/// 3-5 labels per series.
fn body() -> String {
    let mut out = String::with_capacity(SERIES * 110);
    out.push_str(
        "# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n",
    );
    let les = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "+Inf"];
    let mut n = 0;
    let mut route = 0;
    while n + les.len() + 2 <= SERIES / 2 {
        for (i, le) in les.iter().enumerate() {
            out.push_str(&format!(
                "http_request_duration_seconds_bucket{{method=\"GET\",route=\"/api/v1/item/{route}\",le=\"{le}\"}} {}\n",
                i * 7 + route
            ));
        }
        out.push_str(&format!(
            "http_request_duration_seconds_sum{{method=\"GET\",route=\"/api/v1/item/{route}\"}} {}.25\n",
            route * 3
        ));
        out.push_str(&format!(
            "http_request_duration_seconds_count{{method=\"GET\",route=\"/api/v1/item/{route}\"}} {}\n",
            route * 9
        ));
        n += les.len() + 2;
        route += 1;
    }
    out.push_str("# HELP orders_total Orders by market.\n# TYPE orders_total counter\n");
    while n < SERIES {
        out.push_str(&format!(
            "orders_total{{market=\"M{}\",side=\"{}\",status=\"filled\",shard=\"{}\"}} {}\n",
            n % 5000,
            if n % 2 == 0 { "buy" } else { "sell" },
            n % 16,
            n as f64 * 1.5
        ));
        n += 1;
    }
    out
}

fn rules() -> Relabeler {
    Relabeler::new(&[
        // Drop a family nobody queries (matches nothing here: every rule is
        // evaluated, nothing is lost).
        RelabelConfig {
            source_labels: vec!["__name__".into()],
            regex: Some("go_gc_.*|nodejs_eventloop_lag_.*".into()),
            action: Some("drop".into()),
            ..Default::default()
        },
        // Rename a label, as the seed's jobs do for Kafka.
        RelabelConfig {
            source_labels: vec!["shard".into()],
            target_label: Some("partition".into()),
            ..Default::default()
        },
    ])
    .unwrap()
}

fn bench(c: &mut Criterion) {
    // The allocator settings of the agent binary.
    vantage::memory::tune();
    let body = body();
    let target = Labels::from_pairs([("job", "app"), ("instance", "10.0.0.1:3000")]);
    let relabel = rules();
    let opts = Options {
        format: Format::Prometheus,
        scrape_ms: 1_700_000_000_000,
        honor_timestamps: true,
        honor_labels: false,
        target_labels: &target,
        metric_relabel: &relabel,
        sample_limit: 0,
        label_limit: 0,
    };
    let check = ingest(body.as_bytes(), &opts, &mut Cache::default()).unwrap();
    assert_eq!(check.scraped, SERIES);
    assert_eq!(check.kept, SERIES);
    drop(check);
    // A first scrape (a new cache) and a scrape of a target seen before.
    let cold = || ingest(body.as_bytes(), &opts, &mut Cache::default()).unwrap();
    let mut cache = Cache::default();
    let mut steady = || {
        let out = ingest(body.as_bytes(), &opts, &mut cache).unwrap();
        let mut stale = Vec::new();
        cache.finish_good(&mut stale, opts.scrape_ms);
        assert!(stale.is_empty());
        out
    };
    steady();

    let mut g = c.benchmark_group("scrape");
    g.throughput(Throughput::Elements(SERIES as u64));
    g.sample_size(20);
    g.bench_function("parse_relabel_100k", |b| b.iter(|| black_box(cold())));
    g.bench_function("parse_relabel_100k_cached", |b| b.iter(|| black_box(steady())));
    let mut raw = Vec::new();
    let mut wire = Vec::new();
    g.bench_function("parse_relabel_encode_100k", |b| {
        b.iter(|| black_box(encode(&cold().families, &mut raw, &mut wire)))
    });
    g.bench_function("parse_relabel_encode_100k_cached", |b| {
        b.iter(|| black_box(encode(&steady().families, &mut raw, &mut wire)))
    });
    g.finish();

    // Our own figures: median thread CPU time of 11 passes (the machine
    // may be shared, so wall time overstates the cost per core), the heap
    // peak and the allocations of one pass.
    let wire_bytes = encode(&cold().families, &mut raw, &mut wire);
    for (what, pass) in
        [("first scrape", &mut (|| cold()) as &mut dyn FnMut() -> Ingested), ("steady state", &mut steady)]
    {
        let mut times: Vec<Duration> = (0..11)
            .map(|_| {
                let t = thread_cpu();
                black_box(pass());
                thread_cpu() - t
            })
            .collect();
        times.sort();
        let median = times[times.len() / 2];
        let mut with_encode: Vec<Duration> = (0..11)
            .map(|_| {
                let t = thread_cpu();
                let out = pass();
                black_box(encode(&out.families, &mut raw, &mut wire));
                // Freeing the scrape's samples is part of its cost.
                drop(out);
                thread_cpu() - t
            })
            .collect();
        with_encode.sort();
        let median_encode = with_encode[with_encode.len() / 2];
        // Counted from zero: frees of blocks allocated before would be
        // subtracted without their allocation, so the result is kept until
        // counting stops.
        LIVE.store(0, Ordering::Relaxed);
        PEAK.store(0, Ordering::Relaxed);
        ALLOCS.store(0, Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        let out = pass();
        COUNTING.store(false, Ordering::Relaxed);
        let peak = PEAK.load(Ordering::Relaxed);
        let allocations = ALLOCS.load(Ordering::Relaxed);
        drop(out);
        println!(
            "scrape, {what}: {SERIES} series ({} bytes of body) in {:.1} ms CPU median: {:.2} M samples/s per core; heap peak {:.1} MiB ({:.0} B/series), {:.4} allocations/series",
            body.len(),
            median.as_secs_f64() * 1e3,
            SERIES as f64 / median.as_secs_f64() / 1e6,
            peak as f64 / (1 << 20) as f64,
            peak as f64 / SERIES as f64,
            allocations as f64 / SERIES as f64
        );
        println!(
            "scrape+encode, {what}: {:.1} ms CPU median: {:.2} M samples/s per core ({} bytes of snappy-compressed requests)",
            median_encode.as_secs_f64() * 1e3,
            SERIES as f64 / median_encode.as_secs_f64() / 1e6,
            wire_bytes
        );
    }
    if std::env::var_os("SCRAPE_BENCH_PROMETHEUS").is_some() {
        prometheus_cpu(&body);
    }
}

/// Encodes samples as the remote_write sink does (each one a 1.0
/// `TimeSeries` written straight from its borrowed labels, see
/// `Sink::record`) and compresses them in requests of 2000 as the queue
/// does; returns the total compressed size.
fn encode(families: &[Family], raw: &mut Vec<u8>, out: &mut Vec<u8>) -> usize {
    let mut snappy = snap::raw::Encoder::new();
    let mut total = 0;
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(16);
    let mut in_request = 0;
    let mut flush = |raw: &mut Vec<u8>, total: &mut usize| {
        out.resize(snap::raw::max_compress_len(raw.len()), 0);
        *total += snappy.compress(raw, out).expect("buffer of max_compress_len");
        raw.clear();
    };
    raw.clear();
    for s in families.iter().flat_map(|f| f.samples.iter()) {
        pairs.clear();
        pairs.extend(s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())));
        encode_series(raw, &pairs, s.value, s.timestamp_ms);
        in_request += 1;
        if in_request == 2000 {
            flush(raw, &mut total);
            in_request = 0;
        }
    }
    if in_request > 0 {
        flush(raw, &mut total);
    }
    total
}

/// CPU time used by this thread so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Prometheus's CPU seconds per scrape of `body`: serve it, let Prometheus
/// scrape it once a second, read process_cpu_seconds_total across 20
/// scrapes, and subtract the same window with an empty target.
fn prometheus_cpu(body: &str) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target_port = listener.local_addr().unwrap().port();
    let served: std::sync::Arc<std::sync::Mutex<Vec<u8>>> = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = served.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let b = s.lock().unwrap().clone();
            let head = format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", b.len());
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&b);
        }
    });
    let dir = std::env::temp_dir().join(format!("vantage-bench-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let prom_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: body\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus) must be installed for SCRAPE_BENCH_PROMETHEUS");
    let cpu = || -> f64 {
        let text = reqwest_get(prom_port, "/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total ").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(f64::NAN)
    };
    std::thread::sleep(Duration::from_secs(5));
    let window = Duration::from_secs(20);
    // Idle: the target answers an empty body.
    let c0 = cpu();
    std::thread::sleep(window);
    let idle = cpu() - c0;
    *served.lock().unwrap() = body.as_bytes().to_vec();
    std::thread::sleep(Duration::from_secs(3)); // first scrape creates the series
    let c1 = cpu();
    std::thread::sleep(window);
    let busy = cpu() - c1;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let per_scrape = (busy - idle) / window.as_secs_f64();
    println!(
        "prometheus: {:.3} CPU s per scrape of the {SERIES}-series body ({:.2} M samples/s per core; idle {:.3} CPU s/s subtracted)",
        per_scrape,
        SERIES as f64 / per_scrape / 1e6,
        idle / window.as_secs_f64()
    );
}

/// A tiny HTTP GET on loopback (the bench has no HTTP client dependency).
fn reqwest_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
