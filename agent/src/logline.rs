//! The log model: what a log source hands on (an entry with its
//! acknowledgement), the bounded sender sources wait on, and the receipt a
//! log sink gives back once it has an entry for good. Sources know only
//! this module; sinks implement [`crate::sinks::LogSink`]; the composition
//! root ([`crate::runtime`]) fans entries out to every sink.
//!
//! An entry's acknowledgement (what the positions file records) is applied
//! only when every sink it went to has acknowledged it, and its buffer space
//! is freed only then: a sink that is down pauses reading instead of memory
//! growing, and nothing counts as delivered before all sinks have it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use crate::sample::Labels;

/// Bookkeeping bytes counted per entry on top of its line, so that a flood
/// of empty lines is bounded too.
pub const ENTRY_OVERHEAD: usize = 64;

/// Where an entry's acknowledgement goes: its source's cursor (a file
/// offset or a container's timestamp), advanced once every sink has the
/// entry.
#[derive(Clone, Debug)]
pub struct Ack {
    pub cursor: Arc<AtomicU64>,
    pub value: u64,
}

/// One log line on its way to the log sinks.
#[derive(Clone, Debug)]
pub struct LogEntry {
    /// The stream's labels (external labels are added by the sink).
    pub labels: Labels,
    /// Unix nanoseconds.
    pub timestamp_ns: i64,
    /// The line; None for an entry that only carries an acknowledgement (a
    /// line a stage dropped), so that positions move past it in order.
    pub line: Option<String>,
    /// Set by the source; the fan-out moves it into the [`Receipt`]s, so a
    /// sink sees None here.
    pub ack: Option<Ack>,
}

impl LogEntry {
    /// Buffer bytes the entry holds while in flight.
    pub fn cost(&self) -> usize {
        self.line.as_ref().map_or(0, |l| l.len()) + ENTRY_OVERHEAD
    }
}

/// The log path is gone (shutdown or reload).
#[derive(Debug, thiserror::Error)]
#[error("the log sinks have stopped")]
pub struct Closed;

/// The sources' handle on the log path. `send` waits while the buffer is
/// full: that is how a sink outage pauses reading instead of growing memory.
#[derive(Clone)]
pub struct LogSender {
    tx: mpsc::UnboundedSender<LogEntry>,
    budget: Arc<Semaphore>,
    capacity: usize,
}

impl LogSender {
    /// Queues `entry`, waiting for buffer space first.
    pub async fn send(&self, entry: LogEntry) -> Result<(), Closed> {
        let cost = self.cost(&entry);
        self.budget.acquire_many(cost as u32).await.map_err(|_| Closed)?.forget();
        self.tx.send(entry).map_err(|_| Closed)
    }

    fn cost(&self, entry: &LogEntry) -> usize {
        entry.cost().min(self.capacity)
    }
}

/// The receiving end of [`channel`], read by the fan-out.
pub struct LogReceiver {
    rx: mpsc::UnboundedReceiver<LogEntry>,
    budget: Arc<Semaphore>,
    capacity: usize,
}

/// A log path holding at most `capacity` bytes of entries (queued and in
/// flight in the sinks) before sources wait.
pub fn channel(capacity: usize) -> (LogSender, LogReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(capacity));
    (LogSender { tx, budget: budget.clone(), capacity }, LogReceiver { rx, budget, capacity })
}

impl LogReceiver {
    /// The next entry with the receipts for `sinks` sinks (one each), or
    /// None once every sender is gone.
    pub async fn recv(&mut self, sinks: usize) -> Option<(LogEntry, Vec<Receipt>)> {
        let e = self.rx.recv().await?;
        Some(self.split(e, sinks))
    }

    /// Like [`LogReceiver::recv`] without waiting: None when nothing is queued.
    pub fn try_recv(&mut self, sinks: usize) -> Option<(LogEntry, Vec<Receipt>)> {
        let e = self.rx.try_recv().ok()?;
        Some(self.split(e, sinks))
    }

    fn split(&self, mut e: LogEntry, sinks: usize) -> (LogEntry, Vec<Receipt>) {
        let shared = Arc::new(Shared {
            remaining: AtomicUsize::new(sinks),
            ack: e.ack.take(),
            cost: e.cost().min(self.capacity),
            budget: self.budget.clone(),
        });
        let receipts = (0..sinks).map(|_| Receipt(Some(shared.clone()))).collect();
        (e, receipts)
    }
}

/// What every receipt of one entry shares.
#[derive(Debug)]
struct Shared {
    remaining: AtomicUsize,
    ack: Option<Ack>,
    cost: usize,
    budget: Arc<Semaphore>,
}

/// One sink's acknowledgement of one entry. [`Receipt::done`] says the
/// sink has the entry for good (delivered, or refused for good); a receipt
/// dropped without it (shutdown) acknowledges nothing, so the line is read
/// again after a restart. Sinks must finish receipts in the order they
/// took them: then what every sink has finished is a prefix of what was
/// read, and advancing the cursor to the newest finished value is exact.
#[derive(Debug)]
pub struct Receipt(Option<Arc<Shared>>);

impl Receipt {
    /// This sink is done with the entry; the last sink to say so advances
    /// the source's cursor and frees the buffer space.
    pub fn done(mut self) {
        let Some(s) = self.0.take() else { return };
        if s.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(ack) = &s.ack {
                ack.cursor.fetch_max(ack.value, Ordering::AcqRel);
            }
            s.budget.add_permits(s.cost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cursor: &Arc<AtomicU64>, value: u64) -> LogEntry {
        LogEntry {
            labels: Labels::new(),
            timestamp_ns: 1,
            line: Some("x".repeat(36)),
            ack: Some(Ack { cursor: cursor.clone(), value }),
        }
    }

    #[tokio::test]
    async fn acknowledged_only_when_every_sink_is_done() {
        let cursor = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = channel(1000);
        tx.send(entry(&cursor, 10)).await.unwrap();
        let (e, mut receipts) = rx.recv(2).await.unwrap();
        assert!(e.ack.is_none(), "the ack travels in the receipts");
        assert_eq!(rx.budget.available_permits(), 900);
        receipts.pop().unwrap().done();
        assert_eq!(cursor.load(Ordering::Acquire), 0, "one sink of two is not enough");
        drop(receipts.pop());
        assert_eq!(cursor.load(Ordering::Acquire), 0, "a dropped receipt acknowledges nothing");
        assert_eq!(rx.budget.available_permits(), 900);

        tx.send(entry(&cursor, 20)).await.unwrap();
        let (_, receipts) = rx.recv(2).await.unwrap();
        receipts.into_iter().for_each(Receipt::done);
        assert_eq!(cursor.load(Ordering::Acquire), 20);
        assert_eq!(rx.budget.available_permits(), 900, "the first entry still holds its space");
    }

    #[tokio::test]
    async fn a_full_buffer_makes_senders_wait() {
        let cursor = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = channel(150);
        tx.send(entry(&cursor, 1)).await.unwrap();
        let blocked = tokio::time::timeout(std::time::Duration::from_millis(50), tx.send(entry(&cursor, 2))).await;
        assert!(blocked.is_err(), "the second entry does not fit");
        let (_, receipts) = rx.recv(1).await.unwrap();
        receipts.into_iter().for_each(Receipt::done);
        tx.send(entry(&cursor, 2)).await.unwrap();
    }
}
