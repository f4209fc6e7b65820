//! Signing keys (Ed25519, RSA, ECDSA P-256/P-384/P-521) read from PEM, and the JWS signatures
//! they make.

use std::path::Path;

use ed25519_dalek::pkcs8::{
    spki::der::pem::LineEnding, DecodePrivateKey as _, EncodePrivateKey, EncodePublicKey,
};
use ed25519_dalek::Signer as _;
use ring::signature::{self as rs, KeyPair as _};

pub use crate::jws_keys::{Alg, PublicKey};

/// A public key that verifies bundle signatures.
pub type VerifyingKey = PublicKey;

/// Smallest RSA modulus accepted, in bits, for signing and verifying.
pub const MIN_RSA_BITS: usize = 2048;

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
    /// The PEM is not a supported key of the expected kind.
    #[error("{what}: not a usable {expected} PEM key: {message}")]
    Pem {
        /// Which key.
        what: String,
        /// "PKCS#8 private" or "public".
        expected: &'static str,
        /// Parser message.
        message: String,
    },
    /// The algorithm cannot be used with this key.
    #[error("{what}: algorithm {alg} cannot be used with a {key} key")]
    AlgorithmMismatch {
        /// Which key.
        what: String,
        /// Requested algorithm.
        alg: String,
        /// Key kind.
        key: String,
    },
}

/// A private key that signs bundles, with the JWS algorithm it signs with.
pub enum SigningKey {
    /// Ed25519 (`EdDSA`).
    Ed25519(Box<ed25519_dalek::SigningKey>),
    /// RSA (RS* or PS*).
    Rsa(Box<rs::RsaKeyPair>, Alg),
    /// ECDSA P-256 or P-384 (ES256, ES384).
    Ecdsa(Box<rs::EcdsaKeyPair>, Alg),
    /// ECDSA P-521 (ES512).
    P521(Box<p521::ecdsa::SigningKey>),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.alg())
    }
}

/// A JWS signature's bytes (ECDSA in fixed r||s form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature(Vec<u8>);

impl Signature {
    /// The signature bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.clone()
    }
}

fn pem_err(what: &str, expected: &'static str, message: impl Into<String>) -> KeyError {
    KeyError::Pem {
        what: what.to_string(),
        expected,
        message: message.into(),
    }
}

impl SigningKey {
    /// An Ed25519 key from its 32-byte seed.
    pub fn ed25519_from_bytes(seed: &[u8; 32]) -> SigningKey {
        SigningKey::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(seed)))
    }

    /// The JWS algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        match self {
            SigningKey::Ed25519(_) => Alg::EdDSA,
            SigningKey::Rsa(_, a) | SigningKey::Ecdsa(_, a) => *a,
            SigningKey::P521(_) => Alg::ES512,
        }
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            SigningKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key().to_bytes().to_vec()),
            SigningKey::Rsa(k, _) => {
                let c = rs::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                PublicKey::rsa(&c.n, &c.e)
            }
            SigningKey::Ecdsa(k, a) => PublicKey::Ec {
                curve: Some(if *a == Alg::ES384 {
                    crate::jws_keys::EcCurve::P384
                } else {
                    crate::jws_keys::EcCurve::P256
                }),
                point: k.public_key().as_ref().to_vec(),
            },
            SigningKey::P521(k) => PublicKey::P521(p521::ecdsa::VerifyingKey::from(k.as_ref())),
        }
    }

    /// The same key signing with `alg` instead; refused when `alg` does not fit the key (an EC
    /// key signs only with its curve's ES*, Ed25519 only with EdDSA).
    pub fn with_alg(self, alg: Alg, what: &str) -> Result<SigningKey, KeyError> {
        if !self.verifying_key().fits(alg) {
            return Err(KeyError::AlgorithmMismatch {
                what: what.to_string(),
                alg: alg.name().to_string(),
                key: self.verifying_key().describe(),
            });
        }
        Ok(match self {
            SigningKey::Rsa(k, _) => SigningKey::Rsa(k, alg),
            other => other,
        })
    }

    /// Signs `msg` (a JWS signing input).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        let rng = ring::rand::SystemRandom::new();
        Signature(match self {
            SigningKey::Ed25519(k) => k.sign(msg).to_bytes().to_vec(),
            SigningKey::Rsa(k, alg) => {
                let pad: &'static dyn rs::RsaEncoding = match alg {
                    Alg::RS384 => &rs::RSA_PKCS1_SHA384,
                    Alg::RS512 => &rs::RSA_PKCS1_SHA512,
                    Alg::PS256 => &rs::RSA_PSS_SHA256,
                    Alg::PS384 => &rs::RSA_PSS_SHA384,
                    Alg::PS512 => &rs::RSA_PSS_SHA512,
                    _ => &rs::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0; k.public().modulus_len()];
                // Fails only when the system RNG does, which leaves nothing sensible to sign with.
                if k.sign(pad, &rng, msg, &mut out).is_err() {
                    out.clear();
                }
                out
            }
            SigningKey::Ecdsa(k, _) => k
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            SigningKey::P521(k) => {
                use p521::ecdsa::signature::Signer as _;
                let s: p521::ecdsa::Signature = k.sign(msg);
                s.to_bytes().to_vec()
            }
        })
    }
}

