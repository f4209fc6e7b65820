//! Loading bundles into the policy engine (regorus, pinned) with the checks OPA makes at activation.
//!
//! The rest of Regent gets a ready `regorus::Engine` from here; how modules and data are fed to it, and
//! which conflicts are refused, is decided in this one place.

use regent_bundle::manifest::paths_overlap;
use regent_bundle::Bundle;

/// Why a set of bundles cannot be loaded together.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Two bundles claim overlapping roots.
    #[error("bundles {a:?} (root {root_a:?}) and {b:?} (root {root_b:?}) have overlapping roots")]
    OverlappingRoots {
        /// First bundle.
        a: String,
        /// Its root.
        root_a: String,
        /// Second bundle.
        b: String,
        /// Its root.
        root_b: String,
    },
    /// Two bundles carry the same name.
    #[error("bundle name {0:?} is used twice")]
    DuplicateName(String),
    /// A module does not compile; the message has bundle, file, line and column.
    #[error("bundle {bundle:?}: {message}")]
    Module {
        /// Bundle.
        bundle: String,
        /// regorus diagnostic (file:line:col and a caret snippet).
        message: String,
    },
    /// Data files conflict, or data cannot be loaded.
    #[error("bundle {bundle:?}: {message}")]
    Data {
        /// Bundle.
        bundle: String,
        /// What.
        message: String,
    },
    /// Regent's builtins could not be registered.
    #[error("registering builtins: {0}")]
    Builtins(String),
    /// A rule and a data document live at the same path.
    #[error("bundle {bundle:?}: rule {rule} in {file} conflicts with data at the same path")]
    RuleDataConflict {
        /// Bundle holding the module.
        bundle: String,
        /// Module file.
        file: String,
        /// `data.`-prefixed path.
        rule: String,
    },
    /// A module calls a builtin Regent does not support (see [`crate::unsupported`]).
    #[error(
        "bundle {bundle:?}: {file}:{line}: {builtin} is not supported by Regent yet ({})",
        crate::unsupported::reason(builtin)
    )]
    Unsupported {
        /// Bundle holding the module.
        bundle: String,
        /// Module file, prefixed with the bundle name as in regorus diagnostics.
        file: String,
        /// 1-based line of the call.
        line: u32,
        /// The builtin, e.g. `http.send`.
        builtin: &'static str,
    },
}

/// Name the local bundle is reported under.
pub const LOCAL_BUNDLE_NAME: &str = "local";

/// Reads a local bundle (`policy.bundle`, `regent eval --bundle`) from a directory or a `.tar.gz`
/// file. Local bundles are the operator's own files: not signature-checked.
pub fn read_local(path: &std::path::Path) -> anyhow::Result<Bundle> {
    let meta = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("policy.bundle {}: {e}", path.display()))?;
    let bundle = if meta.is_dir() {
        Bundle::from_dir(path, &regent_bundle::BuildOptions::default())?
    } else {
        let bytes = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("policy.bundle {}: {e}", path.display()))?;
        Bundle::from_tar_gz(&bytes, &regent_bundle::UnpackLimits::default())?
    };
    Ok(bundle)
}

/// The engine every part of Regent evaluates with: [`load_bundles`], Regent's builtins registered,
/// and each evaluation stopped after `eval_timeout`. The sidecar, the server's gate, `regent test`
/// and `regent eval/check` all start here, so a rule means the same thing in each.
pub fn prepared_engine(
    bundles: &[(&str, &Bundle)],
    eval_timeout: std::time::Duration,
) -> Result<regorus::Engine, LoadError> {
    let mut engine = load_bundles(bundles)?;
    check_unsupported(bundles)?;
    crate::builtins::register(&mut engine).map_err(|e| LoadError::Builtins(format!("{e:#}")))?;
    engine.set_execution_timer_config(timer(eval_timeout));
    Ok(engine)
}

