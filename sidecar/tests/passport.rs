//! Passports (`identity.passport`) through a real sidecar: key files written here, gRPC Checks
//! against a policy that mints at `/mint/<audience>` and verifies `x-regent-passport` elsewhere.
//! One sidecar plays both ends (it signs and trusts its own issuer), since the passport
//! configuration is process-wide; the two-sidecar path is e2e/tests/passport.rs.

mod server_support;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::Signer as _;
use regent_sidecar::identity::passport::{PassportSettings, TrustedIssuer};
use serde_json::json;
use server_support::*;

const ISSUER: &str = "https://edge.sidecar.test";

const POLICY: &str = r#"
package envoy.authz

import rego.v1

default allow := false

minted := regent.passport.mint({
	"aud": input.parsed_path[1],
	"sub": "alice",
	"claims": {"tenant": "acme"},
	"act": {"sub": "spiffe://test/bff"},
	"ttl_seconds": 3600,
}) if input.parsed_path[0] == "mint"

allow := {
	"allowed": true,
	"headers": {"x-regent-passport": minted},
	"request_headers_to_remove": ["authorization"],
} if minted

claims := regent.passport.verify(input.attributes.request.http.headers["x-regent-passport"], {"aud": "orders"}) if {
	input.parsed_path[0] == "api"
}

allow := {
	"allowed": true,
	"headers": {
		"x-regent-subject": claims.sub,
		"x-regent-actor": object.get(claims, ["act", "sub"], ""),
		"x-regent-tenant": object.get(claims, "tenant", ""),
	},
} if claims
"#;

struct Key(ed25519_dalek::SigningKey);

impl Key {
    fn new() -> Key {
        Key(ed25519_dalek::SigningKey::from_bytes(&rand::random::<
            [u8; 32],
        >()))
    }

