//! Fixtures of the edge JWT policy (`bench/policies/edge_jwt`): the policy most OPA-Envoy users
//! write at the edge, verifying the bearer token itself with `io.jwt.decode_verify` against a JWKS
//! in bundle data, then checking a tenant claim and a role claim.
//!
//! Keys: one RSA-2048 key (RS256) and one P-256 key (ES256), derived at bench time from a fixed
//! seed, so the JWKS in `bench/policies/edge_jwt/data.json` (written by the `fixtures` binary) is
//! the same every run and `load` signs tokens that verify against it without sharing files.
//!
//! `bench/policies/edge_jwt_remote` is the same policy verifying with the sidecar's remote key set
//! of [`ISSUER`] instead (`{"jwks_issuer": ...}`); `jwks_server` serves it the same [`Keys::jwks`],
//! and `cold_kid` rotates [`RotatedKey`]s into it.
//!
//! Request mix ([`mix`]): [`TOKENS`] distinct valid tokens (even numbers RS256, odd ES256; `exp` in
//! 2100), each with its own request, cycled the way clients reuse their tokens; and one request in
//! [`FRESH_EVERY`] carries a token never seen before: the claims of a fixed token with a unique
//! `jti`, under the (well-formed, wrong) signature of another token of the same algorithm. Signing
//! a fresh valid token per request would cost the load generator ~1 ms of RSA per token; a wrong
//! signature costs the verifier exactly what a right one does (the whole RSA/ECDSA verification
//! runs before the comparison fails) and defeats any cache of verified tokens or of decisions, so
//! these requests stand for new tokens in verification cost. They are denied (401).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use rand_chacha::rand_core::SeedableRng as _;
use rsa::signature::SignatureEncoding as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::json;

use crate::check_request_with;
use crate::mix::Mix;

/// `iss` of every token, and the policy's `iss` constraint (data.issuer).
pub const ISSUER: &str = "https://login.bench.example";
/// `aud` of every token, and the policy's `aud` constraint (data.audience).
pub const AUDIENCE: &str = "api.bench.example";
/// Distinct valid tokens in the mix.
pub const TOKENS: usize = 300;
/// One request in this many carries a never-seen token (5%).
pub const FRESH_EVERY: u64 = 20;
/// Tenants the tokens are spread over.
const TENANTS: usize = 25;
/// 2100-01-01T00:00:00Z.
const EXP: u64 = 4_102_444_800;
/// 2026-12-01T00:00:00Z.
const IAT: u64 = 1_796_083_200;
const SEED: u64 = 0x7265_6765_6e74_6a77; // "regentjw"
const RSA_KID: &str = "bench-rs256-1";
const EC_KID: &str = "bench-es256-1";

/// The signing keys, derived from the fixed seed (RSA prime search takes ~0.1-1 s in release).
pub struct Keys {
    rsa: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
    rsa_public: rsa::RsaPublicKey,
    ec: p256::ecdsa::SigningKey,
}

/// The signing algorithm of a benchmark token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Alg {
    /// RSA-2048 with SHA-256.
    RS256,
    /// P-256 with SHA-256.
    ES256,
}

impl Keys {
    /// The fixed keys, derived from the seed (every run signs with the same ones).
    pub fn derive() -> Keys {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(SEED);
        let rsa_key = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA-2048 key generation");
        let ec = p256::ecdsa::SigningKey::random(&mut rng);
        Keys {
            rsa_public: rsa_key.to_public_key(),
            rsa: rsa::pkcs1v15::SigningKey::new(rsa_key),
            ec,
        }
    }

    /// The JWKS the policy verifies against: both public keys, with `kid` and `alg`.
    pub fn jwks(&self) -> serde_json::Value {
        let point = self.ec.verifying_key().to_encoded_point(false);
        json!({"keys": [
            {
                "kty": "RSA",
                "kid": RSA_KID,
                "alg": "RS256",
                "use": "sig",
                "n": B64.encode(self.rsa_public.n().to_bytes_be()),
                "e": B64.encode(self.rsa_public.e().to_bytes_be()),
            },
            {
                "kty": "EC",
                "kid": EC_KID,
                "alg": "ES256",
                "use": "sig",
                "crv": "P-256",
                "x": B64.encode(point.x().expect("uncompressed point")),
                "y": B64.encode(point.y().expect("uncompressed point")),
            },
        ]})
    }

