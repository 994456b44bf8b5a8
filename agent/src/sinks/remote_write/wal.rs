//! The write-ahead log of one endpoint: every accepted batch is appended as
//! a CRC-checked record to numbered segment files before anything is sent,
//! and a segment is deleted only once every record in it is acknowledged.
//!
//! Segment layout: `b"VWAL" | version: u32 LE`, then records. Record layout:
//! `len: u32 LE | crc32(payload): u32 LE | payload`, payload = `samples: u32
//! LE | WalRecord protobuf`. A record is addressed by its [`Pos`] (segment
//! number, byte offset). A record with 0 samples is padding: it covers
//! bytes found damaged, so that nothing on disk is left unreadable and the
//! offsets of the records after it (which the `acked` file names) hold.
//! Segments written before the header existed (records from offset 0) are
//! still read.
//!
//! What was acknowledged survives restarts in the `acked` file: a watermark
//! (every record before it is acknowledged) plus, for records after it that
//! were partly acknowledged, the mask of series buckets already sent. The
//! sender rewrites it after every acknowledgement, before the shard that got
//! the acknowledgement sends again, so a restart re-sends only what was in
//! flight (exact duplicates of each series' newest sample, which receivers
//! accept) and never an older sample after a newer one.
//!
//! When the disk refuses a write (full, quota, I/O error), the torn bytes
//! are cut off, the segment is sealed, and new records go to segments held
//! in memory (`memory_buffer_size`, the oldest dropped past it).
//! The queue sends them like any other; once a write works again they are
//! written out as ordinary segment files and appends go back to disk.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes of a record header (length and CRC).
pub const HEADER: u64 = 8;
/// Bytes of a segment header (magic and format version).
pub const SEG_HEADER: u64 = 8;
/// The segment format this build writes and reads.
pub const SEG_VERSION: u32 = 1;
const SEG_MAGIC: &[u8; 4] = b"VWAL";
/// The smallest record (header and sample count): the smallest damaged
/// span a padding record can cover.
const MIN_RECORD: u64 = HEADER + 4;
/// Records held in memory while the disk refuses writes (the default of
/// `memory_buffer_size`).
pub const MEMORY_BUFFER_BYTES: u64 = 4 << 20;
/// How often a refused disk is tried again.
const DISK_RETRY: Duration = Duration::from_secs(1);
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

/// Something cut from or covered in a damaged segment when the WAL was opened.
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
    /// Damaged records skipped (covered by padding or cut off a torn tail).
    pub corrupt_records: u64,
    /// Segments skipped: empty, of an unknown format or version, or missing
    /// from the middle of the sequence.
    pub segments_skipped: u64,
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
    /// Samples the queue has read into memory: dropping the segment does
    /// not lose them (they are sent from there), only the rest.
    read_samples: u64,
    /// Offset of the first record (after the segment header, if any).
    start: u64,
    /// Held in memory (`Inner::mem`), not on disk.
    in_memory: bool,
}

/// Why appends are going to memory.
struct Fault {
    error: io::Error,
    retry_at: Instant,
}

struct Inner {
    segments: BTreeMap<u64, SegInfo>,
    current: u64,
    /// The segment being written; None while appends go to memory.
    file: Option<File>,
    /// Bytes on disk.
    total_bytes: u64,
    /// Segments held in memory, as their file content would be.
    mem: BTreeMap<u64, Vec<u8>>,
    mem_bytes: u64,
    fault: Option<Fault>,
}

/// Where a reader stands against the segments.
#[derive(Debug, PartialEq)]
pub enum Bound {
    /// The segment is readable from `start` up to `limit`; `sealed` when no
    /// more will be written to it.
    Limit { start: u64, limit: u64, sealed: bool },
    /// The segment is gone (acknowledged or dropped); continue at this one.
    Moved(u64),
}

/// Counters returned by [`Wal::stats`].
#[derive(Clone, Copy, Debug, Default)]
pub struct WalStats {
    pub bytes: u64,
    pub segments: u64,
    pub memory_bytes: u64,
    pub corrupt_records: u64,
    pub segments_skipped: u64,
}

/// What one append did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Appended {
    pub pos: Pos,
    /// Unacknowledged samples dropped to stay under max_wal_size.
    pub dropped_wal_full: u64,
    /// Unacknowledged samples dropped from the memory buffer while the disk
    /// is full (ENOSPC, EDQUOT).
    pub dropped_disk_full: u64,
    /// The same while the disk fails otherwise.
    pub dropped_wal_error: u64,
}

