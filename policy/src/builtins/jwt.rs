//! `io.jwt.decode`, `io.jwt.decode_verify` and `io.jwt.verify_*` with OPA's semantics.
//!
//! - A malformed token (not three base64url sections, header or payload not a JSON object, bad
//!   signature encoding) is a builtin error in every function. OPA's `verify_*` and
//!   `decode_verify` do not look at the payload before the signature checks out; we always do,
//!   so a malformed token is an error whichever function sees it.
//! - `verify_*` check the signature with the named algorithm whatever the header says.
//! - `decode_verify` returns `[false, {}, {}]` unless: the header's `alg` is a supported algorithm
//!   (`none` and unknown algorithms never verify), it equals the `alg` constraint when one is
//!   given, a key verifies the signature, `exp` is in the future and `nbf` is not (at `time`, ns,
//!   default now), `iss` equals the `iss` constraint when given, and the audience rule holds:
//!   a token with `aud` needs an `aud` constraint naming one of them, and an `aud` constraint
//!   needs a token with `aud`.
//! - Nested tokens (`cty: JWT`) are not unwrapped.
//! - The keys come from exactly one of `cert` (PEM, JWK or JWKS), `secret` (HMAC) and Regent's
//!   `jwks_issuer` (a remote key set the sidecar keeps current, see `keysets`). With
//!   `jwks_issuer`, a token whose `kid` is not in the set is an error (undefined) that asks for a
//!   refresh, and a missing `iss` constraint defaults to the issuer.
//!
//! Signatures are checked with ring (constant-time, see `jwt_keys`). Parsed key sets and
//! signature outcomes are cached per thread on the exact token and key strings (see
//! `jwt_cache`); the time, issuer, audience and algorithm constraints are checked on every call.

use std::sync::Arc;

use base64::Engine as _;
use regorus::Value;

use super::jwt_cache::{self, Check, KeySet, KeyUse, Outcome};
use super::jwt_keys::Alg;
use super::keysets;

use super::{now_ns, string_arg, Builtin};

macro_rules! verify_builtin {
    ($name:literal, $alg:expr) => {
        Builtin {
            name: $name,
            arity: 2,
            call: |args| {
                let token = string_arg(&args[0], $name, "jwt")?;
                let key = string_arg(&args[1], $name, "certificate")?;
                Ok(Value::Bool(verify(token, key, $alg)?))
            },
        }
    };
}

/// `io.jwt.decode`, `io.jwt.decode_verify` and `io.jwt.verify_<alg>` for every algorithm.
pub(crate) static BUILTINS: [Builtin; 15] = [
    Builtin {
        name: "io.jwt.decode",
        arity: 1,
        call: |args| Ok(decode(string_arg(&args[0], "io.jwt.decode", "jwt")?)?),
    },
    Builtin {
        name: "io.jwt.decode_verify",
        arity: 2,
        call: |args| {
            let token = string_arg(&args[0], "io.jwt.decode_verify", "jwt")?;
            Ok(decode_verify(token, &args[1], now_ns())?)
        },
    },
    verify_builtin!("io.jwt.verify_rs256", Alg::RS256),
    verify_builtin!("io.jwt.verify_rs384", Alg::RS384),
    verify_builtin!("io.jwt.verify_rs512", Alg::RS512),
    verify_builtin!("io.jwt.verify_ps256", Alg::PS256),
    verify_builtin!("io.jwt.verify_ps384", Alg::PS384),
    verify_builtin!("io.jwt.verify_ps512", Alg::PS512),
    verify_builtin!("io.jwt.verify_es256", Alg::ES256),
    verify_builtin!("io.jwt.verify_es384", Alg::ES384),
    verify_builtin!("io.jwt.verify_es512", Alg::ES512),
    verify_builtin!("io.jwt.verify_eddsa", Alg::EdDSA),
    verify_builtin!("io.jwt.verify_hs256", Alg::HS256),
    verify_builtin!("io.jwt.verify_hs384", Alg::HS384),
    verify_builtin!("io.jwt.verify_hs512", Alg::HS512),
];

/// A JWT builtin was called with something it cannot work with (an error in Rego, not `false`).
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The token is not `header.payload.signature` in base64url with JSON header and payload.
    #[error("malformed JWT: {0}")]
    Malformed(String),
    /// The key argument is neither PEM nor a JWK/JWKS.
    #[error("invalid key: {0}")]
    Key(String),
    /// The `decode_verify` constraints object is ill-formed.
    #[error("invalid token constraints: {0}")]
    Constraints(String),
    /// A claim that must be a number (`exp`, `nbf`) is not.
    #[error("{0} value must be a number")]
    ClaimType(&'static str),
}

