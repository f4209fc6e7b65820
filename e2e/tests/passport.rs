//! Edge token exchange through two real Envoys: client → edge Envoy (ext_authz: edge sidecar,
//! `regent/passport/edge/allow`) → service Envoy (ext_authz: service sidecar,
//! `regent/passport/service/allow`) → echo. Both sidecars run the library bundle
//! (policies/library) with the e2e identity provider's key in `data.regent.jwt`; the edge signs
//! passports with a key file written here and the service trusts its public half.
//!
//! The service never sees the user's JWT; passports sent straight to the service Envoy are
//! refused when expired, for another audience, signed by another key, or replayed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use base64::Engine as _;
use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::Signer as _;
use regent_e2e::envoy::{Envoy, EnvoyOptions};
use regent_e2e::harness::Harness;
use regent_e2e::http::{send, Answer};
use regent_e2e::process::Proc;
use regent_e2e::sidecar::{sum_metric, SidecarOptions};
use regent_e2e::upstreams::{wait_listening, Upstream};
use serde_json::json;

/// The edge's `iss`, as the library's service policy expects it (its data.json).
const EDGE_ISSUER: &str = "https://edge.regent.example";
/// The user tokens' issuer and audience (the library's regent.jwt, data rewritten here).
const IDP_ISSUER: &str = "https://idp.e2e.regent.invalid";
const IDP_AUDIENCE: &str = "api.e2e.regent.invalid";

fn b64(data: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn new_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng)
}

/// A compact JWS of `header` and `claims` signed with `key`.
fn sign(
    key: &ed25519_dalek::SigningKey,
    header: serde_json::Value,
    claims: serde_json::Value,
) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    format!("{input}.{}", b64(key.sign(input.as_bytes()).to_bytes()))
}

/// A user token from the e2e identity provider, valid for five minutes.
fn user_token(idp: &ed25519_dalek::SigningKey, scope: &str) -> String {
    let t = now();
    sign(
        idp,
        json!({"alg": "EdDSA", "typ": "JWT", "kid": "idp-1"}),
        json!({"iss": IDP_ISSUER, "aud": IDP_AUDIENCE, "sub": "alice", "tenant": "acme",
               "scope": scope, "iat": t - 10, "nbf": t - 10, "exp": t + 300}),
    )
}

/// A passport-shaped token signed with `key`: what an edge would mint, or a forgery of it.
fn passport(key: &ed25519_dalek::SigningKey, aud: &str, exp: i64, jti: &str) -> String {
    sign(
        key,
        json!({"alg": "EdDSA", "typ": "passport+jwt"}),
        json!({"iss": EDGE_ISSUER, "aud": aud, "sub": "alice", "scope": "orders:read",
               "iat": exp - 30, "nbf": exp - 30, "exp": exp, "jti": jti}),
    )
}

/// The library bundle with the e2e identity provider as `data.regent.jwt`.
fn library(h: &Harness, idp: &ed25519_dalek::SigningKey) -> Result<PathBuf> {
    let src = regent_e2e::bins::repo_root().join("policies/library");
    let dst = h.path("library")?;
    regent_e2e::git::copy_tree(&src, &dst)?;
    let jwt = json!({"issuer": IDP_ISSUER, "audience": IDP_AUDIENCE, "algorithms": ["EdDSA"],
                     "clock_skew_seconds": 30});
    std::fs::write(dst.join("regent/jwt/data.json"), jwt.to_string())
        .context("writing regent/jwt/data.json")?;
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "idp-1", "alg": "EdDSA",
                                "use": "sig", "x": b64(idp.verifying_key().to_bytes())}]});
    std::fs::write(dst.join("regent/jwt/jwks/data.json"), jwks.to_string())
        .context("writing regent/jwt/jwks/data.json")?;
    Ok(dst)
}

/// A sidecar on the library bundle answering `decision`, with `identity.passport` set to
/// `passport`. The harness's own configuration is the base, so the settings every other scenario
/// runs with apply here too; only the decision path and the identity section differ.
struct PassportSidecar {
    grpc_port: u16,
    http_port: u16,
    /// Stops the sidecar when dropped.
    _proc: Proc,
}

impl PassportSidecar {
    async fn start(
        h: &Harness,
        name: &str,
        bundle: &Path,
        decision: &str,
        passport: serde_json::Value,
    ) -> Result<PassportSidecar> {
        let mut opts = SidecarOptions::new()?;
        opts.local_bundle = Some(bundle.to_path_buf());
        let mut cfg = opts.config();
        cfg["policy"]["path"] = decision.into();
        cfg["identity"] = json!({ "passport": passport });
        let file = h.write(&format!("{name}.yaml"), serde_json::to_string_pretty(&cfg)?)?;
        let mut cmd = Command::new(&h.bins.sidecar);
        cmd.arg("--config").arg(&file);
        let mut proc = Proc::spawn(name, cmd, &h.logs)?;
        wait_listening(&mut proc, opts.http_port, Duration::from_secs(30)).await?;
        wait_listening(&mut proc, opts.grpc_port, Duration::from_secs(30)).await?;
        let s = PassportSidecar {
            grpc_port: opts.grpc_port,
            http_port: opts.http_port,
            _proc: proc,
        };
        let url = format!("http://127.0.0.1:{}/ready", s.http_port);
        let c = common::client();
        regent_e2e::wait::until(
            &format!("{name} to be ready"),
            Duration::from_secs(30),
            || {
                let (c, url) = (c.clone(), url.clone());
                async move { Ok((c.get(&url).send().await?.status() == 200).then_some(())) }
            },
        )
        .await?;
        Ok(s)
    }

