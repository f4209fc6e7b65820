//! Bundle archives: deterministic `.tar.gz` writing, and streaming, limit-checked reading of untrusted ones.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::rc::Rc;

use flate2::{read::GzDecoder, Compression, GzBuilder};

use crate::bundle::{clean_path, Bundle, BundleError};

/// Limits applied while reading an untrusted archive. Every one is checked before the data it bounds
/// is held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Largest accepted `.tar.gz` (compressed) size.
    pub max_compressed_bytes: u64,
    /// Largest total decompressed size (tar headers included): the gzip-bomb guard.
    pub max_total_bytes: u64,
    /// Largest single file.
    pub max_file_bytes: u64,
    /// Most archive entries (files and directories).
    pub max_entries: usize,
    /// Most path segments in one file path.
    pub max_depth: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_compressed_bytes: 256 << 20,
            max_total_bytes: 1 << 30,
            max_file_bytes: 512 << 20,
            max_entries: 10_000,
            max_depth: 32,
        }
    }
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The compressed input is over the limit.
    #[error("archive is {size} bytes compressed, over the limit of {limit}")]
    CompressedTooLarge {
        /// Input size.
        size: u64,
        /// Limit.
        limit: u64,
    },
    /// Decompressed data went over the limit.
    #[error("archive decompresses to more than {limit} bytes")]
    TotalTooLarge {
        /// Limit.
        limit: u64,
    },
    /// One file is over the per-file limit.
    #[error("{path}: {size} bytes, over the per-file limit of {limit}")]
    FileTooLarge {
        /// File.
        path: String,
        /// Declared size.
        size: u64,
        /// Limit.
        limit: u64,
    },
    /// Too many entries.
    #[error("archive has more than {limit} entries")]
    TooManyEntries {
        /// Limit.
        limit: usize,
    },
    /// A path is nested too deep.
    #[error("{path}: more than {limit} path segments")]
    TooDeep {
        /// File.
        path: String,
        /// Limit.
        limit: usize,
    },
    /// An entry name is not UTF-8.
    #[error("entry name is not valid UTF-8: {0:?}")]
    NonUtf8Name(String),
    /// An entry path is absolute beyond a single leading `/`, or has `..`, `.` or empty segments.
    #[error("{0:?}: unsafe path (absolute, `..`, `.` or empty segment)")]
    UnsafePath(String),
    /// Symlinks, hard links, devices and FIFOs are refused.
    #[error("{path}: {kind} entries are not allowed")]
    ForbiddenEntry {
        /// Entry path.
        path: String,
        /// Entry type.
        kind: &'static str,
    },
    /// The same path appears twice.
    #[error("{0}: duplicate path in archive")]
    Duplicate(String),
    /// The gzip or tar stream is malformed or truncated.
    #[error("malformed archive: {0}")]
    Malformed(String),
    /// Writing an unpacked file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// Target path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Counts decompressed bytes and fails the stream once the limit is passed.
