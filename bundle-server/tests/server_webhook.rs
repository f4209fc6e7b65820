//! The git webhook: GitHub HMAC and GitLab token checks (bad ones build nothing), malformed and
//! oversized bodies, and the documented setup: a bare repository whose post-receive hook calls
//! the webhook with curl, so that a plain `git push` publishes.

mod server_support;

use std::time::Duration;

use regent_bundle_server::server::auth::github_signature;
use reqwest::StatusCode;
use server_support::*;

const SECRET: &str = "webhook-secret-for-tests";

/// A repository with one published commit and a server whose webhook uses [`SECRET`] (written
/// with a trailing newline, as editors do) and the extra `webhook` keys `more`.
struct Setup {
    repo: PolicyRepo,
    first: String,
    srv: regent_bundle_server::server::Running,
    secret_file: std::path::PathBuf,
    // Bind these (`_keys, _data`) when destructuring: `..` would drop them, deleting the data
    // dir and the keys under the running server.
    _keys: Keys,
    _data: tempfile::TempDir,
}

async fn setup(more: &str) -> Setup {
    let repo = PolicyRepo::new();
    let first = git(&repo.work, &["rev-parse", "HEAD"]);
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let secret_file = data.path().join("webhook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let extra = format!(
        "webhook: {{secret_file: {}, {more}}}",
        secret_file.display()
    );
    let srv = start(config(&repo.origin, data.path(), &keys.private, &extra)).await;
    wait_published(&srv, "authz", &first).await;
    // Ready is set just after the publication that wait_published sees.
    let ready = eventually(Duration::from_secs(30), || async {
        srv.is_ready().then_some(())
    })
    .await;
    assert!(ready.is_some(), "the first build makes the server ready");
    Setup {
        repo,
        first,
        srv,
        secret_file,
        _keys: keys,
        _data: data,
    }
}