    /// A compact JWS of `claims` (RSASSA-PKCS1-v1_5 and RFC 6979 ECDSA are deterministic: the same
    /// claims always give the same token).
    pub fn sign(&self, alg: Alg, claims: &serde_json::Value) -> String {
        let signing_input = format!(
            "{}.{}",
            B64.encode(header(alg).to_string()),
            B64.encode(claims.to_string())
        );
        let signature = match alg {
            Alg::RS256 => self.rsa.sign(signing_input.as_bytes()).to_vec(),
            Alg::ES256 => {
                let sig: p256::ecdsa::Signature = self.ec.sign(signing_input.as_bytes());
                sig.to_bytes().to_vec()
            }
        };
        format!("{signing_input}.{}", B64.encode(signature))
    }
}

fn header(alg: Alg) -> serde_json::Value {
    match alg {
        Alg::RS256 => json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID}),
        Alg::ES256 => json!({"alg": "ES256", "typ": "JWT", "kid": EC_KID}),
    }
}

/// An ES256 key the identity provider rotates in after the start (bench/src/bin/cold_kid.rs),
/// derived from the fixed seed and its serial, with a `kid` the sidecar has not seen.
pub struct RotatedKey {
    /// `kid` of the key (in its JWK and in the tokens it signs).
    pub kid: String,
    key: p256::ecdsa::SigningKey,
}

impl RotatedKey {
    /// Rotated key number `n`.
    pub fn derive(n: u64) -> RotatedKey {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(SEED ^ (n + 1) << 16);
        RotatedKey {
            kid: format!("bench-es256-rotated-{n}"),
            key: p256::ecdsa::SigningKey::random(&mut rng),
        }
    }

    /// Its public JWK, to add to the served key set.
    pub fn jwk(&self) -> serde_json::Value {
        ec_jwk(&self.kid, &self.key)
    }

    /// A request the policy allows, with a token signed by this key.
    pub fn allowed_request(&self) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
        let c = case(ALLOWED_ES256_CASE);
        let token = sign_es256(&self.key, &self.kid, &c.claims);
        request(c.method, &c.path, &token)
    }
}

/// A token of the mix that is ES256 and allowed (tenant-01, reader and writer, GET).
const ALLOWED_ES256_CASE: usize = 1;

/// A request of the mix the policy allows, signed with the fixed keys (the warm path).
pub fn allowed_request(keys: &Keys) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    let c = case(ALLOWED_ES256_CASE);
    request(c.method, &c.path, &keys.sign(c.alg, &c.claims))
}

fn ec_jwk(kid: &str, key: &p256::ecdsa::SigningKey) -> serde_json::Value {
    let point = key.verifying_key().to_encoded_point(false);
    json!({
        "kty": "EC",
        "kid": kid,
        "alg": "ES256",
        "use": "sig",
        "crv": "P-256",
        "x": B64.encode(point.x().expect("uncompressed point")),
        "y": B64.encode(point.y().expect("uncompressed point")),
    })
}

fn sign_es256(key: &p256::ecdsa::SigningKey, kid: &str, claims: &serde_json::Value) -> String {
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let signing_input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig: p256::ecdsa::Signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", B64.encode(sig.to_bytes()))
}

/// `bench/policies/edge_jwt_remote/data.json`: the constraints only; the keys come from the
/// sidecar's remote key set for [`ISSUER`] (`identity.jwks`), served by `jwks_server`.
pub fn remote_data_json() -> String {
    let data = json!({
        "issuer": ISSUER,
        "audience": AUDIENCE,
    });
    serde_json::to_string_pretty(&data).expect("JSON") + "\n"
}

/// `bench/policies/edge_jwt/data.json`.
pub fn data_json(keys: &Keys) -> String {
    let data = json!({
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks": keys.jwks(),
    });
    serde_json::to_string_pretty(&data).expect("JSON") + "\n"
}

/// Token `i`'s algorithm, claims and request (method, path), and whether the policy allows it.
struct Case {
    alg: Alg,
    claims: serde_json::Value,
    method: &'static str,
    path: String,
    allowed: bool,
}

