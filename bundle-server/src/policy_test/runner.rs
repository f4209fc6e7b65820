//! Loading a policy directory and running its test rules.

use std::path::Path;
use std::time::Instant;

use regent_bundle::{BuildOptions, Bundle, BundleError};
use regent_policy::load::{prepared_engine, timer, LoadError};
use regorus::{Engine, Value};

use super::discover::{rule_ref, test_rules};
use super::{Coverage, FileCoverage, TestError, TestOptions, TestReport, TestResult};

/// Loads every module (`*_test.rego` included), data file and `.manifest` under `dir` and runs every
/// test rule with the default [`TestOptions`].
pub fn run_tests(dir: &Path) -> Result<TestReport, TestError> {
    run_tests_with(dir, &TestOptions::default())
}

/// Like [`run_tests`], with a name filter, coverage and a per-test timeout.
///
/// A test passes only when its rule evaluates to `true`; `false`, any other value, undefined and
/// evaluation errors (timeouts included) fail it. An empty report (no test rule, or none matching the
/// filter) is not an error here: callers decide.
pub fn run_tests_with(dir: &Path, opts: &TestOptions) -> Result<TestReport, TestError> {
    let loaded = load(dir)?;
    let mut engine = loaded.engine;
    let prefix = loaded.prefix;
    let rules =
        test_rules(&mut engine).map_err(|e| error_from_message(&format!("{e:#}"), &prefix))?;

    engine.set_gather_prints(true);
    engine.set_enable_coverage(opts.coverage);
    engine.set_execution_timer_config(timer(opts.timeout));

    let mut results = Vec::new();
    for rule in rules {
        let package = rule_ref(&rule.package);
        let full = format!("{package}.{}", rule.name);
        if opts.filter.as_ref().is_some_and(|re| !re.is_match(&full)) {
            continue;
        }
        // Leftovers from a previous test must not be attributed to this one.
        let _ = engine.take_prints();
        let started = Instant::now();
        let outcome = engine.eval_rule(full.clone());
        let duration = started.elapsed();
        let prints = engine
            .take_prints()
            .unwrap_or_default()
            .into_iter()
            .map(|p| strip_prefix(&p, &prefix).to_string())
            .collect();
        let failure = match outcome {
            Ok(Value::Bool(true)) => None,
            Ok(Value::Undefined) => {
                Some("result is undefined (a body expression was false or undefined)".to_string())
            }
            Ok(other) => Some(format!("result is {other}, not true")),
            Err(e) => Some(format!("evaluation error: {e:#}")),
        };
        results.push(TestResult {
            package,
            name: rule.name,
            file: strip_prefix(&rule.source_file, &prefix).to_string(),
            line: rule.line,
            passed: failure.is_none(),
            failure,
            prints,
            duration,
        });
    }

    let coverage = if opts.coverage {
        let report = engine
            .get_coverage_report()
            .map_err(|e| error_from_message(&format!("coverage: {e:#}"), &prefix))?;
        let mut files: Vec<FileCoverage> = report
            .files
            .into_iter()
            .map(|f| FileCoverage {
                file: strip_prefix(&f.path, &prefix).to_string(),
                covered: f.covered.into_iter().collect(),
                not_covered: f.not_covered.into_iter().collect(),
            })
            .collect();
        files.sort_by(|a, b| a.file.cmp(&b.file));
        Some(Coverage { files })
    } else {
        None
    };
    Ok(TestReport { results, coverage })
}

struct Loaded {
    engine: Engine,
    /// What module paths carry in front of their path in the directory (`name/`).
    prefix: String,
}

/// Loads `dir` exactly as its bundle would be loaded, tests included and roots ignored: where a
/// test package sits relative to the bundle roots is the build's concern, not the tests'.
fn load(dir: &Path) -> Result<Loaded, TestError> {
    if !dir.is_dir() {
        return Err(TestError {
            file: None,
            line: None,
            message: format!("{}: not a directory", dir.display()),
        });
    }
    let opts = BuildOptions {
        include_tests: true,
        revision: None,
        roots: Some(vec![String::new()]),
    };
    let bundle = Bundle::from_dir(dir, &opts).map_err(|e| bundle_error(e, dir))?;
    let name = bundle_name(dir);
    let prefix = format!("{name}/");
    // The per-test timeout replaces this one in `run_tests_with`.
    let mut engine = prepared_engine(&[(name.as_str(), &bundle)], TestOptions::default().timeout)
        .map_err(|e| load_error(e, &prefix))?;
    // regorus checks safety and conflicts when it first prepares for evaluation, not when modules
    // are added: do it now so a compile error is reported as such, not as every test failing.
    engine
        .eval_query("true".to_string(), false)
        .map_err(|e| error_from_message(&format!("{e:#}"), &prefix))?;
    Ok(Loaded { engine, prefix })
}

