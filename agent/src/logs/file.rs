//! Tails files matched by globs. Every poll (250 ms by default) each open
//! file is checked and read to its end in 64 KiB chunks (never loaded
//! whole):
//!
//! - the path now names another file (rename rotation) or none (deletion):
//!   the old file is drained through its open descriptor before it is let go;
//! - the file shrank below the read offset, or its first bytes changed
//!   (copytruncate, truncation): reading restarts at 0, after draining the
//!   rest from the copy when a sibling file carries the same first bytes;
//! - files are told apart by device, inode AND a fingerprint of their first
//!   bytes, so a re-created file that reuses an inode is not mistaken for
//!   the old one even when it is already longer than the old offset.
//!
//! Positions record what every log sink acknowledged; on start each saved file is
//! found again (at its path, or renamed or copied beside it) and resumed.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, Metadata};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::positions::{Cursor, CursorKey, FileId, Positions, SavedFile};
use super::stages::{Multiline, MultilineState, Pipeline, Record, StageConfig};
use super::{now_ns, repair_utf8, SourceStats};
use crate::config::common;
use crate::logline::{Ack, LogEntry, LogSender};
use crate::sample::Labels;

/// Bytes of a file's beginning that identify it.
pub const FINGERPRINT_MAX: u32 = 1024;

/// Bytes read per system call.
const CHUNK: usize = 64 * 1024;

/// Bytes read from one file before the others get their turn.
const FAIR_SHARE: u64 = 4 << 20;

/// How long a rotated-away file stays open after its last growth, for
/// writers that have not reopened yet.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Where reading starts in a file seen for the first time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    Beginning,
    /// Only for files present at the first start without a saved position;
    /// files that appear later are read from their beginning.
    End,
}

/// `[[logs.files]]`: one group of files with its labels and stages.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Source name; also the `job` label unless `labels` sets one.
    pub name: String,
    /// Globs: `*`, `?`, `[..]`, `{a,b}` within a path segment and `**`
    /// across segments.
    pub paths: Vec<String>,
    /// Globs of paths to leave alone (e.g. `*.gz`).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Labels of every line of this source.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub start_at: StartAt,
    /// Longer lines are cut to this many bytes (and counted).
    #[serde(default = "default_max_line")]
    pub max_line_size: usize,
    #[serde(default = "default_poll", with = "common::duration")]
    pub poll_interval: Duration,
    #[serde(default)]
    pub stages: Vec<StageConfig>,
}

fn default_max_line() -> usize {
    256 * 1024
}
fn default_poll() -> Duration {
    Duration::from_millis(250)
}

impl FileSourceConfig {
    /// Adds this source's problems to `problems`.
    pub fn validate(&self, place: &str, problems: &mut Vec<String>) {
        if self.paths.is_empty() {
            problems.push(format!("{place}: paths is empty"));
        }
        for p in &self.paths {
            if !p.starts_with('/') {
                problems.push(format!("{place}: path {p:?} must be absolute"));
            }
        }
        if let Err(e) = globs(&self.paths).and_then(|_| globs(&self.exclude)) {
            problems.push(format!("{place}: {e}"));
        }
        if self.max_line_size < 16 {
            problems.push(format!("{place}: max_line_size must be at least 16"));
        }
        if self.poll_interval.is_zero() {
            problems.push(format!("{place}: poll_interval must be above zero"));
        }
        for k in self.labels.keys() {
            if !crate::relabel::is_valid_label_name(k) {
                problems.push(format!("{place}: label {k:?} is not a valid label name"));
            }
        }
        if let Err(e) = Pipeline::new(&self.stages, place) {
            problems.extend(e);
        }
    }

    /// One line for `vantage check`.
    pub fn describe(&self) -> String {
        format!("{} ({} stages)", self.paths.join(", "), self.stages.len())
    }

    fn base_labels(&self) -> Labels {
        let mut l = Labels::from_pairs(self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if l.get("job").is_none() {
            l.set("job", self.name.clone());
        }
        l
    }
}

fn globs(patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g = GlobBuilder::new(p).literal_separator(true).build().map_err(|e| format!("glob {p:?}: {e}"))?;
        b.add(g);
    }
    b.build().map_err(|e| e.to_string())
}

