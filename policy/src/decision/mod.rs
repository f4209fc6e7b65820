//! Maps a policy decision (the value of the decision rule) onto Envoy's `CheckResponse`, with
//! OPA-Envoy's result contract, and request parse errors onto HTTP 400 responses.
//!
//! A decision is either a boolean or an object with a required boolean `allowed` plus optional
//! `headers`, `response_headers_to_add`, `request_headers_to_remove`, `query_parameters_to_set`,
//! `query_parameters_to_remove`, `body`, `http_status` and `dynamic_metadata`. As in OPA-Envoy a
//! field is validated only on the branch (allow or deny) that uses it, and unknown keys are ignored.
//!
//! Where we go further than OPA-Envoy (see `docs/input-and-decisions.md`):
//! - header `append_action` is always set explicitly: the first value of a name in `headers`
//!   is `OVERWRITE_IF_EXISTS_OR_ADD` and every further value of that name is
//!   `APPEND_IF_EXISTS_OR_ADD`, so all values of a multi-valued header survive;
//!   `response_headers_to_add` entries are all `APPEND_IF_EXISTS_OR_ADD`;
//! - `query_parameters_to_set` is emitted sorted by key, values in the order given, so the same
//!   decision always produces the same response;
//! - `decision_id` is set in `dynamic_metadata` on every response, parse errors included.

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, QueryParameter};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct};
use envoy_types::pb::google::rpc::Status;
use regorus::Value;

use crate::input::RequestParseError;

mod http_response;

pub use http_response::{to_http_response, DECISION_ID_HEADER, HEADERS_TO_REMOVE_HEADER};

/// gRPC status code for an allowed request.
const OK: i32 = 0;
/// gRPC status code for a denied request (`PERMISSION_DENIED`).
const PERMISSION_DENIED: i32 = 7;
const DEFAULT_DENY_STATUS: i32 = 403;

/// The decision could not be turned into a response. Callers answer with a gRPC error, so Envoy's
/// `failure_mode_allow` / `status_on_error` apply, and count it by [`DecisionError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// The decision rule is undefined for this input (often a wrong package path).
    #[error("undefined decision")]
    UndefinedDecision,
    /// The decision is neither a boolean nor an object.
    #[error("illegal value for policy evaluation result: {0}")]
    IllegalResult(&'static str),
    /// An object decision without the `allowed` key.
    #[error("missing \"allowed\" key in decision")]
    MissingAllowed,
    /// A decision field has the wrong type or an out-of-range value.
    #[error("invalid decision field {field:?}: {problem}")]
    InvalidField {
        /// The decision key that is wrong, e.g. `http_status`.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl DecisionError {
    /// Stable label for the `regent_check_errors_total{reason}` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            DecisionError::UndefinedDecision => "undefined_decision",
            DecisionError::IllegalResult(_) => "illegal_result",
            DecisionError::MissingAllowed => "missing_allowed",
            DecisionError::InvalidField { .. } => "invalid_field",
        }
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> DecisionError {
    DecisionError::InvalidField {
        field,
        problem: problem.into(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Set(_) => "set",
        Value::Object(_) => "object",
        Value::Undefined => "undefined",
    }
}

/// Turns the value of the decision rule into a `CheckResponse`; `decision_id` goes into the
/// response's dynamic metadata (overwriting a `decision_id` key the policy set).
pub fn to_check_response(
    result: &Value,
    decision_id: &str,
) -> Result<CheckResponse, DecisionError> {
    match result {
        Value::Undefined => Err(DecisionError::UndefinedDecision),
        Value::Bool(allowed) => Ok(CheckResponse {
            status: Some(status(*allowed)),
            dynamic_metadata: Some(with_decision_id(Struct::default(), decision_id)),
            http_response: None,
        }),
        Value::Object(obj) => {
            let allowed = match obj.get(&Value::from("allowed")) {
                None => return Err(DecisionError::MissingAllowed),
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(invalid(
                        "allowed",
                        format!("must be a boolean, got {}", type_name(other)),
                    ))
                }
            };
            let field = |name: &str| obj.get(&Value::from(name));
            let metadata = match field("dynamic_metadata") {
                Some(v) => object_to_struct(v, "dynamic_metadata")?,
                None => Struct::default(),
            };
            let headers = match field("headers") {
                Some(v) => header_options(v, "headers", HeaderMode::Overwrite)?,
                None => Vec::new(),
            };
            let http_response = if allowed {
                HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    headers_to_remove: string_list(
                        field("request_headers_to_remove"),
                        "request_headers_to_remove",
                    )?,
                    response_headers_to_add: match field("response_headers_to_add") {
                        Some(v) => {
                            header_options(v, "response_headers_to_add", HeaderMode::Append)?
                        }
                        None => Vec::new(),
                    },
                    query_parameters_to_set: query_params(field("query_parameters_to_set"))?,
                    query_parameters_to_remove: string_list(
                        field("query_parameters_to_remove"),
                        "query_parameters_to_remove",
                    )?,
                    // The deprecated `dynamic_metadata` here is left unset: metadata goes on the
                    // CheckResponse itself.
                    ..Default::default()
                })
            } else {
                let body = match field("body") {
                    None => String::new(),
                    Some(Value::String(s)) => s.to_string(),
                    Some(other) => {
                        return Err(invalid(
                            "body",
                            format!("must be a string, got {}", type_name(other)),
                        ))
                    }
                };
                let code = match field("http_status") {
                    None => DEFAULT_DENY_STATUS,
                    Some(v) => http_status(v)?,
                };
                HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code }),
                    headers,
                    body,
                })
            };
            Ok(CheckResponse {
                status: Some(status(allowed)),
                dynamic_metadata: Some(with_decision_id(metadata, decision_id)),
                http_response: Some(http_response),
            })
        }
        other => Err(DecisionError::IllegalResult(type_name(other))),
    }
}