/// `POST` to the webhook, signed with [`SECRET`] as GitHub signs.
async fn post_signed(hook: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .post(hook)
        .header(
            "x-hub-signature-256",
            github_signature(SECRET.as_bytes(), &body),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn builds(srv: &regent_bundle_server::server::Running) -> f64 {
    let page = metrics(srv).await;
    ["published", "rejected", "error"]
        .iter()
        .filter_map(|r| metric(&page, &format!("regent_builds_total{{result=\"{r}\"}}")))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_authentication_and_bad_input() {
    let Setup {
        repo,
        first,
        srv,
        _keys,
        _data,
        ..
    } = setup("max_body_bytes: 4096, wait_seconds: 60").await;
    let c = client();
    let hook = url(&srv, "/v1/hooks/git");
    let second = {
        repo.write("authz/extra.rego", "package envoy.authz\n\nx := 1\n");
        repo.commit_push("second")
    };
    let before = builds(&srv).await;
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();

    // Bad HMAC, signature over another body, malformed header, no header, wrong GitLab token:
    // all 401, and no build runs.
    let bad = [
        ("x-hub-signature-256", github_signature(b"wrong", &body)),
        (
            "x-hub-signature-256",
            github_signature(SECRET.as_bytes(), b"{}"),
        ),
        ("x-hub-signature-256", "sha256=zz".to_string()),
        ("x-gitlab-token", "wrong".to_string()),
    ];
    for (name, value) in bad {
        let resp = c
            .post(&hook)
            .header(name, value)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let e: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(e["code"], "bad_signature");
    }
    let resp = c.post(&hook).body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Oversized body: 413 before anything else.
    let big = vec![b' '; 5000];
    let resp = post_signed(&hook, big).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let e: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(e["code"], "body_too_large");

    // Correctly signed but not JSON: 400.
    let junk = b"ref=refs/heads/main".to_vec();
    let resp = post_signed(&hook, junk).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Another branch is acknowledged and ignored.
    let other = br#"{"ref":"refs/heads/feature"}"#.to_vec();
    let resp = post_signed(&hook, other).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let r: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(r["result"], "ignored");

    assert_eq!(builds(&srv).await, before, "no build ran");
    assert_eq!(srv.published_revisions()["authz"], first);

    // A good GitHub signature builds, and the response carries the outcome.
    let resp = c
        .post(&hook)
        .header("x-github-event", "push")
        .header(
            "x-hub-signature-256",
            github_signature(SECRET.as_bytes(), &body),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let r: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(r["build"]["result"], "published", "{r}");
    assert_eq!(r["published_commit"], second.as_str());
    assert_eq!(srv.published_revisions()["authz"], second);

    // A GitLab token works too; a refused commit is reported in the response.
    repo.write("authz/broken.rego", "package envoy.authz\n\nallow if {\n");
    let broken = repo.commit_push("broken");
    let resp = c
        .post(&hook)
        .header("x-gitlab-token", SECRET)
        .header("x-gitlab-event", "Push Hook")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let r: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(r["build"]["result"], "rejected", "{r}");
    assert_eq!(r["build"]["commit"], broken.as_str());
    assert_eq!(r["build"]["failures"][0]["file"], "authz/broken.rego");
    assert_eq!(r["published_commit"], second.as_str());
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_receive_hook_publishes_a_plain_push() {
    let Setup {
        repo,
        srv,
        secret_file,
        _keys,
        _data,
        ..
    } = setup("wait_seconds: 60").await;

    // The hook script documented in docs/server.md, installed as it would be on a git host.
    let hook_path = repo.origin.join("hooks/post-receive");
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/post-receive.sh"),
    )
    .expect("docs/post-receive.sh");
    std::fs::write(&hook_path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    git(
        &repo.origin,
        &["config", "regent.url", &url(&srv, "/v1/hooks/git")],
    );
    git(
        &repo.origin,
        &["config", "regent.secretfile", secret_file.to_str().unwrap()],
    );

    repo.write("authz/extra.rego", "package envoy.authz\n\nx := 1\n");
    // commit_push returns once `git push` (and so the hook) has finished.
    let pushed = repo.commit_push("pushed with a hook");
    let ok = eventually(Duration::from_secs(60), || async {
        (srv.published_revisions().get("authz") == Some(&pushed)).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "the push was published: {}",
        status(&srv).await
    );

    // git allows '"' in a branch name; the hook must still send JSON (the server then ignores
    // the branch instead of answering 400).
    let out = std::process::Command::new("git")
        .current_dir(&repo.work)
        .args(["push", "origin", "HEAD:refs/heads/we\"ird"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "regent: refs/heads/we\"ird is not the tracked branch refs/heads/main: nothing to publish"
        ),
        "a short summary by default: {stderr}"
    );
    // The server's JSON answer, when the repository asks for it.
    git(&repo.origin, &["config", "regent.json", "true"]);
    let out = std::process::Command::new("git")
        .current_dir(&repo.work)
        .args(["push", "origin", "HEAD:refs/heads/other"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(r#""result":"ignored""#), "{stderr}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_202_when_the_build_outlasts_its_wait() {
    let Setup {
        repo,
        srv,
        _keys,
        _data,
        ..
    } = setup("wait_seconds: 0").await;
    repo.write("authz/extra.rego", "package envoy.authz\n\nx := 1\n");
    let second = repo.commit_push("second");
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let resp = post_signed(&url(&srv, "/v1/hooks/git"), body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let r: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(r["result"], "building");
    // The build it requested still runs and publishes.
    wait_published(&srv, "authz", &second).await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_webhooks_build_each_commit_once() {
    let Setup {
        repo,
        srv,
        _keys,
        _data,
        ..
    } = setup("wait_seconds: 60").await;
    repo.write("authz/extra.rego", "package envoy.authz\n\nx := 1\n");
    let second = repo.commit_push("second");
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let sig = github_signature(SECRET.as_bytes(), &body);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(
                client()
                    .post(url(&srv, "/v1/hooks/git"))
                    .header("x-hub-signature-256", sig.clone())
                    .body(body.clone())
                    .send(),
            )
        })
        .collect();
    for c in calls {
        let resp = c.await.unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let r: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(r["published_commit"], second.as_str(), "{r}");
    }
    // One build for the first commit at start, one for the second: never two at once, and a
    // commit already gated is not gated again.
    let page = metrics(&srv).await;
    assert_eq!(
        metric(&page, "regent_builds_total{result=\"published\"}"),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "regent_webhook_requests_total{result=\"accepted\"}"),
        Some(8.0)
    );
    srv.shutdown().await;
}
