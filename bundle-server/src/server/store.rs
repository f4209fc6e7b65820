//! Files the server writes: the last published bundles in the data dir (so a restart serves them
//! at once) and, optionally, a publish dir for nginx, a CDN or object storage. Every write is
//! atomic: temporary file, fsync, rename, fsync of the directory.
//!
//! A publication writes, in order: the bundles in the data dir, `state.json` naming their
//! commit, then the publish dir (each bundle before its ETag). A kill between two steps leaves
//! a consistent prefix, which start-up completes: [`remove_temp_files`] drops the half-written
//! temporary files of the killed write, and [`reconcile_publish_dir`] rewrites the publish dir
//! files that differ from the restored publication (a kill after `state.json` and before or in
//! the middle of the publish dir). A kill before `state.json` leaves it naming the previous
//! commit: its bundles are restored (or, those already overwritten, rebuilt) and the new commit
//! is gated again.

use std::io::Write;
use std::path::{Path, PathBuf};

use regent_bundle::signing::{Keyring, VerifyOptions};
use regent_bundle::{Bundle, UnpackLimits};
use serde::{Deserialize, Serialize};

use super::gate::{etag_of, BuiltBundle};

const STATE_FILE: &str = "state.json";
/// Prefix and suffix of the temporary files of [`write_atomic_mode`].
const TEMP_PREFIX: &str = ".regent-";
const TEMP_SUFFIX: &str = ".tmp";

/// Writes `bytes` to `path` atomically: readers see the old file or the new one, never a part.
/// The file is private to the server's user (0600).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

/// [`write_atomic`] with the given permission bits.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    // `Path::new("x").parent()` is `Some("")`, meaning the current directory.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
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
    // The rename is durable only once the directory entry is. Some file systems cannot fsync
    // a directory (EINVAL, ENOTSUP); there the rename is as durable as they make it.
    use std::io::ErrorKind;
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if !matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::Unsupported) => Err(e),
        _ => Ok(()),
    }
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

    /// `<data_dir>/published`.
    pub fn dir(&self) -> &Path {
        &self.dir
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
            // Signature first, as a sidecar reads it: the data dir may have been written by
            // someone else since.
            let checked = Bundle::from_verified_tar_gz(
                &bytes,
                &UnpackLimits::default(),
                keyring,
                &opts,
                None,
            )
            .map_err(|e| e.to_string());
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

/// Removes the temporary files [`write_atomic_mode`] leaves in `dir` when the process is killed
/// before the rename (`.regent-*.tmp`, regular files only): a file-based mirror would copy them.
/// Call it at start, before the server writes anything: none of them can be in use. Returns how
/// many were removed.
pub fn remove_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::remove_file(e.path()) {
            Ok(()) => {
                removed += 1;
                tracing::warn!(path = %e.path().display(), "removed a temporary file left by an interrupted write");
            }
            Err(err) => {
                tracing::warn!(path = %e.path().display(), error = %err, "cannot remove a temporary file left by an interrupted write")
            }
        }
    }
    removed
}

/// Makes `dir` hold exactly `bundles` (the publication restored at start): each bundle whose
/// `NAME.tar.gz` or `NAME.tar.gz.etag` is missing or differs is rewritten with
/// [`write_publish_dir`] (atomic, fsynced, bundle before ETag); a bundle that matches is left
/// untouched. Returns the names rewritten.
pub fn reconcile_publish_dir(dir: &Path, bundles: &[BuiltBundle]) -> std::io::Result<Vec<String>> {
    let mut rewritten = Vec::new();
    for b in bundles {
        let file = dir.join(format!("{}.tar.gz", b.name));
        let etag_file = dir.join(format!("{}.tar.gz.etag", b.name));
        let same = |path: &Path, want: &[u8]| match std::fs::read(path) {
            Ok(have) => Ok(have == want),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        };
        let bundle_ok = same(&file, &b.bytes)?;
        let etag_ok = same(&etag_file, format!("{}\n", b.etag).as_bytes())?;
        if bundle_ok && etag_ok {
            continue;
        }
        write_publish_dir(dir, std::slice::from_ref(b))?;
        tracing::warn!(
            bundle = %b.name,
            revision = %b.revision,
            etag = %b.etag,
            dir = %dir.display(),
            bundle_matched = bundle_ok,
            etag_matched = etag_ok,
            "publish dir behind the published state (interrupted publication); rewritten"
        );
        rewritten.push(b.name.clone());
    }
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(name: &str, bytes: &'static [u8]) -> BuiltBundle {
        BuiltBundle {
            name: name.into(),
            revision: "r".into(),
            etag: etag_of(bytes),
            bytes: bytes.into(),
            kid: "k".into(),
        }
    }

    #[test]
    fn reconcile_rewrites_only_what_differs() {
        let d = tempfile::tempdir().unwrap();
        let a = built("a", b"new a");
        let b = built("b", b"new b");
        let c = built("c", b"new c");
        write_publish_dir(d.path(), &[a.clone(), b.clone()]).unwrap();
        // `b` as a kill between its bundle and its ETag leaves it; `c` never written.
        write_atomic_mode(&d.path().join("b.tar.gz.etag"), b"\"old\"\n", 0o644).unwrap();
        let before = std::fs::metadata(d.path().join("a.tar.gz")).unwrap();
        let rewritten =
            reconcile_publish_dir(d.path(), &[a.clone(), b.clone(), c.clone()]).unwrap();
        assert_eq!(rewritten, ["b", "c"]);
        for x in [&a, &b, &c] {
            let f = d.path().join(format!("{}.tar.gz", x.name));
            assert_eq!(std::fs::read(&f).unwrap(), &x.bytes[..]);
            let e = std::fs::read_to_string(d.path().join(format!("{}.tar.gz.etag", x.name)));
            assert_eq!(e.unwrap(), format!("{}\n", x.etag));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let after = std::fs::metadata(d.path().join("a.tar.gz")).unwrap();
            assert_eq!(
                before.ino(),
                after.ino(),
                "a matching bundle is not rewritten"
            );
        }
        let _ = before;
        assert!(reconcile_publish_dir(d.path(), &[a, b, c])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn only_our_temp_files_are_removed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".regent-abc123.tmp"), b"half a bun").unwrap();
        std::fs::write(d.path().join("authz.tar.gz"), b"x").unwrap();
        std::fs::write(d.path().join(".other.tmp"), b"x").unwrap();
        std::fs::create_dir(d.path().join(".regent-dir.tmp")).unwrap();
        assert_eq!(remove_temp_files(d.path()), 1);
        let mut names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".other.tmp", ".regent-dir.tmp", "authz.tar.gz"]);
        assert_eq!(remove_temp_files(&d.path().join("missing")), 0);
    }

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
