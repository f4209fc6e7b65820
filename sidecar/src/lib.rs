//! regent-sidecar: answers Envoy's ext_authz Check with Rego policies evaluated in-process.

pub mod sync;
pub mod decision;
pub mod input;
pub mod builtins;
