//! The keyring and the checks of `.signatures.json` against it.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;

use super::keys::{
    read_verifying_key, verifying_key_from_pem, Alg, KeyError, VerifyingKey, MIN_RSA_BITS,
};
use super::{file_digest, FileHash, Header, Payload, SignError, SignaturesFile};
use crate::bundle::{Bundle, SIGNATURES_FILE};

/// Trusted public keys by `kid`.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    key: VerifyingKey,
    /// When set, the only `alg` accepted for this key.
    alg: Option<Alg>,
}

impl Keyring {
    /// An empty keyring (verifies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the key for `kid`, accepting any algorithm of the key's type.
    pub fn insert(&mut self, kid: impl Into<String>, key: VerifyingKey) {
        self.keys.insert(kid.into(), Entry { key, alg: None });
    }

    /// Adds or replaces the key for `kid`, accepting only `alg` when given. Refused when `alg`
    /// does not fit the key or is HMAC.
    pub fn insert_with_alg(
        &mut self,
        kid: &str,
        key: VerifyingKey,
        alg: Option<Alg>,
    ) -> Result<(), KeyError> {
        if let Some(a) = alg {
            if a.is_hmac() || !key.fits(a) {
                return Err(KeyError::AlgorithmMismatch {
                    what: format!("key {kid:?}"),
                    alg: a.name().to_string(),
                    key: key.describe(),
                });
            }
        }
        self.keys.insert(kid.to_string(), Entry { key, alg });
        Ok(())
    }

    /// Adds a key from PEM text (SPKI, or PKCS#1 for RSA).
    pub fn insert_pem(&mut self, kid: &str, pem: &str) -> Result<(), KeyError> {
        self.insert_pem_with_alg(kid, pem, None)
    }

    /// [`Keyring::insert_pem`] with an optional pinned algorithm.
    pub fn insert_pem_with_alg(
        &mut self,
        kid: &str,
        pem: &str,
        alg: Option<Alg>,
    ) -> Result<(), KeyError> {
        let key = verifying_key_from_pem(pem, &format!("key {kid:?}"))?;
        self.insert_with_alg(kid, key, alg)
    }

    /// Adds a key from a PEM file.
    pub fn insert_file(&mut self, kid: &str, path: &Path) -> Result<(), KeyError> {
        self.insert_file_with_alg(kid, path, None)
    }

    /// [`Keyring::insert_file`] with an optional pinned algorithm.
    pub fn insert_file_with_alg(
        &mut self,
        kid: &str,
        path: &Path,
        alg: Option<Alg>,
    ) -> Result<(), KeyError> {
        let key = read_verifying_key(path)?;
        self.insert_with_alg(kid, key, alg)
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
    /// The JWS `alg` is never accepted for bundles (`none`, HS*, unknown names).
    #[error(".signatures.json: algorithm {0:?} is not allowed for bundle signatures (RS*, PS*, ES256/384/512 or EdDSA)")]
    AlgorithmNotAllowed(String),
    /// The token's `alg` does not fit the key its `kid` names (or the key's pinned algorithm).
    #[error(".signatures.json: key {kid:?} ({key}) cannot verify algorithm {alg}")]
    AlgorithmMismatch {
        /// Key id.
        kid: String,
        /// The token's `alg`.
        alg: String,
        /// The key's type, and its pinned algorithm if any.
        key: String,
    },
    /// The RSA key is too small to be trusted.
    #[error(
        ".signatures.json: key {kid:?} is RSA-{bits}, below the minimum of {MIN_RSA_BITS} bits"
    )]
    WeakKey {
        /// Key id.
        kid: String,
        /// Modulus size.
        bits: usize,
    },
    /// No `kid` in the header (nor the deprecated `keyid` claim).
    #[error(".signatures.json: token names no key (no `kid`)")]
    MissingKid,
    /// The `kid` is not in the keyring.
    #[error(".signatures.json: unknown key id {0:?}")]
    UnknownKid(String),
    /// The signature does not verify.
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
    /// A file's length differs from the signed one (seen at its tar header, before it is read).
    #[error("{file}: {found} bytes, but the signature lists {signed}")]
    SizeMismatch {
        /// File.
        file: String,
        /// Signed length.
        signed: u64,
        /// Length in the archive.
        found: u64,
    },
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
        let alg = Alg::from_name(&header.alg)
            .filter(|a| !a.is_hmac())
            .ok_or_else(|| VerifyError::AlgorithmNotAllowed(header.alg.clone()))?;
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
        let entry = keyring
            .keys
            .get(&kid)
            .ok_or_else(|| VerifyError::UnknownKid(kid.clone()))?;
        if entry.alg.is_some_and(|pinned| pinned != alg) || !entry.key.fits(alg) {
            let mut key = entry.key.describe();
            if let Some(pinned) = entry.alg {
                key = format!("{key}, pinned to {pinned}");
            }
            return Err(VerifyError::AlgorithmMismatch {
                kid,
                alg: alg.name().to_string(),
                key,
            });
        }
        if let Some(bits) = entry.key.rsa_bits().filter(|b| *b < MIN_RSA_BITS) {
            return Err(VerifyError::WeakKey { kid, bits });
        }
        let sig_bytes = B64
            .decode(s64)
            .map_err(|_| malformed("signature is not base64url"))?;
        let signing_input = &token[..h64.len() + 1 + p64.len()];
        if !entry.key.verify(alg, signing_input.as_bytes(), &sig_bytes) {
            return Err(VerifyError::BadSignature(kid));
        }

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

    /// Whether an entry of `size` bytes named `name` may be read: refused when the token does not
    /// list it (or it was checked already), or lists another length for it.
    pub(crate) fn admit(&self, name: &str, size: u64) -> Result<(), VerifyError> {
        let entry = self
            .listed
            .get(name)
            .ok_or_else(|| VerifyError::FileNotSigned(name.to_string()))?;
        match entry.size {
            Some(signed) if signed != size => Err(VerifyError::SizeMismatch {
                file: name.to_string(),
                signed,
                found: size,
            }),
            _ => Ok(()),
        }
    }

    /// Checks one file (not `.signatures.json`) against its listed length and digest: refused when
    /// unlisted (before anything else), or when either differs. `precomputed`: the file's SHA-256 if
    /// already known. Returns the file's SHA-256 when that is the listed algorithm.
    pub(crate) fn check_file(
        &mut self,
        name: &str,
        bytes: &[u8],
        precomputed: Option<&str>,
    ) -> Result<Option<String>, VerifyError> {
        self.admit(name, bytes.len() as u64)?;
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
