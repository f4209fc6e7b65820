//! Black-box Check tests: a real sidecar on 127.0.0.1 answering a real tonic client, for every part
//! of the input document and the decision contract, on both evaluators.

mod server_support;

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use regent_sidecar::config::EngineChoice;
use regent_sidecar::policy::EvaluatorKind;
use serde_json::json;
use server_support::*;

const OVERWRITE: i32 = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
const APPEND: i32 = HeaderAppendAction::AppendIfExistsOrAdd as i32;

async fn contract_sidecar(engine: EngineChoice) -> Sidecar {
    let s = Sidecar::start(CONTRACT_POLICY, Some(CONTRACT_DATA), |cfg, _| {
        cfg.policy.engine = engine;
    })
    .await;
    let kind = s.running.store.current().expect("policy active").kind();
    let expected = match engine {
        EngineChoice::Interpreter => EvaluatorKind::Interpreter,
        EngineChoice::Vm | EngineChoice::Auto => EvaluatorKind::Vm,
    };
    assert_eq!(kind, expected, "evaluator for {engine:?}");
    s
}

fn denied_status(r: &CheckResponse) -> Option<i32> {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map(|s| s.code),
        _ => None,
    }
}

fn denied_body(r: &CheckResponse) -> String {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.body.clone(),
        other => panic!("not a denial: {other:?}"),
    }
}

async fn echo(s: &Sidecar, req: Req) -> CheckResponse {
    let r = s.check(req.build()).await.expect("check answers");
    assert!(allowed(&r), "echo is allowed: {r:?}");
    r
}

#[tokio::test]
async fn boolean_decisions() {
    let s = contract_sidecar(EngineChoice::Auto).await;
    let r = s.check(get("/public/x").build()).await.expect("answer");
    assert_eq!(code(&r), 0);
    assert!(r.http_response.is_none(), "{r:?}");
    let id = metadata(&r, "decision_id").expect("decision_id");
    assert_eq!(id.len(), 36, "uuid: {id}");

    let r = s.check(get("/private").build()).await.expect("answer");
    assert_eq!(code(&r), 7, "PERMISSION_DENIED");
    assert_eq!(
        denied_status(&r),
        None,
        "a boolean deny carries no HTTP response"
    );
    assert_ne!(
        metadata(&r, "decision_id"),
        Some(id),
        "ids are per decision"
    );
    s.stop().await;
}

#[tokio::test]
async fn object_decisions_allow_with_multi_valued_headers() {
    let s = contract_sidecar(EngineChoice::Auto).await;
    let r = echo(&s, get("/echo").header("authorization", "Bearer x")).await;
    let multi: Vec<_> = headers(&r)
        .into_iter()
        .filter(|(k, _, _)| k == "x-multi")
        .map(|(_, v, a)| (v, a))
        .collect();
    assert_eq!(
        multi,
        [("one".to_string(), OVERWRITE), ("two".to_string(), APPEND)]
    );
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("ok response expected: {r:?}");
    };
    let added: Vec<_> = ok
        .response_headers_to_add
        .iter()
        .map(|o| {
            let h = o.header.as_ref().expect("header");
            (h.key.as_str(), h.value.as_str(), o.append_action)
        })
        .collect();
    assert_eq!(
        added,
        [("set-cookie", "a=1", APPEND), ("set-cookie", "b=2", APPEND)]
    );
    assert_eq!(ok.headers_to_remove, ["authorization"]);
    s.stop().await;
}

#[tokio::test]
async fn object_decision_deny_with_status_body_headers_and_metadata() {
    let s = contract_sidecar(EngineChoice::Auto).await;
    let r = s.check(get("/login").build()).await.expect("answer");
    assert_eq!(code(&r), 7);
    assert_eq!(denied_status(&r), Some(401));
    assert_eq!(denied_body(&r), "log in first");
    assert_eq!(
        headers(&r),
        [(
            "www-authenticate".to_string(),
            "Bearer".to_string(),
            OVERWRITE
        )]
    );
    assert_eq!(metadata(&r, "reason").as_deref(), Some("no token"));
    let id = metadata(&r, "decision_id").expect("id");
    assert_ne!(id, "from-policy", "the sidecar's decision_id wins");
    s.stop().await;
}