/// The directory's own name, so diagnostics read `policies/authz.rego` for `regent test policies`.
fn bundle_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .unwrap_or_else(|| "policy".to_string())
}

fn strip_prefix<'a>(s: &'a str, prefix: &str) -> &'a str {
    s.strip_prefix(prefix).unwrap_or(s)
}

fn bundle_error(e: BundleError, dir: &Path) -> TestError {
    let relative = |p: &Path| {
        p.strip_prefix(dir)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    let file = match &e {
        BundleError::Io { path, .. } | BundleError::Symlink(path) => Some(relative(path)),
        BundleError::Module(message) => return error_from_message(message, ""),
        BundleError::NotUtf8(f)
        | BundleError::Data { file: f, .. }
        | BundleError::RootDataNotObject(f)
        | BundleError::DataConflict { file: f, .. }
        | BundleError::PackageOutsideRoots { file: f, .. }
        | BundleError::DataOutsideRoots { file: f, .. } => Some(f.clone()),
        BundleError::Manifest(_) => Some(regent_bundle::MANIFEST_FILE.to_string()),
        _ => None,
    };
    TestError {
        file: file.filter(|f| !f.is_empty()),
        line: None,
        message: e.to_string(),
    }
}

fn load_error(e: LoadError, prefix: &str) -> TestError {
    match e {
        LoadError::Module { message, .. } => error_from_message(&message, prefix),
        LoadError::RuleDataConflict { ref file, .. } => TestError {
            file: Some(strip_prefix(file, prefix).to_string()),
            line: None,
            message: e.to_string(),
        },
        LoadError::Unsupported { ref file, line, .. } => TestError {
            file: Some(strip_prefix(file, prefix).to_string()),
            line: Some(line),
            message: e.to_string(),
        },
        other => TestError {
            file: None,
            line: None,
            message: other.to_string(),
        },
    }
}

/// Takes file and line from a regorus diagnostic (`--> file:line:col`).
fn error_from_message(message: &str, prefix: &str) -> TestError {
    let location = message.split("--> ").nth(1).and_then(|rest| {
        let loc = rest.lines().next()?.trim();
        let mut parts = loc.rsplitn(3, ':');
        let _col = parts.next()?;
        let line: u32 = parts.next()?.parse().ok()?;
        let file = parts.next()?;
        Some((strip_prefix(file, prefix).to_string(), line))
    });
    TestError {
        file: location.as_ref().map(|(f, _)| f.clone()),
        line: location.map(|(_, l)| l),
        message: message.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, contents) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, contents).unwrap();
        }
        dir
    }

    const POLICY: &str = "package authz\n\nimport rego.v1\n\ndefault allow := false\n\nallow if input.user in data.roles.admins\n";

    #[test]
    fn runs_every_test_with_data_by_directory_and_captures_prints() {
        let dir = tree(&[
            ("authz.rego", POLICY),
            ("roles/data.yaml", "admins: [alice]\n"),
            (
                "tests/authz_test.rego",
                "package authz_test\n\nimport rego.v1\n\ntest_admin if data.authz.allow with input as {\"user\": \"alice\"}\n\ntest_other if {\n\tprint(\"user is\", \"bob\")\n\tdata.authz.allow with input as {\"user\": \"bob\"}\n}\n\ntest_mocked if data.authz.allow with input as {\"user\": \"bob\"} with data.roles.admins as [\"bob\"]\n\ntest_value := 7\n",
            ),
        ]);
        let report = run_tests(dir.path()).unwrap();
        let summary: Vec<_> = report
            .results
            .iter()
            .map(|r| (r.name.as_str(), r.line, r.passed))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("test_admin", 5, true),
                ("test_other", 7, false),
                ("test_mocked", 12, true),
                ("test_value", 14, false),
            ]
        );
        let other = &report.results[1];
        assert_eq!(other.package, "data.authz_test");
        assert_eq!(other.file, "tests/authz_test.rego");
        assert_eq!(
            other.prints,
            vec!["tests/authz_test.rego:8: user is bob".to_string()]
        );
        assert!(other.failure.as_deref().unwrap().contains("undefined"));
        assert!(report.results[0].prints.is_empty());
        assert!(report.results[3]
            .failure
            .as_deref()
            .unwrap()
            .contains("result is 7"));
        assert_eq!((report.passed(), report.failed()), (2, 2));
        assert!(report.coverage.is_none());
    }

    #[test]
    fn filter_and_timeout_apply() {
        let dir = tree(&[(
            "t_test.rego",
            "package t\n\nimport rego.v1\n\ntest_fast if true\n\ntest_slow if {\n\tsome x in numbers.range(1, 100000)\n\tsome y in numbers.range(1, 100000)\n\tx + y < 0\n}\n",
        )]);
        let opts = TestOptions {
            filter: Some(regex::Regex::new("fast$").unwrap()),
            ..TestOptions::default()
        };
        let report = run_tests_with(dir.path(), &opts).unwrap();
        assert_eq!(report.results.len(), 1);
        assert!(report.all_passed());

        let opts = TestOptions {
            filter: Some(regex::Regex::new("slow").unwrap()),
            timeout: std::time::Duration::from_millis(50),
            ..TestOptions::default()
        };
        let report = run_tests_with(dir.path(), &opts).unwrap();
        let slow = &report.results[0];
        assert!(!slow.passed);
        assert!(
            slow.failure
                .as_deref()
                .unwrap()
                .contains("evaluation error"),
            "{slow:?}"
        );
    }

    #[test]
    fn unusable_directories_are_errors_with_location() {
        let dir = tree(&[("a/p.rego", "package p\n\nimport rego.v1\n\nallow if {\n")]);
        let e = run_tests(dir.path()).unwrap_err();
        assert_eq!(e.file.as_deref(), Some("a/p.rego"));
        assert!(e.line.is_some(), "{e:?}");

        let dir = tree(&[(
            "p.rego",
            "package p\n\nimport rego.v1\n\nz if {\n\tw == 1\n}\n",
        )]);
        let e = run_tests(dir.path()).unwrap_err();
        assert_eq!(
            (e.file.as_deref(), e.line),
            (Some("p.rego"), Some(6)),
            "{e:?}"
        );
        assert!(e.message.contains("unsafe"), "{e}");

        let dir = tree(&[("r/data.json", "{\"a\": 1"), ("p.rego", "package p\n")]);
        let e = run_tests(dir.path()).unwrap_err();
        assert_eq!(e.file.as_deref(), Some("r/data.json"));

        let e = run_tests(&dir.path().join("missing")).unwrap_err();
        assert!(e.message.contains("not a directory"), "{e}");
    }

    #[test]
    fn coverage_is_gathered_per_file() {
        let dir = tree(&[
            ("authz.rego", POLICY),
            ("roles/data.json", "{\"admins\": [\"alice\"]}"),
            ("authz_test.rego", "package authz_test\n\nimport rego.v1\n\ntest_default if not data.authz.allow with input as {}\n"),
        ]);
        let opts = TestOptions {
            coverage: true,
            ..TestOptions::default()
        };
        let report = run_tests_with(dir.path(), &opts).unwrap();
        let cov = report.coverage.unwrap();
        let authz = cov.files.iter().find(|f| f.file == "authz.rego").unwrap();
        assert!(authz.covered.contains(&5), "{authz:?}");
        assert!(!authz.covered.is_empty() && authz.percent() <= 100.0);
        let (covered, total) = cov.totals();
        assert!(covered > 0 && covered <= total);
    }

    #[test]
    fn locations_come_from_regorus_diagnostics() {
        let msg = "\n--> pol/a/b.rego:12:5\n   |\n12 | x := y\n   |     ^\nerror: var y is unsafe";
        let e = error_from_message(msg, "pol/");
        assert_eq!(e.file.as_deref(), Some("a/b.rego"));
        assert_eq!(e.line, Some(12));
        assert!(e.message.contains("var y is unsafe"));
        let e = error_from_message("no location here", "pol/");
        assert_eq!((e.file, e.line), (None, None));
    }
}
