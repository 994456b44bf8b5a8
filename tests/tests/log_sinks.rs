//! Two log sinks at once: the agent library runs in-process with an
//! in-test log sink beside Loki (the in-test receiver, real protobuf +
//! snappy), tails a real file, and every line must reach both, once each,
//! in order, with the labels each sink is meant to see. A position is
//! committed only once both have the line, so a sink that holds back its
//! receipts holds the positions file back too.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vantage::logline::{LogEntry, Receipt};
use vantage::sinks::LogSink;
use vantage_tests::loki::Loki;
use vantage_tests::{wait_for, TempDir};

/// What the in-test sink saw of one entry.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    labels: BTreeMap<String, String>,
    line: String,
}

/// The in-test log sink: records every line, and finishes its receipts
/// at once unless told to hold them.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    hold: std::sync::atomic::AtomicBool,
    held: Mutex<Vec<Receipt>>,
}

impl LogSink for Recorder {
    fn accept(&self, entry: LogEntry, receipt: Receipt) {
        if let Some(line) = entry.line {
            let labels = entry.labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect();
            self.seen.lock().unwrap().push(Seen { labels, line });
        }
        if self.hold.load(std::sync::atomic::Ordering::SeqCst) {
            self.held.lock().unwrap().push(receipt);
        } else {
            receipt.done();
        }
    }
}

impl Recorder {
    fn lines(&self) -> Vec<String> {
        self.seen.lock().unwrap().iter().map(|s| s.line.clone()).collect()
    }

    fn release(&self) {
        self.hold.store(false, std::sync::atomic::Ordering::SeqCst);
        self.held.lock().unwrap().drain(..).for_each(Receipt::done);
    }
}

fn config(dir: &Path, loki: &Loki, log: &Path) -> vantage::config::Config {
    let text = format!(
        r#"
[agent]
listen_addr = "127.0.0.1:0"
data_dir = "{data}"
external_labels = {{ server_name = "test-host", environment = "ci" }}

[node]
enabled = false
[ebpf]
enabled = false
[docker]
enabled = false

[loki]
url = "{url}"
batch_wait = "200ms"
min_backoff = "100ms"
max_backoff = "1s"

[logs]
positions_sync_period = "100ms"

[[logs.files]]
name = "app"
paths = ["{log}"]
labels = {{ job = "app" }}
"#,
        data = dir.join("data").display(),
        url = loki.url(),
        log = log.display(),
    );
    vantage::config::Config::from_text(&text, "log_sinks.toml", &vantage::config::Vars::from_map(Default::default()))
        .expect("test configuration is valid")
}

/// Runs the agent library with `extra` beside Loki until the returned
/// token is cancelled; the thread ends once the agent has flushed.
fn start(
    config: vantage::config::Config,
    extra: Arc<Recorder>,
) -> (tokio_util::sync::CancellationToken, std::thread::JoinHandle<()>) {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let sinks: Vec<Arc<dyn LogSink>> = vec![extra];
            vantage::run_with_log_sinks(config, listener, stop, vantage::Reload::new(None), sinks)
                .await
                .expect("agent runs");
        });
    });
    (shutdown, thread)
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The offset the positions file holds for `log` (0 when none yet).
fn saved_offset(positions: &Path, log: &Path) -> u64 {
    let Ok(text) = std::fs::read_to_string(positions) else { return 0 };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let files = v["files"].as_array().cloned().unwrap_or_default();
    files.iter().filter(|f| f["path"].as_str() == log.to_str()).filter_map(|f| f["offset"].as_u64()).max().unwrap_or(0)
}

