//! One Check, from request to answer: input document, evaluation on the policy in force, decision
//! mapping, dry-run, fail mode, metrics and the decision log. Shared by the gRPC service and Envoy's
//! HTTP-service mode, so both give the same answers.
//!
//! A Check reads top-down as [`Authorizer::begin`]: prepare the input, evaluate one round, record
//! the outcome. A policy whose remote calls (`http.send`, `regent.introspect`) are not all cached
//! leaves the first round [`Checked::Waiting`]; [`Authorizer::resume`] performs the calls without
//! blocking a runtime thread and evaluates again (see `regent_policy::builtins::remote`). Every
//! other Check is answered on its own thread, without a future or an allocation for waiting.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use regent_policy::builtins::remote::{Answer, Calls, Resolver};
use regent_policy::builtins::scope;
use regorus::Value;

use crate::config::{FailMode, FailModeConfig};
use crate::decision_log::{DecisionEvent, DecisionLogger};
use crate::metrics::Metrics;
use crate::policy::{ActivePolicy, EvaluatorKind, PolicyStore};
use crate::remote::RemoteCalls;
use crate::telemetry::{CheckSpan, CheckSummary, Tracing};
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

/// What a Check comes to.
pub type Outcome = Result<CheckResponse, CheckFailure>;

/// The first round of a Check: answered, or waiting for remote calls.
// The answer is moved once per Check; boxing it would allocate on every Check to save a copy.
#[allow(clippy::large_enum_variant)]
pub enum Checked {
    /// The answer.
    Done(Outcome),
    /// The policy made remote calls that are not cached: [`Authorizer::resume`] finishes it.
    Waiting(Box<Waiting>),
}

/// A Check between evaluation rounds.
pub struct Waiting {
    record: Record,
    eval: Evaluation,
}

/// What the decision log and the metrics need of a Check, gathered as it goes.
struct Record {
    started: Instant,
    timestamp: SystemTime,
    decision_id: String,
    policy: Option<Arc<ActivePolicy>>,
    /// Why the Check has no decision from the policy, when it answers without one.
    reason: Option<&'static str>,
    input_ns: u64,
    eval_ns: u64,
    /// The Check's span, when Checks are traced.
    span: Option<CheckSpan>,
    input: Option<Value>,
    result: Option<Value>,
    nd_builtin_cache: BTreeMap<&'static str, BTreeMap<String, Value>>,
}

/// The evaluation of one Check, across its rounds.
struct Evaluation {
    policy: Arc<ActivePolicy>,
    input: Value,
    calls: Calls,
    check_id: u64,
    rounds: u32,
    /// Remote calls performed so far.
    performed: u32,
}

/// How a round ended.
#[allow(clippy::large_enum_variant)] // as for `Checked`
enum Round {
    Decided(Outcome),
    Waiting,
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
    remote: Option<Arc<RemoteCalls>>,
    tracing: Option<Arc<Tracing>>,
}

