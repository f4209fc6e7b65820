//! A compiled policy: loaded once per activation, immutable, evaluated without locks.
//!
//! Each activation produces an immutable [`ActivePolicy`] with a new generation number. A Check loads
//! the current `Arc<ActivePolicy>` once and finishes on it even if a swap happens meanwhile. Evaluation
//! state (a regorus VM, or an interpreter engine clone) is kept per thread and per generation, so the hot
//! path takes no lock and shares no mutable state.
//!
//! Regent's builtins (`io.jwt.*`, `crypto.*`...) run on the VM too: the VM compiler turns each call
//! into a host-await instruction, the VM suspends there, [`crate::builtins::call`] computes the
//! value on the same thread and the VM resumes. A policy that calls none of them runs straight
//! through, without the suspendable mode's bookkeeping.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use regent_bundle::Bundle;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::{ExecutionMode, ExecutionState, SuspendReason};
use regorus::rvm::{Program, RegoVM};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::Value;

use crate::grpc_decode::DecodePlan;
use crate::input::InputNeeds;
use crate::settings::{EngineChoice, PolicySettings, VmRecheck};

/// Which evaluator a policy runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvaluatorKind {
    /// regorus's bytecode VM.
    Vm,
    /// regorus's tree-walking interpreter.
    Interpreter,
}

impl EvaluatorKind {
    /// Lowercase name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EvaluatorKind::Vm => "vm",
            EvaluatorKind::Interpreter => "interpreter",
        }
    }
}

/// A compiled, immutable policy.
pub struct ActivePolicy {
    generation: u64,
    rule: String,
    /// The rule evaluated for `rule`: itself, or the rule Regent added to read a set of rules.
    entry: String,
    kind: EvaluatorKind,
    engine: regorus::Engine,
    program: Option<Arc<Program>>,
    /// The program calls Regent's builtins, so the VM must run in suspendable mode.
    suspendable: bool,
    /// No loaded module defines the decision rule (see [`ActivePolicy::missing_decision`]).
    missing_decision: bool,
    max_instructions: usize,
    vm_recheck: VmRecheck,
    data: Value,
    timer: ExecutionTimerConfig,
    input_needs: InputNeeds,
    decode_plan: DecodePlan,
    /// [`ActivePolicy::decode_plan`] plus the trace context headers, made on first use.
    traced_decode_plan: std::sync::OnceLock<DecodePlan>,
    /// Bundle name → revision.
    pub revisions: Arc<BTreeMap<String, String>>,
    /// When it was activated.
    pub activated_at: std::time::SystemTime,
}

impl std::fmt::Debug for ActivePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivePolicy")
            .field("generation", &self.generation)
            .field("rule", &self.rule)
            .field("entry", &self.entry)
            .field("kind", &self.kind)
            .field("revisions", &self.revisions)
            .finish()
    }
}

/// Why a policy cannot be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// Loading the bundles failed (roots, modules, data, conflicts).
    #[error(transparent)]
    Load(#[from] crate::load::LoadError),
    /// The decision rule does not exist or does not compile.
    #[error("decision rule {rule}: {message}")]
    Entrypoint {
        /// The rule.
        rule: String,
        /// regorus message.
        message: String,
    },
    /// `engine: vm` was required but the policy does not compile to the VM.
    #[error("policy does not compile to the bytecode VM (policy.engine is `vm`): {0}")]
    VmRequired(String),
    /// The policy calls a function that does not exist.
    #[error("decision rule {rule}: {message}")]
    UnknownFunction {
        /// The rule.
        rule: String,
        /// regorus message.
        message: String,
    },
    /// The decision rule cannot be evaluated: the trial evaluation on a minimal OPA-Envoy input
    /// failed (an unsafe variable, a conflict...), so every Check would fail the same way.
    #[error("decision rule {rule}: evaluation on a minimal request failed: {message}")]
    Trial {
        /// The rule.
        rule: String,
        /// regorus message.
        message: String,
    },
}

