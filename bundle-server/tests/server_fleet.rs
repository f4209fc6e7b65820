//! The fleet view: status reports from sidecars, and how silent ones age out. A real sidecar's
//! sync loop against the server is `e2e/tests/fleet_sync.rs`.

mod server_support;

use std::time::Duration;

use reqwest::StatusCode;
use server_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sidecars_age_out() {
    let repo = PolicyRepo::new();
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let srv = start(config(
        &repo.origin,
        data.path(),
        &keys.private,
        "fleet: {ttl_seconds: 3}",
    ))
    .await;
    let c = client();
    let resp = c
        .post(url(&srv, "/status"))
        .json(&report("gone", "r1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let v: serde_json::Value = c
        .get(url(&srv, "/v1/fleet"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["sidecars"][0]["id"], "gone");
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
    let page = metrics(&srv).await;
    assert!(!page.contains("regent_fleet_sidecars{"), "{page}");
    srv.shutdown().await;
}
