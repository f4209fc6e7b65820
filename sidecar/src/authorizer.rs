//! One Check, from request to answer: input document, evaluation on the policy in force, decision
//! mapping, dry-run, fail mode, metrics and the decision log. Shared by the gRPC service and Envoy's
//! HTTP-service mode, so both give the same answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use regorus::Value;

use crate::config::{FailMode, FailModeConfig};
use crate::decision_log::{DecisionEvent, DecisionLogger};
use crate::metrics::Metrics;
use crate::policy::{ActivePolicy, EvaluatorKind, PolicyStore};
use regent_policy::decision::{dry_run_allow, parse_error_response, to_check_response};
use regent_policy::grpc_decode::{DecodePlan, DECODE_EVERYTHING};
use regent_policy::input::{build_input_for, InputNeeds, InputOptions};

/// The whole input document, for Checks whose input is not pruned.
static WHOLE_INPUT: InputNeeds = InputNeeds::All;

/// gRPC status code OK.
const GRPC_OK: i32 = 0;

/// A Check that has no answer: Envoy applies its `failure_mode_allow` / `status_on_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    /// Metric label (`undefined_decision`, `eval_error`, `illegal_result`, ...).
    pub reason: &'static str,
    /// Explanation returned in the gRPC status message.
    pub message: String,
}

/// Answers Checks.
pub struct Authorizer {
    store: Arc<PolicyStore>,
    metrics: Metrics,
    logger: DecisionLogger,
    input: InputOptions,
    dry_run: bool,
    fail: FailModeConfig,
    last_fail_open_warning: AtomicU64,
}

impl Authorizer {
    /// Builds an authorizer over a policy store.
    pub fn new(
        store: Arc<PolicyStore>,
        metrics: Metrics,
        logger: DecisionLogger,
        input: InputOptions,
        dry_run: bool,
        fail: FailModeConfig,
    ) -> Self {
        Authorizer {
            store,
            metrics,
            logger,
            input,
            dry_run,
            fail,
            last_fail_open_warning: AtomicU64::new(0),
        }
    }

    /// The policy store.
    pub fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    /// The policy in force now. A Check decoded for a policy (see [`Authorizer::decode_plan`]) must
    /// be answered on that same policy with [`Authorizer::check_on`].
    pub fn policy(&self) -> Option<Arc<ActivePolicy>> {
        self.store.current()
    }

    /// Whether a Check builds (and decodes) only what the policy can read: not when pruning is off,
    /// nor when the decision log records the whole input.
    fn prunes(&self) -> bool {
        self.input.prune && !self.logger.enabled()
    }

