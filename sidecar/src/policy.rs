//! The policy in force: swapped atomically on activation, read without locks.
//!
//! Each activation produces an immutable [`ActivePolicy`] (compiled by `regent-policy`) with a new
//! generation number. A Check loads the current `Arc<ActivePolicy>` once and finishes on it even if a
//! swap happens meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use regent_bundle::Bundle;
pub use regent_policy::{
    decision_rule, rule_ref, ActivationError, ActivePolicy, EvalError, EvaluatorKind,
    PolicySettings,
};

use crate::sync::activate::PolicySink;
use crate::sync::Refusal;

/// Holds the policy in force.
pub struct PolicyStore {
    current: ArcSwapOption<ActivePolicy>,
    settings: PolicySettings,
    activations: prometheus::IntCounter,
    generation: tokio::sync::watch::Sender<u64>,
}

impl PolicyStore {
    /// An empty store (no policy: Check answers per `fail_mode`).
    pub fn new(settings: PolicySettings, activations: prometheus::IntCounter) -> Self {
        PolicyStore {
            current: ArcSwapOption::empty(),
            settings,
            activations,
            generation: tokio::sync::watch::channel(0).0,
        }
    }

    /// Changes to the generation of the policy in force (0 while none is active).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The settings every policy is compiled with.
    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// The policy in force, if any. Cheap: no lock, one atomic load and a refcount.
    pub fn current(&self) -> Option<Arc<ActivePolicy>> {
        self.current.load_full()
    }

    /// Whether a policy is in force.
    pub fn is_active(&self) -> bool {
        self.current.load().is_some()
    }

    /// Whether a policy is in force and defines the decision rule, so Checks get decisions.
    pub fn is_ready(&self) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|p| p.missing_decision().is_none())
    }

    /// Bundle name → revision of the policy in force.
    pub fn revisions(&self) -> BTreeMap<String, String> {
        self.current()
            .map(|p| (*p.revisions).clone())
            .unwrap_or_default()
    }

    /// Compiles the bundles and swaps the result in atomically. On error the current policy stays.
    /// CPU-bound: async callers use `spawn_blocking`.
    pub fn activate(
        &self,
        bundles: &[(String, Arc<Bundle>)],
    ) -> Result<Arc<ActivePolicy>, ActivationError> {
        let started = Instant::now();
        let policy = Arc::new(ActivePolicy::compile(bundles, &self.settings)?);
        self.current.store(Some(policy.clone()));
        self.activations.inc();
        self.generation.send_replace(policy.generation());
        tracing::info!(
            revisions = ?policy.revisions,
            evaluator = policy.kind().as_str(),
            input_paths = %policy.input_needs().describe(),
            generation = policy.generation(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "policy activated"
        );
        if let Some(rule) = policy.missing_decision() {
            tracing::warn!(
                decision_rule = rule,
                revisions = ?policy.revisions,
                "no active bundle defines the decision rule: not ready, Checks answer per fail_mode until one does"
            );
        }
        Ok(policy)
    }
}

impl PolicySink<Bundle> for Arc<PolicyStore> {
    fn activate(&self, bundles: Vec<(String, Arc<Bundle>)>) -> Result<(), Refusal> {
        PolicyStore::activate(self, &bundles)
            .map(|_| ())
            .map_err(|e| Refusal::new("compile", e.to_string()))
    }

    fn evaluator(&self) -> Option<&'static str> {
        self.current().map(|p| p.kind().as_str())
    }
}