    /// Writes `<name>.pem` (private, PKCS#8) and `<name>.pub.pem` (SPKI) into `dir`.
    fn write(&self, dir: &Path, name: &str) {
        let private = self.0.to_pkcs8_pem(LineEnding::LF).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), private.as_bytes()).unwrap();
        let public = self
            .0
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        std::fs::write(dir.join(format!("{name}.pub.pem")), public).unwrap();
    }

    /// A passport-shaped token with `claims`, signed with this key.
    fn sign(&self, claims: serde_json::Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let input = format!(
            "{}.{}",
            b64.encode(json!({"alg": "EdDSA", "typ": "passport+jwt"}).to_string()),
            b64.encode(claims.to_string())
        );
        format!(
            "{input}.{}",
            b64.encode(self.0.sign(input.as_bytes()).to_bytes())
        )
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn settings(dir: &Path, key: &str) -> PassportSettings {
    PassportSettings {
        issuer: Some(ISSUER.into()),
        signing_key_file: Some(dir.join(format!("{key}.pem"))),
        key_id: Some("edge-1".into()),
        max_ttl_seconds: 60,
        trusted: vec![TrustedIssuer {
            issuer: ISSUER.into(),
            public_key_file: dir.join(format!("{key}.pub.pem")),
        }],
        ..PassportSettings::default()
    }
}

async fn mint(s: &Sidecar, audience: &str) -> String {
    let r = s
        .check(
            get(&format!("/mint/{audience}"))
                .header("authorization", "Bearer user-token")
                .build(),
        )
        .await
        .expect("answers");
    assert!(allowed(&r), "{r:?}");
    header(&r, "x-regent-passport").expect("a passport header")
}

/// The Check of `/api/orders` carrying `passport`: the subject header when allowed.
async fn present(s: &Sidecar, passport: &str) -> Option<String> {
    let r = s
        .check(
            get("/api/orders")
                .header("x-regent-passport", passport)
                .build(),
        )
        .await
        .expect("answers");
    allowed(&r).then(|| header(&r, "x-regent-subject").expect("subject header"))
}

fn payload(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).expect("three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passports_are_minted_verified_once_and_refused_when_expired_misaddressed_forged_or_replayed(
) {
    let keys = tempfile::tempdir().unwrap();
    let edge = Key::new();
    edge.write(keys.path(), "edge");
    let cfg_settings = settings(keys.path(), "edge");
    let s = Sidecar::start(POLICY, None, move |cfg, _| {
        cfg.identity.passport = cfg_settings;
    })
    .await;

    // Minted with the configured issuer, kid and capped ttl; the user's token is dropped.
    let r = s
        .check(
            get("/mint/orders")
                .header("authorization", "Bearer user-token")
                .build(),
        )
        .await
        .unwrap();
    let ok = match &r.http_response {
        Some(
            envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::OkResponse(ok),
        ) => ok,
        other => panic!("not allowed: {other:?}"),
    };
    assert_eq!(ok.headers_to_remove, ["authorization"]);
    let passport = header(&r, "x-regent-passport").expect("passport");
    let p = payload(&passport);
    assert_eq!(p["iss"], ISSUER);
    assert_eq!(p["aud"], "orders");
    assert_eq!(p["sub"], "alice");
    assert_eq!(p["tenant"], "acme");
    assert_eq!(p["act"]["sub"], "spiffe://test/bff");
    assert_eq!(
        p["exp"].as_i64().unwrap() - p["iat"].as_i64().unwrap(),
        60,
        "ttl 3600 capped at max_ttl_seconds"
    );

    // Accepted once, with its claims; the same passport in a second Check is a replay.
    let r = s
        .check(
            get("/api/orders")
                .header("x-regent-passport", &passport)
                .build(),
        )
        .await
        .unwrap();
    assert!(allowed(&r), "{r:?}");
    assert_eq!(header(&r, "x-regent-subject").as_deref(), Some("alice"));
    assert_eq!(header(&r, "x-regent-tenant").as_deref(), Some("acme"));
    assert_eq!(
        header(&r, "x-regent-actor").as_deref(),
        Some("spiffe://test/bff")
    );
    assert_eq!(present(&s, &passport).await, None, "replayed");

    // Minted for another audience.
    let billing = mint(&s, "billing").await;
    assert_eq!(present(&s, &billing).await, None, "wrong audience");

    // Right shape and issuer, but expired, or signed by a key nobody trusts.
    let claims = |exp: i64, jti: &str| {
        json!({"iss": ISSUER, "aud": "orders", "sub": "alice", "iat": exp - 30, "nbf": exp - 30,
               "exp": exp, "jti": jti})
    };
    assert_eq!(
        present(&s, &edge.sign(claims(now() - 60, "old"))).await,
        None,
        "expired"
    );
    assert_eq!(
        present(&s, &Key::new().sign(claims(now() + 30, "forged"))).await,
        None,
        "forged"
    );
    // The control: the same hand-made passport signed by the edge key passes.
    assert_eq!(
        present(&s, &edge.sign(claims(now() + 30, "fresh")))
            .await
            .as_deref(),
        Some("alice")
    );
    let text = s.running.metrics.render();
    assert!(
        metric(&text, r#"regent_passport_total{result="replay"}"#).is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(metric(&text, r#"regent_passport_total{result="refused"}"#).is_some_and(|v| v >= 3.0));
    assert!(metric(&text, r#"regent_passport_total{result="minted"}"#).is_some_and(|v| v >= 2.0));

    // New key files (a Secret update): the watcher swaps them in; the old key's passports are
    // refused from then on, the new key's accepted.
    let before_rotation = mint(&s, "orders").await;
    let identity = s.running.identity.clone().expect("identity handle");
    // The watcher fingerprints the files in force when it is made.
    let mut watcher = tokio::task::spawn_blocking(move || identity.passport_watcher())
        .await
        .unwrap()
        .expect("a passport watcher");
    let rotated = Key::new();
    rotated.write(keys.path(), "edge");
    let (outcome, mut watcher) = tokio::task::spawn_blocking(move || (watcher.poll(), watcher))
        .await
        .unwrap();
    assert_eq!(outcome, regent_sidecar::reload::Polled::Reloaded);
    assert_eq!(
        present(&s, &before_rotation).await,
        None,
        "old key no longer trusted"
    );
    let after = mint(&s, "orders").await;
    assert_eq!(present(&s, &after).await.as_deref(), Some("alice"));
    assert_eq!(
        present(&s, &rotated.sign(claims(now() + 30, "by-rotated")))
            .await
            .as_deref(),
        Some("alice")
    );

    // A bad new file keeps the keys in force.
    std::fs::write(keys.path().join("edge.pub.pem"), "not a key").unwrap();
    let outcome = tokio::task::spawn_blocking(move || watcher.poll())
        .await
        .unwrap();
    assert!(
        matches!(&outcome, regent_sidecar::reload::Polled::Refused(e)
            if e.contains("identity.passport.trusted[0].public_key_file")),
        "{outcome:?}"
    );
    let still = mint(&s, "orders").await;
    assert_eq!(present(&s, &still).await.as_deref(), Some("alice"));

    s.stop().await;
    // Withdrawn with the sidecar: nothing mints any more in this process.
    assert_eq!(
        regent_policy::builtins::call(
            "regent.passport.mint",
            &[regorus::Value::from_json_str(r#"{"aud": "a", "sub": "b"}"#).unwrap()]
        ),
        regorus::Value::Undefined
    );
}

#[tokio::test]
async fn a_sidecar_with_an_unusable_key_file_refuses_to_start_naming_it() {
    let keys = tempfile::tempdir().unwrap();
    std::fs::write(keys.path().join("edge.pem"), "not a key").unwrap();
    let mut cfg = base_config();
    cfg.identity.passport = settings(keys.path(), "edge");
    let e = match regent_sidecar::server::start(cfg).await {
        Ok(_) => panic!("started with a bad key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("identity.passport.signing_key_file"), "{e}");
    assert!(e.contains("edge.pem"), "{e}");
}
