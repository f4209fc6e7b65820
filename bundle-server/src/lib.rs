//! regent: the bundle server (`regent serve`) and the policy authors' CLI.
//!
//! - [`authoring`]: `regent build|sign|verify|keygen|eval|check` (one file per command).
//! - [`policy_test`]: the `*_test.rego` runner used by `regent test` and by the server's publish gate.
//! - [`server`]: `regent serve`: git source, publish gate, signed bundles, distribution, fleet view.
//! - [`rollout`]: `regent rollout status`, the fleet view from the command line.
//! - [`hook`]: `regent hook pre-receive`, the publish gate as a git hook, and the hooks' summaries.
//! - [`inject`]: the mutating admission webhook that injects `regent-sidecar` into pods.

#![forbid(unsafe_code)]

pub mod authoring;
pub mod hook;
pub mod inject;
pub mod policy_test;
pub mod rollout;
pub mod server;
