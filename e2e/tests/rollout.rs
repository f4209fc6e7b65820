//! Policy rollout through a real Envoy: a git push flips Envoy's answer; a push whose policy
//! tests fail changes nothing; a tampered bundle is refused; the bundle server going away (and a
//! sidecar restart meanwhile) does not stop the answers.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use regent_e2e::http::send;
use regent_e2e::jwt::Issuer;
use regent_e2e::static_bundle::{tamper, StaticBundleServer};
use regent_e2e::wait;

const FLIP_TIMEOUT: Duration = Duration::from_secs(60);

/// Status of `DELETE /api/items/1` as bob (a reader: 403 under the seed policy).
async fn bob_delete(envoy: &regent_e2e::envoy::Envoy) -> Result<u16> {
    let a = send(
        common::client()
            .delete(envoy.url("/api/items/1"))
            .header("x-user", "bob"),
    )
    .await?;
    Ok(a.status)
}

const BOB_ADMIN: &str = r#"{"alice": ["admin"], "bob": ["reader", "admin"], "carol": []}"#;

/// Status of `DELETE /api/items/1` as carol (no role: 403 under the seed policy; no policy test
/// pins carol, so granting her a role passes the publish gate).
async fn carol_delete(envoy: &regent_e2e::envoy::Envoy) -> Result<u16> {
    let a = send(
        common::client()
            .delete(envoy.url("/api/items/1"))
            .header("x-user", "carol"),
    )
    .await?;
    Ok(a.status)
}