pub(crate) struct Token<'a> {
    pub(crate) signing_input: &'a str,
    pub(crate) header: Value,
    pub(crate) payload: Value,
    pub(crate) signature: Vec<u8>,
}

fn b64url(s: &str, what: &str) -> Result<Vec<u8>, JwtError> {
    // Padding is not part of JWS encoding, but OPA tolerates it.
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| JwtError::Malformed(format!("{what} is not base64url: {e}")))
}

fn json_object(bytes: &[u8], what: &str) -> Result<Value, JwtError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| JwtError::Malformed(format!("{what} is not UTF-8")))?;
    let v = Value::from_json_str(text)
        .map_err(|e| JwtError::Malformed(format!("{what} is not JSON: {e}")))?;
    match v {
        Value::Object(_) => Ok(v),
        _ => Err(JwtError::Malformed(format!("{what} is not a JSON object"))),
    }
}

pub(crate) fn parse(token: &str) -> Result<Token<'_>, JwtError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return Err(JwtError::Malformed(format!(
            "expected 3 dot-separated sections, found {}",
            parts.len()
        )));
    };
    let header = json_object(&b64url(h, "header")?, "header")?;
    let payload = json_object(&b64url(p, "payload")?, "payload")?;
    let signature = b64url(s, "signature")?;
    Ok(Token {
        signing_input: &token[..h.len() + 1 + p.len()],
        header,
        payload,
        signature,
    })
}

/// `io.jwt.decode(token)` -> `[header, payload, signature_hex]`, no verification.
pub(crate) fn decode(token: &str) -> Result<Value, JwtError> {
    let t = parse(token)?;
    Ok(Value::from(vec![
        t.header,
        t.payload,
        Value::from(hex::encode(&t.signature)),
    ]))
}

/// `io.jwt.verify_<alg>(token, key)`: does any key verify the signature with `alg`?
pub(crate) fn verify(token: &str, key: &str, alg: Alg) -> Result<bool, JwtError> {
    let usage = if alg.is_hmac() {
        KeyUse::Secret
    } else {
        KeyUse::Cert
    };
    let keys = jwt_cache::key_set(usage, key)?;
    let outcome = jwt_cache::outcome(token, &keys, Check::Alg(alg), || {
        let t = parse(token)?;
        Ok(Outcome::bare(keys.keys.verify(&t, alg, None)))
    })?;
    Ok(outcome.verified)
}

struct Constraints {
    keys: Arc<KeySet>,
    /// Set with `jwks_issuer`: the remote key set `keys` came from.
    remote: Option<keysets::Current>,
    alg: Option<String>,
    iss: Option<String>,
    aud: Option<String>,
    time_ns: f64,
}

fn constraints(v: &Value, now_ns: i128) -> Result<Constraints, JwtError> {
    let Value::Object(obj) = v else {
        return Err(JwtError::Constraints("must be an object".into()));
    };
    let mut cert = None;
    let mut secret = None;
    let mut jwks_issuer = None;
    let (mut alg, mut iss, mut aud) = (None, None, None);
    let mut time_ns = now_ns as f64;
    for (k, val) in obj.iter() {
        let key = match k {
            Value::String(s) => s.as_ref(),
            _ => return Err(JwtError::Constraints("keys must be strings".into())),
        };
        let as_str = |what: &str| match val {
            Value::String(s) => Ok(s.to_string()),
            _ => Err(JwtError::Constraints(format!("{what} must be a string"))),
        };
        match key {
            "cert" => cert = Some(as_str("cert")?),
            "secret" => secret = Some(as_str("secret")?),
            "jwks_issuer" => jwks_issuer = Some(as_str("jwks_issuer")?),
            "alg" => alg = Some(as_str("alg")?),
            "iss" => iss = Some(as_str("iss")?),
            "aud" => aud = Some(as_str("aud")?),
            "time" => {
                time_ns = match val {
                    // `time.now_ns()` is an integer above 2^53, which regorus's `as_f64` refuses.
                    Value::Number(n) => n
                        .as_f64()
                        .or_else(|| n.as_i128().map(|i| i as f64))
                        .ok_or_else(|| JwtError::Constraints("time is out of range".into()))?,
                    _ => return Err(JwtError::Constraints("time must be a number".into())),
                }
            }
            other => {
                return Err(JwtError::Constraints(format!(
                    "unknown token validation constraint: {other}"
                )))
            }
        }
    }
    let (keys, remote) = match (cert, secret, jwks_issuer) {
        (Some(cert), None, None) => (jwt_cache::key_set(KeyUse::Cert, &cert)?, None),
        (None, Some(secret), None) => (jwt_cache::key_set(KeyUse::Secret, &secret)?, None),
        (None, None, Some(issuer)) => {
            let current = keysets::current(&issuer)?;
            // A token verified with an issuer's keys claims that issuer unless the policy says
            // which `iss` it wants (a provider whose tokens name several issuers).
            if iss.is_none() {
                iss = Some(issuer);
            }
            (current.keys.set.clone(), Some(current))
        }
        (None, None, None) => {
            return Err(JwtError::Constraints(
                "give one of cert, secret or jwks_issuer".into(),
            ))
        }
        _ => {
            return Err(JwtError::Constraints(
                "give only one of cert, secret and jwks_issuer".into(),
            ))
        }
    };
    Ok(Constraints {
        keys,
        remote,
        alg,
        iss,
        aud,
        time_ns,
    })
}

