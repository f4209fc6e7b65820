//! `regent check`: answers one Envoy `CheckRequest` (proto3 JSON) with a bundle, through the
//! sidecar's own code: [`ActivePolicy::compile`] (bundle loading, builtins, evaluator choice, trial
//! evaluation), [`build_input`] and [`to_check_response`]. What it prints is what the sidecar would
//! send Envoy.
//!
//! Exit codes: 0 allowed, 3 denied (a request the input builder cannot parse is denied with HTTP
//! 400, as in the sidecar), 1 error, including decisions the sidecar cannot map to an answer
//! (undefined, wrong type, evaluation error), for which it returns a gRPC error and Envoy's
//! `failure_mode_allow`/`status_on_error` decide.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::google::protobuf::{value::Kind, Struct};
use regent_policy::decision::{parse_error_response, to_check_response};
use regent_policy::input::{build_input, build_input_for, load_descriptor_set, InputOptions};
use regent_policy::load::LOCAL_BUNDLE_NAME;
use regent_policy::{ActivePolicy, EngineChoice, PolicySettings};
use serde_json::{json, Value as Json};

use super::check_request::check_request_from_json;
use super::engine::rule_from_path;
use super::files::{read_bundle, read_json};
use crate::policy_test::parse_duration;

/// Exit code of a denied request.
pub const EXIT_DENIED: u8 = 3;

/// Arguments of `regent check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Bundle: a policy directory or a `.tar.gz` archive.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The CheckRequest in proto3 JSON (`{"attributes": {"request": {"http": {...}}}}`); `-` reads
    /// standard input.
    #[arg(long)]
    pub request: PathBuf,
    /// Decision path, as the sidecar's `policy.path`.
    #[arg(long, default_value = "envoy/authz/allow")]
    pub path: String,
    /// As the sidecar's `policy.skip_request_body_parse`.
    #[arg(long)]
    pub skip_request_body_parse: bool,
    /// As the sidecar's `policy.proto_descriptor`: descriptors to decode gRPC request bodies.
    #[arg(long, value_name = "FILE")]
    pub proto_descriptor: Option<PathBuf>,
    /// Longest the evaluation may run (the sidecar's `policy.eval_timeout_ms` defaults to 100ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub eval_timeout: Duration,
    /// Evaluator, as the sidecar's `policy.engine` (`vm` fails when the policy needs the interpreter).
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    pub engine: Engine,
    /// Decision id put in the response's dynamic metadata (default: a random UUID, as the sidecar).
    #[arg(long)]
    pub decision_id: Option<String>,
    /// Also print the input document the policy saw.
    #[arg(long)]
    pub show_input: bool,
}

/// The sidecar's `policy.engine` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// The bytecode VM when the policy compiles to it, else the interpreter.
    Auto,
    /// Always the bytecode VM.
    Vm,
    /// Always the interpreter.
    Interpreter,
}

/// Runs `regent check`; returns the exit code (0 allowed, 3 denied, 1 error).
pub fn run(args: CheckArgs) -> anyhow::Result<u8> {
    let rule = rule_from_path(&args.path)?;
    let doc = read_json(&args.request, "--request")?;
    let req = check_request_from_json(&doc).with_context(|| {
        format!(
            "--request {}: not a valid CheckRequest",
            args.request.display()
        )
    })?;
    let descriptors = match &args.proto_descriptor {
        Some(p) => Some(Arc::new(load_descriptor_set(p)?)),
        None => None,
    };
    let input_opts = InputOptions {
        skip_request_body_parse: args.skip_request_body_parse,
        descriptors,
        prune: true,
    };
    let bundle = read_bundle(&args.bundle)?;
    let settings = PolicySettings {
        rule: rule.clone(),
        engine: match args.engine {
            Engine::Auto => EngineChoice::Auto,
            Engine::Vm => EngineChoice::Vm,
            Engine::Interpreter => EngineChoice::Interpreter,
        },
        eval_timeout: args.eval_timeout,
        ..PolicySettings::default()
    };
    let policy = ActivePolicy::compile(
        &[(LOCAL_BUNDLE_NAME.to_string(), Arc::new(bundle))],
        &settings,
    )
    .context("the sidecar could not activate this bundle")?;
    let decision_id = args
        .decision_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());

    // Evaluated on the input the sidecar builds for this policy (only the parts it can read);
    // `--show-input` prints the whole document.
    let (response, decision, input) = match build_input_for(&req, &input_opts, policy.input_needs())
    {
        Err(e) => (parse_error_response(&e, &decision_id), None, None),
        Ok(input) => {
            let shown = if args.show_input {
                Some(build_input(&req, &input_opts)?)
            } else {
                None
            };
            let value = policy.fresh_eval(input).map_err(|e| {
                anyhow::anyhow!(
                    "policy evaluation failed: {}\n(the sidecar answers with a gRPC error; Envoy's failure_mode_allow decides)",
                    e.message
                )
            })?;
            let response = match to_check_response(&value, &decision_id) {
                Ok(r) => r,
                Err(e) => bail!(
                    "no answer ({}): {e}; decision was {}\n(the sidecar answers with a gRPC error; Envoy's failure_mode_allow decides)",
                    e.reason(),
                    serde_json::to_string(&value).unwrap_or_default()
                ),
            };
            (response, Some(value), shown)
        }
    };
    let mut doc = render_response(&response);
    if let Some(v) = decision {
        doc["decision"] = serde_json::to_value(&v)?;
    }
    if let Some(v) = input {
        doc["input"] = serde_json::to_value(&v)?;
    }
    outln!("{}", serde_json::to_string_pretty(&TopLevelOrder(&doc))?);
    Ok(if is_allowed(&response) {
        0
    } else {
        EXIT_DENIED
    })
}

