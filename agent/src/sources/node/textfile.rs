//! `textfile`: metrics from `*.prom` files in a directory (written by cron
//! jobs and scripts), as node_exporter's textfile collector reads them. A
//! file that does not parse, or carries timestamps, is skipped whole and
//! sets node_textfile_scrape_error.

use std::path::{Path, PathBuf};

use super::{NodeConfig, NodeError, Out, Sub};
use crate::sample::MetricType;

/// The `textfile` collector.
pub(super) struct Textfile {
    dir: Option<PathBuf>,
}

impl Textfile {
    pub fn new(c: &NodeConfig) -> Self {
        Textfile { dir: c.textfile_directory.clone() }
    }
}

/// One sample of a text file.
#[derive(Debug, PartialEq)]
pub(super) struct Line {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A family of a text file.
#[derive(Debug, PartialEq)]
pub(super) struct Parsed {
    pub name: String,
    pub kind: MetricType,
    pub help: Option<String>,
    pub samples: Vec<Line>,
}

fn kind_of(text: &str) -> Option<MetricType> {
    Some(match text {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "summary" => MetricType::Summary,
        "untyped" => MetricType::Untyped,
        _ => return None,
    })
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn unescape_help(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\\\", "\\")
}

/// Parses `name{a="b",...} value` (no timestamp allowed).
fn parse_sample(line: &str) -> Result<Line, String> {
    let name_end = line.find(|c: char| c == '{' || c.is_ascii_whitespace()).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=').ok_or("label without '='")?;
            let lname = rest[..eq].trim();
            if !valid_name(lname) || lname.contains(':') {
                return Err(format!("invalid label name {lname:?}"));
            }
            rest = rest[eq + 1..].trim_start().strip_prefix('"').ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated label value".into()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            rest = &rest[end + 1..];
            labels.push((lname.to_string(), value));
        }
    }
    let mut parts = rest.split_ascii_whitespace();
    let value = parts.next().ok_or("no value")?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
    };
    if parts.next().is_some() {
        return Err("client-side timestamps are not supported".into());
    }
    Ok(Line { name: name.to_string(), labels, value })
}

/// Parses a whole text file into families.
pub(super) fn parse(text: &str) -> Result<Vec<Parsed>, String> {
    let mut families: Vec<Parsed> = Vec::new();
    let find = |families: &mut Vec<Parsed>, name: &str| -> usize {
        match families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                families.push(Parsed {
                    name: name.to_string(),
                    kind: MetricType::Untyped,
                    help: None,
                    samples: Vec::new(),
                });
                families.len() - 1
            }
        }
    };
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", n + 1);
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), help) => {
                    let i = find(&mut families, name);
                    families[i].help = Some(unescape_help(help.unwrap_or("")));
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    let kind = kind_of(kind.trim()).ok_or_else(|| at(format!("unknown type {kind:?}")))?;
                    let i = find(&mut families, name);
                    if !families[i].samples.is_empty() {
                        return Err(at(format!("TYPE for {name} after its samples")));
                    }
                    families[i].kind = kind;
                }
                _ => {}
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        // Histogram and summary series belong to their family.
        let family = families
            .iter()
            .position(|f| {
                f.name == sample.name
                    || matches!(f.kind, MetricType::Histogram | MetricType::Summary)
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| sample.name.strip_suffix(s) == Some(f.name.as_str()))
            })
            .unwrap_or_else(|| find(&mut families, &sample.name.clone()));
        families[family].samples.push(sample);
    }
    families.retain(|f| !f.samples.is_empty());
    Ok(families)
}

fn mtime(path: &Path) -> std::io::Result<f64> {
    let m = std::fs::metadata(path)?.modified()?;
    // Whole seconds, as node_exporter reports them.
    Ok(m.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as f64)
}

