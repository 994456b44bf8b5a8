//! The write-ahead log of one endpoint: every accepted batch is appended as
//! a CRC-checked record to numbered segment files before anything is sent,
//! and a segment is deleted only once every record in it is acknowledged.
//!
//! Record layout: `len: u32 LE | crc32(payload): u32 LE | payload`, payload
//! = `samples: u32 LE | WalRecord protobuf`. A record is addressed by its
//! [`Pos`] (segment number, byte offset).
//!
//! What was acknowledged survives restarts in the `acked` file: a watermark
//! (every record before it is acknowledged) plus, for records after it that
//! were partly acknowledged, the mask of series buckets already sent. The
//! sender rewrites it after every acknowledgement, before the shard that got
//! the acknowledgement sends again, so a restart re-sends only what was in
//! flight (exact duplicates of each series' newest sample, which receivers
//! accept) and never an older sample after a newer one.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Bytes of a record header (length and CRC).
pub const HEADER: u64 = 8;
const ACK_MAGIC: &[u8; 8] = b"VRWACK01";

/// Why the WAL could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL directory {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    #[error("WAL segment {file}: {source}")]
    Segment { file: PathBuf, source: io::Error },
}

/// A record's address: segment number and byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// Something cut from a damaged segment when the WAL was opened.
#[derive(Clone, Debug, PartialEq)]
pub struct Cut {
    pub segment: u64,
    pub offset: u64,
    pub bytes: u64,
    pub reason: &'static str,
}

/// What opening the WAL found.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub segments: usize,
    pub records: usize,
    pub samples: u64,
    pub cuts: Vec<Cut>,
}

/// Acknowledgement state as saved in the `acked` file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AckState {
    /// Every record before this position is acknowledged.
    pub watermark: Pos,
    /// Records at or after the watermark with some buckets acknowledged.
    pub partial: HashMap<Pos, u64>,
}

#[derive(Clone, Copy, Debug, Default)]
struct SegInfo {
    bytes: u64,
    samples: u64,
    acked_samples: u64,
}

struct Inner {
    segments: BTreeMap<u64, SegInfo>,
    current: u64,
    file: File,
    total_bytes: u64,
    /// Segments removed because the WAL was full, not yet reported.
    dropped_full: u64,
}

/// Where a reader stands against the segments.
#[derive(Debug, PartialEq)]
pub enum Bound {
    /// The segment is readable up to `limit`; `sealed` when no more will be
    /// written to it.
    Limit { limit: u64, sealed: bool },
    /// The segment is gone (acknowledged or dropped); continue at this one.
    Moved(u64),
}

/// Counters returned by [`Wal::stats`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WalStats {
    pub bytes: u64,
    pub segments: u64,
}

