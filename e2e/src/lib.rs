//! End-to-end harness: starts git, `regent serve`, `regent-sidecar`, Envoy and upstreams on
//! 127.0.0.1, each process stopped by a guard; every wait is bounded; logs are kept on failure.

pub mod bins;
pub mod envoy;
pub mod git;
pub mod harness;
pub mod http;
pub mod jwt;
pub mod orders;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod server;
pub mod sidecar;
pub mod static_bundle;
pub mod upstreams;
pub mod wait;
