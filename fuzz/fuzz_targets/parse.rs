//! Fuzzes the scrape parser in both formats and both OpenMetrics levels:
//! it must never panic and never report more samples than it handed out.
//! Run: `cd fuzz && cargo +nightly fuzz run parse -- -max_total_time=600`.
#![no_main]

// The parser and the sample model it uses, compiled straight from the
// agent's sources so the fuzz build does not need the whole agent.
#[allow(dead_code)]
#[path = "../../agent/src/sample.rs"]
mod sample;
#[allow(dead_code)]
#[path = "../../agent/src/exposition.rs"]
mod exposition;
// unused_imports: the fuzz target uses only part of what the parser re-exports.
#[allow(dead_code, unused_imports)]
#[path = "../../agent/src/sources/scrape/parser/mod.rs"]
mod parser;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [parser::Format::Prometheus, parser::Format::OpenMetrics] {
        for strict in [false, true] {
            let mut seen = 0usize;
            let result = parser::parse(data, format, strict, |e| {
                if let parser::Event::Sample { labels, .. } = e {
                    seen += 1;
                    assert!(labels.len() <= data.len());
                }
            });
            match result {
                Ok(n) => assert_eq!(n, seen),
                // A sample line that fails on its name still counts, as in Prometheus.
                Err(e) => assert!(e.samples_before == seen || e.samples_before == seen + 1),
            }
        }
    }
});