impl Authorizer {
    /// Builds an authorizer over a policy store. Remote builtins are undefined until
    /// [`Authorizer::with_remote_calls`].
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
            remote: None,
            tracing: None,
        }
    }

    /// Traces every Check with `tracing` (a span each, parented on the caller's trace context).
    pub fn with_tracing(mut self, tracing: Option<Arc<Tracing>>) -> Self {
        self.tracing = tracing;
        self
    }

    /// Answers `http.send` and `regent.introspect` with `remote`.
    pub fn with_remote_calls(mut self, remote: Arc<RemoteCalls>) -> Self {
        self.remote = Some(remote);
        self
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
    /// it (see `Authorizer::prunes`).
    pub fn input_needs<'p>(&self, policy: &'p ActivePolicy) -> &'p InputNeeds {
        if self.prunes() {
            policy.input_needs()
        } else {
            &WHOLE_INPUT
        }
    }

    /// What of a request to decode for a Check on `policy` (everything without a policy), in step
    /// with [`Authorizer::input_needs`]; with tracing, the trace context headers too.
    pub fn decode_plan<'p>(&self, policy: Option<&'p ActivePolicy>) -> &'p DecodePlan {
        match policy {
            Some(p) if self.prunes() && self.tracing.is_some() => p.traced_decode_plan(),
            Some(p) if self.prunes() => p.decode_plan(),
            _ => &DECODE_EVERYTHING,
        }
    }

    /// Answers one Check on the policy in force, waiting for its remote calls.
    pub async fn check(self: &Arc<Self>, req: &CheckRequest) -> Outcome {
        self.check_on(req, self.store.current()).await
    }

    /// Answers one Check on `policy`, the policy that was in force when the request was decoded,
    /// waiting for its remote calls.
    pub async fn check_on(
        self: &Arc<Self>,
        req: &CheckRequest,
        policy: Option<Arc<ActivePolicy>>,
    ) -> Outcome {
        match self.begin(req, policy) {
            Checked::Done(outcome) => outcome,
            Checked::Waiting(w) => self.clone().resume(w).await,
        }
    }

    /// Answers one Check on the policy in force without waiting: remote calls that are not cached
    /// are undefined (benchmarks and tests of the evaluation alone).
    pub fn check_now(&self, req: &CheckRequest) -> Outcome {
        match self.begin(req, self.store.current()) {
            Checked::Done(outcome) => outcome,
            Checked::Waiting(w) => {
                let Waiting {
                    mut record,
                    mut eval,
                } = *w;
                eval.calls.set_last_round();
                match self.round(&mut record, &mut eval) {
                    Round::Decided(outcome) => self.record(record, &eval.calls, outcome),
                    Round::Waiting => self.record(record, &eval.calls, Err(stuck())),
                }
            }
        }
    }

    /// The first round of a Check on `policy`: prepare the input, evaluate, record, unless the
    /// policy waits for remote calls.
    pub fn begin(&self, req: &CheckRequest, policy: Option<Arc<ActivePolicy>>) -> Checked {
        self.begin_call(req, policy, None)
    }

    /// [`Authorizer::begin`] for a gRPC call whose metadata is `call`: with tracing, a trace
    /// context there (Envoy's ext_authz span) parents the Check's span.
    pub fn begin_call(
        &self,
        req: &CheckRequest,
        policy: Option<Arc<ActivePolicy>>,
        call: Option<&tonic::metadata::MetadataMap>,
    ) -> Checked {
        let timestamp = SystemTime::now();
        let mut record = Record {
            started: Instant::now(),
            timestamp,
            // A uuid4 from the thread-local userspace generator: no getrandom syscall per Check.
            decision_id: uuid::Builder::from_random_bytes(rand::random())
                .into_uuid()
                .to_string(),
            policy: policy.clone(),
            reason: None,
            input_ns: 0,
            eval_ns: 0,
            span: self
                .tracing
                .as_ref()
                .map(|t| t.start_check(req, call, timestamp)),
            input: None,
            result: None,
            nd_builtin_cache: BTreeMap::new(),
        };
        let no_calls = Calls::default();
        let policy = match self.ready_policy(&record.decision_id, policy) {
            Ok(p) => p,
            Err((reason, outcome)) => {
                record.reason = Some(reason);
                return Checked::Done(self.record(record, &no_calls, outcome));
            }
        };
        // Timed for the span only: no clock reads without tracing.
        let building = record.span.is_some().then(Instant::now);
        let built = build_input_for(req, &self.input, self.input_needs(&policy));
        record.input_ns = building.map_or(0, |t| t.elapsed().as_nanos() as u64);
        let input = match built {
            Ok(input) => input,
            Err(e) => {
                record.reason = Some("request_parse_error");
                self.metrics
                    .errors
                    .with_label_values(&["request_parse_error"])
                    .inc();
                let outcome = Ok(parse_error_response(&e, &record.decision_id));
                return Checked::Done(self.record(record, &no_calls, outcome));
            }
        };
        if self.logger.enabled() {
            record.input = Some(input.clone());
        }
        let mut eval = Evaluation {
            policy,
            input,
            calls: match &self.remote {
                Some(r) => Calls::new(r.clone() as Arc<dyn Resolver>),
                None => Calls::default(),
            },
            check_id: scope::new_check_id(),
            rounds: 0,
            performed: 0,
        };
        match self.round(&mut record, &mut eval) {
            Round::Decided(outcome) => Checked::Done(self.record(record, &eval.calls, outcome)),
            Round::Waiting => Checked::Waiting(Box::new(Waiting { record, eval })),
        }
    }

    /// Performs a waiting Check's remote calls and evaluates again, until it decides or
    /// `remote_calls.max_rounds` is reached (calls still unanswered then are undefined).
    pub async fn resume(self: Arc<Self>, waiting: Box<Waiting>) -> Outcome {
        let Waiting {
            mut record,
            mut eval,
        } = *waiting;
        let Some(remote) = self.remote.clone() else {
            return self.record(record, &eval.calls, Err(stuck()));
        };
        remote.metrics().waited();
        loop {
            let mut deferred = eval.calls.take_deferred();
            let budget = remote.max_calls().saturating_sub(eval.performed) as usize;
            if deferred.len() > budget {
                remote.metrics().over_budget();
                for call in deferred.split_off(budget) {
                    eval.calls.answer(call, Answer::Value(Value::Undefined));
                }
            }
            eval.performed += deferred.len() as u32;
            for (call, answer) in remote.perform(deferred).await {
                eval.calls.answer(call, answer);
            }
            if eval.rounds + 1 >= remote.max_rounds() {
                eval.calls.set_last_round();
            }
            if let Round::Decided(outcome) = self.round(&mut record, &mut eval) {
                return self.record(record, &eval.calls, outcome);
            }
        }
    }

    /// The policy to evaluate, or the answer (and its reason) while there is none that can decide.
    #[allow(clippy::result_large_err)] // as for `Checked`
    fn ready_policy(
        &self,
        decision_id: &str,
        policy: Option<Arc<ActivePolicy>>,
    ) -> Result<Arc<ActivePolicy>, (&'static str, Outcome)> {
        match policy {
            None => Err((
                "no_policy",
                self.no_decision(decision_id, "no_policy", "no policy is active"),
            )),
            Some(p) => match p.missing_decision() {
                Some(rule) => Err((
                    "missing_decision",
                    self.no_decision(
                        decision_id,
                        "missing_decision",
                        &format!("no active bundle defines the decision rule {rule}"),
                    ),
                )),
                None => Ok(p),
            },
        }
    }

    /// One evaluation of the policy, with the answers the Check's remote calls have so far.
    fn round(&self, record: &mut Record, eval: &mut Evaluation) -> Round {
        let _scope = scope::enter(eval.check_id);
        let (policy, input) = (&eval.policy, eval.input.clone());
        let t = Instant::now();
        let result = eval.calls.round(|| policy.evaluate(input));
        let elapsed = t.elapsed();
        eval.rounds += 1;
        record.eval_ns += elapsed.as_nanos() as u64;
        match policy.kind() {
            EvaluatorKind::Vm => &self.metrics.eval_vm,
            EvaluatorKind::Interpreter => &self.metrics.eval_interpreter,
        }
        .observe(elapsed.as_secs_f64());
        if let Some(raised) = eval.calls.raised() {
            return Round::Decided(Err(CheckFailure {
                reason: "eval_error",
                message: format!("policy evaluation failed: {raised}"),
            }));
        }
        if !eval.calls.deferred().is_empty() {
            return Round::Waiting;
        }
        Round::Decided(match result {
            Err(e) => Err(CheckFailure {
                reason: "eval_error",
                message: format!("policy evaluation failed: {}", e.message),
            }),
            Ok(value) => {
                let mapped =
                    to_check_response(&value, &record.decision_id).map_err(|e| CheckFailure {
                        reason: e.reason(),
                        message: e.to_string(),
                    });
                // OPA leaves `result` out of the event when the decision is undefined.
                if self.logger.enabled() && value != Value::Undefined {
                    record.result = Some(value);
                }
                mapped
            }
        })
    }

    /// Counts the outcome, logs the decision, and applies dry-run.
    fn record(&self, mut record: Record, calls: &Calls, outcome: Outcome) -> Outcome {
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
        // The real decision, also under dry-run: for the span and the decision log alike.
        let decision = match &outcome {
            Err(_) => "error",
            Ok(_) if allowed => "allow",
            Ok(_) => "deny",
        };
        let span = record.span.take();
        if self.logger.enabled() {
            let trace_ids = span.as_ref().map(CheckSpan::ids);
            if !calls.is_empty() && self.logger.records_nd_builtin_cache() {
                record.nd_builtin_cache = calls.nd_builtin_cache();
            }
            self.logger.log(DecisionEvent {
                decision_id: record.decision_id.clone(),
                timestamp: record.timestamp,
                input: record.input,
                result: record.result,
                error: match &outcome {
                    Err(f) => Some(f.message.clone()),
                    Ok(r) if !allowed => r
                        .status
                        .as_ref()
                        .map(|s| s.message.clone())
                        .filter(|m| !m.is_empty()),
                    Ok(_) => None,
                },
                revisions: record.policy.as_ref().map(|p| p.revisions.clone()),
                policy: record.policy.clone(),
                eval_ns: record.eval_ns,
                handler_ns: record.started.elapsed().as_nanos() as u64,
                dry_run: replaced,
                decision,
                nd_builtin_cache: record.nd_builtin_cache,
                trace_id: trace_ids.as_ref().map(|(t, _)| t.clone()),
                span_id: trace_ids.map(|(_, s)| s),
            });
        }
        if let Some(span) = span {
            span.finish(CheckSummary {
                decision,
                reason: match &outcome {
                    Err(f) => Some(f.reason),
                    Ok(_) => record.reason,
                },
                error: outcome.as_ref().err().map(|f| f.message.as_str()),
                policy: record.policy.as_deref(),
                decision_id: &record.decision_id,
                input_ns: record.input_ns,
                eval_ns: record.eval_ns,
                dry_run: replaced,
            });
        }
        self.metrics
            .check_duration
            .observe(record.started.elapsed().as_secs_f64());
        if replaced {
            // Dry-run allows everything, errors included; the real decision went to the log above.
            return Ok(match outcome {
                Ok(denied) => dry_run_allow(denied),
                Err(_) => self.allow_response(&record.decision_id),
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

/// The failure of a Check whose remote calls cannot be performed (no remote call machinery).
fn stuck() -> CheckFailure {
    CheckFailure {
        reason: "eval_error",
        message: "the policy's remote calls cannot be performed here".into(),
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
            metrics.decision_logs.clone(),
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
        let on_its_policy = match authorizer.begin(&request, policy) {
            Checked::Done(outcome) => outcome.expect("answers"),
            Checked::Waiting(_) => panic!("the policy makes no remote calls"),
        };
        assert!(allowed(&on_its_policy), "{on_its_policy:?}");
        // On the new policy this request lacks the header that policy reads: why it must not be.
        let on_the_new_one = authorizer.check_now(&request).expect("answers");
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
            metrics.decision_logs.clone(),
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
        let r = dry.check_now(&request).expect("answers");
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
