//! Verification keys for the JWT builtins and the signature checks made with them.
//!
//! Signatures are checked with `ring`: RSA PKCS#1 v1.5 and PSS, ECDSA on P-256 and P-384,
//! Ed25519 and HMAC. ring is constant-time where secrets are involved (HMAC tags are compared in
//! constant time, so a forger learns nothing from how long a rejection takes), is maintained with
//! the TLS stack we already ship, and verifies RSA far faster than a generic big-number library.
//! ES512 (P-521), which ring lacks, is checked with the `p521` crate.
//!
//! RSA keys must have a modulus of 2048 to 8192 bits (ring's `_2048_8192_` parameters); a smaller
//! key parses but verifies nothing.
//!
//! Accepted key material, in a `cert` string:
//! - PEM, one or more blocks: `PUBLIC KEY` (SPKI: RSA, EC or Ed25519), `RSA PUBLIC KEY`
//!   (PKCS#1) and `CERTIFICATE` (the certificate's SPKI is used; the certificate itself is not
//!   validated, as in OPA). Any other block is an error.
//! - A JWK or a JWKS (`{"keys": [...]}`): `kty` `RSA` (`n`, `e`), `EC` (`crv` `P-256`, `P-384` or
//!   `P-521`, with `x` and `y`), `OKP` (`x`, Ed25519) and `oct` (`k`, an HMAC secret). A JWK's
//!   `kid` selects it; its `alg`, when given, limits it to that algorithm. One unusable JWK makes
//!   the whole set an error.
//!
//! An HMAC secret given as `secret` (or as the key of `verify_hs*`) is used as its UTF-8 bytes.
//! A key is only ever used for its own family of algorithms, so an RSA public key can never be
//! taken as an HMAC secret.

use base64::Engine as _;
use p521::ecdsa::signature::Verifier as _;
use ring::signature::{self as sig, UnparsedPublicKey};
use x509_parser::oid_registry::{
    OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer as _;
use x509_parser::public_key::RSAPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::jwt::{JwtError, Token};

/// DER content octets of the secp521r1 curve OID, 1.3.132.0.35.
const OID_P521_DER: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// A JWS algorithm we can verify.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    pub(crate) fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "ES512" => Alg::ES512,
            "EdDSA" => Alg::EdDSA,
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
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

    pub(crate) fn is_hmac(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }
}

/// One key, parsed once into the form its verifier takes.
enum Material {
    /// RSA modulus and public exponent, big-endian without leading zero bytes (as ring wants).
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An EC public point (SEC1) for ES256 or ES384. The algorithm picks the curve, as it did
    /// before: a point that is not on that curve fails ring's checks and verifies nothing.
    Ec(Vec<u8>),
    /// A P-521 public key, for ES512.
    P521(p521::ecdsa::VerifyingKey),
    /// An Ed25519 public key.
    Ed25519(Vec<u8>),
    /// An HMAC secret.
    Hmac(Vec<u8>),
}

struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one: the key is then used with that algorithm only.
    alg: Option<String>,
    material: Material,
}

/// The keys one builtin call verifies against.
#[derive(Default)]
pub(crate) struct Keys(Vec<Key>);

impl Keys {
    /// An HMAC secret, used as its UTF-8 bytes (as OPA does).
    pub(crate) fn secret(secret: &str) -> Keys {
        Keys(vec![Key {
            kid: None,
            alg: None,
            material: Material::Hmac(secret.as_bytes().to_vec()),
        }])
    }

    /// PEM (`PUBLIC KEY`, `RSA PUBLIC KEY` or `CERTIFICATE` blocks, several allowed) or a JWK /
    /// JWKS JSON document.
    pub(crate) fn parse(s: &str) -> Result<Keys, JwtError> {
        let trimmed = s.trim_start();
        if trimmed.starts_with("-----BEGIN") {
            Self::from_pem(trimmed)
        } else {
            Self::from_jwks(trimmed)
        }
    }

