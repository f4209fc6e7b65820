//! `io.jwt.encode_sign` and `io.jwt.encode_sign_raw` with OPA's semantics.
//!
//! - `encode_sign(headers, payload, key)` takes Rego values. Headers and payload are serialized
//!   the way OPA's Go JSON encoder does it, so HMAC, RSA PKCS#1 and EdDSA tokens are
//!   byte-identical to OPA's: object keys sorted, no whitespace, `<`, `>`, `&`, U+2028 and U+2029
//!   escaped as `\u....`, sets as arrays. `key` is a JWK (or a JWKS, of which the first key is
//!   used), as an object.
//! - `encode_sign_raw(headers, payload, key)` takes the three as JSON text and signs the header
//!   and payload text exactly as given.
//! - The algorithm is the header's `alg`: `HS256/384/512` need an `oct` JWK (`k`);
//!   `RS256/384/512` and `PS256/384/512` an RSA private JWK with `n, e, d, p, q, dp, dq, qi`
//!   (2048 to 4096 bit moduli, ring's limits; a JWK without the CRT parameters is refused);
//!   `ES256`/`ES384`/`ES512` an EC private JWK on P-256/P-384/P-521 (`d, x, y`); `EdDSA` an
//!   Ed25519 `OKP` JWK (`d`, and `x` when given is checked against it).
//! - A header without a string `alg`, an unknown algorithm (`none` included), a key that does
//!   not fit the algorithm, or a header whose `typ` is absent or `JWT` with a payload that is
//!   not JSON is an error (the call is undefined), as in OPA.
//! - Signatures are compact JWS: base64url without padding; ECDSA signatures are `r || s`.

use base64::Engine as _;
use regorus::Value;
use ring::signature::{self, KeyPair as _};

use super::jwt_keys::Alg;
use super::{string_arg, Builtin};

/// `io.jwt.encode_sign` and `io.jwt.encode_sign_raw`.
pub(crate) static BUILTINS: [Builtin; 2] = [
    Builtin {
        name: "io.jwt.encode_sign",
        arity: 3,
        call: |args| {
            let headers = go_json(&args[0])?;
            let payload = go_json(&args[1])?;
            let key = go_json(&args[2])?;
            Ok(Value::from(encode_sign(&headers, &payload, &key)?))
        },
    },
    Builtin {
        name: "io.jwt.encode_sign_raw",
        arity: 3,
        call: |args| {
            let headers = string_arg(&args[0], "io.jwt.encode_sign_raw", "headers")?;
            let payload = string_arg(&args[1], "io.jwt.encode_sign_raw", "payload")?;
            let key = string_arg(&args[2], "io.jwt.encode_sign_raw", "key")?;
            Ok(Value::from(encode_sign(headers, payload, key)?))
        },
    },
];

/// Signs `headers`.`payload` (JSON text) with the first key of the JWK or JWKS `key`.
pub(crate) fn encode_sign(headers: &str, payload: &str, key: &str) -> anyhow::Result<String> {
    let header: serde_json::Value =
        serde_json::from_str(headers).map_err(|e| anyhow::anyhow!("headers are not JSON: {e}"))?;
    let alg = header
        .get("alg")
        .and_then(|a| a.as_str())
        .ok_or_else(|| anyhow::anyhow!("missing or invalid 'alg' header"))?;
    let alg = Alg::from_name(alg).ok_or_else(|| anyhow::anyhow!("unknown JWS algorithm: {alg}"))?;
    let typ = header.get("typ").and_then(|t| t.as_str());
    if typ.is_none_or(|t| t == "JWT") && serde_json::from_str::<serde_json::Value>(payload).is_err()
    {
        anyhow::bail!("type is JWT but payload is not JSON");
    }
    let jwk = first_key(key)?;

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!("{}.{}", b64.encode(headers), b64.encode(payload));
    let signature = sign(alg, &jwk, signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64.encode(signature)))
}

/// The JWK itself, or the first key of a JWKS.
fn first_key(key: &str) -> anyhow::Result<serde_json::Value> {
    let doc: serde_json::Value =
        serde_json::from_str(key).map_err(|e| anyhow::anyhow!("key is not a JWK: {e}"))?;
    let jwk = match doc.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no keys found in JWK set"))?,
        Some(_) => anyhow::bail!("JWK set \"keys\" must be an array"),
        None => doc,
    };
    if !jwk.is_object() {
        anyhow::bail!("a JWK must be an object");
    }
    Ok(jwk)
}

/// A base64url member of a JWK (padding tolerated).
fn member(jwk: &serde_json::Value, name: &str) -> anyhow::Result<Vec<u8>> {
    let s = jwk
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| anyhow::anyhow!("JWK lacks {name:?}"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|e| anyhow::anyhow!("JWK {name:?} is not base64url: {e}"))
}

