//! `regent eval` and `regent check` on the real binary. `regent check` against the sidecar's own
//! `Authorizer` is `e2e/tests/check_vs_sidecar.rs`.

mod cli_support;

use cli_support::*;
use serde_json::{json, Value};

#[test]
fn check_allow_deny_and_bad_request() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    policy_dir(cwd);
    write_json(
        cwd,
        "alice.json",
        &request("GET", "/api/items?x=1", "alice"),
    );
    write_json(cwd, "bob.json", &request("GET", "/api/items", "bob"));
    write_json(cwd, "bad-path.json", &request("GET", "/api/%ff", "alice"));

    let (c, doc, err) = check(cwd, "policies", "alice.json");
    assert_eq!(c, 0, "{doc}{err}");
    assert_eq!(doc["allowed"], true);
    assert_eq!(doc["status"]["code"], 0);
    assert_eq!(
        doc["ok_response"]["headers"],
        json!([{"key": "x-user", "value": "alice", "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}])
    );
    assert_eq!(doc["ok_response"]["headers_to_remove"], json!(["x-secret"]));
    assert_eq!(doc["dynamic_metadata"]["decision_id"], "d-1");
    assert_eq!(doc["decision"]["allowed"], true);

    let (c, doc, err) = check(cwd, "policies", "bob.json");
    assert_eq!(c, 3, "{doc}{err}");
    assert_eq!(doc["allowed"], false);
    assert_eq!(doc["status"]["name"], "PERMISSION_DENIED");
    assert_eq!(doc["denied_response"]["http_status"], 403);
    assert_eq!(doc["denied_response"]["body"], "denied by policy");

    let (c, doc, err) = check(cwd, "policies", "bad-path.json");
    assert_eq!(c, 3, "{doc}{err}");
    assert_eq!(doc["denied_response"]["http_status"], 400);
    assert!(
        doc["denied_response"]["body"]
            .as_str()
            .unwrap()
            .starts_with("request_parse_error:"),
        "{doc}"
    );

    // The request can come from standard input.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_regent"))
        .args(["check", "--bundle", "policies", "--request", "-"])
        .current_dir(cwd)
        .stdin(std::fs::File::open(cwd.join("bob.json")).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));

    // Both evaluators give the same answer; the VM refuses what only the interpreter runs.
    for engine in ["vm", "interpreter"] {
        let o = regent(
            cwd,
            &[
                "check",
                "--bundle",
                "policies",
                "--request",
                "alice.json",
                "--engine",
                engine,
            ],
        );
        assert_eq!(code(&o), 0, "{engine}: {}", stderr(&o));
    }
    write_tree(
        cwd,
        &[(
            "jwtpol/p.rego",
            "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if io.jwt.decode(input.attributes.request.http.headers.authorization)[1].sub == \"alice\"\n",
        )],
    );
    // Regent's builtins run on the VM: the header is no JWT, so io.jwt.decode is undefined.
    for engine in ["vm", "interpreter", "auto"] {
        let o = regent(
            cwd,
            &[
                "check",
                "--bundle",
                "jwtpol",
                "--request",
                "alice.json",
                "--engine",
                engine,
            ],
        );
        assert_eq!(code(&o), 3, "{engine}: {}", stderr(&o));
    }
    write_tree(
        cwd,
        &[(
            "printpol/p.rego",
            "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if {\n\tprint(\"checking\")\n\tinput.attributes.request.http.method == \"GET\"\n}\n",
        )],
    );
    let o = regent(
        cwd,
        &[
            "check",
            "--bundle",
            "printpol",
            "--request",
            "alice.json",
            "--engine",
            "vm",
        ],
    );
    assert_clean_error(&o, "bytecode VM");

    // The same through a built archive, and with the input shown.
    assert_eq!(
        code(&regent(cwd, &["build", "policies", "-o", "b.tar.gz"])),
        0
    );
    let o = regent(
        cwd,
        &[
            "check",
            "--bundle",
            "b.tar.gz",
            "--request",
            "alice.json",
            "--show-input",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let doc: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["input"]["parsed_path"], json!(["api", "items"]));
    assert_eq!(doc["input"]["parsed_query"], json!({"x": ["1"]}));
}

#[test]
fn check_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    policy_dir(cwd);
    std::fs::write(cwd.join("malformed.json"), "{\"attributes\": ").unwrap();
    write_json(
        cwd,
        "unknown.json",
        &json!({"attributes": {}, "atributes": {}}),
    );
    write_json(
        cwd,
        "wrongtype.json",
        &json!({"attributes": {"request": {"http": {"headers": {"x-user": 7}}}}}),
    );

    for (file, expected) in [
        ("nope.json", "nope.json"),
        ("malformed.json", "not valid JSON"),
        ("unknown.json", "atributes: unknown field"),
        (
            "wrongtype.json",
            "attributes.request.http.headers.x-user: expected a string",
        ),
    ] {
        let o = regent(cwd, &["check", "--bundle", "policies", "--request", file]);
        assert_clean_error(&o, expected);
    }
    let o = regent(
        cwd,
        &["check", "--bundle", "missing", "--request", "unknown.json"],
    );
    assert_eq!(code(&o), 1);

    // A decision path with no rule: the sidecar would refuse to activate the bundle.
    write_json(cwd, "ok.json", &request("GET", "/", "alice"));
    let o = regent(
        cwd,
        &[
            "check",
            "--bundle",
            "policies",
            "--request",
            "ok.json",
            "--path",
            "envoy/authz/nope",
        ],
    );
    assert_clean_error(&o, "could not activate");

    // A decision of the wrong shape gets no answer, as in the sidecar.
    write_tree(
        cwd,
        &[("weird/p.rego", "package envoy.authz\n\nallow := \"yes\"\n")],
    );
    let o = regent(cwd, &["check", "--bundle", "weird", "--request", "ok.json"]);
    assert_clean_error(&o, "illegal_result");
}

#[test]
fn eval_prints_results_and_flags_undefined() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    policy_dir(cwd);
    write_json(
        cwd,
        "input.json",
        &json!({"attributes": {"request": {"http": {"method": "GET", "headers": {"x-user": "alice"}}}}}),
    );
    let o = regent(
        cwd,
        &["eval", "--bundle", "policies", "--input", "input.json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["headers"]["x-user"], "alice");

    // Extra data may add to the bundle's data but not contradict it.
    write_json(cwd, "more.json", &json!({"authz": {"users": ["bob"]}}));
    let o = regent(
        cwd,
        &[
            "eval",
            "--bundle",
            "policies",
            "--input",
            "input.json",
            "--data",
            "more.json",
        ],
    );
    assert_clean_error(&o, "more.json");
    write_json(cwd, "extra.json", &json!({"limits": {"max": 3}}));
    let o = regent(
        cwd,
        &[
            "eval",
            "--bundle",
            "policies",
            "--data",
            "extra.json",
            "--path",
            "data.limits.max",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "3");

    write_tree(
        cwd,
        &[(
            "u/p.rego",
            "package p\n\nimport rego.v1\n\nx := 1 if input.a == 1\n",
        )],
    );
    let o = regent(cwd, &["eval", "--bundle", "u", "--path", "p/x"]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("data.p.x is undefined"),
        "{}",
        stderr(&o)
    );

    std::fs::write(cwd.join("bad.json"), "[1,").unwrap();
    let o = regent(
        cwd,
        &[
            "eval", "--bundle", "u", "--path", "p/x", "--input", "bad.json",
        ],
    );
    assert_clean_error(&o, "bad.json: not valid JSON");
    let o = regent(cwd, &["eval", "--bundle", "u", "--path", "p//x"]);
    assert_clean_error(&o, "--path");
}

/// A reader that went away (`regent check ... | head -1`) does not turn the verdict into a panic.
#[test]
fn closed_stdout_keeps_the_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    policy_dir(cwd);
    write_json(cwd, "bob.json", &request("GET", "/", "bob"));
    for (args, want) in [
        (
            vec!["check", "--bundle", "policies", "--request", "bob.json"],
            3,
        ),
        (vec!["test", "policies"], 0),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_regent"))
            .args(&args)
            .current_dir(cwd)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