/// Why one evaluation failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    /// regorus message.
    pub message: String,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The package of the rule Regent adds when the decision path names a set of rules (see
/// [`decision_entry`]): a name no OPA policy uses, since Rego has no way to import it by accident.
const WRAPPER_PACKAGE: &str = "__regent_decision__";

thread_local! {
    // One evaluator per thread, rebuilt when the thread first meets a new generation.
    static LOCAL: RefCell<Option<(u64, LocalEval)>> = const { RefCell::new(None) };
}

/// How a compiled policy is evaluated: what [`ActivePolicy::assemble`] needs besides the engine.
struct Evaluation {
    /// The rule evaluated (the decision rule, or the rule Regent adds for a set of rules).
    entry: String,
    /// The VM program, when the policy runs on the VM.
    program: Option<Arc<Program>>,
    /// No loaded module defines the decision rule.
    missing_decision: bool,
    /// What of the input the modules can read.
    input_needs: InputNeeds,
}

enum LocalEval {
    Vm {
        vm: Box<RegoVM>,
        /// For re-checks (see [`VmRecheck`]); made on first use.
        interpreter: Option<Box<regorus::Engine>>,
    },
    Interpreter(Box<regorus::Engine>),
}

/// The rule to evaluate for decision rule `rule`. OPA evaluates any path under `data`: a rule, or
/// a set of rules (`result.allowed := ...`, `result["headers"] := ...`, a whole package) whose
/// values make one object. regorus evaluates rules only, so for a set of rules Regent adds one
/// partial-object rule with a definition per member (`package __regent_decision__`,
/// `decision[key] := value if { key := "allowed"; value := data.envoy.authz.result.allowed }`, ...),
/// and evaluates that. Each member is its own definition, so an undefined member is left out, as
/// OPA leaves it out. `None`: the path names neither a rule nor rules below it.
fn decision_entry(
    engine: &mut regorus::Engine,
    rule: &str,
) -> Result<Option<String>, ActivationError> {
    let entry_error = |message: String| ActivationError::Entrypoint {
        rule: rule.to_string(),
        message,
    };
    let direct = match engine.compile_with_entrypoint(&rule.into()) {
        Ok(_) => return Ok(Some(rule.to_string())),
        Err(e) => format!("{e:#}"),
    };
    if !direct.contains("not a valid rule path") {
        return Err(entry_error(direct));
    }
    // Any rule compiles the whole policy, which lists every rule path.
    let probe = format!("data.{WRAPPER_PACKAGE}.probe");
    let mut probe_engine = engine.clone();
    probe_engine
        .add_policy(
            format!("{WRAPPER_PACKAGE}.rego"),
            format!("package {WRAPPER_PACKAGE}\n\nprobe := true\n"),
        )
        .map_err(|e| entry_error(format!("{e:#}")))?;
    let compiled = probe_engine
        .compile_with_entrypoint(&probe.as_str().into())
        .map_err(|e| entry_error(format!("{e:#}")))?;
    let members: std::collections::BTreeSet<String> = compiled
        .get_rules()
        .keys()
        .filter_map(|path| first_member(path.strip_prefix(rule)?))
        .collect();
    if members.is_empty() {
        return Ok(None);
    }
    let mut wrapper = format!("package {WRAPPER_PACKAGE}\n\n");
    for m in &members {
        let key = serde_json::Value::from(m.as_str()).to_string();
        let member = crate::path::rule_ref(&[m.as_str()]);
        let member = member.strip_prefix("data").unwrap_or(&member);
        // A variable key keeps `decision` one partial-object rule (a constant key would make it
        // a set of rules again).
        wrapper.push_str(&format!(
            "decision[key] := value if {{\n\tkey := {key}\n\tvalue := {rule}{member}\n}}\n\n"
        ));
    }
    engine
        .add_policy(format!("{WRAPPER_PACKAGE}.rego"), wrapper)
        .map_err(|e| entry_error(format!("{e:#}")))?;
    Ok(Some(format!("data.{WRAPPER_PACKAGE}.decision")))
}

/// The first component of a rule path's remainder below the decision path (`.allowed.x` →
/// `allowed`, `["x-y"]` → `x-y`); `None` when the path is not below it.
fn first_member(rest: &str) -> Option<String> {
    if let Some(ident) = rest.strip_prefix('.') {
        let end = ident.find(['.', '[']).unwrap_or(ident.len());
        return (end > 0).then(|| ident[..end].to_string());
    }
    let quoted = rest.strip_prefix('[')?;
    let mut de = serde_json::Deserializer::from_str(quoted).into_iter::<String>();
    match de.next() {
        Some(Ok(key)) if quoted[de.byte_offset()..].starts_with(']') => Some(key),
        _ => None,
    }
}

impl ActivePolicy {
    /// Compiles bundles into a policy: load (with OPA's checks), register builtins, check the decision
    /// rule, choose the evaluator, and run one trial evaluation to catch unknown functions now rather
    /// than on the first request.
    pub fn compile(
        bundles: &[(String, Arc<Bundle>)],
        settings: &PolicySettings,
    ) -> Result<ActivePolicy, ActivationError> {
        let refs: Vec<(&str, &Bundle)> = bundles
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_ref()))
            .collect();
        let mut engine = crate::load::prepared_engine(&refs, settings.eval_timeout)?;
        let Some(entry) = decision_entry(&mut engine, &settings.rule)? else {
            if !settings.allow_missing_decision {
                return Err(ActivationError::Entrypoint {
                    rule: settings.rule.clone(),
                    message: "not a valid rule path (no rule is defined at or below it)".into(),
                });
            }
            return Ok(Self::without_decision(bundles, settings, engine));
        };
        let compiled = engine
            .compile_with_entrypoint(&entry.as_str().into())
            .map_err(|e| ActivationError::Entrypoint {
                rule: settings.rule.clone(),
                message: format!("{e:#}"),
            })?;
        let to_vm = || {
            Compiler::compile_from_policy_with_host_await(
                &compiled,
                &[entry.as_str()],
                &crate::builtins::host_await_table(),
            )
        };
        let program = match settings.engine {
            EngineChoice::Interpreter => None,
            EngineChoice::Auto => match to_vm() {
                Ok(p) if p.has_host_await() && has_virtual_lookup(&p) => {
                    tracing::info!(
                        reason =
                            "the policy reads a whole document of rules (e.g. `data.pkg` as a \
                                  value) that may call Regent's builtins, which regorus's VM \
                                  evaluates without them",
                        "policy runs on the interpreter; `policy.engine: vm` forces the VM"
                    );
                    None
                }
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::info!(
                        reason = %format!("{e:#}"),
                        "policy does not compile to the bytecode VM; using the interpreter"
                    );
                    None
                }
            },
            EngineChoice::Vm => {
                Some(to_vm().map_err(|e| ActivationError::VmRequired(format!("{e:#}")))?)
            }
        };
        let program = program.map(|mut p| {
            crate::vm_program::trim_for_execution(&mut p);
            p
        });
        let input_needs = InputNeeds::of_modules(bundles.iter().flat_map(|(_, b)| b.modules()));
        let policy = Self::assemble(
            bundles,
            settings,
            engine,
            Evaluation {
                entry,
                program,
                missing_decision: false,
                input_needs,
            },
        );
        policy.trial(&settings.rule)?;
        Ok(policy)
    }

    /// The bundles loaded, and no module defines the decision rule (yet): OPA activates bundles
    /// independently, so a bundle of data or helper rules that arrives before the one holding the
    /// decision rule is not refused. Every evaluation is an error naming the missing rule.
    fn without_decision(
        bundles: &[(String, Arc<Bundle>)],
        settings: &PolicySettings,
        engine: regorus::Engine,
    ) -> ActivePolicy {
        Self::assemble(
            bundles,
            settings,
            engine,
            Evaluation {
                entry: settings.rule.clone(),
                program: None,
                missing_decision: true,
                input_needs: InputNeeds::nothing(),
            },
        )
    }

    fn assemble(
        bundles: &[(String, Arc<Bundle>)],
        settings: &PolicySettings,
        engine: regorus::Engine,
        how: Evaluation,
    ) -> ActivePolicy {
        let kind = if how.program.is_some() {
            EvaluatorKind::Vm
        } else {
            EvaluatorKind::Interpreter
        };
        let suspendable = how.program.as_ref().is_some_and(|p| p.has_host_await());
        let data = engine.get_data();
        // Whoever drops this document last frees it, which takes long for large data: keep it
        // away from request threads (see retire).
        crate::retire::hold_until_unused(data.clone());
        ActivePolicy {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            rule: settings.rule.clone(),
            entry: how.entry,
            kind,
            engine,
            program: how.program,
            suspendable,
            missing_decision: how.missing_decision,
            max_instructions: settings.max_instructions,
            vm_recheck: settings.vm_recheck,
            data,
            timer: crate::load::timer(settings.eval_timeout),
            decode_plan: DecodePlan::for_needs(&how.input_needs),
            traced_decode_plan: std::sync::OnceLock::new(),
            input_needs: how.input_needs,
            revisions: Arc::new(
                bundles
                    .iter()
                    .map(|(n, b)| (n.clone(), b.revision().to_string()))
                    .collect(),
            ),
            activated_at: std::time::SystemTime::now(),
        }
    }

    /// One evaluation on a minimal OPA-Envoy request (`GET /`, no headers): regorus reports a call
    /// to an unknown function, and some errors its compiler lets through (an unsafe variable in a
    /// rule head), only when the rule runs, and a policy that fails here fails on every Check.
    /// A timeout is not held against the policy: on a loaded host it says nothing about the rule.
    fn trial(&self, rule: &str) -> Result<(), ActivationError> {
        let Err(e) = self.fresh_eval(trial_input()) else {
            return Ok(());
        };
        if e.message.contains("could not find function") || e.message.contains("Unknown function") {
            return Err(ActivationError::UnknownFunction {
                rule: rule.to_string(),
                message: e.message,
            });
        }
        if e.message.contains("exceeded time limit") {
            tracing::warn!(decision_rule = rule, error = %e, "trial evaluation timed out");
            return Ok(());
        }
        Err(ActivationError::Trial {
            rule: rule.to_string(),
            message: e.message,
        })
    }

    /// The decision rule, when no active bundle defines it (the policy then answers nothing).
    pub fn missing_decision(&self) -> Option<&str> {
        self.missing_decision.then_some(self.rule.as_str())
    }

    /// Which evaluator runs this policy.
    pub fn kind(&self) -> EvaluatorKind {
        self.kind
    }

    /// The parts of the input document this policy's modules can read.
    pub fn input_needs(&self) -> &InputNeeds {
        &self.input_needs
    }

    /// What of a request to decode for an input built for [`ActivePolicy::input_needs`].
    pub fn decode_plan(&self) -> &DecodePlan {
        &self.decode_plan
    }

    /// [`ActivePolicy::decode_plan`], also keeping the headers of a caller's trace context
    /// ([`crate::grpc_decode::TRACE_HEADERS`]), for a sidecar that traces Checks.
    pub fn traced_decode_plan(&self) -> &DecodePlan {
        self.traced_decode_plan.get_or_init(|| {
            self.decode_plan
                .with_headers(crate::grpc_decode::TRACE_HEADERS)
        })
    }

    /// Generation number (increases with every activation).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A copy of the policy's interpreter (modules, data and builtins), for rules other than
    /// the decision (see [`crate::log_rules`]).
    pub(crate) fn interpreter(&self) -> regorus::Engine {
        self.engine.clone()
    }

    /// Whether the VM calls Regent's builtins through host-await (suspendable execution).
    pub fn calls_host_builtins(&self) -> bool {
        self.suspendable
    }

    fn new_local(&self) -> Result<LocalEval, EvalError> {
        match &self.program {
            Some(program) => {
                let mut vm = RegoVM::new();
                vm.load_program(program.clone());
                vm.set_data(self.data.clone()).map_err(|e| EvalError {
                    message: format!("{e:#}"),
                })?;
                vm.set_execution_timer_config(Some(self.timer));
                vm.set_max_instructions(self.max_instructions);
                if self.suspendable {
                    vm.set_execution_mode(ExecutionMode::Suspendable);
                }
                Ok(LocalEval::Vm {
                    vm: Box::new(vm),
                    interpreter: None,
                })
            }
            None => Ok(LocalEval::Interpreter(Box::new(self.engine.clone()))),
        }
    }

    fn run(&self, local: &mut LocalEval, input: Value) -> Result<Value, EvalError> {
        match local {
            LocalEval::Vm { vm, interpreter } => {
                let recheck_input = (self.vm_recheck != VmRecheck::Off).then(|| input.clone());
                vm.set_input(input);
                let value = run_vm(vm)?;
                match recheck_input {
                    Some(input) if self.wants_recheck(&value) => {
                        let engine =
                            interpreter.get_or_insert_with(|| Box::new(self.engine.clone()));
                        self.recheck(engine, input, value)
                    }
                    _ => Ok(value),
                }
            }
            LocalEval::Interpreter(engine) => self.interpret(engine, input),
        }
    }

    fn interpret(&self, engine: &mut regorus::Engine, input: Value) -> Result<Value, EvalError> {
        engine.set_input(input);
        engine.eval_rule(self.entry.clone()).map_err(|e| EvalError {
            message: format!("{e:#}"),
        })
    }

    fn wants_recheck(&self, value: &Value) -> bool {
        match self.vm_recheck {
            VmRecheck::Off => false,
            VmRecheck::Undefined => *value == Value::Undefined,
            VmRecheck::Denials => !is_allow(value),
        }
    }

    /// The interpreter's verdict on an input the VM answered with `vm_value`: its conflict error
    /// if it reports one, else the VM's answer (see [`VmRecheck`]).
    fn recheck(
        &self,
        engine: &mut regorus::Engine,
        input: Value,
        vm_value: Value,
    ) -> Result<Value, EvalError> {
        match self.interpret(engine, input) {
            Err(e) if is_conflict(&e.message) => Err(e),
            _ => Ok(vm_value),
        }
    }

    fn missing_decision_error(&self) -> EvalError {
        EvalError {
            message: format!(
                "decision rule {} is not defined by the active bundles ({})",
                self.rule,
                self.revisions
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Evaluates with a fresh evaluator (no thread-local reuse); used for trial runs and tests.
    pub fn fresh_eval(&self, input: Value) -> Result<Value, EvalError> {
        if self.missing_decision {
            return Err(self.missing_decision_error());
        }
        let mut local = self.new_local()?;
        self.run(&mut local, input)
    }

    /// Evaluates the decision rule for `input` on this thread's evaluator. `Undefined` means no decision.
    pub fn evaluate(&self, input: Value) -> Result<Value, EvalError> {
        if self.missing_decision {
            return Err(self.missing_decision_error());
        }
        LOCAL.with(|cell| {
            let mut slot = cell.borrow_mut();
            let reuse = matches!(&*slot, Some((g, _)) if *g == self.generation);
            if !reuse {
                *slot = Some((self.generation, self.new_local()?));
            }
            match slot.as_mut() {
                Some((_, local)) => self.run(local, input),
                None => Err(EvalError {
                    message: "evaluator missing".into(),
                }),
            }
        })
    }
}

/// The input document of `GET /` with no headers, as the sidecar builds it.
fn trial_input() -> Value {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
    use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    crate::input::build_input(&request, &crate::input::InputOptions::default())
        .unwrap_or_else(|_| Value::new_object())
}

/// Runs the VM to the end, answering each host-await suspension with Regent's builtin.
fn run_vm(vm: &mut RegoVM) -> Result<Value, EvalError> {
    let vm_error = |e: regorus::rvm::vm::VmError| EvalError {
        message: e.to_string(),
    };
    let mut value = vm.execute().map_err(vm_error)?;
    loop {
        let (name, args) = match vm.execution_state() {
            ExecutionState::Suspended {
                reason:
                    SuspendReason::HostAwait {
                        argument,
                        identifier,
                        ..
                    },
                ..
            } => (identifier.clone(), argument.clone()),
            ExecutionState::Suspended { reason, .. } => {
                return Err(EvalError {
                    message: format!("the VM stopped unexpectedly: {reason:?}"),
                })
            }
            _ => return Ok(value),
        };
        let result = match (&name, &args) {
            (Value::String(name), Value::Array(args)) => {
                crate::builtins::call(name, &args.to_vec())
            }
            _ => Value::Undefined,
        };
        value = vm.resume(Some(result)).map_err(vm_error)?;
    }
}

/// Whether `program` builds a document out of rules at run time (`x := data.pkg`, `data.pkg[k]`):
/// regorus 0.14.1's VM evaluates those rules run-to-completion, where a host-await call of one of
/// Regent's builtins has no answer, so such a policy stays on the interpreter under `auto`.
fn has_virtual_lookup(program: &Program) -> bool {
    program.instructions.iter().any(|i| {
        matches!(
            i,
            regorus::rvm::Instruction::VirtualDataDocumentLookup { .. }
        )
    })
}

/// Whether a decision allows the request: `true`, or an object whose `allowed` is `true`.
fn is_allow(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Object(_) => value["allowed"] == Value::Bool(true),
        _ => false,
    }
}

/// Whether an interpreter error is one of OPA's conflict errors (always errors in OPA, never
/// undefined): two complete rules or a function giving different values, or one object key two.
fn is_conflict(message: &str) -> bool {
    [
        "rule conflicts with rule",
        "should not produce multiple outputs",
        "must not produce multiple outputs",
        "function produced multiple outputs",
    ]
    .iter()
    .any(|m| message.contains(m))
}
