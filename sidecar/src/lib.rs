//! regent-sidecar: answers Envoy's ext_authz Check with Rego policies evaluated in-process.
//!
//! - [`server::start`] runs everything from a [`config::SidecarConfig`].
//! - [`authorizer::Authorizer`] answers one Check (shared by gRPC and HTTP-service mode).
//! - [`policy`] holds the compiled policy in force; compiling and evaluating it, the input document,
//!   the decision contract and the builtins are `regent-policy`'s.
//! - [`sync`] downloads, verifies, activates and persists signed bundles.
//! - [`identity`] keeps identity providers' key sets (JWKS) current for the JWT builtins.

#![forbid(unsafe_code)]

pub mod authorizer;
pub mod cli;
pub mod config;
pub mod decision_log;
pub mod durable;
pub mod grpc_check;
pub mod http_mode;
pub mod identity;
pub mod local_bundle;
pub mod metrics;
pub mod opa_config;
pub mod policy;
pub mod reload;
pub mod remote;
pub mod runtime;
pub mod server;
pub mod sync;
pub mod telemetry;
pub mod tls;
