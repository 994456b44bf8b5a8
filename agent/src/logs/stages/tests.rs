//! Table-driven tests: each stage with good and malformed input.

use super::*;
use std::time::Instant;

/// Builds a pipeline from TOML `[[stages]]` text.
fn pipeline(toml_text: &str) -> (Pipeline, Option<Multiline>) {
    #[derive(Deserialize)]
    struct Wrap {
        stages: Vec<StageConfig>,
    }
    let w: Wrap = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    Pipeline::new(&w.stages, "test").unwrap_or_else(|e| panic!("{e:?}"))
}

fn problems(toml_text: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Wrap {
        stages: Vec<StageConfig>,
    }
    match toml::from_str::<Wrap>(toml_text) {
        Ok(w) => Pipeline::new(&w.stages, "test").err().unwrap_or_default(),
        Err(e) => vec![e.to_string()],
    }
}

const READ_NS: i64 = 1_000;

struct Out {
    kept: bool,
    rec: Record,
    errors: [u64; 10],
}

fn run(p: &Pipeline, line: &str, labels: &[(&str, &str)]) -> Out {
    let stats = StageStats::default();
    let mut rec = Record::new(line.to_string(), Labels::from_pairs(labels.iter().copied()), READ_NS);
    let kept = p.run(&mut rec, &stats);
    Out { kept, rec, errors: std::array::from_fn(|i| stats.errors[i].load(Ordering::Relaxed)) }
}

fn kind(name: &str) -> usize {
    STAGE_KINDS.iter().position(|k| *k == name).unwrap()
}

/// (line, expected fields, expected error count of the stage kind)
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u64);

fn check_fields(stage: &str, cfg: &str, cases: &[Case]) {
    let (p, _) = pipeline(cfg);
    for (line, want, errs) in cases {
        let out = run(&p, line, &[]);
        assert!(out.kept, "{line:?}");
        let got: Vec<(&str, &str)> = out.rec.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(&got, want, "fields of {line:?}");
        assert_eq!(out.errors[kind(stage)], *errs, "errors for {line:?}");
        assert_eq!(out.rec.line, *line, "the line is unchanged");
    }
}

#[test]
fn regex_named_groups() {
    check_fields(
        "regex",
        "[[stages]]\ntype = \"regex\"\nexpression = '^(?P<ip>\\S+) \\[(?P<lvl>\\w+)\\] (?P<msg>.*)$'",
        &[
            ("10.0.0.1 [WARN] disk full", &[("ip", "10.0.0.1"), ("lvl", "WARN"), ("msg", "disk full")], 0),
            ("10.0.0.1 [] nothing", &[], 1),
            ("", &[], 1),
            ("no brackets at all", &[], 1),
        ],
    );
    assert!(problems("[[stages]]\ntype = \"regex\"\nexpression = '(unclosed'")[0].contains("expression"));
    assert!(problems("[[stages]]\ntype = \"regex\"\nexpression = 'no groups'")[0].contains("named groups"));
}

