//! The in-memory bundle: every file by path, the parsed manifest, and the checks OPA makes on read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regorus::Value;

use crate::manifest::{path_under, Manifest, ManifestError};

/// Name of the manifest file at the bundle root.
pub const MANIFEST_FILE: &str = ".manifest";
/// Name of the signatures file at the bundle root.
pub const SIGNATURES_FILE: &str = ".signatures.json";

/// Everything that can be wrong with a bundle's contents.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading a source directory failed.
    #[error("reading {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The source directory holds a symlink; bundles are built from regular files only.
    #[error("{0}: symlinks are not allowed in a bundle source directory")]
    Symlink(PathBuf),
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The archive was refused while unpacking.
    #[error(transparent)]
    Unpack(crate::archive::UnpackError),
    /// A file path is not a clean relative path.
    #[error("{0:?}: not a clean relative file path")]
    BadPath(String),
    /// A module is not UTF-8.
    #[error("{0}: module is not valid UTF-8")]
    NotUtf8(String),
    /// A module does not parse; the message carries file:line:col.
    #[error("{0}")]
    Module(String),
    /// A data file does not parse.
    #[error("{file}: invalid data: {message}")]
    Data {
        /// The data file.
        file: String,
        /// Parser message.
        message: String,
    },
    /// A root-level data file is not an object.
    #[error("{0}: root data must be an object")]
    RootDataNotObject(String),
    /// Two data files set the same path to different things.
    #[error("data conflict at {path:?}: {file} conflicts with {other}")]
    DataConflict {
        /// Dotted data path of the conflict.
        path: String,
        /// File being merged.
        file: String,
        /// File that set the value first.
        other: String,
    },
    /// A module's package lies outside every root.
    #[error("{file}: package {package} is outside the bundle roots {roots:?}")]
    PackageOutsideRoots {
        /// Module path.
        file: String,
        /// Package, slash-separated.
        package: String,
        /// Manifest roots.
        roots: Vec<String>,
    },
    /// A data path lies outside every root.
    #[error("{file}: data path {path:?} is outside the bundle roots {roots:?}")]
    DataOutsideRoots {
        /// Data file.
        file: String,
        /// Slash-separated data path.
        path: String,
        /// Manifest roots.
        roots: Vec<String>,
    },
}

/// Options for [`Bundle::from_dir`].
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Include `*_test.rego` modules (excluded by default, as `opa build` users expect).
    pub include_tests: bool,
    /// Override the manifest revision.
    pub revision: Option<String>,
    /// Override the manifest roots.
    pub roots: Option<Vec<String>>,
}

/// A bundle held in memory. Paths have no leading `/`.
#[derive(Debug, Clone)]
pub struct Bundle {
    files: BTreeMap<String, Vec<u8>>,
    manifest: Manifest,
    packages: BTreeMap<String, String>,
    /// Each data file parsed once, when the bundle is read: the roots check, [`Bundle::data`] and the
    /// engine all use these (shared, reference-counted) values, so a large data file is never parsed
    /// or deep-copied again.
    data: BTreeMap<String, Value>,
    /// SHA-256 digests (hex, as signatures list them) of the data files of a large signed bundle,
    /// computed on a second thread while the data is parsed or carried over with an unchanged file
    /// from the bundle this one replaces (see `validate`); empty otherwise.
    sha256: BTreeMap<String, String>,
}

/// Data files smaller than this in total are hashed when the signature is checked, not alongside
/// the parse: a thread costs more than it saves on a small bundle.
const HASH_ALONGSIDE_MIN_BYTES: usize = 1 << 20;

/// Kind of a bundle file, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `.manifest`
    Manifest,
    /// `.signatures.json`
    Signatures,
    /// `*.rego`
    Module,
    /// `data.json`
    DataJson,
    /// `data.yaml` or `data.yml`
    DataYaml,
    /// Anything else: carried and signed, otherwise ignored (like OPA).
    Other,
}

/// Classifies a bundle path.
pub fn file_kind(path: &str) -> FileKind {
    let base = path.rsplit('/').next().unwrap_or(path);
    match (path, base) {
        (MANIFEST_FILE, _) => FileKind::Manifest,
        (SIGNATURES_FILE, _) => FileKind::Signatures,
        (_, "data.json") => FileKind::DataJson,
        (_, "data.yaml" | "data.yml") => FileKind::DataYaml,
        _ if base.ends_with(".rego") => FileKind::Module,
        _ => FileKind::Other,
    }
}

