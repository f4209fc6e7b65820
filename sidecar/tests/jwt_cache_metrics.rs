//! The JWT builtins' cache counters reach `/metrics`: a real sidecar verifies the same bearer
//! token on several Checks, on both evaluators, and the scrape shows the hits and misses.

mod server_support;

use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::Signer as _;
use regent_sidecar::config::EngineChoice;
use serde_json::json;
use server_support::*;

const POLICY: &str = r#"
package envoy.authz

import rego.v1

default allow := false

allow if {
	[valid, _, payload] := io.jwt.decode_verify(bearer, {"cert": json.marshal(data.jwks)})
	valid
	payload.sub == "alice"
}

bearer := t if {
	v := input.attributes.request.http.headers.authorization
	startswith(v, "Bearer ")
	t := substring(v, 7, -1)
}
"#;

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn signing_key() -> ed25519_dalek::SigningKey {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt/ed25519_private.pem");
    let pem = std::fs::read_to_string(&p).expect("test key");
    ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).expect("Ed25519 test key")
}

fn token(key: &ed25519_dalek::SigningKey, sub: &str) -> String {
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"EdDSA","typ":"JWT"}"#),
        b64(json!({"sub": sub}).to_string().as_bytes())
    );
    format!("{input}.{}", b64(&key.sign(input.as_bytes()).to_bytes()))
}

/// The four JWT cache samples: token hits, token misses, keyset hits, keyset misses.
fn samples(text: &str) -> [f64; 4] {
    [
        r#"regent_jwt_cache_hits_total{cache="token"}"#,
        r#"regent_jwt_cache_misses_total{cache="token"}"#,
        r#"regent_jwt_cache_hits_total{cache="keyset"}"#,
        r#"regent_jwt_cache_misses_total{cache="keyset"}"#,
    ]
    .map(|name| metric(text, name).unwrap_or_else(|| panic!("{name} missing from:\n{text}")))
}

#[tokio::test]
async fn jwt_cache_hits_and_misses_are_exported() {
    let key = signing_key();
    let jwks = json!({"jwks": {"keys": [
        {"kty": "OKP", "crv": "Ed25519", "x": b64(key.verifying_key().as_bytes())}
    ]}})
    .to_string();
    let good = token(&key, "alice");
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(br#"{"sub":"mallory"}"#), parts[2]);
    let bearer = |t: &str| get("/orders").header("authorization", &format!("Bearer {t}"));
    let mut token_misses = 0.0;
    for engine in [EngineChoice::Vm, EngineChoice::Interpreter] {
        let s = Sidecar::start(POLICY, Some(&jwks), |cfg, _| cfg.policy.engine = engine).await;
        let before = samples(&s.running.metrics.render());
        for _ in 0..4 {
            let r = s.check(bearer(&good).build()).await.expect("answers");
            assert!(allowed(&r), "{engine:?}: {r:?}");
        }
        for _ in 0..2 {
            let r = s.check(bearer(&forged).build()).await.expect("answers");
            assert!(!allowed(&r), "{engine:?}: forged token allowed");
        }
        let after = samples(&s.running.metrics.render());
        let d: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        // The Checks run on this test's single thread: each token and the key set miss once at
        // most (the second evaluator finds them cached by the first), and every repeat hits (the
        // key set is re-marshalled, byte-identical, on every Check).
        assert!(d[0] >= 4.0, "{engine:?}: token hits {d:?}");
        assert!(d[1] <= 2.0, "{engine:?}: token misses {d:?}");
        assert!(d[2] >= 5.0, "{engine:?}: keyset hits {d:?}");
        assert!(d[3] <= 1.0, "{engine:?}: keyset misses {d:?}");
        token_misses += d[1];
        s.stop().await;
    }
    assert!(
        token_misses >= 2.0,
        "the good and the forged token each missed once"
    );
}
