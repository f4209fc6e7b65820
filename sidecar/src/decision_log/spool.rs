//! The upload buffer's overflow on disk (`decision_logs.upload.spool`), so a receiver outage
//! longer than the memory buffer holds, or a restart during one, loses no decisions.
//!
//! When the memory buffer passes its byte limit, its oldest events are written here, as files of
//! one event per line (`<sequence>-<events>.ndjson`, written under a temporary name and renamed,
//! so a crash leaves whole files only). The uploader takes the oldest file back once the memory
//! buffer is empty; shutdown writes what it could not upload. The directory is bounded by
//! `size_limit_bytes`: beyond it the oldest files go, counted `spool_full`. A file read back is
//! input from outside the process (a volume): each line must be JSON, a file larger than any
//! this code writes is refused, and what fails is counted `spool_corrupt`, never uploaded.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::Context as _;
use serde::Deserialize;

use super::DecisionLogMetrics;

/// Largest spool file written: a spill of a large buffer becomes several files, so reading one
/// back never needs more memory than this.
const FILE_BYTES: usize = 4 << 20;

/// `decision_logs.upload.spool:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the spool files (created if missing); one sidecar per directory.
    pub dir: PathBuf,
    /// Most bytes of spool files; beyond it the oldest files are deleted.
    #[serde(default = "default_size_limit")]
    pub size_limit_bytes: u64,
}

fn default_size_limit() -> u64 {
    256 << 20
}

impl SpoolConfig {
    /// A problem with the section, as `(key below decision_logs.upload, message)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.dir.as_os_str().is_empty() {
            return Err(("spool.dir", "must not be empty".into()));
        }
        if self.size_limit_bytes < FILE_BYTES as u64 {
            return Err((
                "spool.size_limit_bytes",
                format!("at least {FILE_BYTES}, got {}", self.size_limit_bytes),
            ));
        }
        Ok(())
    }
}

/// One spool file.
struct File {
    sequence: u64,
    events: u64,
    bytes: u64,
}

impl File {
    fn name(&self) -> String {
        format!("{:020}-{}.ndjson", self.sequence, self.events)
    }

    /// The file a name describes (`None`: not a spool file).
    fn parse(name: &str, bytes: u64) -> Option<File> {
        let (sequence, events) = name.strip_suffix(".ndjson")?.split_once('-')?;
        Some(File {
            sequence: sequence.parse().ok()?,
            events: events.parse().ok()?,
            bytes,
        })
    }
}

struct State {
    /// Oldest first.
    files: VecDeque<File>,
    bytes: u64,
    next: u64,
}

/// The spool directory and what is in it.
pub(super) struct Spool {
    dir: PathBuf,
    limit: u64,
    state: Mutex<State>,
    metrics: DecisionLogMetrics,
}

