//! Shared fixtures of the bundle-server tests: real git repositories (bare origin + working
//! clone) in temp dirs, signing keys, a server started in-process on 127.0.0.1:0.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use regent_bundle::signing::{self, Keyring, VerifiedSignature, VerifyOptions};
use regent_bundle::{Bundle, UnpackLimits};
use regent_bundle_server::server::{self, Running, ServerConfig};

pub(crate) const POLICY: &str = r#"package envoy.authz

default allow := false

allow if input.attributes.request.http.method == "GET"
"#;

pub(crate) const POLICY_TEST: &str = r#"package envoy.authz_test

import data.envoy.authz

test_get_allowed if {
	authz.allow with input as {"attributes": {"request": {"http": {"method": "GET"}}}}
}

test_post_denied if {
	not authz.allow with input as {"attributes": {"request": {"http": {"method": "POST"}}}}
}
"#;

pub(crate) const PLATFORM: &str = r#"package platform.common

admins := {"alice"}
"#;

/// Runs git in `dir`, panicking with its stderr on failure.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Test Author",
            "-c",
            "user.email=author@example.com",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare "origin" repository and a working clone that commits and pushes to it.
pub(crate) struct PolicyRepo {
    pub dir: tempfile::TempDir,
    pub origin: PathBuf,
    pub work: PathBuf,
}

impl PolicyRepo {
    /// Origin with a first commit: bundle `authz` (policy + passing tests) and `platform`.
    pub(crate) fn new() -> PolicyRepo {
        let dir = tempfile::tempdir().expect("tempdir");
        let origin = dir.path().join("origin.git");
        let work = dir.path().join("work");
        git(
            dir.path(),
            &["init", "--bare", "--quiet", "-b", "main", "origin.git"],
        );
        git(dir.path(), &["init", "--quiet", "-b", "main", "work"]);
        git(
            &work,
            &[
                "remote",
                "add",
                "origin",
                origin.to_str().expect("utf-8 path"),
            ],
        );
        let repo = PolicyRepo { dir, origin, work };
        repo.write("authz/policy.rego", POLICY);
        repo.write("authz/policy_test.rego", POLICY_TEST);
        repo.write("platform/common.rego", PLATFORM);
        repo.write("README.md", "policies\n");
        repo.commit_push("initial policies");
        repo
    }