/// The directory to walk for a glob, and how deep (None: no limit, `**`).
fn walk_root(pattern: &str) -> (PathBuf, Option<usize>) {
    let parts: Vec<&str> = pattern.split('/').collect();
    let first_meta = parts.iter().position(|p| p.contains(['*', '?', '[', '{'])).unwrap_or(parts.len() - 1);
    let root: PathBuf = if first_meta == 0 { PathBuf::from("/") } else { PathBuf::from(parts[..first_meta].join("/")) };
    let root = if root.as_os_str().is_empty() { PathBuf::from("/") } else { root };
    let depth = if pattern.contains("**") { None } else { Some(parts.len() - first_meta) };
    (root, depth)
}

/// Hash of the first `len` bytes of `file`, None when it is shorter.
fn fingerprint(file: &File, len: u32) -> Option<u64> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(_) => return None,
        }
    }
    // A stable hash: positions outlive the binary.
    Some(crate::hash::fnv1a(&buf))
}

/// A file being read.
struct Reader {
    /// Where the file is now.
    path: PathBuf,
    /// The path the lines are labelled with and the position is saved
    /// under: the name the file had when it was found, before any rotation.
    label_path: PathBuf,
    labels: Labels,
    file: File,
    dev: u64,
    ino: u64,
    /// Offset of the next byte to read.
    offset: u64,
    /// Bytes of an unfinished line (no newline yet), ending at `offset`.
    partial: Vec<u8>,
    /// Inside an over-long line: discard up to its newline.
    skipping: bool,
    fp_len: u32,
    fp_hash: u64,
    cursor: Arc<Cursor>,
    /// Value of the last acknowledgement handed to the sink.
    last_ack: u64,
    /// Set once the path no longer leads here: drain, then close.
    rotated: Option<Instant>,
    last_growth: Instant,
    multiline: MultilineState,
}

impl Reader {
    fn id(&self) -> FileId {
        FileId {
            path: self.label_path.clone(),
            dev: self.dev,
            ino: self.ino,
            fp_len: self.fp_len,
            fp_hash: self.fp_hash,
        }
    }

    /// Grows the fingerprint while the file is shorter than FINGERPRINT_MAX.
    fn update_fingerprint(&mut self, size: u64) {
        if self.fp_len >= FINGERPRINT_MAX || size <= self.fp_len as u64 {
            return;
        }
        let len = size.min(FINGERPRINT_MAX as u64) as u32;
        if let Some(h) = fingerprint(&self.file, len) {
            self.fp_len = len;
            self.fp_hash = h;
            *self.cursor.key.lock().unwrap() = CursorKey::File(self.id());
        }
    }
}

/// One `[[logs.files]]` source.
pub struct FileSource {
    cfg: FileSourceConfig,
    include: GlobSet,
    exclude: GlobSet,
    roots: Vec<(PathBuf, Option<usize>)>,
    pipeline: Pipeline,
    multiline: Option<Multiline>,
    base_labels: Labels,
    positions: Arc<Positions>,
    sender: LogSender,
    stats: Arc<SourceStats>,
    shutdown: CancellationToken,
    readers: Vec<Reader>,
    /// Paths seen since start (or in the positions): a file that appears at
    /// one of them is new content and is read from its beginning.
    known: HashSet<PathBuf>,
    chunk: Vec<u8>,
}

/// The source was asked to stop.
struct Stopped;

impl FileSource {
    /// Prepares the source; nothing is read before [`FileSource::run`].
    pub fn new(
        cfg: &FileSourceConfig,
        positions: Arc<Positions>,
        sender: LogSender,
        stats: Arc<SourceStats>,
        shutdown: CancellationToken,
    ) -> Result<FileSource, String> {
        let place = format!("logs.files ({})", cfg.name);
        let (pipeline, multiline) = Pipeline::new(&cfg.stages, &place).map_err(|e| e.join("; "))?;
        let mut roots: Vec<(PathBuf, Option<usize>)> = cfg.paths.iter().map(|p| walk_root(p)).collect();
        roots.sort();
        roots.dedup();
        Ok(FileSource {
            include: globs(&cfg.paths).map_err(|e| format!("{place}: {e}"))?,
            exclude: globs(&cfg.exclude).map_err(|e| format!("{place}: {e}"))?,
            roots,
            pipeline,
            multiline,
            base_labels: cfg.base_labels(),
            cfg: cfg.clone(),
            positions,
            sender,
            stats,
            shutdown,
            readers: Vec::new(),
            known: HashSet::new(),
            chunk: vec![0u8; CHUNK],
        })
    }

