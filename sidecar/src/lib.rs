//! regent-sidecar: answers Envoy's ext_authz Check with Rego policies evaluated in-process.
//!
//! - [`server::start`] runs everything from a [`config::SidecarConfig`].
//! - [`authorizer::Authorizer`] answers one Check (shared by gRPC and HTTP-service mode).
//! - [`policy`] holds the compiled policy in force and evaluates it without locks.
//! - [`input`], [`decision`] and [`builtins`] implement OPA-Envoy's input document, decision contract and
//!   the `io.jwt.*` builtins regorus lacks.
//! - [`sync`] downloads, verifies, activates and persists signed bundles.

pub mod authorizer;
pub mod builtins;
pub mod cli;
pub mod config;
pub mod decision;
pub mod decision_log;
pub mod grpc_check;
pub mod grpc_decode;
pub mod http_mode;
pub mod input;
pub mod local_bundle;
pub mod metrics;
pub mod policy;
pub mod runtime;
pub mod server;
pub mod sync;
pub mod vm_program;
