//! Bundle archives: deterministic `.tar.gz` writing, and streaming, limit-checked reading of untrusted ones.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::rc::Rc;

use flate2::{read::GzDecoder, Compression, GzBuilder};

use crate::bundle::{clean_path, Bundle, BundleError, MANIFEST_FILE, SIGNATURES_FILE};
use crate::manifest::Manifest;
use crate::signing::{
    Keyring, SignatureCheck, VerifiedSignature, VerifyError, VerifyOptions, MAX_SIGNATURES_BYTES,
};

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
    read_gated(bytes, limits, &mut Open).map_err(|e| match e {
        Gated::Unpack(e) => e,
        // `Open` refuses nothing.
        Gated::Refused(e) => UnpackError::Malformed(e.to_string()),
    })
}

/// Decides on each entry as it is read: `header` once its path is known to be safe and its size
/// within the limits, before its bytes are read; `file` once they are.
trait Gate {
    fn header(&mut self, path: &str, size: u64) -> Result<Entry, VerifyError>;
    fn file(&mut self, path: &str, data: &[u8]) -> Result<Flow, VerifyError>;
}

/// What to do with an entry whose header passed.
enum Entry {
    /// Read its bytes and keep them.
    Read,
    /// Pass over its bytes without keeping them.
    Skip,
}

/// Whether to read on after a file.
enum Flow {
    Continue,
    /// Nothing after this file is needed (the rest of the archive is not checked either).
    Stop,
}

/// The gate of [`read_tar_gz`]: everything within the limits is read.
struct Open;

impl Gate for Open {
    fn header(&mut self, _: &str, _: u64) -> Result<Entry, VerifyError> {
        Ok(Entry::Read)
    }
    fn file(&mut self, _: &str, _: &[u8]) -> Result<Flow, VerifyError> {
        Ok(Flow::Continue)
    }
}

enum Gated {
    Unpack(UnpackError),
    Refused(VerifyError),
}

impl From<UnpackError> for Gated {
    fn from(e: UnpackError) -> Self {
        Gated::Unpack(e)
    }
}

fn read_gated(
    bytes: &[u8],
    limits: &UnpackLimits,
    gate: &mut dyn Gate,
) -> Result<BTreeMap<String, Vec<u8>>, Gated> {
    if bytes.len() as u64 > limits.max_compressed_bytes {
        return Err(UnpackError::CompressedTooLarge {
            size: bytes.len() as u64,
            limit: limits.max_compressed_bytes,
        }
        .into());
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
            }
            .into());
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
            return Err(UnpackError::ForbiddenEntry { path: name, kind }.into());
        }
        let path = clean_path(&name)
            .map_err(|_| UnpackError::UnsafePath(name.clone()))?
            .to_string();
        if path.split('/').count() > limits.max_depth {
            return Err(UnpackError::TooDeep {
                path,
                limit: limits.max_depth,
            }
            .into());
        }
        let size = entry.header().size().map_err(malformed)?;
        if size > limits.max_file_bytes {
            return Err(UnpackError::FileTooLarge {
                path,
                size,
                limit: limits.max_file_bytes,
            }
            .into());
        }
        if files.contains_key(&path) {
            return Err(UnpackError::Duplicate(path).into());
        }
        if let Entry::Skip = gate.header(&path, size).map_err(Gated::Refused)? {
            // tar passes over the unread bytes of an entry when the next one is asked for.
            continue;
        }
        // `size` is bounded by max_file_bytes, so the pre-allocation is bounded too.
        let mut data = Vec::with_capacity(size.min(1 << 20) as usize);
        (&mut entry)
            .take(limits.max_file_bytes + 1)
            .read_to_end(&mut data)
            .map_err(malformed)?;
        if data.len() as u64 != size {
            return Err(UnpackError::Malformed(format!("{path}: truncated file data")).into());
        }
        let flow = gate.file(&path, &data).map_err(Gated::Refused)?;
        files.insert(path, data);
        if let Flow::Stop = flow {
            return Ok(files);
        }
    }
    // tar stops at its end-of-archive marker; reading on to the end of the gzip stream makes flate2
    // check the CRC and length, so a truncated or corrupted trailer is refused too (within the limit).
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(malformed)?;
    Ok(files)
}

/// Why [`Bundle::from_verified_tar_gz`] refused an archive.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The archive or its contents were refused: what [`Bundle::from_tar_gz`] refuses.
    #[error(transparent)]
    Bundle(BundleError),
    /// The signature does not vouch for the archive.
    #[error(transparent)]
    Signature(VerifyError),
}

/// The first pass of [`Bundle::from_verified_tar_gz`]: finds `.signatures.json`, passing over
/// everything before it without keeping it, so no unverified file is held in memory.
#[derive(Default)]
struct FindSignatures {
    raw: Option<Vec<u8>>,
}

impl Gate for FindSignatures {
    fn header(&mut self, path: &str, size: u64) -> Result<Entry, VerifyError> {
        if path != SIGNATURES_FILE {
            return Ok(Entry::Skip);
        }
        if size > MAX_SIGNATURES_BYTES as u64 {
            return Err(VerifyError::BadSignaturesFile(format!(
                "{size} bytes, over the limit of {MAX_SIGNATURES_BYTES}"
            )));
        }
        Ok(Entry::Read)
    }

