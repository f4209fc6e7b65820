//! Verification keys for the JWT builtins and the signature checks made with them.
//!
//! Public keys (PEM parsing, RSA/ECDSA/Ed25519 verification with `ring`, ES512 with `p521`) are
//! `regent_bundle::jws_keys`, shared with bundle signature verification; HMAC, which only the
//! JWT builtins take, is here. ring compares HMAC tags in constant time, so a forger learns
//! nothing from how long a rejection takes.
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
pub(crate) use regent_bundle::jws_keys::Alg;
use regent_bundle::jws_keys::{EcCurve, PublicKey};

use super::jwt::{JwtError, Token};

/// One key: a public key (parsing and verification shared with bundle signatures) or an HMAC
/// secret, which only the JWT builtins take.
enum Material {
    Public(PublicKey),
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
        let keys = PublicKey::from_pem_blocks(s)
            .map_err(|e| JwtError::Key(e.0))?
            .into_iter()
            .map(|k| Key {
                kid: None,
                alg: None,
                material: Material::Public(k),
            })
            .collect();
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

    /// The keys of a JWKS fetched from an identity provider (`keysets`), parsed leniently: an
    /// unusable key is skipped (and described in `skipped`) instead of failing the whole set, so
    /// one odd key a provider adds does not lock every token out. Stricter than a `cert` string
    /// in what it takes: public signing keys only (no `oct`: a published HMAC secret would let
    /// anyone sign), `use` absent or `sig`, `alg` absent or an asymmetric JWS algorithm, and
    /// key sizes that can verify something (RSA 2048 to 8192 bits, exact EC and Ed25519
    /// coordinate lengths). A set with no usable key is an error.
    pub(crate) fn from_remote_jwks(
        doc: &serde_json::Value,
        max_keys: usize,
    ) -> Result<RemoteParse, JwtError> {
        let Some(serde_json::Value::Array(list)) = doc.get("keys") else {
            return Err(JwtError::Key("not a JWKS: no \"keys\" array".into()));
        };
        if list.len() > max_keys {
            return Err(JwtError::Key(format!(
                "JWKS has {} keys, more than the {max_keys} accepted",
                list.len()
            )));
        }
        let mut parsed = RemoteParse::default();
        for (i, jwk) in list.iter().enumerate() {
            let kid = jwk.get("kid").and_then(|v| v.as_str()).unwrap_or("");
            let outcome = match remote_jwk_problem(jwk) {
                Some(problem) => Err(problem),
                None => jwk_key(jwk),
            };
            match outcome {
                Ok(key) => {
                    parsed.keys.0.push(key);
                    parsed.usable.push(jwk.clone());
                }
                Err(problem) => parsed
                    .skipped
                    .push(format!("key {i} (kid {kid:?}): {problem}")),
            }
        }
        if parsed.keys.0.is_empty() {
            return Err(JwtError::Key(format!(
                "JWKS has no usable key ({} skipped: {})",
                parsed.skipped.len(),
                parsed.skipped.join("; ")
            )));
        }
        Ok(parsed)
    }

    /// Whether a key carries `kid`.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.0.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
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

/// What [`Keys::from_remote_jwks`] kept and skipped.
#[derive(Default)]
pub(crate) struct RemoteParse {
    pub(crate) keys: Keys,
    /// The JWKs kept, as they came.
    pub(crate) usable: Vec<serde_json::Value>,
    /// One line per skipped key: its position, kid and why.
    pub(crate) skipped: Vec<String>,
}

/// Why a JWK of a remote set cannot be used, beyond what [`jwk_key`] refuses; `None` if fine.
fn remote_jwk_problem(jwk: &serde_json::Value) -> Option<JwtError> {
    let problem = |m: String| Some(JwtError::Key(m));
    let str_field = |name: &str| jwk.get(name).and_then(|v| v.as_str());
    // Missing or non-base64url fields return None here: jwk_key refuses them with its reason.
    let len = |name: &str| {
        str_field(name).and_then(|s| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .ok()
        })
    };
    if let Some(u) = str_field("use") {
        if u != "sig" {
            return problem(format!("use {u:?} is not \"sig\""));
        }
    }
    if let Some(a) = str_field("alg") {
        if Alg::from_name(a).is_none_or(|a| a.is_hmac()) {
            return problem(format!("alg {a:?} is not an asymmetric JWS algorithm"));
        }
    }
    match (str_field("kty"), str_field("crv")) {
        (Some("RSA"), _) => {
            let n = len("n")?;
            let bits = 8 * n.iter().skip_while(|b| **b == 0).count();
            if !(2048..=8192).contains(&bits) {
                return problem(format!(
                    "RSA modulus of {bits} bits (2048 to 8192 accepted)"
                ));
            }
            None
        }
        (Some("EC"), Some(crv @ ("P-256" | "P-384" | "P-521"))) => {
            let want = match crv {
                "P-256" => 32,
                "P-384" => 48,
                _ => 66,
            };
            let (x, y) = (len("x")?, len("y")?);
            if x.len() != want || y.len() != want {
                return problem(format!("{crv} coordinates must be {want} bytes"));
            }
            None
        }
        (Some("OKP"), Some("Ed25519")) => match len("x") {
            Some(x) if x.len() != 32 => problem("Ed25519 key must be 32 bytes".into()),
            _ => None,
        },
        (Some("oct"), _) => problem("symmetric (oct) keys are not taken from a remote set".into()),
        (kty, crv) => problem(format!("unsupported kty {kty:?} / crv {crv:?}")),
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
                Material::Public(
                    PublicKey::p521(&sec1_point(&x, &y))
                        .map_err(|e| JwtError::Key(format!("bad P-521 JWK: {}", e.0)))?,
                )
            } else {
                let curve = match str_field("crv") {
                    Some("P-256") => Some(EcCurve::P256),
                    Some("P-384") => Some(EcCurve::P384),
                    _ => None,
                };
                Material::Public(PublicKey::Ec {
                    curve,
                    point: sec1_point(&x, &y),
                })
            }
        }
        Some("RSA") => {
            let (n, e) = (b64url_field(jwk, "n")?, b64url_field(jwk, "e")?);
            Material::Public(PublicKey::rsa(&n, &e))
        }
        Some("oct") => Material::Hmac(b64url_field(jwk, "k")?),
        Some("OKP") if crv_ok() => Material::Public(PublicKey::Ed25519(b64url_field(jwk, "x")?)),
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
    let hmac = |a: ring::hmac::Algorithm, secret: &[u8]| {
        ring::hmac::verify(&ring::hmac::Key::new(a, secret), msg, signature).is_ok()
    };
    match (alg, key) {
        (Alg::HS256, Material::Hmac(s)) => hmac(ring::hmac::HMAC_SHA256, s),
        (Alg::HS384, Material::Hmac(s)) => hmac(ring::hmac::HMAC_SHA384, s),
        (Alg::HS512, Material::Hmac(s)) => hmac(ring::hmac::HMAC_SHA512, s),
        (_, Material::Public(k)) => k.verify(alg, msg, signature),
        _ => false,
    }
}
