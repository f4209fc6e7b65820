//! Where the binaries under test are.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Paths of every binary the harness starts.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `regent` (bundle server and authoring CLI).
    pub regent: PathBuf,
    /// `regent-sidecar`.
    pub sidecar: PathBuf,
    /// The HTTP echo upstream.
    pub echo: PathBuf,
    /// The gRPC Orders upstream.
    pub orders: PathBuf,
    /// Envoy (from the project's venv).
    pub envoy: PathBuf,
}

impl Bins {
    /// Binaries next to `sibling` (cargo puts every binary of the workspace in one directory),
    /// each overridable by an environment variable (`REGENT_BIN`, `REGENT_SIDECAR_BIN`,
    /// `REGENT_E2E_ECHO_BIN`, `REGENT_E2E_ORDERS_BIN`); Envoy from `REGENT_E2E_ENVOY`, else
    /// installed or found by `e2e/envoy.sh`.
    pub fn beside(sibling: &Path) -> Result<Bins> {
        let dir = sibling
            .parent()
            .with_context(|| format!("{} has no parent directory", sibling.display()))?;
        let pick = |var: &str, name: &str| -> PathBuf {
            std::env::var_os(var)
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join(name))
        };
        let bins = Bins {
            regent: pick("REGENT_BIN", "regent"),
            sidecar: pick("REGENT_SIDECAR_BIN", "regent-sidecar"),
            echo: pick("REGENT_E2E_ECHO_BIN", "regent-e2e-echo"),
            orders: pick("REGENT_E2E_ORDERS_BIN", "regent-e2e-orders"),
            envoy: envoy()?,
        };
        for (what, p) in [
            ("regent (cargo build -p regent-bundle-server)", &bins.regent),
            (
                "regent-sidecar (cargo build -p regent-sidecar)",
                &bins.sidecar,
            ),
            ("regent-e2e-echo", &bins.echo),
            ("regent-e2e-orders", &bins.orders),
        ] {
            if !p.is_file() {
                anyhow::bail!(
                    "{} not found: build {what} first (e2e/e2e.sh does)",
                    p.display()
                );
            }
        }
        Ok(bins)
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn envoy() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("REGENT_E2E_ENVOY") {
        return Ok(PathBuf::from(p));
    }
    let script = repo_root().join("e2e/envoy.sh");
    let out = std::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        anyhow::bail!("{} failed ({})", script.display(), out.status);
    }
    let path = String::from_utf8(out.stdout).context("envoy.sh printed a non-UTF-8 path")?;
    let path = PathBuf::from(path.trim());
    if !path.is_file() {
        anyhow::bail!("envoy.sh printed {}, which is not a file", path.display());
    }
    Ok(path)
}