const CAROL_ADMIN: &str = r#"{"alice": ["admin"], "bob": ["reader"], "carol": ["admin"]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_push_flips_envoys_answer() -> Result<()> {
    let mut h = common::harness("push_flips")?;
    let issuer = Issuer::generate()?;
    let mut s = common::ServerStack::start(&h, &issuer).await?;
    assert_eq!(carol_delete(&s.envoy).await?, 403);

    // The author grants carol admin and pushes; the post-receive hook tells the server.
    s.chain.repo.write("roles/data.json", CAROL_ADMIN)?;
    let pushed = Instant::now();
    let commit = s.chain.repo.commit_and_push("grant carol admin")?;
    let envoy = &s.envoy;
    wait::until("Envoy's answer to flip to 200", FLIP_TIMEOUT, || async {
        Ok((carol_delete(envoy).await? == 200).then_some(()))
    })
    .await?;
    let secs = pushed.elapsed().as_secs_f64();
    println!("e2e measurement: git push -> Envoy answer flipped in {secs:.2} s");
    assert_eq!(
        s.sidecar.revision().await?.as_deref(),
        Some(commit.as_str())
    );

    // The sidecar's status reports reach the server's fleet view: one sidecar, on the new revision.
    let server = &s.chain.server;
    let commit_ref = commit.as_str();
    let fleet = wait::until(
        "the fleet view to show the sidecar on the new revision",
        FLIP_TIMEOUT,
        || async move {
            let f = server.fleet().await?;
            let b = &f["bundles"]["envoy"];
            let done = b["published_revision"] == commit_ref
                && b["sidecars"] == 1
                && b["on_published"] == 1;
            Ok(done.then_some(f))
        },
    )
    .await?;
    assert_eq!(fleet["sidecars"][0]["labels"]["cluster"], "e2e", "{fleet}");

    // And back: a Rego change this time.
    let rego = s.chain.repo.read("envoy/authz.rego")?;
    s.chain.repo.write(
        "envoy/authz.rego",
        &rego.replace(
            "allow := {\"allowed\": true} if public",
            "allow := {\"allowed\": true} if {\n\tpublic\n\thttp_request.method == \"GET\"\n}",
        ),
    )?;
    let commit = s.chain.repo.commit_and_push("public is GET only")?;
    s.sidecar.wait_revision(&commit, FLIP_TIMEOUT).await?;
    let c = common::client();
    assert_eq!(send(c.get(envoy.url("/public/a"))).await?.status, 200);
    assert_eq!(send(c.post(envoy.url("/public/a"))).await?.status, 403);
    h.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_with_failing_policy_tests_keeps_the_old_answer() -> Result<()> {
    let mut h = common::harness("failing_tests")?;
    let issuer = Issuer::generate()?;
    let mut s = common::ServerStack::start(&h, &issuer).await?;
    let good = s.chain.repo.head()?;
    assert_eq!(bob_delete(&s.envoy).await?, 403);

    // Grant bob admin, but the author's own test still says readers cannot delete: it fails.
    s.chain.repo.write("roles/data.json", BOB_ADMIN)?;
    let bad = s
        .chain
        .repo
        .commit_and_push("grant bob admin, tests not updated")?;
    let status = s.chain.server.wait_processed(&bad, FLIP_TIMEOUT).await?;
    println!("server status after the failing push: {status}");

    // Envoy still answers with the last good policy, and the sidecar never saw the bad commit.
    assert_eq!(bob_delete(&s.envoy).await?, 403);
    assert_eq!(s.sidecar.revision().await?.as_deref(), Some(good.as_str()));
    let served = s.chain.server.fetch_bundle().await?;
    let names = regent_e2e::static_bundle::list(&served)?;
    assert!(!names.is_empty());

    // Fixing the test publishes the change.
    let tests = s.chain.repo.read("envoy/authz_test.rego")?;
    s.chain.repo.write(
        "envoy/authz_test.rego",
        &tests.replace(
            "test_reader_cannot_delete if {\n\tnot authz.allow.allowed with input as req(\"DELETE\", \"/api/items/1\", \"bob\")",
            "test_reader_cannot_delete if {\n\tnot authz.allow.allowed with input as req(\"DELETE\", \"/api/items/1\", \"carol\")",
        ),
    )?;
    let fixed = s.chain.repo.commit_and_push("fix the test")?;
    s.sidecar.wait_revision(&fixed, FLIP_TIMEOUT).await?;
    assert_eq!(bob_delete(&s.envoy).await?, 200);
    h.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_bundle_is_refused_and_the_old_answer_stays() -> Result<()> {
    let mut h = common::harness("tampered_bundle")?;
    let issuer = Issuer::generate()?;
    let mut chain = common::Chain::start(&h, &issuer).await?;
    // The sidecar syncs from a plain static server (think object storage) that first serves the
    // genuine signed bundle, then versions an attacker edited without the signing key.
    let genuine = chain.server.fetch_bundle().await?;
    let statics = StaticBundleServer::start(genuine.clone()).await?;
    let mut opts = chain.sidecar_options(&h)?;
    opts.bundle_url = Some(statics.url());
    let mut sidecar = regent_e2e::sidecar::Sidecar::start(&h, "sidecar", opts).await?;
    sidecar
        .wait_revision(&chain.seed_commit, FLIP_TIMEOUT)
        .await?;
    let envoy = common::envoy(&h, "envoy", &sidecar, &chain.ups, false).await?;
    assert_eq!(bob_delete(&envoy).await?, 403);

    let failures = |n: f64| {
        let sidecar = &sidecar;
        async move {
            let v = sidecar
                .metric_sum(
                    "regent_bundle_activation_failures_total",
                    &["bundle=\"envoy\"", "reason=\"signature\""],
                )
                .await?;
            Ok((v >= n).then_some(()))
        }
    };
    let before = sidecar
        .metric_sum(
            "regent_bundle_activation_failures_total",
            &["bundle=\"envoy\"", "reason=\"signature\""],
        )
        .await?;

    // 1. The policy edited so any role may delete.
    let evil_rego = tamper(&genuine, "envoy/authz.rego", |t| {
        t.replace("\"admin\" in roles", "count(roles) > 0")
    })?;
    statics.set(evil_rego)?;
    wait::until(
        "the sidecar to refuse the tampered policy",
        FLIP_TIMEOUT,
        || failures(before + 1.0),
    )
    .await?;
    assert_eq!(bob_delete(&envoy).await?, 403);

    // 2. Only the data edited (bob made admin).
    let evil_data = tamper(&genuine, "roles/data.json", |_| BOB_ADMIN.to_string())?;
    statics.set(evil_data)?;
    wait::until(
        "the sidecar to refuse the tampered data",
        FLIP_TIMEOUT,
        || failures(before + 2.0),
    )
    .await?;
    assert_eq!(bob_delete(&envoy).await?, 403);
    assert_eq!(
        sidecar.revision().await?.as_deref(),
        Some(chain.seed_commit.as_str())
    );

    // The refusals did not wedge the sync: the next genuine bundle (a real push, signed by the
    // server) placed at the same URL is activated.
    chain.repo.write("roles/data.json", CAROL_ADMIN)?;
    let next = chain.repo.commit_and_push("grant carol admin")?;
    chain.server.wait_processed(&next, FLIP_TIMEOUT).await?;
    let published = chain.server.fetch_bundle().await?;
    assert_ne!(published, genuine);
    statics.set(published)?;
    sidecar.wait_revision(&next, FLIP_TIMEOUT).await?;
    assert_eq!(carol_delete(&envoy).await?, 200);
    assert_eq!(bob_delete(&envoy).await?, 403);
    h.pass();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_continue_without_the_server_and_after_a_sidecar_restart() -> Result<()> {
    let mut h = common::harness("server_down")?;
    let issuer = Issuer::generate()?;
    let mut s = common::ServerStack::start(&h, &issuer).await?;
    let c = common::client();
    let bob_get = || c.get(s.envoy.url("/api/items")).header("x-user", "bob");
    assert_eq!(send(bob_get()).await?.status, 200);
    assert_eq!(bob_delete(&s.envoy).await?, 403);

    s.chain.server.stop();
    // Wait until the sidecar has tried and failed to reach the server at least once.
    let sidecar = &s.sidecar;
    wait::until("a failed download", FLIP_TIMEOUT, || async move {
        let n = sidecar
            .metric_sum("regent_bundle_downloads_total", &["result=\"error\""])
            .await?;
        Ok((n >= 1.0).then_some(()))
    })
    .await?;
    assert_eq!(send(bob_get()).await?.status, 200);
    assert_eq!(bob_delete(&s.envoy).await?, 403);

    // Restart with the server still down: the persisted bundle is verified and activated.
    s.sidecar.restart().await?;
    s.sidecar
        .wait_revision(&s.chain.seed_commit, FLIP_TIMEOUT)
        .await?;
    let bob_get = || c.get(s.envoy.url("/api/items")).header("x-user", "bob");
    assert_eq!(send(bob_get()).await?.status, 200);
    assert_eq!(bob_delete(&s.envoy).await?, 403);
    h.pass();
    Ok(())
}