/// Checks that a path is relative, has no empty, `.` or `..` segment, and returns it without a leading `/`.
pub fn clean_path(path: &str) -> Result<&str, BundleError> {
    let p = path.strip_prefix('/').unwrap_or(path);
    if p.is_empty() || p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(BundleError::BadPath(path.to_string()));
    }
    Ok(p)
}

/// Directory of a bundle path (`""` at the root).
fn dir_of(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

impl Bundle {
    /// Builds a bundle from files (path → bytes), validating manifest, modules, data and roots.
    pub fn from_files(files: BTreeMap<String, Vec<u8>>) -> Result<Bundle, BundleError> {
        Bundle::from_files_after(files, None)
    }

    /// [`Bundle::from_files`] for a bundle that replaces `previous`: a data file byte-for-byte equal
    /// to the one at the same path in `previous` takes its parsed value (shared, not copied) and its
    /// digest instead of being parsed and hashed again, so a revision that changes policy but not
    /// a large data file activates without reading that file.
    pub fn from_files_after(
        files: BTreeMap<String, Vec<u8>>,
        previous: Option<&Bundle>,
    ) -> Result<Bundle, BundleError> {
        Bundle::from_files_inner(files, previous, None)
    }

    /// `verified`: the files' signature was already checked, and these are the SHA-256 digests it
    /// computed (kept for the data files, so the next revision need not hash them again); the
    /// data is then not hashed alongside the parse.
    pub(crate) fn from_files_inner(
        files: BTreeMap<String, Vec<u8>>,
        previous: Option<&Bundle>,
        verified: Option<BTreeMap<String, String>>,
    ) -> Result<Bundle, BundleError> {
        let manifest = match files.get(MANIFEST_FILE) {
            Some(bytes) => Manifest::parse(bytes)?,
            None => Manifest::default(),
        };
        let mut bundle = Bundle {
            files,
            manifest,
            packages: BTreeMap::new(),
            data: BTreeMap::new(),
            sha256: BTreeMap::new(),
        };
        bundle.validate(previous, verified)?;
        Ok(bundle)
    }

    /// Reads a policy directory: `*.rego` (without `*_test.rego` unless asked), `data.json`/`data.yaml`/
    /// `data.yml`, a root `.manifest` and `.signatures.json`. Hidden files and directories (such as
    /// `.git`) and all other files are left out. A `.manifest` is always written, with `rego_version`.
    pub fn from_dir(dir: &Path, opts: &BuildOptions) -> Result<Bundle, BundleError> {
        let mut files = BTreeMap::new();
        collect_dir(dir, dir, opts, &mut files)?;
        let mut manifest = match files.get(MANIFEST_FILE) {
            Some(bytes) => Manifest::parse(bytes)?,
            None => Manifest::default(),
        };
        if let Some(r) = &opts.revision {
            manifest.revision = r.clone();
        }
        if let Some(roots) = &opts.roots {
            manifest.roots = Some(roots.clone());
        }
        manifest.rego_version.get_or_insert(1);
        manifest.normalize()?;
        files.insert(MANIFEST_FILE.to_string(), manifest.to_bytes());
        Bundle::from_files(files)
    }

    fn validate(
        &mut self,
        previous: Option<&Bundle>,
        verified: Option<BTreeMap<String, String>>,
    ) -> Result<(), BundleError> {
        for path in self.files.keys() {
            if clean_path(path)? != path {
                return Err(BundleError::BadPath(path.clone()));
            }
        }
        let roots = self.manifest.effective_roots();
        // Parsing every module once here reports syntax errors with file:line at read time, and gives
        // the package paths the root check needs (regorus decodes quoted package segments for us).
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(self.manifest.is_rego_v0());
        for (path, src) in self.modules_checked()? {
            engine
                .add_policy(path.to_string(), src.to_string())
                .map_err(|e| BundleError::Module(format!("{e:#}")))?;
        }
        let packages = engine
            .get_policy_package_components()
            .map_err(|e| BundleError::Module(format!("{e:#}")))?;
        for p in packages {
            let package = p.components.join("/");
            if !roots.iter().any(|r| path_under(&package, r)) {
                return Err(BundleError::PackageOutsideRoots {
                    file: p.source_file,
                    package,
                    roots,
                });
            }
            self.packages.insert(p.source_file, package);
        }
        let mut data = BTreeMap::new();
        let mut sha256 = BTreeMap::new();
        if let Some(previous) = previous {
            for (path, value) in &previous.data {
                if previous.files.get(path) == self.files.get(path) {
                    data.insert(path.clone(), value.clone());
                    if let Some(digest) = previous.sha256.get(path) {
                        sha256.insert(path.clone(), digest.clone());
                    }
                }
            }
        }
        let is_data = |p: &str| {
            matches!(file_kind(p), FileKind::DataJson | FileKind::DataYaml) && !data.contains_key(p)
        };
        let data_bytes: usize = (self.files.iter())
            .filter(|(p, _)| is_data(p))
            .map(|(_, b)| b.len())
            .sum();
        // A signed bundle's data is read twice: parsed here, and hashed over its canonical form
        // when the signature is checked. For a large one both passes run at once, on two threads.
        let hash_alongside = verified.is_none()
            && self.files.contains_key(SIGNATURES_FILE)
            && data_bytes >= HASH_ALONGSIDE_MIN_BYTES;
        if let Some(digests) = verified {
            let data_files = digests
                .into_iter()
                .filter(|(p, _)| matches!(file_kind(p), FileKind::DataJson | FileKind::DataYaml));
            sha256.extend(data_files);
        }
        let files = &self.files;
        let (parsed, hashed) = std::thread::scope(|s| {
            // A thread that cannot be started (resource limits) only loses the head start.
            let hasher = hash_alongside.then(|| {
                std::thread::Builder::new()
                    .name("regent-hash".into())
                    .spawn_scoped(s, move || {
                        (files.iter())
                            .filter(|(p, _)| is_data(p))
                            .filter_map(|(p, b)| {
                                // A file that cannot be hashed is left out: the signature
                                // check hashes it again and reports why.
                                let digest =
                                    crate::signing::file_digest(p, b, "SHA-256").ok()??;
                                Some((p.clone(), digest))
                            })
                            .collect::<BTreeMap<_, _>>()
                    })
            });
            let hasher = hasher.and_then(Result::ok);
            let mut parsed = BTreeMap::new();
            let done = (files.iter())
                .filter(|(p, _)| is_data(p))
                .try_for_each(|(path, bytes)| {
                    if let Some(value) = parse_data(path, bytes)? {
                        parsed.insert(path.clone(), value);
                    }
                    Ok::<_, BundleError>(())
                });
            // A hasher that panicked only loses the head start.
            let hashed = hasher.and_then(|h| h.join().ok()).unwrap_or_default();
            done.map(|()| (parsed, hashed))
        })?;
        data.extend(parsed);
        sha256.extend(hashed);
        self.sha256 = sha256;
        for (path, value) in &data {
            let dir = dir_of(path);
            let paths: Vec<String> = if dir.is_empty() {
                let obj = value
                    .as_object()
                    .map_err(|_| BundleError::RootDataNotObject(path.to_string()))?;
                obj.keys()
                    .map(|k| match k {
                        Value::String(s) => s.to_string(),
                        other => other.to_string(),
                    })
                    .collect()
            } else {
                vec![dir.to_string()]
            };
            for p in paths {
                if !roots.iter().any(|r| path_under(&p, r)) {
                    return Err(BundleError::DataOutsideRoots {
                        file: path.to_string(),
                        path: p,
                        roots,
                    });
                }
            }
        }
        self.data = data;
        Ok(())
    }

    fn modules_checked(&self) -> Result<Vec<(&str, &str)>, BundleError> {
        self.files
            .iter()
            .filter(|(p, _)| file_kind(p) == FileKind::Module)
            .map(|(p, b)| {
                std::str::from_utf8(b)
                    .map(|s| (p.as_str(), s))
                    .map_err(|_| BundleError::NotUtf8(p.clone()))
            })
            .collect()
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest revision (empty when not set).
    pub fn revision(&self) -> &str {
        &self.manifest.revision
    }

    /// Every `.rego` module as (path, source).
    pub fn modules(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files.iter().filter_map(|(p, b)| {
            (file_kind(p) == FileKind::Module)
                .then(|| std::str::from_utf8(b).ok().map(|s| (p.as_str(), s)))
                .flatten()
        })
    }

    /// The package of each module, slash-separated (`envoy/authz`), by module path.
    pub fn packages(&self) -> &BTreeMap<String, String> {
        &self.packages
    }

    /// Every file as (path, bytes), sorted by path, `.manifest` and `.signatures.json` included.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.files.iter().map(|(p, b)| (p.as_str(), b.as_slice()))
    }

    /// One file's bytes.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// The SHA-256 digest of a data file if it was computed while the bundle was read (or carried
    /// over from the bundle it replaced).
    pub(crate) fn precomputed_sha256(&self, path: &str) -> Option<&str> {
        self.sha256.get(path).map(String::as_str)
    }

    /// Adds or replaces a file (used by signing for `.signatures.json`). The path must be clean and
    /// not a data file (those are parsed when the bundle is read).
    pub(crate) fn set_file(&mut self, path: &str, bytes: Vec<u8>) {
        debug_assert!(!matches!(
            file_kind(path),
            FileKind::DataJson | FileKind::DataYaml
        ));
        self.sha256.remove(path);
        self.files.insert(path.to_string(), bytes);
    }

    /// Total size of all files in bytes.
    pub fn size(&self) -> usize {
        self.files.values().map(Vec::len).sum()
    }

    /// The merged data document: each data file at its directory's path, deep-merged. Always an object.
    ///
    /// Cheap even for large data: the files were parsed when the bundle was read, and merging shares
    /// their values (only the objects on a path where two files meet are copied, shallowly).
    pub fn data(&self) -> Result<Value, BundleError> {
        let mut root = Value::new_object();
        let mut origins: Vec<(Vec<String>, String)> = Vec::new();
        for (file, value) in &self.data {
            let dir = dir_of(file);
            let segments: Vec<String> = if dir.is_empty() {
                Vec::new()
            } else {
                dir.split('/').map(str::to_string).collect()
            };
            merge_at(&mut root, &segments, value.clone(), file, &origins)?;
            origins.push((segments, file.to_string()));
        }
        Ok(root)
    }
}

fn collect_dir(
    root: &Path,
    dir: &Path,
    opts: &BuildOptions,
    out: &mut BTreeMap<String, Vec<u8>>,
) -> Result<(), BundleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { path, source }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| BundleError::BadPath(path.display().to_string()))?;
        let ft = entry.file_type().map_err(io(&path))?;
        let rel = path
            .strip_prefix(root)
            .map_err(|_| BundleError::BadPath(path.display().to_string()))?
            .to_str()
            .ok_or_else(|| BundleError::BadPath(path.display().to_string()))?
            .replace(std::path::MAIN_SEPARATOR, "/");
        let at_root = dir == root;
        let wanted_hidden = at_root && (name == MANIFEST_FILE || name == SIGNATURES_FILE);
        if name.starts_with('.') && !wanted_hidden {
            continue;
        }
        if ft.is_symlink() {
            return Err(BundleError::Symlink(path));
        }
        if ft.is_dir() {
            collect_dir(root, &path, opts, out)?;
            continue;
        }
        let keep = match file_kind(&rel) {
            FileKind::Module => opts.include_tests || !name.ends_with("_test.rego"),
            FileKind::Other => false,
            _ => true,
        };
        if keep {
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            out.insert(rel, bytes);
        }
    }
    Ok(())
}

