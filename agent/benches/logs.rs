//! Lines per second on one core through the whole log path: tail a file,
//! logfmt + timestamp + level stages, batch, protobuf + snappy, HTTP push
//! to an in-process Loki receiver (on its own thread), acknowledgement.
//! The agent side runs on a current-thread runtime, so the figure is per core.
//!
//! `cargo bench -p vantage --bench logs`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;
use vantage::logs::file::{FileSource, FileSourceConfig, StartAt};
use vantage::logs::positions::Positions;
use vantage::logs::stages::StageConfig;
use vantage::logs::LogStats;
use vantage::sinks::loki::{self, proto, LokiConfig};

const LINES: u64 = 200_000;

/// A minimal Loki: decodes each push (snappy + protobuf) and counts entries.
fn receiver() -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut out = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
                    let req = proto::PushRequest::decode(raw.as_slice()).unwrap();
                    let n: usize = req.streams.iter().map(|s| s.entries.len()).sum();
                    c.fetch_add(n as u64, Ordering::SeqCst);
                    out.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").unwrap();
                }
            });
        }
    });
    (port, count)
}

fn stages() -> Vec<StageConfig> {
    #[derive(serde::Deserialize)]
    struct W {
        stages: Vec<StageConfig>,
    }
    let w: W = toml::from_str(
        r#"
[[stages]]
type = "logfmt"
mapping = { ts = "" }
[[stages]]
type = "timestamp"
source = "ts"
format = "RFC3339Nano"
[[stages]]
type = "level"
"#,
    )
    .unwrap();
    w.stages
}

fn write_file(path: &std::path::Path) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let levels = ["info", "warn", "error", "debug"];
    for i in 0..LINES {
        writeln!(
            f,
            "ts=2026-11-23T22:{:02}:{:02}.{:09}Z level={} msg=\"order matched\" order_id={i} user=4711 latency_ms=3",
            (i / 60_000) % 60,
            (i / 1000) % 60,
            i,
            levels[(i % 4) as usize]
        )
        .unwrap();
    }
    f.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn bench(c: &mut Criterion) {
    let (port, received) = receiver();
    let dir = std::env::temp_dir().join(format!("vantage-bench-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut g = c.benchmark_group("logs");
    g.sample_size(10).measurement_time(Duration::from_secs(20)).throughput(Throughput::Elements(LINES));
    let mut round = 0u32;
    g.bench_function("tail_level_timestamp_push", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let sub = dir.join(round.to_string());
                std::fs::create_dir_all(&sub).unwrap();
                let log = sub.join("app.log");
                write_file(&log);
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let before = received.load(Ordering::SeqCst);
                let start = Instant::now();
                rt.block_on(async {
                    let shutdown = tokio_util::sync::CancellationToken::new();
                    let registry = vantage::status::Registry::default();
                    let cfg = LokiConfig {
                        url: format!("http://127.0.0.1:{port}"),
                        batch_wait: Duration::from_millis(20),
                        ..Default::default()
                    };
                    let sink = loki::start(&cfg, &Default::default(), &registry, shutdown.clone()).unwrap();
                    // The agent's own wiring: the log path, routed to the one sink.
                    let (sender, entries) = vantage::logline::channel(cfg.buffer_size);
                    let sinks: Vec<Arc<dyn vantage::sinks::LogSink>> = vec![Arc::new(sink.sink)];
                    tokio::spawn(vantage::runtime::route_logs(entries, sinks, shutdown.clone(), vec![sink.task]));
                    let positions = Arc::new(Positions::load(&sub.join("positions.json")).unwrap());
                    let fcfg = FileSourceConfig {
                        name: "bench".into(),
                        paths: vec![log.display().to_string()],
                        exclude: vec![],
                        labels: Default::default(),
                        start_at: StartAt::Beginning,
                        max_line_size: 256 * 1024,
                        poll_interval: Duration::from_millis(250),
                        stages: stages(),
                    };
                    let stats = LogStats::default().source("bench");
                    let src = FileSource::new(&fcfg, positions, sender.clone(), stats, shutdown.clone()).unwrap();
                    tokio::spawn(src.run());
                    while sink.stats.entries_sent.load(Ordering::SeqCst) < LINES {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    shutdown.cancel();
                });
                total += start.elapsed();
                assert_eq!(received.load(Ordering::SeqCst) - before, LINES, "every line reached the receiver");
                drop(rt);
                let _ = std::fs::remove_dir_all(&sub);
            }
            total
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
