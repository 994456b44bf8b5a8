//! The scrape cache: a second scrape of the same body builds nothing per
//! series (counted by the allocator below), a changed value is seen, a
//! changed label set is relabeled again, a vanished series gets its stale
//! marker, a change of the relabel rules invalidates the cache, and a
//! target past its sample_limit stops before caching its body.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use vantage::relabel::{RelabelConfig, Relabeler};
use vantage::sample::{is_stale, Family, Labels};
use vantage::sources::scrape::cache::Cache;
use vantage::sources::scrape::ingest::{ingest, IngestError, Ingested, Options};
use vantage::sources::scrape::parser::Format;

/// The system allocator, counting the allocations of the thread that
/// turned counting on (the tests run on threads of their own).
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread, and its result.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    // Other test threads may count too: they run their own bodies, so
    // the count is taken with a lock that every counting test holds.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let before = ALLOCS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCS.load(Ordering::Relaxed) - before, out)
}

/// A body of `n` series shaped like a service's: a histogram and a
/// counter, 3-5 labels each, `value` added to every value.
fn body(n: usize, value: f64) -> String {
    let mut out = String::from("# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n");
    let les = ["0.1", "1", "+Inf"];
    let mut i = 0;
    let mut route = 0;
    while i + les.len() + 2 <= n / 2 {
        for le in les {
            out.push_str(&format!(
                "lat_seconds_bucket{{route=\"/api/{route}\",le=\"{le}\"}} {}\n",
                route as f64 + value
            ));
        }
        out.push_str(&format!("lat_seconds_sum{{route=\"/api/{route}\"}} {}\n", value));
        out.push_str(&format!("lat_seconds_count{{route=\"/api/{route}\"}} {}\n", value));
        i += les.len() + 2;
        route += 1;
    }
    out.push_str("# TYPE orders_total counter\n");
    while i < n {
        out.push_str(&format!(
            "orders_total{{market=\"M{}\",side=\"buy\",shard=\"{}\"}} {}\n",
            i,
            i % 16,
            i as f64 + value
        ));
        i += 1;
    }
    out
}

fn rename_shard() -> Relabeler {
    Relabeler::new(&[RelabelConfig {
        source_labels: vec!["shard".into()],
        target_label: Some("partition".into()),
        ..Default::default()
    }])
    .unwrap()
}

fn opts<'r>(target: &'r Labels, relabel: &'r Relabeler) -> Options<'r> {
    Options {
        format: Format::Prometheus,
        scrape_ms: 1000,
        honor_timestamps: true,
        honor_labels: false,
        target_labels: target,
        metric_relabel: relabel,
        sample_limit: 0,
        label_limit: 0,
    }
}

/// One good scrape through `cache`: what goes out (samples and stale
/// markers) as `series value` lines.
fn scrape(body: &str, opts: &Options<'_>, cache: &mut Cache) -> (Ingested, Vec<Family>) {
    let out = ingest(body.as_bytes(), opts, cache).unwrap();
    let mut families = out.families.clone();
    cache.finish_good(&mut families, opts.scrape_ms);
    (out, families)
}

fn lines(families: &[Family]) -> Vec<String> {
    families
        .iter()
        .flat_map(|f| f.samples.iter())
        .map(|s| if is_stale(s.value) { format!("{} stale", s.labels) } else { format!("{} {}", s.labels, s.value) })
        .collect()
}

#[test]
fn second_scrape_of_the_same_body_allocates_nothing_per_series() {
    const N: usize = 20_000;
    let target = Labels::from_pairs([("job", "app"), ("instance", "10.0.0.1:3000")]);
    let relabel = rename_shard();
    let o = opts(&target, &relabel);
    let text = body(N, 0.0);
    let mut cache = Cache::new(0);
    let (cold, first) = allocations(|| ingest(text.as_bytes(), &o, &mut cache).unwrap());
    assert_eq!(first.scraped, N);
    cache.finish_good(&mut Vec::new(), 1000);
    assert_eq!((cache.entries(), cache.series()), (N, N));
    let mut o2 = opts(&target, &relabel);
    o2.scrape_ms = 2000;
    let (warm, second) = allocations(|| ingest(text.as_bytes(), &o2, &mut cache).unwrap());
    let mut stale = Vec::new();
    let (sweep, ()) = allocations(|| cache.finish_good(&mut stale, 2000));
    assert!(stale.is_empty());
    assert_eq!(second.kept, N);
    println!(
        "allocations per series: first scrape {:.3}, second {:.5} ({warm} in all), sweep {sweep}",
        cold as f64 / N as f64,
        warm as f64 / N as f64
    );
    // What remains is per family (names, sample vectors growing), not per
    // series: two families here.
    assert!(warm < 100, "second scrape made {warm} allocations for {N} series");
    assert_eq!(sweep, 0);
    assert!(cold > 2 * N, "the first scrape builds every series ({cold} allocations)");
    // The same samples, apart from the timestamp, their label sets shared
    // with the cache rather than copied.
    let pairs = |i: &Ingested| -> Vec<(String, f64)> {
        i.families.iter().flat_map(|f| f.samples.iter()).map(|s| (s.labels.to_string(), s.value)).collect()
    };
    assert_eq!(pairs(&first), pairs(&second));
    assert!(second
        .families
        .iter()
        .flat_map(|f| f.samples.iter())
        .all(|s| s.labels.is_shared() && s.timestamp_ms == 2000));
}

