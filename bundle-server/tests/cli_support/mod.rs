//! Helpers for the CLI tests: a policy directory in a temp dir and the real `regent` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

/// A decision policy in OPA-Envoy's object form, its data, and its tests (all passing).
pub(crate) const POLICY: &str = r#"package envoy.authz

import rego.v1

default allow := {"allowed": false, "http_status": 403, "body": "denied by policy"}

allow := {
	"allowed": true,
	"headers": {"x-user": user},
	"request_headers_to_remove": ["x-secret"],
} if {
	input.attributes.request.http.method == "GET"
	user := input.attributes.request.http.headers["x-user"]
	user in data.authz.users
}
"#;

pub(crate) const DATA: &str = r#"{"users": ["alice"]}"#;

pub(crate) const TESTS: &str = r#"package envoy.authz_test

import rego.v1
import data.envoy.authz

request(method, user) := {"attributes": {"request": {"http": {"method": method, "headers": {"x-user": user}}}}}

test_alice_may_get if {
	authz.allow.allowed with input as request("GET", "alice")
}

test_bob_is_denied if {
	d := authz.allow with input as request("GET", "bob")
	print("decision for bob:", d.http_status)
	not d.allowed
}
"#;

/// A test that fails and prints before failing.
pub(crate) const FAILING_TEST: &str = r#"package envoy.extra_test

import rego.v1
import data.envoy.authz

test_post_allowed if {
	print("trying POST as alice")
	authz.allow.allowed with input as {"attributes": {"request": {"http": {"method": "POST", "headers": {"x-user": "alice"}}}}}
}
"#;

/// Writes `files` (relative path → contents) under `dir`.
pub(crate) fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (rel, contents) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }
}

/// A policy directory with the policy, its data and passing tests.
pub(crate) fn policy_dir(root: &Path) -> PathBuf {
    let dir = root.join("policies");
    write_tree(
        &dir,
        &[
            ("envoy/authz.rego", POLICY),
            ("envoy/authz_test.rego", TESTS),
            ("authz/data.json", DATA),
        ],
    );
    dir
}

/// The `regent` binary: cargo's when these helpers are built into the server's own tests,
/// `REGENT_BIN` (set by `e2e/e2e.sh`) when the end-to-end tests include them.
pub(crate) fn regent_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_regent") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(std::env::var("REGENT_BIN").expect("REGENT_BIN names the regent binary"))
        }
    }
}

/// The JOSE header of a signed bundle's (first) signature token: what `alg` and `kid` it names.
pub(crate) fn token_header(bundle: &regent_bundle::Bundle) -> Value {
    use base64::Engine as _;
    let sigs: Value =
        serde_json::from_slice(bundle.file(".signatures.json").expect("signed")).unwrap();
    let token = sigs["signatures"][0].as_str().expect("one token");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').next().unwrap())
        .unwrap();
    serde_json::from_slice(&header).unwrap()
}

/// Runs `regent` with `args` in `cwd`, stdin closed.
pub(crate) fn regent(cwd: &Path, args: &[&str]) -> Output {
    Command::new(regent_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env_remove("SOURCE_DATE_EPOCH")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running regent")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code, with both streams in the panic message when the process died of a signal.
pub(crate) fn code(o: &Output) -> i32 {
    o.status
        .code()
        .unwrap_or_else(|| panic!("killed: {}\n{}", stdout(o), stderr(o)))
}

/// Asserts a clean failure: exit 1, a `regent: error:` line containing `needle`, no panic.
pub(crate) fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(code(o), 1, "stdout: {}\nstderr: {err}", stdout(o));
    assert!(err.contains("regent: error:"), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// An Envoy CheckRequest in JSON, for `regent check --request`.
pub(crate) fn request(method: &str, path: &str, user: &str) -> Value {
    json!({
        "attributes": {
            "source": {"address": {"socketAddress": {"address": "10.1.2.3", "portValue": 51000}}},
            "request": {
                "time": "2026-11-22T10:00:00Z",
                "http": {
                    "id": "req-1",
                    "method": method,
                    "path": path,
                    "host": "api.example.com",
                    "headers": {"x-user": user, "x-secret": "s"}
                }
            }
        }
    })
}

pub(crate) fn write_json(dir: &Path, name: &str, v: &Value) {
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

/// `regent check` on `req` in `cwd`: exit code, the answer as JSON, stderr.
pub(crate) fn check(cwd: &Path, bundle: &str, req: &str) -> (i32, Value, String) {
    let o = regent(
        cwd,
        &[
            "check",
            "--bundle",
            bundle,
            "--request",
            req,
            "--decision-id",
            "d-1",
        ],
    );
    let out = stdout(&o);
    let doc = serde_json::from_str(&out).unwrap_or(Value::Null);
    (code(&o), doc, stderr(&o))
}