/// True when the response lets the request through (gRPC status OK).
pub fn is_allowed(resp: &CheckResponse) -> bool {
    resp.status.as_ref().map_or(0, |s| s.code) == 0
}

/// A `CheckResponse` as readable JSON: `allowed`, the gRPC `status`, then `ok_response` or
/// `denied_response` with everything Envoy will do (headers set, appended and removed, query
/// changes, status and body), and `dynamic_metadata`.
pub fn render_response(resp: &CheckResponse) -> Json {
    let code = resp.status.as_ref().map_or(0, |s| s.code);
    let mut doc = json!({
        "allowed": is_allowed(resp),
        "status": {
            "code": code,
            "name": grpc_code_name(code),
            "message": resp.status.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
        },
    });
    match &resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            doc["ok_response"] = json!({
                "headers": headers(&ok.headers),
                "headers_to_remove": ok.headers_to_remove,
                "response_headers_to_add": headers(&ok.response_headers_to_add),
                "query_parameters_to_set": ok.query_parameters_to_set.iter()
                    .map(|q| json!({"key": q.key, "value": q.value}))
                    .collect::<Vec<_>>(),
                "query_parameters_to_remove": ok.query_parameters_to_remove,
            });
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            doc["denied_response"] = json!({
                "http_status": denied.status.as_ref().map(|s| s.code),
                "headers": headers(&denied.headers),
                "body": denied.body,
            });
        }
        Some(HttpResponse::ErrorResponse(e)) => {
            doc["error_response"] = json!({
                "http_status": e.status.as_ref().map(|s| s.code),
                "headers": headers(&e.headers),
                "body": e.body,
            });
        }
        None => {}
    }
    doc["dynamic_metadata"] = resp
        .dynamic_metadata
        .as_ref()
        .map_or(Json::Null, struct_json);
    doc
}

fn headers(list: &[HeaderValueOption]) -> Vec<Json> {
    list.iter()
        .map(|h| {
            let (key, value) = h
                .header
                .as_ref()
                .map(|hv| (hv.key.clone(), hv.value.clone()))
                .unwrap_or_default();
            let action = HeaderAppendAction::try_from(h.append_action)
                .map(|a| a.as_str_name().to_string())
                .unwrap_or_else(|_| h.append_action.to_string());
            json!({"key": key, "value": value, "append_action": action})
        })
        .collect()
}

fn struct_json(s: &Struct) -> Json {
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), pb_json(v)))
            .collect(),
    )
}

fn pb_json(v: &envoy_types::pb::google::protobuf::Value) -> Json {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number)
        }
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::StructValue(s)) => struct_json(s),
        Some(Kind::ListValue(l)) => Json::Array(l.values.iter().map(pb_json).collect()),
    }
}

fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        7 => "PERMISSION_DENIED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        16 => "UNAUTHENTICATED",
        _ => "OTHER",
    }
}

/// Prints the top-level keys in reading order (verdict first, the large `input` last); serde_json
/// would sort them.
struct TopLevelOrder<'a>(&'a Json);

impl serde::Serialize for TopLevelOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        const ORDER: &[&str] = &[
            "allowed",
            "status",
            "ok_response",
            "denied_response",
            "error_response",
            "dynamic_metadata",
            "decision",
            "input",
        ];
        let Some(obj) = self.0.as_object() else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(Some(obj.len()))?;
        for key in ORDER {
            if let Some(v) = obj.get(*key) {
                map.serialize_entry(key, v)?;
            }
        }
        for (k, v) in obj {
            if !ORDER.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}
