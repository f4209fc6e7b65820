//! JWS algorithms and public keys, shared by bundle signature verification and the policy
//! engine's JWT builtins.
//!
//! Signatures are checked with `ring` (RSA PKCS#1 v1.5 and PSS, ECDSA P-256/P-384, Ed25519): it
//! is maintained with the TLS stack we already ship and verifies RSA far faster than a generic
//! big-number library. ES512 (P-521), which ring lacks, is checked with the `p521` crate. ECDSA
//! signatures are JWS's fixed-width r||s form, not DER.
//!
//! RSA keys verify only with a modulus of 2048 to 8192 bits (ring's `_2048_8192_` parameters).

use p521::ecdsa::signature::Verifier as _;
use ring::signature::{self as sig, UnparsedPublicKey};
use x509_parser::oid_registry::{
    OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// DER content octets of the curve OIDs: secp256r1 (1.2.840.10045.3.1.7), secp384r1
/// (1.3.132.0.34), secp521r1 (1.3.132.0.35).
const OID_P256_DER: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384_DER: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521_DER: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// A JWS algorithm we know. HMAC is here for the JWT builtins; bundle signatures refuse it.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// ECDSA P-521 with SHA-512.
    ES512,
    /// Ed25519.
    EdDSA,
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
}

impl Alg {
    /// Every algorithm, in a fixed order.
    pub const ALL: [Alg; 13] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::ES512,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];

    /// The algorithm with this JWS `alg` name (case-sensitive, as in JWS).
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::ES512 => "ES512",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    /// True for the HMAC algorithms (shared secrets, not public keys).
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A named elliptic curve that ring verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcCurve {
    /// secp256r1, for ES256.
    P256,
    /// secp384r1, for ES384.
    P384,
}

/// A public key, parsed once into the form its verifier takes.
#[derive(Clone)]
pub enum PublicKey {
    /// RSA modulus and public exponent, big-endian without leading zero bytes (as ring wants).
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// An EC public point (SEC1) for ES256 or ES384. With no known curve the algorithm picks it,
    /// and a point not on that curve verifies nothing.
    Ec {
        /// Curve, when the key says which.
        curve: Option<EcCurve>,
        /// SEC1 point.
        point: Vec<u8>,
    },
    /// A P-521 public key, for ES512.
    P521(p521::ecdsa::VerifyingKey),
    /// An Ed25519 public key (32 bytes).
    Ed25519(Vec<u8>),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.describe())
    }
}

/// Why key material could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyParseError(pub String);

fn bad(m: impl Into<String>) -> KeyParseError {
    KeyParseError(m.into())
}

fn strip_leading_zeros(b: &[u8]) -> Vec<u8> {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b[start..].to_vec()
}

impl PublicKey {
    /// An RSA key from its modulus and exponent (big-endian, leading zeros allowed).
    pub fn rsa(n: &[u8], e: &[u8]) -> PublicKey {
        PublicKey::Rsa {
            n: strip_leading_zeros(n),
            e: strip_leading_zeros(e),
        }
    }

    /// A P-521 key from its SEC1 point.
    pub fn p521(sec1: &[u8]) -> Result<PublicKey, KeyParseError> {
        p521::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
            .map(PublicKey::P521)
            .map_err(|e| bad(format!("bad P-521 key: {e}")))
    }

    /// The keys of every block of a PEM text: `PUBLIC KEY` (SPKI: RSA, EC or Ed25519),
    /// `RSA PUBLIC KEY` (PKCS#1) and `CERTIFICATE` (its SPKI; the certificate itself is not
    /// validated). Any other block is an error.
    pub fn from_pem_blocks(text: &str) -> Result<Vec<PublicKey>, KeyParseError> {
        let blocks = pem::parse_many(text).map_err(|e| bad(format!("bad PEM: {e}")))?;
        if blocks.is_empty() {
            return Err(bad("no PEM blocks"));
        }
        blocks
            .iter()
            .map(|b| PublicKey::from_pem_block(b.tag(), b.contents()))
            .collect()
    }

    /// The key of one PEM block, given its tag and DER contents.
    pub fn from_pem_block(tag: &str, der: &[u8]) -> Result<PublicKey, KeyParseError> {
        match tag {
            "PUBLIC KEY" => {
                let (_, spki) = SubjectPublicKeyInfo::from_der(der)
                    .map_err(|e| bad(format!("bad PUBLIC KEY: {e}")))?;
                PublicKey::from_spki(&spki)
            }
            "RSA PUBLIC KEY" => {
                let (_, rsa) = RSAPublicKey::from_der(der)
                    .map_err(|e| bad(format!("bad RSA PUBLIC KEY: {e}")))?;
                Ok(PublicKey::rsa(rsa.modulus, rsa.exponent))
            }
            "CERTIFICATE" => {
                let (_, cert) = x509_parser::parse_x509_certificate(der)
                    .map_err(|e| bad(format!("bad CERTIFICATE: {e}")))?;
                PublicKey::from_spki(cert.public_key())
            }
            tag => Err(bad(format!(
                "PEM block {tag:?} is not a supported public key or certificate"
            ))),
        }
    }

