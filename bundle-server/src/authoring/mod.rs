//! The policy authors' commands, one file each. Every `run` returns the process exit code.

pub mod build;
pub mod check;
pub mod check_request;
mod engine;
pub mod eval;
mod files;
pub mod keygen;
pub mod sign;
pub mod verify;
