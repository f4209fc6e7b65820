//! Publishing: a push becomes a signed bundle per configured directory; a commit that fails to
//! compile or whose tests fail is refused and the previous revision stays served; restarts serve
//! the persisted bundles at once; the publish dir is written.

mod server_support;

use std::time::Duration;

use reqwest::StatusCode;
use server_support::*;

const BUILD: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_publishes_signed_bundles_and_bad_commits_are_refused() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let publish = tempfile::tempdir().unwrap();
    let extra = format!("publish_dir: {}", publish.path().display());
    let srv = start(config(&repo.origin, data.path(), &keys.private, &extra)).await;
    wait_published(&srv, "authz", &first).await;
    wait_published(&srv, "platform", &first).await;
    assert!(srv.is_ready());

    // Served, signed by k1, revision = commit, roots from the config, tests left out.
    let resp = client()
        .get(url(&srv, "/bundles/authz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.openpolicyagent.bundles"
    );
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let bytes = resp.bytes().await.unwrap();
    let (bundle, sig) = verify(&bytes, &keys.keyring("k1"));
    assert_eq!(sig.kid, "k1");
    assert_eq!(bundle.revision(), first);
    assert_eq!(sig.revision.as_deref(), Some(first.as_str()));
    assert_eq!(bundle.manifest().effective_roots(), vec!["envoy/authz"]);
    assert!(bundle.file("policy.rego").is_some());
    assert!(bundle.file("policy_test.rego").is_none());
    use sha2::Digest;
    assert_eq!(
        etag,
        format!("\"{}\"", hex::encode(sha2::Sha256::digest(&bytes)))
    );

    // The publish dir holds the same bytes and ETag.
    assert_eq!(
        std::fs::read(publish.path().join("authz.tar.gz")).unwrap(),
        bytes.to_vec()
    );
    assert_eq!(
        std::fs::read_to_string(publish.path().join("authz.tar.gz.etag"))
            .unwrap()
            .trim(),
        etag
    );

    {
        // Readable by a web server running as another user.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(publish.path().join("authz.tar.gz"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    // A commit whose test fails is refused; the first revision stays served.
    repo.write(
        "authz/policy.rego",
        &POLICY.replace("== \"GET\"", "== \"POST\""),
    );
    let failing = repo.commit_push("break the policy");
    assert!(srv.build_now(BUILD).await);
    let st = status(&srv).await;
    assert_eq!(st["last_build"]["result"], "rejected", "{st}");
    assert_eq!(st["last_build"]["commit"], failing.as_str());
    let f = &st["last_build"]["failures"][0];
    assert_eq!(f["bundle"], "authz");
    assert_eq!(f["reason"], "test");
    let failed: Vec<&str> = f["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(failed.contains(&"test_get_allowed"), "{f}");
    assert!(f["tests"][0]["file"]
        .as_str()
        .unwrap()
        .starts_with("authz/"));
    assert_eq!(st["bundles"]["authz"]["revision"], first.as_str());
    assert_eq!(srv.published_revisions()["authz"], first);
    let page = metrics(&srv).await;
    assert_eq!(
        metric(
            &page,
            "regent_publish_failures_total{bundle=\"authz\",reason=\"test\"}"
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "regent_builds_total{result=\"rejected\"}"),
        Some(1.0)
    );
    let info = format!("regent_published_revision_info{{bundle=\"authz\",revision=\"{first}\"}}");
    assert_eq!(metric(&page, &info), Some(1.0), "{page}");

    // A syntax error is refused with the file and line.
    repo.write("authz/policy.rego", POLICY);
    repo.write(
        "authz/broken.rego",
        "package envoy.authz\n\nallow if {\n  input.x ==\n",
    );
    let broken = repo.commit_push("syntax error");
    assert!(srv.build_now(BUILD).await);
    let st = status(&srv).await;
    assert_eq!(st["last_build"]["commit"], broken.as_str(), "{st}");
    assert_eq!(st["last_build"]["result"], "rejected");
    let f = &st["last_build"]["failures"][0];
    assert_eq!(f["bundle"], "authz");
    assert_eq!(f["file"], "authz/broken.rego", "{f}");
    assert!(f["line"].as_u64().is_some(), "{f}");
    assert_eq!(srv.published_revisions()["authz"], first);

    // A call to a function that does not exist (regorus only notices at evaluation).
    std::fs::remove_file(repo.work.join("authz/broken.rego")).unwrap();
    repo.write(
        "authz/policy.rego",
        &format!("{POLICY}\nallow if no_such.function(input)\n"),
    );
    let unknown = repo.commit_push("unknown function");
    assert!(srv.build_now(BUILD).await);
    let st = status(&srv).await;
    assert_eq!(st["last_build"]["commit"], unknown.as_str(), "{st}");
    assert_eq!(st["last_build"]["result"], "rejected", "{st}");
    assert_eq!(srv.published_revisions()["authz"], first);

    // A missing entrypoint is refused.
    repo.write("authz/policy.rego", &POLICY.replace("allow", "permit"));
    repo.write(
        "authz/policy_test.rego",
        "package envoy.authz_test\n\ntest_ok if true\n",
    );
    repo.commit_push("rename the decision");
    assert!(srv.build_now(BUILD).await);
    let st = status(&srv).await;
    assert_eq!(st["last_build"]["result"], "rejected", "{st}");
    assert_eq!(
        st["last_build"]["failures"][0]["reason"], "entrypoint",
        "{st}"
    );

    // Fixed: published, and the refusal is cleared.
    repo.write("authz/policy.rego", POLICY);
    repo.write("authz/policy_test.rego", POLICY_TEST);
    let fixed = repo.commit_push("fix");
    assert!(srv.build_now(BUILD).await);
    wait_published(&srv, "authz", &fixed).await;
    wait_published(&srv, "platform", &fixed).await;
    let st = status(&srv).await;
    assert_eq!(st["last_build"]["result"], "published", "{st}");
    assert!(st["last_rejected"].is_null(), "{st}");
    assert_eq!(st["published_commit"], fixed.as_str());
    let page = metrics(&srv).await;
    assert_eq!(
        metric(&page, &info),
        None,
        "old revision label removed: {page}"
    );

    // Restart: the persisted bundles are served at once, and the same commit is not rebuilt.
    let old = client()
        .get(url(&srv, "/bundles/authz"))
        .send()
        .await
        .unwrap();
    let old_etag = old.headers()["etag"].to_str().unwrap().to_string();
    srv.shutdown().await;
    let srv = start(config(&repo.origin, data.path(), &keys.private, &extra)).await;
    assert!(srv.is_ready(), "restored bundles make the server ready");
    assert_eq!(srv.published_revisions()["authz"], fixed);
    let resp = client()
        .get(url(&srv, "/bundles/authz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), old_etag);
    assert!(srv.build_now(BUILD).await);
    let resp = client()
        .get(url(&srv, "/bundles/authz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["etag"].to_str().unwrap(),
        old_etag,
        "same commit, same bundle"
    );
    srv.shutdown().await;

    // Key rotation: add k2 and make it the signer. The k1-signed bundles are still restored
    // (k1 is configured), then the same commit is re-signed with k2.
    let k2 = Keys::new();
    let mut cfg = config(&repo.origin, data.path(), &keys.private, &extra);
    cfg.signing
        .keys
        .push(regent_bundle_server::server::config::SigningKeyConfig {
            kid: "k2".into(),
            private_key_file: k2.private.clone(),
        });
    cfg.signing.active_kid = "k2".into();
    let srv = start(cfg).await;
    assert!(srv.is_ready());
    assert!(srv.build_now(BUILD).await);
    let resp = client()
        .get(url(&srv, "/bundles/authz"))
        .send()
        .await
        .unwrap();
    let (bundle, sig) = verify(&resp.bytes().await.unwrap(), &k2.keyring("k2"));
    assert_eq!(sig.kid, "k2");
    assert_eq!(bundle.revision(), fixed);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_304_long_poll_and_errors() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let srv = start(config(
        &repo.origin,
        data.path(),
        &keys.private,
        "distribution: {max_long_poll_seconds: 30}",
    ))
    .await;
    wait_published(&srv, "authz", &first).await;
    let c = client();
    let resp = c.get(url(&srv, "/bundles/authz")).send().await.unwrap();
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();

    // Conditional GET.
    let resp = c
        .get(url(&srv, "/bundles/authz"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    let resp = c
        .get(url(&srv, "/bundles/authz"))
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Unknown bundle, unknown endpoint: JSON 404s.
    let resp = c.get(url(&srv, "/bundles/nope")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bundle_not_found");
    let resp = c.get(url(&srv, "/v2/whatever")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    let resp = c.post(url(&srv, "/bundles/authz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    let resp = c.get(url(&srv, "/bundles/%FF")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bad_bundle_name");

    // Several long polls wait; a push wakes them all with the new bundle.
    let mut waiting = Vec::new();
    for _ in 0..5 {
        let req = c
            .get(url(&srv, "/bundles/authz"))
            .header("If-None-Match", &etag)
            .header("Prefer", "modes=snapshot,delta;wait=30");
        waiting.push(tokio::spawn(req.send()));
    }
    let parked = eventually(Duration::from_secs(10), || async {
        let page = metrics(&srv).await;
        (metric(&page, "regent_long_polls_waiting") == Some(5.0)).then_some(())
    })
    .await;
    assert!(parked.is_some(), "the long polls are parked");
    for w in &waiting {
        assert!(!w.is_finished(), "a long poll returned before the push");
    }
    repo.write(
        "authz/extra.rego",
        "package envoy.authz\n\nreason := \"ok\"\n",
    );
    let second = repo.commit_push("second");
    assert!(srv.build_now(BUILD).await);
    for w in waiting {
        let resp = w.await.unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.bytes().await.unwrap();
        let (b, _) = verify(&bytes, &keys.keyring("k1"));
        assert_eq!(b.revision(), second);
    }

    // A long poll with nothing new ends in a 304 once its wait is over.
    let resp = c.get(url(&srv, "/bundles/authz")).send().await.unwrap();
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let resp = c
        .get(url(&srv, "/bundles/authz"))
        .header("If-None-Match", &etag)
        .header("Prefer", "modes=snapshot,delta;wait=1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_branch_is_an_error_and_nothing_is_served() {
    let repo = PolicyRepo::new();
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(&repo.origin, data.path(), &keys.private, "");
    cfg.git.branch = "does-not-exist".into();
    let srv = start(cfg).await;
    let st = eventually(Duration::from_secs(30), || async {
        let st = status(&srv).await;
        (!st["last_build"].is_null()).then_some(st)
    })
    .await
    .expect("a build attempt is reported");
    assert_eq!(st["last_build"]["result"], "error", "{st}");
    assert!(st["last_build"]["error"]
        .as_str()
        .unwrap()
        .contains("does-not-exist"));
    let resp = client()
        .get(url(&srv, "/bundles/authz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bundle_not_published");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_identical_bundles() {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(config(&repo.origin, d1.path(), &keys.private, "")).await;
    let b = start(config(&repo.origin, d2.path(), &keys.private, "")).await;
    wait_published(&a, "authz", &first).await;
    wait_published(&b, "authz", &first).await;
    for name in ["authz", "platform"] {
        let path = format!("/bundles/{name}");
        let ra = client().get(url(&a, &path)).send().await.unwrap();
        let rb = client().get(url(&b, &path)).send().await.unwrap();
        assert_eq!(ra.headers()["etag"], rb.headers()["etag"]);
        let (ba, bb) = (ra.bytes().await.unwrap(), rb.bytes().await.unwrap());
        assert_eq!(ba, bb, "{name}: same commit and key, same bytes");
        let (_, sig) = verify(&ba, &keys.keyring("k1"));
        let committed: i64 = git(&repo.work, &["log", "-1", "--format=%ct"])
            .parse()
            .unwrap();
        assert_eq!(sig.iat, Some(committed));
    }
    a.shutdown().await;
    b.shutdown().await;
}
