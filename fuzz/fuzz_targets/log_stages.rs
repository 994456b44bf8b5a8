//! The log stages on arbitrary lines: regex, json, logfmt, level,
//! timestamp (fixed names and a strftime layout taken from the input) and
//! multiline joining. The first input line picks the timestamp layout; the
//! rest are log lines. Nothing may panic, a kept record keeps a line, and
//! multiline never joins more than max_lines lines.
//! Run: `cd fuzz && cargo +nightly fuzz run log_stages -- -max_total_time=600`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use vantage::logs::stages::{MultilineState, Pipeline, Record, StageConfig, StageStats};
use vantage::sample::Labels;

#[derive(Deserialize)]
struct Wrap {
    stages: Vec<StageConfig>,
}

/// Pipelines from the unit tests' configurations.
const FIXED: &str = r#"
[[stages]]
type = "multiline"
firstline = '^(\{|\[|\d{4}-\d{2}-\d{2})'
max_lines = 5
[[stages]]
type = "json"
expressions = { level = "", user = "ctx.user", t = "time" }
[[stages]]
type = "regex"
expression = '^(?P<ip>\S+) \[(?P<lvl>\w+)\] (?P<msg>.*)$'
[[stages]]
type = "logfmt"
mapping = { lvl = "level" }
[[stages]]
type = "level"
[[stages]]
type = "timestamp"
source = "t"
format = "RFC3339Nano"
fallback_formats = ["Unix", "UnixMs", "%Y-%m-%d %H:%M:%S%.f", "%d/%b/%Y:%H:%M:%S %z"]
location = "+02:00"
[[stages]]
type = "labels"
values = { lvl = "", user = "" }
[[stages]]
type = "drop"
longer_than = 4000
"#;

fn fixed() -> &'static (Pipeline, Option<vantage::logs::stages::Multiline>) {
    static P: OnceLock<(Pipeline, Option<vantage::logs::stages::Multiline>)> = OnceLock::new();
    P.get_or_init(|| {
        let w: Wrap = toml::from_str(FIXED).unwrap();
        Pipeline::new(&w.stages, "fuzz").unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let layout = lines.next().unwrap_or_default();
    let stats = StageStats::default();
    // A pipeline with the input's own timestamp layout, when it is a valid one.
    let own: Option<Wrap> = toml::from_str(&format!(
        "[[stages]]\ntype = \"logfmt\"\n[[stages]]\ntype = \"timestamp\"\nsource = \"t\"\nformat = {layout:?}\n"
    ))
    .ok();
    let own = own.and_then(|w| Pipeline::new(&w.stages, "fuzz").ok());
    let (pipeline, multiline) = fixed();
    let multiline = multiline.as_ref().unwrap();
    let mut state = MultilineState::default();
    let mut joined = Vec::new();
    for (i, line) in lines.enumerate() {
        if let Some(j) = state.push(multiline, line.to_string(), 1_000, i as u64) {
            joined.push(j);
        }
        if let Some((p, _)) = &own {
            let mut rec = Record::new(line.to_string(), Labels::default(), 1_000);
            p.run(&mut rec, &stats);
        }
    }
    joined.extend(state.take());
    for (line, read_ns, _) in joined {
        assert!(line.split('\n').count() <= 5, "more than max_lines joined: {line:?}");
        let mut rec = Record::new(line, Labels::default(), read_ns);
        pipeline.run(&mut rec, &stats);
    }
});
