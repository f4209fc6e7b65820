//! The git hooks of a repository `regent serve` publishes from, installed from `docs/` as
//! docs/server.md says and driven by real `git push`es: pre-receive (`regent hook pre-receive`) refuses a
//! push of the tracked branch that the publish gate would refuse; post-receive prints the
//! server's short answer (published, or refused with the failing test's file:line).

mod server_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use server_support::*;

const SECRET: &str = "hook-secret-for-tests";

/// `POLICY_TEST` with `test_get_allowed` (line 5 of authz/policy_test.rego) made to fail.
fn failing_tests() -> String {
    POLICY_TEST.replacen(
        "authz.allow with input as {\"attributes\": {\"request\": {\"http\": {\"method\": \"GET\"}}}}",
        "authz.allow with input as {\"attributes\": {\"request\": {\"http\": {\"method\": \"PUT\"}}}}",
        1,
    )
}

fn install(repo: &PolicyRepo, name: &str) {
    use std::os::unix::fs::PermissionsExt;
    let script = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/{name}.sh")),
    )
    .expect("hook script in docs/");
    let path = repo.origin.join("hooks").join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Installs docs/pre-receive.sh with the server configuration written to `config`.
fn install_pre_receive(repo: &PolicyRepo, config: &Path) {
    install(repo, "pre-receive");
    git(
        &repo.origin,
        &["config", "regent.config", config.to_str().unwrap()],
    );
    git(
        &repo.origin,
        &["config", "regent.bin", env!("CARGO_BIN_EXE_regent")],
    );
}

fn commit(repo: &PolicyRepo, message: &str) -> String {
    git(&repo.work, &["add", "-A"]);
    git(
        &repo.work,
        &["commit", "--quiet", "--allow-empty", "-m", message],
    );
    git(&repo.work, &["rev-parse", "HEAD"])
}

/// `git push origin <refspec>` from the clone, whatever its outcome.
fn push(repo: &PolicyRepo, refspec: &str) -> Output {
    Command::new("git")
        .current_dir(&repo.work)
        .args(["push", "origin", refspec])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("running git push")
}

fn origin_main(repo: &PolicyRepo) -> String {
    git(&repo.origin, &["rev-parse", "refs/heads/main"])
}

struct Files {
    _keys: Keys,
    _data: tempfile::TempDir,
    config: PathBuf,
    yaml: String,
}

fn server_files(repo: &PolicyRepo, extra: &str) -> Files {
    let keys = Keys::new();
    let data = tempfile::tempdir().unwrap();
    let secret = data.path().join("webhook.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let extra = format!(
        "webhook: {{secret_file: {}, wait_seconds: 60}}\n{extra}",
        secret.display()
    );
    let yaml = config_yaml(&repo.origin, data.path(), &keys.private, &extra);
    let config = data.path().join("serve.yaml");
    std::fs::write(&config, &yaml).unwrap();
    Files {
        _keys: keys,
        config,
        yaml,
        _data: data,
    }
}

#[test]
fn pre_receive_refuses_a_failing_push_of_the_tracked_branch_only() {
    let repo = PolicyRepo::new();
    let files = server_files(&repo, "");
    install_pre_receive(&repo, &files.config);
    let before = origin_main(&repo);

    repo.write("authz/policy_test.rego", &failing_tests());
    let bad = commit(&repo, "tests fail");
    let out = push(&repo, "HEAD:main");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the push is refused: {stderr}");
    assert!(
        stderr.contains(&format!("push refused: commit {}", &bad[..12])),
        "{stderr}"
    );
    assert!(
        stderr.contains("authz: test test_get_allowed failed at authz/policy_test.rego:5"),
        "the failing test is named with file:line: {stderr}"
    );
    assert_eq!(origin_main(&repo), before, "main is unchanged");

    // The JSON form, when asked for.
    git(&repo.origin, &["config", "regent.json", "true"]);
    let out = push(&repo, "HEAD:main");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find_map(|l| l.trim_start_matches("remote: ").strip_prefix('{'))
        .unwrap_or_else(|| panic!("a JSON line: {stderr}"));
    let v: serde_json::Value = serde_json::from_str(&format!("{{{line}")).unwrap();
    assert_eq!(v["result"], "refused", "{v}");
    assert_eq!(v["commit"], bad.as_str(), "{v}");
    assert_eq!(
        v["failures"][0]["tests"][0]["name"], "test_get_allowed",
        "{v}"
    );
    git(&repo.origin, &["config", "--unset", "regent.json"]);

    // Other branches are not published: the same commit lands there, and can be deleted.
    let out = push(&repo, "HEAD:refs/heads/wip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(git(&repo.origin, &["rev-parse", "refs/heads/wip"]), bad);
    let out = push(&repo, ":refs/heads/wip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Fixed, it is accepted.
    repo.write("authz/policy_test.rego", POLICY_TEST);
    let good = commit(&repo, "tests pass again");
    let out = push(&repo, "HEAD:main");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "regent: {} passes the publish gate (bundles authz, platform)",
            &good[..12]
        )),
        "{stderr}"
    );
    assert_eq!(origin_main(&repo), good);
}