    fn from_pem(s: &str) -> Result<Keys, JwtError> {
        let blocks = pem::parse_many(s).map_err(|e| JwtError::Key(format!("bad PEM: {e}")))?;
        let mut keys = Vec::new();
        for block in blocks {
            let der = block.contents();
            let material = match block.tag() {
                "PUBLIC KEY" => {
                    let (_, spki) = SubjectPublicKeyInfo::from_der(der)
                        .map_err(|e| JwtError::Key(format!("bad PUBLIC KEY: {e}")))?;
                    spki_material(&spki)?
                }
                "RSA PUBLIC KEY" => {
                    let (_, rsa) = RSAPublicKey::from_der(der)
                        .map_err(|e| JwtError::Key(format!("bad RSA PUBLIC KEY: {e}")))?;
                    rsa_material(rsa.modulus, rsa.exponent)
                }
                "CERTIFICATE" => {
                    let (_, cert) = x509_parser::parse_x509_certificate(der)
                        .map_err(|e| JwtError::Key(format!("bad CERTIFICATE: {e}")))?;
                    spki_material(cert.public_key())?
                }
                tag => {
                    return Err(JwtError::Key(format!(
                        "PEM block {tag:?} is not a supported public key or certificate"
                    )))
                }
            };
            keys.push(Key {
                kid: None,
                alg: None,
                material,
            });
        }
        if keys.is_empty() {
            return Err(JwtError::Key("no PEM blocks".into()));
        }
        Ok(Keys(keys))
    }

    fn from_jwks(s: &str) -> Result<Keys, JwtError> {
        let doc: serde_json::Value = serde_json::from_str(s)
            .map_err(|e| JwtError::Key(format!("neither PEM nor JWK/JWKS JSON: {e}")))?;
        let list: Vec<&serde_json::Value> = match doc.get("keys") {
            Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
            Some(_) => return Err(JwtError::Key("JWKS \"keys\" must be an array".into())),
            None => vec![&doc],
        };
        let keys = list
            .into_iter()
            .map(jwk_key)
            .collect::<Result<Vec<Key>, JwtError>>()?;
        if keys.is_empty() {
            return Err(JwtError::Key("JWKS has no keys".into()));
        }
        Ok(Keys(keys))
    }

    /// True when a key fitting `alg` verifies the token's signature. With a `kid`, keys carrying
    /// that kid are tried first and alone; when no key has it, every fitting key is tried.
    pub(crate) fn verify(&self, t: &Token<'_>, alg: Alg, kid: Option<&str>) -> bool {
        let by_kid = |k: &&Key| kid.is_some() && k.kid.as_deref() == kid;
        let any_by_kid = self.0.iter().any(|k| by_kid(&k));
        self.0
            .iter()
            .filter(|k| !any_by_kid || by_kid(k))
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg.name()))
            .any(|k| verify_signature(t, alg, &k.material))
    }
}

fn strip_leading_zeros(b: &[u8]) -> Vec<u8> {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b[start..].to_vec()
}

fn rsa_material(n: &[u8], e: &[u8]) -> Material {
    Material::Rsa {
        n: strip_leading_zeros(n),
        e: strip_leading_zeros(e),
    }
}

/// The key in a SubjectPublicKeyInfo (a `PUBLIC KEY` block or a certificate's).
fn spki_material(spki: &SubjectPublicKeyInfo<'_>) -> Result<Material, JwtError> {
    let oid = &spki.algorithm.algorithm;
    let bits: &[u8] = &spki.subject_public_key.data;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        let (_, rsa) = RSAPublicKey::from_der(bits)
            .map_err(|e| JwtError::Key(format!("bad RSA public key: {e}")))?;
        Ok(rsa_material(rsa.modulus, rsa.exponent))
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        if curve.is_some_and(|c| c.as_bytes() == OID_P521_DER) {
            Ok(Material::P521(
                p521::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                    .map_err(|e| JwtError::Key(format!("bad P-521 key: {e}")))?,
            ))
        } else {
            Ok(Material::Ec(bits.to_vec()))
        }
    } else if *oid == OID_SIG_ED25519 {
        Ok(Material::Ed25519(bits.to_vec()))
    } else {
        Err(JwtError::Key(format!(
            "public key algorithm {oid} is not supported"
        )))
    }
}

fn b64url_field(jwk: &serde_json::Value, name: &str) -> Result<Vec<u8>, JwtError> {
    let s = jwk
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| JwtError::Key(format!("JWK lacks string {name}")))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| JwtError::Key(format!("JWK {name} is not base64url: {e}")))
}

/// The JWK's optional parameters that hold strings must be strings (or null) when present.
fn optional_strings(jwk: &serde_json::Value) -> Result<(), JwtError> {
    use serde_json::Value as J;
    for name in ["kid", "alg", "use", "x5u", "x5t", "x5t#S256"] {
        if !matches!(jwk.get(name), None | Some(J::Null) | Some(J::String(_))) {
            return Err(JwtError::Key(format!("JWK {name} must be a string")));
        }
    }
    for name in ["key_ops", "x5c"] {
        match jwk.get(name) {
            None | Some(J::Null) => {}
            Some(J::Array(a)) if a.iter().all(J::is_string) => {}
            Some(_) => {
                return Err(JwtError::Key(format!(
                    "JWK {name} must be an array of strings"
                )))
            }
        }
    }
    Ok(())
}

