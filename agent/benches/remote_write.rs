//! remote_write encoding cost: protobuf + snappy (block format) of
//! 2000-sample requests, the default max_samples_per_send. Criterion reports
//! the time per request and samples per second (one core: the bench is
//! single-threaded).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vantage::sinks::remote_write::encode::Encoder;
use vantage::sinks::remote_write::proto::{Label, Sample, TimeSeries};

/// 2000 series shaped like node_exporter's: a name, six labels, one sample.
fn batch() -> Vec<TimeSeries> {
    let names = [
        "node_cpu_seconds_total",
        "node_network_receive_bytes_total",
        "node_filesystem_avail_bytes",
        "node_disk_io_time_seconds_total",
    ];
    (0..2000)
        .map(|i| {
            let mut labels = vec![
                Label { name: "__name__".into(), value: names[i % names.len()].into() },
                Label { name: "cluster".into(), value: "exchange-prod-eu".into() },
                Label { name: "cpu".into(), value: (i % 64).to_string() },
                Label { name: "instance".into(), value: "wallet-07.internal:9100".into() },
                Label { name: "job".into(), value: "wallet-07-node-exporter".into() },
                Label { name: "mode".into(), value: ["user", "system", "idle", "iowait"][i % 4].into() },
                Label { name: "server_name".into(), value: "wallet-07".into() },
            ];
            labels.sort();
            TimeSeries {
                labels,
                samples: vec![Sample { value: i as f64 * 1.5 + 0.25, timestamp: 1_764_000_000_000 + i as i64 }],
            }
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let series = batch();
    let mut group = c.benchmark_group("remote_write_encode_snappy");
    group.throughput(Throughput::Elements(series.len() as u64));
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    group.bench_function(BenchmarkId::new("v1", 2000), |b| b.iter(|| enc.v1(series.iter(), &mut out)));
    group.bench_function(BenchmarkId::new("v2", 2000), |b| b.iter(|| enc.v2(series.iter().map(|s| (s, 1)), &mut out)));
    group.finish();
}

/// The sink side: 2000 samples relabeled (no rules), external labels
/// added, order-checked, encoded as a WAL record and appended to the WAL.
fn accept(c: &mut Criterion) {
    use std::sync::Arc;
    use vantage::sample::{Batch, Family, MetricType};
    use vantage::sinks::remote_write::{wal::Wal, Sink, Stats};
    use vantage::sinks::MetricSink;

    let dir = std::env::temp_dir().join(format!("vantage-bench-rw-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // A small cap: old segments are dropped as the bench appends.
    let (wal, _) = Wal::open(&dir, 64 << 20).unwrap();
    let sink = Sink::new(
        "bench",
        Arc::new(wal),
        None,
        vec![("cluster".into(), "exchange-prod-eu".into()), ("server_name".into(), "wallet-07".into())],
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(Stats::default()),
    );
    let mut ts = 1_764_000_000_000i64;
    let mut make = || {
        ts += 1000;
        let mut f = Family::new("node_cpu_seconds_total", MetricType::Counter, "");
        for i in 0..2000 {
            let cpu = (i / 4).to_string();
            let mode = ["user", "system", "idle", "iowait"][i % 4];
            f.push(
                &[("cpu", &cpu), ("mode", mode), ("instance", "wallet-07.internal:9100"), ("job", "node")],
                i as f64,
                ts,
            );
        }
        Arc::new(Batch { source: "bench".into(), families: vec![f] })
    };
    let mut group = c.benchmark_group("remote_write_accept");
    group.throughput(Throughput::Elements(2000));
    group.bench_function(BenchmarkId::new("wal_append", 2000), |b| {
        b.iter_batched(&mut make, |batch| sink.accept(&batch), criterion::BatchSize::SmallInput)
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The queue side, as it runs: a WAL record of 2000 series split into its
/// series (bytes shared, labels hashed for the shard bucket), then the 1.0
/// request built from those bytes and compressed.
fn decode(c: &mut Criterion) {
    use prost::Message;
    use vantage::sinks::remote_write::proto::{split_record, WalRecord};
    let body = bytes::Bytes::from(WalRecord { series: batch(), kinds: vec![1; 2000] }.encode_to_vec());
    let mut group = c.benchmark_group("remote_write_queue");
    group.throughput(Throughput::Elements(2000));
    group.bench_function(BenchmarkId::new("split_record", 2000), |b| b.iter(|| split_record(&body).unwrap().0.len()));
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    group.bench_function(BenchmarkId::new("split_encode_v1_snappy", 2000), |b| {
        b.iter(|| {
            let (series, _) = split_record(&body).unwrap();
            enc.v1_raw(series.iter().map(|s| &s.bytes[..]), &mut out);
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, encode, accept, decode);
criterion_main!(benches);
