//! Metric names in PromQL expressions and in exposition text, for tests
//! that check that what dashboards and rules query is what Vantage
//! produces.

use std::collections::BTreeSet;

/// Words that are never metric names: operators, modifiers, and the
/// aggregation operators (`sum by (le) (..)` puts a clause before the
/// parenthesis).
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// Keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// Metric names in a PromQL expression: identifiers outside strings, label
/// matchers `{..}`, ranges `[..]` and label lists, not followed by `(`.
pub fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let mut label_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '(' if label_list => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                i += 1;
                label_list = false;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let lower = word.to_ascii_lowercase();
                if KEYWORDS.contains(&lower.as_str()) {
                    label_list = LABEL_LISTS.contains(&lower.as_str());
                } else if chars.get(j) != Some(&'(') {
                    names.push(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // Numbers and durations (5m) are not names.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            '$' => {
                // Grafana variables ($__rate_interval) outside ranges.
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Series names in exposition text (`x_bucket`, `x_sum`, ... as written).
pub fn exposed_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// What `vantage collect --once` prints on the embedded default (node,
/// eBPF, Docker).
pub fn collected_names() -> BTreeSet<String> {
    // Traffic while the programs count, until the collection is printed:
    // refused loopback connections (the kernel drops the SYNs, reason
    // no_socket, so ebpf_skb_drops_total has a series) and fsynced writes
    // (requests on the disk under the temp dir, so the block histograms
    // have one), as on any host that does anything. A quiet CI machine
    // otherwise may see no disk request in the 300 ms window.
    let port = crate::free_port();
    let dir = crate::TempDir::new("collect-io");
    let file = dir.path().join("poke");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poke = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(&file).unwrap();
            let block = vec![7u8; 4096];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::net::TcpStream::connect(("127.0.0.1", port));
                f.write_all(&block).unwrap();
                f.sync_all().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
        })
    };
    let out = crate::vantage(&["collect", "--once"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    poke.join().unwrap();
    assert!(out.status.success(), "collect --once: {}", String::from_utf8_lossy(&out.stderr));
    exposed_names(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_expressions() {
        assert_eq!(
            metric_names(r#"histogram_quantile(0.99, sum without (op, job) (rate(x_bucket{a=~"b",c="d(e"}[5m])))"#),
            ["x_bucket"]
        );
        assert_eq!(metric_names("time() - a_seconds{x=\"1\"} > 300 and b > 64 * 1024"), ["a_seconds", "b"]);
        assert_eq!(metric_names("a:b:rate5m / ignoring (instance, job)\n  sum by (x) (c)"), ["a:b:rate5m", "c"]);
    }
}