    /// Tails until shutdown.
    pub async fn run(mut self) {
        let saved = self.positions.claim_files(|s| self.include.is_match(&s.id.path));
        self.restore(saved);
        self.discover(true);
        let mut polls: u64 = 0;
        loop {
            let busy = match self.poll().await {
                Ok(b) => b,
                Err(Stopped) => break,
            };
            polls += 1;
            if !busy {
                tokio::select! {
                    _ = self.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                }
            } else if self.shutdown.is_cancelled() {
                break;
            }
            // New files are looked for every other poll (twice a second at
            // the default interval).
            if polls.is_multiple_of(2) {
                self.discover(false);
            }
        }
    }

    fn labels_for(&self, path: &Path) -> Labels {
        let mut l = self.base_labels.clone();
        l.set("filename", path.display().to_string());
        l
    }

    fn open_reader(
        &self,
        path: &Path,
        label_path: &Path,
        file: File,
        meta: &Metadata,
        offset: u64,
        acked: u64,
    ) -> Reader {
        let mut r = Reader {
            path: path.to_path_buf(),
            label_path: label_path.to_path_buf(),
            labels: self.labels_for(label_path),
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
            partial: Vec::new(),
            skipping: false,
            fp_len: 0,
            fp_hash: 0,
            cursor: self.positions.track(CursorKey::File(FileId::default()), acked),
            last_ack: acked,
            rotated: None,
            last_growth: Instant::now(),
            multiline: MultilineState::default(),
        };
        *r.cursor.key.lock().unwrap() = CursorKey::File(r.id());
        r.update_fingerprint(meta.len());
        self.stats.files_watched.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Re-opens the files of the saved positions.
    fn restore(&mut self, saved: Vec<SavedFile>) {
        for s in &saved {
            self.known.insert(s.id.path.clone());
        }
        for s in saved {
            let at_path = File::open(&s.id.path).ok().and_then(|f| f.metadata().ok().map(|m| (f, m)));
            if let Some((f, m)) = at_path {
                let same = (m.dev(), m.ino()) == (s.id.dev, s.id.ino)
                    && (s.id.fp_len == 0 || fingerprint(&f, s.id.fp_len) == Some(s.id.fp_hash));
                if same && m.len() >= s.offset {
                    let r = self.open_reader(&s.id.path, &s.id.path, f, &m, s.offset, s.offset);
                    self.readers.push(r);
                    continue;
                }
            }
            // The file was rotated, copied or truncated while we were away:
            // finish it from wherever it is now.
            let exclude: Vec<(u64, u64)> = self.readers.iter().map(|r| (r.dev, r.ino)).collect();
            match find_sibling(&s.id, s.offset, &exclude) {
                Some((path, f, m)) => {
                    tracing::info!(file = %s.id.path.display(), now = %path.display(), offset = s.offset, "resuming a file rotated while the agent was down");
                    let mut r = self.open_reader(&path, &s.id.path, f, &m, s.offset, s.offset);
                    r.rotated = Some(Instant::now());
                    self.readers.push(r);
                }
                None => tracing::warn!(
                    file = %s.id.path.display(),
                    offset = s.offset,
                    "a file with unsent lines is gone (rotated away and deleted while the agent was down); its remaining lines are lost"
                ),
            }
        }
    }

    /// Finds files matching the globs that nobody reads yet.
    fn discover(&mut self, first: bool) {
        let mut found = Vec::new();
        for (root, depth) in &self.roots {
            walk(root, *depth, &mut |p| {
                if self.include.is_match(p) && !self.exclude.is_match(p) {
                    found.push(p.to_path_buf());
                }
            });
        }
        for path in found {
            if self.readers.iter().any(|r| r.path == path && r.rotated.is_none()) {
                continue;
            }
            let Ok(file) = File::open(&path) else { continue };
            let Ok(meta) = file.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            // A file we already read under another name (a rotated file that
            // the globs also match): adopt it under its new path.
            if let Some(r) = self.readers.iter_mut().find(|r| (r.dev, r.ino) == (meta.dev(), meta.ino())) {
                if r.rotated.is_some() {
                    r.path = path.clone();
                    r.rotated = None;
                }
                continue;
            }
            let offset = if first
                && !self.known.contains(&path)
                && self.cfg.start_at == StartAt::End
                && !self.positions.was_damaged()
            {
                meta.len()
            } else {
                0
            };
            tracing::debug!(file = %path.display(), offset, "tailing");
            self.known.insert(path.clone());
            let r = self.open_reader(&path, &path, file, &meta, offset, offset);
            self.readers.push(r);
        }
    }

    /// Checks and reads every file once. True when some file had more to
    /// read than its fair share.
    async fn poll(&mut self) -> Result<bool, Stopped> {
        let mut busy = false;
        let mut i = 0;
        while i < self.readers.len() {
            if self.readers[i].rotated.is_none() {
                self.check(i).await?;
            }
            let (read, more) = self.read(i).await?;
            busy |= more;
            let r = &mut self.readers[i];
            let now = Instant::now();
            if read > 0 {
                r.last_growth = now;
            }
            let due = match &self.multiline {
                Some(ml) => r.multiline.due(ml, now),
                None => None,
            };
            if let Some((text, ts, ack)) = due {
                let (labels, cursor) = (r.labels.clone(), r.cursor.acked.clone());
                r.last_ack = ack;
                self.emit(text, ts, labels, Ack { cursor, value: ack }).await?;
            }
            let r = &self.readers[i];
            let done = r.rotated.is_some_and(|t| {
                now.duration_since(t) >= DRAIN_GRACE && now.duration_since(r.last_growth) >= DRAIN_GRACE
            });
            if done {
                self.close(i).await?;
                continue;
            }
            i += 1;
        }
        Ok(busy)
    }

    /// Notices rotation, deletion and truncation of reader `i`'s file.
    async fn check(&mut self, i: usize) -> Result<(), Stopped> {
        let r = &mut self.readers[i];
        match std::fs::metadata(&r.path) {
            Err(_) => {
                tracing::debug!(file = %r.path.display(), "file gone; draining it");
                r.rotated = Some(Instant::now());
                self.stats.rotations.fetch_add(1, Ordering::Relaxed);
            }
            Ok(m) if (m.dev(), m.ino()) != (r.dev, r.ino) => {
                tracing::debug!(file = %r.path.display(), "file rotated; draining the old one");
                r.rotated = Some(Instant::now());
                self.stats.rotations.fetch_add(1, Ordering::Relaxed);
                // The new file is picked up right away, from its beginning.
                self.discover(false);
            }
            Ok(m) => {
                let replaced =
                    m.len() < r.offset || (r.fp_len > 0 && fingerprint(&r.file, r.fp_len) != Some(r.fp_hash));
                if replaced {
                    self.truncated(i).await?;
                }
            }
        }
        Ok(())
    }

    /// Reader `i`'s file was truncated (or its content replaced in place):
    /// finish the old content from a copy if there is one, then restart at 0.
    async fn truncated(&mut self, i: usize) -> Result<(), Stopped> {
        self.stats.rotations.fetch_add(1, Ordering::Relaxed);
        let r = &mut self.readers[i];
        if let Some((text, ts, ack)) = r.multiline.take() {
            let (labels, cursor) = (r.labels.clone(), r.cursor.acked.clone());
            r.last_ack = ack;
            self.emit(text, ts, labels, Ack { cursor, value: ack }).await?;
        }
        let exclude: Vec<(u64, u64)> = self.readers.iter().map(|r| (r.dev, r.ino)).collect();
        let r = &self.readers[i];
        let line_start = r.offset - r.partial.len() as u64;
        let copy = find_sibling(&r.id(), r.offset + 1, &exclude);
        tracing::info!(file = %r.path.display(), offset = r.offset, copy = ?copy.as_ref().map(|c| c.0.display().to_string()), "file truncated; reading it again from the start");
        if let Some((path, f, m)) = copy {
            let label_path = r.label_path.clone();
            let (partial, skipping) = (r.partial.clone(), r.skipping);
            let mut d = self.open_reader(&path, &label_path, f, &m, r.offset, line_start);
            d.partial = partial;
            d.skipping = skipping;
            d.rotated = Some(Instant::now());
            self.readers.push(d);
            // Finish the old content before the new, to keep the stream in order.
            let j = self.readers.len() - 1;
            while self.read(j).await?.1 {}
        }
        let r = &mut self.readers[i];
        r.cursor.retire(r.last_ack);
        r.offset = 0;
        r.partial.clear();
        r.skipping = false;
        r.fp_len = 0;
        r.fp_hash = 0;
        r.last_ack = 0;
        r.multiline = MultilineState::default();
        r.cursor = self.positions.track(CursorKey::File(r.id()), 0);
        let size = r.file.metadata().map(|m| m.len()).unwrap_or(0);
        r.update_fingerprint(size);
        Ok(())
    }

    /// Lets go of a drained file.
    async fn close(&mut self, i: usize) -> Result<(), Stopped> {
        let max = self.cfg.max_line_size;
        let r = &mut self.readers[i];
        // The writer is gone: an unfinished last line will get no newline.
        let mut tail = Vec::new();
        if !r.partial.is_empty() && !r.skipping {
            let bytes = std::mem::take(&mut r.partial);
            tail.push((bytes[..bytes.len().min(max)].to_vec(), r.offset));
        }
        for (bytes, ack) in tail {
            self.line(i, bytes, ack).await?;
        }
        let r = &mut self.readers[i];
        if let Some((text, ts, ack)) = r.multiline.take() {
            let (labels, cursor) = (r.labels.clone(), r.cursor.acked.clone());
            r.last_ack = ack;
            self.emit(text, ts, labels, Ack { cursor, value: ack }).await?;
        }
        let r = self.readers.remove(i);
        tracing::debug!(file = %r.path.display(), offset = r.offset, "finished a rotated file");
        r.cursor.retire(r.last_ack);
        self.stats.files_watched.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Reads reader `i` up to its end (or its fair share). Bytes read, and
    /// whether more is waiting.
    async fn read(&mut self, i: usize) -> Result<(u64, bool), Stopped> {
        let max = self.cfg.max_line_size;
        let mut total = 0u64;
        let mut lines: Vec<(Vec<u8>, u64)> = Vec::new();
        loop {
            lines.clear();
            let r = &mut self.readers[i];
            let n = match r.file.read_at(&mut self.chunk, r.offset) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(file = %r.path.display(), error = %e, "read failed");
                    0
                }
            };
            if n == 0 {
                let size = r.offset;
                r.update_fingerprint(size);
                return Ok((total, false));
            }
            let base = r.offset;
            r.offset += n as u64;
            total += n as u64;
            let data = &self.chunk[..n];
            let mut start = 0;
            while let Some(p) = data[start..].iter().position(|&b| b == b'\n') {
                let end = start + p;
                let ack = base + end as u64 + 1;
                if r.skipping {
                    r.skipping = false;
                } else if r.partial.is_empty() {
                    lines.push((data[start..end.min(start + max)].to_vec(), ack));
                    if end - start > max {
                        self.stats.lines_truncated.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    let mut line = std::mem::take(&mut r.partial);
                    let room = max.saturating_sub(line.len());
                    line.extend_from_slice(&data[start..end.min(start + room)]);
                    if end - start > room {
                        self.stats.lines_truncated.fetch_add(1, Ordering::Relaxed);
                    }
                    lines.push((line, ack));
                }
                start = end + 1;
            }
            if !r.skipping && start < n {
                r.partial.extend_from_slice(&data[start..]);
                if r.partial.len() > max {
                    // Cut here; the rest of the line is skipped up to its newline.
                    let cut = r.offset - (r.partial.len() - max) as u64;
                    let mut line = std::mem::take(&mut r.partial);
                    line.truncate(max);
                    lines.push((line, cut));
                    r.skipping = true;
                    self.stats.lines_truncated.fetch_add(1, Ordering::Relaxed);
                }
            }
            let mut batch = std::mem::take(&mut lines);
            for (bytes, ack) in batch.drain(..) {
                self.line(i, bytes, ack).await?;
            }
            lines = batch;
            if total >= FAIR_SHARE {
                return Ok((total, true));
            }
        }
    }

    /// One raw line of reader `i`, ending at file offset `ack`.
    async fn line(&mut self, i: usize, mut bytes: Vec<u8>, ack: u64) -> Result<(), Stopped> {
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let (text, repaired) = repair_utf8(bytes);
        if repaired {
            self.stats.invalid_utf8.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.lines_read.fetch_add(1, Ordering::Relaxed);
        let now = now_ns();
        let r = &mut self.readers[i];
        let (text, ts, ack) = match &self.multiline {
            Some(ml) => match r.multiline.push(ml, text, now, ack) {
                Some(joined) => joined,
                None => return Ok(()),
            },
            None => (text, now, ack),
        };
        r.last_ack = ack;
        let (labels, cursor) = (r.labels.clone(), r.cursor.acked.clone());
        self.emit(text, ts, labels, Ack { cursor, value: ack }).await
    }

    /// Runs the stages and hands the entry to the sink (waiting for room).
    async fn emit(&self, text: String, ts: i64, labels: Labels, ack: Ack) -> Result<(), Stopped> {
        let mut rec = Record::new(text, labels, ts);
        let keep = self.pipeline.run(&mut rec, &self.stats.stages);
        let entry = LogEntry {
            labels: rec.labels,
            timestamp_ns: rec.timestamp_ns,
            line: if keep { Some(rec.line) } else { None },
            ack: Some(ack),
        };
        tokio::select! {
            biased;
            r = self.sender.send(entry) => r.map_err(|_| Stopped),
            _ = self.shutdown.cancelled() => Err(Stopped),
        }
    }
}

/// Calls `f` for every regular file under `root`, at most `depth` levels down.
fn walk(root: &Path, depth: Option<usize>, f: &mut dyn FnMut(&Path)) {
    fn go(dir: &Path, left: Option<usize>, level: usize, f: &mut dyn FnMut(&Path)) {
        if level > 32 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                match left {
                    Some(0) | Some(1) => {}
                    Some(n) => go(&p, Some(n - 1), level + 1, f),
                    None => go(&p, None, level + 1, f),
                }
            } else if ft.is_file() || ft.is_symlink() {
                f(&p);
            }
        }
    }
    go(root, depth, 0, f)
}

