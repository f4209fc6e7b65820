//! The publish gate: every configured bundle of a checked-out commit is built, compiled the way the
//! sidecar compiles it, tested, its decision entrypoints checked, then signed. One failure anywhere
//! and nothing of the commit is published.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use regent_bundle::signing::{self, SignClaims, SigningKey};
use regent_bundle::{BuildOptions, Bundle};
use regent_policy::{decision_rule, ActivePolicy, EngineChoice, PolicySettings};
use serde::Serialize;
use sha2::Digest;

use super::config::BundleConfig;
use super::trace;
use crate::policy_test;
use opentelemetry::trace::Span as _;
use opentelemetry::KeyValue;

/// Time limit of one trial evaluation of an entrypoint.
const ENTRYPOINT_EVAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A test rule that failed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailedTest {
    /// Package, e.g. `data.envoy.authz_test`.
    pub package: String,
    /// Rule name.
    pub name: String,
    /// File, relative to the repository root.
    pub file: String,
    /// Line of the rule head.
    pub line: u32,
    /// Why it failed.
    pub failure: String,
}

/// Why a bundle of a commit cannot be published.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    /// Bundle name.
    pub bundle: String,
    /// Stable label (metrics): `build`, `compile`, `test`, `entrypoint`, `sign`, `internal`.
    pub reason: &'static str,
    /// Human-readable description.
    pub message: String,
    /// File at fault, relative to the repository root, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Line at fault, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Failing tests (reason `test`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<FailedTest>,
}

impl Failure {
    fn new(bundle: &str, reason: &'static str, message: impl Into<String>) -> Failure {
        let message = message.into();
        Failure {
            bundle: bundle.to_string(),
            reason,
            file: None,
            line: None,
            tests: Vec::new(),
            message,
        }
    }

    /// Fills `file`/`line` from the first `path.rego:LINE` found in the message. `prefix` turns
    /// the path it finds into a repository path.
    fn locate(mut self, strip: Option<&str>, dir: &str) -> Failure {
        if let Some((file, line)) = find_location(&self.message) {
            let file = strip
                .and_then(|s| file.strip_prefix(s))
                .unwrap_or(&file)
                .to_string();
            self.file = Some(repo_path(dir, &file));
            self.line = Some(line);
        }
        self
    }
}

/// A bundle ready to serve.
#[derive(Debug, Clone)]
pub struct BuiltBundle {
    /// Bundle name.
    pub name: String,
    /// Revision (the commit SHA).
    pub revision: String,
    /// Signed, deterministic `.tar.gz`.
    pub bytes: Bytes,
    /// Strong ETag: quoted hex SHA-256 of `bytes`.
    pub etag: String,
    /// Signing key id.
    pub kid: String,
}

/// The key that signs, and the claims added to every signature.
pub struct Signer {
    /// Key id.
    pub kid: String,
    /// Private key.
    pub key: SigningKey,
    /// `scope` claim.
    pub scope: Option<String>,
    /// `iss` claim.
    pub issuer: String,
}

/// The ETag of bundle bytes.
pub fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", hex::encode(sha2::Sha256::digest(bytes)))
}