#[tokio::test]
async fn query_mutations_are_deterministic() {
    let s = contract_sidecar(EngineChoice::Auto).await;
    let r = s
        .check(get("/query?secret=1").build())
        .await
        .expect("answer");
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        panic!("ok response expected: {r:?}");
    };
    let set: Vec<_> = ok
        .query_parameters_to_set
        .iter()
        .map(|q| (q.key.as_str(), q.value.as_str()))
        .collect();
    assert_eq!(set, [("a", "1"), ("a", "2"), ("z", "last")]);
    assert_eq!(ok.query_parameters_to_remove, ["secret"]);
    s.stop().await;
}

#[tokio::test]
async fn paths_and_queries_as_the_policy_sees_them() {
    let s = contract_sidecar(EngineChoice::Auto).await;
    for (path, expected) in [
        // %2F stays inside its segment: it cannot forge a path segment.
        ("/echo/a%2Fb/c", json!(["echo", "a/b", "c"])),
        ("//echo/admin", json!(["echo", "admin"])),
        ("/echo/", json!(["echo", ""])),
        ("/echo/caf%C3%A9/x+y", json!(["echo", "café", "x+y"])),
        ("/", json!([""])),
    ] {
        let r = s.check(get(path).build()).await.expect("answer");
        assert!(allowed(&r), "{path}: {r:?}");
        assert_eq!(header_json(&r, "x-parsed-path"), expected, "{path}");
    }
    let r = echo(&s, get("/echo?a=1&a=2&b=x+y&c=%20&empty")).await;
    assert_eq!(
        header_json(&r, "x-parsed-query"),
        json!({"a": ["1", "2"], "b": ["x y"], "c": [" "], "empty": [""]})
    );
    s.stop().await;
}

#[tokio::test]
async fn headers_principal_and_header_map() {
    let s = contract_sidecar(EngineChoice::Auto).await;
    let r = echo(
        &s,
        get("/echo")
            .header("x-tag", "a,b")
            .principal("spiffe://cluster.local/ns/default/sa/web"),
    )
    .await;
    assert_eq!(header(&r, "x-tag").as_deref(), Some("a,b"));
    assert_eq!(
        header(&r, "x-principal").as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/web")
    );
    // Envoy's encode_raw_headers: repeated keys in header_map are joined like Envoy joins them.
    let r = echo(
        &s,
        get("/echo")
            .raw_header("x-tag", "first")
            .raw_header("x-tag", "second"),
    )
    .await;
    assert_eq!(header(&r, "x-tag").as_deref(), Some("first,second"));
    // No principal: the key is absent.
    let r = echo(&s, get("/echo")).await;
    assert_eq!(header(&r, "x-principal").as_deref(), Some(""));
    s.stop().await;
}

