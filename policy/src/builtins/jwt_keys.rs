//! Verification keys for the JWT builtins (PEM public keys and certificates, JWK and JWKS,
//! HMAC secrets) and signature checks. jsonwebtoken does the checks except for ES512, which it
//! lacks; that one is done with the `p521` crate.

use jsonwebtoken::{crypto, jwk::Jwk, Algorithm, DecodingKey};
use p521::ecdsa::signature::Verifier as _;
use p521::pkcs8::DecodePublicKey as _;

use super::jwt::{JwtError, Token};

/// A JWS algorithm we can verify.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// jsonwebtoken's algorithm, for everything but ES512.
    fn jwt_algorithm(self) -> Option<Algorithm> {
        Some(match self {
            Alg::RS256 => Algorithm::RS256,
            Alg::RS384 => Algorithm::RS384,
            Alg::RS512 => Algorithm::RS512,
            Alg::PS256 => Algorithm::PS256,
            Alg::PS384 => Algorithm::PS384,
            Alg::PS512 => Algorithm::PS512,
            Alg::ES256 => Algorithm::ES256,
            Alg::ES384 => Algorithm::ES384,
            Alg::EdDSA => Algorithm::EdDSA,
            Alg::HS256 => Algorithm::HS256,
            Alg::HS384 => Algorithm::HS384,
            Alg::HS512 => Algorithm::HS512,
            Alg::ES512 => return None,
        })
    }
}

enum Material {
    Jwt(DecodingKey),
    P521(p521::ecdsa::VerifyingKey),
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
            material: Material::Jwt(DecodingKey::from_secret(secret.as_bytes())),
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
            let one = pem::encode(&block);
            let bytes = one.as_bytes();
            let mut push = |material| {
                keys.push(Key {
                    kid: None,
                    alg: None,
                    material,
                })
            };
            if let Ok(k) = DecodingKey::from_rsa_pem(bytes) {
                push(Material::Jwt(k));
            } else if let Ok(k) = DecodingKey::from_ed_pem(bytes) {
                push(Material::Jwt(k));
            } else if let Ok(k) = p521::PublicKey::from_public_key_pem(&one) {
                push(Material::P521(
                    p521::ecdsa::VerifyingKey::from_affine(*k.as_affine())
                        .map_err(|e| JwtError::Key(format!("bad P-521 key: {e}")))?,
                ));
            } else if let Ok(k) = DecodingKey::from_ec_pem(bytes) {
                push(Material::Jwt(k));
            } else {
                return Err(JwtError::Key(format!(
                    "PEM block {:?} is not a supported public key or certificate",
                    block.tag()
                )));
            }
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
        let mut keys = Vec::new();
        for jwk in list {
            let kid = jwk.get("kid").and_then(|v| v.as_str()).map(str::to_string);
            let alg = jwk.get("alg").and_then(|v| v.as_str()).map(str::to_string);
            let material = if jwk.get("kty").and_then(|v| v.as_str()) == Some("EC")
                && jwk.get("crv").and_then(|v| v.as_str()) == Some("P-521")
            {
                Material::P521(p521_from_jwk(jwk)?)
            } else {
                let parsed: Jwk = serde_json::from_value(jwk.clone())
                    .map_err(|e| JwtError::Key(format!("bad JWK: {e}")))?;
                Material::Jwt(
                    DecodingKey::from_jwk(&parsed)
                        .map_err(|e| JwtError::Key(format!("unusable JWK: {e}")))?,
                )
            };
            keys.push(Key { kid, alg, material });
        }
        if keys.is_empty() {
            return Err(JwtError::Key("JWKS has no keys".into()));
        }
        Ok(Keys(keys))
    }

    /// True when a key fitting `alg` verifies the token's signature. With a `kid`, keys carrying
    /// that kid are tried first and alone; when no key has it, every fitting key is tried.
    pub(crate) fn verify(&self, t: &Token<'_>, alg: Alg, kid: Option<&str>) -> bool {
        let by_kid: Vec<&Key> = match kid {
            Some(kid) => self
                .0
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&Key> = if by_kid.is_empty() {
            self.0.iter().collect()
        } else {
            by_kid
        };
        candidates
            .into_iter()
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == alg.name()))
            .any(|k| verify_signature(t, alg, &k.material))
    }
}

fn p521_from_jwk(jwk: &serde_json::Value) -> Result<p521::ecdsa::VerifyingKey, JwtError> {
    let coord = |name: &str| -> Result<Vec<u8>, JwtError> {
        let s = jwk
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| JwtError::Key(format!("P-521 JWK lacks {name}")))?;
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| JwtError::Key(format!("P-521 JWK {name} is not base64url: {e}")))
    };
    let (x, y) = (coord("x")?, coord("y")?);
    if x.len() != 66 || y.len() != 66 {
        return Err(JwtError::Key(
            "P-521 JWK coordinates must be 66 bytes".into(),
        ));
    }
    let mut sec1 = Vec::with_capacity(133);
    sec1.push(4);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|e| JwtError::Key(format!("bad P-521 JWK: {e}")))
}

fn verify_signature(t: &Token<'_>, alg: Alg, key: &Material) -> bool {
    match (alg.jwt_algorithm(), key) {
        (Some(a), Material::Jwt(k)) => {
            if !a.family().eq(&k.family()) {
                return false;
            }
            crypto::verify(
                t.signature_b64.trim_end_matches('='),
                t.signing_input.as_bytes(),
                k,
                a,
            )
            .unwrap_or(false)
        }
        (None, Material::P521(k)) => match p521::ecdsa::Signature::from_slice(&t.signature) {
            Ok(sig) => k.verify(t.signing_input.as_bytes(), &sig).is_ok(),
            Err(_) => false,
        },
        _ => false,
    }
}
