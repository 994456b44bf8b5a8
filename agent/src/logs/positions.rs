//! The positions file: per tailed file the byte offset, and per container
//! the log timestamp, up to which Loki has ACKNOWLEDGED the lines (not
//! merely read them), so that a crash re-sends at most what was in flight.
//! Written atomically (temp file, fsync, rename, fsync of the directory).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// Why the positions file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    #[error("cannot read positions file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("cannot write positions file {file}: {source} (is DATA_DIR writable?)")]
    Write { file: String, source: std::io::Error },
}

/// Identifies a file's content independently of its name: device and
/// inode, plus a hash of its first bytes (inodes are reused after deletion).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// How many leading bytes the fingerprint covers (grows to FINGERPRINT_MAX).
    pub fp_len: u32,
    pub fp_hash: u64,
}

/// A saved file position.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedFile {
    #[serde(flatten)]
    pub id: FileId,
    pub offset: u64,
}

/// A saved container position: the timestamp of its newest acknowledged line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SavedContainer {
    pub id: String,
    pub name: String,
    pub timestamp_ns: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    files: Vec<SavedFile>,
    #[serde(default)]
    containers: Vec<SavedContainer>,
}

/// What a cursor tracks.
#[derive(Clone, Debug)]
pub enum CursorKey {
    File(FileId),
    Container { id: String, name: String },
}

/// A live position: the key (updated as a file's fingerprint grows) and the
/// acknowledged value, which the Loki sink advances.
#[derive(Debug)]
pub struct Cursor {
    pub key: Mutex<CursorKey>,
    pub acked: Arc<AtomicU64>,
    /// u64::MAX while the reader is alive; else the value at which every
    /// line was acknowledged and the cursor can be forgotten.
    retired_at: AtomicU64,
}

impl Cursor {
    /// Marks the reader finished at `last`; the cursor is dropped from the
    /// file once `acked` reaches it.
    pub fn retire(&self, last: u64) {
        self.retired_at.store(last, Ordering::Release);
    }

    fn finished(&self) -> bool {
        self.acked.load(Ordering::Acquire) >= self.retired_at.load(Ordering::Acquire)
    }
}

/// The positions of every log source.
pub struct Positions {
    file: PathBuf,
    cursors: Mutex<Vec<Arc<Cursor>>>,
    /// Loaded at start and not yet claimed by a source: kept as they are.
    unclaimed: Mutex<Saved>,
    last_written: Mutex<String>,
    damaged: bool,
    /// Whether the last save failed (logged once per spell).
    failing: std::sync::atomic::AtomicBool,
}