/// Parses one data file (`None` for other files). JSON goes straight into the engine's value type;
/// YAML goes through serde_json's model first, so its keys must be strings as in JSON.
///
/// Every parse is within a budget, whoever the data comes from: nesting at most 128 deep (JSON:
/// serde_json's limit; YAML: checked on the parser's events before any value is built, see
/// `yaml.rs`), and no more values or bytes than the file's size allows (JSON cannot expand; YAML
/// aliases are counted as what they expand to). Errors name the file and the budget.
fn parse_data(path: &str, bytes: &[u8]) -> Result<Option<Value>, BundleError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let bad = |message: String| BundleError::Data {
        file: path.to_string(),
        message,
    };
    match file_kind(path) {
        FileKind::DataJson => {
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => text,
                // Let serde_json name the position of the bad byte, as it did before.
                Err(e) => {
                    return Err(bad(serde_json::from_slice::<serde_json::Value>(bytes)
                        .err()
                        .map_or_else(|| e.to_string(), |e| e.to_string())))
                }
            };
            crate::json::parse(text).map(Some).map_err(|e| {
                let message = e.to_string();
                // serde_json's own depth limit, which is the budget: say so.
                if message.starts_with("recursion limit exceeded") {
                    bad(format!(
                        "over the parse budget: nesting deeper than {} levels ({message})",
                        crate::json::MAX_DEPTH
                    ))
                } else {
                    bad(message)
                }
            })
        }
        FileKind::DataYaml => {
            let v = crate::yaml::to_json(bytes).map_err(bad)?;
            serde_json::from_value(v)
                .map(Some)
                .map_err(|e| bad(e.to_string()))
        }
        _ => Ok(None),
    }
}

