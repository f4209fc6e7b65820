//! OPA's decision log rules, evaluated by the policy itself on each decision event:
//! `data.system.log.drop` (true: the event is not logged) and `data.system.log.mask` (what to
//! erase or rewrite). Their `input` is the whole event, as OPA gives it: the request's input
//! document is `input.input`, the decision `input.result`.
//!
//! A mask result is a set (or array) of
//! - JSON pointer strings: the field is erased and listed in the event's `erased`;
//! - `{"op": "upsert", "path": pointer, "value": v}`: the field is set (created with its parents
//!   if absent) and listed in `masked`; `{"op": "remove", "path": pointer}`: erased, listed in
//!   `masked`.
//!
//! As in OPA, a pointer must start with `/input`, `/result` or `/nd_builtin_cache`; an entry that
//! is not one of the shapes above is an error (the caller then drops the event rather than log
//! what the policy wanted hidden). These rules run on the decision log's own thread with the
//! interpreter, never on a Check's path.

use regorus::Value;
use serde_json::Value as Json;

use crate::active::{ActivePolicy, EvalError};

/// The rule whose `true` drops an event.
pub const DROP_RULE: &str = "data.system.log.drop";
/// The rule naming what of an event to erase or rewrite.
pub const MASK_RULE: &str = "data.system.log.mask";
/// Where a mask pointer may point.
const MASKABLE: [&str; 3] = ["/input", "/result", "/nd_builtin_cache"];

/// One change a mask rule asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskOp {
    /// Erase the field; recorded in `erased`.
    Erase(String),
    /// Erase the field; recorded in `masked`.
    Remove(String),
    /// Set the field; recorded in `masked`.
    Upsert {
        /// JSON pointer.
        path: String,
        /// The new value.
        value: Json,
    },
}

/// The decision log rules of one policy, with an interpreter of their own.
pub struct LogRules {
    engine: regorus::Engine,
    drop: bool,
    mask: bool,
}

impl ActivePolicy {
    /// The policy's decision log rules, or `None` when it defines neither (the usual case).
    /// Compiles them (milliseconds): call once per policy, not per event.
    pub fn log_rules(&self) -> Option<LogRules> {
        let mut engine = self.interpreter();
        let mut defines = |rule: &str| engine.compile_with_entrypoint(&rule.into()).is_ok();
        let (drop, mask) = (defines(DROP_RULE), defines(MASK_RULE));
        (drop || mask).then_some(LogRules { engine, drop, mask })
    }
}

impl LogRules {
    /// Whether `data.system.log.drop` is true for `event`.
    pub fn drops(&mut self, event: &Json) -> Result<bool, EvalError> {
        if !self.drop {
            return Ok(false);
        }
        Ok(self.eval(DROP_RULE, event)? == Value::Bool(true))
    }

    /// What `data.system.log.mask` asks for `event` (empty when it is not defined or undefined).
    pub fn mask(&mut self, event: &Json) -> Result<Vec<MaskOp>, EvalError> {
        if !self.mask {
            return Ok(Vec::new());
        }
        let entries = match self.eval(MASK_RULE, event)? {
            Value::Undefined => return Ok(Vec::new()),
            Value::Set(s) => s.iter().cloned().collect::<Vec<_>>(),
            Value::Array(a) => a.iter().cloned().collect(),
            other => return Err(invalid(format!("{MASK_RULE} is not a set: {other}"))),
        };
        entries.iter().map(mask_op).collect()
    }

    fn eval(&mut self, rule: &str, event: &Json) -> Result<Value, EvalError> {
        let input = Value::from_json_str(&event.to_string()).map_err(|e| invalid(e.to_string()))?;
        self.engine.set_input(input);
        self.engine
            .eval_rule(rule.to_string())
            .map_err(|e| invalid(format!("{rule}: {e:#}")))
    }
}

fn invalid(message: String) -> EvalError {
    EvalError { message }
}

fn mask_op(entry: &Value) -> Result<MaskOp, EvalError> {
    let json = serde_json::to_value(entry).map_err(|e| invalid(e.to_string()))?;
    let pointer = |p: &Json| -> Result<String, EvalError> {
        let p = p
            .as_str()
            .ok_or_else(|| invalid(format!("mask path {p} is not a string")))?;
        let allowed = MASKABLE
            .iter()
            .any(|root| p == *root || p.starts_with(&format!("{root}/")));
        if !allowed {
            return Err(invalid(format!(
                "mask path {p:?} must start with /input, /result or /nd_builtin_cache"
            )));
        }
        Ok(p.to_string())
    };
    match &json {
        Json::String(_) => Ok(MaskOp::Erase(pointer(&json)?)),
        Json::Object(o) => match o.get("op").and_then(Json::as_str) {
            Some("upsert") => Ok(MaskOp::Upsert {
                path: pointer(o.get("path").unwrap_or(&Json::Null))?,
                value: o
                    .get("value")
                    .cloned()
                    .ok_or_else(|| invalid("an upsert without a value".into()))?,
            }),
            Some("remove") => Ok(MaskOp::Remove(pointer(
                o.get("path").unwrap_or(&Json::Null),
            )?)),
            _ => Err(invalid(format!(
                "mask entry {json} has no op \"upsert\" or \"remove\""
            ))),
        },
        other => Err(invalid(format!(
            "mask entry {other} is not a pointer or an object"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::PolicySettings;

    fn policy(rego: &str) -> ActivePolicy {
        let files = [
            (
                "authz.rego".to_string(),
                b"package envoy.authz\n\nallow := true\n".to_vec(),
            ),
            ("log.rego".to_string(), rego.as_bytes().to_vec()),
        ];
        let bundle =
            Arc::new(regent_bundle::Bundle::from_files(files.into_iter().collect()).unwrap());
        let settings = PolicySettings {
            rule: "data.envoy.authz.allow".into(),
            ..PolicySettings::default()
        };
        ActivePolicy::compile(&[("b".into(), bundle)], &settings).expect("compiles")
    }

    #[test]
    fn mask_and_drop_rules_answer_per_event() {
        let p = policy(
            r#"package system.log
import rego.v1
drop if input.input.path == "/health"
mask contains "/input/password"
mask contains {"op": "upsert", "path": "/input/user", "value": "redacted"} if input.input.user
"#,
        );
        let mut rules = p.log_rules().expect("defined");
        let event = serde_json::json!({"input": {"path": "/health"}});
        assert!(rules.drops(&event).unwrap());
        let event = serde_json::json!({"input": {"path": "/x", "user": "alice"}});
        assert!(!rules.drops(&event).unwrap());
        let mut ops = rules.mask(&event).unwrap();
        ops.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(
            ops,
            [
                MaskOp::Erase("/input/password".into()),
                MaskOp::Upsert {
                    path: "/input/user".into(),
                    value: "redacted".into()
                },
            ]
        );
    }

    #[test]
    fn a_policy_without_them_has_none_and_bad_entries_are_errors() {
        assert!(policy("package other\n\nx := 1\n").log_rules().is_none());
        let mut rules =
            policy("package system.log\nimport rego.v1\nmask contains \"/labels/id\"\n")
                .log_rules()
                .expect("defined");
        let e = rules.mask(&serde_json::json!({})).unwrap_err();
        assert!(
            e.message.contains("must start with /input"),
            "{}",
            e.message
        );
    }
}
