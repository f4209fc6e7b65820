//! `.signatures.json` in OPA's format, signed with Ed25519 (JWS `alg: EdDSA`), and its verification.
//!
//! Unlike OPA (issue #8531), verification always needs a signature while trusting several keys at once,
//! chosen by the token's `kid`, so keys can be rotated without turning signatures off.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{
    spki::der::pem::LineEnding, DecodePrivateKey, DecodePublicKey, EncodePrivateKey,
    EncodePublicKey,
};
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::bundle::{file_kind, Bundle, FileKind, SIGNATURES_FILE};
use crate::canonical;

pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// Key loading and generation failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading a key file failed.
    #[error("reading key {path}: {source}")]
    Io {
        /// Key file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The PEM is not an Ed25519 key of the expected kind.
    #[error("{what}: not an Ed25519 {expected} PEM key: {message}")]
    Pem {
        /// Which key.
        what: String,
        /// "PKCS#8 private" or "SPKI public".
        expected: &'static str,
        /// Parser message.
        message: String,
    },
}

/// Reads an Ed25519 private key in PKCS#8 PEM (what `openssl genpkey -algorithm ed25519` writes).
pub fn signing_key_from_pem(pem: &str, what: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::Pem {
        what: what.to_string(),
        expected: "PKCS#8 private",
        message: e.to_string(),
    })
}

/// Reads an Ed25519 public key in SPKI PEM (`openssl pkey -pubout`).
pub fn verifying_key_from_pem(pem: &str, what: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::Pem {
        what: what.to_string(),
        expected: "SPKI public",
        message: e.to_string(),
    })
}

/// Reads a private key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = read(path)?;
    signing_key_from_pem(&pem, &path.display().to_string())
}

/// Reads a public key file.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let pem = read(path)?;
    verifying_key_from_pem(&pem, &path.display().to_string())
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// A freshly generated key pair as PEM strings: (PKCS#8 private, SPKI public).
pub fn generate_key_pem() -> (String, String) {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    // Encoding a valid in-memory key cannot fail.
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map(|p| p.to_string())
        .unwrap_or_default();
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap_or_default();
    (private, public)
}

/// Optional claims put in the signature payload.
#[derive(Debug, Clone, Default)]
pub struct SignClaims {
    /// `iss`.
    pub iss: Option<String>,
    /// `scope` (verifiers configured with a scope require it to match exactly).
    pub scope: Option<String>,
    /// `iat` in Unix seconds; now when `None`.
    pub iat: Option<i64>,
}

/// One entry of the payload's `files`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileHash {
    /// Path without leading `/`.
    pub name: String,
    /// Lowercase hex digest.
    pub hash: String,
    /// `SHA-256` (also accepted on verify: `SHA-384`, `SHA-512`).
    pub algorithm: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    files: Vec<FileHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    /// Deprecated OPA key selector, read only as a fallback for `kid`.
    #[serde(default, skip_serializing)]
    keyid: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SignaturesFile {
    #[serde(default)]
    signatures: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plugin: Option<String>,
}

/// Failure while hashing or signing.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A structured file cannot be canonicalised (it is not valid JSON/YAML).
    #[error("{file}: cannot hash structured file: {message}")]
    Unhashable {
        /// File.
        file: String,
        /// Why.
        message: String,
    },
}

/// Digest of a bundle file the way OPA computes it: structured files (`.manifest`, `data.json`,
/// `data.yaml`) over their canonical JSON, everything else (`data.yml` included) over raw bytes.
pub fn file_digest(path: &str, bytes: &[u8], algorithm: &str) -> Result<Option<String>, SignError> {
    let unhashable = |message: String| SignError::Unhashable {
        file: path.to_string(),
        message,
    };
    let base = path.rsplit('/').next().unwrap_or(path);
    let canonical_bytes;
    let input: &[u8] = match file_kind(path) {
        FileKind::Manifest | FileKind::DataJson => {
            canonical_bytes =
                canonical::canonicalize_json(bytes).map_err(|e| unhashable(e.to_string()))?;
            &canonical_bytes
        }
        FileKind::DataYaml if base == "data.yaml" => {
            let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            let v = crate::yaml::to_json(bytes).map_err(unhashable)?;
            canonical_bytes = canonical::to_canonical_bytes(&canonical::from_serde(&v));
            &canonical_bytes
        }
        _ => bytes,
    };
    Ok(match algorithm {
        "SHA-256" => Some(hex::encode(sha2::Sha256::digest(input))),
        "SHA-384" => Some(hex::encode(sha2::Sha384::digest(input))),
        "SHA-512" => Some(hex::encode(sha2::Sha512::digest(input))),
        _ => None,
    })
}