/// A segmented, CRC-checked write-ahead log.
pub struct Wal {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Cap of the records held in memory while the disk refuses writes.
    mem_cap: u64,
    /// The segment opened for appends when the WAL was opened: records
    /// before it were written by an earlier run.
    first_new: u64,
    corrupt_records: AtomicU64,
    segments_skipped: AtomicU64,
    inner: Mutex<Inner>,
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:016}.seg"))
}

/// A new segment's header.
fn seg_header() -> [u8; SEG_HEADER as usize] {
    let mut h = [0u8; SEG_HEADER as usize];
    h[..4].copy_from_slice(SEG_MAGIC);
    h[4..].copy_from_slice(&SEG_VERSION.to_le_bytes());
    h
}

/// Whether an I/O error means the disk (or the quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Size of the filesystem holding `dir`, if statvfs answers.
fn fs_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_blocks as u64).saturating_mul(st.f_frsize as u64))
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`, checks every record, covers
    /// damaged records with padding, cuts a torn tail, skips segments it
    /// cannot read, and starts a new segment for appends.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Wal, OpenReport), WalError> {
        let derr = |source| WalError::Dir { dir: dir.to_path_buf(), source };
        fs::create_dir_all(dir).map_err(derr)?;
        // A segment half written out from memory when the agent died.
        for e in fs::read_dir(dir).map_err(derr)?.filter_map(|e| e.ok()) {
            if e.file_name().to_str().is_some_and(|n| n.ends_with(".seg.tmp")) {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut numbers: Vec<u64> = fs::read_dir(dir)
            .map_err(derr)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        numbers.sort_unstable();
        let mut report = OpenReport::default();
        let mut segments = BTreeMap::new();
        let mut total = 0;
        let mut prev: Option<u64> = None;
        for &n in &numbers {
            if let Some(p) = prev {
                if n > p + 1 {
                    // Segments are only ever deleted from the front.
                    let missing = n - p - 1;
                    tracing::warn!(wal = %dir.display(), after = p, before = n, missing, "WAL segments missing from the middle: their records are lost");
                    report.segments_skipped += missing;
                }
            }
            prev = Some(n);
            let path = seg_path(dir, n);
            let serr = |source| WalError::Segment { file: path.clone(), source };
            let data = match fs::read(&path) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(segment = %path.display(), error = %e, "WAL segment unreadable: skipped");
                    report.segments_skipped += 1;
                    continue;
                }
            };
            let scan = scan(&data, n);
            if let Some(why) = scan.unusable {
                report.segments_skipped += 1;
                if data.is_empty() {
                    tracing::warn!(segment = %path.display(), "empty WAL segment: removed");
                    let _ = fs::remove_file(&path);
                } else {
                    // Kept aside, not deleted: it may be a newer agent's.
                    let aside = path.with_extension("seg.skipped");
                    tracing::error!(segment = %path.display(), moved_to = %aside.display(), "WAL segment skipped: {why}");
                    let _ = fs::rename(&path, &aside);
                }
                continue;
            }
            for cut in &scan.cuts {
                tracing::warn!(
                    segment = %path.display(),
                    offset = cut.offset,
                    bytes = cut.bytes,
                    reason = cut.reason,
                    "WAL segment damaged: the damaged record is skipped, the records around it are kept"
                );
            }
            report.corrupt_records += scan.cuts.len() as u64;
            if !scan.holes.is_empty() {
                if let Err(e) = pad_holes(&path, &scan.holes) {
                    tracing::error!(segment = %path.display(), error = %e, "cannot cover the damaged records with padding: the rest of this segment will be skipped when read");
                }
            }
            if scan.good < data.len() as u64 {
                OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(scan.good)).map_err(serr)?;
            }
            report.cuts.extend(scan.cuts);
            if scan.records == 0 {
                let _ = fs::remove_file(&path);
                continue;
            }
            report.segments += 1;
            report.records += scan.records;
            report.samples += scan.samples;
            total += scan.good;
            segments.insert(
                n,
                SegInfo {
                    bytes: scan.good,
                    samples: scan.samples,
                    acked_samples: 0,
                    start: scan.start,
                    ..Default::default()
                },
            );
        }
        // Appends always go to a fresh segment, never after a cut; numbers
        // continue after skipped segments so none is ever reused.
        let current = numbers.last().map_or(0, |n| n + 1);
        let file = create_segment(dir, current)?;
        segments.insert(current, SegInfo { bytes: SEG_HEADER, start: SEG_HEADER, ..Default::default() });
        total += SEG_HEADER;
        // On a small filesystem, segments small enough that acknowledged
        // ones can be deleted long before it fills.
        let cap = fs_bytes(dir).map_or(max_bytes, |fs| fs.min(max_bytes));
        let segment_bytes = (cap / 16).clamp(64 * 1024, 32 * 1024 * 1024);
        let inner = Inner {
            segments,
            current,
            file: Some(file),
            total_bytes: total,
            mem: BTreeMap::new(),
            mem_bytes: 0,
            fault: None,
        };
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                max_bytes,
                segment_bytes,
                mem_cap: MEMORY_BUFFER_BYTES,
                first_new: current,
                corrupt_records: AtomicU64::new(report.corrupt_records),
                segments_skipped: AtomicU64::new(report.segments_skipped),
                inner: Mutex::new(inner),
            },
            report,
        ))
    }

    /// Sets how many bytes of records may wait in memory while the disk
    /// refuses writes.
    pub fn set_memory_buffer(&mut self, bytes: u64) {
        self.mem_cap = bytes;
    }

    /// Where this run's appends began; records before it are a replay.
    pub fn replay_end(&self) -> Pos {
        Pos { segment: self.first_new, offset: 0 }
    }

    /// The WAL's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record of `samples` samples. It never fails: when the
    /// disk refuses it, the record is held in memory (see the module doc).
    pub fn append(&self, samples: u32, body: &[u8]) -> Appended {
        let rec = encode_record(samples, body);
        let mut inner = self.inner.lock().unwrap();
        let mut out = Appended::default();
        if inner.fault.as_ref().is_some_and(|f| Instant::now() >= f.retry_at) {
            self.try_resume(&mut inner);
        }
        if inner.file.is_some() {
            let cur = inner.current;
            let cur_bytes = inner.segments[&cur].bytes;
            if cur_bytes > SEG_HEADER && cur_bytes + rec.len() as u64 > self.segment_bytes {
                // Sealing: make the finished segment durable before moving on.
                let _ = inner.file.as_ref().unwrap().sync_data();
                match create_segment(&self.dir, cur + 1) {
                    Ok(f) => {
                        inner.file = Some(f);
                        inner.current = cur + 1;
                        inner
                            .segments
                            .insert(cur + 1, SegInfo { bytes: SEG_HEADER, start: SEG_HEADER, ..Default::default() });
                        inner.total_bytes += SEG_HEADER;
                    }
                    Err(WalError::Segment { source, .. } | WalError::Dir { source, .. }) => {
                        self.to_memory(&mut inner, source);
                    }
                }
            }
        }
        if inner.file.is_some() {
            let cur = inner.current;
            let at = inner.segments[&cur].bytes;
            let result = inner.file.as_ref().unwrap().write_all_at(&rec, at);
            match result {
                Ok(()) => {
                    let info = inner.segments.get_mut(&cur).unwrap();
                    info.bytes += rec.len() as u64;
                    info.samples += samples as u64;
                    inner.total_bytes += rec.len() as u64;
                    out.pos = Pos { segment: cur, offset: at };
                }
                Err(e) => {
                    // Cut the torn bytes so the sealed segment stays readable.
                    if let Err(e) = inner.file.as_ref().unwrap().set_len(at) {
                        tracing::error!(segment = %seg_path(&self.dir, cur).display(), error = %e, "cannot cut a torn WAL record; the next start cuts it");
                    }
                    self.to_memory(&mut inner, e);
                }
            }
        }
        if inner.file.is_none() {
            self.append_memory(&mut inner, samples, &rec, &mut out);
        }
        while inner.total_bytes > self.max_bytes && inner.segments.values().filter(|s| !s.in_memory).count() > 1 {
            let (&oldest, &info) = inner.segments.iter().find(|(_, s)| !s.in_memory).unwrap();
            if oldest == inner.current {
                break;
            }
            inner.segments.remove(&oldest);
            inner.total_bytes -= info.bytes;
            let lost = info.samples.saturating_sub(info.acked_samples.max(info.read_samples));
            out.dropped_wal_full += lost;
            let _ = fs::remove_file(seg_path(&self.dir, oldest));
            tracing::warn!(
                wal = %self.dir.display(),
                segment = oldest,
                samples = lost,
                "WAL is over max_wal_size: dropped its oldest segment"
            );
        }
        out
    }

    /// Seals the disk segment and sends appends to memory after `error`.
    fn to_memory(&self, inner: &mut Inner, error: io::Error) {
        if inner.fault.is_none() {
            tracing::error!(
                wal = %self.dir.display(),
                error = %error,
                memory_buffer_bytes = self.mem_cap,
                "cannot write the WAL: holding new samples in memory (oldest dropped past the buffer) until the disk takes writes again"
            );
        }
        inner.file = None;
        // The disk segment stays, sealed, even if empty: numbers are never
        // reused (a reader may hold the old file open) and the sequence on
        // disk has no gap. It goes once the reader has passed it.
        let cur = inner.current;
        self.new_memory_segment(inner, cur + 1);
        inner.fault = Some(Fault { error, retry_at: Instant::now() + DISK_RETRY });
    }

    fn new_memory_segment(&self, inner: &mut Inner, n: u64) {
        inner.mem.insert(n, seg_header().to_vec());
        inner.mem_bytes += SEG_HEADER;
        inner
            .segments
            .insert(n, SegInfo { bytes: SEG_HEADER, start: SEG_HEADER, in_memory: true, ..Default::default() });
        inner.current = n;
    }

    fn append_memory(&self, inner: &mut Inner, samples: u32, rec: &[u8], out: &mut Appended) {
        // Memory segments are small so that dropping the oldest loses little.
        let mem_segment = self.segment_bytes.min(self.mem_cap / 8);
        let cur = inner.current;
        if inner.segments[&cur].bytes > SEG_HEADER && inner.segments[&cur].bytes + rec.len() as u64 > mem_segment {
            self.new_memory_segment(inner, cur + 1);
        }
        let cur = inner.current;
        let buf = inner.mem.get_mut(&cur).unwrap();
        out.pos = Pos { segment: cur, offset: buf.len() as u64 };
        buf.extend_from_slice(rec);
        inner.mem_bytes += rec.len() as u64;
        let info = inner.segments.get_mut(&cur).unwrap();
        info.bytes += rec.len() as u64;
        info.samples += samples as u64;
        let disk_full = inner.fault.as_ref().is_some_and(|f| is_disk_full(&f.error));
        while inner.mem_bytes > self.mem_cap && inner.mem.len() > 1 {
            let (&oldest, _) = inner.mem.iter().next().unwrap();
            let bytes = inner.mem.remove(&oldest).unwrap().len() as u64;
            inner.mem_bytes -= bytes;
            let info = inner.segments.remove(&oldest).unwrap();
            let lost = info.samples.saturating_sub(info.acked_samples.max(info.read_samples));
            if disk_full {
                out.dropped_disk_full += lost;
            } else {
                out.dropped_wal_error += lost;
            }
            tracing::warn!(wal = %self.dir.display(), samples = lost, "WAL memory buffer full while the disk refuses writes: dropped its oldest samples");
        }
    }

    /// Writes memory segments out as files, oldest first, and goes back to
    /// disk appends once all are out.
    fn try_resume(&self, inner: &mut Inner) {
        let numbers: Vec<u64> = inner.mem.keys().copied().collect();
        let mut failed = None;
        for n in numbers {
            let path = seg_path(&self.dir, n);
            let tmp = path.with_extension("seg.tmp");
            let data = &inner.mem[&n];
            let result = fs::write(&tmp, data).and_then(|_| fs::rename(&tmp, &path));
            if let Err(e) = result {
                let _ = fs::remove_file(&tmp);
                failed = Some(e);
                break;
            }
            let bytes = inner.mem.remove(&n).unwrap().len() as u64;
            inner.mem_bytes -= bytes;
            inner.total_bytes += bytes;
            inner.segments.get_mut(&n).unwrap().in_memory = false;
        }
        if failed.is_none() {
            let next = inner.current + 1;
            match create_segment(&self.dir, next) {
                Ok(f) => {
                    inner.file = Some(f);
                    inner.current = next;
                    inner.segments.insert(next, SegInfo { bytes: SEG_HEADER, start: SEG_HEADER, ..Default::default() });
                    inner.total_bytes += SEG_HEADER;
                    inner.fault = None;
                    tracing::info!(wal = %self.dir.display(), "the WAL takes writes again: samples held in memory are on disk");
                    return;
                }
                Err(WalError::Segment { source, .. } | WalError::Dir { source, .. }) => failed = Some(source),
            }
        }
        if !inner.mem.contains_key(&inner.current) {
            let next = inner.current + 1;
            self.new_memory_segment(inner, next);
        }
        let f = inner.fault.as_mut().unwrap();
        f.error = failed.unwrap();
        f.retry_at = Instant::now() + DISK_RETRY;
    }

    /// Why appends go to memory, for the status page; None when they do not.
    pub fn fault(&self) -> Option<String> {
        let inner = self.inner.lock().unwrap();
        let f = inner.fault.as_ref()?;
        let what = if is_disk_full(&f.error) { "disk full" } else { "disk error" };
        Some(format!(
            "WAL {what}: cannot write {} ({}); {} KiB of samples held in memory (at most {} KiB, oldest dropped past it)",
            self.dir.display(),
            f.error,
            inner.mem_bytes / 1024,
            self.mem_cap / 1024
        ))
    }

    /// How far a reader at `pos` may read.
    pub fn bound(&self, pos: Pos) -> Bound {
        let inner = self.inner.lock().unwrap();
        match inner.segments.get(&pos.segment) {
            Some(info) => Bound::Limit { start: info.start, limit: info.bytes, sealed: pos.segment != inner.current },
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

    /// Reads from memory segment `n` at `offset`; None when `n` is not
    /// held in memory (any more).
    fn read_memory(&self, n: u64, offset: u64, buf: &mut [u8]) -> Option<bool> {
        let inner = self.inner.lock().unwrap();
        let data = inner.mem.get(&n)?;
        let src = data.get(offset as usize..offset as usize + buf.len());
        Some(src.map(|s| buf.copy_from_slice(s)).is_some())
    }

    /// Notes that `samples` samples of segment `n` were acknowledged (for the
    /// count of samples lost when a full WAL drops a segment).
    pub fn note_acked(&self, n: u64, samples: u64) {
        if let Some(info) = self.inner.lock().unwrap().segments.get_mut(&n) {
            info.acked_samples += samples;
        }
    }

    /// Notes that the queue read `samples` samples of segment `n` into
    /// memory.
    pub fn note_read(&self, n: u64, samples: u64) {
        if let Some(info) = self.inner.lock().unwrap().segments.get_mut(&n) {
            info.read_samples += samples;
        }
    }

    /// Counts a record found damaged while reading.
    pub fn note_corrupt(&self) {
        self.corrupt_records.fetch_add(1, Ordering::Relaxed);
    }

    /// Deletes segment `n` once everything in it is acknowledged; never the
    /// segment being written.
    pub fn remove_segment(&self, n: u64) {
        let mut inner = self.inner.lock().unwrap();
        if n == inner.current {
            return;
        }
        if let Some(info) = inner.segments.remove(&n) {
            if info.in_memory {
                inner.mem_bytes -= inner.mem.remove(&n).map_or(0, |d| d.len() as u64);
            } else {
                inner.total_bytes -= info.bytes;
                let _ = fs::remove_file(seg_path(&self.dir, n));
            }
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

    /// Bytes and segments, on disk and in memory, and damage found.
    pub fn stats(&self) -> WalStats {
        let inner = self.inner.lock().unwrap();
        WalStats {
            bytes: inner.total_bytes,
            segments: inner.segments.values().filter(|s| !s.in_memory).count() as u64,
            memory_bytes: inner.mem_bytes,
            corrupt_records: self.corrupt_records.load(Ordering::Relaxed),
            segments_skipped: self.segments_skipped.load(Ordering::Relaxed),
        }
    }

    /// Flushes the segment being written to disk (shutdown).
    pub fn sync(&self) {
        if let Some(f) = &self.inner.lock().unwrap().file {
            let _ = f.sync_data();
        }
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
    /// On failure the previous file stays as it was.
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
        let result = fs::write(&tmp, &buf).and_then(|_| fs::rename(&tmp, self.dir.join("acked")));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

fn encode_record(samples: u32, body: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(HEADER as usize + 4 + body.len());
    let len = (4 + body.len()) as u32;
    rec.extend_from_slice(&len.to_le_bytes());
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(&samples.to_le_bytes());
    rec.extend_from_slice(body);
    let crc = crc32fast::hash(&rec[HEADER as usize..]);
    rec[4..8].copy_from_slice(&crc.to_le_bytes());
    rec
}

/// Creates segment `n` with its header; on failure no file is left behind.
fn create_segment(dir: &Path, n: u64) -> Result<File, WalError> {
    let path = seg_path(dir, n);
    let result = OpenOptions::new().create(true).truncate(true).write(true).open(&path).and_then(|f| {
        f.write_all_at(&seg_header(), 0)?;
        Ok(f)
    });
    result.map_err(|source| {
        let _ = fs::remove_file(&path);
        WalError::Segment { file: path, source }
    })
}

/// Covers each damaged span with one padding record (0 samples, zeros).
fn pad_holes(path: &Path, holes: &[(u64, u64)]) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    for &(start, end) in holes {
        let body = vec![0u8; (end - start - MIN_RECORD) as usize];
        f.write_all_at(&encode_record(0, &body), start)?;
    }
    f.sync_data()
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
    let mut partial = HashMap::with_capacity(n.min(body.len() / 24));
    for i in 0..n {
        let at = 28 + i * 24;
        partial.insert(Pos { segment: u64_at(at)?, offset: u64_at(at + 8)? }, u64_at(at + 16)?);
    }
    Some(AckState { watermark, partial })
}

/// What [`scan`] found in one segment's bytes.
#[derive(Debug, Default)]
pub struct Scan {
    /// Why the whole segment cannot be used (empty, unknown format or version).
    pub unusable: Option<String>,
    /// Offset of the first record.
    pub start: u64,
    /// Bytes to keep (a torn tail is cut after them).
    pub good: u64,
    /// Intact records (padding excluded) and their samples.
    pub records: usize,
    pub samples: u64,
    /// Damaged spans `[start, end)` between intact records, to cover with padding.
    pub holes: Vec<(u64, u64)>,
    /// One entry per damaged record: covered by padding or cut off.
    pub cuts: Vec<Cut>,
}

/// The intact record at `at`: (its total length, its sample count).
fn record_at(data: &[u8], at: usize) -> Option<(usize, u32)> {
    let header = data.get(at..at.checked_add(HEADER as usize)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
    if len < 4 {
        return None;
    }
    let start = at + HEADER as usize;
    let payload = data.get(start..start.checked_add(len)?)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Some((HEADER as usize + len, u32::from_le_bytes(payload[..4].try_into().unwrap())))
}

/// Why the record at `at` is not intact.
fn damage_reason(data: &[u8], at: usize) -> &'static str {
    let Some(header) = data.get(at..at + HEADER as usize) else { return "torn record header" };
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    if len < 4 {
        "zeroed or invalid record length"
    } else if at + HEADER as usize + len > data.len() {
        "torn record (shorter than its length)"
    } else {
        "CRC mismatch"
    }
}

/// The first intact record after the damaged one at `at`, if any: first
/// where the damaged record's own length points (a damaged payload), else
/// the next offset where a whole record checks out.
fn resync(data: &[u8], at: usize) -> Option<usize> {
    if let Some(h) = data.get(at..at + 4) {
        let len = u32::from_le_bytes(h.try_into().unwrap()) as usize;
        let next = at.saturating_add(HEADER as usize).saturating_add(len);
        if len >= 4 && next <= data.len() && (next == data.len() || record_at(data, next).is_some()) {
            return Some(next);
        }
    }
    (at + 1..data.len().saturating_sub(MIN_RECORD as usize - 1)).find(|&j| record_at(data, j).is_some())
}

/// Checks the records of one segment.
pub fn scan(data: &[u8], segment: u64) -> Scan {
    let mut s = Scan::default();
    if data.is_empty() {
        s.unusable = Some("empty segment".into());
        return s;
    }
    if data.starts_with(SEG_MAGIC) {
        let Some(v) = data.get(4..8) else {
            s.unusable = Some("torn segment header".into());
            return s;
        };
        let version = u32::from_le_bytes(v.try_into().unwrap());
        if version != SEG_VERSION {
            s.unusable = Some(format!(
                "segment format version {version}, this agent reads version {SEG_VERSION} (written by another release?)"
            ));
            return s;
        }
        s.start = SEG_HEADER;
    } else if record_at(data, 0).is_none() {
        // Neither a header nor a record from before headers existed.
        s.unusable = Some("not a WAL segment (no VWAL header)".into());
        return s;
    }
    let mut at = s.start as usize;
    let mut hole_start = None;
    while at < data.len() {
        if let Some((len, samples)) = record_at(data, at) {
            if let Some(h) = hole_start.take() {
                if (at - h) as u64 >= MIN_RECORD {
                    s.holes.push((h as u64, at as u64));
                } else {
                    // Too small to pad: swallow this record into the hole.
                    s.cuts.push(Cut {
                        segment,
                        offset: at as u64,
                        bytes: len as u64,
                        reason: "record too close to damage",
                    });
                    hole_start = Some(h);
                    at += len;
                    continue;
                }
            }
            if samples > 0 {
                s.records += 1;
                s.samples += samples as u64;
            }
            at += len;
            continue;
        }
        let reason = damage_reason(data, at);
        match resync(data, at) {
            Some(next) => {
                s.cuts.push(Cut { segment, offset: at as u64, bytes: (next - at) as u64, reason });
                hole_start.get_or_insert(at);
                at = next;
            }
            None => {
                s.cuts.push(Cut { segment, offset: at as u64, bytes: (data.len() - at) as u64, reason });
                let end = hole_start.take().unwrap_or(at);
                s.good = end as u64;
                return s;
            }
        }
    }
    if let Some(h) = hole_start {
        // Damage reaching the end exactly.
        if (data.len() - h) as u64 >= MIN_RECORD {
            s.holes.push((h as u64, data.len() as u64));
        } else {
            s.good = h as u64;
            return s;
        }
    }
    s.good = data.len() as u64;
    s
}

/// What [`read_record`] found.
#[derive(Debug)]
pub enum Read {
    /// A record: its sample count, protobuf body and the next position.
    Record { samples: u32, body: Vec<u8>, next: Pos },
    /// Nothing more to read yet.
    End,
    /// Move to this position (padding, or the next segment) and read again.
    Skip(Pos),
}

/// Reads segment `n` at `offset` from memory or through the cached file.
fn read_at(wal: &Wal, file: &mut Option<(u64, File)>, n: u64, offset: u64, buf: &mut [u8]) -> Result<(), &'static str> {
    if let Some(ok) = wal.read_memory(n, offset, buf) {
        return if ok { Ok(()) } else { Err("read error") };
    }
    if file.as_ref().map(|(k, _)| *k) != Some(n) {
        match wal.open_segment(n) {
            Ok(f) => *file = Some((n, f)),
            Err(_) => return Err("gone"),
        }
    }
    file.as_ref().unwrap().1.read_exact_at(buf, offset).map_err(|_| "read error")
}

/// Reads the record at `pos` through `file` (the segment `pos.segment`,
/// opened and cached by the caller), staying within what the WAL says is
/// written. A damaged record here (disk error after open) skips the rest of
/// the segment with a warning rather than stopping the sender.
pub fn read_record(wal: &Wal, file: &mut Option<(u64, File)>, pos: Pos) -> Read {
    let (start, limit, sealed) = match wal.bound(pos) {
        Bound::Limit { start, limit, sealed } => (start, limit, sealed),
        Bound::Moved(n) => return if n == pos.segment { Read::End } else { Read::Skip(Pos { segment: n, offset: 0 }) },
    };
    if pos.offset < start {
        return Read::Skip(Pos { segment: pos.segment, offset: start });
    }
    let next_segment = || {
        let next = match wal.bound(Pos { segment: pos.segment + 1, offset: 0 }) {
            Bound::Moved(n) => n,
            Bound::Limit { .. } => pos.segment + 1,
        };
        Read::Skip(Pos { segment: next, offset: 0 })
    };
    if pos.offset + HEADER > limit {
        return if sealed { next_segment() } else { Read::End };
    }
    let mut header = [0u8; HEADER as usize];
    let skip_rest = |why: &str| {
        wal.note_corrupt();
        tracing::warn!(wal = %wal.dir().display(), segment = pos.segment, offset = pos.offset, "unreadable WAL record ({why}): skipping the rest of the segment");
        next_segment()
    };
    match read_at(wal, file, pos.segment, pos.offset, &mut header) {
        Ok(()) => {}
        // Removed between bound() and open (acknowledged, or WAL full): look again.
        Err("gone") => return next_segment(),
        Err(why) => return skip_rest(why),
    }
    let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
    if len < 4 || pos.offset + HEADER + len > limit {
        return skip_rest("bad length");
    }
    let mut payload = vec![0u8; len as usize];
    if read_at(wal, file, pos.segment, pos.offset + HEADER, &mut payload).is_err() || crc32fast::hash(&payload) != crc {
        return skip_rest("CRC mismatch");
    }
    let samples = u32::from_le_bytes(payload[..4].try_into().unwrap());
    let next = Pos { segment: pos.segment, offset: pos.offset + HEADER + len };
    if samples == 0 {
        return Read::Skip(next);
    }
    payload.drain(..4);
    Read::Record { samples, body: payload, next }
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
            wal.append(3, &[i; 20]);
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
        assert_eq!(report.corrupt_records, 1);
        assert_eq!(report.cuts[0].offset, 8 + 9 * 32);
        assert_eq!(report.cuts[0].bytes, 32 - 5);
        assert_eq!(fs::metadata(&seg).unwrap().len(), 8 + 9 * 32);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn flipped_payload_bit_skips_only_that_record_and_pads_it() {
        let dir = tmp("crc");
        let seg = ten_records(&dir);
        let mut data = fs::read(&seg).unwrap();
        data[8 + 6 * 32 + 20] ^= 0x10; // inside record 7's payload
        fs::write(&seg, &data).unwrap();
        let (report, n) = reopen_and_count(&dir);
        assert_eq!((report.records, report.samples, n, report.corrupt_records), (9, 27, 9, 1));
        assert_eq!(report.cuts[0].reason, "CRC mismatch");
        assert_eq!((report.cuts[0].offset, report.cuts[0].bytes), (8 + 6 * 32, 32));
        // The padding makes the file whole again: a second open finds no damage.
        let (report, n) = reopen_and_count(&dir);
        assert_eq!((report.records, n, report.corrupt_records), (9, 9, 0));
        let (wal, _) = Wal::open(&dir, 1 << 30).unwrap();
        let bodies: Vec<u8> = read_all(&wal, Pos::default()).iter().map(|(_, b)| b[0]).collect();
        assert_eq!(bodies, [0, 1, 2, 3, 4, 5, 7, 8, 9]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn zeroed_length_skips_only_that_record() {
        let dir = tmp("zero");
        let seg = ten_records(&dir);
        let mut data = fs::read(&seg).unwrap();
        data[8 + 8 * 32..8 + 8 * 32 + 4].copy_from_slice(&[0; 4]);
        fs::write(&seg, &data).unwrap();
        let (report, n) = reopen_and_count(&dir);
        assert_eq!((report.records, report.samples, n, report.corrupt_records), (9, 27, 9, 1));
        assert_eq!(report.cuts[0].reason, "zeroed or invalid record length");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn appends_after_reopen_go_to_a_new_segment_and_read_in_order() {
        let dir = tmp("reopen");
        ten_records(&dir);
        let (wal, _) = Wal::open(&dir, 1 << 30).unwrap();
        let pos = wal.append(1, b"eleven").pos;
        assert_eq!(pos, Pos { segment: 1, offset: 8 });
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
            dropped += wal.append(10, &body).dropped_wal_full;
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

    #[test]
    fn skipped_segments_are_counted_and_the_rest_read_in_order() {
        let dir = tmp("segs");
        // Five segments of 64 records (64 KiB each at 1012 bytes a record).
        let (wal, _) = Wal::open(&dir, 1 << 20).unwrap();
        for i in 0..(5 * 64u32) {
            wal.append(1, &[(i / 64) as u8; 1000]);
        }
        drop(wal);
        let mut numbers: Vec<u64> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect();
        numbers.sort();
        assert_eq!(numbers, [0, 1, 2, 3, 4]);
        fs::remove_file(seg_path(&dir, 1)).unwrap(); // missing from the middle
        fs::write(seg_path(&dir, 2), b"").unwrap(); // zero length
        let mut future = fs::read(seg_path(&dir, 3)).unwrap();
        future[4] = 2; // format version 2
        fs::write(seg_path(&dir, 3), &future).unwrap();
        let (wal, report) = Wal::open(&dir, 1 << 30).unwrap();
        assert_eq!((report.segments, report.segments_skipped, report.corrupt_records), (2, 3, 0));
        assert!(dir.join("0000000000000003.seg.skipped").exists(), "the future segment is kept aside");
        assert!(!seg_path(&dir, 2).exists());
        let firsts: Vec<u8> = read_all(&wal, Pos::default()).iter().map(|(_, b)| b[0]).collect();
        assert_eq!(firsts.len(), 128);
        assert!(firsts[..64].iter().all(|b| *b == 0) && firsts[64..].iter().all(|b| *b == 4));
        // Appends go after the highest number, never reusing a skipped one.
        assert_eq!(wal.append(1, b"x").pos.segment, 5);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn segments_without_a_header_are_still_read() {
        let dir = tmp("legacy");
        fs::create_dir_all(&dir).unwrap();
        let mut data = Vec::new();
        for i in 0..3u8 {
            data.extend(encode_record(2, &[i; 10]));
        }
        fs::write(seg_path(&dir, 7), &data).unwrap();
        let (wal, report) = Wal::open(&dir, 1 << 30).unwrap();
        assert_eq!((report.records, report.samples, report.segments_skipped), (3, 6, 0));
        assert_eq!(read_all(&wal, Pos::default()).len(), 3);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn scan_survives_any_single_flipped_byte() {
        let mut data = seg_header().to_vec();
        for i in 0..6u8 {
            data.extend(encode_record(1, &[i; 30]));
        }
        for at in 0..data.len() {
            let mut d = data.clone();
            d[at] ^= 0x5a;
            let s = scan(&d, 0);
            if at < 8 {
                assert!(s.unusable.is_some() || s.records == 6, "byte {at}");
                continue;
            }
            // Exactly the record holding the flipped byte is lost.
            assert_eq!((s.records, s.cuts.len()), (5, 1), "byte {at}: {s:?}");
        }
    }
}
