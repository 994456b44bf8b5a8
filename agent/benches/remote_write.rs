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

criterion_group!(benches, encode);
criterion_main!(benches);