fn repo_path(dir: &str, file: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() || dir == "." {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

/// Finds `something.rego:LINE` (regorus and parser diagnostics) in a message.
fn find_location(message: &str) -> Option<(String, u32)> {
    let idx = message.find(".rego:")?;
    let start = message[..idx]
        .rfind(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '(')
        .map_or(0, |i| i + 1);
    let file = &message[start..idx + 5];
    let rest = &message[idx + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let line = digits.parse().ok()?;
    Some((file.to_string(), line))
}

/// Builds, checks and signs every bundle of the commit exported at `root`. `signed_at` becomes
/// the signature's `iat`: the commit's committer time, so every replica (and every rebuild)
/// produces byte-identical bundles for a commit. Blocking and CPU heavy: run it on a blocking
/// thread.
pub fn gate_commit(
    root: &Path,
    commit: &str,
    signed_at: i64,
    bundles: &[BundleConfig],
    signer: &Signer,
) -> Result<Vec<BuiltBundle>, Vec<Failure>> {
    let mut failures = Vec::new();
    let mut built = Vec::new();
    for cfg in bundles {
        match gate_bundle(root, commit, signed_at, cfg, signer) {
            Ok(b) => built.push(b),
            Err(mut f) => failures.append(&mut f),
        }
    }
    if failures.is_empty() {
        Ok(built)
    } else {
        Err(failures)
    }
}

/// Runs every check of [`gate_commit`] except signing on the commit exported at `root`: what a
/// git pre-receive hook needs, which has the server's configuration but not its keys.
pub fn check_commit(root: &Path, commit: &str, bundles: &[BundleConfig]) -> Vec<Failure> {
    bundles
        .iter()
        .filter_map(|cfg| check_bundle(root, commit, cfg).err())
        .flatten()
        .collect()
}

fn gate_bundle(
    root: &Path,
    commit: &str,
    signed_at: i64,
    cfg: &BundleConfig,
    signer: &Signer,
) -> Result<BuiltBundle, Vec<Failure>> {
    let name = cfg.name.as_str();
    let mut bundle = check_bundle(root, commit, cfg)?;
    let span = step(trace::SIGN_SPAN, name);
    let signed = sign_bundle(&mut bundle, name, commit, signed_at, signer);
    if let Some(mut span) = span {
        span.set_attribute(KeyValue::new(trace::attr::SIGNING_KID, signer.kid.clone()));
        if let Ok(b) = &signed {
            span.set_attribute(KeyValue::new(trace::attr::REVISION, b.revision.clone()));
            span.set_attribute(KeyValue::new(
                trace::attr::BYTES,
                i64::try_from(b.bytes.len()).unwrap_or(i64::MAX),
            ));
        }
        end_step(
            span,
            signed.as_ref().err().map(Vec::as_slice).unwrap_or_default(),
        );
    }
    signed
}

fn sign_bundle(
    bundle: &mut Bundle,
    name: &str,
    commit: &str,
    signed_at: i64,
    signer: &Signer,
) -> Result<BuiltBundle, Vec<Failure>> {
    let claims = SignClaims {
        iss: Some(signer.issuer.clone()),
        scope: signer.scope.clone(),
        iat: Some(signed_at),
    };
    signing::sign(bundle, &signer.key, &signer.kid, &claims)
        .map_err(|e| vec![Failure::new(name, "sign", e.to_string())])?;
    let bytes = bundle
        .to_tar_gz()
        .map_err(|e| vec![Failure::new(name, "internal", e.to_string())])?;
    Ok(BuiltBundle {
        name: name.to_string(),
        revision: commit.to_string(),
        etag: etag_of(&bytes),
        bytes: Bytes::from(bytes),
        kid: signer.kid.clone(),
    })
}

/// A span of one step for bundle `name`, a child of the build attached to this thread; `None`
/// when the build is not traced (or for a hook, which has no build).
fn step(span: &'static str, name: &str) -> Option<opentelemetry_sdk::trace::Span> {
    regent_telemetry::spans::child(
        &opentelemetry::Context::current(),
        span,
        vec![KeyValue::new(trace::attr::BUNDLE, name.to_string())],
    )
}

/// Ends a step's span with its outcome: `ok`, or `failed` with the first reason and every message.
fn end_step(mut span: opentelemetry_sdk::trace::Span, failures: &[Failure]) {
    let Some(first) = failures.first() else {
        span.set_attribute(KeyValue::new(trace::attr::RESULT, "ok"));
        span.end();
        return;
    };
    span.set_attribute(KeyValue::new(trace::attr::RESULT, "failed"));
    span.set_attribute(KeyValue::new(trace::attr::REASON, first.reason));
    let messages: Vec<&str> = failures.iter().map(|f| f.message.as_str()).collect();
    regent_telemetry::spans::end(span, Some(messages.join("; ")));
}

/// Builds the bundle, compiles it, checks its entrypoints and runs its tests: the bundle,
/// unsigned, when all pass.
fn check_bundle(root: &Path, commit: &str, cfg: &BundleConfig) -> Result<Bundle, Vec<Failure>> {
    let name = cfg.name.as_str();
    let span = step(trace::COMPILE_SPAN, name);
    let compiled = compile_bundle(root, commit, cfg);
    if let Some(span) = span {
        let failures = match &compiled {
            Ok((_, f)) | Err(f) => f.as_slice(),
        };
        end_step(span, failures);
    }
    let (bundle, mut failures) = compiled?;
    let span = step(trace::GATE_SPAN, name);
    let tested = test_bundle(root, cfg);
    if let Some(span) = span {
        end_step(span, &tested);
    }
    failures.extend(tested);
    if !failures.is_empty() {
        return Err(failures);
    }
    Ok(bundle)
}

/// Builds the bundle and compiles it as a sidecar would, then checks its entrypoints: the
/// bundle and the compile and entrypoint failures, or the build's failure.
fn compile_bundle(
    root: &Path,
    commit: &str,
    cfg: &BundleConfig,
) -> Result<(Bundle, Vec<Failure>), Vec<Failure>> {
    let name = cfg.name.as_str();
    let dir = root.join(&cfg.dir);
    if !dir.is_dir() {
        return Err(vec![Failure::new(
            name,
            "build",
            format!("directory {:?} does not exist in commit {commit}", cfg.dir),
        )]);
    }
    let opts = BuildOptions {
        include_tests: false,
        revision: Some(commit.to_string()),
        roots: cfg.roots.clone(),
    };
    let bundle = Bundle::from_dir(&dir, &opts)
        .map_err(|e| vec![Failure::new(name, "build", e.to_string()).locate(None, &cfg.dir)])?;

    let mut failures = Vec::new();
    // Compiled exactly as a sidecar activating this bundle would (same loader, same builtins).
    let single = vec![(name.to_string(), Arc::new(bundle.clone()))];
    match compile_check(name, &bundle) {
        Ok(()) => {
            for e in &cfg.entrypoints {
                if let Err(f) = entrypoint_check(name, &single, e) {
                    failures.push(f.locate(Some(&format!("{name}/")), &cfg.dir));
                }
            }
        }
        Err(f) => failures.push(f.locate(Some(&format!("{name}/")), &cfg.dir)),
    }
    Ok((bundle, failures))
}

/// Runs the bundle directory's policy tests: the failure, if any.
fn test_bundle(root: &Path, cfg: &BundleConfig) -> Vec<Failure> {
    let name = cfg.name.as_str();
    let dir = root.join(&cfg.dir);
    let mut failures = Vec::new();
    match policy_test::run_tests(&dir) {
        Ok(report) => {
            let failed: Vec<FailedTest> = report
                .results
                .iter()
                .filter(|r| !r.passed)
                .map(|r| FailedTest {
                    package: r.package.clone(),
                    name: r.name.clone(),
                    file: repo_path(&cfg.dir, &r.file),
                    line: r.line,
                    failure: r.failure.clone().unwrap_or_else(|| "failed".into()),
                })
                .collect();
            if !failed.is_empty() {
                let first = &failed[0];
                failures.push(Failure {
                    bundle: name.to_string(),
                    reason: "test",
                    message: format!(
                        "{} of {} tests failed (first: {} at {}:{})",
                        failed.len(),
                        report.results.len(),
                        first.name,
                        first.file,
                        first.line
                    ),
                    file: Some(first.file.clone()),
                    line: Some(first.line),
                    tests: failed,
                });
            }
        }
        Err(e) => {
            let mut f = Failure::new(name, "test", format!("tests cannot run: {}", e.message));
            f.file = e.file.as_deref().map(|p| repo_path(&cfg.dir, p));
            f.line = e.line;
            if f.file.is_none() {
                f = f.locate(None, &cfg.dir);
            }
            failures.push(f);
        }
    }
    failures
}

fn compile_check(name: &str, bundle: &Bundle) -> Result<(), Failure> {
    let mut engine =
        regent_policy::load::prepared_engine(&[(name, bundle)], ENTRYPOINT_EVAL_TIMEOUT)
            .map_err(|e| Failure::new(name, "compile", e.to_string()))?;
    // regorus reports a call to a function that does not exist only when the call runs.
    // Evaluating the whole document once on an empty input reaches every rule body that does
    // not depend on the input; other evaluation errors are the tests' business.
    engine.set_input(regorus::Value::new_object());
    if let Err(e) = engine.eval_query("data".to_string(), false) {
        let message = format!("{e:#}");
        if message.contains("could not find function") {
            return Err(Failure::new(name, "compile", message));
        }
    }
    Ok(())
}

fn entrypoint_check(
    name: &str,
    bundles: &[(String, Arc<Bundle>)],
    entrypoint: &str,
) -> Result<(), Failure> {
    let rule = decision_rule(entrypoint).map_err(|e| Failure::new(name, "entrypoint", e))?;
    let settings = PolicySettings {
        rule: rule.clone(),
        engine: EngineChoice::Auto,
        eval_timeout: ENTRYPOINT_EVAL_TIMEOUT,
        ..PolicySettings::default()
    };
    let policy = ActivePolicy::compile(bundles, &settings)
        .map_err(|e| Failure::new(name, "entrypoint", format!("entrypoint {entrypoint}: {e}")))?;
    let value = policy
        .fresh_eval(regorus::Value::new_object())
        .map_err(|e| {
            Failure::new(
                name,
                "entrypoint",
                format!("entrypoint {entrypoint}: evaluation on an empty input failed: {e}"),
            )
        })?;
    // The decision contract: a defined decision must be one the sidecar can turn into an
    // answer (a boolean, or an object with a boolean `allowed` and well-typed fields).
    // Undefined is allowed here: a rule without a default is undefined on an empty input.
    if value != regorus::Value::Undefined {
        regent_policy::decision::to_check_response(&value, "regent-gate").map_err(|e| {
            Failure::new(
                name,
                "entrypoint",
                format!("entrypoint {entrypoint}: on an empty input the decision is unusable: {e}"),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rego_locations() {
        assert_eq!(
            find_location("authz/policy.rego:3:5: error: unexpected token"),
            Some(("authz/policy.rego".into(), 3))
        );
        assert_eq!(
            find_location("bundle \"a\": --> a/x.rego:12:1"),
            Some(("a/x.rego".into(), 12))
        );
        assert_eq!(find_location("no location"), None);
    }

    fn signer() -> Signer {
        let (private, _) = signing::generate_key_pem();
        Signer {
            kid: "k".into(),
            key: signing::signing_key_from_pem(&private, "test key").unwrap(),
            scope: None,
            issuer: "regent".into(),
        }
    }

    fn bundle(dir: &str) -> BundleConfig {
        BundleConfig {
            name: "lib".into(),
            dir: dir.into(),
            roots: Some(vec!["lib".into()]),
            entrypoints: Vec::new(),
        }
    }

    #[test]
    fn unknown_function_outside_any_entrypoint_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("lib")).unwrap();
        std::fs::write(
            root.path().join("lib/lib.rego"),
            "package lib\n\nx := 1\n\ny := nope.nothing(1)\n",
        )
        .unwrap();
        let f = gate_commit(root.path(), "c1", 1, &[bundle("lib")], &signer()).unwrap_err();
        assert_eq!(f[0].reason, "compile", "{f:?}");
        assert!(f[0].message.contains("nope.nothing"), "{f:?}");
        assert_eq!(f[0].file.as_deref(), Some("lib/lib.rego"), "{f:?}");

        std::fs::write(root.path().join("lib/lib.rego"), "package lib\n\nx := 1\n").unwrap();
        let s = signer();
        let built = gate_commit(root.path(), "c2", 2, &[bundle("lib")], &s).unwrap();
        assert_eq!(built[0].revision, "c2");
        assert_eq!(built[0].etag, etag_of(&built[0].bytes));
        let again = gate_commit(root.path(), "c2", 2, &[bundle("lib")], &s).unwrap();
        assert_eq!(
            again[0].bytes, built[0].bytes,
            "same commit, same key: same bytes"
        );
        let missing =
            gate_commit(root.path(), "c3", 3, &[bundle("nowhere")], &signer()).unwrap_err();
        assert_eq!(missing[0].reason, "build");
    }

    #[test]
    fn entrypoint_decisions_must_follow_the_contract() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("lib")).unwrap();
        let mut cfg = bundle("lib");
        cfg.entrypoints = vec!["lib/allow".into()];
        let gate = |policy: &str| {
            std::fs::write(root.path().join("lib/lib.rego"), policy).unwrap();
            gate_commit(root.path(), "c", 1, std::slice::from_ref(&cfg), &signer())
        };
        // A boolean, an object with `allowed`, or undefined on an empty input: publishable.
        assert!(gate("package lib\n\ndefault allow := false\n").is_ok());
        assert!(gate("package lib\n\nallow := {\"allowed\": true}\n").is_ok());
        assert!(gate("package lib\n\nallow if input.user == \"a\"\n").is_ok());
        // A decision the sidecar cannot map to an answer is refused before any sidecar sees it.
        for bad in [
            "package lib\n\nallow := \"yes\"\n",
            "package lib\n\nallow := {\"ok\": true}\n",
            "package lib\n\nallow := {\"allowed\": false, \"http_status\": \"x\"}\n",
        ] {
            let f = gate(bad).unwrap_err();
            assert_eq!(f[0].reason, "entrypoint", "{bad}: {f:?}");
            assert!(f[0].message.contains("unusable"), "{bad}: {f:?}");
        }
    }

    #[test]
    fn etag_is_quoted_sha256() {
        let e = etag_of(b"abc");
        assert_eq!(
            e,
            "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
        );
    }
}
