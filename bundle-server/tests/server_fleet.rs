//! The fleet view: status reports from sidecars, how silent ones age out, and why a report
//! cannot forge it (unpublished revisions are `unknown`, other bundles add no series, and with
//! client tokens a report needs one). A real sidecar's sync loop against the server is
//! `e2e/tests/fleet_sync.rs`.

mod server_support;

use std::time::Duration;

use regent_bundle_server::server;
use reqwest::StatusCode;
use server_support::*;

const TOKEN: &str = "fleet-token-1";

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Every `regent_fleet_sidecars` line of a metrics page, sorted.
fn fleet_series(page: &str) -> Vec<String> {
    let mut v: Vec<String> = page
        .lines()
        .filter(|l| l.starts_with("regent_fleet_sidecars{"))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

async fn fleet_view(srv: &server::Running, token: Option<&str>) -> serde_json::Value {
    let mut req = client().get(url(srv, "/v1/fleet"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sidecars_age_out() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let srv = start(config(
        &repo.origin,
        data.path(),
        &keys.private,
        "fleet: {ttl_seconds: 3}",
    ))
    .await;
    wait_published(&srv, "authz", &first).await;
    let c = client();
    let resp = c
        .post(url(&srv, "/status"))
        .json(&report("gone", &first))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let v = fleet_view(&srv, None).await;
    assert_eq!(v["sidecars"][0]["id"], "gone");
    let page = metrics(&srv).await;
    assert_eq!(
        metric(
            &page,
            &format!("regent_fleet_sidecars{{bundle=\"authz\",revision=\"{first}\"}}")
        ),
        Some(1.0),
        "{page}"
    );
    let empty = eventually(Duration::from_secs(30), || async {
        let v: serde_json::Value = c
            .get(url(&srv, "/v1/fleet"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["sidecars"].as_array()?.is_empty().then_some(())
    })
    .await;
    assert!(empty.is_some(), "the silent sidecar aged out");
    // Only the `unknown` series of each served bundle stays, at 0.
    assert_eq!(
        fleet_series(&metrics(&srv).await),
        [
            "regent_fleet_sidecars{bundle=\"authz\",revision=\"unknown\"} 0",
            "regent_fleet_sidecars{bundle=\"platform\",revision=\"unknown\"} 0",
        ]
    );
    srv.shutdown().await;
}

/// An open server (no tokens): anyone may report, but made-up revisions and bundles add no
/// series and do not show as real revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_revisions_and_bundles_add_no_series() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let srv = start(config(&repo.origin, data.path(), &keys.private, "")).await;
    wait_published(&srv, "authz", &first).await;
    let c = client();
    for i in 0..50 {
        let resp = c
            .post(url(&srv, "/v1/status/report"))
            .json(&report(&format!("forger-{i}"), &format!("made-up-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let stranger = serde_json::json!({
            "labels": {"id": format!("stranger-{i}")},
            "bundles": {format!("bundle-{i}"): {"active_revision": format!("r{i}")}}
        });
        let resp = c
            .post(url(&srv, "/v1/status/report"))
            .json(&stranger)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    }
    let resp = c
        .post(url(&srv, "/v1/status/report"))
        .json(&report("honest", &first))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let page = metrics(&srv).await;
    assert_eq!(
        fleet_series(&page),
        [
            format!("regent_fleet_sidecars{{bundle=\"authz\",revision=\"{first}\"}} 1"),
            "regent_fleet_sidecars{bundle=\"authz\",revision=\"unknown\"} 50".to_string(),
            "regent_fleet_sidecars{bundle=\"platform\",revision=\"unknown\"} 0".to_string(),
        ],
        "{page}"
    );
    assert!(
        !page.contains("made-up") && !page.contains("bundle-"),
        "{page}"
    );

    let v = fleet_view(&srv, None).await;
    let authz = &v["bundles"]["authz"];
    assert_eq!(authz["published_revision"], first.as_str());
    assert_eq!(authz["sidecars"], 51);
    assert_eq!(authz["on_published"], 1);
    assert_eq!(
        authz["revisions"],
        serde_json::json!({first.clone(): 1, "unknown": 50})
    );
    // Bundles this server does not serve are not summarised.
    let names: Vec<&String> = v["bundles"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["authz", "platform"], "{v}");
    let sidecar = |id: &str| {
        v["sidecars"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {v}"))
            .clone()
    };
    let forger = sidecar("forger-3");
    assert_eq!(forger["bundles"]["authz"]["active_revision"], "unknown");
    assert_eq!(forger["bundles"]["authz"]["reported_revision"], "made-up-3");
    let stranger = sidecar("stranger-3");
    assert_eq!(
        stranger["bundles"]["bundle-3"]["active_revision"],
        "unknown"
    );
    let honest = sidecar("honest");
    assert_eq!(
        honest["bundles"]["authz"]["active_revision"],
        first.as_str()
    );
    assert!(honest["bundles"]["authz"]
        .get("reported_revision")
        .is_none());

    // A new publication: sidecars on the previous revision still count under it.
    repo.write(
        "authz/policy.rego",
        &format!("{POLICY}\nallow if input.attributes.request.http.method == \"HEAD\"\n"),
    );
    let second = repo.commit_push("allow HEAD");
    assert!(srv.build_now(Duration::from_secs(60)).await);
    wait_published(&srv, "authz", &second).await;
    let resp = c
        .post(url(&srv, "/v1/status/report"))
        .json(&report("moved", &second))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let page = metrics(&srv).await;
    for rev in [&first, &second] {
        assert_eq!(
            metric(
                &page,
                &format!("regent_fleet_sidecars{{bundle=\"authz\",revision=\"{rev}\"}}")
            ),
            Some(1.0),
            "{page}"
        );
    }
    srv.shutdown().await;
}

/// With client tokens, a status report needs one by default: without it (or with a wrong one)
/// it gets 401 and changes nothing; with it, a real revision adds its series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_need_the_token_once_tokens_are_configured() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        "auth: {{tokens: [{{name: sidecars, sha256: {}}}]}}",
        sha256_hex(TOKEN)
    );
    let srv = start(config(&repo.origin, data.path(), &keys.private, &extra)).await;
    wait_published(&srv, "authz", &first).await;
    let c = client();
    let before = fleet_series(&metrics(&srv).await);
    for (path, token) in [
        ("/v1/status/report", None),
        ("/v1/status/report", Some("wrong")),
        ("/status", None),
        ("/status", Some("fleet-token-")),
    ] {
        let mut req = c.post(url(&srv, path)).json(&report("forger", &first));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path} {token:?}");
        assert!(resp.headers().contains_key("www-authenticate"));
        let e: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(e["code"], "unauthorized");
    }
    let page = metrics(&srv).await;
    assert_eq!(fleet_series(&page), before, "{page}");
    assert_eq!(
        metric(&page, "regent_status_reports_total{result=\"refused\"}"),
        Some(4.0),
        "{page}"
    );
    let v = fleet_view(&srv, Some(TOKEN)).await;
    assert_eq!(v["sidecars"], serde_json::json!([]), "{v}");

    let resp = c
        .post(url(&srv, "/v1/status/report"))
        .bearer_auth(TOKEN)
        .json(&report("sidecar-1", &first))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let page = metrics(&srv).await;
    assert_eq!(
        metric(
            &page,
            &format!("regent_fleet_sidecars{{bundle=\"authz\",revision=\"{first}\"}}")
        ),
        Some(1.0),
        "{page}"
    );
    let v = fleet_view(&srv, Some(TOKEN)).await;
    assert_eq!(v["sidecars"][0]["id"], "sidecar-1");
    assert_eq!(v["bundles"]["authz"]["on_published"], 1);
    srv.shutdown().await;
}

/// `fleet.require_token: false` keeps status reports open on a server with tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_token_false_keeps_reports_open() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        "auth: {{tokens: [{{name: sidecars, sha256: {}}}]}}\nfleet: {{require_token: false}}",
        sha256_hex(TOKEN)
    );
    let srv = start(config(&repo.origin, data.path(), &keys.private, &extra)).await;
    wait_published(&srv, "authz", &first).await;
    let resp = client()
        .post(url(&srv, "/status"))
        .json(&report("open", &first))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    // The fleet view itself still needs the token.
    let resp = client().get(url(&srv, "/v1/fleet")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v = fleet_view(&srv, Some(TOKEN)).await;
    assert_eq!(v["sidecars"][0]["id"], "open");
    srv.shutdown().await;
}
