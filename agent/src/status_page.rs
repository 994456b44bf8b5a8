//! The status page at `/`: what an operator looks at first when something is
//! wrong. Server-rendered HTML from the same [`Snapshot`] as
//! `/api/v1/status`, with inline CSS and no script or external asset, so it
//! works through an SSH tunnel on a host that reaches nothing else.
//!
//! Everything taken from the snapshot is escaped: target addresses, errors
//! and configuration values come from outside the agent.

use std::fmt::Write as _;

use crate::status::{Health, Snapshot, SourceState};

/// The `kind` under which the scrape source registers its targets; they get
/// their own table.
const SCRAPE_KIND: &str = "scrape";

/// Inline style: readable without any asset, colours only for health.
const STYLE: &str = "\
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;color:#1d2329;background:#fafbfc}\
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.6em 0 .4em}\
.meta{color:#59636e;margin:0 0 1em}\
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 0 0 1px #d5dbe1}\
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #e4e8ec;vertical-align:top}\
th{background:#eef1f4;font-weight:600;white-space:nowrap}\
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
td.err{color:#a40e26;font-family:ui-monospace,monospace;font-size:.92em;word-break:break-word}\
.badge{display:inline-block;padding:.05em .55em;border-radius:1em;font-weight:600;font-size:.9em}\
.up{background:#dafbe1;color:#116329}.down{background:#ffebe9;color:#a40e26}.unknown{background:#eaeef2;color:#59636e}\
.summary span{margin-right:1.2em}.none{color:#59636e;font-style:italic}\
pre{background:#fff;box-shadow:0 0 0 1px #d5dbe1;padding:.8em;overflow:auto;font-size:.9em}";

/// Renders the snapshot as a complete HTML page. `now_ms` is the time the
/// page is rendered at (for "ago" columns); `refresh_seconds` adds a meta
/// refresh when set.
pub fn render(snap: &Snapshot, now_ms: i64, refresh_seconds: Option<u32>) -> String {
    let mut h = String::with_capacity(8 * 1024);
    h.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">");
    if let Some(s) = refresh_seconds {
        let _ = write!(h, "<meta http-equiv=\"refresh\" content=\"{s}\">");
    }
    let _ = write!(h, "<title>Vantage {} status</title><style>{STYLE}</style></head><body>", escape(snap.version));

    let (targets, sources): (Vec<_>, Vec<_>) = snap.sources.iter().partition(|(_, s)| s.kind == SCRAPE_KIND);
    let _ = write!(
        h,
        "<h1>Vantage {}</h1><p class=\"meta\">{} &middot; rendered {} &middot; <a href=\"/api/v1/status\">JSON</a> &middot; <a href=\"/metrics\">metrics</a> &middot; {}</p>",
        escape(snap.version),
        if snap.ready { badge("ready", "up") } else { badge("not ready", "down") },
        format_time(now_ms),
        match refresh_seconds {
            Some(_) => "<a href=\"/\">stop refreshing</a>",
            None => "<a href=\"/?refresh=10\">refresh every 10 s</a>",
        },
    );
    summary(&mut h, &sources, &targets, snap);
    if !snap.reload.last_successful && !snap.reload.last_error.is_empty() {
        let _ = write!(
            h,
            "<h2 id=\"reload\">Configuration reload failed</h2><p>{} at {}; the configuration below, loaded {}, keeps running.</p><pre>{}</pre>",
            badge("reload failed", "down"),
            format_time(snap.reload.last_attempt_ms),
            format_time(snap.reload.last_success_ms),
            escape(&snap.reload.last_error),
        );
    }

    h.push_str("<h2 id=\"sources\">Sources</h2>");
    source_table(&mut h, &sources, now_ms, "no sources enabled");
    h.push_str("<h2 id=\"targets\">Scrape targets</h2>");
    source_table(&mut h, &targets, now_ms, "no scrape targets");
    sink_table(&mut h, snap, now_ms);
    program_table(&mut h, snap);

    h.push_str("<h2 id=\"config\">Configuration in effect</h2><p class=\"meta\">Secrets and credentials in URLs are redacted.</p><pre>");
    let mut config = snap.config.clone();
    redact_url_credentials(&mut config);
    let text = serde_json::to_string_pretty(&config).unwrap_or_else(|e| format!("cannot render: {e}"));
    h.push_str(&escape(&text));
    h.push_str("</pre></body></html>\n");
    h
}

fn summary(h: &mut String, sources: &[(&String, &SourceState)], targets: &[(&String, &SourceState)], snap: &Snapshot) {
    let count =
        |list: &[(&String, &SourceState)], health: Health| list.iter().filter(|(_, s)| s.health == health).count();
    let attached = snap.programs.values().filter(|p| p.attached).count();
    let failing_sinks = snap.sinks.values().filter(|s| !s.last_error.is_empty()).count();
    let _ = write!(
        h,
        "<p class=\"summary\"><span>sources: {} up, {} down</span><span>targets: {} up, {} down</span><span>sinks: {}, {} with errors</span><span>eBPF programs: {} of {} attached</span></p>",
        count(sources, Health::Up),
        count(sources, Health::Down),
        count(targets, Health::Up),
        count(targets, Health::Down),
        snap.sinks.len(),
        failing_sinks,
        attached,
        snap.programs.len(),
    );
}

fn source_table(h: &mut String, rows: &[(&String, &SourceState)], now_ms: i64, empty: &str) {
    if rows.is_empty() {
        let _ = write!(h, "<p class=\"none\">{empty}</p>");
        return;
    }
    h.push_str("<table><thead><tr><th>name</th><th>kind</th><th>health</th><th>last collection</th><th>duration</th><th>series</th><th>collections</th><th>last error</th></tr></thead><tbody>");
    for (name, s) in rows {
        let _ = write!(
            h,
            "<tr data-name=\"{n}\"><td>{n}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"err\">{}</td></tr>",
            escape(&s.kind),
            health_badge(s.health),
            ago(s.last_collection_ms, now_ms),
            if s.collections == 0 { "&ndash;".to_string() } else { format_seconds(s.last_duration_seconds) },
            s.series,
            s.collections,
            error_cell(s, now_ms),
            n = escape(name),
        );
    }
    h.push_str("</tbody></table>");
}

/// The source's error, then each part that fails while the rest works
/// (a node collector), with its error and since when.
fn error_cell(s: &SourceState, now_ms: i64) -> String {
    let mut cell = escape(&s.last_error);
    for (part, f) in &s.failing_parts {
        if !cell.is_empty() {
            cell.push_str("<br>");
        }
        let _ = write!(
            cell,
            "<span data-part=\"{p}\">{p}: {} (failing since {})</span>",
            escape(&f.error),
            ago(f.since_ms, now_ms),
            p = escape(part)
        );
    }
    cell
}

fn sink_table(h: &mut String, snap: &Snapshot, now_ms: i64) {
    h.push_str("<h2 id=\"sinks\">Sinks</h2>");
    if snap.sinks.is_empty() {
        h.push_str("<p class=\"none\">no sinks: nothing is pushed (pull mode serves /metrics)</p>");
        return;
    }
    h.push_str("<table><thead><tr><th>name</th><th>kind</th><th>endpoint</th><th>state</th><th>queue</th><th>WAL</th><th>lag</th><th>last success</th><th>last error</th></tr></thead><tbody>");
    for (name, s) in &snap.sinks {
        let state = if !s.last_error.is_empty() {
            badge("failing", "down")
        } else if s.last_success_ms > 0 {
            badge("ok", "up")
        } else {
            badge("no push yet", "unknown")
        };
        let _ = write!(
            h,
            "<tr data-name=\"{n}\"><td>{n}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            escape(&s.kind),
            escape(&redact_userinfo(&s.endpoint)),
            state,
            s.pending,
            format_bytes(s.wal_bytes),
            if s.last_success_ms > 0 { format_seconds(s.lag_seconds) } else { "&ndash;".into() },
            ago(s.last_success_ms, now_ms),
            escape(&s.last_error),
            n = escape(name),
        );
    }
    h.push_str("</tbody></table>");
}

fn program_table(h: &mut String, snap: &Snapshot) {
    h.push_str("<h2 id=\"programs\">eBPF programs</h2>");
    if snap.programs.is_empty() {
        h.push_str("<p class=\"none\">no eBPF programs (the ebpf source is off)</p>");
        return;
    }
    h.push_str("<table><thead><tr><th>program</th><th>state</th><th>reason</th></tr></thead><tbody>");
    for (name, p) in &snap.programs {
        let state = if p.attached { badge("attached", "up") } else { badge("not attached", "down") };
        let _ = write!(
            h,
            "<tr data-name=\"{n}\"><td>{n}</td><td>{state}</td><td class=\"err\">{}</td></tr>",
            escape(&p.error),
            n = escape(name),
        );
    }
    h.push_str("</tbody></table>");
}

fn health_badge(health: Health) -> String {
    match health {
        Health::Up => badge("up", "up"),
        Health::Down => badge("down", "down"),
        Health::Unknown => badge("pending", "unknown"),
    }
}

fn badge(text: &str, class: &str) -> String {
    format!("<span class=\"badge {class}\">{text}</span>")
}

/// "2026-11-23 22:41:07 UTC (3 s ago)", or a dash before the first time.
fn ago(at_ms: i64, now_ms: i64) -> String {
    if at_ms <= 0 {
        return "&ndash;".into();
    }
    let secs = (now_ms - at_ms).max(0) / 1000;
    let rel = match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    };
    format!("{} ({rel})", format_time(at_ms))
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn format_seconds(s: f64) -> String {
    if !s.is_finite() {
        "&ndash;".into()
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A few lines of plain text from the /api/v1/status JSON, for a terminal
/// (`vantage probe --status`, which deploy.sh prints): sources, scrape
/// targets (only the down ones listed), sinks and eBPF programs.
pub fn text_summary(status: &serde_json::Value, now_ms: i64) -> String {
    let mut out = String::new();
    let empty = serde_json::Map::new();
    let obj = |key: &str| status[key].as_object().unwrap_or(&empty);
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let (targets, sources): (Vec<_>, Vec<_>) = obj("sources").iter().partition(|(_, s)| s["kind"] == SCRAPE_KIND);
    let down = |list: &[(&String, &serde_json::Value)]| list.iter().filter(|(_, s)| s["health"] == "down").count();
    let up = |list: &[(&String, &serde_json::Value)]| list.iter().filter(|(_, s)| s["health"] == "up").count();
    let _ = writeln!(
        out,
        "vantage {}: {}",
        text(&status["version"]),
        if status["ready"] == true { "ready" } else { "NOT ready" }
    );
    if status["reload"]["last_successful"] == false {
        let _ = writeln!(out, "configuration reload FAILED: {}", text(&status["reload"]["last_error"]));
    }
    let _ = writeln!(out, "sources: {} up, {} down", up(&sources), down(&sources));
    for (name, s) in &sources {
        let _ = write!(out, "  {name:<12} {:<7} {:>6} series", text(&s["health"]), s["series"].as_u64().unwrap_or(0));
        let err = text(&s["last_error"]);
        if !err.is_empty() {
            let _ = write!(out, "  error: {err}");
        }
        out.push('\n');
        for (part, f) in s["failing_parts"].as_object().unwrap_or(&empty) {
            let since = f["since_ms"].as_i64().unwrap_or(0);
            let secs = (now_ms - since).max(0) / 1000;
            let _ = writeln!(out, "    {part} failing for {secs} s: {}", text(&f["error"]));
        }
    }
    let _ = writeln!(out, "targets: {} up, {} down", up(&targets), down(&targets));
    for (name, s) in targets.iter().filter(|(_, s)| s["health"] == "down") {
        let _ = writeln!(out, "  {name} down: {}", text(&s["last_error"]));
    }
    let sinks = obj("sinks");
    if sinks.is_empty() {
        out.push_str("sinks: none (pull mode)\n");
    } else {
        out.push_str("sinks:\n");
    }
    for (name, s) in sinks {
        let last = s["last_success_ms"].as_i64().unwrap_or(0);
        let lag = if last > 0 { format!("{:.1} s", s["lag_seconds"].as_f64().unwrap_or(0.0)) } else { "-".into() };
        let since = if last > 0 { format!("{} s ago", (now_ms - last).max(0) / 1000) } else { "never".into() };
        let _ = write!(
            out,
            "  {name} -> {}  queue {}  WAL {}  lag {lag}  last success {since}",
            redact_userinfo(&text(&s["endpoint"])),
            s["pending"].as_u64().unwrap_or(0),
            format_bytes(s["wal_bytes"].as_u64().unwrap_or(0)),
        );
        let err = text(&s["last_error"]);
        if !err.is_empty() {
            let _ = write!(out, "  error: {err}");
        }
        out.push('\n');
        for (part, f) in s["failing_parts"].as_object().unwrap_or(&empty) {
            let since = f["since_ms"].as_i64().unwrap_or(0);
            let secs = (now_ms - since).max(0) / 1000;
            let _ = writeln!(out, "    {part} failing for {secs} s: {}", text(&f["error"]));
        }
    }
    let programs = obj("programs");
    let attached = programs.values().filter(|p| p["attached"] == true).count();
    let _ = writeln!(out, "eBPF programs: {attached} of {} attached", programs.len());
    for (name, p) in programs.iter().filter(|(_, p)| p["attached"] != true) {
        let _ = writeln!(out, "  {name} not attached: {}", text(&p["error"]));
    }
    out
}

/// Replaces the password (or whole user info) of every `scheme://user:pw@`
/// URL found in string values; `Secret`s are already `<redacted>`, but a URL
/// may carry credentials of its own.
pub fn redact_url_credentials(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains("://") && s.contains('@') => *s = redact_userinfo(s),
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_url_credentials),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_url_credentials),
        _ => {}
    }
}

/// `https://user:pw@host/x` -> `https://<redacted>@host/x`; other text as is.
fn redact_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &url[..scheme_end + 3], &rest[at..]),
        None => url.to_string(),
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Registry;

    fn registry() -> Registry {
        let r = Registry::default();
        r.register_source("node", "node", true);
        r.record_collection("node", 1_700_000_000_000, 0.0042, 312, None);
        r.record_failing_parts("node", 1_699_999_990_000, vec![("schedstat".into(), "no <file>".into())]);
        r.record_failing_parts("node", 1_700_000_000_000, vec![("schedstat".into(), "no <file>".into())]);
        r.register_source("scrape/app/<b>10.0.0.1:3000</b>", "scrape", false);
        r.record_collection(
            "scrape/app/<b>10.0.0.1:3000</b>",
            1_700_000_001_000,
            0.2,
            0,
            Some("connection refused <script>".into()),
        );
        r.update_sink("remote_write/0", |s| {
            s.kind = "remote_write".into();
            s.endpoint = "https://vantage:hunter2@prom.example/api/v1/write".into();
            s.pending = 17;
            s.wal_bytes = 3 * 1024 * 1024;
            s.last_success_ms = 1_700_000_000_500;
            s.lag_seconds = 1.5;
        });
        r.set_program("sched_switch", true, String::new());
        r.set_program("block_rq", false, "attach: permission denied".into());
        r.set_config(serde_json::json!({"remote_write": [{"url": "https://u:pw@prom/x", "basic_auth": {"password": "<redacted>"}}]}));
        r
    }

    #[test]
    fn every_part_is_shown_and_escaped() {
        let html = render(&registry().snapshot(), 1_700_000_003_000, None);
        assert!(html.contains("<td>node</td>"), "{html}");
        assert!(html.contains("312"));
        assert!(html.contains("4.2 ms"));
        assert!(html.contains("scrape/app/&lt;b&gt;10.0.0.1:3000&lt;/b&gt;"));
        assert!(html.contains("connection refused &lt;script&gt;"));
        assert!(!html.contains("<script"), "nothing from the snapshot becomes markup");
        assert!(html.contains("3.0 MiB") && html.contains(">17<") && html.contains("1.50 s"));
        assert!(html.contains("https://&lt;redacted&gt;@prom.example/api/v1/write"));
        assert!(!html.contains("hunter2") && !html.contains("u:pw"), "URL credentials are redacted");
        assert!(html.contains("attach: permission denied"));
        assert!(html.contains("sources: 1 up, 0 down") && html.contains("targets: 0 up, 1 down"));
        assert!(html.contains("eBPF programs: 1 of 2 attached"));
        assert!(html.contains("2023-11-14 22:13:20 UTC (3 s ago)"), "{html}");
        assert!(
            html.contains(
                "<span data-part=\"schedstat\">schedstat: no &lt;file&gt; (failing since 2023-11-14 22:13:10 UTC (13 s ago))</span>"
            ),
            "{html}"
        );
    }

    #[test]
    fn text_summary_for_the_terminal() {
        let json = serde_json::to_value(registry().snapshot()).unwrap();
        let text = text_summary(&json, 1_700_000_003_000);
        assert!(
            text.contains("sources: 1 up, 0 down\n  node         up         312 series\n    schedstat failing for 13 s: no <file>\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "targets: 0 up, 1 down\n  scrape/app/<b>10.0.0.1:3000</b> down: connection refused <script>\n"
            ),
            "{text}"
        );
        assert!(text.contains("remote_write/0 -> https://<redacted>@prom.example/api/v1/write  queue 17  WAL 3.0 MiB  lag 1.5 s  last success 2 s ago"), "{text}");
        assert!(
            text.contains("eBPF programs: 1 of 2 attached\n  block_rq not attached: attach: permission denied\n"),
            "{text}"
        );
    }

    #[test]
    fn refresh_only_when_asked() {
        let snap = Registry::default().snapshot();
        assert!(!render(&snap, 0, None).contains("http-equiv"));
        assert!(render(&snap, 0, Some(10)).contains("<meta http-equiv=\"refresh\" content=\"10\">"));
    }

    #[test]
    fn dates_and_sizes() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_795_477_327_000), "2026-11-23 23:42:07 UTC");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(redact_userinfo("http://h:1/p@x"), "http://h:1/p@x", "an @ in the path is not user info");
    }
}