/// Signs a bundle: hashes every file except `.signatures.json` and writes a `.signatures.json` holding
/// one JWS (`alg: EdDSA`, header `kid`) whose payload lists the files, `iat`, `iss`, `scope` and the
/// manifest `revision`.
pub fn sign(
    bundle: &mut Bundle,
    key: &SigningKey,
    kid: &str,
    claims: &SignClaims,
) -> Result<(), SignError> {
    let mut files = Vec::new();
    for (name, bytes) in bundle.files() {
        if name == SIGNATURES_FILE {
            continue;
        }
        let hash = file_digest(name, bytes, "SHA-256")?.unwrap_or_default();
        files.push(FileHash {
            name: name.to_string(),
            hash,
            algorithm: "SHA-256".into(),
        });
    }
    let revision = bundle.revision();
    let payload = Payload {
        files,
        iat: Some(claims.iat.unwrap_or_else(now_secs)),
        iss: claims.iss.clone(),
        scope: claims.scope.clone(),
        revision: (!revision.is_empty()).then(|| revision.to_string()),
        keyid: None,
    };
    let header = Header {
        alg: "EdDSA".into(),
        kid: Some(kid.to_string()),
        typ: Some("JWT".into()),
    };
    // Serialising these plain structs cannot fail.
    let signing_input = format!(
        "{}.{}",
        B64.encode(serde_json::to_vec(&header).unwrap_or_default()),
        B64.encode(serde_json::to_vec(&payload).unwrap_or_default())
    );
    let sig = key.sign(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", B64.encode(sig.to_bytes()));
    let file = SignaturesFile {
        signatures: vec![token],
        plugin: None,
    };
    bundle.set_file(
        SIGNATURES_FILE,
        serde_json::to_vec(&file).unwrap_or_default(),
    );
    Ok(())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Trusted public keys by `kid`.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, VerifyingKey>,
}

impl Keyring {
    /// An empty keyring (verifies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the key for `kid`.
    pub fn insert(&mut self, kid: impl Into<String>, key: VerifyingKey) {
        self.keys.insert(kid.into(), key);
    }

    /// Adds a key from SPKI PEM text.
    pub fn insert_pem(&mut self, kid: &str, pem: &str) -> Result<(), KeyError> {
        let key = verifying_key_from_pem(pem, &format!("key {kid:?}"))?;
        self.insert(kid, key);
        Ok(())
    }

    /// Adds a key from a PEM file.
    pub fn insert_file(&mut self, kid: &str, path: &Path) -> Result<(), KeyError> {
        let key = read_verifying_key(path)?;
        self.insert(kid, key);
        Ok(())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted key ids.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

/// Verification settings.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Required `scope`: the token's scope must equal it exactly; `None` requires a token without scope
    /// (OPA's rule).
    pub scope: Option<String>,
}

/// What a valid signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// Key that signed.
    pub kid: String,
    /// Signed issue time (Unix seconds), when present.
    pub iat: Option<i64>,
    /// Signed revision, when present (always equal to the manifest revision).
    pub revision: Option<String>,
    /// Signed issuer.
    pub iss: Option<String>,
    /// Signed scope.
    pub scope: Option<String>,
}

/// Why a bundle's signature was refused. Each case names the file or claim at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `.signatures.json` in the bundle.
    #[error("bundle has no .signatures.json (signatures are mandatory)")]
    MissingSignatures,
    /// `.signatures.json` is not valid JSON of the expected shape.
    #[error(".signatures.json: {0}")]
    BadSignaturesFile(String),
    /// Not exactly one token.
    #[error(".signatures.json: expected exactly one signature token, found {0}")]
    TokenCount(usize),
    /// The token is not a well-formed JWS compact token.
    #[error(".signatures.json: malformed token: {0}")]
    MalformedToken(String),
    /// The JWS `alg` is not EdDSA (`none`, HS*, RS*... are refused).
    #[error(".signatures.json: algorithm {0:?} is not allowed (only EdDSA)")]
    AlgorithmNotAllowed(String),
    /// No `kid` in the header (nor the deprecated `keyid` claim).
    #[error(".signatures.json: token names no key (no `kid`)")]
    MissingKid,
    /// The `kid` is not in the keyring.
    #[error(".signatures.json: unknown key id {0:?}")]
    UnknownKid(String),
    /// The Ed25519 signature does not verify.
    #[error(".signatures.json: signature does not verify with key {0:?}")]
    BadSignature(String),
    /// `scope` differs from the configured one.
    #[error(".signatures.json: scope {found:?} does not match the required scope {expected:?}")]
    WrongScope {
        /// Configured.
        expected: Option<String>,
        /// In the token.
        found: Option<String>,
    },
    /// A file in the bundle is not listed in the signature.
    #[error("{0}: file is not included in the bundle signature")]
    FileNotSigned(String),
    /// Files listed in the signature are missing from the bundle.
    #[error("files listed in the signature are missing from the bundle: {0:?}")]
    SignedFilesMissing(Vec<String>),
    /// A file's digest differs from the signed one.
    #[error("{file}: digest mismatch (want {want}, got {got})")]
    DigestMismatch {
        /// File.
        file: String,
        /// Signed digest.
        want: String,
        /// Computed digest.
        got: String,
    },
    /// A listed hash algorithm is not supported.
    #[error("{file}: unsupported hash algorithm {algorithm:?}")]
    UnsupportedHashAlgorithm {
        /// File.
        file: String,
        /// Algorithm named in the signature.
        algorithm: String,
    },
    /// A structured file could not be parsed for hashing.
    #[error("{file}: cannot hash structured file: {message}")]
    Unhashable {
        /// File.
        file: String,
        /// Why.
        message: String,
    },
    /// The signed `revision` differs from the manifest's.
    #[error("signed revision {signed:?} differs from the manifest revision {manifest:?}")]
    RevisionMismatch {
        /// Claim.
        signed: String,
        /// Manifest.
        manifest: String,
    },
}

