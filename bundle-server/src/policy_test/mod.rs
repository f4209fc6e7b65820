//! The policy test runner: runs every Rego rule named `test_*` (OPA's convention) in a policy
//! directory, as `regent test` does and as the server's publish gate does before publishing a commit.
//!
//! A directory is loaded the way a bundle is built from it ([`regent_bundle::Bundle::from_dir`] with
//! `*_test.rego` included and roots ignored, then [`regent_policy::load::prepared_engine`]), with the
//! sidecar's `io.jwt.*` builtins registered, so tests see exactly the modules, data and builtins the
//! sidecar will. Tests run on regorus's interpreter, which supports `with` and `print`.

mod cli;
mod discover;
mod runner;

use std::time::Duration;

pub(crate) use cli::parse_duration;
pub use cli::{run, OutputFormat, TestArgs};
pub use runner::{run_tests, run_tests_with};

/// The result of one test rule.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// Package of the test, e.g. `data.envoy.authz_test`.
    pub package: String,
    /// Rule name, e.g. `test_admin_allowed`.
    pub name: String,
    /// File the rule is in (relative to the tested directory, `/`-separated).
    pub file: String,
    /// Line of the rule head.
    pub line: u32,
    /// Whether it passed (evaluated to `true`).
    pub passed: bool,
    /// Why it failed (undefined, another value than `true`, or an evaluation error).
    pub failure: Option<String>,
    /// Output of `print` calls made by the test, each prefixed with `file:line: `.
    pub prints: Vec<String>,
    /// Time spent evaluating the test.
    pub duration: Duration,
}

impl TestResult {
    /// The full rule reference, e.g. `data.envoy.authz_test.test_admin_allowed`.
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.package, self.name)
    }
}

/// All results of a run.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// One entry per test rule, in file then line order.
    pub results: Vec<TestResult>,
    /// Line coverage of every module, when asked for with [`TestOptions::coverage`].
    pub coverage: Option<Coverage>,
}

impl TestReport {
    /// Number of passing tests.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    /// Number of failing tests.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// True when at least one test ran and all passed.
    pub fn all_passed(&self) -> bool {
        !self.results.is_empty() && self.failed() == 0
    }
}

/// Line coverage gathered while the tests ran.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// One entry per module, sorted by file.
    pub files: Vec<FileCoverage>,
}

impl Coverage {
    /// Covered and coverable line counts over all files.
    pub fn totals(&self) -> (usize, usize) {
        self.files.iter().fold((0, 0), |(c, t), f| {
            (
                c + f.covered.len(),
                t + f.covered.len() + f.not_covered.len(),
            )
        })
    }
}

/// Line coverage of one module.
#[derive(Debug, Clone, Default)]
pub struct FileCoverage {
    /// Module path relative to the tested directory.
    pub file: String,
    /// Lines evaluated at least once.
    pub covered: Vec<u32>,
    /// Lines holding code that was never evaluated.
    pub not_covered: Vec<u32>,
}

impl FileCoverage {
    /// Percentage of coverable lines that were evaluated (100 for a file without coverable lines).
    pub fn percent(&self) -> f64 {
        percent(
            self.covered.len(),
            self.covered.len() + self.not_covered.len(),
        )
    }
}

pub(crate) fn percent(covered: usize, total: usize) -> f64 {
    if total == 0 {
        100.0
    } else {
        covered as f64 * 100.0 / total as f64
    }
}

/// How tests are selected and run.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Run only tests whose full name (`data.pkg.test_x`) matches.
    pub filter: Option<regex::Regex>,
    /// Gather line coverage.
    pub coverage: bool,
    /// Longest one test may run; past it the test fails (OPA's `opa test --timeout`, default 5 s).
    pub timeout: Duration,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            filter: None,
            coverage: false,
            timeout: Duration::from_secs(5),
        }
    }
}

/// A policy directory that cannot be tested at all (parse or compile error, unreadable file, data
/// conflict).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct TestError {
    /// The file at fault (relative to the tested directory), when known.
    pub file: Option<String>,
    /// The line at fault, when known.
    pub line: Option<u32>,
    /// What is wrong (for Rego errors, regorus's diagnostic with a source snippet).
    pub message: String,
}

impl TestError {
    /// `file:line: ` (or `file: `, or nothing) for one-line reports.
    pub fn location(&self) -> String {
        match (&self.file, self.line) {
            (Some(f), Some(l)) => format!("{f}:{l}: "),
            (Some(f), None) => format!("{f}: "),
            _ => String::new(),
        }
    }
}