    pub(crate) fn write(&self, path: &str, content: &str) {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, content).expect("write");
    }

    /// Commits everything and pushes to origin; returns the commit SHA.
    pub(crate) fn commit_push(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "--quiet", "--allow-empty", "-m", message],
        );
        git(&self.work, &["push", "--quiet", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// A signing key pair written to files.
pub(crate) struct Keys {
    pub dir: tempfile::TempDir,
    pub private: PathBuf,
    pub public_pem: String,
}

impl Keys {
    pub(crate) fn new() -> Keys {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private, public) = signing::generate_key_pem();
        let p = dir.path().join("signing.pem");
        std::fs::write(&p, private).expect("write key");
        Keys {
            dir,
            private: p,
            public_pem: public,
        }
    }

    pub(crate) fn keyring(&self, kid: &str) -> Keyring {
        let mut k = Keyring::new();
        k.insert_pem(kid, &self.public_pem).expect("public key");
        k
    }
}

/// Base configuration: bundles `authz` (entrypoint envoy/authz/allow) and `platform`, no
/// polling (builds on start and on demand only), listening on 127.0.0.1:0.
pub(crate) fn config_yaml(repo: &Path, data_dir: &Path, key: &Path, extra: &str) -> String {
    format!(
        r#"
listen: "127.0.0.1:0"
data_dir: {data}
git:
  repo: {repo}
  branch: main
  poll_interval_seconds: 0
bundles:
  - name: authz
    dir: authz
    roots: [envoy/authz]
    entrypoints: [envoy/authz/allow]
  - name: platform
    dir: platform
    roots: [platform]
signing:
  keys: [{{kid: k1, private_key_file: {key}}}]
  active_kid: k1
{extra}
"#,
        data = data_dir.display(),
        repo = repo.display(),
        key = key.display(),
    )
}

pub(crate) fn config(repo: &Path, data_dir: &Path, key: &Path, extra: &str) -> ServerConfig {
    ServerConfig::from_yaml(&config_yaml(repo, data_dir, key, extra)).expect("config")
}

pub(crate) async fn start(cfg: ServerConfig) -> Running {
    server::start(cfg).await.expect("server starts")
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

pub(crate) fn url(r: &Running, path: &str) -> String {
    format!("http://{}{}", r.addr, path)
}

/// GET /v1/status as JSON.
pub(crate) async fn status(r: &Running) -> serde_json::Value {
    client()
        .get(url(r, "/v1/status"))
        .send()
        .await
        .expect("status request")
        .json()
        .await
        .expect("status json")
}

#[allow(unused_imports)] // each test binary uses part of this module
pub(crate) use regent_testkit::eventually_some as eventually;

/// A `regent serve` process started from the binary, killed when dropped, however the test ends.
pub(crate) struct ServeProcess {
    child: std::process::Child,
    /// The address it logged at start-up.
    pub addr: String,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeProcess {
    /// Spawns `cmd` (a `regent serve` command line) and waits (bounded) for the listening
    /// address in its start-up log line.
    pub(crate) async fn spawn(mut cmd: Command) -> ServeProcess {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning regent serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let addr = tokio::task::spawn_blocking(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.ok()?;
                if let Some(i) = line.find("addr=") {
                    let rest = &line[i + 5..];
                    let end = rest.find(' ').unwrap_or(rest.len());
                    return Some(rest[..end].to_string());
                }
            }
            None
        });
        // Kept in a ServeProcess from here on, so a failed wait still kills it.
        let mut proc = ServeProcess {
            child,
            addr: String::new(),
        };
        proc.addr = tokio::time::timeout(Duration::from_secs(60), addr)
            .await
            .expect("server logs its address in time")
            .expect("log reader")
            .expect("address in the log");
        proc
    }

    /// The bytes of bundle `name` once the server serves it (bounded wait).
    pub(crate) async fn published(&self, name: &str) -> Vec<u8> {
        let c = client();
        let bundle_url = format!("http://{}/bundles/{name}", self.addr);
        eventually(Duration::from_secs(60), || async {
            let r = c.get(&bundle_url).send().await.ok()?;
            (r.status() == 200).then_some(())?;
            r.bytes().await.ok().map(|b| b.to_vec())
        })
        .await
        .expect("the bundle is published")
    }
}

/// Waits until `bundle` is served at `revision`.
pub(crate) async fn wait_published(r: &Running, bundle: &str, revision: &str) {
    let ok = eventually(Duration::from_secs(60), || async {
        (r.published_revisions().get(bundle).map(String::as_str) == Some(revision)).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "bundle {bundle} not published at {revision}; status: {}",
        status(r).await
    );
}

/// Unpacks and verifies a served bundle.
pub(crate) fn verify(bytes: &[u8], keyring: &Keyring) -> (Bundle, VerifiedSignature) {
    let b = Bundle::from_tar_gz(bytes, &UnpackLimits::default()).expect("valid bundle");
    let sig = signing::verify(&b, keyring, &VerifyOptions::default()).expect("signature verifies");
    (b, sig)
}

#[allow(unused_imports)] // each test binary uses part of this module
pub(crate) use regent_testkit::metric;

pub(crate) async fn metrics(r: &Running) -> String {
    client()
        .get(url(r, "/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// A sidecar status report (OPA's status API shape) for bundle `authz` at `revision`.
pub(crate) fn report(id: &str, revision: &str) -> serde_json::Value {
    serde_json::json!({
        "labels": {"id": id, "version": "1.0"},
        "bundles": {"authz": {"name": "authz", "active_revision": revision}},
        "plugins": {"bundle": {"state": "OK"}}
    })
}