fn kty<'a>(jwk: &'a serde_json::Value, want: &str) -> anyhow::Result<&'a serde_json::Value> {
    match jwk.get("kty").and_then(|v| v.as_str()) {
        Some(k) if k == want => Ok(jwk),
        Some(k) => anyhow::bail!("key type {k:?} cannot sign this algorithm (needs {want:?})"),
        None => anyhow::bail!("JWK lacks \"kty\""),
    }
}

/// `bytes` without leading zero bytes (ring wants minimal big-endian integers).
fn unsigned(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// `bytes` left-padded with zeros to `len` (EC coordinates and scalars are fixed width).
fn fixed(bytes: Vec<u8>, len: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let trimmed = unsigned(&bytes);
    if trimmed.len() > len {
        anyhow::bail!("EC JWK {what} is longer than {len} bytes");
    }
    let mut out = vec![0u8; len - trimmed.len()];
    out.extend_from_slice(trimmed);
    Ok(out)
}

fn sign(alg: Alg, jwk: &serde_json::Value, msg: &[u8]) -> anyhow::Result<Vec<u8>> {
    use Alg::*;
    let rng = ring::rand::SystemRandom::new();
    match alg {
        HS256 | HS384 | HS512 => {
            let k = member(kty(jwk, "oct")?, "k")?;
            let algorithm = match alg {
                HS256 => ring::hmac::HMAC_SHA256,
                HS384 => ring::hmac::HMAC_SHA384,
                _ => ring::hmac::HMAC_SHA512,
            };
            let key = ring::hmac::Key::new(algorithm, &k);
            Ok(ring::hmac::sign(&key, msg).as_ref().to_vec())
        }
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            let jwk = kty(jwk, "RSA")?;
            let part = |name: &str| member(jwk, name);
            let (n, e, d) = (part("n")?, part("e")?, part("d")?);
            let crt = ["p", "q", "dp", "dq", "qi"].map(part);
            let [p, q, dp, dq, qi] = crt.map(|r| {
                r.map_err(|e| anyhow::anyhow!("{e} (RSA private JWKs need p, q, dp, dq, qi)"))
            });
            let (p, q, dp, dq, qi) = (p?, q?, dp?, dq?, qi?);
            let components = ring::rsa::KeyPairComponents {
                public_key: ring::rsa::PublicKeyComponents {
                    n: unsigned(&n),
                    e: unsigned(&e),
                },
                d: unsigned(&d),
                p: unsigned(&p),
                q: unsigned(&q),
                dP: unsigned(&dp),
                dQ: unsigned(&dq),
                qInv: unsigned(&qi),
            };
            let pair = signature::RsaKeyPair::from_components(&components)
                .map_err(|e| anyhow::anyhow!("unusable RSA JWK: {e}"))?;
            let padding: &'static dyn signature::RsaEncoding = match alg {
                RS256 => &signature::RSA_PKCS1_SHA256,
                RS384 => &signature::RSA_PKCS1_SHA384,
                RS512 => &signature::RSA_PKCS1_SHA512,
                PS256 => &signature::RSA_PSS_SHA256,
                PS384 => &signature::RSA_PSS_SHA384,
                _ => &signature::RSA_PSS_SHA512,
            };
            let mut sig = vec![0u8; pair.public().modulus_len()];
            pair.sign(padding, &rng, msg, &mut sig)
                .map_err(|_| anyhow::anyhow!("RSA signing failed"))?;
            Ok(sig)
        }
        ES256 | ES384 => {
            let jwk = kty(jwk, "EC")?;
            let (crv, width, algorithm) = match alg {
                ES256 => ("P-256", 32, &signature::ECDSA_P256_SHA256_FIXED_SIGNING),
                _ => ("P-384", 48, &signature::ECDSA_P384_SHA384_FIXED_SIGNING),
            };
            check_curve(jwk, crv)?;
            let d = fixed(member(jwk, "d")?, width, "d")?;
            let mut public = vec![4u8];
            public.extend(fixed(member(jwk, "x")?, width, "x")?);
            public.extend(fixed(member(jwk, "y")?, width, "y")?);
            let pair = signature::EcdsaKeyPair::from_private_key_and_public_key(
                algorithm, &d, &public, &rng,
            )
            .map_err(|e| anyhow::anyhow!("unusable EC JWK: {e}"))?;
            let sig = pair
                .sign(&rng, msg)
                .map_err(|_| anyhow::anyhow!("ECDSA signing failed"))?;
            Ok(sig.as_ref().to_vec())
        }
        ES512 => {
            use p521::ecdsa::signature::Signer as _;
            let jwk = kty(jwk, "EC")?;
            check_curve(jwk, "P-521")?;
            let d = fixed(member(jwk, "d")?, 66, "d")?;
            let key = p521::ecdsa::SigningKey::from_slice(&d)
                .map_err(|e| anyhow::anyhow!("unusable P-521 JWK: {e}"))?;
            use p521::elliptic_curve::sec1::ToEncodedPoint as _;
            let point = p521::PublicKey::from_secret_scalar(key.as_nonzero_scalar())
                .to_encoded_point(false);
            let x = fixed(member(jwk, "x")?, 66, "x")?;
            let y = fixed(member(jwk, "y")?, 66, "y")?;
            if point.x().map(|c| &c[..]) != Some(&x[..])
                || point.y().map(|c| &c[..]) != Some(&y[..])
            {
                anyhow::bail!("unusable P-521 JWK: x, y do not belong to d");
            }
            let sig: p521::ecdsa::Signature = key.sign(msg);
            Ok(sig.to_bytes().to_vec())
        }
        EdDSA => {
            let jwk = kty(jwk, "OKP")?;
            if jwk.get("crv").and_then(|v| v.as_str()) != Some("Ed25519") {
                anyhow::bail!("EdDSA needs an Ed25519 OKP JWK");
            }
            let d = member(jwk, "d")?;
            let pair = match jwk.get("x") {
                Some(_) => {
                    signature::Ed25519KeyPair::from_seed_and_public_key(&d, &member(jwk, "x")?)
                }
                None => signature::Ed25519KeyPair::from_seed_unchecked(&d),
            }
            .map_err(|e| anyhow::anyhow!("unusable Ed25519 JWK: {e}"))?;
            debug_assert_eq!(pair.public_key().as_ref().len(), 32);
            Ok(pair.sign(msg).as_ref().to_vec())
        }
    }
}