/// The answer dry-run gives for a denying `response`: allowed, as OPA-Envoy's `dry-run` answers,
/// keeping what the policy asked for besides the verdict (its headers, which go to the upstream
/// request, and the dynamic metadata, decision id included). The deny's status and body are
/// dropped: they describe a response that is not sent.
pub fn dry_run_allow(response: CheckResponse) -> CheckResponse {
    let headers = match response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied.headers,
        Some(HttpResponse::OkResponse(ok)) => ok.headers,
        _ => Vec::new(),
    };
    CheckResponse {
        status: Some(status(true)),
        dynamic_metadata: response.dynamic_metadata,
        http_response: (!headers.is_empty()).then(|| {
            HttpResponse::OkResponse(OkHttpResponse {
                headers,
                ..Default::default()
            })
        }),
    }
}

/// The response to a request that could not be parsed: gRPC status `PERMISSION_DENIED` with
/// message `request_parse_error: ...`, and an HTTP 400 with the same text as its body.
pub fn parse_error_response(err: &RequestParseError, decision_id: &str) -> CheckResponse {
    let message = format!("request_parse_error: {err}");
    CheckResponse {
        status: Some(Status {
            code: PERMISSION_DENIED,
            message: message.clone(),
            details: Vec::new(),
        }),
        dynamic_metadata: Some(with_decision_id(Struct::default(), decision_id)),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: StatusCode::BadRequest as i32,
            }),
            headers: Vec::new(),
            body: message,
        })),
    }
}

fn status(allowed: bool) -> Status {
    Status {
        code: if allowed { OK } else { PERMISSION_DENIED },
        message: String::new(),
        details: Vec::new(),
    }
}

fn with_decision_id(mut s: Struct, decision_id: &str) -> Struct {
    s.fields.insert(
        "decision_id".to_string(),
        pb_string(decision_id.to_string()),
    );
    s
}

fn pb_string(s: String) -> envoy_types::pb::google::protobuf::Value {
    envoy_types::pb::google::protobuf::Value {
        kind: Some(Kind::StringValue(s)),
    }
}

fn http_status(v: &Value) -> Result<i32, DecisionError> {
    let problem = || {
        invalid(
            "http_status",
            format!("{v} is not an HTTP status code known to Envoy (envoy.type.v3.StatusCode)"),
        )
    };
    let n = match v {
        Value::Number(n) if n.is_integer() => n.as_i64().ok_or_else(problem)?,
        other => {
            return Err(invalid(
                "http_status",
                format!("must be an integer, got {}", type_name(other)),
            ))
        }
    };
    let code = i32::try_from(n).map_err(|_| problem())?;
    // StatusCode also has `Empty = 0`, which is no HTTP status.
    if !(100..=599).contains(&code) || StatusCode::try_from(code).is_err() {
        return Err(problem());
    }
    Ok(code)
}

#[derive(Clone, Copy)]
enum HeaderMode {
    /// First value of a name overwrites, later values of the same name append.
    Overwrite,
    /// Every value appends.
    Append,
}