/// One JWK: `RSA`, `EC` (P-256, P-384, P-521), `OKP` (Ed25519) or `oct`.
fn jwk_key(jwk: &serde_json::Value) -> Result<Key, JwtError> {
    if !jwk.is_object() {
        return Err(JwtError::Key("JWK must be an object".into()));
    }
    optional_strings(jwk)?;
    let str_field = |name: &str| jwk.get(name).and_then(|v| v.as_str());
    // The curve names JWKs of kty EC and OKP were accepted with; the algorithm then picks how a
    // key is used.
    let crv_ok = || {
        matches!(
            str_field("crv"),
            Some("P-256" | "P-384" | "P-521" | "Ed25519")
        )
    };
    let material = match str_field("kty") {
        Some("EC") if crv_ok() => {
            let (x, y) = (b64url_field(jwk, "x")?, b64url_field(jwk, "y")?);
            if str_field("crv") == Some("P-521") {
                if x.len() != 66 || y.len() != 66 {
                    return Err(JwtError::Key(
                        "P-521 JWK coordinates must be 66 bytes".into(),
                    ));
                }
                Material::P521(
                    p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1_point(&x, &y))
                        .map_err(|e| JwtError::Key(format!("bad P-521 JWK: {e}")))?,
                )
            } else {
                Material::Ec(sec1_point(&x, &y))
            }
        }
        Some("RSA") => {
            let (n, e) = (b64url_field(jwk, "n")?, b64url_field(jwk, "e")?);
            rsa_material(&n, &e)
        }
        Some("oct") => Material::Hmac(b64url_field(jwk, "k")?),
        Some("OKP") if crv_ok() => Material::Ed25519(b64url_field(jwk, "x")?),
        _ => return Err(JwtError::Key("unusable JWK: unsupported kty or crv".into())),
    };
    Ok(Key {
        kid: str_field("kid").map(str::to_string),
        alg: str_field("alg").map(str::to_string),
        material,
    })
}

fn sec1_point(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + x.len() + y.len());
    p.push(4);
    p.extend_from_slice(x);
    p.extend_from_slice(y);
    p
}

fn verify_signature(t: &Token<'_>, alg: Alg, key: &Material) -> bool {
    let msg = t.signing_input.as_bytes();
    let signature = t.signature.as_slice();
    let rsa = |params: &'static sig::RsaParameters, n: &[u8], e: &[u8]| {
        sig::RsaPublicKeyComponents { n, e }
            .verify(params, msg, signature)
            .is_ok()
    };
    let hmac = |a: ring::hmac::Algorithm, secret: &[u8]| {
        ring::hmac::verify(&ring::hmac::Key::new(a, secret), msg, signature).is_ok()
    };
    let public = |a: &'static dyn sig::VerificationAlgorithm, k: &[u8]| {
        UnparsedPublicKey::new(a, k).verify(msg, signature).is_ok()
    };
    match (alg, key) {
        (Alg::RS256, Material::Rsa { n, e }) => rsa(&sig::RSA_PKCS1_2048_8192_SHA256, n, e),
        (Alg::RS384, Material::Rsa { n, e }) => rsa(&sig::RSA_PKCS1_2048_8192_SHA384, n, e),
        (Alg::RS512, Material::Rsa { n, e }) => rsa(&sig::RSA_PKCS1_2048_8192_SHA512, n, e),
        (Alg::PS256, Material::Rsa { n, e }) => rsa(&sig::RSA_PSS_2048_8192_SHA256, n, e),
        (Alg::PS384, Material::Rsa { n, e }) => rsa(&sig::RSA_PSS_2048_8192_SHA384, n, e),
        (Alg::PS512, Material::Rsa { n, e }) => rsa(&sig::RSA_PSS_2048_8192_SHA512, n, e),
        (Alg::ES256, Material::Ec(point)) => public(&sig::ECDSA_P256_SHA256_FIXED, point),
        (Alg::ES384, Material::Ec(point)) => public(&sig::ECDSA_P384_SHA384_FIXED, point),
        (Alg::ES512, Material::P521(k)) => match p521::ecdsa::Signature::from_slice(signature) {
            Ok(s) => k.verify(msg, &s).is_ok(),
            Err(_) => false,
        },
        (Alg::EdDSA, Material::Ed25519(k)) => public(&sig::ED25519, k),
        (Alg::HS256, Material::Hmac(s)) => hmac(ring::hmac::HMAC_SHA256, s),
        (Alg::HS384, Material::Hmac(s)) => hmac(ring::hmac::HMAC_SHA384, s),
        (Alg::HS512, Material::Hmac(s)) => hmac(ring::hmac::HMAC_SHA512, s),
        _ => false,
    }
}
