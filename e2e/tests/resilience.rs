//! Failure behaviour through a real Envoy: no policy ever, sidecar crash, dry-run.

mod common;

use std::time::Duration;

use anyhow::Result;
use regent_e2e::http::send;
use regent_e2e::jwt::Issuer;
use regent_e2e::sidecar::{Sidecar, SidecarOptions};
use regent_e2e::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_that_never_got_a_bundle_fails_closed() -> Result<()> {
    let mut h = common::harness("no_bundle_fails_closed")?;
    let ups = common::upstreams(&h).await?;
    let mut opts = SidecarOptions::new()?;
    // A bundle server that is not there: nothing is ever activated.
    opts.bundle_url = Some(format!(
        "http://127.0.0.1:{}/bundles/envoy",
        regent_e2e::ports::free_port()?
    ));
    opts.keys = vec![("unused".into(), common::unused_public_key(&h)?)];
    let sidecar = Sidecar::start(&h, "sidecar", opts).await?;
    let envoy = common::envoy(&h, "envoy", &sidecar, &ups, false).await?;

    let (status, ready) = sidecar.ready().await?;
    assert_eq!(status, 503, "not ready without a policy: {ready}");
    assert_eq!(ready["policy_active"], false);

    let c = common::client();
    let a = send(c.get(envoy.url("/api/items")).header("x-user", "alice")).await?;
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.body, "regent: no policy is active");
    // The sidecar answered (a denial), Envoy did not fail the call.
    assert_eq!(
        envoy
            .stat("http.ingress_http.ext_authz.regent.denied")
            .await?,
        1
    );
    assert_eq!(
        envoy
            .stat("http.ingress_http.ext_authz.regent.error")
            .await?,
        0
    );
    h.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_killed_gives_envoys_configured_failure_mode() -> Result<()> {
    let mut h = common::harness("sidecar_killed")?;
    let issuer = Issuer::generate()?;
    let policy = common::policy_tree(&h, &issuer)?;
    let ups = common::upstreams(&h).await?;
    let mut opts = SidecarOptions::new()?;
    opts.local_bundle = Some(policy);
    let mut sidecar = Sidecar::start(&h, "sidecar", opts).await?;
    let closed = common::envoy(&h, "envoy-fail-closed", &sidecar, &ups, false).await?;
    let open = common::envoy(&h, "envoy-fail-open", &sidecar, &ups, true).await?;
    let c = common::client();

    let bob_get = |url: String| c.get(url).header("x-user", "bob");
    // Both allow while the sidecar answers (the policy may still be loading at first).
    for e in [&closed, &open] {
        wait::until(
            "the policy to answer through Envoy",
            Duration::from_secs(20),
            || async {
                let a = send(bob_get(e.url("/api/items"))).await?;
                Ok((a.status == 200).then_some(()))
            },
        )
        .await?;
    }
    let denied = send(c.delete(closed.url("/api/items/1")).header("x-user", "bob")).await?;
    assert_eq!(denied.status, 403);

    sidecar.kill();

    // failure_mode_allow: false -> status_on_error (503), counted as an ext_authz error.
    let a = send(bob_get(closed.url("/api/items"))).await?;
    assert_eq!(a.status, 503, "{a:?}");
    assert!(
        closed
            .stat("http.ingress_http.ext_authz.regent.error")
            .await?
            >= 1
    );
    // failure_mode_allow: true -> the request goes through, marked for the upstream; even a
    // request the policy would deny.
    let a = send(c.delete(open.url("/api/items/1")).header("x-user", "bob")).await?;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(
        a.upstream_header("x-envoy-auth-failure-mode-allowed")
            .as_deref(),
        Some("true")
    );
    assert!(
        open.stat("http.ingress_http.ext_authz.regent.failure_mode_allowed")
            .await?
            >= 1
    );
    h.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_lets_a_denied_request_pass_and_logs_the_deny() -> Result<()> {
    let mut h = common::harness("dry_run")?;
    let issuer = Issuer::generate()?;
    let policy = common::policy_tree(&h, &issuer)?;
    let ups = common::upstreams(&h).await?;
    let log = h.path("decisions.jsonl")?;
    let mut opts = SidecarOptions::new()?;
    opts.local_bundle = Some(policy);
    opts.dry_run = true;
    opts.decision_log = Some(log.clone());
    let mut sidecar = Sidecar::start(&h, "sidecar", opts).await?;
    sidecar.wait_ready(Duration::from_secs(20)).await?;
    let envoy = common::envoy(&h, "envoy", &sidecar, &ups, false).await?;
    let c = common::client();

    // The policy denies bob a DELETE; dry-run lets it through.
    let a = send(
        c.delete(envoy.url("/api/items/dry-run-1"))
            .header("x-user", "bob"),
    )
    .await?;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()?["method"], "DELETE");

    let event = wait::until(
        "the decision log to record the request",
        Duration::from_secs(10),
        || {
            let log = log.clone();
            async move {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                Ok(text
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .find(|e| {
                        e["input"]["attributes"]["request"]["http"]["path"]
                            == "/api/items/dry-run-1"
                    }))
            }
        },
    )
    .await?;
    assert_eq!(event["result"]["allowed"], false, "{event}");
    assert_eq!(event["result"]["http_status"], 403, "{event}");
    assert_eq!(event["dry_run"], true, "{event}");
    h.pass();
    Ok(())
}
