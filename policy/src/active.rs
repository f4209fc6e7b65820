//! A compiled policy: loaded once per activation, immutable, evaluated without locks.
//!
//! Each activation produces an immutable [`ActivePolicy`] with a new generation number. A Check loads
//! the current `Arc<ActivePolicy>` once and finishes on it even if a swap happens meanwhile. Evaluation
//! state (a regorus VM, or an interpreter engine clone) is kept per thread and per generation, so the hot
//! path takes no lock and shares no mutable state.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use regent_bundle::Bundle;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::Value;

use crate::grpc_decode::DecodePlan;
use crate::input::InputNeeds;
use crate::settings::{EngineChoice, PolicySettings};

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
    kind: EvaluatorKind,
    engine: regorus::Engine,
    program: Option<Arc<Program>>,
    data: Value,
    timer: ExecutionTimerConfig,
    input_needs: InputNeeds,
    decode_plan: DecodePlan,
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
}

/// Why one evaluation failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    /// regorus message.
    pub message: String,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    // One evaluator per thread, rebuilt when the thread first meets a new generation.
    static LOCAL: RefCell<Option<(u64, LocalEval)>> = const { RefCell::new(None) };
}

enum LocalEval {
    Vm(Box<RegoVM>),
    Interpreter(Box<regorus::Engine>),
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
        let timer = crate::load::timer(settings.eval_timeout);
        let entry: regorus::Rc<str> = settings.rule.as_str().into();
        let compiled =
            engine
                .compile_with_entrypoint(&entry)
                .map_err(|e| ActivationError::Entrypoint {
                    rule: settings.rule.clone(),
                    message: format!("{e:#}"),
                })?;
        let program = match settings.engine {
            EngineChoice::Interpreter => None,
            EngineChoice::Auto => {
                match Compiler::compile_from_policy(&compiled, &[settings.rule.as_str()]) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::info!(
                            reason = %format!("{e:#}"),
                            "policy does not compile to the bytecode VM; using the interpreter"
                        );
                        None
                    }
                }
            }
            EngineChoice::Vm => Some(
                Compiler::compile_from_policy(&compiled, &[settings.rule.as_str()])
                    .map_err(|e| ActivationError::VmRequired(format!("{e:#}")))?,
            ),
        };
        let program = program.map(|mut p| {
            crate::vm_program::trim_for_execution(&mut p);
            p
        });
        let kind = if program.is_some() {
            EvaluatorKind::Vm
        } else {
            EvaluatorKind::Interpreter
        };
        let data = engine.get_data();
        // Whoever drops this document last frees it, which takes long for large data: keep it
        // away from request threads (see sync::retire).
        crate::retire::hold_until_unused(data.clone());
        let input_needs = InputNeeds::of_modules(bundles.iter().flat_map(|(_, b)| b.modules()));
        let policy = ActivePolicy {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            rule: settings.rule.clone(),
            kind,
            engine,
            program,
            data,
            timer,
            decode_plan: DecodePlan::for_needs(&input_needs),
            input_needs,
            revisions: Arc::new(
                bundles
                    .iter()
                    .map(|(n, b)| (n.clone(), b.revision().to_string()))
                    .collect(),
            ),
            activated_at: std::time::SystemTime::now(),
        };
        // regorus reports a call to an unknown function only when the rule runs.
        if let Err(e) = policy.fresh_eval(Value::new_object()) {
            if e.message.contains("could not find function")
                || e.message.contains("Unknown function")
            {
                return Err(ActivationError::UnknownFunction {
                    rule: settings.rule.clone(),
                    message: e.message,
                });
            }
        }
        Ok(policy)
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

    /// Generation number (increases with every activation).
    pub fn generation(&self) -> u64 {
        self.generation
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
                Ok(LocalEval::Vm(Box::new(vm)))
            }
            None => Ok(LocalEval::Interpreter(Box::new(self.engine.clone()))),
        }
    }

    fn run(&self, local: &mut LocalEval, input: Value) -> Result<Value, EvalError> {
        match local {
            LocalEval::Vm(vm) => {
                vm.set_input(input);
                vm.execute().map_err(|e| EvalError {
                    message: e.to_string(),
                })
            }
            LocalEval::Interpreter(engine) => {
                engine.set_input(input);
                engine.eval_rule(self.rule.clone()).map_err(|e| EvalError {
                    message: format!("{e:#}"),
                })
            }
        }
    }

    /// Evaluates with a fresh evaluator (no thread-local reuse); used for trial runs and tests.
    pub fn fresh_eval(&self, input: Value) -> Result<Value, EvalError> {
        let mut local = self.new_local()?;
        self.run(&mut local, input)
    }

    /// Evaluates the decision rule for `input` on this thread's evaluator. `Undefined` means no decision.
    pub fn evaluate(&self, input: Value) -> Result<Value, EvalError> {
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