#[test]
fn pre_receive_refuses_broken_rego_and_a_missing_configuration() {
    let repo = PolicyRepo::new();
    let files = server_files(&repo, "");
    install_pre_receive(&repo, &files.config);
    let before = origin_main(&repo);

    repo.write(
        "authz/policy.rego",
        "package envoy.authz\n\ndefault allow := false\n\nallow if {\n",
    );
    commit(&repo, "syntax error");
    let out = push(&repo, "HEAD:main");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("authz: build failed at authz/policy.rego:")
            || stderr.contains("authz: compile failed at authz/policy.rego:"),
        "{stderr}"
    );
    assert_eq!(origin_main(&repo), before);

    // An installed hook without its configuration refuses rather than let anything through.
    git(&repo.origin, &["config", "--unset", "regent.config"]);
    repo.write("authz/policy.rego", POLICY);
    commit(&repo, "fixed");
    let out = push(&repo, "HEAD:main");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("regent.config is not set"), "{stderr}");

    // A configuration that does not load is named with its error.
    let bad_config = files.config.with_file_name("bad.yaml");
    std::fs::write(&bad_config, files.yaml.replace("bundles:", "bundels:")).unwrap();
    git(
        &repo.origin,
        &["config", "regent.config", bad_config.to_str().unwrap()],
    );
    let out = push(&repo, "HEAD:main");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert_eq!(origin_main(&repo), before);
}

/// Sets up the post-receive hook against `srv`.
fn install_post_receive(
    repo: &PolicyRepo,
    srv: &regent_bundle_server::server::Running,
    secret: &Path,
) {
    install(repo, "post-receive");
    git(
        &repo.origin,
        &["config", "regent.url", &url(srv, "/v1/hooks/git")],
    );
    git(
        &repo.origin,
        &["config", "regent.secretfile", secret.to_str().unwrap()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_repository_refuses_bad_pushes_and_publishes_good_ones() {
    let repo = PolicyRepo::new();
    let first = origin_main(&repo);
    let files = server_files(&repo, "");
    let cfg = regent_bundle_server::server::ServerConfig::from_yaml(&files.yaml).unwrap();
    let srv = start(cfg).await;
    wait_published(&srv, "authz", &first).await;
    install_pre_receive(&repo, &files.config);
    install_post_receive(&repo, &srv, &files.config.with_file_name("webhook.secret"));

    repo.write("authz/policy_test.rego", &failing_tests());
    commit(&repo, "tests fail");
    let out = tokio::task::block_in_place(|| push(&repo, "HEAD:main"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("test_get_allowed"), "{stderr}");
    assert_eq!(origin_main(&repo), first);

    repo.write("authz/policy_test.rego", POLICY_TEST);
    repo.write("authz/extra.rego", "package envoy.authz\n\nx := 1\n");
    let good = commit(&repo, "good change");
    let out = tokio::task::block_in_place(|| push(&repo, "HEAD:main"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The post-receive hook returns once the server has built the commit: published by then.
    assert!(
        stderr.contains(&format!(
            "regent: published commit {} \"good change\"",
            &good[..12]
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("bundle authz revision {good}")),
        "{stderr}"
    );
    assert_eq!(
        srv.published_revisions().get("authz"),
        Some(&good),
        "{stderr}"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_only_repository_lands_the_push_and_refuses_publication() {
    // A repository the server does not host (think GitHub): only the webhook runs.
    let repo = PolicyRepo::new();
    let first = origin_main(&repo);
    let files = server_files(&repo, "");
    let cfg = regent_bundle_server::server::ServerConfig::from_yaml(&files.yaml).unwrap();
    let srv = start(cfg).await;
    wait_published(&srv, "authz", &first).await;
    install_post_receive(&repo, &srv, &files.config.with_file_name("webhook.secret"));

    repo.write("authz/policy_test.rego", &failing_tests());
    let bad = commit(&repo, "tests fail");
    let out = tokio::task::block_in_place(|| push(&repo, "HEAD:main"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(origin_main(&repo), bad, "the push landed");
    assert!(
        stderr.contains(&format!(
            "regent: commit {} \"tests fail\" refused by the publish gate; still serving {}",
            &bad[..12],
            &first[..12]
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("authz: test test_get_allowed failed at authz/policy_test.rego:5"),
        "{stderr}"
    );
    assert_eq!(srv.published_revisions().get("authz"), Some(&first));
    srv.shutdown().await;
}