    /// What of the input document a Check on `policy` builds: what the policy can read, or all of
    /// it (see [`Authorizer::prunes`]).
    pub fn input_needs<'p>(&self, policy: &'p ActivePolicy) -> &'p InputNeeds {
        if self.prunes() {
            policy.input_needs()
        } else {
            &WHOLE_INPUT
        }
    }

    /// What of a request to decode for a Check on `policy` (everything without a policy), in step
    /// with [`Authorizer::input_needs`].
    pub fn decode_plan<'p>(&self, policy: Option<&'p ActivePolicy>) -> &'p DecodePlan {
        match policy {
            Some(p) if self.prunes() => p.decode_plan(),
            _ => &DECODE_EVERYTHING,
        }
    }

    /// Answers one Check on the policy in force.
    pub fn check(&self, req: &CheckRequest) -> Result<CheckResponse, CheckFailure> {
        self.check_on(req, self.store.current())
    }

    /// Answers one Check on `policy`, the policy that was in force when the request was decoded.
    pub fn check_on(
        &self,
        req: &CheckRequest,
        policy: Option<Arc<ActivePolicy>>,
    ) -> Result<CheckResponse, CheckFailure> {
        let started = Instant::now();
        let timestamp = SystemTime::now();
        // A uuid4 from the thread-local userspace generator: no getrandom syscall per Check.
        let decision_id = uuid::Builder::from_random_bytes(rand::random())
            .into_uuid()
            .to_string();
        let mut eval_ns = 0u64;
        let mut logged_input = None;
        let mut logged_result = None;

        let outcome: Result<CheckResponse, CheckFailure> = match &policy {
            None => self.no_decision(&decision_id, "no_policy", "no policy is active"),
            Some(policy) if policy.missing_decision().is_some() => self.no_decision(
                &decision_id,
                "missing_decision",
                &format!(
                    "no active bundle defines the decision rule {}",
                    policy.missing_decision().unwrap_or_default()
                ),
            ),
            Some(policy) => match build_input_for(req, &self.input, self.input_needs(policy)) {
                Err(e) => {
                    self.metrics
                        .errors
                        .with_label_values(&["request_parse_error"])
                        .inc();
                    Ok(parse_error_response(&e, &decision_id))
                }
                Ok(input) => {
                    if self.logger.enabled() {
                        logged_input = Some(input.clone());
                    }
                    let t = Instant::now();
                    let result = policy.evaluate(input);
                    let elapsed = t.elapsed();
                    eval_ns = elapsed.as_nanos() as u64;
                    match policy.kind() {
                        EvaluatorKind::Vm => &self.metrics.eval_vm,
                        EvaluatorKind::Interpreter => &self.metrics.eval_interpreter,
                    }
                    .observe(elapsed.as_secs_f64());
                    match result {
                        Err(e) => Err(CheckFailure {
                            reason: "eval_error",
                            message: format!("policy evaluation failed: {}", e.message),
                        }),
                        Ok(value) => {
                            let mapped =
                                to_check_response(&value, &decision_id).map_err(|e| CheckFailure {
                                    reason: e.reason(),
                                    message: e.to_string(),
                                });
                            // OPA leaves `result` out of the event when the decision is undefined.
                            if self.logger.enabled() && value != Value::Undefined {
                                logged_result = Some(value);
                            }
                            mapped
                        }
                    }
                }
            },
        };

        let allowed =
            matches!(&outcome, Ok(r) if r.status.as_ref().map_or(GRPC_OK, |s| s.code) == GRPC_OK);
        match &outcome {
            Ok(_) if allowed => self.metrics.allow.inc(),
            Ok(_) => self.metrics.deny.inc(),
            Err(f) => {
                self.metrics.error.inc();
                self.metrics.errors.with_label_values(&[f.reason]).inc();
            }
        }
        let replaced = self.dry_run && !allowed;
        if self.logger.enabled() {
            self.logger.log(DecisionEvent {
                decision_id: decision_id.clone(),
                timestamp,
                input: logged_input,
                result: logged_result,
                error: match &outcome {
                    Err(f) => Some(f.message.clone()),
                    Ok(r) if !allowed => r
                        .status
                        .as_ref()
                        .map(|s| s.message.clone())
                        .filter(|m| !m.is_empty()),
                    Ok(_) => None,
                },
                revisions: policy.as_ref().map(|p| p.revisions.clone()),
                eval_ns,
                handler_ns: started.elapsed().as_nanos() as u64,
                dry_run: replaced,
            });
        }
        self.metrics
            .check_duration
            .observe(started.elapsed().as_secs_f64());
        if replaced {
            // Dry-run allows everything, errors included; the real decision went to the log above.
            return Ok(match outcome {
                Ok(denied) => dry_run_allow(denied),
                Err(_) => self.allow_response(&decision_id),
            });
        }
        outcome
    }

    fn allow_response(&self, decision_id: &str) -> CheckResponse {
        to_check_response(&Value::from(true), decision_id).unwrap_or_default()
    }

    /// The answer while no decision can be made (`why`): per `fail_mode`, counted under `reason`.
    fn no_decision(
        &self,
        decision_id: &str,
        reason: &'static str,
        why: &str,
    ) -> Result<CheckResponse, CheckFailure> {
        self.metrics.errors.with_label_values(&[reason]).inc();
        match self.fail.mode {
            FailMode::Open => {
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                // One warning every 10 s is enough to be seen without flooding the log.
                let last = self.last_fail_open_warning.load(Ordering::Relaxed);
                if now >= last + 10
                    && self
                        .last_fail_open_warning
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!("{why}: allowing requests (fail_mode.mode = open)");
                }
                Ok(self.allow_response(decision_id))
            }
            FailMode::Closed => {
                let decision = serde_json::json!({
                    "allowed": false,
                    "http_status": self.fail.status,
                    "body": format!("regent: {why}"),
                });
                let value: Value = serde_json::from_value(decision).unwrap_or(Value::Undefined);
                to_check_response(&value, decision_id).map_err(|e| CheckFailure {
                    reason,
                    message: format!("{why} ({e})"),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use prost::Message;
    use regent_bundle::Bundle;

    use super::*;
    use crate::config::{DecisionLogConfig, EngineChoice};
    use crate::policy::PolicySettings;
    use regent_policy::grpc_decode::decode_check_request;

    fn bundle(header: &str) -> Vec<(String, Arc<Bundle>)> {
        let rego = format!(
            "package envoy.authz\n\ndefault allow := false\n\nallow if input.attributes.request.http.headers[\"{header}\"] == \"1\"\n"
        );
        let files = BTreeMap::from([("authz.rego".to_string(), rego.into_bytes())]);
        let bundle = Bundle::from_files(files).expect("bundle");
        vec![("local".to_string(), Arc::new(bundle))]
    }

    fn request_bytes() -> Vec<u8> {
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: "/".into(),
                        headers: [("x-a", "1"), ("x-b", "1")]
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
        .encode_to_vec()
    }

    /// A request decoded for one policy (only the headers it names) is answered on that policy even
    /// when another, which names other headers, is activated in between.
    #[test]
    fn a_request_is_answered_on_the_policy_it_was_decoded_for() {
        let metrics = Metrics::new().expect("metrics");
        let settings = PolicySettings {
            rule: "data.envoy.authz.allow".into(),
            engine: EngineChoice::Auto,
            eval_timeout: Duration::from_secs(1),
            ..PolicySettings::default()
        };
        let store = Arc::new(PolicyStore::new(settings, metrics.activations.clone()));
        let logger = DecisionLogger::start(
            &DecisionLogConfig::default(),
            "envoy/authz/allow",
            metrics.logs_dropped.clone(),
        )
        .expect("logger");
        let input = InputOptions {
            prune: true,
            ..Default::default()
        };
        let authorizer = Authorizer::new(
            store.clone(),
            metrics,
            logger,
            input,
            false,
            FailModeConfig::default(),
        );
        store.activate(&bundle("x-a")).expect("activates");

        let policy = authorizer.policy();
        let plan = authorizer.decode_plan(policy.as_deref());
        assert!(plan.headers().keeps("x-a") && !plan.headers().keeps("x-b"));
        let request = decode_check_request(&request_bytes(), plan).expect("decodes");

        store.activate(&bundle("x-b")).expect("activates");
        let allowed = |r: &CheckResponse| r.status.as_ref().map_or(GRPC_OK, |s| s.code) == GRPC_OK;
        let on_its_policy = authorizer.check_on(&request, policy).expect("answers");
        assert!(allowed(&on_its_policy), "{on_its_policy:?}");
        // On the new policy this request lacks the header that policy reads: why it must not be.
        let on_the_new_one = authorizer.check(&request).expect("answers");
        assert!(!allowed(&on_the_new_one), "{on_the_new_one:?}");
    }

    /// Dry-run lets a denied request through with what the policy asked for besides the verdict:
    /// its headers and dynamic metadata, as OPA-Envoy's dry-run does.
    #[test]
    fn dry_run_keeps_the_policys_headers_and_metadata_on_a_deny() {
        let rego = "package envoy.authz\n\ndefault allow := {\"allowed\": false, \"http_status\": 403, \"headers\": {\"x-why\": \"no-role\"}, \"dynamic_metadata\": {\"rule\": \"r7\"}}\n";
        let files = BTreeMap::from([("authz.rego".to_string(), rego.as_bytes().to_vec())]);
        let bundle = Arc::new(Bundle::from_files(files).expect("bundle"));
        let metrics = Metrics::new().expect("metrics");
        let store = Arc::new(PolicyStore::new(
            PolicySettings::default(),
            metrics.activations.clone(),
        ));
        store
            .activate(&[("local".to_string(), bundle)])
            .expect("activates");
        let logger = DecisionLogger::start(
            &DecisionLogConfig::default(),
            "envoy/authz/allow",
            metrics.logs_dropped.clone(),
        )
        .expect("logger");
        let dry = Authorizer::new(
            store,
            metrics,
            logger,
            InputOptions::default(),
            true,
            FailModeConfig::default(),
        );
        let request = CheckRequest::decode(request_bytes().as_slice()).expect("decodes");
        let r = dry.check(&request).expect("answers");
        assert_eq!(r.status.as_ref().map(|s| s.code), Some(GRPC_OK));
        let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
            panic!("an OK response: {r:?}");
        };
        let header = ok.headers[0].header.as_ref().expect("header");
        assert_eq!(
            (header.key.as_str(), header.value.as_str()),
            ("x-why", "no-role")
        );
        let metadata = r.dynamic_metadata.as_ref().expect("metadata");
        assert!(metadata.fields.contains_key("decision_id"));
        assert_eq!(
            metadata.fields["rule"].kind,
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                "r7".into()
            ))
        );
    }
}