/// Largest `.signatures.json` read: one token listing [`crate::UnpackLimits::max_entries`] files
/// is a few megabytes; anything larger is refused before it is parsed.
pub const MAX_SIGNATURES_BYTES: usize = 16 << 20;

/// Verifies a bundle's `.signatures.json` against the keyring and every file's digest.
///
/// For an untrusted archive prefer [`Bundle::from_verified_tar_gz`], which does the same checks
/// before anything in the bundle is parsed.
pub fn verify(
    bundle: &Bundle,
    keyring: &Keyring,
    opts: &VerifyOptions,
) -> Result<VerifiedSignature, VerifyError> {
    let raw = bundle
        .file(SIGNATURES_FILE)
        .ok_or(VerifyError::MissingSignatures)?;
    let mut check = SignatureCheck::new(raw, keyring, opts)?;
    for (name, bytes) in bundle.files() {
        if name == SIGNATURES_FILE {
            continue;
        }
        check.check_file(name, bytes, bundle.precomputed_sha256(name))?;
    }
    check.finish(bundle.revision())
}

/// A verified token, checking the bundle's files one at a time against what it lists: the
/// signature and claims are checked when it is made, from `.signatures.json` alone, so callers
/// can refuse unlisted or altered files before reading them further.
pub(crate) struct SignatureCheck {
    signature: VerifiedSignature,
    /// Listed files not yet checked, by name without leading `/`.
    listed: BTreeMap<String, FileHash>,
}