const ROLE_SETS: [&[&str]; 3] = [
    &["reader"],
    &["reader", "writer"],
    &["reader", "writer", "admin"],
];

fn case(i: usize) -> Case {
    let alg = if i.is_multiple_of(2) {
        Alg::RS256
    } else {
        Alg::ES256
    };
    let tenant = format!("tenant-{:02}", i % TENANTS);
    let roles = ROLE_SETS[i % 3];
    let claims = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": format!("user-{i:03}"),
        "email": format!("user-{i:03}@customer.example"),
        "azp": "web-app",
        "tenant": tenant,
        "roles": roles,
        "scope": "openid profile email",
        "iat": IAT,
        "exp": EXP,
        "jti": format!("{:032x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15),
    });
    // Half reads; writes and deletes need `writer` / `admin`; one in ten goes to another tenant.
    let (method, other_tenant) = match i % 10 {
        0..=4 => ("GET", false),
        5 | 6 => ("POST", false),
        7 => ("PUT", false),
        8 => ("DELETE", false),
        _ => ("GET", true),
    };
    let path_tenant = if other_tenant {
        format!("tenant-{:02}", (i + 1) % TENANTS)
    } else {
        tenant
    };
    let path = format!("/api/v1/tenants/{path_tenant}/orders/o-{i}?expand=lines");
    let required = match method {
        "GET" | "HEAD" => "reader",
        "DELETE" => "admin",
        _ => "writer",
    };
    Case {
        alg,
        claims,
        method,
        path,
        allowed: !other_tenant && roles.contains(&required),
    }
}

fn request(
    method: &str,
    path: &str,
    token: &str,
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    let authorization = format!("Bearer {token}");
    check_request_with(method, path, "", &[("authorization", &authorization)])
}

/// The edge JWT request mix (see the module docs).
pub fn mix() -> Mix {
    let keys = Keys::derive();
    let cases: Vec<Case> = (0..TOKENS).map(case).collect();
    let tokens: Vec<String> = cases.iter().map(|c| keys.sign(c.alg, &c.claims)).collect();
    let fixed = cases
        .iter()
        .zip(&tokens)
        .map(|(c, t)| (request(c.method, &c.path, t), c.allowed))
        .collect();
    // Differs from one load process to the next, so fresh tokens are new to a sidecar that already
    // served an earlier run (the callgrind warm-up).
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 48;
    let signatures: Vec<String> = tokens
        .iter()
        .map(|t| t.rsplit('.').next().unwrap_or_default().to_string())
        .collect();
    let fresh = move |serial: u64| {
        let i = (serial % TOKENS as u64) as usize;
        let mut c = case(i);
        c.claims["jti"] = json!(format!("{nonce:016x}{serial:016x}"));
        // The signature of the token of the same algorithm two places on: well-formed, wrong.
        let other = &signatures[(i + 2) % TOKENS];
        let token = format!(
            "{}.{}.{other}",
            B64.encode(header(c.alg).to_string()),
            B64.encode(c.claims.to_string())
        );
        (request(c.method, &c.path, &token), false)
    };
    Mix::fixed("edge_jwt", fixed).with_fresh(FRESH_EVERY, Box::new(fresh))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_allows_and_denies() {
        let allowed = (0..TOKENS).filter(|&i| case(i).allowed).count();
        assert!(allowed > TOKENS / 3 && allowed < TOKENS, "{allowed}");
        let rs = (0..TOKENS).filter(|&i| case(i).alg == Alg::RS256).count();
        assert_eq!(rs, TOKENS / 2);
    }

    #[test]
    fn the_rotated_case_is_an_allowed_es256_one() {
        let c = case(ALLOWED_ES256_CASE);
        assert!(c.allowed && c.alg == Alg::ES256);
        assert_ne!(RotatedKey::derive(0).kid, RotatedKey::derive(1).kid);
    }

    #[test]
    fn the_committed_jwks_is_the_derived_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/edge_jwt/data.json");
        let committed = std::fs::read_to_string(path).unwrap();
        assert!(
            committed == data_json(&Keys::derive()),
            "{path} is stale: run `cargo run --release -p regent-bench --bin fixtures bench/policies`"
        );
    }
}
