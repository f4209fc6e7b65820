//! Both evaluators give the same answers, and OPA's: decision shapes of OPA-Envoy's examples,
//! Regent's builtins on the VM (host-await), policies over thousands of data entries, and OPA's
//! conflict errors.

use std::sync::Arc;

use regent_bundle::Bundle;
use regent_policy::{
    ActivationError, ActivePolicy, EngineChoice, EvaluatorKind, PolicySettings, VmRecheck,
};
use regorus::Value;

fn bundle(files: &[(&str, &str)]) -> Arc<Bundle> {
    Arc::new(
        Bundle::from_files(
            files
                .iter()
                .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
                .collect(),
        )
        .expect("bundle"),
    )
}

fn settings(rule: &str, engine: EngineChoice) -> PolicySettings {
    PolicySettings {
        rule: rule.into(),
        engine,
        eval_timeout: std::time::Duration::from_secs(5),
        ..PolicySettings::default()
    }
}

fn compile(b: &Arc<Bundle>, s: &PolicySettings) -> Result<ActivePolicy, ActivationError> {
    ActivePolicy::compile(&[("authz".to_string(), b.clone())], s)
}

fn input(json: &str) -> Value {
    Value::from_json_str(json).expect("input JSON")
}

/// Evaluates `inputs` on the VM and on the interpreter; both must agree, and the policy must have
/// compiled to the VM. Returns the answers.
fn on_both(b: &Arc<Bundle>, rule: &str, inputs: &[Value]) -> Vec<Value> {
    let vm = compile(b, &settings(rule, EngineChoice::Vm)).expect("compiles to the VM");
    let interp = compile(b, &settings(rule, EngineChoice::Interpreter)).expect("compiles");
    let auto = compile(b, &settings(rule, EngineChoice::Auto)).expect("compiles");
    assert_eq!(vm.kind(), EvaluatorKind::Vm);
    assert_eq!(
        auto.kind(),
        EvaluatorKind::Vm,
        "auto picks the VM for {rule}"
    );
    assert_eq!(interp.kind(), EvaluatorKind::Interpreter);
    inputs
        .iter()
        .map(|i| {
            let v = vm.evaluate(i.clone()).expect("VM evaluates");
            let w = interp.evaluate(i.clone()).expect("interpreter evaluates");
            assert_eq!(v, w, "VM and interpreter differ for {i}");
            assert_eq!(auto.evaluate(i.clone()).expect("auto evaluates"), v);
            v
        })
        .collect()
}

fn http(method: &str, path: &str, headers: &str) -> Value {
    input(&format!(
        r#"{{"attributes": {{"request": {{"http": {{"method": "{method}", "path": "{path}", "headers": {headers}}}}}}}}}"#
    ))
}

fn b64url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// An unsigned token shaped like the ones OPA-Envoy's tutorial decodes (it only decodes them).
fn token(claims: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64url(claims),
        b64url("sig")
    )
}

/// OPA-Envoy's tutorial policy, written fresh in the same shape: the bearer token's claims (decoded
/// with `io.jwt.decode`) and the request's method and path decide.
const TUTORIAL: &str = r#"package envoy.authz

import rego.v1

default allow := false

allow if {
	is_token_valid
	action_allowed
}

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http_request.method == "GET"
	token.payload.role == "guest"
	glob.match("/people/*", ["/"], http_request.path)
}

action_allowed if {
	http_request.method == "POST"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http_request.path)
	lower(input.parsed_body.firstname) != base64url.decode(token.payload.sub)
}

http_request := input.attributes.request.http

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[valid, _, payload] := [true, io.jwt.decode(encoded)[0], io.jwt.decode(encoded)[1]]
}
"#;