impl SignatureCheck {
    /// Parses `.signatures.json` and verifies its token against the keyring and the scope.
    pub(crate) fn new(
        raw: &[u8],
        keyring: &Keyring,
        opts: &VerifyOptions,
    ) -> Result<SignatureCheck, VerifyError> {
        if raw.len() > MAX_SIGNATURES_BYTES {
            return Err(VerifyError::BadSignaturesFile(format!(
                "{} bytes, over the limit of {MAX_SIGNATURES_BYTES}",
                raw.len()
            )));
        }
        let file: SignaturesFile = serde_json::from_slice(raw)
            .map_err(|e| VerifyError::BadSignaturesFile(e.to_string()))?;
        if file.signatures.len() != 1 {
            return Err(VerifyError::TokenCount(file.signatures.len()));
        }
        let token = &file.signatures[0];
        let malformed = |m: &str| VerifyError::MalformedToken(m.to_string());
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("expected three dot-separated parts"));
        };
        let header: Header = B64
            .decode(h64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| malformed("header is not base64url JSON with `alg`"))?;
        if header.alg != "EdDSA" {
            return Err(VerifyError::AlgorithmNotAllowed(header.alg));
        }
        let payload_bytes = B64
            .decode(p64)
            .map_err(|_| malformed("payload is not base64url"))?;
        let payload: Payload = serde_json::from_slice(&payload_bytes)
            .map_err(|e| VerifyError::MalformedToken(format!("payload: {e}")))?;
        let kid = header
            .kid
            .clone()
            .or_else(|| payload.keyid.clone())
            .filter(|k| !k.is_empty())
            .ok_or(VerifyError::MissingKid)?;
        let key = keyring
            .keys
            .get(&kid)
            .ok_or_else(|| VerifyError::UnknownKid(kid.clone()))?;
        let sig_bytes = B64
            .decode(s64)
            .map_err(|_| malformed("signature is not base64url"))?;
        let sig = ed25519_dalek::Signature::from_slice(&sig_bytes)
            .map_err(|_| malformed("signature is not 64 bytes"))?;
        let signing_input = &token[..h64.len() + 1 + p64.len()];
        key.verify(signing_input.as_bytes(), &sig)
            .map_err(|_| VerifyError::BadSignature(kid.clone()))?;

        let scope = payload.scope.clone().filter(|s| !s.is_empty());
        let expected = opts.scope.clone().filter(|s| !s.is_empty());
        if scope != expected {
            return Err(VerifyError::WrongScope {
                expected,
                found: scope,
            });
        }
        let mut listed = BTreeMap::new();
        for f in payload.files {
            let name = f.name.strip_prefix('/').unwrap_or(&f.name).to_string();
            listed.insert(name, f);
        }
        Ok(SignatureCheck {
            signature: VerifiedSignature {
                kid,
                iat: payload.iat,
                revision: payload.revision,
                iss: payload.iss,
                scope,
            },
            listed,
        })
    }

    /// Whether the token lists `name` (and it was not checked yet).
    pub(crate) fn lists(&self, name: &str) -> bool {
        self.listed.contains_key(name)
    }

    /// Checks one file (not `.signatures.json`) against its listed digest: refused when unlisted
    /// (before anything else), or when the digest differs. `precomputed`: the file's SHA-256 if
    /// already known. Returns the file's SHA-256 when that is the listed algorithm.
    pub(crate) fn check_file(
        &mut self,
        name: &str,
        bytes: &[u8],
        precomputed: Option<&str>,
    ) -> Result<Option<String>, VerifyError> {
        let entry = self
            .listed
            .remove(name)
            .ok_or_else(|| VerifyError::FileNotSigned(name.to_string()))?;
        let sha256 = entry.algorithm == "SHA-256";
        let got = match precomputed.filter(|_| sha256) {
            Some(d) => Some(d.to_string()),
            None => file_digest(name, bytes, &entry.algorithm).map_err(
                |SignError::Unhashable { file, message }| VerifyError::Unhashable { file, message },
            )?,
        }
        .ok_or_else(|| VerifyError::UnsupportedHashAlgorithm {
            file: name.to_string(),
            algorithm: entry.algorithm.clone(),
        })?;
        if !got.eq_ignore_ascii_case(&entry.hash) {
            return Err(VerifyError::DigestMismatch {
                file: name.to_string(),
                want: entry.hash,
                got,
            });
        }
        Ok(sha256.then_some(got))
    }

    /// After every file was checked: refuses listed files that were missing, and a signed
    /// revision other than the manifest's.
    pub(crate) fn finish(self, manifest_revision: &str) -> Result<VerifiedSignature, VerifyError> {
        if !self.listed.is_empty() {
            return Err(VerifyError::SignedFilesMissing(
                self.listed.into_keys().collect(),
            ));
        }
        if let Some(signed) = &self.signature.revision {
            if signed != manifest_revision {
                return Err(VerifyError::RevisionMismatch {
                    signed: signed.clone(),
                    manifest: manifest_revision.to_string(),
                });
            }
        }
        Ok(self.signature)
    }
}

/// A candidate bundle that is older than the one in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rollback refused: candidate revision {candidate_revision:?} was signed at {candidate_iat:?}, before the active revision {active_revision:?} signed at {active_iat:?}")]
pub struct RollbackError {
    /// Active bundle's revision.
    pub active_revision: Option<String>,
    /// Active bundle's signed iat.
    pub active_iat: Option<i64>,
    /// Candidate's revision.
    pub candidate_revision: Option<String>,
    /// Candidate's signed iat.
    pub candidate_iat: Option<i64>,
}

/// Refuses a candidate signed before the active bundle (replay of an old, validly signed bundle).
/// Equal `iat`s are accepted: two commits can be signed within one second. A candidate without `iat`
/// is refused when the active bundle has one, since its age cannot be shown.
pub fn check_not_rollback(
    active: &VerifiedSignature,
    candidate: &VerifiedSignature,
) -> Result<(), RollbackError> {
    let older = match (active.iat, candidate.iat) {
        (Some(a), Some(c)) => c < a,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if older {
        return Err(RollbackError {
            active_revision: active.revision.clone(),
            active_iat: active.iat,
            candidate_revision: candidate.revision.clone(),
            candidate_iat: candidate.iat,
        });
    }
    Ok(())
}
