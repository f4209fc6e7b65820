//! The bundle `.manifest` (OPA format) and the rules on its roots.

use serde::{Deserialize, Serialize};

/// Contents of `.manifest`. Unknown keys (OPA's `wasm`, `file_rego_versions`, ...) are ignored when
/// reading; the file itself is kept byte for byte in the bundle, so signatures still cover them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Opaque revision; the bundle server uses the git commit SHA.
    #[serde(default)]
    pub revision: String,
    /// Paths under `data` this bundle owns. Absent means `[""]`: all of `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roots: Option<Vec<String>>,
    /// Rego dialect of the modules: 0 or 1 (default 1, as in OPA 1.x).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rego_version: Option<i64>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A broken manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// `.manifest` is not valid JSON of the expected shape.
    #[error(".manifest: {0}")]
    Parse(String),
    /// `rego_version` is neither 0 nor 1.
    #[error(".manifest: rego_version must be 0 or 1, got {0}")]
    RegoVersion(i64),
    /// Two roots of the same bundle overlap.
    #[error(".manifest: roots {0:?} and {1:?} overlap")]
    OverlappingRoots(String, String),
    /// A root contains an empty or dot segment.
    #[error(".manifest: root {0:?} is not a clean slash-separated path")]
    BadRoot(String),
}

impl Manifest {
    /// Parses `.manifest` bytes and validates them.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Parse(e.to_string()))?;
        // serde would also accept a JSON array for a struct; a manifest must be an object.
        if !v.is_object() {
            return Err(ManifestError::Parse("must be a JSON object".into()));
        }
        let mut m: Manifest =
            serde_json::from_value(v).map_err(|e| ManifestError::Parse(e.to_string()))?;
        m.normalize()?;
        Ok(m)
    }

    /// Trims slashes from roots and checks roots and rego_version.
    pub fn normalize(&mut self) -> Result<(), ManifestError> {
        if let Some(v) = self.rego_version {
            if v != 0 && v != 1 {
                return Err(ManifestError::RegoVersion(v));
            }
        }
        if let Some(roots) = &mut self.roots {
            for r in roots.iter_mut() {
                *r = r.trim_matches('/').to_string();
                if !r.is_empty() && r.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
                    return Err(ManifestError::BadRoot(r.clone()));
                }
            }
            for (i, a) in roots.iter().enumerate() {
                for b in &roots[i + 1..] {
                    if paths_overlap(a, b) {
                        return Err(ManifestError::OverlappingRoots(a.clone(), b.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    /// The roots in force: the declared ones, or `[""]`.
    pub fn effective_roots(&self) -> Vec<String> {
        self.roots.clone().unwrap_or_else(|| vec![String::new()])
    }

    /// Whether modules are Rego v0.
    pub fn is_rego_v0(&self) -> bool {
        self.rego_version == Some(0)
    }

    /// Canonical bytes for writing: keys sorted, no whitespace (deterministic builds).
    pub fn to_bytes(&self) -> Vec<u8> {
        // serde_json's default map is sorted, so a Value round trip sorts the keys.
        let v = serde_json::to_value(self).unwrap_or_default();
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// True when one slash-separated path is equal to, or a prefix (by whole segments) of, the other.
/// The empty path is the root of `data` and overlaps everything.
pub fn paths_overlap(a: &str, b: &str) -> bool {
    path_under(a, b) || path_under(b, a)
}

/// True when `path` is `root` or lies under it (whole segments).
pub fn path_under(path: &str, root: &str) -> bool {
    root.is_empty()
        || path == root
        || (path.len() > root.len()
            && path.starts_with(root)
            && path.as_bytes()[root.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_by_whole_segments() {
        assert!(paths_overlap("a/b", "a/b/c"));
        assert!(paths_overlap("", "x"));
        assert!(paths_overlap("a", "a"));
        assert!(!paths_overlap("a/b", "a/bc"));
        assert!(!paths_overlap("x", "y"));
    }

    #[test]
    fn parse_validates_and_trims() {
        let m = Manifest::parse(
            br#"{"revision":"r1","roots":["/authz/","roles"],"rego_version":1,"wasm":[]}"#,
        )
        .unwrap();
        assert_eq!(
            m.roots.as_deref(),
            Some(&["authz".to_string(), "roles".to_string()][..])
        );
        assert_eq!(
            Manifest::parse(br#"{"roots":["a","a/b"]}"#).unwrap_err(),
            ManifestError::OverlappingRoots("a".into(), "a/b".into())
        );
        assert_eq!(
            Manifest::parse(br#"{"rego_version":2}"#).unwrap_err(),
            ManifestError::RegoVersion(2)
        );
        assert!(matches!(
            Manifest::parse(br#"{"roots":["a//b"]}"#),
            Err(ManifestError::BadRoot(_))
        ));
        assert!(matches!(
            Manifest::parse(b"[]"),
            Err(ManifestError::Parse(_))
        ));
        assert_eq!(
            Manifest::parse(b"{}").unwrap().effective_roots(),
            vec![String::new()]
        );
    }

    #[test]
    fn written_manifest_has_sorted_keys() {
        let m = Manifest {
            revision: "git-3f2a9c1".into(),
            roots: Some(vec!["authz".into()]),
            rego_version: Some(1),
            metadata: None,
        };
        assert_eq!(
            m.to_bytes(),
            br#"{"rego_version":1,"revision":"git-3f2a9c1","roots":["authz"]}"#
        );
    }
}
