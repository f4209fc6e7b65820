//! Durable copies of the last good key sets, so a restart with a provider down still verifies.
//!
//! Layout: `<persist_dir>/jwks/<sha256 hex of the issuer>.json` holding the issuer, when the keys
//! were fetched, their ETag and the raw JWKS as the provider sent it. The file name is a hash
//! because an issuer is a URL, not a safe file name. Writes go to a temporary file that is
//! fsynced, renamed over the old one, and the directory fsynced: a crash leaves the old or the
//! new copy, never a torn one (`crate::durable`). Blocking: call from `spawn_blocking`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// A persisted key set as read back (the keys still to be parsed and checked).
#[derive(Debug, Clone, PartialEq)]
pub struct PersistedKeySet {
    /// The raw JWKS.
    pub jwks: String,
    /// When it was fetched, or last confirmed unchanged.
    pub fetched_at: SystemTime,
    /// Its ETag.
    pub etag: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct File {
    issuer: String,
    fetched_at_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    jwks: String,
}

/// A persistence failure.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
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
    /// The file is not a persisted key set of this issuer.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PersistError {
    let path = path.to_path_buf();
    move |source| PersistError::Io { op, path, source }
}

/// The file of `issuer`'s key set under `persist_dir`.
pub fn path_for(persist_dir: &Path, issuer: &str) -> PathBuf {
    let digest = sha2::Sha256::digest(issuer.as_bytes());
    persist_dir
        .join("jwks")
        .join(format!("{}.json", hex::encode(digest)))
}

/// Durably replaces the persisted key set at `path`.
pub fn save(path: &Path, issuer: &str, set: &PersistedKeySet) -> Result<(), PersistError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let body = serde_json::to_vec(&File {
        issuer: issuer.to_string(),
        fetched_at_unix_ms: set
            .fetched_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        etag: set.etag.clone(),
        jwks: set.jwks.clone(),
    })
    .map_err(|e| PersistError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::durable::replace_file(dir, &name, &body).map_err(|e| PersistError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    })?;
    Ok(())
}

/// Reads the persisted key set of `issuer` at `path`; `Ok(None)` if there is none. At most
/// `max_bytes` (plus room for the wrapper) is read.
pub fn load(
    path: &Path,
    issuer: &str,
    max_bytes: u64,
) -> Result<Option<PersistedKeySet>, PersistError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("reading", path)(e)),
    };
    // The raw JWKS is escaped inside a JSON string: allow for that and the wrapper.
    if meta.len() > max_bytes.saturating_mul(2).saturating_add(64 << 10) {
        return Err(PersistError::Invalid {
            path: path.to_path_buf(),
            message: format!("{} bytes, larger than max_bytes allows", meta.len()),
        });
    }
    let bytes = fs::read(path).map_err(io("reading", path))?;
    let f: File = serde_json::from_slice(&bytes).map_err(|e| PersistError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if f.issuer != issuer {
        return Err(PersistError::Invalid {
            path: path.to_path_buf(),
            message: format!("holds the key set of {:?}, not {issuer:?}", f.issuer),
        });
    }
    Ok(Some(PersistedKeySet {
        jwks: f.jwks,
        fetched_at: UNIX_EPOCH + Duration::from_millis(f.fetched_at_unix_ms),
        etag: f.etag,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_refuses_another_issuers_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "https://idp.example");
        assert!(path.starts_with(dir.path().join("jwks")));
        assert_eq!(load(&path, "https://idp.example", 1 << 20).unwrap(), None);
        let set = PersistedKeySet {
            jwks: r#"{"keys": []}"#.into(),
            fetched_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            etag: Some("\"v1\"".into()),
        };
        save(&path, "https://idp.example", &set).unwrap();
        assert_eq!(
            load(&path, "https://idp.example", 1 << 20).unwrap(),
            Some(set.clone())
        );
        let e = load(&path, "https://other.example", 1 << 20).unwrap_err();
        assert!(
            e.to_string().contains("not \"https://other.example\""),
            "{e}"
        );
        std::fs::write(&path, "{not json").unwrap();
        assert!(load(&path, "https://idp.example", 1 << 20).is_err());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
