//! `regent test`: exit codes, per-test lines, captured `print` output, coverage and JSON output,
//! on the real binary.

mod cli_support;

use cli_support::*;

#[test]
fn passing_suite_exits_0_and_lists_each_test() {
    let tmp = tempfile::tempdir().unwrap();
    policy_dir(tmp.path());
    let o = regent(tmp.path(), &["test", "policies"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{out}{}", stderr(&o));
    assert!(
        out.contains("PASS data.envoy.authz_test.test_alice_may_get (envoy/authz_test.rego:"),
        "{out}"
    );
    assert!(
        out.contains("PASS data.envoy.authz_test.test_bob_is_denied"),
        "{out}"
    );
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    // print output of passing tests only with -v
    assert!(!out.contains("decision for bob"), "{out}");
    let o = regent(tmp.path(), &["test", "policies", "-v"]);
    assert!(
        stdout(&o).contains("print: envoy/authz_test.rego:14: decision for bob: 403"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn failing_test_exits_2_and_shows_its_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(tmp.path());
    write_tree(&dir, &[("envoy/extra_test.rego", FAILING_TEST)]);
    let o = regent(tmp.path(), &["test", "policies"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 2, "{out}{}", stderr(&o));
    assert!(
        out.contains("FAIL data.envoy.extra_test.test_post_allowed (envoy/extra_test.rego:6)"),
        "{out}"
    );
    assert!(out.contains("result is undefined"), "{out}");
    assert!(
        out.contains("print: envoy/extra_test.rego:7: trying POST as alice"),
        "{out}"
    );
    assert!(out.contains("2 passed, 1 failed"), "{out}");

    // --run selects by full name; only the passing ones left gives 0.
    let o = regent(tmp.path(), &["test", "policies", "--run", "authz_test"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("2 passed, 0 failed"));
}

#[test]
fn compile_error_exits_1_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(tmp.path());
    write_tree(
        &dir,
        &[(
            "envoy/broken.rego",
            "package envoy.broken\n\nimport rego.v1\n\nz if {\n\tw == 1\n}\n",
        )],
    );
    let o = regent(tmp.path(), &["test", "policies"]);
    assert_clean_error(&o, "envoy/broken.rego:6");
    assert!(stderr(&o).contains("compile error"), "{}", stderr(&o));

    let o = regent(tmp.path(), &["test", "policies", "--format", "json"]);
    assert_eq!(code(&o), 1);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["error"]["file"], "envoy/broken.rego");
    assert_eq!(doc["error"]["line"], 6);
}

#[test]
fn syntax_error_exits_1_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(tmp.path());
    write_tree(
        &dir,
        &[("envoy/bad.rego", "package envoy.bad\n\nallow if {\n")],
    );
    let o = regent(tmp.path(), &["test", "policies"]);
    assert_clean_error(&o, "envoy/bad.rego");
}

#[test]
fn no_tests_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    write_tree(
        tmp.path(),
        &[("p/authz.rego", POLICY), ("p/authz/data.json", DATA)],
    );
    let o = regent(tmp.path(), &["test", "p"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("no tests found"), "{}", stdout(&o));

    let dir = policy_dir(tmp.path());
    let o = regent(
        tmp.path(),
        &["test", dir.to_str().unwrap(), "--run", "nomatch"],
    );
    assert_eq!(code(&o), 1);
    assert!(stdout(&o).contains("matches --run"), "{}", stdout(&o));

    let o = regent(tmp.path(), &["test", "missing-dir"]);
    assert_clean_error(&o, "missing-dir");
    let o = regent(tmp.path(), &["test", "p", "--run", "("]);
    assert_clean_error(&o, "--run");
}

#[test]
fn coverage_reports_uncovered_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cov");
    write_tree(
        &dir,
        &[
            (
                "m.rego",
                "package m\n\nimport rego.v1\n\nsmall(x) if {\n\tx < 10\n}\n\nbig(x) if {\n\tx > 1000\n}\n",
            ),
            (
                "m_test.rego",
                "package m_test\n\nimport rego.v1\n\ntest_small if {\n\tdata.m.small(3)\n}\n",
            ),
        ],
    );
    let o = regent(tmp.path(), &["test", "cov", "--coverage"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{out}{}", stderr(&o));
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("m.rego:"))
        .unwrap_or_else(|| panic!("no coverage line for m.rego in {out}"));
    assert!(line.contains("not covered: "), "{line}");
    // The body of `big` never ran; the body of `small` did.
    let uncovered = line.split("not covered: ").nth(1).unwrap();
    assert!(uncovered.contains("10"), "{line}");
    assert!(!uncovered.split(", ").any(|r| r == "6"), "{line}");
    assert!(out.contains("total: "), "{out}");

    // -v shows the code of each line never evaluated.
    let o = regent(tmp.path(), &["test", "cov", "--coverage", "-v"]);
    assert!(
        stdout(&o).contains("      10 | \tx > 1000"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("| \tx < 10"), "{}", stdout(&o));

    let o = regent(
        tmp.path(),
        &["test", "cov", "--coverage", "--format", "json"],
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let files = doc["coverage"]["files"].as_array().unwrap();
    let m = files.iter().find(|f| f["file"] == "m.rego").unwrap();
    assert!(m["covered"].as_array().unwrap().contains(&6.into()), "{m}");
    assert!(
        m["not_covered"].as_array().unwrap().contains(&10.into()),
        "{m}"
    );
}

#[test]
fn json_format_reports_each_test() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(tmp.path());
    write_tree(&dir, &[("envoy/extra_test.rego", FAILING_TEST)]);
    let o = regent(tmp.path(), &["test", "policies", "--format", "json"]);
    assert_eq!(code(&o), 2);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["passed"], 2);
    assert_eq!(doc["failed"], 1);
    let failing = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["passed"] == false)
        .unwrap();
    assert_eq!(failing["package"], "data.envoy.extra_test");
    assert_eq!(failing["name"], "test_post_allowed");
    assert_eq!(failing["file"], "envoy/extra_test.rego");
    assert_eq!(failing["line"], 6);
    assert_eq!(
        failing["prints"][0],
        "envoy/extra_test.rego:7: trying POST as alice"
    );
}

/// Tests see the sidecar's `io.jwt.*` builtins, which regorus lacks, and can mock functions.
#[test]
fn tests_use_the_sidecar_builtins_and_with() {
    let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsInJvbGVzIjpbImFkbWluIl19.c2lnbmF0dXJl";
    let tmp = tempfile::tempdir().unwrap();
    let policy = "package jwt\n\nimport rego.v1\n\nclaims := io.jwt.decode(input.token)[1]\n\nis_admin if \"admin\" in claims.roles\n\nnow := time.now_ns()\n\nfresh if now > 0\n";
    let tests = format!(
        "package jwt_test\n\nimport rego.v1\n\ntest_admin_claim if data.jwt.is_admin with input as {{\"token\": \"{token}\"}}\n\nmock_now := 0\n\ntest_clock_mocked if not data.jwt.fresh with time.now_ns as mock_now\n\ntest_garbage_token if not data.jwt.is_admin with input as {{\"token\": \"x\"}}\n"
    );
    write_tree(
        tmp.path(),
        &[("j/jwt.rego", policy), ("j/jwt_test.rego", tests.as_str())],
    );
    let o = regent(tmp.path(), &["test", "j"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("3 passed, 0 failed"), "{}", stdout(&o));

    std::fs::write(
        tmp.path().join("in.json"),
        format!("{{\"token\": \"{token}\"}}"),
    )
    .unwrap();
    let o = regent(
        tmp.path(),
        &[
            "eval",
            "--bundle",
            "j",
            "--input",
            "in.json",
            "--path",
            "jwt/claims",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["sub"], "alice");
}

#[test]
fn usage_errors_exit_1_not_the_failed_tests_code() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = policy_dir(tmp.path());
    let o = regent(
        tmp.path(),
        &["test", dir.to_str().unwrap(), "--no-such-flag"],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));
    let o = regent(tmp.path(), &["--help"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}
