use super::*;

/// A parsed sample with owned parts, for comparisons.
#[derive(Debug, PartialEq)]
struct S {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    ts: Option<i64>,
}

fn samples(body: &str, format: Format) -> Result<Vec<S>, ParseError> {
    let mut out = Vec::new();
    parse(body.as_bytes(), format, true, |e| {
        if let Event::Sample { name, labels, value, timestamp_ms, .. } = e {
            out.push(S {
                name: name.into(),
                labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                value,
                ts: timestamp_ms,
            });
        }
    })?;
    Ok(out)
}

fn s(name: &str, labels: &[(&str, &str)], value: f64, ts: Option<i64>) -> S {
    S { name: name.into(), labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), value, ts }
}

#[test]
fn content_negotiation() {
    assert_eq!(
        Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        Format::OpenMetrics
    );
    assert_eq!(Format::from_content_type("text/plain; version=0.0.4; charset=utf-8"), Format::Prometheus);
    assert_eq!(Format::from_content_type(""), Format::Prometheus);
    assert_eq!(Format::from_content_type("application/json"), Format::Prometheus);
}

#[test]
fn prometheus_text_with_escapes_spaces_and_trailing_commas() {
    let body = concat!(
        "# HELP http_requests_total The total \\\\ number\\n of requests.\n",
        "# TYPE http_requests_total counter\n",
        "http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n",
        "http_requests_total{ method = \"post\" , code=\"400\", } 3\n",
        "  # a plain comment\n",
        "\n",
        "msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n",
        "weird{a=\"\",b=\"x\\zy\"} -Inf\n",
        "nan_metric NaN\n",
        "pos +Inf\n",
        "unicode{city=\"Zürich ☃\"} 2 -5\n",
        "no_newline 1",
    );
    let got = samples(body, Format::Prometheus).unwrap();
    assert_eq!(got[0], s("http_requests_total", &[("method", "post"), ("code", "200")], 1027.0, Some(1395066363000)));
    assert_eq!(got[1], s("http_requests_total", &[("method", "post"), ("code", "400")], 3.0, None));
    assert_eq!(
        got[2],
        s(
            "msdos_file_access_time_seconds",
            &[("path", "C:\\DIR\\FILE.TXT"), ("error", "Cannot find file:\n\"FILE.TXT\"")],
            1.458255915e9,
            None
        )
    );
    assert_eq!(got[3], s("weird", &[("a", ""), ("b", "x\\zy")], f64::NEG_INFINITY, None));
    assert!(got[4].value.is_nan());
    assert_eq!(got[5].value, f64::INFINITY);
    assert_eq!(got[6], s("unicode", &[("city", "Zürich ☃")], 2.0, Some(-5)));
    assert_eq!(got[7], s("no_newline", &[], 1.0, None));
    assert_eq!(got.len(), 8);

    let mut helps = Vec::new();
    parse(body.as_bytes(), Format::Prometheus, false, |e| {
        if let Event::Help { family, text } = e {
            helps.push((family.to_string(), text.into_owned()));
        }
    })
    .unwrap();
    assert_eq!(helps, [("http_requests_total".to_string(), "The total \\ number\n of requests.".to_string())]);
}

#[test]
fn prometheus_text_errors_name_the_line() {
    for (body, line) in [
        ("a 1\nb{c=\"d} 2\n", 2),
        ("a 1\n\nb x\n", 3),
        ("a{1a=\"b\"} 1\n", 1),
        ("# TYPE a bogus\n", 1),
        ("a 1 12.5\n", 1),
        ("a{b=\"c\",b=\"d\"} 1\n", 1),
        ("a 1 2 3\n", 1),
        ("a{b=\"c\" 1\n", 1),
        ("a{b=\"c\",,d=\"e\"} 1\n", 1),
        ("a-b 1\n", 1),
        ("a\n", 1),
        ("a 1\n  b 2\n", 2),
    ] {
        let err = samples(body, Format::Prometheus).unwrap_err();
        assert_eq!(err.line, line, "{body:?}: {err}");
    }
    assert_eq!(samples("a 1\nb 2\nc\n", Format::Prometheus).unwrap_err().samples_before, 2);
}

#[test]
fn openmetrics_timestamps_are_seconds_and_exemplars_are_dropped() {
    let body = concat!(
        "# TYPE a counter\n",
        "# HELP a he said \\\"hi\\\"\n",
        "a_total{x=\"1\"} 5 1.5 # {trace_id=\"abc\"} 1 1.25\n",
        "a_created{x=\"1\"} 1000.25\n",
        "# TYPE h histogram\n",
        "h_bucket{le=\"0.5\"} 1 # {t=\"x\"} 0.3\n",
        "h_bucket{le=\"+Inf\"} 2\n",
        "h_count 2\n",
        "h_sum 0.9\n",
        "# TYPE i info\n",
        "i_info{version=\"1.2\"} 1\n",
        "# TYPE st stateset\n",
        "st{st=\"on\"} 1\n",
        "st{st=\"off\"} 0\n",
        "# EOF\n",
    );
    let got = samples(body, Format::OpenMetrics).unwrap();
    assert_eq!(got[0], s("a_total", &[("x", "1")], 5.0, Some(1500)));
    assert_eq!(got[1], s("a_created", &[("x", "1")], 1000.25, None));
    assert_eq!(got[2], s("h_bucket", &[("le", "0.5")], 1.0, None));
    assert_eq!(got.len(), 9);
    // Without # EOF the body is incomplete.
    assert!(samples("a 1\n", Format::OpenMetrics).is_err());
}

#[test]
fn never_panics_on_truncations_of_valid_bodies() {
    let body = "# HELP a x\\\n# TYPE a counter\na_total{b=\"c\\\"\",d=\"\\\\\"} 1 2 # {e=\"f\"} 3 4\n# EOF\n";
    for format in [Format::Prometheus, Format::OpenMetrics] {
        for strict in [false, true] {
            for end in 0..=body.len() {
                let _ = parse(&body.as_bytes()[..end], format, strict, |_| {});
            }
            for b in [0u8, 0xff, b'\\', b'"', b'{', b'}', b'#', b' '] {
                for at in 0..body.len() {
                    let mut v = body.as_bytes().to_vec();
                    v[at] = b;
                    let _ = parse(&v, format, strict, |_| {});
                }
            }
        }
    }
}

/// The OpenMetrics project's parser cases, in the shared folder next to
/// the workspace (`<workspace>/../shared/conformance/openmetrics`).
fn conformance_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/openmetrics")
}

#[test]
fn openmetrics_conformance_cases_present() {
    let dir = conformance_dir();
    let cases = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; the OpenMetrics conformance cases are missing", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().join("test.json").is_file())
        .count();
    assert!(cases >= 200, "only {cases} cases in {}", dir.display());
}

#[test]
fn openmetrics_conformance() {
    let dir = conformance_dir();
    let mut wrong = Vec::new();
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).filter_map(Result::ok) {
        let case = entry.path();
        let Ok(meta) = std::fs::read_to_string(case.join("test.json")) else { continue };
        let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
        let should = meta["shouldParse"].as_bool().unwrap();
        let body = std::fs::read(case.join("metrics")).unwrap();
        total += 1;
        let got = parse(&body, Format::OpenMetrics, true, |_| {});
        if got.is_ok() != should {
            wrong.push(format!("{}: shouldParse={should}, got {got:?}", case.file_name().unwrap().to_string_lossy()));
        }
    }
    assert!(total >= 200, "only {total} cases");
    assert!(wrong.is_empty(), "{} of {total} cases wrong:\n{}", wrong.len(), wrong.join("\n"));
}
