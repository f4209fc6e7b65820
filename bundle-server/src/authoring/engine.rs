//! The policy engine the authoring commands evaluate with: the bundle loaded by the bundle library
//! with the sidecar's builtins, so a rule means the same thing here as in the sidecar.

use anyhow::Context;
use regent_bundle::engine::load_bundles;
use regent_bundle::Bundle;
use regent_sidecar::local_bundle::LOCAL_BUNDLE_NAME;

/// Loads `bundle` under the sidecar's local-bundle name, registers the `io.jwt.*` builtins, and
/// makes regorus run its compile-time checks (safety, conflicts), which it otherwise defers to the
/// first evaluation.
pub(crate) fn policy_engine(bundle: &Bundle) -> anyhow::Result<regorus::Engine> {
    let mut engine = load_bundles(&[(LOCAL_BUNDLE_NAME, bundle)])?;
    regent_sidecar::builtins::register(&mut engine).context("registering io.jwt builtins")?;
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
    regent_sidecar::policy::decision_rule(p).map_err(|e| anyhow::anyhow!("--path: {e}"))
}