/// `io.jwt.decode_verify(token, constraints)` -> `[valid, header, payload]`.
pub(crate) fn decode_verify(
    token: &str,
    constraints_v: &Value,
    now_ns: i128,
) -> Result<Value, JwtError> {
    let c = constraints(constraints_v, now_ns)?;
    let keys = &c.keys;
    let unverified = || {
        Value::from(vec![
            Value::Bool(false),
            Value::new_object(),
            Value::new_object(),
        ])
    };
    // The signature check depends on the token and the keys only: cached. `none` and unknown
    // algorithms never verify.
    let outcome = jwt_cache::outcome(token, keys, Check::Header, || {
        let t = parse(token)?;
        let Some(alg) = t.header["alg"]
            .as_string()
            .ok()
            .and_then(|a| Alg::from_name(a))
        else {
            return Ok(Outcome::bare(false));
        };
        let kid = t.header["kid"].as_string().ok().map(|s| s.to_string());
        if let (Some(remote), Some(kid)) = (&c.remote, &kid) {
            if !keys.keys.has_kid(kid) {
                // Perhaps a key the provider has just rotated in: ask for a refresh. An error,
                // so not cached: the next call after the refresh checks again.
                remote.want_refresh();
                return Err(JwtError::Key(format!(
                    "kid {kid:?} is not in the remote key set"
                )));
            }
        }
        if !keys.keys.verify(&t, alg, kid.as_deref()) {
            return Ok(Outcome::bare(false));
        }
        Ok(Outcome {
            verified: true,
            header: t.header,
            payload: t.payload,
        })
    })?;
    if !outcome.verified {
        return Ok(unverified());
    }
    // Everything below is checked on every call.
    let header = &outcome.header;
    if let Some(pinned) = &c.alg {
        if header["alg"].as_string().ok().map(|s| s.as_ref()) != Some(pinned.as_str()) {
            return Ok(unverified());
        }
    }
    let payload = &outcome.payload;
    let now_s = c.time_ns / 1e9;
    match &payload["exp"] {
        Value::Undefined => {}
        Value::Number(n) => {
            if now_s >= n.as_f64().unwrap_or(f64::NEG_INFINITY) {
                return Ok(unverified());
            }
        }
        _ => return Err(JwtError::ClaimType("exp")),
    }
    match &payload["nbf"] {
        Value::Undefined => {}
        Value::Number(n) => {
            if now_s < n.as_f64().unwrap_or(f64::INFINITY) {
                return Ok(unverified());
            }
        }
        _ => return Err(JwtError::ClaimType("nbf")),
    }
    if let Some(iss) = &c.iss {
        if payload["iss"].as_string().ok().map(|s| s.as_ref()) != Some(iss.as_str()) {
            return Ok(unverified());
        }
    }
    let aud_ok = match (&payload["aud"], &c.aud) {
        (Value::Undefined, None) => true,
        (Value::Undefined, Some(_)) => false,
        (_, None) => false,
        (Value::String(s), Some(want)) => s.as_ref() == want,
        (Value::Array(a), Some(want)) => a
            .iter()
            .any(|x| matches!(x, Value::String(s) if s.as_ref() == want)),
        (_, Some(_)) => false,
    };
    if !aud_ok {
        return Ok(unverified());
    }
    Ok(Value::from(vec![
        Value::Bool(true),
        header.clone(),
        payload.clone(),
    ]))
}
