//! `regent test` refuses a policy that calls a builtin Regent does not support (`http.send`,
//! which regorus would leave undefined on every call), naming the file and line.

mod cli_support;

use cli_support::*;

/// Calls `http.send` on line 8.
const CALLS_HTTP_SEND: &str = r#"package envoy.remote

import rego.v1

# http.send in a comment is not a call.

allowed if {
	resp := http.send({"method": "GET", "url": "http://authz.internal/check"})
	resp.status_code == 200
}
"#;

#[test]
fn a_policy_calling_http_send_cannot_be_tested() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(tmp.path());
    write_tree(&dir, &[("envoy/remote.rego", CALLS_HTTP_SEND)]);

    let o = regent(tmp.path(), &["test", "policies"]);
    assert_clean_error(&o, "(envoy/remote.rego:8)");
    let err = stderr(&o);
    assert!(
        err.contains(
            "policies/envoy/remote.rego:8: http.send is not supported by Regent yet \
             (it would always be undefined)"
        ),
        "{err}"
    );
    assert!(!stdout(&o).contains("PASS"), "no test runs: {}", stdout(&o));

    let o = regent(tmp.path(), &["test", "policies", "--format", "json"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["error"]["file"], "envoy/remote.rego", "{doc}");
    assert_eq!(doc["error"]["line"], 8, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("http.send is not supported by Regent yet"),
        "{doc}"
    );
}

#[test]
fn mentioning_http_send_without_calling_it_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(tmp.path());
    write_tree(
        &dir,
        &[(
            "envoy/notes.rego",
            "package envoy.notes\n\nimport rego.v1\n\n# http.send(req)\nhint := \"http.send(req) is not available\"\n",
        )],
    );
    let o = regent(tmp.path(), &["test", "policies"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("2 passed, 0 failed"), "{}", stdout(&o));
}
