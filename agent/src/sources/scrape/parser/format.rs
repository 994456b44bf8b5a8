//! Content negotiation: the Accept header a scrape sends and the format a
//! response's Content-Type selects.

/// Which text format a body is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`, and anything not OpenMetrics.
    Prometheus,
    /// `application/openmetrics-text`.
    OpenMetrics,
}

/// The Accept header Prometheus 2.42 sends.
pub const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

impl Format {
    /// The format of a response by its Content-Type, as Prometheus picks it:
    /// OpenMetrics for `application/openmetrics-text`, else the 0.0.4 text.
    pub fn from_content_type(content_type: &str) -> Format {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}