fn merge_at(
    root: &mut Value,
    segments: &[String],
    value: Value,
    file: &str,
    origins: &[(Vec<String>, String)],
) -> Result<(), BundleError> {
    let conflict = |path: &[String]| {
        let other = origins
            .iter()
            .find(|(o, _)| o.starts_with(path) || path.starts_with(o))
            .map_or_else(|| "another data file".to_string(), |(_, f)| f.clone());
        BundleError::DataConflict {
            path: path.join("."),
            file: file.to_string(),
            other,
        }
    };
    let mut node = root;
    for (i, seg) in segments.iter().enumerate() {
        let obj = node.as_object_mut().map_err(|_| conflict(&segments[..i]))?;
        node = obj.get_or_insert_with(Value::from(seg.as_str()), Value::new_object);
    }
    let mut path = segments.to_vec();
    deep_merge(node, value, &mut path, &conflict)
}

fn deep_merge(
    into: &mut Value,
    value: Value,
    path: &mut Vec<String>,
    conflict: &dyn Fn(&[String]) -> BundleError,
) -> Result<(), BundleError> {
    // An empty object is the placeholder created for a file's own directory path (or an empty
    // object from another file): merging into it gives `value` itself, so take it whole, shared.
    if matches!(&into, Value::Object(o) if o.is_empty()) {
        *into = value;
        return Ok(());
    }
    let (Value::Object(_), Value::Object(b)) = (&into, &value) else {
        return Err(conflict(path));
    };
    let a = into.as_object_mut().map_err(|_| conflict(path))?;
    for (k, v) in b.iter() {
        match a.get_mut(k) {
            Some(existing) => {
                path.push(match k {
                    Value::String(s) => s.to_string(),
                    other => other.to_string(),
                });
                deep_merge(existing, v.clone(), path, conflict)?;
                path.pop();
            }
            None => {
                a.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        list.iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn data_files_merge_at_their_directory() {
        let b = Bundle::from_files(files(&[
            ("data.json", r#"{"top": 1, "roles": {"x": 1}}"#),
            ("roles/bindings/data.json", r#"{"alice": ["admin"]}"#),
            ("roles/data.yaml", "y: 2\n"),
        ]))
        .unwrap();
        assert_eq!(
            b.data().unwrap(),
            Value::from_json_str(
                r#"{"top": 1, "roles": {"x": 1, "y": 2, "bindings": {"alice": ["admin"]}}}"#
            )
            .unwrap()
        );
    }

    #[test]
    fn large_signed_data_is_hashed_while_parsed() {
        let big = format!(
            r#"{{"k": "{}", "a": [1, 2]}}"#,
            "x".repeat(HASH_ALONGSIDE_MIN_BYTES)
        );
        let list = [("a/data.json", big.as_str()), ("b/data.json", "{}")];
        let digest = |p: &str, c: &str| crate::signing::file_digest(p, c.as_bytes(), "SHA-256");
        let unsigned = Bundle::from_files(files(&list)).unwrap();
        assert_eq!(unsigned.precomputed_sha256("a/data.json"), None);
        let signed = [&list[..], &[(SIGNATURES_FILE, "{}")]].concat();
        let b = Bundle::from_files(files(&signed)).unwrap();
        for (p, c) in list {
            let want = digest(p, c).unwrap();
            assert_eq!(b.precomputed_sha256(p).map(str::to_string), want, "{p}");
        }
        let small = Bundle::from_files(files(&[("a/data.json", "{}"), (SIGNATURES_FILE, "{}")]));
        assert_eq!(small.unwrap().precomputed_sha256("a/data.json"), None);
    }

    #[test]
    fn unchanged_data_files_are_taken_from_the_previous_bundle() {
        let same = |a: &Value, b: &Value| match (a, b) {
            (Value::Object(x), Value::Object(y)) => regorus::Rc::ptr_eq(x, y),
            _ => false,
        };
        let big = format!(r#"{{"k": "{}"}}"#, "x".repeat(HASH_ALONGSIDE_MIN_BYTES));
        let first = [
            ("a/data.json", big.as_str()),
            ("b/data.json", r#"{"n": 1}"#),
            ("p.rego", "package a\nx := 1\n"),
            (SIGNATURES_FILE, "{}"),
        ];
        let old = Bundle::from_files(files(&first)).unwrap();
        let mut second = first;
        second[1].1 = r#"{"n": 2}"#;
        second[2].1 = "package a\nx := 2\n";
        let new = Bundle::from_files_after(files(&second), Some(&old)).unwrap();
        // a/data.json is unchanged: the very same value, and its digest, carried over.
        assert!(same(&old.data["a/data.json"], &new.data["a/data.json"]));
        assert_eq!(
            new.precomputed_sha256("a/data.json"),
            old.precomputed_sha256("a/data.json")
        );
        assert!(new.precomputed_sha256("a/data.json").is_some());
        // b/data.json changed: parsed again, and the bundle reads as if built from scratch.
        assert!(!same(&old.data["b/data.json"], &new.data["b/data.json"]));
        let fresh = Bundle::from_files(files(&second)).unwrap();
        assert_eq!(new.data().unwrap(), fresh.data().unwrap());
        assert_eq!(
            new.data["b/data.json"],
            Value::from_json_str(r#"{"n": 2}"#).unwrap()
        );
        // A file moved to another path, or a changed file at the same path, is not reused.
        let moved = Bundle::from_files_after(files(&[("c/data.json", big.as_str())]), Some(&old));
        assert!(!same(
            &old.data["a/data.json"],
            &moved.unwrap().data["c/data.json"]
        ));
        let bad = Bundle::from_files_after(files(&[("a/data.json", "{")]), Some(&old));
        assert!(matches!(bad, Err(BundleError::Data { .. })), "{bad:?}");
    }

    #[test]
    fn conflicting_data_names_both_files() {
        let b = Bundle::from_files(files(&[
            ("a/data.json", r#"{"b": 1}"#),
            ("a/b/data.json", r#"{"c": 1}"#),
        ]))
        .unwrap();
        let err = b.data().unwrap_err().to_string();
        assert!(
            err.contains("a/b/data.json") && err.contains("a/data.json"),
            "{err}"
        );
    }

    #[test]
    fn roots_are_enforced_for_packages_and_data() {
        let m = r#"{"roots":["authz"]}"#;
        let err = Bundle::from_files(files(&[(".manifest", m), ("x.rego", "package other\n")]))
            .unwrap_err();
        assert!(
            matches!(err, BundleError::PackageOutsideRoots { .. }),
            "{err}"
        );
        let err =
            Bundle::from_files(files(&[(".manifest", m), ("roles/data.json", "{}")])).unwrap_err();
        assert!(matches!(err, BundleError::DataOutsideRoots { .. }), "{err}");
        let err = Bundle::from_files(files(&[(".manifest", m), ("data.json", r#"{"z":1}"#)]))
            .unwrap_err();
        assert!(matches!(err, BundleError::DataOutsideRoots { .. }), "{err}");
        let ok = Bundle::from_files(files(&[
            (".manifest", m),
            ("authz/p.rego", "package authz.inner\nallow := true\n"),
            ("authz/data.json", "{}"),
        ]))
        .unwrap();
        assert_eq!(ok.packages()["authz/p.rego"], "authz/inner");
    }

    #[test]
    fn bad_modules_and_data_are_reported_with_file() {
        let err =
            Bundle::from_files(files(&[("dir/p.rego", "package p\nallow if {\n")])).unwrap_err();
        assert!(err.to_string().contains("dir/p.rego"), "{err}");
        let err = Bundle::from_files(files(&[("d/data.json", "{bad")])).unwrap_err();
        assert!(
            matches!(err, BundleError::Data { ref file, .. } if file == "d/data.json"),
            "{err}"
        );
        let err = Bundle::from_files(files(&[("data.json", "[1]")])).unwrap_err();
        assert!(matches!(err, BundleError::RootDataNotObject(_)), "{err}");
    }
}