#[test]
fn the_tutorial_policy_decides_alike_on_the_vm_with_host_builtins() {
    let b = bundle(&[("policy.rego", TUTORIAL)]);
    let guest = token(r#"{"role":"guest","sub":"YWxpY2U=","nbf":1514851139,"exp":4102444800}"#);
    let expired = token(r#"{"role":"guest","sub":"YWxpY2U=","nbf":1514851139,"exp":1514851140}"#);
    let auth = |t: &str| format!(r#"{{"authorization": "Bearer {t}"}}"#);
    let answers = on_both(
        &b,
        "data.envoy.authz.allow",
        &[
            http("GET", "/people/1", &auth(&guest)),
            http("GET", "/people/1", &auth(&expired)),
            http("POST", "/people", &auth(&guest)),
            http(
                "GET",
                "/people/1",
                r#"{"authorization": "Bearer not-a-jwt"}"#,
            ),
            http("GET", "/people/1", "{}"),
        ],
    );
    let want = [true, false, false, false, false].map(Value::from);
    assert_eq!(answers, want);
    let vm = compile(&b, &settings("data.envoy.authz.allow", EngineChoice::Vm)).unwrap();
    assert!(vm.calls_host_builtins());
}

/// A decision assembled from several rules, as OPA-Envoy's examples write it, under
/// `envoy/authz/result`.
const RESULT_RULES: &str = r#"package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.request.http.headers["x-user"] == "alice"

result.allowed := allow

result.headers := {"x-ext-auth-allow": "yes"} if allow

result.response_headers_to_add := {"x-checked": "true"}

result.http_status := 403 if not allow

result.body := "denied" if not allow
"#;

#[test]
fn a_decision_path_naming_a_set_of_rules_is_the_whole_object() {
    let b = bundle(&[("policy.rego", RESULT_RULES)]);
    let answers = on_both(
        &b,
        "data.envoy.authz.result",
        &[
            http("GET", "/", r#"{"x-user": "alice"}"#),
            http("GET", "/", r#"{"x-user": "bob"}"#),
        ],
    );
    assert_eq!(
        answers[0],
        input(
            r#"{"allowed": true, "headers": {"x-ext-auth-allow": "yes"}, "response_headers_to_add": {"x-checked": "true"}}"#
        )
    );
    assert_eq!(
        answers[1],
        input(
            r#"{"allowed": false, "body": "denied", "http_status": 403, "response_headers_to_add": {"x-checked": "true"}}"#
        )
    );
    // The decision maps to Envoy's answer as an object rule's would.
    let resp = regent_policy::decision::to_check_response(&answers[1], "d-1").expect("usable");
    assert_ne!(resp.status.map(|s| s.code), Some(0));
}

#[test]
fn mixed_rule_kinds_under_one_path_fall_back_to_the_interpreter_with_the_same_answer() {
    // `result.allowed := ...` next to `result[k] := ...`: regorus's VM compiler refuses the mix.
    let policy = r#"package envoy.authz

import rego.v1

default allow := false

allow if input.user == "alice"

result.allowed := allow

result[key] := value if {
	some key, value in {"headers": {"x-user": input.user}}
}
"#;
    let b = bundle(&[("policy.rego", policy)]);
    let auto = compile(&b, &settings("data.envoy.authz.result", EngineChoice::Auto)).unwrap();
    let answer = auto.evaluate(input(r#"{"user": "bob"}"#)).unwrap();
    assert_eq!(
        answer,
        input(r#"{"allowed": false, "headers": {"x-user": "bob"}}"#)
    );
}

#[test]
fn a_complete_object_rule_and_a_package_path_work_too() {
    let policy = r#"package envoy.authz

import rego.v1

default allow := {"allowed": false, "http_status": 401}

allow := {"allowed": true, "headers": {"x-user": user}} if {
	user := input.attributes.request.http.headers["x-user"]
	user in data.envoy.users
}
"#;
    let b = bundle(&[
        ("policy.rego", policy),
        ("envoy/data.json", r#"{"users": ["alice"]}"#),
    ]);
    let answers = on_both(
        &b,
        "data.envoy.authz.allow",
        &[
            http("GET", "/", r#"{"x-user": "alice"}"#),
            http("GET", "/", r#"{"x-user": "eve"}"#),
        ],
    );
    assert_eq!(answers[0]["allowed"], Value::from(true));
    assert_eq!(
        answers[1],
        input(r#"{"allowed": false, "http_status": 401}"#)
    );
    // The package itself, as OPA evaluates `data.envoy.authz`.
    let pkg = on_both(
        &b,
        "data.envoy.authz",
        &[http("GET", "/", r#"{"x-user": "alice"}"#)],
    );
    assert_eq!(pkg[0]["allow"]["allowed"], Value::from(true));
}

#[test]
fn a_decision_path_that_names_nothing_is_still_refused() {
    let b = bundle(&[("policy.rego", RESULT_RULES)]);
    for engine in [
        EngineChoice::Auto,
        EngineChoice::Vm,
        EngineChoice::Interpreter,
    ] {
        let err = compile(&b, &settings("data.envoy.authz.reslt", engine)).unwrap_err();
        assert!(
            err.to_string().contains("data.envoy.authz.reslt"),
            "{engine:?}: {err}"
        );
    }
}

fn bindings_data(n: usize) -> String {
    let bindings: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"user": "user-{i}", "role": "role-{}"}}"#, i % 50))
        .collect();
    format!(r#"{{"bindings": [{}]}}"#, bindings.join(","))
}

const BINDINGS: &str = r#"package authz

import rego.v1

default allow := false

allow if {
	some b in data.authz.bindings
	b.user == input.user
	b.role == "role-7"
}
"#;

#[test]
fn a_policy_over_five_thousand_bindings_answers_on_the_vm() {
    let b = bundle(&[
        ("policy.rego", BINDINGS),
        ("authz/data.json", &bindings_data(5000)),
    ]);
    let answers = on_both(
        &b,
        "data.authz.allow",
        &[
            input(r#"{"user": "user-4957"}"#),
            input(r#"{"user": "user-4958"}"#),
            input(r#"{"user": "nobody"}"#),
        ],
    );
    assert_eq!(answers, [true, false, false].map(Value::from));
    // regorus's own default would stop it: the limit is what policy.max_instructions sets. The
    // trial evaluation at activation meets it, so the policy is refused rather than activated to
    // fail every Check.
    let tight = PolicySettings {
        max_instructions: 25_000,
        ..settings("data.authz.allow", EngineChoice::Vm)
    };
    let err = compile(&b, &tight).unwrap_err();
    assert!(err.to_string().contains("instruction limit"), "{err}");
}

const CONFLICT: &str = r#"package authz

import rego.v1

default allow := false

allow := true if input.a

allow := false if input.b

default level := "none"

level := "high" if input.a

level := "low" if input.b

permit if level == "high"
"#;

#[test]
fn a_conflict_in_the_decision_rule_is_an_error_on_both_evaluators() {
    let b = bundle(&[("policy.rego", CONFLICT)]);
    let both = input(r#"{"a": true, "b": true}"#);
    let interp = compile(&b, &settings("data.authz.allow", EngineChoice::Interpreter)).unwrap();
    let want = interp.evaluate(both.clone()).unwrap_err();
    assert!(want.message.contains("conflict"), "{want}");
    let vm = compile(&b, &settings("data.authz.allow", EngineChoice::Vm)).unwrap();
    let got = vm.evaluate(both.clone()).unwrap_err();
    assert!(got.message.contains("conflict"), "{got}");
    // No conflict, no error, and the same answers.
    for i in [r#"{"a": true}"#, r#"{"b": true}"#, r#"{}"#] {
        assert_eq!(
            vm.evaluate(input(i)).unwrap(),
            interp.evaluate(input(i)).unwrap(),
            "{i}"
        );
    }
    // Without the re-check the VM's undefined stands: what `vm_recheck: off` trades away.
    let off = PolicySettings {
        vm_recheck: VmRecheck::Off,
        ..settings("data.authz.allow", EngineChoice::Vm)
    };
    assert_eq!(
        compile(&b, &off).unwrap().evaluate(both).unwrap(),
        Value::Undefined
    );
}

#[test]
fn a_conflict_in_a_rule_the_decision_depends_on_needs_the_denials_recheck() {
    let b = bundle(&[("policy.rego", CONFLICT)]);
    let both = input(r#"{"a": true, "b": true}"#);
    let interp = compile(
        &b,
        &settings("data.authz.permit", EngineChoice::Interpreter),
    )
    .unwrap();
    assert!(interp.evaluate(both.clone()).is_err());
    let denials = PolicySettings {
        vm_recheck: VmRecheck::Denials,
        ..settings("data.authz.permit", EngineChoice::Vm)
    };
    let vm = compile(&b, &denials).unwrap();
    assert!(vm.evaluate(both).unwrap_err().message.contains("conflict"));
    assert_eq!(
        vm.evaluate(input(r#"{"a": true}"#)).unwrap(),
        Value::from(true)
    );
}

#[test]
fn a_builtin_type_error_stays_undefined_as_in_opa() {
    // OPA (outside strict mode) makes a builtin's type error undefined; the VM does the same and a
    // re-check does not turn the interpreter's stricter error into the answer.
    let policy =
        "package authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if input.n + 1 > 2\n";
    let b = bundle(&[("policy.rego", policy)]);
    let denials = PolicySettings {
        vm_recheck: VmRecheck::Denials,
        ..settings("data.authz.allow", EngineChoice::Vm)
    };
    let vm = compile(&b, &denials).unwrap();
    assert_eq!(
        vm.evaluate(input(r#"{"n": "s"}"#)).unwrap(),
        Value::from(false)
    );
    assert_eq!(
        vm.evaluate(input(r#"{"n": 5}"#)).unwrap(),
        Value::from(true)
    );
}

/// `y := <undefined call>` fails the body on both evaluators, so a rule's `else` (and `default`)
/// applies: regorus 0.14.1's VM compiler let the body go on (patched in third_party/regorus).
#[test]
fn an_undefined_call_in_a_colon_assignment_fails_the_body_on_the_vm() {
    let policy = "package t\n\nimport rego.v1\n\ndigest(x) := y if {\n\ty := crypto.sha256(x)\n} else := \"none\"\n\ndefault level := \"low\"\n\nlevel := y if {\n\ty := io.jwt.decode(input.t)[1].level\n}\n\nresult := {\"digest\": digest(input.n), \"level\": level}\n";
    let b = bundle(&[("policy.rego", policy)]);
    let answers = on_both(
        &b,
        "data.t.result",
        &[
            input(r#"{"n": 1, "t": "not-a-jwt"}"#),
            input(r#"{"n": "a", "t": "x"}"#),
        ],
    );
    assert_eq!(answers[0], input(r#"{"digest": "none", "level": "low"}"#));
    assert_eq!(
        answers[1]["digest"],
        Value::from("ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")
    );
}

/// A rule of another package reached through an import alias calls Regent's builtins on the VM
/// (regorus 0.14.1 built the whole imported package first, without them: patched in
/// third_party/regorus); a whole document of such rules read as a value keeps `auto` on the
/// interpreter.
#[test]
fn imported_rules_that_call_builtins_answer_alike() {
    let lib = "package lib\n\nimport rego.v1\n\nclaims := p if {\n\t[_, p, _] := io.jwt.decode(input.t)\n}\n";
    let via_alias = "package t\n\nimport rego.v1\n\nimport data.lib\n\ndefault h := {}\n\nh := {\"sub\": lib.claims.sub} if is_string(lib.claims.sub)\n";
    let whole = "package w\n\nimport rego.v1\n\ndoc := data.lib\n\nsub := doc.claims.sub\n";
    let b = bundle(&[("lib.rego", lib), ("t.rego", via_alias), ("w.rego", whole)]);
    let t = token(r#"{"sub":"alice"}"#);
    let i = input(&format!(r#"{{"t": "{t}"}}"#));
    let answers = on_both(&b, "data.t.h", &[i.clone(), input(r#"{"t": "x"}"#)]);
    assert_eq!(answers[0], input(r#"{"sub": "alice"}"#));
    assert_eq!(answers[1], Value::new_object());
    let auto = compile(&b, &settings("data.w.sub", EngineChoice::Auto)).unwrap();
    assert_eq!(auto.kind(), EvaluatorKind::Interpreter);
    assert_eq!(auto.evaluate(i).unwrap(), Value::from("alice"));
}

/// `every i, p in pat { ok(p, segs[i]) }` checks each `i`: regorus 0.14.1's VM compiler planned
/// `segs[i]` as a fresh iteration over `segs` (patched in third_party/regorus), so the body held
/// when any segment matched: the library's path matcher allowed `/api/orders/..%2Fadmin`.
#[test]
fn every_binds_its_key_in_the_body_on_the_vm() {
    let policy = "package t\n\nimport rego.v1\n\nok(\"*\", s) if not contains(s, \"/\")\n\nok(p, s) if {\n\tp != \"*\"\n\tp == s\n}\n\nallow if {\n\tpat := [\"api\", \"*\"]\n\tcount(pat) == count(input.segs)\n\tevery i, p in pat {\n\t\tok(p, input.segs[i])\n\t}\n}\n";
    let b = bundle(&[("policy.rego", policy)]);
    let answers = on_both(
        &b,
        "data.t.allow",
        &[
            input(r#"{"segs": ["api", "orders"]}"#),
            input(r#"{"segs": ["api", "../admin"]}"#),
            input(r#"{"segs": ["web", "orders"]}"#),
        ],
    );
    assert_eq!(
        answers,
        [Value::from(true), Value::Undefined, Value::Undefined]
    );
}

#[test]
fn the_demo_and_library_jwt_policies_run_on_the_vm() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for (dir, rule) in [
        ("envoy", "data.envoy.authz.allow"),
        ("library", "data.regent.edge.allow"),
    ] {
        let b = Arc::new(regent_policy::load::read_local(&root.join(dir)).expect("policy dir"));
        if let Err(e) = compile(&b, &settings(rule, EngineChoice::Vm)) {
            panic!("{dir} does not compile to the VM: {e}");
        }
        let p = compile(&b, &settings(rule, EngineChoice::Auto)).expect("activates");
        assert_eq!(p.kind(), EvaluatorKind::Vm, "{dir}");
        assert!(p.calls_host_builtins(), "{dir} verifies tokens in Rego");
        // Without a token both deny with their default decision object.
        let v = p.evaluate(http("GET", "/", "{}")).expect("evaluates");
        assert_eq!(v["allowed"], Value::from(false), "{dir}: {v}");
    }
}

/// A decision rule that cannot be evaluated (here an unsafe variable in its head, which regorus
/// reports only when the rule runs) is refused at activation on every evaluator, as the server's
/// gate refuses it, rather than activated to fail every Check.
#[test]
fn a_decision_rule_that_cannot_be_evaluated_is_refused() {
    let policy = "package envoy.authz\n\nimport rego.v1\n\nallow := {\"allowed\": true, \"headers\": {\"x\": y}}\n";
    let b = bundle(&[("policy.rego", policy)]);
    for engine in [
        EngineChoice::Auto,
        EngineChoice::Vm,
        EngineChoice::Interpreter,
    ] {
        match compile(&b, &settings("data.envoy.authz.allow", engine)) {
            Err(e) => assert!(
                e.to_string().contains("authz/policy.rego:5"),
                "{engine:?}: {e}"
            ),
            Ok(p) => panic!(
                "{engine:?}: activated, and then answers {:?}",
                p.evaluate(http("GET", "/", "{}"))
            ),
        }
    }
    // A rule that errors only on some requests is not refused: the trial is one minimal request.
    let some = "package envoy.authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if input.attributes.request.http.headers[\"x-n\"] + 1 > 2\n";
    let b = bundle(&[("policy.rego", some)]);
    assert!(compile(
        &b,
        &settings("data.envoy.authz.allow", EngineChoice::Interpreter)
    )
    .is_ok());
}
