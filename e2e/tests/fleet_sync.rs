//! Distribution to a real regent-sidecar sync loop (long polling, bearer token, signature
//! verification, the sidecar's own policy store), its status reports feeding the fleet view, and
//! `regent rollout status` exit codes. Lives here because only the end-to-end crate may depend on
//! both the server and the sidecar.

#[path = "../../bundle-server/tests/server_support/mod.rs"]
mod server_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use regent_policy::EngineChoice;
use regent_sidecar::policy::{PolicySettings, PolicyStore};
use regent_sidecar::sync::regent_format::regent_activator;
use regent_sidecar::sync::{
    start_with, BundleSource, HttpConfig, KeyConfig, PollingConfig, StatusConfig, SyncConfig,
};
use reqwest::StatusCode;
use server_support::*;

const TOKEN: &str = "sidecar-token-1";

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Runs `regent rollout status` and returns its exit code and output.
async fn rollout(args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(
        std::env::var("REGENT_BIN")
            .expect("REGENT_BIN names the regent binary (e2e/e2e.sh sets it)"),
    )
    .arg("rollout")
    .arg("status")
    .args(args)
    .output()
    .await
    .expect("running regent");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// A sidecar sync configuration for bundle `authz` of `srv`, trusting `keys` (its public key
/// written into `dir`), reporting status every second as sidecar `id`.
fn sync_config(
    srv: &regent_bundle_server::server::Running,
    keys: &Keys,
    dir: &std::path::Path,
    id: &str,
) -> SyncConfig {
    let pub_file = dir.join("k1.pub.pem");
    std::fs::write(&pub_file, &keys.public_pem).unwrap();
    SyncConfig {
        bundles: vec![BundleSource {
            name: "authz".into(),
            url: url(srv, "/bundles/authz"),
            roots: Some(vec!["envoy/authz".into()]),
            long_poll_timeout_seconds: None,
        }],
        keys: vec![KeyConfig {
            kid: "k1".into(),
            public_key_file: Some(pub_file),
            ..KeyConfig::default()
        }],
        status: Some(StatusConfig {
            url: url(srv, "/v1/status/report"),
            interval_seconds: 1,
            labels: BTreeMap::from([("id".to_string(), id.to_string())]),
        }),
        ..SyncConfig::default()
    }
}

/// A real sidecar sync loop for `cfg`, with its own policy store.
async fn start_sync(
    cfg: &SyncConfig,
    registry: &prometheus::Registry,
) -> (Arc<PolicyStore>, regent_sidecar::sync::SyncHandle) {
    let store = Arc::new(PolicyStore::new(
        PolicySettings {
            rule: "data.envoy.authz.allow".into(),
            engine: EngineChoice::Auto,
            eval_timeout: Duration::from_secs(1),
            ..PolicySettings::default()
        },
        prometheus::IntCounter::new("activations", "test").unwrap(),
    ));
    let activator = Arc::new(regent_activator(cfg, Arc::clone(&store)).unwrap());
    let sync = start_with(cfg, activator, registry).await.unwrap();
    (store, sync)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_syncs_reports_and_rollout_status_follows() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        "auth: {{tokens: [{{name: sidecars, sha256: {}}}]}}\nfleet: {{max_report_bytes: 2048}}",
        sha256_hex(TOKEN)
    );
    let srv = start(config(&repo.origin, data.path(), &keys.private, &extra)).await;
    wait_published(&srv, "authz", &first).await;
    let c = client();

    // Tokens on: no token or a wrong one is refused.
    let resp = c.get(url(&srv, "/bundles/authz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let e: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(e["code"], "unauthorized");
    let resp = c
        .get(url(&srv, "/bundles/authz"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = c.get(url(&srv, "/v1/fleet")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A real sidecar sync loop, with its policy store, long polling and status reports.
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut sync_cfg = sync_config(&srv, &keys, dir.path(), "sidecar-1");
    sync_cfg.polling = PollingConfig {
        min_delay_seconds: 1,
        max_delay_seconds: 2,
        long_poll_timeout_seconds: 30,
    };
    sync_cfg.http = HttpConfig {
        bearer_token_file: Some(token_file.clone()),
        ..HttpConfig::default()
    };
    let (store, sync) = start_sync(&sync_cfg, &prometheus::Registry::new()).await;
    assert!(
        sync.wait_for(Duration::from_secs(30), |s| s["authz"].active_revision
            == first)
            .await,
        "sidecar activated the first revision: {:?}",
        sync.status()
    );
    let get = serde_json::json!({"attributes": {"request": {"http": {"method": "GET"}}}});
    let decision = store
        .current()
        .unwrap()
        .fresh_eval(regorus::Value::from_json_str(&get.to_string()).unwrap())
        .unwrap();
    assert_eq!(decision, regorus::Value::from(true));

    // Its report reaches the fleet view.
    let server = format!("http://{}", srv.addr);
    let token_arg = token_file.to_str().unwrap();
    let fleet_has = |rev: String| {
        let c = c.clone();
        let u = url(&srv, "/v1/fleet");
        async move {
            let v: serde_json::Value = c
                .get(u)
                .bearer_auth(TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let s = v["sidecars"]
                .as_array()?
                .iter()
                .find(|s| s["id"] == "sidecar-1")?
                .clone();
            (s["bundles"]["authz"]["active_revision"] == rev.as_str()).then_some(v)
        }
    };
    let view = eventually(Duration::from_secs(30), || fleet_has(first.clone()))
        .await
        .expect("sidecar-1 reported the first revision");
    assert_eq!(
        view["bundles"]["authz"]["published_revision"],
        first.as_str()
    );
    assert_eq!(view["bundles"]["authz"]["on_published"], 1);
    let (code, out) = rollout(&["--server", &server, "--token-file", token_arg]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("authz: 1/1"), "{out}");
    let page = metrics(&srv).await;
    assert_eq!(
        metric(
            &page,
            &format!("regent_fleet_sidecars{{bundle=\"authz\",revision=\"{first}\"}}")
        ),
        Some(1.0),
        "{page}"
    );

    // With tokens configured, a report needs one too (fleet.require_token defaults to on).
    let resp = c
        .post(url(&srv, "/v1/status/report"))
        .json(&report("sidecar-2", "0000old"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A second (simulated) sidecar on a revision this server never published: the rollout is
    // incomplete, and the fleet view shows it as `unknown`.
    let resp = c
        .post(url(&srv, "/v1/status/report"))
        .bearer_auth(TOKEN)
        .json(&report("sidecar-2", "0000old"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (code, out) = rollout(&["--server", &server, "--token-file", token_arg]).await;
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("authz: 1/2") && out.contains("sidecar-2: unknown"),
        "{out}"
    );
    let (code, out) = rollout(&[
        "--server",
        &server,
        "--token-file",
        token_arg,
        "--bundle",
        "authz",
        "--revision",
        "0000old",
    ])
    .await;
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("authz: 0/2 sidecars run 0000old"), "{out}");

    // Errors: no token → 1; unreachable server → 1.
    let (code, out) = rollout(&["--server", &server]).await;
    assert_eq!(code, 1, "{out}");
    let (code, _) = rollout(&["--server", "http://127.0.0.1:1"]).await;
    assert_eq!(code, 1);

    // Bad reports: 400 (invalid), 413 (too large).
    for bad in [
        serde_json::json!({"labels": {}}),
        serde_json::json!({"bundles": {}}),
        serde_json::json!([1, 2]),
    ] {
        let resp = c
            .post(url(&srv, "/v1/status/report"))
            .bearer_auth(TOKEN)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let e: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(e["code"], "bad_report");
    }
    let mut big = report("sidecar-3", "r");
    big["labels"]["padding"] = serde_json::Value::String("x".repeat(4096));
    let resp = c
        .post(url(&srv, "/v1/status/report"))
        .bearer_auth(TOKEN)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A push reaches the sidecar through its long poll; sidecar-2 moves too: complete again.
    repo.write(
        "authz/policy.rego",
        &format!("{POLICY}\nallow if input.attributes.request.http.method == \"HEAD\"\n"),
    );
    let second = repo.commit_push("allow HEAD");
    assert!(srv.build_now(Duration::from_secs(60)).await);
    assert!(
        sync.wait_for(Duration::from_secs(30), |s| s["authz"].active_revision
            == second)
            .await,
        "sidecar activated the second revision: {:?}",
        sync.status()
    );
    let c2 = c.clone();
    let resp = c2
        .post(url(&srv, "/v1/status/report"))
        .bearer_auth(TOKEN)
        .json(&report("sidecar-2", &second))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    eventually(Duration::from_secs(30), || fleet_has(second.clone()))
        .await
        .expect("sidecar-1 reported the second revision");
    let (code, out) = rollout(&["--server", &server, "--token-file", token_arg]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("authz: 2/2"), "{out}");

    sync.shutdown().await;
    srv.shutdown().await;
}

/// A sidecar whose identity provider cannot be reached refuses that issuer's tokens; the fleet
/// view and `regent rollout status` say so, so an operator sees it before users do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_sets_that_cannot_be_fetched_show_in_the_fleet_view() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let srv = start(config(&repo.origin, data.path(), &keys.private, "")).await;
    wait_published(&srv, "authz", &first).await;

    // Port 1 on loopback: nothing listens, so every fetch fails at once.
    let issuer = "https://idp-down.example";
    let identity: regent_sidecar::identity::IdentityConfig = serde_yaml::from_str(&format!(
        "jwks: [{{issuer: '{issuer}', jwks_url: 'http://127.0.0.1:1/keys', min_refresh_interval_seconds: 1}}]"
    ))
    .unwrap();
    let registry = prometheus::Registry::new();
    let handle = regent_sidecar::identity::start(&identity, None, &registry)
        .await
        .unwrap()
        .expect("a key set is configured");

    let dir = tempfile::tempdir().unwrap();
    let sync_cfg = sync_config(&srv, &keys, dir.path(), "keyless");
    let (_store, sync) = start_sync(&sync_cfg, &registry).await;
    assert!(
        sync.wait_for(Duration::from_secs(30), |s| s["authz"].active_revision
            == first)
            .await,
        "sidecar activated the bundle: {:?}",
        sync.status()
    );

    let c = client();
    let u = url(&srv, "/v1/fleet");
    let view = eventually(Duration::from_secs(30), || {
        let (c, u) = (c.clone(), u.clone());
        async move {
            let v: serde_json::Value = c.get(u).send().await.ok()?.json().await.ok()?;
            let failing = v["jwks"][issuer]["failing"].as_u64()?;
            (failing == 1).then_some(v)
        }
    })
    .await
    .expect("the fleet view shows the failing key set");
    assert_eq!(view["jwks"][issuer]["sidecars"], 1, "{view}");
    assert_eq!(view["jwks"][issuer]["unavailable"], 1, "{view}");
    let me = view["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "keyless")
        .expect("the sidecar is listed");
    assert_eq!(me["jwks"][issuer]["keys"], 0, "{me}");
    assert_eq!(me["jwks"][issuer]["unavailable"], true, "{me}");
    assert!(
        me["jwks"][issuer]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{me}"
    );

    let (code, out) = rollout(&["--server", &format!("http://{}", srv.addr)]).await;
    assert_eq!(code, 0, "the bundle rollout itself is complete: {out}");
    assert!(
        out.contains(&format!(
            "key set {issuer}: 1/1 sidecars refuse its tokens, 1 fail to refresh (oldest keys: none yet)"
        )),
        "{out}"
    );

    sync.shutdown().await;
    handle.shutdown().await;
    srv.shutdown().await;
}
