//! Durable copies of activated bundles so a restart is ready without the bundle server.
//!
//! Layout: `<persist_dir>/<name>/bundle.tar.gz` and `<persist_dir>/<name>/etag`. Each file is
//! written to a temporary file, fsynced, renamed over the old one and the directory fsynced,
//! so a crash leaves either the old or the new bundle, never a torn one.

use std::fs;
use std::path::{Path, PathBuf};

use super::config::is_safe_name;

/// File name of a persisted bundle.
pub const BUNDLE_FILE: &str = "bundle.tar.gz";
/// File name of the ETag stored next to it.
pub const ETAG_FILE: &str = "etag";

/// A persistence failure.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The bundle name would not stay inside the persist directory.
    #[error("bundle name {0:?} is not usable as a directory name")]
    BadName(String),
    /// File system error.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PersistError {
    let path = path.to_path_buf();
    move |source| PersistError::Io { op, path, source }
}

/// A persisted bundle read back from disk (not yet verified).
#[derive(Debug)]
pub struct Persisted {
    /// The raw .tar.gz bytes.
    pub bytes: Vec<u8>,
    /// The ETag stored with it, if any.
    pub etag: Option<String>,
}

/// The persist directory.
#[derive(Debug, Clone)]
pub struct PersistDir {
    root: PathBuf,
}

impl PersistDir {
    /// Use `root` (created on first save).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PersistDir { root: root.into() }
    }

    /// Directory of one bundle.
    pub fn bundle_dir(&self, name: &str) -> Result<PathBuf, PersistError> {
        if !is_safe_name(name) {
            return Err(PersistError::BadName(name.to_string()));
        }
        Ok(self.root.join(name))
    }

    /// Path of one bundle's persisted tarball.
    pub fn bundle_path(&self, name: &str) -> Result<PathBuf, PersistError> {
        Ok(self.bundle_dir(name)?.join(BUNDLE_FILE))
    }

    /// Durably replace the persisted copy of `name`. Blocking: call from spawn_blocking.
    pub fn save(&self, name: &str, bytes: &[u8], etag: Option<&str>) -> Result<(), PersistError> {
        let dir = self.bundle_dir(name)?;
        fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        // Bundle first, ETag second: a crash in between leaves the new bundle with the old
        // ETag, which only costs one redundant 200. The reverse order could pair the old
        // bundle with the new ETag, and the server would then answer 304 to a stale sidecar.
        write_atomic(&dir, BUNDLE_FILE, bytes)?;
        match etag {
            Some(etag) => write_atomic(&dir, ETAG_FILE, etag.as_bytes())?,
            None => {
                let p = dir.join(ETAG_FILE);
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("removing", &p)(e)),
                }
            }
        }
        Ok(())
    }

    /// Read the persisted copy of `name`; `Ok(None)` if there is none.
    pub fn load(&self, name: &str) -> Result<Option<Persisted>, PersistError> {
        let dir = self.bundle_dir(name)?;
        let path = dir.join(BUNDLE_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("reading", &path)(e)),
        };
        let etag_path = dir.join(ETAG_FILE);
        let etag = match fs::read_to_string(&etag_path) {
            Ok(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("reading", &etag_path)(e)),
        };
        Ok(Some(Persisted { bytes, etag }))
    }
}

fn write_atomic(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), PersistError> {
    crate::durable::replace_file(dir, file, bytes).map_err(|e| PersistError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_replaces() {
        let tmp = tempfile::tempdir().unwrap();
        let p = PersistDir::new(tmp.path().join("persist"));
        assert!(p.load("authz").unwrap().is_none());
        p.save("authz", b"one", Some("\"e1\"")).unwrap();
        p.save("authz", b"two", None).unwrap();
        let got = p.load("authz").unwrap().unwrap();
        assert_eq!(got.bytes, b"two");
        assert_eq!(got.etag, None);
        p.save("authz", b"three", Some("\"e3\"")).unwrap();
        let got = p.load("authz").unwrap().unwrap();
        assert_eq!(
            (got.bytes.as_slice(), got.etag.as_deref()),
            (&b"three"[..], Some("\"e3\""))
        );
        let leftovers: Vec<_> = fs::read_dir(p.bundle_dir("authz").unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let p = PersistDir::new(tmp.path());
        for bad in ["..", "../x", "a/b", "", "/abs", "."] {
            assert!(
                matches!(p.save(bad, b"x", None), Err(PersistError::BadName(_))),
                "{bad}"
            );
        }
    }
}
