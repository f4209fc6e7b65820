//! regent-policy: Regent's policy engine, shared by the sidecar, the bundle server's test gate and
//! the authoring CLI.
//!
//! - [`load`] feeds bundles to regorus with the checks OPA makes at activation.
//! - [`ActivePolicy::compile`] turns loaded bundles into an immutable policy on the bytecode VM or
//!   the interpreter; [`ActivePolicy::evaluate`] runs it without locks.
//! - [`builtins`] are the OPA builtins regorus lacks (`io.jwt.*` and more).
//! - [`input`] builds OPA-Envoy's input document; [`grpc_decode`] decodes only what a policy reads;
//!   [`decision`] maps a decision to Envoy's CheckResponse.

#![forbid(unsafe_code)]

pub mod active;
pub mod builtins;
pub mod decision;
pub mod grpc_decode;
pub mod input;
pub mod load;
pub mod log_rules;
pub mod path;
pub mod retire;
pub mod settings;
pub mod unsupported;
pub mod vm_program;

pub use active::{ActivationError, ActivePolicy, EvalError, EvaluatorKind};
pub use path::{decision_rule, rule_ref};
pub use settings::{EngineChoice, PolicySettings, VmRecheck};