    async fn metric(&self, name: &str, labels: &[&str]) -> Result<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.http_port);
        let text = common::client().get(&url).send().await?.text().await?;
        Ok(sum_metric(&text, name, labels))
    }
}

fn assert_refused_by_the_service(a: &Answer, why: &str) {
    assert_eq!(a.status, 401, "{why}: {a:?}");
    assert_eq!(a.body, "{\"error\":\"invalid_passport\"}", "{why}: {a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_exchanges_the_users_token_and_the_service_refuses_bad_passports() -> Result<()> {
    let mut h = common::harness("passport")?;
    let (idp, edge_key, stranger) = (new_key(), new_key(), new_key());
    let edge_pem = h.write(
        "keys/edge.pem",
        edge_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the edge key: {e}"))?
            .as_bytes(),
    )?;
    let edge_pub = h.write(
        "keys/edge.pub.pem",
        edge_key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the edge public key: {e}"))?,
    )?;
    let bundle = library(&h, &idp)?;

    // The service side first: the edge Envoy's upstream is the service Envoy.
    let echo = Upstream::echo(&h, regent_e2e::ports::free_port()?).await?;
    let service = PassportSidecar::start(
        &h,
        "service-sidecar",
        &bundle,
        "regent/passport/service/allow",
        json!({"trusted": [{"issuer": EDGE_ISSUER, "public_key_file": edge_pub}]}),
    )
    .await?;
    let service_envoy = Envoy::start(
        &h,
        "service-envoy",
        EnvoyOptions::free(service.grpc_port, echo.port, echo.port)?,
    )
    .await?;
    let edge = PassportSidecar::start(
        &h,
        "edge-sidecar",
        &bundle,
        "regent/passport/edge/allow",
        json!({"issuer": EDGE_ISSUER, "signing_key_file": edge_pem, "key_id": "edge-e2e",
               "max_ttl_seconds": 60}),
    )
    .await?;
    let edge_envoy = Envoy::start(
        &h,
        "edge-envoy",
        EnvoyOptions::free(edge.grpc_port, service_envoy.opts.listener_port, echo.port)?,
    )
    .await?;
    let c = common::client();

    // Through both Envoys: the service sees a passport and the identity it vouches for, never
    // the user's token.
    let token = user_token(&idp, "orders:read");
    let a = send(
        c.get(edge_envoy.url("/api/orders/o-1"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-regent-tenant", "globex"),
    )
    .await?;
    assert_eq!(a.status, 200, "{a:?}");
    let seen = a.json()?;
    assert_eq!(seen["path"], "/api/orders/o-1");
    assert_eq!(
        a.upstream_header("x-regent-subject").as_deref(),
        Some("alice")
    );
    assert_eq!(a.upstream_header("authorization"), None, "{seen}");
    assert_eq!(
        a.upstream_header("x-regent-tenant"),
        None,
        "client-sent: {seen}"
    );
    assert!(
        !seen["headers"].to_string().contains(&token),
        "the user's JWT reached the service: {seen}"
    );
    let minted = a
        .upstream_header("x-regent-passport")
        .context("the service got no passport")?;
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(minted.split('.').nth(1).context("passport parts")?)?,
    )?;
    assert_eq!(claims["iss"], EDGE_ISSUER);
    assert_eq!(claims["aud"], "orders");
    assert_eq!(claims["tenant"], "acme");

    // No token at the edge: the edge answers and nothing is forwarded.
    let a = send(c.get(edge_envoy.url("/api/orders/o-1"))).await?;
    assert_eq!(a.status, 401, "{a:?}");
    // A route to another upstream: the edge mints for `reviews`, which the orders service refuses.
    let a = send(c.get(edge_envoy.url("/api/reviews/r-1")).header(
        "authorization",
        format!("Bearer {}", user_token(&idp, "reviews:read")),
    ))
    .await?;
    assert_refused_by_the_service(&a, "minted for reviews");

    // Straight to the service Envoy.
    let direct = |p: &str| {
        c.get(service_envoy.url("/api/orders/o-1"))
            .header("x-regent-passport", p)
    };
    assert_refused_by_the_service(&send(direct(&minted)).await?, "replayed");
    assert_refused_by_the_service(
        &send(
            c.get(service_envoy.url("/api/orders/o-1"))
                .header("authorization", format!("Bearer {token}")),
        )
        .await?,
        "the user's own token",
    );
    let t = now();
    assert_refused_by_the_service(
        &send(direct(&passport(&edge_key, "orders", t - 60, "expired"))).await?,
        "expired",
    );
    assert_refused_by_the_service(
        &send(direct(&passport(&edge_key, "billing", t + 30, "billing"))).await?,
        "wrong audience",
    );
    assert_refused_by_the_service(
        &send(direct(&passport(&stranger, "orders", t + 30, "forged"))).await?,
        "signed by another key",
    );
    // The control for the three above: the same passport, right audience and key, passes once.
    let fresh = passport(&edge_key, "orders", t + 30, "fresh");
    let a = send(direct(&fresh)).await?;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.upstream_header("x-regent-subject").as_deref(),
        Some("alice")
    );
    assert_refused_by_the_service(&send(direct(&fresh)).await?, "replayed");

    assert!(
        service
            .metric("regent_passport_total", &["result=\"replay\""])
            .await?
            >= 2.0
    );
    assert!(
        service
            .metric("regent_passport_total", &["result=\"refused\""])
            .await?
            >= 4.0
    );
    assert!(
        edge.metric("regent_passport_total", &["result=\"minted\""])
            .await?
            >= 2.0
    );

    drop((edge_envoy, edge, service_envoy, service, echo));
    h.pass();
    Ok(())
}