impl Sub for Textfile {
    fn name(&self) -> &'static str {
        "textfile"
    }

    fn update(&mut self, out: &mut Out<'_>) -> Result<(), NodeError> {
        let mut error = false;
        let mut mtimes: Vec<(String, f64)> = Vec::new();
        let mut parsed: Vec<(String, Vec<Parsed>)> = Vec::new();
        if let Some(dir) = &self.dir {
            match std::fs::read_dir(dir) {
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "textfile directory unreadable");
                    error = true;
                }
                Ok(entries) => {
                    let mut files: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "prom"))
                        .collect();
                    files.sort();
                    for path in files {
                        // node_exporter 1.5 labels mtimes with the full path.
                        let name = path.display().to_string();
                        let result = std::fs::read_to_string(&path).map_err(|e| e.to_string()).and_then(|t| parse(&t));
                        match (result, mtime(&path)) {
                            (Ok(families), Ok(m)) => {
                                mtimes.push((name, m));
                                parsed.push((path.display().to_string(), families));
                            }
                            (Err(e), _) => {
                                tracing::debug!(file = %path.display(), error = %e, "textfile skipped");
                                error = true;
                            }
                            (_, Err(e)) => {
                                tracing::debug!(file = %path.display(), error = %e, "textfile skipped");
                                error = true;
                            }
                        }
                    }
                }
            }
        }
        let from = out.mark();
        for (file, families) in &parsed {
            for f in families {
                let help = f.help.clone().unwrap_or_else(|| format!("Metric read from {file}"));
                for s in &f.samples {
                    let pairs: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    out.add_series(from, &f.name, f.kind, &help, &s.name, &pairs, s.value);
                }
            }
        }
        if !mtimes.is_empty() {
            out.family(
                "node_textfile_mtime_seconds",
                MetricType::Gauge,
                "Unixtime mtime of textfiles successfully read.",
            );
            for (file, m) in &mtimes {
                out.add(&[("file", file)], *m);
            }
        }
        out.single(
            "node_textfile_scrape_error",
            MetricType::Gauge,
            "1 if there was an error opening or reading a file, 0 otherwise",
            &[],
            if error { 1.0 } else { 0.0 },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{run, run_families, value, Tree};
    use super::*;

    #[test]
    fn parses_families_labels_and_histograms() {
        let text = "# HELP backup_ok Last backup worked.\n# TYPE backup_ok gauge\nbackup_ok{db=\"main\",path=\"/a \\\"b\\\"\"} 1\nbackup_ok{db=\"logs\"} 0\n\
                    # TYPE lat histogram\nlat_bucket{le=\"1\"} 2\nlat_bucket{le=\"+Inf\"} 3\nlat_sum 4.5\nlat_count 3\nplain 7\n";
        let f = parse(text).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].help.as_deref(), Some("Last backup worked."));
        assert_eq!(
            f[0].samples[0].labels,
            [("db".to_string(), "main".to_string()), ("path".into(), "/a \"b\"".into())]
        );
        assert_eq!(f[1].kind, MetricType::Histogram);
        assert_eq!(f[1].samples.len(), 4);
        assert_eq!(f[2].kind, MetricType::Untyped);
        assert!(parse("x 1 1700000000000\n").unwrap_err().contains("timestamps"));
        assert!(parse("x{a=\"b} 1\n").is_err());
        assert!(parse("9x 1\n").is_err());
        assert!(parse("x abc\n").is_err());
    }

    #[test]
    fn directory_with_a_bad_file() {
        let t = Tree::new("textfile");
        t.write(
            "tf/good.prom",
            "# HELP backup_ok Last backup worked.\n# TYPE backup_ok gauge\nbackup_ok{db=\"main\"} 1\n",
        );
        t.write("tf/nohelp.prom", "jobs_done_total 5\n");
        t.write("tf/bad.prom", "broken{ 1\n");
        t.write("tf/ignored.txt", "x 1\n");
        let config = NodeConfig { textfile_directory: Some(t.0.join("tf")), ..t.config() };
        let mut c = Textfile::new(&config);
        let got = run(&mut c).unwrap();
        assert_eq!(value(&got, "backup_ok{db=\"main\"}"), 1.0);
        assert_eq!(value(&got, "jobs_done_total{}"), 5.0);
        assert_eq!(value(&got, "node_textfile_scrape_error{}"), 1.0);
        let series =
            format!("node_textfile_mtime_seconds{{file={:?}}}", t.0.join("tf/good.prom").display().to_string());
        assert!(value(&got, &series) > 1.6e9);
        assert!(!got.iter().any(|(s, _)| s.contains("bad.prom") || s.contains("broken")));
        let (families, _) = run_families(&mut c);
        let nohelp = families.iter().find(|f| f.name == "jobs_done_total").unwrap();
        assert_eq!(nohelp.help, format!("Metric read from {}", t.0.join("tf/nohelp.prom").display()));
        std::fs::remove_file(t.0.join("tf/bad.prom")).unwrap();
        assert_eq!(value(&run(&mut c).unwrap(), "node_textfile_scrape_error{}"), 0.0);
        // No directory configured: only the error gauge, at 0.
        let got = run(&mut Textfile::new(&t.config())).unwrap();
        assert_eq!(got, [("node_textfile_scrape_error{}".to_string(), 0.0)]);
    }
}