impl Spool {
    /// Opens (creating) the directory and takes stock of the files a previous run left.
    pub(super) fn open(cfg: &SpoolConfig, metrics: DecisionLogMetrics) -> anyhow::Result<Spool> {
        let dir = &cfg.dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("decision_logs.upload.spool.dir {}", dir.display()))?;
        let mut files = Vec::new();
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("decision_logs.upload.spool.dir {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write cut short by a crash: never renamed, so never counted as spooled.
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(f) = File::parse(&name, len) {
                files.push(f);
            }
        }
        files.sort_by_key(|f| f.sequence);
        let bytes = files.iter().map(|f| f.bytes).sum();
        let next = files.last().map_or(0, |f| f.sequence + 1);
        if !files.is_empty() {
            tracing::info!(dir = %dir.display(), files = files.len(), bytes, "decision logs spooled by an earlier run will be uploaded");
        }
        metrics.spool_bytes.set(bytes as i64);
        Ok(Spool {
            dir: dir.clone(),
            limit: cfg.size_limit_bytes,
            state: Mutex::new(State {
                files: files.into(),
                bytes,
                next,
            }),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `events` (oldest first) as files of at most [`FILE_BYTES`], then deletes the oldest
    /// files beyond the size limit. Blocking: call it off the runtime. Events that could not be
    /// written are counted as dropped (`buffer_full`: they left the memory buffer for nowhere).
    pub(super) fn write(&self, events: Vec<Vec<u8>>) {
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut size = 0;
        for e in events {
            if size + e.len() + 1 > FILE_BYTES && !batch.is_empty() {
                self.write_file(std::mem::take(&mut batch));
                size = 0;
            }
            size += e.len() + 1;
            batch.push(e);
        }
        if !batch.is_empty() {
            self.write_file(batch);
        }
    }

    fn write_file(&self, events: Vec<Vec<u8>>) {
        let sequence = {
            let mut s = self.lock();
            s.next += 1;
            s.next - 1
        };
        let mut file = File {
            sequence,
            events: events.len() as u64,
            bytes: 0,
        };
        let path = self.dir.join(file.name());
        let tmp = self.dir.join(format!(".{sequence}.tmp"));
        match write_lines(&tmp, &events).and_then(|n| std::fs::rename(&tmp, &path).map(|()| n)) {
            Ok(n) => file.bytes = n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(error = %e, file = %path.display(), events = events.len(), "spooling decision logs failed; the events are dropped");
                self.metrics
                    .dropped("buffer_full")
                    .inc_by(events.len() as u64);
                return;
            }
        }
        let mut s = self.lock();
        s.bytes += file.bytes;
        s.files.push_back(file);
        while s.bytes > self.limit && s.files.len() > 1 {
            let Some(old) = s.files.pop_front() else {
                break;
            };
            s.bytes -= old.bytes;
            let _ = std::fs::remove_file(self.dir.join(old.name()));
            self.metrics.dropped("spool_full").inc_by(old.events);
        }
        self.metrics.spool_bytes.set(s.bytes as i64);
    }

    /// Bytes of the oldest file, if any.
    pub(super) fn oldest_bytes(&self) -> Option<u64> {
        self.lock().files.front().map(|f| f.bytes)
    }

    /// Reads and deletes the oldest file: its events, oldest first. Blocking: call it off the
    /// runtime. Lines that are not JSON, and files larger than any written here, are dropped and
    /// counted (`spool_corrupt`).
    pub(super) fn take_oldest(&self) -> Vec<Vec<u8>> {
        let Some(file) = ({
            let mut s = self.lock();
            let f = s.files.pop_front();
            if let Some(f) = &f {
                s.bytes -= f.bytes;
            }
            self.metrics.spool_bytes.set(s.bytes as i64);
            f
        }) else {
            return Vec::new();
        };
        let path = self.dir.join(file.name());
        let events = read_lines(&path, &file);
        let _ = std::fs::remove_file(&path);
        match events {
            Ok((events, bad)) => {
                if bad > 0 {
                    tracing::warn!(file = %path.display(), bad, "spooled decision log lines that are not JSON were dropped");
                    self.metrics.dropped("spool_corrupt").inc_by(bad);
                }
                events
            }
            Err(e) => {
                tracing::warn!(error = %e, file = %path.display(), "a spooled decision log file could not be read; dropped");
                self.metrics.dropped("spool_corrupt").inc_by(file.events);
                Vec::new()
            }
        }
    }
}

/// Writes one event per line and syncs; the bytes written.
fn write_lines(path: &Path, events: &[Vec<u8>]) -> std::io::Result<u64> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut n = 0;
    for e in events {
        f.write_all(e)?;
        f.write_all(b"\n")?;
        n += e.len() as u64 + 1;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(n)
}

/// The JSON lines of a spool file, and how many lines were not JSON.
fn read_lines(path: &Path, file: &File) -> std::io::Result<(Vec<Vec<u8>>, u64)> {
    let len = std::fs::metadata(path)?.len();
    if len > FILE_BYTES as u64 + 1 {
        return Err(std::io::Error::other(format!(
            "{len} bytes, more than the {FILE_BYTES} a spool file holds"
        )));
    }
    let bytes = std::fs::read(path)?;
    let mut events = Vec::with_capacity(file.events as usize);
    let mut bad = 0;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        // serde_json's recursion limit bounds the depth of what is checked.
        if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() {
            events.push(line.to_vec());
        } else {
            bad += 1;
        }
    }
    Ok((events, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(dir: &Path, limit: u64) -> (Spool, DecisionLogMetrics) {
        let metrics = DecisionLogMetrics::new().expect("metrics");
        let cfg = SpoolConfig {
            dir: dir.to_path_buf(),
            size_limit_bytes: limit,
        };
        (Spool::open(&cfg, metrics.clone()).expect("opens"), metrics)
    }

    fn event(i: usize) -> Vec<u8> {
        format!(r#"{{"decision_id":"{i}"}}"#).into_bytes()
    }

    #[test]
    fn spooled_events_come_back_oldest_first_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, _) = spool(dir.path(), 1 << 30);
        s.write((0..3).map(event).collect());
        s.write((3..5).map(event).collect());
        drop(s);
        std::fs::write(dir.path().join(".9.tmp"), "cut short").expect("tmp");
        let (s, metrics) = spool(dir.path(), 1 << 30);
        assert!(
            !dir.path().join(".9.tmp").exists(),
            "partial writes removed"
        );
        assert!(metrics.spool_bytes.get() > 0);
        let mut back = s.take_oldest();
        back.extend(s.take_oldest());
        assert_eq!(back, (0..5).map(event).collect::<Vec<_>>());
        assert_eq!(s.oldest_bytes(), None);
        assert!(s.take_oldest().is_empty());
        assert_eq!(metrics.spool_bytes.get(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn the_oldest_files_go_beyond_the_size_limit_and_corrupt_lines_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, metrics) = spool(dir.path(), 40);
        s.write((0..2).map(event).collect()); // 38 bytes
        s.write((2..3).map(event).collect()); // over 40 with the first: it goes
        assert_eq!(metrics.dropped("spool_full").get(), 2);
        assert_eq!(s.take_oldest(), vec![event(2)]);

        std::fs::write(
            dir.path().join(format!("{:020}-3.ndjson", 7)),
            "{\"decision_id\":\"7\"}\nnot json\n[[[\n",
        )
        .expect("write");
        let (s, metrics) = spool(dir.path(), 1 << 30);
        assert_eq!(s.take_oldest(), vec![br#"{"decision_id":"7"}"#.to_vec()]);
        assert_eq!(metrics.dropped("spool_corrupt").get(), 2);
    }
}