/// Refuses a module that calls a builtin in [`crate::unsupported::UNSUPPORTED_BUILTINS`] (after
/// loading, so a syntax error is reported by regorus first).
fn check_unsupported(bundles: &[(&str, &Bundle)]) -> Result<(), LoadError> {
    for (name, bundle) in bundles {
        for (path, src) in bundle.modules() {
            let file = format!("{name}/{path}");
            if let Some(call) = crate::unsupported::calls_in_module(&file, src)
                .into_iter()
                .next()
            {
                return Err(LoadError::Unsupported {
                    bundle: name.to_string(),
                    file: call.file,
                    line: call.line,
                    builtin: call.builtin,
                });
            }
        }
    }
    Ok(())
}

/// regorus's wall-clock guard: checked every 64 instructions, cheap next to a rule call.
pub fn timer(limit: std::time::Duration) -> regorus::utils::limits::ExecutionTimerConfig {
    regorus::utils::limits::ExecutionTimerConfig {
        limit,
        check_interval: std::num::NonZeroU32::new(64).unwrap_or(std::num::NonZeroU32::MIN),
    }
}

/// Loads every module and the merged data of each bundle into one fresh engine.
///
/// Module paths are prefixed with the bundle name (`authz/policy.rego`) so diagnostics say where a
/// module came from. Roots may not overlap across bundles; rules may not collide with data.
pub fn load_bundles(bundles: &[(&str, &Bundle)]) -> Result<regorus::Engine, LoadError> {
    for (i, (a, ba)) in bundles.iter().enumerate() {
        for (b, bb) in &bundles[i + 1..] {
            if a == b {
                return Err(LoadError::DuplicateName(a.to_string()));
            }
            for ra in ba.manifest().effective_roots() {
                for rb in bb.manifest().effective_roots() {
                    if paths_overlap(&ra, &rb) {
                        return Err(LoadError::OverlappingRoots {
                            a: a.to_string(),
                            root_a: ra,
                            b: b.to_string(),
                            root_b: rb,
                        });
                    }
                }
            }
        }
    }

    let mut engine = regorus::Engine::new();
    for (name, bundle) in bundles {
        // The parser dialect is per engine setting at add time, so bundles of both versions can mix.
        engine.set_rego_v0(bundle.manifest().is_rego_v0());
        for (path, src) in bundle.modules() {
            engine
                .add_policy(format!("{name}/{path}"), src.to_string())
                .map_err(|e| LoadError::Module {
                    bundle: name.to_string(),
                    message: format!("{e:#}"),
                })?;
        }
        // The bundle's data was parsed when it was read; this shares it rather than copying it.
        let value = bundle.data().map_err(|e| LoadError::Data {
            bundle: name.to_string(),
            message: e.to_string(),
        })?;
        engine.add_data(value).map_err(|e| LoadError::Data {
            bundle: name.to_string(),
            message: format!("{e:#}"),
        })?;
    }
    check_rule_data_conflicts(&engine, bundles)?;
    Ok(engine)
}

/// A rule whose full path is also a data path would make `data.x.y` ambiguous; OPA refuses it
/// (`ast.CheckPathConflicts`), and so do we.
fn check_rule_data_conflicts(
    engine: &regorus::Engine,
    bundles: &[(&str, &Bundle)],
) -> Result<(), LoadError> {
    let data = engine.get_data();
    let packages = engine
        .get_policy_package_components()
        .map_err(|e| LoadError::Module {
            bundle: String::new(),
            message: format!("{e:#}"),
        })?;
    for p in packages {
        let mut node = &data;
        for c in &p.components {
            node = &node[c.as_str()];
        }
        let Ok(keys) = node.as_object() else { continue };
        for key in keys.keys() {
            let Ok(key) = key.as_string() else { continue };
            let declared = engine
                .has_declared_rule_rooted_at(&p.source_file, key.as_ref())
                .unwrap_or(false);
            if declared {
                let bundle = p
                    .source_file
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                debug_assert!(bundles.iter().any(|(n, _)| *n == bundle));
                return Err(LoadError::RuleDataConflict {
                    bundle,
                    file: p.source_file.clone(),
                    rule: format!("data.{}.{}", p.components.join("."), key),
                });
            }
        }
    }
    Ok(())
}
