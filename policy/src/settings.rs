//! What shapes every compiled policy: the decision rule, the evaluator choice and the limits.

use std::time::Duration;

use serde::Deserialize;

/// Which evaluator runs a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// The bytecode VM when the policy compiles to it, else the interpreter.
    #[default]
    Auto,
    /// Always the bytecode VM (activation fails if the policy does not compile to it).
    Vm,
    /// Always the interpreter.
    Interpreter,
}

/// When a decision the bytecode VM reached is checked again on the interpreter.
///
/// regorus's VM turns a conflict (two complete rules, or a function, giving different values; two
/// values for one key of a partial object) into an undefined rule, where OPA and the interpreter
/// report an error. A re-check runs the interpreter on the same input and, when it reports such a
/// conflict, answers with that error instead. Other interpreter errors (a builtin's type error)
/// keep the VM's answer: OPA makes those undefined too, outside strict mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VmRecheck {
    /// Never (the VM's answer stands).
    Off,
    /// When the VM's decision is undefined (a conflict in the decision rule itself always shows
    /// this way, with or without a `default`).
    #[default]
    Undefined,
    /// When the decision is undefined or denies: also finds conflicts in rules the decision
    /// depends on, at the interpreter's cost on every denied request.
    Denials,
}

/// regorus's VM default (25,000) is reached by ordinary policies over a few thousand data
/// entries; the evaluation timeout is the real guard, this only stops runaway loops early.
pub const DEFAULT_MAX_INSTRUCTIONS: usize = 50_000_000;

/// Settings that shape every compiled policy.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// Decision rule, `data.`-prefixed.
    pub rule: String,
    /// Evaluator choice.
    pub engine: EngineChoice,
    /// Per-evaluation time limit.
    pub eval_timeout: Duration,
    /// Most VM instructions one evaluation may execute.
    pub max_instructions: usize,
    /// When VM decisions are re-checked on the interpreter.
    pub vm_recheck: VmRecheck,
    /// Activate bundles that do not define the decision rule (the sidecar: OPA activates bundles
    /// independently, and the rule may come with another bundle) instead of refusing them (the
    /// server's gate and `regent build`/`check`, where a missing rule is a mistake to report).
    pub allow_missing_decision: bool,
}

impl Default for PolicySettings {
    /// OPA-Envoy's decision path, the sidecar's defaults.
    fn default() -> Self {
        PolicySettings {
            rule: "data.envoy.authz.allow".into(),
            engine: EngineChoice::Auto,
            eval_timeout: Duration::from_millis(100),
            max_instructions: DEFAULT_MAX_INSTRUCTIONS,
            vm_recheck: VmRecheck::Undefined,
            allow_missing_decision: false,
        }
    }
}