/// `{name: string | [string]}` or an array of such objects, in order.
fn header_options(
    v: &Value,
    field: &'static str,
    mode: HeaderMode,
) -> Result<Vec<HeaderValueOption>, DecisionError> {
    let mut out = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut add_object =
        |o: &Value, out: &mut Vec<HeaderValueOption>| -> Result<(), DecisionError> {
            let Value::Object(obj) = o else {
                return Err(invalid(
                    field,
                    format!(
                        "must be an object or an array of objects, got {} element",
                        type_name(o)
                    ),
                ));
            };
            for (k, val) in obj.iter() {
                let Value::String(name) = k else {
                    return Err(invalid(field, "header names must be strings"));
                };
                let mut push = |value: &str| {
                    let lower = name.to_ascii_lowercase();
                    let action = match mode {
                        HeaderMode::Append => HeaderAppendAction::AppendIfExistsOrAdd,
                        HeaderMode::Overwrite if seen.contains(&lower) => {
                            HeaderAppendAction::AppendIfExistsOrAdd
                        }
                        HeaderMode::Overwrite => {
                            seen.push(lower);
                            HeaderAppendAction::OverwriteIfExistsOrAdd
                        }
                    };
                    out.push(HeaderValueOption {
                        header: Some(HeaderValue {
                            key: name.to_string(),
                            value: value.to_string(),
                            raw_value: Vec::new(),
                        }),
                        append_action: action as i32,
                        // `append` is deprecated in favour of `append_action` and must stay unset.
                        ..Default::default()
                    });
                };
                match val {
                    Value::String(s) => push(s),
                    Value::Array(items) => {
                        for item in items.iter() {
                            match item {
                                Value::String(s) => push(s),
                                other => {
                                    return Err(invalid(
                                        field,
                                        format!(
                                            "values of header {name:?} must be strings, got {}",
                                            type_name(other)
                                        ),
                                    ))
                                }
                            }
                        }
                    }
                    other => {
                        return Err(invalid(
                            field,
                            format!(
                                "header {name:?} must be a string or an array of strings, got {}",
                                type_name(other)
                            ),
                        ))
                    }
                }
            }
            Ok(())
        };
    match v {
        Value::Object(_) => add_object(v, &mut out)?,
        Value::Array(items) => {
            for item in items.iter() {
                add_object(item, &mut out)?;
            }
        }
        other => {
            return Err(invalid(
                field,
                format!(
                    "must be an object or an array of objects, got {}",
                    type_name(other)
                ),
            ))
        }
    }
    Ok(out)
}

fn string_list(v: Option<&Value>, field: &'static str) -> Result<Vec<String>, DecisionError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let items: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Set(s) => s.iter().collect(),
        other => {
            return Err(invalid(
                field,
                format!("must be an array of strings, got {}", type_name(other)),
            ))
        }
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => Ok(s.to_string()),
            other => Err(invalid(
                field,
                format!("elements must be strings, got {}", type_name(other)),
            )),
        })
        .collect()
}

/// One `QueryParameter` per value, keys in sorted order (Rego objects iterate sorted), values in
/// the order the policy gave them.
fn query_params(v: Option<&Value>) -> Result<Vec<QueryParameter>, DecisionError> {
    const FIELD: &str = "query_parameters_to_set";
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let Value::Object(obj) = v else {
        return Err(invalid(
            FIELD,
            format!("must be an object, got {}", type_name(v)),
        ));
    };
    let mut out = Vec::new();
    for (k, val) in obj.iter() {
        let Value::String(key) = k else {
            return Err(invalid(FIELD, "parameter names must be strings"));
        };
        let mut push = |s: &str| {
            out.push(QueryParameter {
                key: key.to_string(),
                value: s.to_string(),
            })
        };
        match val {
            Value::String(s) => push(s),
            Value::Array(items) => {
                for item in items.iter() {
                    match item {
                        Value::String(s) => push(s),
                        other => {
                            return Err(invalid(
                                FIELD,
                                format!(
                                    "values of {key:?} must be strings, got {}",
                                    type_name(other)
                                ),
                            ))
                        }
                    }
                }
            }
            other => {
                return Err(invalid(
                    FIELD,
                    format!(
                        "{key:?} must be a string or an array of strings, got {}",
                        type_name(other)
                    ),
                ))
            }
        }
    }
    Ok(out)
}

fn object_to_struct(v: &Value, field: &'static str) -> Result<Struct, DecisionError> {
    let Value::Object(obj) = v else {
        return Err(invalid(
            field,
            format!("must be an object, got {}", type_name(v)),
        ));
    };
    let mut s = Struct::default();
    for (k, val) in obj.iter() {
        let Value::String(key) = k else {
            return Err(invalid(field, "object keys must be strings"));
        };
        s.fields.insert(key.to_string(), to_pb_value(val, field)?);
    }
    Ok(s)
}

fn to_pb_value(
    v: &Value,
    field: &'static str,
) -> Result<envoy_types::pb::google::protobuf::Value, DecisionError> {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(
            n.as_f64()
                .ok_or_else(|| invalid(field, format!("number {v} does not fit a double")))?,
        ),
        Value::String(s) => Kind::StringValue(s.to_string()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a
                .iter()
                .map(|x| to_pb_value(x, field))
                .collect::<Result<_, _>>()?,
        }),
        Value::Set(s) => Kind::ListValue(ListValue {
            values: s
                .iter()
                .map(|x| to_pb_value(x, field))
                .collect::<Result<_, _>>()?,
        }),
        Value::Object(_) => Kind::StructValue(object_to_struct(v, field)?),
        Value::Undefined => return Err(invalid(field, "contains an undefined value")),
    };
    Ok(envoy_types::pb::google::protobuf::Value { kind: Some(kind) })
}