impl Positions {
    /// Loads `file` (a missing file is an empty start).
    pub fn load(file: &Path) -> Result<Positions, PositionsError> {
        let mut damaged = false;
        let saved = match std::fs::read(file) {
            Ok(bytes) => match serde_json::from_slice::<Saved>(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    // A corrupt file is not worth refusing to start over; the
                    // atomic write makes it unlikely, so say it loudly and
                    // keep it for a look. Without positions, files are read
                    // from their beginning whatever `start_at` says and
                    // containers from their first line: lines are sent
                    // again rather than skipped.
                    let aside = file.with_extension("json.damaged");
                    let _ = std::fs::rename(file, &aside);
                    tracing::error!(file = %file.display(), moved_to = %aside.display(), error = %e, "positions file is damaged: tailing restarts from the beginning of every file and container (lines already sent are sent again)");
                    damaged = true;
                    Saved::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(source) => return Err(PositionsError::Read { file: file.display().to_string(), source }),
        };
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| PositionsError::Write { file: file.display().to_string(), source })?;
        }
        Ok(Positions {
            file: file.to_path_buf(),
            cursors: Mutex::new(Vec::new()),
            unclaimed: Mutex::new(saved),
            last_written: Mutex::new(String::new()),
            damaged,
            failing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the file was damaged at load (tailing then starts from the
    /// beginning of every file, whatever `start_at` says).
    pub fn was_damaged(&self) -> bool {
        self.damaged
    }

    /// Takes the saved file positions for which `mine` is true.
    pub fn claim_files(&self, mut mine: impl FnMut(&SavedFile) -> bool) -> Vec<SavedFile> {
        let mut u = self.unclaimed.lock().unwrap();
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut u.files).into_iter().partition(|f| mine(f));
        u.files = kept;
        taken
    }

    /// Takes the saved timestamp of container `id`.
    pub fn claim_container(&self, id: &str) -> Option<u64> {
        let mut u = self.unclaimed.lock().unwrap();
        let i = u.containers.iter().position(|c| c.id == id)?;
        Some(u.containers.remove(i).timestamp_ns)
    }

    /// Starts tracking `key` from the acknowledged value `acked`.
    pub fn track(&self, key: CursorKey, acked: u64) -> Arc<Cursor> {
        let c = Arc::new(Cursor {
            key: Mutex::new(key),
            acked: Arc::new(AtomicU64::new(acked)),
            retired_at: AtomicU64::new(u64::MAX),
        });
        self.cursors.lock().unwrap().push(c.clone());
        c
    }

    /// Forgets the positions of containers that no longer exist (`exists`
    /// is false for their id): saved ones not claimed at once, tracked
    /// ones once what was read of them is acknowledged (`read_up_to`).
    /// Returns how many were pruned or retired.
    pub fn prune_containers(&self, exists: impl Fn(&str) -> bool, read_up_to: impl Fn(&str) -> Option<u64>) -> usize {
        let mut n = 0;
        {
            let mut u = self.unclaimed.lock().unwrap();
            let before = u.containers.len();
            u.containers.retain(|c| exists(&c.id));
            n += before - u.containers.len();
        }
        for c in self.cursors.lock().unwrap().iter() {
            let id = match &*c.key.lock().unwrap() {
                CursorKey::Container { id, .. } => id.clone(),
                CursorKey::File(_) => continue,
            };
            if !exists(&id) && c.retired_at.load(Ordering::Acquire) == u64::MAX {
                c.retire(read_up_to(&id).unwrap_or(0));
                n += 1;
            }
        }
        n
    }

    /// The container cursor for `id`, if one is tracked.
    pub fn container_cursor(&self, id: &str) -> Option<Arc<Cursor>> {
        self.cursors
            .lock()
            .unwrap()
            .iter()
            .find(|c| matches!(&*c.key.lock().unwrap(), CursorKey::Container { id: i, .. } if i == id))
            .cloned()
    }

    fn render(&self) -> String {
        let mut out = Saved::default();
        {
            let mut cursors = self.cursors.lock().unwrap();
            cursors.retain(|c| !c.finished());
            for c in cursors.iter() {
                let acked = c.acked.load(Ordering::Acquire);
                match &*c.key.lock().unwrap() {
                    CursorKey::File(id) => out.files.push(SavedFile { id: id.clone(), offset: acked }),
                    CursorKey::Container { id, name } => {
                        out.containers.push(SavedContainer { id: id.clone(), name: name.clone(), timestamp_ns: acked })
                    }
                }
            }
        }
        let u = self.unclaimed.lock().unwrap();
        out.files.extend(u.files.iter().cloned());
        out.containers.extend(u.containers.iter().cloned());
        serde_json::to_string_pretty(&out).unwrap_or_default()
    }

    /// Writes the file if anything changed since the last write.
    pub fn save(&self) -> Result<(), PositionsError> {
        let text = self.render();
        let mut last = self.last_written.lock().unwrap();
        if *last == text {
            return Ok(());
        }
        write_atomically(&self.file, text.as_bytes())
            .map_err(|source| PositionsError::Write { file: self.file.display().to_string(), source })?;
        *last = text;
        Ok(())
    }

    /// Saves every `every` until `shutdown`, then once more.
    pub async fn run_writer(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
        sink_done: tokio::task::JoinHandle<()>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.save()).await {
                // On a full disk this fails every tick: said once, and the
                // file keeps the last positions saved (older, never newer
                // than what Loki has: a restart re-sends, never skips).
                Ok(Err(e)) if !self.failing.swap(true, Ordering::Relaxed) => {
                    tracing::error!(error = %e, "positions not saved: the file keeps the last saved ones until a save works")
                }
                Ok(Err(_)) => {}
                Err(e) => tracing::error!(error = %e, "positions writer panicked"),
                Ok(Ok(())) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(file = %self.file.display(), "positions saved again");
                    }
                }
            }
        }
        // The sink's last push may still acknowledge lines: wait for it.
        let _ = sink_done.await;
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "positions not saved at shutdown");
        }
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the
/// new content, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|_| std::fs::rename(&tmp, path)) {
        // A half-written temp file would only take space a full disk lacks.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_acknowledged_values_and_restores_them() {
        let dir = std::env::temp_dir().join(format!("vantage-pos-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = dir.join("positions.json");
        let p = Positions::load(&file).unwrap();
        let id = FileId { path: "/var/log/a.log".into(), dev: 1, ino: 2, fp_len: 3, fp_hash: 4 };
        let c = p.track(CursorKey::File(id.clone()), 10);
        c.acked.fetch_max(99, Ordering::AcqRel);
        let gone = p.track(CursorKey::File(FileId { ino: 7, ..id.clone() }), 5);
        gone.retire(5);
        p.track(CursorKey::Container { id: "abc".into(), name: "web".into() }, 1_700_000_000_123_456_789);
        p.save().unwrap();
        let q = Positions::load(&file).unwrap();
        let files = q.claim_files(|_| true);
        assert_eq!(files.len(), 1, "a retired, fully acknowledged file is forgotten");
        assert_eq!((files[0].id.clone(), files[0].offset), (id, 99));
        assert_eq!(q.claim_container("abc"), Some(1_700_000_000_123_456_789));
        assert_eq!(q.claim_container("abc"), None);
        assert!(!dir.join("positions.tmp").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_removed_containers_are_pruned() {
        let dir = std::env::temp_dir().join(format!("vantage-pos-damaged-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("positions.json");
        std::fs::write(&file, b"{\"files\": [{\"path\": ").unwrap();
        let p = Positions::load(&file).unwrap();
        assert!(p.was_damaged());
        assert!(dir.join("positions.json.damaged").exists() && !file.exists());
        let live = p.track(CursorKey::Container { id: "live".into(), name: "a".into() }, 5);
        let gone = p.track(CursorKey::Container { id: "gone".into(), name: "b".into() }, 5);
        assert_eq!(p.prune_containers(|id| id == "live", |_| Some(9)), 1);
        gone.acked.fetch_max(9, Ordering::AcqRel);
        live.acked.fetch_max(9, Ordering::AcqRel);
        p.save().unwrap();
        let q = Positions::load(&file).unwrap();
        assert!(!q.was_damaged());
        assert_eq!((q.claim_container("live"), q.claim_container("gone")), (Some(9), None));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