    fn file(&mut self, _: &str, data: &[u8]) -> Result<Flow, VerifyError> {
        self.raw = Some(data.to_vec());
        Ok(Flow::Stop)
    }
}

/// The second pass of [`Bundle::from_verified_tar_gz`], with the signature already verified: an
/// entry the token does not list, or lists with another length, is refused at its header, and
/// each listed file's digest is checked as it arrives.
struct Verifying<'a> {
    check: SignatureCheck,
    previous: Option<&'a Bundle>,
    /// SHA-256 of the files checked.
    digests: BTreeMap<String, String>,
}

impl Gate for Verifying<'_> {
    fn header(&mut self, path: &str, size: u64) -> Result<Entry, VerifyError> {
        if path != SIGNATURES_FILE {
            self.check.admit(path, size)?;
        }
        Ok(Entry::Read)
    }

    fn file(&mut self, path: &str, data: &[u8]) -> Result<Flow, VerifyError> {
        if path == SIGNATURES_FILE {
            return Ok(Flow::Continue);
        }
        // A file unchanged since the bundle it replaces need not be hashed again.
        let precomputed = self
            .previous
            .filter(|p| p.file(path) == Some(data))
            .and_then(|p| p.precomputed_sha256(path));
        if let Some(digest) = self.check.check_file(path, data, precomputed)? {
            self.digests.insert(path.to_string(), digest);
        }
        Ok(Flow::Continue)
    }
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

    /// Reads an untrusted `.tar.gz` bundle that must be signed by a key of `keyring`, checking the
    /// signature before anything in the bundle is parsed:
    ///
    /// 1. a first pass over the archive (within `limits`, as [`read_tar_gz`]) finds
    ///    `.signatures.json`, passing over the entries before it without keeping them, and its
    ///    token is verified (key, algorithm, scope);
    /// 2. a second pass refuses any entry whose name the token does not list at its header,
    ///    before its bytes are read, and checks each listed file's digest as it arrives. So an
    ///    unsigned file is never held in memory, wherever it sits in the archive; a listed file
    ///    is held once, as a valid bundle's would be;
    /// 3. digests are computed over raw bytes, or over OPA's canonical JSON for structured files
    ///    (`.manifest`, `data.json`, `data.yaml`): a streaming canonicaliser for JSON, the
    ///    budgeted YAML parser for YAML (see `Bundle::data`'s parse budgets);
    /// 4. listed files that are missing and the signed revision are checked;
    /// 5. only then are modules and data parsed (within their budgets) and the bundle built.
    ///
    /// `previous` is the bundle this one replaces, as in [`Bundle::from_files_after`]: an
    /// unchanged data file is neither hashed nor parsed again.
    pub fn from_verified_tar_gz(
        bytes: &[u8],
        limits: &UnpackLimits,
        keyring: &Keyring,
        opts: &VerifyOptions,
        previous: Option<&Bundle>,
    ) -> Result<(Bundle, VerifiedSignature), ReadError> {
        let gated = |e| match e {
            Gated::Unpack(e) => ReadError::Bundle(BundleError::Unpack(e)),
            Gated::Refused(e) => ReadError::Signature(e),
        };
        let mut find = FindSignatures::default();
        read_gated(bytes, limits, &mut find).map_err(gated)?;
        let raw = find
            .raw
            .ok_or(ReadError::Signature(VerifyError::MissingSignatures))?;
        let mut gate = Verifying {
            check: SignatureCheck::new(&raw, keyring, opts).map_err(ReadError::Signature)?,
            previous,
            digests: BTreeMap::new(),
        };
        let files = read_gated(bytes, limits, &mut gate).map_err(gated)?;
        // The manifest's digest was checked: parsing it is parsing signed content.
        let revision = match files.get(MANIFEST_FILE) {
            Some(bytes) => {
                Manifest::parse(bytes)
                    .map_err(|e| ReadError::Bundle(e.into()))?
                    .revision
            }
            None => String::new(),
        };
        let signature = gate.check.finish(&revision).map_err(ReadError::Signature)?;
        let bundle = Bundle::from_files_inner(files, previous, Some(gate.digests))
            .map_err(ReadError::Bundle)?;
        Ok((bundle, signature))
    }

    /// Writes the bundle as `.tar.gz`, deterministically: entries sorted by path, mode 0644, uid/gid 0,
    /// mtime 0, no user names, and a gzip header without name or time. Same files, same bytes.
    pub fn to_tar_gz(&self) -> Result<Vec<u8>, BundleError> {
        write_tar_gz(self.files()).map_err(|source| BundleError::Io {
            path: "<bundle archive>".into(),
            source,
        })
    }
}

/// Writes files as a deterministic `.tar.gz` in the order given (see [`Bundle::to_tar_gz`]),
/// without checking them: for tools and tests that need an archive a [`Bundle`] would refuse.
pub fn write_tar_gz<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> std::io::Result<Vec<u8>> {
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::new(6));
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        tar.append_data(&mut header, path, data)?;
    }
    tar.into_inner()?.finish()
}