/// A segmented, CRC-checked write-ahead log.
pub struct Wal {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// The segment opened for appends when the WAL was opened: records
    /// before it were written by an earlier run.
    first_new: u64,
    inner: Mutex<Inner>,
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.seg"))
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, checks every record, cuts a
    /// damaged tail off each segment, and starts a new segment for appends.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Wal, OpenReport), WalError> {
        let derr = |source| WalError::Dir { dir: dir.to_path_buf(), source };
        fs::create_dir_all(dir).map_err(derr)?;
        let mut numbers: Vec<u64> = fs::read_dir(dir)
            .map_err(derr)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        numbers.sort_unstable();
        let mut report = OpenReport::default();
        let mut segments = BTreeMap::new();
        let mut total = 0;
        for n in numbers {
            let path = seg_path(dir, n);
            let serr = |source| WalError::Segment { file: path.clone(), source };
            let data = fs::read(&path).map_err(serr)?;
            let (good, records, samples, cut) = scan(&data, n);
            if let Some(cut) = cut {
                tracing::warn!(
                    segment = %path.display(),
                    offset = cut.offset,
                    bytes_cut = cut.bytes,
                    reason = cut.reason,
                    "WAL segment damaged: keeping the {records} records before the damage, cutting the rest"
                );
                OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(good)).map_err(serr)?;
                report.cuts.push(cut);
            }
            if good == 0 {
                let _ = fs::remove_file(&path);
                continue;
            }
            report.segments += 1;
            report.records += records;
            report.samples += samples;
            total += good;
            segments.insert(n, SegInfo { bytes: good, samples, acked_samples: 0 });
        }
        // Appends always go to a fresh segment, never after a cut.
        let current = segments.keys().next_back().map_or(0, |n| n + 1);
        let file = create_segment(dir, current)?;
        segments.insert(current, SegInfo::default());
        let segment_bytes = (max_bytes / 16).clamp(64 * 1024, 32 * 1024 * 1024);
        let inner = Inner { segments, current, file, total_bytes: total, dropped_full: 0 };
        Ok((
            Wal { dir: dir.to_path_buf(), max_bytes, segment_bytes, first_new: current, inner: Mutex::new(inner) },
            report,
        ))
    }

    /// Where this run's appends began; records before it are a replay.
    pub fn replay_end(&self) -> Pos {
        Pos { segment: self.first_new, offset: 0 }
    }

    /// The WAL's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record of `samples` samples; returns its position and the
    /// number of unacknowledged samples dropped to stay under max_wal_size.
    pub fn append(&self, samples: u32, body: &[u8]) -> Result<(Pos, u64), WalError> {
        let mut rec = Vec::with_capacity(HEADER as usize + 4 + body.len());
        let len = (4 + body.len()) as u32;
        rec.extend_from_slice(&len.to_le_bytes());
        rec.extend_from_slice(&[0; 4]);
        rec.extend_from_slice(&samples.to_le_bytes());
        rec.extend_from_slice(body);
        let crc = crc32fast::hash(&rec[HEADER as usize..]);
        rec[4..8].copy_from_slice(&crc.to_le_bytes());

        let mut inner = self.inner.lock().unwrap();
        let cur = inner.current;
        let cur_bytes = inner.segments[&cur].bytes;
        if cur_bytes > 0 && cur_bytes + rec.len() as u64 > self.segment_bytes {
            // Sealing: make the finished segment durable before moving on.
            let _ = inner.file.sync_data();
            let next = cur + 1;
            inner.file = create_segment(&self.dir, next)?;
            inner.current = next;
            inner.segments.insert(next, SegInfo::default());
        }
        let cur = inner.current;
        let pos = Pos { segment: cur, offset: inner.segments[&cur].bytes };
        if let Err(source) = inner.file.write_all(&rec) {
            // A partial write leaves a torn record; the next open cuts it.
            return Err(WalError::Segment { file: seg_path(&self.dir, cur), source });
        }
        let info = inner.segments.get_mut(&cur).unwrap();
        info.bytes += rec.len() as u64;
        info.samples += samples as u64;
        inner.total_bytes += rec.len() as u64;
        let mut dropped = 0;
        while inner.total_bytes > self.max_bytes && inner.segments.len() > 1 {
            let (&oldest, &info) = inner.segments.iter().next().unwrap();
            inner.segments.remove(&oldest);
            inner.total_bytes -= info.bytes;
            inner.dropped_full += 1;
            dropped += info.samples.saturating_sub(info.acked_samples);
            let _ = fs::remove_file(seg_path(&self.dir, oldest));
            tracing::warn!(
                wal = %self.dir.display(),
                segment = oldest,
                samples = info.samples.saturating_sub(info.acked_samples),
                "WAL is over max_wal_size: dropped its oldest segment"
            );
        }
        Ok((pos, dropped))
    }

    /// How far a reader at `pos` may read.
    pub fn bound(&self, pos: Pos) -> Bound {
        let inner = self.inner.lock().unwrap();
        match inner.segments.get(&pos.segment) {
            Some(info) => Bound::Limit { limit: info.bytes, sealed: pos.segment != inner.current },
            None => {
                let next = inner.segments.range(pos.segment..).next().map(|(n, _)| *n);
                Bound::Moved(next.unwrap_or(inner.current))
            }
        }
    }

    /// Opens segment `n` for reading.
    pub fn open_segment(&self, n: u64) -> io::Result<File> {
        File::open(seg_path(&self.dir, n))
    }

    /// Notes that `samples` samples of segment `n` were acknowledged (for the
    /// count of samples lost when a full WAL drops a segment).
    pub fn note_acked(&self, n: u64, samples: u64) {
        if let Some(info) = self.inner.lock().unwrap().segments.get_mut(&n) {
            info.acked_samples += samples;
        }
    }

    /// Deletes segment `n` once everything in it is acknowledged; never the
    /// segment being written.
    pub fn remove_segment(&self, n: u64) {
        let mut inner = self.inner.lock().unwrap();
        if n == inner.current {
            return;
        }
        if let Some(info) = inner.segments.remove(&n) {
            inner.total_bytes -= info.bytes;
            let _ = fs::remove_file(seg_path(&self.dir, n));
        }
    }

    /// Deletes every segment before `n` (all acknowledged per the ack file).
    pub fn remove_before(&self, n: u64) {
        let old: Vec<u64> = self.inner.lock().unwrap().segments.range(..n).map(|(k, _)| *k).collect();
        for k in old {
            self.remove_segment(k);
        }
    }

    /// The first segment still present.
    pub fn first_segment(&self) -> u64 {
        let inner = self.inner.lock().unwrap();
        *inner.segments.keys().next().unwrap_or(&inner.current)
    }

    /// Bytes and segment files on disk.
    pub fn stats(&self) -> WalStats {
        let inner = self.inner.lock().unwrap();
        WalStats { bytes: inner.total_bytes, segments: inner.segments.len() as u64 }
    }

    /// Flushes the segment being written to disk (shutdown).
    pub fn sync(&self) {
        let _ = self.inner.lock().unwrap().file.sync_data();
    }

    /// Reads the acknowledgement state; the default (nothing acknowledged)
    /// when the file is missing or damaged.
    pub fn load_acks(&self) -> AckState {
        let path = self.dir.join("acked");
        let Ok(data) = fs::read(&path) else { return AckState::default() };
        match parse_acks(&data) {
            Some(state) => state,
            None => {
                tracing::warn!(file = %path.display(), "damaged acknowledgement file: re-sending the whole WAL");
                AckState::default()
            }
        }
    }

    /// Saves the acknowledgement state (write to a temporary file, rename).
    pub fn save_acks(&self, state: &AckState) -> io::Result<()> {
        let mut buf = Vec::with_capacity(40 + state.partial.len() * 24);
        buf.extend_from_slice(ACK_MAGIC);
        buf.extend_from_slice(&state.watermark.segment.to_le_bytes());
        buf.extend_from_slice(&state.watermark.offset.to_le_bytes());
        buf.extend_from_slice(&(state.partial.len() as u32).to_le_bytes());
        for (pos, mask) in &state.partial {
            buf.extend_from_slice(&pos.segment.to_le_bytes());
            buf.extend_from_slice(&pos.offset.to_le_bytes());
            buf.extend_from_slice(&mask.to_le_bytes());
        }
        let crc = crc32fast::hash(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        let tmp = self.dir.join("acked.tmp");
        fs::write(&tmp, &buf)?;
        fs::rename(&tmp, self.dir.join("acked"))
    }
}

