//! The policy engine the authoring commands evaluate with: the bundle loaded by the bundle library
//! with Regent's builtins, so a rule means the same thing here as in the sidecar.

use anyhow::Context;
use regent_bundle::Bundle;
use regent_policy::load::{prepared_engine, LOCAL_BUNDLE_NAME};

/// How long one evaluation of `regent eval`/`check` may run: the sidecar's default.
const EVAL_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// Loads `bundle` under the sidecar's local-bundle name, registers the `io.jwt.*` builtins, and
/// makes regorus run its compile-time checks (safety, conflicts), which it otherwise defers to the
/// first evaluation.
pub(crate) fn policy_engine(bundle: &Bundle) -> anyhow::Result<regorus::Engine> {
    let mut engine = prepared_engine(&[(LOCAL_BUNDLE_NAME, bundle)], EVAL_TIMEOUT)?;
    engine
        .eval_query("true".to_string(), false)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("compiling the policy")?;
    Ok(engine)
}

/// A rule reference from `--path`: OPA's slash syntax (`envoy/authz/allow`, as the sidecar's
/// `policy.path`) or an explicit `data.` reference.
pub(crate) fn rule_from_path(path: &str) -> anyhow::Result<String> {
    let p = path.trim();
    if p.starts_with("data.") || p.starts_with("data[") {
        return Ok(p.to_string());
    }
    regent_policy::decision_rule(p).map_err(|e| anyhow::anyhow!("--path: {e}"))
}
