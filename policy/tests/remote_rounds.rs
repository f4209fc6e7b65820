//! Remote builtins (`http.send`, `regent.introspect`) on both evaluators: a first round defers
//! the call and answers undefined, the round with the answer decides, and a raised answer fails
//! the evaluation.

use std::sync::Arc;

use regent_bundle::Bundle;
use regent_policy::builtins::remote::{Answer, Call, Calls, Resolver};
use regent_policy::{ActivePolicy, EngineChoice, PolicySettings};
use regorus::Value;

const POLICY: &str = r#"
package envoy.authz

import rego.v1

default allow := false

allow if {
	resp := http.send({"method": "GET", "url": input.url})
	resp.status_code == 200
	resp.body.orders == "read"
}
"#;

struct NothingCached;
impl Resolver for NothingCached {
    fn cached(&self, call: &Call) -> Option<Answer> {
        let url = serde_json::to_value(&call.args[0]).ok()?["url"].clone();
        (url == "http://refused/").then(|| Answer::Raise("host refused".into()))
    }
}

fn policy(engine: EngineChoice) -> ActivePolicy {
    let files = [("authz.rego".to_string(), POLICY.as_bytes().to_vec())]
        .into_iter()
        .collect();
    let bundle = Arc::new(Bundle::from_files(files).expect("bundle"));
    let settings = PolicySettings {
        rule: "data.envoy.authz.allow".into(),
        engine,
        ..PolicySettings::default()
    };
    ActivePolicy::compile(&[("b".into(), bundle)], &settings).expect("compiles")
}

#[test]
fn a_deferred_call_is_answered_in_the_next_round_on_both_evaluators() {
    for engine in [EngineChoice::Vm, EngineChoice::Interpreter] {
        let p = policy(engine);
        let input = Value::from_json_str(r#"{"url": "http://ok/"}"#).unwrap();
        let mut calls = Calls::new(Arc::new(NothingCached));
        let first = calls
            .round(|| p.evaluate(input.clone()))
            .expect("evaluates");
        assert_eq!(first, Value::from(false), "{engine:?}");
        let deferred = calls.take_deferred();
        assert_eq!(deferred.len(), 1, "{engine:?}: {deferred:?}");
        let response = Value::from_json_str(
            r#"{"status_code": 200, "body": {"orders": "read"}, "raw_body": "", "headers": {}}"#,
        )
        .unwrap();
        calls.answer(deferred[0].clone(), Answer::Value(response));
        let second = calls
            .round(|| p.evaluate(input.clone()))
            .expect("evaluates");
        assert_eq!(second, Value::from(true), "{engine:?}");
        assert!(calls.deferred().is_empty());

        let refused = Value::from_json_str(r#"{"url": "http://refused/"}"#).unwrap();
        let mut calls = Calls::new(Arc::new(NothingCached));
        let _ = calls.round(|| p.evaluate(refused.clone()));
        assert_eq!(calls.raised(), Some("host refused"), "{engine:?}");
    }
}