    /// The key in a SubjectPublicKeyInfo.
    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, KeyParseError> {
        let oid = &spki.algorithm.algorithm;
        let bits: &[u8] = &spki.subject_public_key.data;
        if *oid == OID_PKCS1_RSAENCRYPTION {
            let (_, rsa) = RSAPublicKey::from_der(bits)
                .map_err(|e| bad(format!("bad RSA public key: {e}")))?;
            Ok(PublicKey::rsa(rsa.modulus, rsa.exponent))
        } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            let curve = curve.as_ref().map(|c| c.as_bytes());
            match curve {
                Some(OID_P521_DER) => PublicKey::p521(bits),
                Some(OID_P256_DER) => Ok(PublicKey::Ec {
                    curve: Some(EcCurve::P256),
                    point: bits.to_vec(),
                }),
                Some(OID_P384_DER) => Ok(PublicKey::Ec {
                    curve: Some(EcCurve::P384),
                    point: bits.to_vec(),
                }),
                _ => Ok(PublicKey::Ec {
                    curve: None,
                    point: bits.to_vec(),
                }),
            }
        } else if *oid == OID_SIG_ED25519 {
            Ok(PublicKey::Ed25519(bits.to_vec()))
        } else {
            Err(bad(format!("public key algorithm {oid} is not supported")))
        }
    }

    /// What kind of key this is, for messages: `RSA-2048`, `EC P-256`, `Ed25519`...
    pub fn describe(&self) -> String {
        match self {
            PublicKey::Rsa { .. } => format!("RSA-{}", self.rsa_bits().unwrap_or(0)),
            PublicKey::Ec {
                curve: Some(EcCurve::P256),
                ..
            } => "EC P-256".into(),
            PublicKey::Ec {
                curve: Some(EcCurve::P384),
                ..
            } => "EC P-384".into(),
            PublicKey::Ec { curve: None, .. } => "EC (unknown curve)".into(),
            PublicKey::P521(_) => "EC P-521".into(),
            PublicKey::Ed25519(_) => "Ed25519".into(),
        }
    }

    /// Modulus size of an RSA key in bits.
    pub fn rsa_bits(&self) -> Option<usize> {
        match self {
            PublicKey::Rsa { n, .. } => Some(match n.first() {
                Some(&top) => (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
                None => 0,
            }),
            _ => None,
        }
    }

    /// True when this key can verify signatures made with `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        use Alg::*;
        match self {
            PublicKey::Rsa { .. } => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            PublicKey::Ec { curve, .. } => match curve {
                Some(EcCurve::P256) => alg == ES256,
                Some(EcCurve::P384) => alg == ES384,
                None => matches!(alg, ES256 | ES384),
            },
            PublicKey::P521(_) => alg == ES512,
            PublicKey::Ed25519(_) => alg == EdDSA,
        }
    }

    /// The algorithm a signer with this key uses unless told otherwise (OPA's defaults: RS256
    /// for RSA, the curve's ES* for EC).
    pub fn default_alg(&self) -> Alg {
        match self {
            PublicKey::Rsa { .. } => Alg::RS256,
            PublicKey::Ec {
                curve: Some(EcCurve::P384),
                ..
            } => Alg::ES384,
            PublicKey::Ec { .. } => Alg::ES256,
            PublicKey::P521(_) => Alg::ES512,
            PublicKey::Ed25519(_) => Alg::EdDSA,
        }
    }

    /// True when `signature` is a valid `alg` signature of `msg` by this key. A key that does not
    /// fit `alg` (HMAC included) verifies nothing.
    pub fn verify(&self, alg: Alg, msg: &[u8], signature: &[u8]) -> bool {
        if !self.fits(alg) {
            return false;
        }
        let rsa = |params: &'static sig::RsaParameters, n: &[u8], e: &[u8]| {
            sig::RsaPublicKeyComponents { n, e }
                .verify(params, msg, signature)
                .is_ok()
        };
        let public = |a: &'static dyn sig::VerificationAlgorithm, k: &[u8]| {
            UnparsedPublicKey::new(a, k).verify(msg, signature).is_ok()
        };
        match (alg, self) {
            (Alg::RS256, PublicKey::Rsa { n, e }) => rsa(&sig::RSA_PKCS1_2048_8192_SHA256, n, e),
            (Alg::RS384, PublicKey::Rsa { n, e }) => rsa(&sig::RSA_PKCS1_2048_8192_SHA384, n, e),
            (Alg::RS512, PublicKey::Rsa { n, e }) => rsa(&sig::RSA_PKCS1_2048_8192_SHA512, n, e),
            (Alg::PS256, PublicKey::Rsa { n, e }) => rsa(&sig::RSA_PSS_2048_8192_SHA256, n, e),
            (Alg::PS384, PublicKey::Rsa { n, e }) => rsa(&sig::RSA_PSS_2048_8192_SHA384, n, e),
            (Alg::PS512, PublicKey::Rsa { n, e }) => rsa(&sig::RSA_PSS_2048_8192_SHA512, n, e),
            (Alg::ES256, PublicKey::Ec { point, .. }) => {
                public(&sig::ECDSA_P256_SHA256_FIXED, point)
            }
            (Alg::ES384, PublicKey::Ec { point, .. }) => {
                public(&sig::ECDSA_P384_SHA384_FIXED, point)
            }
            (Alg::ES512, PublicKey::P521(k)) => match p521::ecdsa::Signature::from_slice(signature)
            {
                Ok(s) => k.verify(msg, &s).is_ok(),
                Err(_) => false,
            },
            (Alg::EdDSA, PublicKey::Ed25519(k)) => public(&sig::ED25519, k),
            _ => false,
        }
    }
}
