//! Durable replacement of a file: written to a temporary file beside it, fsynced, renamed over
//! the old one and the directory fsynced, so a crash leaves either the old or the new content,
//! never a torn file. Blocking: async callers use `spawn_blocking`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What failed while replacing a file.
#[derive(Debug)]
pub struct WriteError {
    /// The step: creating, writing, fsyncing, renaming into, opening.
    pub op: &'static str,
    /// The path concerned.
    pub path: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
}

/// Replaces `dir/file` with `bytes` durably (`dir` must exist).
pub fn replace_file(dir: &Path, file: &str, bytes: &[u8]) -> Result<(), WriteError> {
    let err = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError { op, path, source }
    };
    let target = dir.join(file);
    let tmp = dir.join(format!(".{file}.tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(err("creating", &tmp))?;
    f.write_all(bytes).map_err(err("writing", &tmp))?;
    f.sync_all().map_err(err("fsyncing", &tmp))?;
    drop(f);
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(err("renaming into", &target)(e));
    }
    // The rename is only durable once the directory entry itself is on disk.
    let d = fs::File::open(dir).map_err(err("opening", dir))?;
    d.sync_all().map_err(err("fsyncing", dir))?;
    Ok(())
}