#[tokio::test]
async fn body_formats_and_truncation() {
    let s = contract_sidecar(EngineChoice::Auto).await;
    let r = echo(
        &s,
        get("/echo").body("POST", "application/json", r#"{"n": 1, "l": ["x"]}"#),
    )
    .await;
    assert_eq!(
        header_json(&r, "x-parsed-body"),
        json!({"n": 1, "l": ["x"]})
    );
    assert_eq!(header_json(&r, "x-truncated"), json!(false));

    let r = echo(
        &s,
        get("/echo").body("POST", "application/x-www-form-urlencoded", "a=1&a=2&b=x+y"),
    )
    .await;
    assert_eq!(
        header_json(&r, "x-parsed-body"),
        json!({"a": ["1", "2"], "b": ["x y"]})
    );

    let multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n\
                     --XyZ\r\nContent-Disposition: form-data; name=\"doc\"\r\nContent-Type: application/json\r\n\r\n{\"k\":true}\r\n\
                     --XyZ--\r\n";
    let r = echo(
        &s,
        get("/echo").body("POST", "multipart/form-data; boundary=XyZ", multipart),
    )
    .await;
    let body = header_json(&r, "x-parsed-body");
    assert_eq!(body["field"], json!(["value"]), "{body}");
    assert_eq!(body["doc"], json!([{"k": true}]), "{body}");

    // content-length announces more than Envoy forwarded.
    let r = echo(
        &s,
        get("/echo")
            .body("POST", "application/json", r#"{"n": 1"#)
            .header("content-length", "5000"),
    )
    .await;
    assert_eq!(header_json(&r, "x-parsed-body"), json!(null));
    assert_eq!(header_json(&r, "x-truncated"), json!(true));
    // Envoy's explicit partial-body header wins even without content-length.
    let r = echo(
        &s,
        get("/echo")
            .body("POST", "application/json", r#"{"n": 1}"#)
            .header("x-envoy-auth-partial-body", "true"),
    )
    .await;
    assert_eq!(header_json(&r, "x-truncated"), json!(true));
    // Unknown content types are not parsed.
    let r = echo(&s, get("/echo").body("POST", "text/plain", "hello")).await;
    assert_eq!(header_json(&r, "x-parsed-body"), json!(null));
    s.stop().await;
}

#[tokio::test]
async fn skipping_body_parsing_leaves_the_keys_out() {
    let s = Sidecar::start(CONTRACT_POLICY, Some(CONTRACT_DATA), |cfg, _| {
        cfg.policy.skip_request_body_parse = true;
    })
    .await;
    // Not even an invalid body is an error then.
    let r = echo(
        &s,
        get("/echo").body("POST", "application/json", "{not json"),
    )
    .await;
    assert_eq!(header_json(&r, "x-parsed-body"), json!("absent"));
    assert_eq!(header_json(&r, "x-truncated"), json!("absent"));
    s.stop().await;
}

#[tokio::test]
async fn every_error_class_has_its_reason() {
    // The interpreter: the VM reports a type error (`/boom`) as an undefined value, not an error.
    let s = contract_sidecar(EngineChoice::Interpreter).await;
    for (path, reason) in [
        ("/nothing", "undefined_decision"),
        ("/illegal", "illegal_result"),
        ("/ill-typed", "invalid_field"),
        ("/no-allowed", "missing_allowed"),
        ("/boom", "eval_error"),
        ("/conflict", "eval_error"),
    ] {
        let err = s
            .check(get(path).build())
            .await
            .expect_err("no answer, so Envoy's failure mode applies");
        assert_eq!(err.code(), tonic::Code::Unknown, "{path}");
        assert!(
            err.message().starts_with(&format!("{reason}: ")),
            "{path}: {}",
            err.message()
        );
    }
    // Request parse errors are answers: a 400 with the reason, not a gRPC error.
    for req in [
        get("/echo/%ZZ"),
        get("/echo?a=%G1"),
        get("/echo?a=1;b=2"),
        get("/echo").body("POST", "application/json", "{not json"),
        get("/echo")
            .body("POST", "application/json", "{}")
            .header("content-length", "many"),
    ] {
        let what = format!("{} {}", req.path, req.body);
        let r = s.check(req.build()).await.expect("answered");
        assert_eq!(code(&r), 7, "{what}");
        assert_eq!(denied_status(&r), Some(400), "{what}");
        assert!(
            denied_body(&r).starts_with("request_parse_error: "),
            "{what}: {}",
            denied_body(&r)
        );
        assert!(metadata(&r, "decision_id").is_some());
    }
    let m = s.running.metrics.render();
    for (reason, n) in [
        ("undefined_decision", 1.0),
        ("illegal_result", 1.0),
        ("invalid_field", 1.0),
        ("missing_allowed", 1.0),
        ("eval_error", 2.0),
        ("request_parse_error", 5.0),
    ] {
        assert_eq!(
            metric(
                &m,
                &format!("regent_check_errors_total{{reason=\"{reason}\"}}")
            ),
            Some(n),
            "{reason} in\n{m}"
        );
    }
    assert_eq!(
        metric(&m, "regent_checks_total{decision=\"error\"}"),
        Some(6.0)
    );
    assert_eq!(
        metric(&m, "regent_checks_total{decision=\"deny\"}"),
        Some(5.0)
    );
    s.stop().await;
}

/// The same requests give the same answers on the VM and on the interpreter.
#[tokio::test]
async fn vm_and_interpreter_agree() {
    let vm = contract_sidecar(EngineChoice::Vm).await;
    let interp = contract_sidecar(EngineChoice::Interpreter).await;
    let vectors = [
        get("/public"),
        get("/private"),
        get("/login"),
        get("/query?x=1"),
        get("/data"),
        get("/"),
        get("/echo/a%2Fb//c/?q=1&q=2")
            .header("x-tag", "t")
            .principal("spiffe://a/b"),
        get("/echo").body(
            "POST",
            "application/json",
            r#"{"deep": {"l": [1, 2.5, "s", null]}}"#,
        ),
        get("/echo").body("POST", "application/x-www-form-urlencoded", "k=v&k=w"),
        get("/nothing"),
        get("/illegal"),
        get("/ill-typed"),
        get("/no-allowed"),
        get("/echo/%ZZ"),
    ];
    let strip = |r: Result<CheckResponse, tonic::Status>| -> String {
        match r {
            Ok(mut r) => {
                if let Some(m) = r.dynamic_metadata.as_mut() {
                    m.fields.remove("decision_id");
                }
                format!("{r:?}")
            }
            // Error messages carry engine-specific wording; the reason and code must match.
            Err(e) => format!(
                "{:?} {}",
                e.code(),
                e.message().split(':').next().unwrap_or_default()
            ),
        }
    };
    for v in vectors {
        let what = v.path.clone();
        let a = strip(vm.check(v.clone().build()).await);
        let b = strip(interp.check(v.build()).await);
        assert_eq!(a, b, "{what}");
    }
    // A conflict (two complete rules giving different values) is OPA's eval_conflict_error on both:
    // the VM's undefined decision is re-checked on the interpreter (`policy.vm_recheck`).
    let a = vm.check(get("/conflict").build()).await.expect_err("vm");
    let b = interp
        .check(get("/conflict").build())
        .await
        .expect_err("interpreter");
    assert_eq!(a.code(), b.code());
    for e in [&a, &b] {
        assert!(e.message().starts_with("eval_error"), "{e:?}");
        assert!(e.message().contains("conflicts"), "{e:?}");
    }
    // A builtin's type error (`"GET" + 1`) is undefined in OPA outside strict mode, and on the VM;
    // regorus's interpreter reports an error. Without a `default` both are gRPC errors, so Envoy's
    // failure mode applies either way (documented in docs/input-and-decisions.md).
    let a = vm.check(get("/boom").build()).await.expect_err("vm");
    let b = interp
        .check(get("/boom").build())
        .await
        .expect_err("interpreter");
    assert_eq!(a.code(), b.code());
    assert!(a.message().starts_with("undefined_decision"), "{a:?}");
    assert!(b.message().starts_with("eval_error"), "{b:?}");
    vm.stop().await;
    interp.stop().await;
}

#[tokio::test]
async fn data_from_the_bundle_is_visible() {
    let s = contract_sidecar(EngineChoice::Auto).await;
    let r = s.check(get("/data").build()).await.expect("answer");
    assert!(allowed(&r));
    assert_eq!(header(&r, "x-flag").as_deref(), Some("true"));
    s.stop().await;
}

#[tokio::test]
async fn dry_run_allows_everything_and_logs_the_real_decision() {
    let s = Sidecar::start(CONTRACT_POLICY, Some(CONTRACT_DATA), |cfg, dir| {
        cfg.policy.dry_run = true;
        // The interpreter, so `/boom` is an evaluation error (the VM makes it undefined).
        cfg.policy.engine = EngineChoice::Interpreter;
        cfg.decision_logs.output = regent_sidecar::config::LogOutput::File;
        cfg.decision_logs.file = Some(dir.join("decisions.log"));
    })
    .await;
    for path in [
        "/private",
        "/login",
        "/nothing",
        "/boom",
        "/echo/%ZZ",
        "/public",
    ] {
        let r = s.check(get(path).build()).await.expect("dry-run answers");
        assert!(allowed(&r), "{path}: {r:?}");
    }
    let log = s.dir.path().join("decisions.log");
    let lines = read_lines_until(&log, 6).await;
    let by_path = |p: &str| -> serde_json::Value {
        lines
            .iter()
            .find(|l| l["input"]["attributes"]["request"]["http"]["path"] == json!(p))
            .cloned()
            .unwrap_or_else(|| panic!("no event for {p}: {lines:?}"))
    };
    assert_eq!(by_path("/private")["result"], json!(false));
    assert_eq!(by_path("/private")["dry_run"], json!(true));
    assert_eq!(by_path("/login")["result"]["http_status"], json!(401));
    assert!(by_path("/boom")["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("evaluation failed")));
    assert_eq!(by_path("/public")["result"], json!(true));
    assert_eq!(by_path("/public").get("dry_run"), None);
    s.stop().await;
}

/// Reads a decision log until it has at least `n` lines (bounded wait).
async fn read_lines_until(path: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    let ok = eventually(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        lines = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect();
        lines.len() >= n
    })
    .await;
    assert!(
        ok,
        "{} has {} lines, wanted {n}",
        path.display(),
        lines.len()
    );
    lines
}

#[tokio::test]
async fn decision_logs_are_eventv1_lines_with_masking() {
    let s = Sidecar::start(CONTRACT_POLICY, Some(CONTRACT_DATA), |cfg, dir| {
        cfg.decision_logs.output = regent_sidecar::config::LogOutput::File;
        cfg.decision_logs.file = Some(dir.join("decisions.log"));
    })
    .await;
    let r = s
        .check(
            get("/public")
                .header("authorization", "Bearer secret-token")
                .header("cookie", "session=secret")
                .header("x-keep", "visible")
                .build(),
        )
        .await
        .expect("answer");
    let id = metadata(&r, "decision_id").expect("id");
    let err = s
        .check(get("/nothing").build())
        .await
        .expect_err("undefined");
    assert!(err.message().contains("undefined"));

    let lines = read_lines_until(&s.dir.path().join("decisions.log"), 2).await;
    assert_eq!(lines.len(), 2, "one line per decision: {lines:?}");
    let e = &lines[0];
    assert_eq!(e["decision_id"], json!(id));
    assert_eq!(e["path"], json!("envoy/authz/allow"));
    assert_eq!(e["result"], json!(true));
    let headers = &e["input"]["attributes"]["request"]["http"]["headers"];
    assert_eq!(headers["x-keep"], json!("visible"));
    assert_eq!(headers.get("authorization"), None, "masked: {headers}");
    assert_eq!(headers.get("cookie"), None, "masked: {headers}");
    assert!(!lines[0].to_string().contains("secret"), "{}", lines[0]);
    let erased = e["erased"].as_array().expect("erased list");
    assert!(erased.contains(&json!(
        "/input/attributes/request/http/headers/authorization"
    )));
    assert!(e["bundles"]["local"]["revision"].is_string(), "{e}");
    assert!(e["metrics"]["timer_rego_query_eval_ns"].as_u64().is_some());
    assert!(e["metrics"]["timer_server_handler_ns"].as_u64().is_some());
    assert!(e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(e["labels"]["id"].as_str().is_some());
    assert_eq!(lines[1]["error"]["message"], json!("undefined decision"));
    assert_eq!(lines[1].get("result"), None);
    s.stop().await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_failing_decision_log_never_changes_decisions() {
    // Every write to /dev/full fails with ENOSPC.
    let s = Sidecar::start(CONTRACT_POLICY, Some(CONTRACT_DATA), |cfg, _| {
        cfg.decision_logs.output = regent_sidecar::config::LogOutput::File;
        cfg.decision_logs.file = Some("/dev/full".into());
        cfg.decision_logs.queue_size = 1;
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = s.client.clone();
        tasks.push(tokio::spawn(async move {
            let path = if i % 2 == 0 { "/public" } else { "/private" };
            let r = client
                .clone()
                .check(get(path).build())
                .await
                .expect("answer")
                .into_inner();
            (i, allowed(&r))
        }));
    }
    for t in tasks {
        let (i, ok) = t.await.expect("task");
        assert_eq!(ok, i % 2 == 0, "request {i}");
    }
    let m = s.running.metrics.render();
    assert_eq!(
        metric(&m, "regent_checks_total{decision=\"allow\"}"),
        Some(100.0)
    );
    assert_eq!(
        metric(&m, "regent_checks_total{decision=\"deny\"}"),
        Some(100.0)
    );
    assert!(metric(
        &m,
        "regent_decision_logs_dropped_total{reason=\"queue_full\"}"
    )
    .is_some());
    s.stop().await;
}
