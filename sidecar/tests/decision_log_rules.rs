//! The policy's own decision log rules, as OPA evaluates them: the policy library's
//! `system.log.mask` (policies/library/system/log) erases credentials, personal body fields and
//! query secrets from each event and lists them in `erased`; an `upsert` rewrites a field and is
//! listed in `masked`; `system.log.drop` keeps an event out of the log. Through a real sidecar,
//! to a real decision log file.

mod server_support;

use std::time::Duration;

use server_support::*;

const AUTHZ: &str = "package envoy.authz\n\nimport rego.v1\n\ndefault allow := true\n";

/// Added to the library's rules: a rewrite and a drop.
const EXTRA: &str = r#"package system.log

import rego.v1

mask contains {"op": "upsert", "path": "/input/attributes/request/http/headers/x-tenant", "value": "(tenant)"} if {
	input.input.attributes.request.http.headers["x-tenant"]
}

drop if input.input.attributes.request.http.path == "/healthz"
"#;

fn policy_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("bundle");
    let library =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/library/system/log");
    let log = root.join("system/log");
    std::fs::create_dir_all(&log).expect("mkdir");
    std::fs::create_dir_all(root.join("envoy")).expect("mkdir");
    for f in ["mask.rego", "data.json"] {
        std::fs::copy(library.join(f), log.join(f)).expect("copy the library's rules");
    }
    std::fs::write(log.join("extra.rego"), EXTRA).expect("write");
    std::fs::write(root.join("envoy/authz.rego"), AUTHZ).expect("write");
    root
}

async fn events(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        events = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON lines"))
            .collect();
        events.len() >= n
    })
    .await;
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policys_log_rules_mask_and_drop_events() {
    let s = Sidecar::start(AUTHZ, None, |cfg, dir| {
        cfg.policy.bundle = Some(policy_dir(dir));
        cfg.decision_logs.output = regent_sidecar::config::LogOutput::File;
        cfg.decision_logs.file = Some(dir.join("decisions.log"));
        // Only the policy's rules: the configured pointers would hide what is tested.
        cfg.decision_logs.mask = Vec::new();
    })
    .await;
    let signup = get("/signup")
        .header("authorization", "Bearer s3cret-token")
        .header("x-tenant", "acme")
        .body(
            "POST",
            "application/json",
            r#"{"email": "alice@example.com", "plan": "pro"}"#,
        )
        .build();
    assert!(allowed(&s.check(signup).await.expect("answered")));
    for req in [
        get("/healthz").build(),
        get("/search?q=shoes&token=abc123").build(),
    ] {
        assert!(allowed(&s.check(req).await.expect("answered")));
    }
    let log = s.dir.path().join("decisions.log");
    let events = events(&log, 2).await;
    // Give a wrongly written third event time to appear before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events_now = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        events_now.lines().count(),
        2,
        "/healthz dropped: {events_now}"
    );

    let path_of = |e: &serde_json::Value| e["decision_id"].clone();
    let signup = events
        .iter()
        .find(|e| e["input"]["parsed_path"][0] == "signup")
        .unwrap_or_else(|| panic!("no signup event: {events:?}"));
    let text = signup.to_string();
    for secret in ["s3cret-token", "alice@example.com", "acme"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(signup["input"]["parsed_body"]["plan"], "pro", "{text}");
    let erased: Vec<&str> = signup["erased"]
        .as_array()
        .expect("erased")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    for p in [
        "/input/attributes/request/http/headers/authorization",
        "/input/parsed_body/email",
        "/input/attributes/request/http/body",
    ] {
        assert!(erased.contains(&p), "{p} not in {erased:?}");
    }
    assert_eq!(
        signup["masked"],
        serde_json::json!(["/input/attributes/request/http/headers/x-tenant"])
    );
    assert_eq!(
        signup["input"]["attributes"]["request"]["http"]["headers"]["x-tenant"],
        "(tenant)"
    );

    let search = events
        .iter()
        .find(|e| path_of(e) != path_of(signup))
        .expect("the search event");
    let text = search.to_string();
    assert!(!text.contains("abc123"), "{text}");
    assert_eq!(
        search["input"]["parsed_query"]["q"],
        serde_json::json!(["shoes"]),
        "{text}"
    );

    let m = s.running.metrics.render();
    assert_eq!(
        metric(&m, "regent_decision_logs_policy_dropped_total"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "regent_decision_logs_dropped_total{reason=\"mask_error\"}"
        ),
        Some(0.0)
    );
    s.stop().await;
}
