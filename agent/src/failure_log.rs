//! Failure logs a log pipeline can live with. A scrape target or sink that
//! keeps failing logs when its state changes (up to down, or a different
//! error), then at most once a period while it stays down, with the number
//! of failures meanwhile, and once when it works again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often a failure that goes on is logged again, unless
/// `agent.log_repeat_interval` says otherwise.
pub const DEFAULT_REPEAT: Duration = Duration::from_secs(60);

/// The process-wide period, in milliseconds: a logging policy, like the
/// tracing subscriber it feeds, set once at start from the configuration.
static REPEAT_MS: AtomicU64 = AtomicU64::new(DEFAULT_REPEAT.as_millis() as u64);

/// Sets the period of every [`FailureLog`] made from now on with `default()`.
pub fn set_repeat(period: Duration) {
    REPEAT_MS.store(period.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// The failure state of one target or endpoint.
#[derive(Debug)]
pub struct FailureLog {
    repeat: Duration,
    down: Option<Down>,
}

#[derive(Debug)]
struct Down {
    error: String,
    since: Instant,
    last_logged: Instant,
    failures: u64,
    unlogged: u64,
}

/// Why a failure is logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// It worked (or had not run) before.
    Down,
    /// It was failing already, with another error.
    NewError,
    /// Same error, one period after the last line.
    StillDown,
}

/// A failure to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub change: Change,
    /// Failures since it went down, this one included.
    pub failures: u64,
    /// Failures since the last line, this one included.
    pub since_last_line: u64,
    /// How long it has been down.
    pub down_for: Duration,
}

/// The end of a failure: how many there were and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    pub failures: u64,
    pub down_for: Duration,
}

impl FailureLog {
    pub fn new(repeat: Duration) -> FailureLog {
        FailureLog { repeat, down: None }
    }

    /// Records a failure; Some when it should be logged.
    pub fn failed(&mut self, error: &str) -> Option<Report> {
        self.failed_at(error, Instant::now())
    }

    /// Records a success; Some when it was failing.
    pub fn succeeded(&mut self) -> Option<Recovery> {
        self.succeeded_at(Instant::now())
    }

    pub fn failed_at(&mut self, error: &str, now: Instant) -> Option<Report> {
        let Some(d) = &mut self.down else {
            self.down = Some(Down { error: error.to_string(), since: now, last_logged: now, failures: 1, unlogged: 0 });
            return Some(Report { change: Change::Down, failures: 1, since_last_line: 1, down_for: Duration::ZERO });
        };
        d.failures += 1;
        d.unlogged += 1;
        let change = if d.error != error {
            d.error = error.to_string();
            Change::NewError
        } else if now.duration_since(d.last_logged) >= self.repeat {
            Change::StillDown
        } else {
            return None;
        };
        let report =
            Report { change, failures: d.failures, since_last_line: d.unlogged, down_for: now.duration_since(d.since) };
        d.last_logged = now;
        d.unlogged = 0;
        Some(report)
    }

    pub fn succeeded_at(&mut self, now: Instant) -> Option<Recovery> {
        let d = self.down.take()?;
        Some(Recovery { failures: d.failures, down_for: now.duration_since(d.since) })
    }

    /// Whether it is failing now.
    pub fn is_down(&self) -> bool {
        self.down.is_some()
    }
}

impl Default for FailureLog {
    /// A log with the process-wide period ([`set_repeat`]).
    fn default() -> Self {
        FailureLog::new(Duration::from_millis(REPEAT_MS.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_minutes_down_every_second_logs_four_lines_with_the_counts() {
        let mut log = FailureLog::new(DEFAULT_REPEAT);
        let t0 = Instant::now();
        let reports: Vec<(u64, Report)> = (0..=180u64)
            .filter_map(|s| log.failed_at("HTTP 401", t0 + Duration::from_secs(s)).map(|r| (s, r)))
            .collect();
        let at: Vec<u64> = reports.iter().map(|(s, _)| *s).collect();
        assert_eq!(at, [0, 60, 120, 180]);
        assert_eq!(reports[0].1.change, Change::Down);
        assert!(reports[1..].iter().all(|(_, r)| r.change == Change::StillDown && r.since_last_line == 60));
        assert_eq!(reports[3].1.failures, 181);
        let back = log.succeeded_at(t0 + Duration::from_secs(181)).unwrap();
        assert_eq!(back, Recovery { failures: 181, down_for: Duration::from_secs(181) });
        assert_eq!(log.succeeded_at(t0 + Duration::from_secs(182)), None, "logged once");
    }

    #[test]
    fn a_new_error_is_logged_at_once() {
        let mut log = FailureLog::new(DEFAULT_REPEAT);
        let t0 = Instant::now();
        assert!(log.failed_at("refused", t0).is_some());
        assert!(log.failed_at("refused", t0 + Duration::from_secs(1)).is_none());
        let r = log.failed_at("HTTP 401", t0 + Duration::from_secs(2)).unwrap();
        assert_eq!((r.change, r.failures, r.since_last_line), (Change::NewError, 3, 2));
        // The period starts again from the new error's line.
        assert!(log.failed_at("HTTP 401", t0 + Duration::from_secs(61)).is_none());
        assert!(log.failed_at("HTTP 401", t0 + Duration::from_secs(62)).is_some());
    }
}
