//! `.signatures.json` in OPA's format: a JWS over the files' digests, signed with Ed25519
//! (`EdDSA`), RSA (`RS*`, `PS*`) or ECDSA (`ES256`/`ES384`/`ES512`); and its verification.
//!
//! Unlike OPA (issue #8531), verification always needs a signature while trusting several keys at once,
//! chosen by the token's `kid`, so keys can be rotated without turning signatures off.

mod keys;
mod verify;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::bundle::{file_kind, Bundle, FileKind, SIGNATURES_FILE};
use crate::canonical;

pub use keys::{
    generate_key_pem, read_signing_key, read_verifying_key, signing_key_from_pem,
    verifying_key_from_pem, Alg, KeyError, PublicKey, Signature, SigningKey, VerifyingKey,
    MIN_RSA_BITS,
};
pub(crate) use verify::SignatureCheck;
pub use verify::{
    check_not_rollback, verify, Keyring, RollbackError, VerifiedSignature, VerifyError,
    VerifyOptions, MAX_SIGNATURES_BYTES,
};

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
    /// The file's length in bytes, as archived: a Regent addition to OPA's format (OPA ignores
    /// unknown payload fields). With it a verifier refuses a replaced file of another length at its
    /// tar header, before reading it, so a tampered file costs no memory; without it (OPA-signed
    /// bundles) the file is read, within the unpack limits, before its digest refuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Payload {
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
pub(crate) struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SignaturesFile {
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
/// one JWS (`alg` the key's, header `kid`) whose payload lists the files, `iat`, `iss`, `scope` and the
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
            size: Some(bytes.len() as u64),
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
        alg: key.alg().name().into(),
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