/// A file beside `id.path` holding `id`'s content: the same inode (renamed),
/// or else the same first bytes (a copy), at least `min_size` long.
fn find_sibling(id: &FileId, min_size: u64, exclude: &[(u64, u64)]) -> Option<(PathBuf, File, Metadata)> {
    let dir = id.path.parent()?;
    let mut by_content = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if !meta.is_file() || meta.len() < min_size || exclude.contains(&(meta.dev(), meta.ino())) {
            continue;
        }
        let Ok(f) = File::open(&p) else { continue };
        let content = id.fp_len > 0 && fingerprint(&f, id.fp_len) == Some(id.fp_hash);
        if (meta.dev(), meta.ino()) == (id.dev, id.ino) && (content || id.fp_len == 0) {
            return Some((p, f, meta));
        }
        if content && by_content.is_none() {
            by_content = Some((p, f, meta));
        }
    }
    by_content
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_roots_stop_at_the_first_glob() {
        assert_eq!(walk_root("/var/log/app/*.log"), (PathBuf::from("/var/log/app"), Some(1)));
        assert_eq!(walk_root("/var/log/**/x.log"), (PathBuf::from("/var/log"), None));
        assert_eq!(walk_root("/var/log/{a,b}/x.log"), (PathBuf::from("/var/log"), Some(2)));
        assert_eq!(walk_root("/var/log/app.log"), (PathBuf::from("/var/log"), Some(1)));
    }

    #[test]
    fn globs_match_star_doublestar_and_alternatives() {
        let g = globs(&["/l/*.log".into(), "/d/**/*.txt".into(), "/a/{x,y}.log".into()]).unwrap();
        for yes in ["/l/a.log", "/d/t.txt", "/d/1/2/t.txt", "/a/x.log", "/a/y.log"] {
            assert!(g.is_match(yes), "{yes}");
        }
        for no in ["/l/sub/a.log", "/l/a.log.1", "/a/z.log", "/d/t.log"] {
            assert!(!g.is_match(no), "{no}");
        }
    }

    #[test]
    fn fingerprints_need_the_whole_prefix() {
        let dir = std::env::temp_dir().join(format!("vantage-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, b"hello world").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(fingerprint(&f, 5), Some(crate::hash::fnv1a(b"hello")));
        assert_eq!(fingerprint(&f, 50), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
