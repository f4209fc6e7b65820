//! `regent test`: runs `*_test.rego` rules (OPA convention: rules named `test_*`) and reports each.
//! Also used by the server's publish gate. (Not implemented yet.)

use std::path::Path;

/// Arguments of `regent test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {}

/// The result of one test rule.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// Package of the test, e.g. `data.envoy.authz_test`.
    pub package: String,
    /// Rule name, e.g. `test_admin_allowed`.
    pub name: String,
    /// File the rule is in (relative to the tested directory).
    pub file: String,
    /// Line of the rule head.
    pub line: u32,
    /// Whether it passed (evaluated to `true`).
    pub passed: bool,
    /// Why it failed (undefined, false, or an evaluation error).
    pub failure: Option<String>,
    /// Output of `print` calls made by the test.
    pub prints: Vec<String>,
}

/// All results of a run.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// One entry per test rule, in file then line order.
    pub results: Vec<TestResult>,
}

/// A policy directory that cannot be tested at all (parse or compile error, unreadable file).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TestError {
    /// The file at fault, when known.
    pub file: Option<String>,
    /// The line at fault, when known.
    pub line: Option<u32>,
    /// What is wrong.
    pub message: String,
}

/// Loads every module, data file and `*_test.rego` under `dir` and runs every test rule.
pub fn run_tests(_dir: &Path) -> Result<TestReport, TestError> {
    Err(TestError {
        file: None,
        line: None,
        message: "the test runner is not implemented yet".into(),
    })
}

/// Runs `regent test`; returns the exit code (0 all pass, 2 failures, 1 error).
pub fn run(_args: TestArgs) -> anyhow::Result<u8> {
    anyhow::bail!("regent test is not implemented yet")
}