struct Limited<R> {
    inner: R,
    remaining: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.remaining {
            self.exceeded.set(true);
            return Err(std::io::Error::other("decompressed size limit exceeded"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Reads the files of an untrusted `.tar.gz`, in memory, refusing anything unsafe. Directory entries and
/// pax global headers are skipped; a single leading `/` on paths is accepted (OPA writes them).
pub fn read_tar_gz(
    bytes: &[u8],
    limits: &UnpackLimits,
) -> Result<BTreeMap<String, Vec<u8>>, UnpackError> {
    if bytes.len() as u64 > limits.max_compressed_bytes {
        return Err(UnpackError::CompressedTooLarge {
            size: bytes.len() as u64,
            limit: limits.max_compressed_bytes,
        });
    }
    let exceeded = Rc::new(Cell::new(false));
    let reader = Limited {
        inner: GzDecoder::new(bytes),
        remaining: limits.max_total_bytes,
        exceeded: exceeded.clone(),
    };
    let malformed = |e: std::io::Error| {
        if exceeded.get() {
            UnpackError::TotalTooLarge {
                limit: limits.max_total_bytes,
            }
        } else {
            UnpackError::Malformed(e.to_string())
        }
    };
    let mut archive = tar::Archive::new(reader);
    let mut files = BTreeMap::new();
    let mut count = 0usize;
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        count += 1;
        if count > limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|e| {
            UnpackError::NonUtf8Name(String::from_utf8_lossy(e.as_bytes()).into_owned())
        })?;
        use tar::EntryType as T;
        let kind = match entry.header().entry_type() {
            T::Regular | T::Continuous => None,
            T::Directory | T::XGlobalHeader => continue,
            T::Symlink => Some("symlink"),
            T::Link => Some("hard link"),
            T::Char | T::Block => Some("device"),
            T::Fifo => Some("fifo"),
            _ => Some("special"),
        };
        if let Some(kind) = kind {
            return Err(UnpackError::ForbiddenEntry { path: name, kind });
        }
        let path = clean_path(&name)
            .map_err(|_| UnpackError::UnsafePath(name.clone()))?
            .to_string();
        if path.split('/').count() > limits.max_depth {
            return Err(UnpackError::TooDeep {
                path,
                limit: limits.max_depth,
            });
        }
        let size = entry.header().size().map_err(malformed)?;
        if size > limits.max_file_bytes {
            return Err(UnpackError::FileTooLarge {
                path,
                size,
                limit: limits.max_file_bytes,
            });
        }
        if files.contains_key(&path) {
            return Err(UnpackError::Duplicate(path));
        }
        // `size` is bounded by max_file_bytes, so the pre-allocation is bounded too.
        let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
        (&mut entry)
            .take(limits.max_file_bytes + 1)
            .read_to_end(&mut data)
            .map_err(malformed)?;
        if data.len() as u64 != size {
            return Err(UnpackError::Malformed(format!(
                "{path}: truncated file data"
            )));
        }
        files.insert(path, data);
    }
    // tar stops at its end-of-archive marker; reading on to the end of the gzip stream makes flate2
    // check the CRC and length, so a truncated or corrupted trailer is refused too (within the limit).
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(malformed)?;
    Ok(files)
}

/// Unpacks an untrusted `.tar.gz` into `dir` (which must exist), writing only inside it. Files are
/// created new: an existing file or symlink at a target path is an error, never followed.
pub fn unpack_to_dir(
    bytes: &[u8],
    dir: &Path,
    limits: &UnpackLimits,
) -> Result<Vec<String>, UnpackError> {
    let files = read_tar_gz(bytes, limits)?;
    for (path, data) in &files {
        let target = dir.join(path);
        let write_err = |source| UnpackError::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(write_err)?;
        f.write_all(data).map_err(write_err)?;
    }
    Ok(files.into_keys().collect())
}

impl Bundle {
    /// Reads an untrusted `.tar.gz` bundle (see [`read_tar_gz`] for the safety rules) and validates it.
    pub fn from_tar_gz(bytes: &[u8], limits: &UnpackLimits) -> Result<Bundle, BundleError> {
        Bundle::from_tar_gz_after(bytes, limits, None)
    }

    /// [`Bundle::from_tar_gz`] for a bundle that replaces `previous`; see [`Bundle::from_files_after`].
    pub fn from_tar_gz_after(
        bytes: &[u8],
        limits: &UnpackLimits,
        previous: Option<&Bundle>,
    ) -> Result<Bundle, BundleError> {
        let files = read_tar_gz(bytes, limits).map_err(BundleError::Unpack)?;
        Bundle::from_files_after(files, previous)
    }

    /// Writes the bundle as `.tar.gz`, deterministically: entries sorted by path, mode 0644, uid/gid 0,
    /// mtime 0, no user names, and a gzip header without name or time. Same files, same bytes.
    pub fn to_tar_gz(&self) -> Result<Vec<u8>, BundleError> {
        let io = |source| BundleError::Io {
            path: "<bundle archive>".into(),
            source,
        };
        let gz = GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), Compression::new(6));
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        for (path, data) in self.files() {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            tar.append_data(&mut header, path, data).map_err(io)?;
        }
        let gz = tar.into_inner().map_err(io)?;
        gz.finish().map_err(io)
    }
}