/// Reads a private key in PEM: PKCS#8 (`PRIVATE KEY`: Ed25519, RSA, EC P-256/P-384/P-521, what
/// `openssl genpkey` writes) or PKCS#1 (`RSA PRIVATE KEY`). The algorithm is the key's default:
/// EdDSA, RS256, or the curve's ES*.
pub fn signing_key_from_pem(pem_text: &str, what: &str) -> Result<SigningKey, KeyError> {
    const EXPECTED: &str = "PKCS#8 private";
    let block = pem::parse(pem_text).map_err(|e| pem_err(what, EXPECTED, e.to_string()))?;
    let der = block.contents();
    let rng = ring::rand::SystemRandom::new();
    let rsa = |k: rs::RsaKeyPair| {
        if k.public().modulus_len() * 8 < MIN_RSA_BITS {
            return Err(pem_err(
                what,
                EXPECTED,
                format!(
                    "RSA key of {} bits is below the minimum of {MIN_RSA_BITS}",
                    k.public().modulus_len() * 8
                ),
            ));
        }
        Ok(SigningKey::Rsa(Box::new(k), Alg::RS256))
    };
    match block.tag() {
        "RSA PRIVATE KEY" => match rs::RsaKeyPair::from_der(der) {
            Ok(k) => rsa(k),
            Err(e) => Err(pem_err(what, EXPECTED, format!("bad RSA PRIVATE KEY: {e}"))),
        },
        "PRIVATE KEY" => {
            if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
                return Ok(SigningKey::Ed25519(Box::new(k)));
            }
            if let Ok(k) = rs::RsaKeyPair::from_pkcs8(der) {
                return rsa(k);
            }
            for (alg, a) in [
                (Alg::ES256, &rs::ECDSA_P256_SHA256_FIXED_SIGNING),
                (Alg::ES384, &rs::ECDSA_P384_SHA384_FIXED_SIGNING),
            ] {
                if let Ok(k) = rs::EcdsaKeyPair::from_pkcs8(a, der, &rng) {
                    return Ok(SigningKey::Ecdsa(Box::new(k), alg));
                }
            }
            let p521_key = <p521::SecretKey as p521::pkcs8::DecodePrivateKey>::from_pkcs8_der(der)
                .ok()
                .and_then(|k| p521::ecdsa::SigningKey::from_slice(&k.to_bytes()).ok());
            if let Some(k) = p521_key {
                return Ok(SigningKey::P521(Box::new(k)));
            }
            Err(pem_err(
                what,
                EXPECTED,
                "not an Ed25519, RSA (2048+ bits) or EC P-256/P-384/P-521 key",
            ))
        }
        tag => Err(pem_err(
            what,
            EXPECTED,
            format!("PEM block {tag:?} is not PRIVATE KEY or RSA PRIVATE KEY"),
        )),
    }
}

/// Reads a public key in PEM: SPKI (`PUBLIC KEY`: Ed25519, RSA, EC) or PKCS#1
/// (`RSA PUBLIC KEY`). Exactly one block; RSA keys under [`MIN_RSA_BITS`] are refused.
pub fn verifying_key_from_pem(pem_text: &str, what: &str) -> Result<VerifyingKey, KeyError> {
    const EXPECTED: &str = "public";
    let block = pem::parse(pem_text).map_err(|e| pem_err(what, EXPECTED, e.to_string()))?;
    if block.tag() == "CERTIFICATE" {
        return Err(pem_err(what, EXPECTED, "a certificate, not a public key"));
    }
    let key = PublicKey::from_pem_block(block.tag(), block.contents())
        .map_err(|e| pem_err(what, EXPECTED, e.0))?;
    if let Some(bits) = key.rsa_bits().filter(|b| *b < MIN_RSA_BITS) {
        return Err(pem_err(
            what,
            EXPECTED,
            format!("RSA key of {bits} bits is below the minimum of {MIN_RSA_BITS}"),
        ));
    }
    if matches!(key, PublicKey::Ec { curve: None, .. }) {
        return Err(pem_err(
            what,
            EXPECTED,
            "EC key on a curve other than P-256, P-384 or P-521",
        ));
    }
    Ok(key)
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

/// A freshly generated Ed25519 key pair as PEM strings: (PKCS#8 private, SPKI public).
pub fn generate_key_pem() -> (String, String) {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
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
