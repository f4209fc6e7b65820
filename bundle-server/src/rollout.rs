//! `regent rollout status`: how much of the fleet runs a revision, from the bundle server's fleet
//! view. Exit codes: 0 every reporting sidecar runs it, 3 not all do (or no sidecar reports the
//! bundle asked for, or none reports any bundle), 1 error.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::server::fleet::FleetView;

/// Exit code when part of the fleet does not run the revision yet.
pub const EXIT_INCOMPLETE: u8 = 3;

/// Arguments of `regent rollout`.
#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RolloutCommand {
    /// Print how many sidecars run a revision; exit 0 if all, 3 if not, 1 on error.
    Status(StatusArgs),
}

/// Arguments of `regent rollout status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Bundle server base URL, e.g. `https://regent.example:8181`.
    #[arg(long)]
    pub server: String,
    /// Only this bundle (default: every bundle the server publishes).
    #[arg(long)]
    pub bundle: Option<String>,
    /// Revision to look for (default: the revision the server currently publishes).
    #[arg(long)]
    pub revision: Option<String>,
    /// File holding a bearer token for the server.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Extra PEM CA certificate to trust (for a server with a private CA).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Request timeout in seconds (at least 1).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_seconds: u64,
}

/// One bundle's rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct BundleProgress {
    /// Bundle name.
    pub bundle: String,
    /// Revision looked for.
    pub revision: Option<String>,
    /// Sidecars reporting the bundle.
    pub total: usize,
    /// Those running `revision`.
    pub on_revision: usize,
    /// Ids of the others, with what they run.
    pub behind: Vec<(String, String)>,
}

impl BundleProgress {
    /// Every sidecar reporting the bundle runs the revision, and there is at least one.
    pub fn complete(&self) -> bool {
        self.revision.is_some() && self.total > 0 && self.on_revision == self.total
    }
}

/// Computes the rollout of each bundle from a fleet view.
pub fn progress(
    view: &FleetView,
    bundle: Option<&str>,
    revision: Option<&str>,
) -> Vec<BundleProgress> {
    let names: Vec<String> = match bundle {
        Some(b) => vec![b.to_string()],
        None => view.bundles.keys().cloned().collect(),
    };
    names
        .into_iter()
        .map(|name| {
            let wanted = revision.map(str::to_string).or_else(|| {
                view.bundles
                    .get(&name)
                    .and_then(|b| b.published_revision.clone())
            });
            let mut total = 0;
            let mut on = 0;
            let mut behind = Vec::new();
            for s in &view.sidecars {
                let Some(b) = s.bundles.get(&name) else {
                    continue;
                };
                total += 1;
                if Some(&b.active_revision) == wanted.as_ref() {
                    on += 1;
                } else {
                    let running = if b.active_revision.is_empty() {
                        "(none)".to_string()
                    } else {
                        b.active_revision.clone()
                    };
                    behind.push((s.id.clone(), running));
                }
            }
            BundleProgress {
                bundle: name,
                revision: wanted,
                total,
                on_revision: on,
                behind,
            }
        })
        .collect()
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

async fn fetch_fleet(args: &StatusArgs) -> anyhow::Result<FleetView> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(args.timeout_seconds));
    if let Some(ca) = &args.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("--ca-file {}", ca.display()))?;
        for c in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-file {}", ca.display()))?
        {
            b = b.add_root_certificate(c);
        }
    }
    let client = b.build().context("building the HTTP client")?;
    let url = format!("{}/v1/fleet", args.server.trim_end_matches('/'));
    let mut req = client.get(&url);
    if let Some(f) = &args.token_file {
        let token =
            std::fs::read_to_string(f).with_context(|| format!("--token-file {}", f.display()))?;
        req = req.bearer_auth(token.trim());
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!("GET {url}: HTTP {status}: {}", body.trim());
    }
    resp.json::<FleetView>()
        .await
        .with_context(|| format!("GET {url}: unexpected response"))
}

/// Runs `regent rollout`; returns the exit code.
pub fn run(args: RolloutArgs) -> anyhow::Result<u8> {
    let RolloutCommand::Status(args) = args.command;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let view = rt.block_on(fetch_fleet(&args))?;
    let rows = progress(&view, args.bundle.as_deref(), args.revision.as_deref());
    if rows.is_empty() {
        anyhow::bail!("the server publishes no bundle and no sidecar reports one");
    }
    let mut all = true;
    let mut reported = 0;
    for p in &rows {
        let Some(rev) = &p.revision else {
            println!(
                "{}: no revision given and none published; {} sidecars report it",
                p.bundle, p.total
            );
            all = false;
            continue;
        };
        if p.total == 0 && args.bundle.is_none() {
            // Not every published bundle is used by this fleet; only an explicit --bundle
            // makes "nobody runs it" a failure.
            println!("{}: no sidecar reports this bundle", p.bundle);
            continue;
        }
        reported += 1;
        let pct = if p.total == 0 {
            0.0
        } else {
            100.0 * p.on_revision as f64 / p.total as f64
        };
        println!(
            "{}: {}/{} sidecars run {} ({pct:.0}%)",
            p.bundle,
            p.on_revision,
            p.total,
            short(rev)
        );
        for (id, running) in &p.behind {
            println!("  {id}: {}", short(running));
        }
        all &= p.complete();
    }
    if reported == 0 {
        all = false;
    }
    // Not part of the rollout's verdict, but a fleet refusing tokens is what its operator
    // needs to see next to it.
    for (issuer, k) in &view.jwks {
        if k.unavailable > 0 || k.failing > 0 {
            let oldest = k
                .max_age_seconds
                .map_or_else(|| "none yet".to_string(), |a| format!("{a} s"));
            println!(
                "key set {issuer}: {}/{} sidecars refuse its tokens, {} fail to refresh (oldest keys: {oldest})",
                k.unavailable, k.sidecars, k.failing
            );
        }
    }
    Ok(if all { 0 } else { EXIT_INCOMPLETE })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fleet::{BundleRollout, ReportedBundle, SidecarView};
    use std::collections::BTreeMap;

    fn sidecar(id: &str, rev: &str) -> SidecarView {
        SidecarView {
            id: id.into(),
            labels: BTreeMap::new(),
            last_report: String::new(),
            age_seconds: 0,
            bundles: BTreeMap::from([(
                "authz".to_string(),
                ReportedBundle {
                    name: "authz".into(),
                    active_revision: rev.into(),
                    ..Default::default()
                },
            )]),
            jwks: BTreeMap::new(),
        }
    }

    #[test]
    fn progress_defaults_to_the_published_revision() {
        let view = FleetView {
            ttl_seconds: 60,
            sidecars: vec![sidecar("a", "r2"), sidecar("b", "r1")],
            bundles: BTreeMap::from([(
                "authz".to_string(),
                BundleRollout {
                    published_revision: Some("r2".into()),
                    ..Default::default()
                },
            )]),
            jwks: BTreeMap::new(),
        };
        let p = progress(&view, None, None);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].on_revision, p[0].total), (1, 2));
        assert_eq!(p[0].behind, vec![("b".to_string(), "r1".to_string())]);
        assert!(!p[0].complete());
        let p = progress(&view, Some("authz"), Some("r1"));
        assert_eq!(p[0].on_revision, 1);
        let p = progress(&view, Some("other"), None);
        assert!(!p[0].complete());
    }
}
