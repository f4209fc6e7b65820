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

/// Settings that shape every compiled policy.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// Decision rule, `data.`-prefixed.
    pub rule: String,
    /// Evaluator choice.
    pub engine: EngineChoice,
    /// Per-evaluation time limit.
    pub eval_timeout: Duration,
}