#[test]
fn json_fields_and_paths() {
    check_fields(
        "json",
        "[[stages]]\ntype = \"json\"\nexpressions = { level = \"\", user = \"ctx.user\", n = \"count\" }",
        &[
            (
                r#"{"level":"info","ctx":{"user":"ana"},"count":3}"#,
                &[("level", "info"), ("n", "3"), ("user", "ana")],
                0,
            ),
            (r#"{"level":"info"}"#, &[("level", "info")], 0),
            (r#"{"level": "info""#, &[], 1),
            ("[1,2,3]", &[], 1),
            ("not json", &[], 1),
            ("", &[], 1),
        ],
    );
    check_fields(
        "json",
        "[[stages]]\ntype = \"json\"",
        &[(
            r#"{"a":"x","b":true,"c":null,"d":{"e":1}}"#,
            &[("a", "x"), ("b", "true"), ("c", ""), ("d", r#"{"e":1}"#)],
            0,
        )],
    );
}

#[test]
fn logfmt_pairs_and_quotes() {
    check_fields(
        "logfmt",
        "[[stages]]\ntype = \"logfmt\"",
        &[
            (r#"level=info msg="hello \"you\"" n=3"#, &[("level", "info"), ("msg", "hello \"you\""), ("n", "3")], 0),
            ("flag other=1", &[("flag", ""), ("other", "1")], 0),
            (r#"a=1 b="unclosed"#, &[("a", "1")], 1),
            ("=novalue", &[], 1),
            (r#"k="a\é b" x=1"#, &[("k", "a\\é b"), ("x", "1")], 0),
            ("ü=ß", &[("ü", "ß")], 0),
            ("", &[], 0),
        ],
    );
    check_fields(
        "logfmt",
        "[[stages]]\ntype = \"logfmt\"\nmapping = { lvl = \"level\" }",
        &[("level=warn x=1", &[("lvl", "warn")], 0)],
    );
}

#[test]
fn labels_and_static_labels() {
    let (p, _) = pipeline(
        "[[stages]]\ntype = \"logfmt\"\n[[stages]]\ntype = \"labels\"\nvalues = { app = \"\", team = \"owner\", missing = \"\" }\n[[stages]]\ntype = \"static_labels\"\nvalues = { env = \"prod\" }",
    );
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("app=web owner=payments", &[("app", "web"), ("env", "prod"), ("job", "x"), ("team", "payments")]),
        ("app= owner=", &[("env", "prod"), ("job", "x")]),
        ("garbage \"", &[("env", "prod"), ("job", "x")]),
    ];
    for (line, want) in cases {
        let out = run(&p, line, &[("job", "x")]);
        let got: Vec<(&str, &str)> = out.rec.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(&got, want, "{line:?}");
    }
    assert!(problems("[[stages]]\ntype = \"labels\"\nvalues = { \"bad-name\" = \"\" }")[0]
        .contains("not a valid label name"));
    assert!(problems("[[stages]]\ntype = \"static_labels\"\nvalues = { \"0x\" = \"v\" }")[0]
        .contains("not a valid label name"));
}

#[test]
fn timestamp_formats_fallbacks_and_zones() {
    let ns = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_nanos_opt().unwrap();
    // (format, input, fallback formats, location, expected nanoseconds)
    type Case<'a> = (&'a str, &'a str, &'a [&'a str], Option<&'a str>, i64);
    let cases: &[Case] = &[
        ("RFC3339", "2024-03-01T10:00:00Z", &[], None, ns("2024-03-01T10:00:00Z")),
        ("RFC3339", "2024-03-01T10:00:00+02:00", &[], None, ns("2024-03-01T08:00:00Z")),
        ("RFC3339Nano", "2024-03-01T10:00:00.123456789Z", &[], None, ns("2024-03-01T10:00:00.123456789Z")),
        ("Unix", "1709287200", &[], None, 1_709_287_200_000_000_000),
        ("Unix", "1709287200.5", &[], None, 1_709_287_200_500_000_000),
        ("UnixMs", "1709287200123", &[], None, 1_709_287_200_123_000_000),
        ("UnixUs", "1709287200123456", &[], None, 1_709_287_200_123_456_000),
        ("UnixNs", "1709287200123456789", &[], None, 1_709_287_200_123_456_789),
        ("%Y-%m-%d %H:%M:%S", "2024-03-01 10:00:00", &[], None, ns("2024-03-01T10:00:00Z")),
        ("%Y-%m-%d %H:%M:%S", "2024-03-01 10:00:00", &[], Some("+02:00"), ns("2024-03-01T08:00:00Z")),
        (
            "%Y-%m-%d %H:%M:%S%.f %z",
            "2024-03-01 10:00:00.250 -0100",
            &[],
            Some("+02:00"),
            ns("2024-03-01T11:00:00.25Z"),
        ),
        ("%d/%b/%Y:%H:%M:%S %z", "01/Mar/2024:10:00:00 +0000", &[], None, ns("2024-03-01T10:00:00Z")),
        ("RFC3339", "1709287200", &["UnixMs", "Unix"], None, 1_709_287_200_000_000),
        // Malformed: the read time stays.
        ("RFC3339", "2024-13-01T10:00:00Z", &[], None, READ_NS),
        ("RFC3339", "yesterday", &["Unix"], None, READ_NS),
        ("Unix", "17092872OO", &[], None, READ_NS),
        ("Unix", "1.2.3", &[], None, READ_NS),
        ("UnixMs", "", &[], None, READ_NS),
        ("UnixNs", "99999999999999999999999", &[], None, READ_NS),
        ("%Y-%m-%d", "2024-03-01", &[], None, READ_NS),
    ];
    for (format, value, fallbacks, location, want) in cases {
        let fb: Vec<String> = fallbacks.iter().map(|f| format!("{f:?}")).collect();
        let loc = location.map(|l| format!("location = {l:?}\n")).unwrap_or_default();
        let (p, _) = pipeline(&format!(
            "[[stages]]\ntype = \"regex\"\nexpression = '^(?P<t>.*)$'\n[[stages]]\ntype = \"timestamp\"\nsource = \"t\"\nformat = {format:?}\nfallback_formats = [{}]\n{loc}",
            fb.join(", ")
        ));
        let out = run(&p, value, &[]);
        assert_eq!(out.rec.timestamp_ns, *want, "{format} {value:?}");
        assert_eq!(out.errors[kind("timestamp")], u64::from(*want == READ_NS), "{format} {value:?}");
    }
    // A missing source field keeps read time too.
    let (p, _) = pipeline("[[stages]]\ntype = \"timestamp\"\nsource = \"nope\"\nformat = \"Unix\"");
    assert_eq!(run(&p, "x", &[]).rec.timestamp_ns, READ_NS);
    assert!(problems(
        "[[stages]]\ntype = \"timestamp\"\nsource = \"t\"\nformat = \"Unix\"\nlocation = \"Europe/Paris\""
    )[0]
    .contains("zone names are not supported"));
}

#[test]
fn output_replaces_the_line() {
    let (p, _) = pipeline("[[stages]]\ntype = \"json\"\n[[stages]]\ntype = \"output\"\nsource = \"msg\"");
    let cases: &[(&str, &str, u64)] =
        &[(r#"{"msg":"hello"}"#, "hello", 0), (r#"{"other":1}"#, r#"{"other":1}"#, 1), ("not json", "not json", 1)];
    for (line, want, errs) in cases {
        let out = run(&p, line, &[]);
        assert_eq!(out.rec.line, *want);
        assert_eq!(out.errors[kind("output")], *errs, "{line:?}");
    }
}

#[test]
fn drop_by_regex_value_length_and_age() {
    let now_ns = crate::sample::now_ms() * 1_000_000;
    let cases: &[(&str, &str, i64, bool)] = &[
        ("expression = 'healthz'", "GET /healthz 200", READ_NS, false),
        ("expression = 'healthz'", "GET /orders 200", READ_NS, true),
        ("longer_than = 10", "short", READ_NS, true),
        ("longer_than = 10", "a line longer than ten", READ_NS, false),
        ("source = \"level\"\nvalue = \"debug\"", "level=debug x=1", READ_NS, false),
        ("source = \"level\"\nvalue = \"debug\"", "level=info x=1", READ_NS, true),
        ("source = \"level\"\nvalue = \"debug\"", "no level at all", READ_NS, true),
        ("older_than = \"1h\"", "old", now_ns - 7_200_000_000_000, false),
        ("older_than = \"1h\"", "fresh", now_ns, true),
        ("expression = 'GET'\nlonger_than = 100", "GET short", READ_NS, true),
        ("expression = ''", "", READ_NS, false),
    ];
    for (cond, line, ts, kept) in cases {
        let (p, _) = pipeline(&format!("[[stages]]\ntype = \"logfmt\"\n[[stages]]\ntype = \"drop\"\n{cond}"));
        let stats = StageStats::default();
        let mut rec = Record::new(line.to_string(), Labels::new(), *ts);
        assert_eq!(p.run(&mut rec, &stats), *kept, "{cond} {line:?}");
        assert_eq!(stats.dropped.load(Ordering::Relaxed), u64::from(!kept));
    }
    assert!(problems("[[stages]]\ntype = \"drop\"")[0].contains("at least one"));
    assert!(problems("[[stages]]\ntype = \"drop\"\nexpression = '['")[0].contains("expression"));
    assert!(!problems("[[stages]]\ntype = \"drop\"\nolder_than = \"soon\"").is_empty());
}

#[test]
fn match_guards_a_sub_list() {
    let (p, _) = pipeline(
        r#"
[[stages]]
type = "match"
selector = '{app="api", env=~"prod|stage"}'
[[stages.stages]]
type = "static_labels"
values = { matched = "yes" }
[[stages]]
type = "match"
selector = '{app!="api", tier!~"front.*"}'
action = "drop"
"#,
    );
    // (labels of the entry, whether the kept entry is marked `matched`; None: dropped)
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<bool>);
    let cases: &[Case] = &[
        (&[("app", "api"), ("env", "prod")], Some(true)),
        (&[("app", "api"), ("env", "dev")], Some(false)),
        (&[("app", "api")], Some(false)),
        (&[("app", "web"), ("tier", "frontend")], Some(false)),
        (&[("app", "web"), ("tier", "back")], None),
    ];
    for (labels, want) in cases {
        let out = run(&p, "x", labels);
        match want {
            None => assert!(!out.kept, "{labels:?} is dropped"),
            Some(m) => {
                assert!(out.kept, "{labels:?}");
                assert_eq!(out.rec.labels.get("matched").is_some(), *m, "{labels:?}");
            }
        }
    }
    for bad in ["app=\"x\"", "{app=x}", "{app=\"x}", "{=\"x\"}", "{app~\"x\"}", "{}", "{a=~\"(\"}"] {
        let p = problems(&format!("[[stages]]\ntype = \"match\"\nselector = '{bad}'"));
        assert!(p.len() == 1 && p[0].contains("selector"), "{bad}: {p:?}");
    }
    assert!(problems("[[stages]]\ntype = \"match\"\nselector = '{a=\"b\"}'\n[[stages.stages]]\ntype = \"multiline\"\nfirstline = 'x'")[0]
        .contains("multiline cannot be inside match"));
}

#[test]
fn multiline_joins_continuations() {
    let (_, ml) =
        pipeline("[[stages]]\ntype = \"multiline\"\nfirstline = '^\\d{4}-'\nmax_lines = 3\nmax_wait = \"50ms\"");
    let ml = ml.unwrap();
    let mut st = MultilineState::default();
    let input = [
        "  orphan continuation", // before any first line: a record of its own
        "2024-01-01 ERROR boom",
        "  at a()",
        "  at b()",
        "  at c()", // max_lines reached after 3: flushed, this one starts a new record
        "2024-01-01 INFO next",
    ];
    let mut out = Vec::new();
    for (i, l) in input.iter().enumerate() {
        if let Some(j) = st.push(&ml, l.to_string(), i as i64, i as u64 * 10) {
            out.push(j);
        }
    }
    assert_eq!(out[0], ("  orphan continuation".into(), 0, 0));
    assert_eq!(out[1], ("2024-01-01 ERROR boom\n  at a()\n  at b()".into(), 1, 30));
    assert_eq!(out[2], ("  at c()".into(), 4, 40), "a continuation after a full record stands alone");
    assert_eq!(out.len(), 3);
    let next = st.push(&ml, "2024-01-02 x".into(), 9, 90).unwrap();
    assert_eq!(next, ("2024-01-01 INFO next".into(), 5, 50));
    assert!(st.due(&ml, Instant::now()).is_none());
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(st.due(&ml, Instant::now()), Some(("2024-01-02 x".into(), 9, 90)));
    assert!(st.take().is_none());
    assert!(problems("[[stages]]\ntype = \"level\"\n[[stages]]\ntype = \"multiline\"\nfirstline = 'x'")[0]
        .contains("first stage"));
    assert!(problems("[[stages]]\ntype = \"multiline\"\nfirstline = '('")[0].contains("firstline"));
}

#[test]
fn level_from_logfmt_json_brackets_and_words() {
    let (p, _) = pipeline("[[stages]]\ntype = \"level\"");
    let cases: &[(&str, &str)] = &[
        ("level=info msg=hi", "info"),
        ("ts=1 level=WARNING msg=x", "warn"),
        ("lvl=err x=1", "error"),
        (r#"level="debug" x"#, "debug"),
        (r#"{"level":"error","msg":"x"}"#, "error"),
        (r#"{"msg":"x", "severity" : "CRITICAL"}"#, "fatal"),
        (r#"{"lvl":"trace"}"#, "debug"),
        ("2024-01-01 12:00:00 [ERROR] db down", "error"),
        ("[main] [warn] slow", "warn"),
        ("2024-01-01T12:00:00Z INFO started", "info"),
        ("WARN: low disk", "warn"),
        ("FATAL panic in worker", "fatal"),
        ("E0101 12:00:00 glog style is not guessed", "unknown"),
        ("nothing here", "unknown"),
        ("an error happened in lowercase prose", "unknown"),
        ("level= msg=empty", "unknown"),
        ("loglevel=info is not the level key", "unknown"),
        (r#"{"level":42}"#, "unknown"),
        (r#"{"level":30,"time":1700000000000,"msg":"pino"}"#, "info"),
        (r#"{"level": 50}"#, "error"),
        (r#"{"level":"#, "unknown"),
        ("[unclosed ERROR", "error"),
        ("", "unknown"),
        ("ünïcödé [ERROR] ✓", "error"),
    ];
    for (line, want) in cases {
        let out = run(&p, line, &[]);
        assert_eq!(out.rec.labels.get("level"), Some(*want), "{line:?}");
        assert_eq!(out.errors[kind("level")], u64::from(*want == "unknown"), "{line:?}");
    }
    // From an extracted field, with a custom label and no default.
    let (p, _) = pipeline("[[stages]]\ntype = \"json\"\n[[stages]]\ntype = \"level\"\nlabel = \"severity\"\nsource = \"s\"\ndefault = \"\"");
    assert_eq!(run(&p, r#"{"s":"Warning"}"#, &[]).rec.labels.get("severity"), Some("warn"));
    assert_eq!(run(&p, r#"{"s":"loud"}"#, &[]).rec.labels.get("severity"), None);
    assert!(problems("[[stages]]\ntype = \"level\"\nlabel = \"a-b\"")[0].contains("not a valid label name"));
}

#[test]
fn unknown_stage_types_and_keys_are_rejected() {
    assert!(problems("[[stages]]\ntype = \"teleport\"")[0].contains("teleport"));
    assert!(problems("[[stages]]\ntype = \"regex\"\nexpression = '(?P<a>x)'\nbogus = 1")[0].contains("bogus"));
}

/// The stage list proposed for config/exchange.toml, on the line shapes the
/// exchange's apps write.
#[test]
fn exchange_stage_list() {
    let (p, ml) = pipeline(
        r#"
[[stages]]
type = "multiline"
firstline = '^(\{|\[|\d{4}-\d{2}-\d{2})'
max_wait = "3s"
[[stages]]
type = "json"
expressions = { timestamp = "time" }
[[stages]]
type = "regex"
expression = '^(?P<timestamp>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)'
[[stages]]
type = "timestamp"
source = "timestamp"
format = "RFC3339Nano"
fallback_formats = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S,%3f", "%Y-%m-%d %H:%M:%S", "UnixMs"]
location = "UTC"
[[stages]]
type = "level"
"#,
    );
    assert!(ml.is_some());
    let cases: &[(&str, i64, &str)] = &[
        (r#"{"level":50,"time":1763937601123,"msg":"order rejected"}"#, 1_763_937_601_123_000_000, "error"),
        ("2025-11-23T22:40:01.5Z WARN kafka lag high", 1_763_937_601_500_000_000, "warn"),
        ("2025-11-23 22:40:01.250 [INFO] matched", 1_763_937_601_250_000_000, "info"),
        ("2025-11-23 22:40:01 level=debug x=1", 1_763_937_601_000_000_000, "debug"),
        ("2025-11-23 22:40:01,042 ERROR [kafka] broker down", 1_763_937_601_042_000_000, "error"),
        ("no time, no level", READ_NS, "unknown"),
    ];
    for (line, ts, level) in cases {
        let out = run(&p, line, &[]);
        assert_eq!(out.rec.timestamp_ns, *ts, "{line}");
        assert_eq!(out.rec.labels.get("level"), Some(*level), "{line}");
        assert_eq!(out.rec.line, *line);
    }
}