fn create_segment(dir: &Path, n: u64) -> Result<File, WalError> {
    let path = seg_path(dir, n);
    OpenOptions::new().create(true).append(true).open(&path).map_err(|source| WalError::Segment { file: path, source })
}

fn parse_acks(data: &[u8]) -> Option<AckState> {
    let body = data.len().checked_sub(4).map(|n| &data[..n])?;
    let crc = u32::from_le_bytes(data[body.len()..].try_into().ok()?);
    if crc32fast::hash(body) != crc || !body.starts_with(ACK_MAGIC) {
        return None;
    }
    let u64_at = |i: usize| body.get(i..i + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    let watermark = Pos { segment: u64_at(8)?, offset: u64_at(16)? };
    let n = u32::from_le_bytes(body.get(24..28)?.try_into().ok()?) as usize;
    let mut partial = HashMap::with_capacity(n);
    for i in 0..n {
        let at = 28 + i * 24;
        partial.insert(Pos { segment: u64_at(at)?, offset: u64_at(at + 8)? }, u64_at(at + 16)?);
    }
    Some(AckState { watermark, partial })
}

/// Checks the records of one segment: (bytes of intact records, records,
/// samples, what was cut).
fn scan(data: &[u8], segment: u64) -> (u64, usize, u64, Option<Cut>) {
    let mut at = 0usize;
    let (mut records, mut samples) = (0, 0u64);
    let cut = |at: usize, reason| Some(Cut { segment, offset: at as u64, bytes: (data.len() - at) as u64, reason });
    while at < data.len() {
        let Some(header) = data.get(at..at + HEADER as usize) else {
            return (at as u64, records, samples, cut(at, "torn record header"));
        };
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
        if len < 4 {
            return (at as u64, records, samples, cut(at, "zeroed or invalid record length"));
        }
        let start = at + HEADER as usize;
        let Some(payload) = data.get(start..start + len) else {
            return (at as u64, records, samples, cut(at, "torn record (shorter than its length)"));
        };
        if crc32fast::hash(payload) != crc {
            return (at as u64, records, samples, cut(at, "CRC mismatch"));
        }
        records += 1;
        samples += u32::from_le_bytes(payload[..4].try_into().unwrap()) as u64;
        at = start + len;
    }
    (at as u64, records, samples, None)
}

/// What [`read_record`] found.
#[derive(Debug)]
pub enum Read {
    /// A record: its sample count, protobuf body and the next position.
    Record { samples: u32, body: Vec<u8>, next: Pos },
    /// Nothing more to read yet.
    End,
    /// Move to this position (next segment) and read again.
    Skip(Pos),
}

/// Reads the record at `pos` through `file` (the segment `pos.segment`,
/// opened and cached by the caller), staying within what the WAL says is
/// written. A damaged record here (disk error after open) skips the rest of
/// the segment with a warning rather than stopping the sender.
pub fn read_record(wal: &Wal, file: &mut Option<(u64, File)>, pos: Pos) -> Read {
    let (limit, sealed) = match wal.bound(pos) {
        Bound::Limit { limit, sealed } => (limit, sealed),
        Bound::Moved(n) => return if n == pos.segment { Read::End } else { Read::Skip(Pos { segment: n, offset: 0 }) },
    };
    if pos.offset + HEADER > limit {
        if sealed {
            let next = match wal.bound(Pos { segment: pos.segment + 1, offset: 0 }) {
                Bound::Moved(n) => n,
                Bound::Limit { .. } => pos.segment + 1,
            };
            return Read::Skip(Pos { segment: next, offset: 0 });
        }
        return Read::End;
    }
    if file.as_ref().map(|(n, _)| *n) != Some(pos.segment) {
        match wal.open_segment(pos.segment) {
            Ok(f) => *file = Some((pos.segment, f)),
            // Removed between bound() and open (WAL full): look again.
            Err(_) => return Read::Skip(Pos { segment: pos.segment + 1, offset: 0 }),
        }
    }
    let f = &file.as_ref().unwrap().1;
    let mut header = [0u8; HEADER as usize];
    let skip_rest = |why: &str| {
        tracing::warn!(wal = %wal.dir().display(), segment = pos.segment, offset = pos.offset, "unreadable WAL record ({why}): skipping the rest of the segment");
        Read::Skip(Pos { segment: pos.segment + 1, offset: 0 })
    };
    if f.read_exact_at(&mut header, pos.offset).is_err() {
        return skip_rest("read error");
    }
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
    if len < 4 || pos.offset + HEADER + len > limit {
        return skip_rest("bad length");
    }
    let mut payload = vec![0u8; len as usize];
    if f.read_exact_at(&mut payload, pos.offset + HEADER).is_err() || crc32fast::hash(&payload) != crc {
        return skip_rest("CRC mismatch");
    }
    let samples = u32::from_le_bytes(payload[..4].try_into().unwrap());
    payload.drain(..4);
    Read::Record { samples, body: payload, next: Pos { segment: pos.segment, offset: pos.offset + HEADER + len } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vantage-wal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn read_all(wal: &Wal, from: Pos) -> Vec<(u32, Vec<u8>)> {
        let (mut pos, mut file, mut out) = (from, None, Vec::new());
        loop {
            match read_record(wal, &mut file, pos) {
                Read::Record { samples, body, next } => {
                    out.push((samples, body));
                    pos = next;
                }
                Read::Skip(p) => pos = p,
                Read::End => return out,
            }
        }
    }

    /// Writes ten records of 3 samples each; returns the segment file.
    fn ten_records(dir: &Path) -> PathBuf {
        let (wal, report) = Wal::open(dir, 1 << 30).unwrap();
        assert_eq!(report.records, 0);
        for i in 0..10u8 {
            wal.append(3, &[i; 20]).unwrap();
        }
        assert_eq!(read_all(&wal, Pos::default()).len(), 10);
        seg_path(dir, 0)
    }

    fn reopen_and_count(dir: &Path) -> (OpenReport, usize) {
        let (wal, report) = Wal::open(dir, 1 << 30).unwrap();
        let n = read_all(&wal, Pos::default()).len();
        (report, n)
    }

    #[test]
    fn torn_last_record_keeps_everything_before() {
        let dir = tmp("torn");
        let seg = ten_records(&dir);
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 5).unwrap();
        let (report, n) = reopen_and_count(&dir);
        assert_eq!((report.records, report.samples, n), (9, 27, 9));
        assert_eq!(report.cuts.len(), 1);
        assert_eq!(report.cuts[0].offset, 9 * 32);
        assert_eq!(report.cuts[0].bytes, 32 - 5);
        assert_eq!(fs::metadata(&seg).unwrap().len(), 9 * 32);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn flipped_crc_bit_cuts_from_that_record() {
        let dir = tmp("crc");
        let seg = ten_records(&dir);
        let mut data = fs::read(&seg).unwrap();
        data[6 * 32 + 20] ^= 0x10; // inside record 7's payload
        fs::write(&seg, &data).unwrap();
        let (report, n) = reopen_and_count(&dir);
        assert_eq!((report.records, n), (6, 6));
        assert_eq!(report.cuts[0].reason, "CRC mismatch");
        assert_eq!(report.cuts[0].bytes, 4 * 32);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn zeroed_length_cuts_from_that_record() {
        let dir = tmp("zero");
        let seg = ten_records(&dir);
        let mut data = fs::read(&seg).unwrap();
        data[8 * 32..8 * 32 + 4].copy_from_slice(&[0; 4]);
        fs::write(&seg, &data).unwrap();
        let (report, n) = reopen_and_count(&dir);
        assert_eq!((report.records, report.samples, n), (8, 24, 8));
        assert_eq!(report.cuts[0].reason, "zeroed or invalid record length");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn appends_after_reopen_go_to_a_new_segment_and_read_in_order() {
        let dir = tmp("reopen");
        ten_records(&dir);
        let (wal, _) = Wal::open(&dir, 1 << 30).unwrap();
        let (pos, _) = wal.append(1, b"eleven").unwrap();
        assert_eq!(pos, Pos { segment: 1, offset: 0 });
        let all = read_all(&wal, Pos::default());
        assert_eq!(all.len(), 11);
        assert_eq!(all[10], (1, b"eleven".to_vec()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn full_wal_drops_oldest_segments_and_counts_their_samples() {
        let dir = tmp("full");
        // 64 KiB segments (the minimum), 256 KiB cap.
        let (wal, _) = Wal::open(&dir, 256 * 1024).unwrap();
        let body = vec![7u8; 1000];
        let mut dropped = 0;
        for _ in 0..1000 {
            dropped += wal.append(10, &body).unwrap().1;
        }
        let stats = wal.stats();
        assert!(stats.bytes <= 256 * 1024, "{stats:?}");
        // 1012 bytes a record, 64 records a segment (64768 bytes).
        let kept = read_all(&wal, Pos::default()).len() as u64;
        assert_eq!(dropped, (1000 - kept) * 10);
        assert!(dropped > 0);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn ack_file_round_trips_and_rejects_damage() {
        let dir = tmp("acks");
        let (wal, _) = Wal::open(&dir, 1 << 30).unwrap();
        let mut state = AckState { watermark: Pos { segment: 3, offset: 640 }, partial: HashMap::new() };
        state.partial.insert(Pos { segment: 3, offset: 700 }, 0b1011);
        wal.save_acks(&state).unwrap();
        assert_eq!(wal.load_acks(), state);
        let mut data = fs::read(dir.join("acked")).unwrap();
        data[10] ^= 1;
        fs::write(dir.join("acked"), data).unwrap();
        assert_eq!(wal.load_acks(), AckState::default());
        let _ = fs::remove_dir_all(&dir);
    }
}
