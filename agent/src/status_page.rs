//! The status page at `/`: server-rendered HTML with no external assets.

use crate::status::Snapshot;

/// Renders the snapshot as a small HTML page.
pub fn render(snap: &Snapshot) -> String {
    let mut html = String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>Vantage</title></head><body>");
    html.push_str(&format!("<h1>Vantage {}</h1><p>ready: {}</p><h2>Sources</h2><ul>", snap.version, snap.ready));
    for (name, s) in &snap.sources {
        html.push_str(&format!("<li>{} {:?} {} series {}</li>", escape(name), s.health, s.series, escape(&s.last_error)));
    }
    html.push_str("</ul></body></html>");
    html
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
