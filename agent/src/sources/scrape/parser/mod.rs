//! Parsers for the Prometheus text format 0.0.4 and OpenMetrics 1.0 text.
//!
//! The parser walks the body once and hands each sample to a callback with
//! its name and label values borrowed from the body (copied only where an
//! escape had to be undone), so memory stays bounded by the body and the
//! callback's own output. It never panics: every malformed input becomes a
//! [`ParseError`] naming the line.
//!
//! A [`Handler`] may know a series from an earlier body: the parser asks it
//! with the series' raw text (`name{labels}` as written) before reading the
//! labels, and for a known series reads only the value and timestamp. That
//! is the scrape cache's fast path. A body can also be fed in pieces of
//! whole lines as it arrives ([`Stream`]).
//!
//! OpenMetrics has two levels: the syntax (always checked, as Prometheus
//! does) and the spec's rules on families (counter values, histogram
//! buckets, grouping, metadata placement...), checked when `strict` is set.
//! Prometheus itself does not check the latter, so scraping uses the
//! syntax level to store exactly what Prometheus would.
//!
//! Layout: this file holds the API (events, handler, [`parse`], [`Stream`])
//! and the per-body state; `format` the content negotiation, `lex` the
//! helpers both formats share, `text` the 0.0.4 parser, `openmetrics` the
//! OpenMetrics syntax and `strict` the spec's family rules.

use std::borrow::Cow;

use crate::sample::MetricType;

mod format;
mod lex;
mod openmetrics;
mod strict;
mod text;

pub use self::format::{Format, ACCEPT};
use self::lex::{text, unescape_label};
use self::strict::Strict;

/// A body that could not be parsed: the 1-based line and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("parse error at line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
    /// Samples read before the error (Prometheus reports them in
    /// `scrape_samples_scraped` of a failed scrape).
    pub samples_before: usize,
}

/// One item of a body, handed to the parse callback.
#[derive(Debug)]
pub enum Event<'a, 'b> {
    /// `# HELP <family> <text>`, text unescaped.
    Help { family: &'a str, text: Cow<'a, str> },
    /// `# TYPE <family> <type>`.
    Type { family: &'a str, kind: MetricType },
    /// `# UNIT <family> <unit>` (OpenMetrics).
    Unit { family: &'a str, unit: &'a str },
    /// A sample. `series` is its name and label set as written in the
    /// body (the scrape cache's key). `labels` may hold empty values (an
    /// empty value means the label is absent). `timestamp_ms` is set when
    /// the line carries one.
    Sample {
        name: &'a str,
        series: &'a [u8],
        labels: &'b [(&'a str, Cow<'a, str>)],
        value: f64,
        timestamp_ms: Option<i64>,
    },
    /// A sample of the series the handler just said it knows
    /// ([`Handler::known`]): its labels were not read.
    Known { name: &'a str, value: f64, timestamp_ms: Option<i64> },
}

/// What a parse hands its items to.
pub trait Handler<'a> {
    /// Whether the handler knows `series` (a sample's `name{labels}` as
    /// written) from an earlier body: then the parser skips its labels and
    /// reports the sample as [`Event::Known`]. Asked only for a series
    /// whose label set is closed; never in strict mode, whose checks need
    /// the labels.
    fn known(&mut self, _series: &'a [u8]) -> bool {
        false
    }

    /// Whether the handler wants nothing more of the body: the parse stops
    /// after the sample just handed over. Asked after every sample.
    fn stopped(&self) -> bool {
        false
    }

    /// One item of the body, in order.
    fn event(&mut self, event: Event<'a, '_>);
}

/// A closure as a handler that knows no series.
struct Closure<F>(F);

impl<'a, F: FnMut(Event<'a, '_>)> Handler<'a> for Closure<F> {
    fn event(&mut self, event: Event<'a, '_>) {
        (self.0)(event)
    }
}

/// Parses `body` in `format`, calling `on` for every item in order.
/// Returns the number of samples. With `strict`, OpenMetrics bodies must
/// also follow the spec's rules on families (see the module doc).
pub fn parse<'a>(
    body: &'a [u8],
    format: Format,
    strict: bool,
    on: impl FnMut(Event<'a, '_>),
) -> Result<usize, ParseError> {
    let mut stream = Stream::new(format, strict);
    stream.feed(body, &mut Closure(on))?;
    stream.finish()
}

/// A parse fed a body in pieces as it arrives, each piece whole lines
/// (ending in a newline; only the last piece of a body may lack it). What
/// a piece's events borrow lives as long as the piece.
pub struct Stream {
    format: Format,
    state: State,
}

/// What a parse carries from one piece to the next.
struct State {
    line: usize,
    samples: usize,
    om: Option<Box<Strict>>,
    /// The OpenMetrics `# EOF` line was read.
    eof: bool,
}

impl Stream {
    /// A parse of one body in `format` (`strict`: see [`parse`]).
    pub fn new(format: Format, strict: bool) -> Stream {
        let om = (format == Format::OpenMetrics && strict).then(Box::default);
        Stream { format, state: State { line: 0, samples: 0, om, eof: false } }
    }

    /// Parses the next piece of the body.
    pub fn feed<'a>(&mut self, piece: &'a [u8], on: &mut impl Handler<'a>) -> Result<(), ParseError> {
        let mut p = Parser { st: &mut self.state, labels: Vec::new() };
        let result = match self.format {
            Format::Prometheus => p.parse_text(piece, on),
            Format::OpenMetrics => p.parse_openmetrics(piece, on),
        };
        result.map_err(|message| self.error(message))
    }

    /// Samples read so far.
    pub fn samples(&self) -> usize {
        self.state.samples
    }

    /// Ends the body; returns the number of samples.
    pub fn finish(mut self) -> Result<usize, ParseError> {
        if self.format == Format::OpenMetrics {
            if !self.state.eof {
                self.state.line += 1;
                return Err(self.error("missing # EOF at the end".into()));
            }
            if let Some(om) = self.state.om.as_mut() {
                if let Err(message) = om.finish() {
                    return Err(self.error(message));
                }
            }
        }
        Ok(self.state.samples)
    }

    fn error(&self, message: String) -> ParseError {
        ParseError { line: self.state.line, message, samples_before: self.state.samples }
    }
}

struct Parser<'a, 's> {
    st: &'s mut State,
    labels: Vec<(&'a str, Cow<'a, str>)>,
}

impl<'a> Parser<'a, '_> {
    fn push_label(&mut self, name: &'a str, raw: &'a [u8]) -> Result<(), String> {
        let raw = text(raw).map_err(|_| format!("invalid UTF-8 in the value of label {name}"))?;
        if self.labels.iter().any(|(n, _)| *n == name) {
            return Err(format!("label {name} appears twice"));
        }
        self.labels.push((name, unescape_label(raw)));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
