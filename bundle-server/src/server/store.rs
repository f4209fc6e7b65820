//! Files the server writes: the last published bundles in the data dir (so a restart serves them
//! at once) and, optionally, a publish dir for nginx, a CDN or object storage. Every write is
//! atomic: temporary file, fsync, rename, fsync of the directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use regent_bundle::signing::{self, Keyring, VerifyOptions};
use regent_bundle::{Bundle, UnpackLimits};
use serde::{Deserialize, Serialize};

use super::gate::{etag_of, BuiltBundle};

const STATE_FILE: &str = "state.json";

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a part.
/// The file is private to the server's user (0600).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`] with the given permission bits.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".regent-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable only once the directory entry is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What was last published, persisted next to the bundles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PublishedState {
    /// Commit all bundles were built from.
    pub commit: String,
    /// [`super::config::ServerConfig::build_fingerprint`] at the time.
    pub fingerprint: String,
    /// RFC 3339 time of publication.
    pub published_at: String,
}

/// `<data_dir>/published`.
#[derive(Debug, Clone)]
pub struct DataStore {
    dir: PathBuf,
}

/// A bundle restored at start.
#[derive(Debug)]
pub struct Restored {
    /// The state file.
    pub state: PublishedState,
    /// The bundles that were found, verified and match the state's commit.
    pub bundles: Vec<BuiltBundle>,
}

impl DataStore {
    /// The store under `data_dir`.
    pub fn new(data_dir: &Path) -> DataStore {
        DataStore {
            dir: data_dir.join("published"),
        }
    }

    fn bundle_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.tar.gz"))
    }

    /// Persists a publication: bundles first, then the state naming their commit.
    pub fn save(&self, bundles: &[BuiltBundle], state: &PublishedState) -> std::io::Result<()> {
        for b in bundles {
            write_atomic(&self.bundle_path(&b.name), &b.bytes)?;
        }
        let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join(STATE_FILE), &json)
    }

    /// Loads the last publication. Each bundle is re-read and its signature verified with
    /// `keyring`; one that is missing, unreadable, badly signed or of another commit is skipped
    /// with a warning (it will be rebuilt).
    pub fn restore(
        &self,
        names: &[String],
        keyring: &Keyring,
        scope: Option<String>,
    ) -> Option<Restored> {
        let path = self.dir.join(STATE_FILE);
        let raw = match std::fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the published state");
                return None;
            }
        };
        let state: PublishedState = match serde_json::from_slice(&raw) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a malformed published state");
                return None;
            }
        };
        let opts = VerifyOptions { scope };
        let mut bundles = Vec::new();
        for name in names {
            let p = self.bundle_path(name);
            let bytes = match std::fs::read(&p) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(bundle = %name, path = %p.display(), error = %e, "persisted bundle not restored");
                    continue;
                }
            };
            let checked = Bundle::from_tar_gz(&bytes, &UnpackLimits::default())
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    signing::verify(&b, keyring, &opts)
                        .map(|sig| (b, sig))
                        .map_err(|e| e.to_string())
                });
            match checked {
                Ok((b, sig)) if b.revision() == state.commit => bundles.push(BuiltBundle {
                    name: name.clone(),
                    revision: state.commit.clone(),
                    etag: etag_of(&bytes),
                    bytes: bytes.into(),
                    kid: sig.kid,
                }),
                Ok((b, _)) => {
                    tracing::warn!(bundle = %name, revision = %b.revision(), commit = %state.commit, "persisted bundle is of another commit; not restored")
                }
                Err(e) => {
                    tracing::warn!(bundle = %name, path = %p.display(), error = %e, "persisted bundle refused")
                }
            }
        }
        Some(Restored { state, bundles })
    }
}

/// Writes every bundle to `dir/NAME.tar.gz` and its ETag to `dir/NAME.tar.gz.etag`, readable
/// by everyone (0644): a web server usually runs as another user, and bundles are not secret
/// (they are signed, and served to the whole fleet).
pub fn write_publish_dir(dir: &Path, bundles: &[BuiltBundle]) -> std::io::Result<()> {
    for b in bundles {
        let file = dir.join(format!("{}.tar.gz", b.name));
        write_atomic_mode(&file, &b.bytes, 0o644)?;
        write_atomic_mode(
            &dir.join(format!("{}.tar.gz.etag", b.name)),
            format!("{}\n", b.etag).as_bytes(),
            0o644,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/x.tar.gz");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(d.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.tar.gz")]);
    }
}