fn check_curve(jwk: &serde_json::Value, want: &str) -> anyhow::Result<()> {
    match jwk.get("crv").and_then(|v| v.as_str()) {
        Some(c) if c == want => Ok(()),
        other => anyhow::bail!("EC JWK curve {other:?} does not fit the algorithm (needs {want})"),
    }
}

/// `v` as Go's `encoding/json` writes the value OPA hands it: objects with keys sorted, no
/// whitespace, HTML-sensitive characters escaped. Only string keys are allowed.
fn go_json(v: &Value) -> anyhow::Result<String> {
    let mut out = String::new();
    write_go_json(v, &mut out)?;
    Ok(out)
}

fn write_go_json(v: &Value, out: &mut String) -> anyhow::Result<()> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(_) => out.push_str(&serde_json::to_string(v)?),
        Value::String(s) => write_go_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out)?;
            }
            out.push(']');
        }
        Value::Set(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out)?;
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut entries: Vec<(&str, &Value)> = Vec::with_capacity(members.len());
            for (k, v) in members.iter() {
                let Value::String(k) = k else {
                    anyhow::bail!("object keys must be strings to be encoded as JSON");
                };
                entries.push((k, v));
            }
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(k, out);
                out.push(':');
                write_go_json(v, out)?;
            }
            out.push('}');
        }
        Value::Undefined => anyhow::bail!("undefined value cannot be encoded as JSON"),
    }
    Ok(())
}

fn write_go_string(s: &str, out: &mut String) {
    // serde_json escapes quotes, backslashes and control characters as Go does; Go also escapes
    // these, which serde_json leaves alone.
    let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string());
    for c in quoted.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_json_sorts_keys_and_escapes_html() {
        let v =
            Value::from_json_str(r#"{"b": [1, 2.5, "<&>"], "a": {"z": null, "y": true}}"#).unwrap();
        assert_eq!(
            go_json(&v).unwrap(),
            r#"{"a":{"y":true,"z":null},"b":[1,2.5,"\u003c\u0026\u003e"]}"#
        );
    }

    #[test]
    fn header_rules() {
        let key = r#"{"kty":"oct","k":"c2VjcmV0"}"#;
        assert!(
            encode_sign(r#"{"typ":"JWT"}"#, "{}", key).is_err(),
            "no alg"
        );
        assert!(encode_sign(r#"{"alg":"none"}"#, "{}", key).is_err(), "none");
        assert!(encode_sign(r#"{"alg":"HS256"}"#, "not json", key).is_err());
        assert!(encode_sign(r#"{"alg":"HS256","typ":"JWT"}"#, "not json", key).is_err());
        assert!(encode_sign(r#"{"alg":"HS256","typ":"text"}"#, "not json", key).is_ok());
        assert!(
            encode_sign(r#"{"alg":"RS256"}"#, "{}", key).is_err(),
            "oct key for RS256"
        );
        assert!(encode_sign(r#"{"alg":"HS256"}"#, "{}", r#"{"keys":[]}"#).is_err());
        assert!(encode_sign(
            r#"{"alg":"HS256"}"#,
            "{}",
            &format!(r#"{{"keys":[{key}]}}"#)
        )
        .is_ok());
    }
}