#[test]
fn values_label_changes_and_vanished_series() {
    let target = Labels::from_pairs([("job", "app")]);
    let relabel = rename_shard();
    let o = opts(&target, &relabel);
    let mut cache = Cache::new(0);
    let (_, first) = scrape("a{shard=\"1\"} 1\na{shard=\"2\"} 2\nb 3\n", &o, &mut cache);
    assert_eq!(
        lines(&first),
        [
            "a{job=\"app\", partition=\"1\", shard=\"1\"} 1",
            "a{job=\"app\", partition=\"2\", shard=\"2\"} 2",
            "b{job=\"app\"} 3"
        ]
    );
    // New values; shard 2 becomes 3 (relabeled like any new series); b
    // goes away; the same series written differently is the same series.
    let (out, second) = scrape("a{shard=\"1\"} 10\na{shard=\"3\"} 30\n", &o, &mut cache);
    assert_eq!(out.scraped, 2);
    assert_eq!(
        lines(&second)[..2],
        ["a{job=\"app\", partition=\"1\", shard=\"1\"} 10", "a{job=\"app\", partition=\"3\", shard=\"3\"} 30"]
    );
    assert_eq!(cache.added(), 1);
    // The stale markers follow, in no particular order.
    let mut gone: Vec<String> = lines(&second)[2..].to_vec();
    gone.sort();
    assert_eq!(gone, ["a{job=\"app\", partition=\"2\", shard=\"2\"} stale", "b{job=\"app\"} stale"]);
    assert_eq!((cache.entries(), cache.series()), (2, 2));
    let (_, third) = scrape("a{ shard = \"1\" } 11\na{shard=\"3\"} 31\n", &o, &mut cache);
    assert_eq!(
        lines(&third),
        ["a{job=\"app\", partition=\"1\", shard=\"1\"} 11", "a{job=\"app\", partition=\"3\", shard=\"3\"} 31"]
    );
    assert_eq!(cache.added(), 0, "a series written differently is not a new series");
}

#[test]
fn a_change_of_relabel_rules_invalidates_the_cache() {
    let target = Labels::from_pairs([("job", "app")]);
    let rename = rename_shard();
    let mut cache = Cache::new(0);
    let text = "a{shard=\"1\"} 1\n";
    let (_, first) = scrape(text, &opts(&target, &rename), &mut cache);
    assert_eq!(lines(&first), ["a{job=\"app\", partition=\"1\", shard=\"1\"} 1"]);
    let drop_a = Relabeler::new(&[RelabelConfig {
        source_labels: vec!["__name__".into()],
        regex: Some("a".into()),
        action: Some("drop".into()),
        ..Default::default()
    }])
    .unwrap();
    let (out, second) = scrape(text, &opts(&target, &drop_a), &mut cache);
    assert_eq!((out.scraped, out.kept), (1, 0));
    assert_eq!(lines(&second), ["a{job=\"app\", partition=\"1\", shard=\"1\"} stale"]);
    let none = Relabeler::default();
    let (_, third) = scrape(text, &opts(&target, &none), &mut cache);
    assert_eq!(lines(&third), ["a{job=\"app\", shard=\"1\"} 1"]);
    // Other target labels invalidate too.
    let other = Labels::from_pairs([("job", "other")]);
    let (_, fourth) = scrape(text, &opts(&other, &none), &mut cache);
    let mut l = lines(&fourth);
    l.sort();
    assert_eq!(l, ["a{job=\"app\", shard=\"1\"} stale", "a{job=\"other\", shard=\"1\"} 1"]);
}

#[test]
fn a_failed_scrape_marks_everything_stale_once_and_keeps_the_cache() {
    let target = Labels::from_pairs([("job", "app")]);
    let none = Relabeler::default();
    let o = opts(&target, &none);
    let mut cache = Cache::new(0);
    scrape("a 1\nb 2\n", &o, &mut cache);
    let err = ingest(b"a 1\nc 3\nb{ 2\n", &o, &mut cache).unwrap_err();
    assert!(matches!(err, IngestError::Parse { .. }), "{err}");
    let mut families = Vec::new();
    cache.finish_failed(&mut families, 5);
    let mut l = lines(&families);
    l.sort();
    assert_eq!(l, ["a{job=\"app\"} stale", "b{job=\"app\"} stale"], "c was never sent: no marker");
    cache.finish_failed(&mut families, 6);
    assert_eq!(families.iter().map(|f| f.samples.len()).sum::<usize>(), 2, "one marker per series");
    let (_, back) = scrape("a 1\n", &o, &mut cache);
    assert_eq!(lines(&back), ["a{job=\"app\"} 1"], "b's marker went out already");
    assert_eq!(cache.added(), 0);
}

#[test]
fn sample_limit_stops_the_body_before_caching_it() {
    let target = Labels::from_pairs([("job", "app")]);
    let none = Relabeler::default();
    let mut o = opts(&target, &none);
    o.sample_limit = 1000;
    let mut cache = Cache::new(o.sample_limit);
    let small = body(1000, 0.0);
    scrape(&small, &o, &mut cache);
    assert_eq!(cache.series(), 1000);
    let huge = body(200_000, 1.0);
    let err = ingest(huge.as_bytes(), &o, &mut cache).unwrap_err();
    assert!(matches!(err, IngestError::SampleLimit { limit: 1000, scraped: 1001 }), "{err:?}");
    assert!(cache.entries() <= 2001, "{} entries after the limit", cache.entries());
    let mut families = Vec::new();
    cache.finish_failed(&mut families, 5);
    assert_eq!(families.iter().map(|f| f.samples.len()).sum::<usize>(), 1000);
    assert_eq!(cache.series(), 1000);
}