#[test]
fn every_line_reaches_loki_and_a_second_sink_once_in_order() {
    let dir = TempDir::new("log-sinks");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    let first: Vec<String> = (0..200).map(|i| format!("line {i:03} of the first write")).collect();
    append(&log, &first.iter().map(|l| format!("{l}\n")).collect::<String>());
    let recorder = Arc::new(Recorder::default());
    let (shutdown, thread) = start(config(dir.path(), &loki, &log), recorder.clone());

    let second: Vec<String> = (0..300).map(|i| format!("line {i:03} written while tailing")).collect();
    wait_for(Duration::from_secs(10), || (recorder.lines().len() >= first.len()).then_some(()))
        .unwrap_or_else(|| panic!("the second sink got {} of {} lines", recorder.lines().len(), first.len()));
    for chunk in second.chunks(50) {
        append(&log, &chunk.iter().map(|l| format!("{l}\n")).collect::<String>());
        std::thread::sleep(Duration::from_millis(30));
    }
    let want: Vec<String> = first.iter().chain(&second).cloned().collect();
    let loki_lines = || loki.entries().into_iter().map(|e| e.line).collect::<Vec<_>>();
    wait_for(Duration::from_secs(15), || {
        (loki_lines().len() >= want.len() && recorder.lines().len() >= want.len()).then_some(())
    })
    .unwrap_or_else(|| {
        panic!("Loki got {}, the second sink {}, of {}", loki_lines().len(), recorder.lines().len(), want.len())
    });
    // Give a duplicate the time to show up.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(loki_lines(), want, "Loki: every line once, in order");
    assert_eq!(recorder.lines(), want, "second sink: every line once, in order");

    let filename = log.to_str().unwrap();
    for e in loki.entries() {
        assert_eq!(e.labels.get("job").map(String::as_str), Some("app"));
        assert_eq!(e.labels.get("filename").map(String::as_str), Some(filename));
        // Loki adds the external labels to every stream.
        assert_eq!(e.labels.get("server_name").map(String::as_str), Some("test-host"));
        assert_eq!(e.labels.get("environment").map(String::as_str), Some("ci"));
    }
    let loki_labels = loki.entries()[0].labels.clone();
    for s in recorder.seen.lock().unwrap().iter() {
        assert_eq!(s.labels.get("job").map(String::as_str), Some("app"));
        assert_eq!(s.labels.get("filename").map(String::as_str), Some(filename));
        // The source's labels only: external labels are Loki's to add.
        let mut expected = loki_labels.clone();
        expected.remove("server_name");
        expected.remove("environment");
        assert_eq!(s.labels, expected, "the same stream as Loki's, without the external labels");
    }
    shutdown.cancel();
    thread.join().unwrap();
}

#[test]
fn a_position_waits_for_every_sink() {
    let dir = TempDir::new("log-sinks-hold");
    let loki = Loki::start();
    let log = dir.path().join("app.log");
    let positions = dir.path().join("data").join("positions.json");
    let lines: String = (0..50).map(|i| format!("held line {i:02}\n")).collect();
    append(&log, &lines);
    let recorder = Arc::new(Recorder::default());
    recorder.hold.store(true, std::sync::atomic::Ordering::SeqCst);
    let (shutdown, thread) = start(config(dir.path(), &loki, &log), recorder.clone());

    wait_for(Duration::from_secs(10), || (loki.count() >= 50 && recorder.lines().len() >= 50).then_some(()))
        .unwrap_or_else(|| panic!("Loki got {}, the second sink {}", loki.count(), recorder.lines().len()));
    // Loki has every line, the second sink has not finished one: the
    // positions file must not move past what both have.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(saved_offset(&positions, &log), 0, "positions moved before the second sink acknowledged");

    recorder.release();
    let size = std::fs::metadata(&log).unwrap().len();
    wait_for(Duration::from_secs(5), || (saved_offset(&positions, &log) == size).then_some(())).unwrap_or_else(|| {
        panic!(
            "positions hold {} after both sinks acknowledged, want {size}: {}",
            saved_offset(&positions, &log),
            std::fs::read_to_string(&positions).unwrap_or_default()
        )
    });
    shutdown.cancel();
    thread.join().unwrap();
}
