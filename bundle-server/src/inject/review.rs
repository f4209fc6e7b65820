//! `admission.k8s.io/v1` AdmissionReview in, AdmissionReview (with a JSON patch) out.

use base64::Engine as _;
use serde_json::{json, Value};

use super::patch::{plan, Plan, SkipReason};
use super::template::InjectTemplate;

const API_VERSION: &str = "admission.k8s.io/v1";

/// The webhook's answer to one review, and what happened (for logs and metrics).
#[derive(Debug, Clone)]
pub struct Reviewed {
    /// The AdmissionReview to send back (always HTTP 200: the API server reads the verdict from it).
    pub response: Value,
    /// What was decided.
    pub outcome: Outcome,
    /// `namespace/name` of the pod (`generateName*` before the name is assigned), for logs.
    pub subject: String,
}

/// What the webhook did with a review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added.
    Injected,
    /// The pod was admitted unchanged.
    Skipped(SkipReason),
    /// Not a pod CREATE (the webhook's rules should not send these; admitted unchanged).
    NotApplicable,
    /// The review or the pod in it could not be processed; the request is refused with this message.
    Invalid(String),
}

/// Every value [`Outcome::label`] gives: the review counter's series, exported at 0 from start.
pub const OUTCOME_LABELS: &[&str] = &[
    "injected",
    "opted_out",
    "already_injected",
    "conflict",
    "not_applicable",
    "invalid",
];

impl Outcome {
    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped(r) => r.label(),
            Outcome::NotApplicable => "not_applicable",
            Outcome::Invalid(_) => "invalid",
        }
    }
}

/// Handles the body of a POST from the API server.
///
/// Never fails: a malformed review gets a refusal (`allowed: false`, code 400) that echoes the
/// request's `uid` when one can be found, so the API server reports the reason to the user.
pub fn handle_review(body: &[u8], tpl: &InjectTemplate) -> Reviewed {
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return invalid("", format!("the AdmissionReview is not JSON: {e}")),
    };
    let uid = review
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if review.get("apiVersion").and_then(Value::as_str) != Some(API_VERSION)
        || review.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
    {
        return invalid(
            &uid,
            format!("expected apiVersion {API_VERSION} kind AdmissionReview (set admissionReviewVersions: [v1])"),
        );
    }
    let Some(request) = review.get("request").and_then(Value::as_object) else {
        return invalid(&uid, "the AdmissionReview has no request".into());
    };
    if uid.is_empty() {
        return invalid(&uid, "request.uid is missing".into());
    }
    let subject = subject(request);
    let is_pod = request.get("kind").is_some_and(|k| {
        k.get("group").and_then(Value::as_str) == Some("")
            && k.get("kind").and_then(Value::as_str) == Some("Pod")
    });
    let is_create = request.get("operation").and_then(Value::as_str) == Some("CREATE");
    if !is_pod || !is_create {
        return Reviewed {
            response: response(json!({"uid": uid, "allowed": true})),
            outcome: Outcome::NotApplicable,
            subject,
        };
    }
    let Some(pod) = request.get("object") else {
        return invalid(&uid, "request.object (the pod) is missing".into()).about(subject);
    };
    match plan(pod, tpl) {
        Ok(Plan::Inject(ops)) => {
            let patch =
                base64::engine::general_purpose::STANDARD.encode(Value::Array(ops).to_string());
            Reviewed {
                response: response(json!({
                    "uid": uid,
                    "allowed": true,
                    "patchType": "JSONPatch",
                    "patch": patch,
                })),
                outcome: Outcome::Injected,
                subject,
            }
        }
        Ok(Plan::Skip(reason)) => {
            let mut r = json!({"uid": uid, "allowed": true});
            if let SkipReason::Conflict(msg) = &reason {
                r["warnings"] = json!([msg]);
            }
            Reviewed {
                response: response(r),
                outcome: Outcome::Skipped(reason),
                subject,
            }
        }
        Err(e) => invalid(&uid, format!("cannot inject regent-sidecar: {e}")).about(subject),
    }
}

fn response(r: Value) -> Value {
    json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": r})
}

fn invalid(uid: &str, message: String) -> Reviewed {
    Reviewed {
        response: response(json!({
            "uid": uid,
            "allowed": false,
            "status": {"code": 400, "message": message},
        })),
        outcome: Outcome::Invalid(message),
        subject: String::new(),
    }
}

impl Reviewed {
    fn about(mut self, subject: String) -> Self {
        self.subject = subject;
        self
    }
}

fn subject(request: &serde_json::Map<String, Value>) -> String {
    let str_at = |p: &str| {
        request
            .get("object")
            .and_then(|o| o.pointer(p))
            .and_then(Value::as_str)
    };
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .or_else(|| str_at("/metadata/namespace"))
        .unwrap_or("");
    let name = match (str_at("/metadata/name"), str_at("/metadata/generateName")) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Some(g)) => format!("{g}*"),
        _ => "?".to_string(),
    };
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn every_outcome_label_is_exported_at_zero() {
        // Adding a variant breaks this match, which sends the author to OUTCOME_LABELS.
        let all = [
            Outcome::Injected,
            Outcome::Skipped(SkipReason::OptedOut),
            Outcome::Skipped(SkipReason::AlreadyInjected),
            Outcome::Skipped(SkipReason::Conflict(String::new())),
            Outcome::NotApplicable,
            Outcome::Invalid(String::new()),
        ];
        for o in &all {
            match o {
                Outcome::Injected
                | Outcome::Skipped(SkipReason::OptedOut)
                | Outcome::Skipped(SkipReason::AlreadyInjected)
                | Outcome::Skipped(SkipReason::Conflict(_))
                | Outcome::NotApplicable
                | Outcome::Invalid(_) => {}
            }
            assert!(OUTCOME_LABELS.contains(&o.label()), "{}", o.label());
        }
        assert_eq!(OUTCOME_LABELS.len(), all.len());
    }
}
