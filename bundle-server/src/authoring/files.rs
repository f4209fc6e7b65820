//! File helpers shared by the authoring commands: reading inputs with errors that name the file and
//! flag, and replacing outputs atomically.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use regent_bundle::{BuildOptions, Bundle, UnpackLimits};

/// Reads a whole file, or standard input for `-`.
pub(crate) fn read_input(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .with_context(|| format!("{what}: reading standard input"))?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("{what} {}", path.display()))
}

/// Reads a JSON document; a syntax error names the file, line and column.
pub(crate) fn read_json(path: &Path, what: &str) -> anyhow::Result<serde_json::Value> {
    let bytes = read_input(path, what)?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{what} {}: not valid JSON", path.display()))
}

/// Reads a bundle from a policy directory (as `regent build` would build it, tests left out) or a
/// `.tar.gz` archive (read with the same limits the sidecar applies).
pub(crate) fn read_bundle(path: &Path) -> anyhow::Result<Bundle> {
    let meta = std::fs::metadata(path).with_context(|| format!("bundle {}", path.display()))?;
    if meta.is_dir() {
        Bundle::from_dir(path, &BuildOptions::default())
            .with_context(|| format!("bundle directory {}", path.display()))
    } else {
        let bytes = std::fs::read(path).with_context(|| format!("bundle {}", path.display()))?;
        Bundle::from_tar_gz(&bytes, &UnpackLimits::default())
            .with_context(|| format!("bundle {}", path.display()))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so a
/// reader never sees a half-written bundle and a failure leaves the old file intact.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.is_dir() {
        bail!("{} is a directory", path.display());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    // Temporary files are created 0600; a bundle is not a secret and is often served by others.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The `iat` to sign with: `--iat`, else `SOURCE_DATE_EPOCH` (reproducible builds), else now.
pub(crate) fn signing_time(iat: Option<i64>) -> anyhow::Result<Option<i64>> {
    if iat.is_some() {
        return Ok(iat);
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH {s:?} is not a number of seconds")),
        _ => Ok(None),
    }
}
