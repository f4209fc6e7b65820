//! Set-up shared by the scenarios.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use regent_e2e::envoy::{Envoy, EnvoyOptions};
use regent_e2e::harness::Harness;
use regent_e2e::jwt::Issuer;
use regent_e2e::ports::free_port;
use regent_e2e::sidecar::Sidecar;
use regent_e2e::upstreams::Upstream;

/// A harness for scenario `name`, finding binaries next to this crate's echo binary.
pub(crate) fn harness(name: &str) -> Result<Harness> {
    Harness::new(name, Path::new(env!("CARGO_BIN_EXE_regent-e2e-echo")))
}

/// The echo and Orders upstreams.
pub(crate) struct Upstreams {
    pub echo: Upstream,
    pub orders: Upstream,
}

pub(crate) async fn upstreams(h: &Harness) -> Result<Upstreams> {
    Ok(Upstreams {
        echo: Upstream::echo(h, free_port()?).await?,
        orders: Upstream::orders(h, free_port()?).await?,
    })
}

/// An Envoy in front of `sidecar` and the upstreams.
pub(crate) async fn envoy(
    h: &Harness,
    name: &str,
    sidecar: &Sidecar,
    ups: &Upstreams,
    failure_mode_allow: bool,
) -> Result<Envoy> {
    let mut opts = EnvoyOptions::free(sidecar.opts.grpc_port, ups.echo.port, ups.orders.port)?;
    opts.failure_mode_allow = failure_mode_allow;
    Envoy::start(h, name, opts).await
}

/// The e2e policy tree (e2e/testdata/policy) copied into the scenario's directory, with the
/// issuer's JWKS as bundle data at `data.jwt`.
pub(crate) fn policy_tree(h: &Harness, issuer: &Issuer) -> Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/policy");
    let dst = h.path("policy-src")?;
    regent_e2e::git::copy_tree(&src, &dst)?;
    std::fs::create_dir_all(dst.join("jwt"))?;
    std::fs::write(
        dst.join("jwt/data.json"),
        serde_json::to_string_pretty(&issuer.bundle_data())?,
    )
    .context("writing jwt/data.json")?;
    Ok(dst)
}

/// An Ed25519 public key (SPKI PEM) written into the scenario's directory, for a keyring that
/// trusts a key nobody signs with.
pub(crate) fn unused_public_key(h: &Harness) -> Result<PathBuf> {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    let sk = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = sk
        .verifying_key()
        .to_public_key_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("encoding a public key: {e}"))?;
    h.write("unused-key.pub.pem", pem)
}

/// A reqwest client that never uses a proxy.
pub(crate) fn client() -> reqwest::Client {
    regent_e2e::http::client().expect("building an HTTP client")
}

/// Envoy, a sidecar running the e2e policy, and the upstreams (fields drop in this order).
pub(crate) struct PolicyStack {
    pub envoy: Envoy,
    pub sidecar: Sidecar,
    pub ups: Upstreams,
}

impl PolicyStack {
    /// Starts the stack with the e2e policy and `issuer`'s JWKS, and waits until it answers.
    pub(crate) async fn start(h: &Harness, issuer: &Issuer) -> Result<PolicyStack> {
        let policy = policy_tree(h, issuer)?;
        let ups = upstreams(h).await?;
        let mut opts = regent_e2e::sidecar::SidecarOptions::new()?;
        opts.local_bundle = Some(policy);
        let mut sidecar = Sidecar::start(h, "sidecar", opts).await?;
        sidecar
            .wait_ready(std::time::Duration::from_secs(30))
            .await?;
        let envoy = envoy(h, "envoy", &sidecar, &ups, false).await?;
        Ok(PolicyStack {
            envoy,
            sidecar,
            ups,
        })
    }
}

/// The policy side of the chain: a repository the test pushes to and `regent serve` following
/// it (told of pushes by a post-receive hook), plus the upstreams. Fields drop top to bottom.
pub(crate) struct Chain {
    pub server: regent_e2e::server::BundleServer,
    pub ups: Upstreams,
    pub repo: regent_e2e::git::PolicyRepo,
    pub public_key: PathBuf,
    pub seed_commit: String,
}

impl Chain {
    /// Seeds the repository with the e2e policy, starts the server and waits until it has
    /// processed the seed commit.
    pub(crate) async fn start(h: &Harness, issuer: &Issuer) -> Result<Chain> {
        let seed = policy_tree(h, issuer)?;
        Self::start_from(h, &seed, ".").await
    }

    /// As [`Chain::start`] with the repository seeded from `seed` and the bundle built from
    /// `bundle_dir` inside it.
    pub(crate) async fn start_from(h: &Harness, seed: &Path, bundle_dir: &str) -> Result<Chain> {
        use regent_e2e::server::{keygen, BundleServer};
        let repo = regent_e2e::git::PolicyRepo::create(&h.path("git")?, seed, "main")?;
        let (private, public_key) = keygen(h, &h.path("keys")?)?;
        let mut opts = BundleServer::options(h, &repo.bare, "main", &private)?;
        opts.bundle_dir = bundle_dir.to_string();
        let mut server = BundleServer::start(h, opts).await?;
        server.install_hook(&repo)?;
        let seed_commit = repo.head()?;
        server
            .wait_processed(&seed_commit, std::time::Duration::from_secs(60))
            .await?;
        let ups = upstreams(h).await?;
        Ok(Chain {
            server,
            ups,
            repo,
            public_key,
            seed_commit,
        })
    }

    /// Sidecar options syncing from this server, trusting its key, persisting bundles.
    pub(crate) fn sidecar_options(
        &self,
        h: &Harness,
    ) -> Result<regent_e2e::sidecar::SidecarOptions> {
        let mut opts = regent_e2e::sidecar::SidecarOptions::new()?;
        opts.bundle_url = Some(self.server.bundle_url());
        opts.keys = vec![(regent_e2e::server::KID.to_string(), self.public_key.clone())];
        opts.persist_dir = Some(h.path("sidecar-persist")?);
        opts.status_url = Some(self.server.status_report_url());
        Ok(opts)
    }
}

/// The whole chain with a sidecar syncing from the server and Envoy in front. Fields drop top
/// to bottom.
pub(crate) struct ServerStack {
    pub envoy: Envoy,
    pub sidecar: Sidecar,
    pub chain: Chain,
}

impl ServerStack {
    /// Starts everything with the e2e policy; returns once the sidecar runs the seed commit.
    pub(crate) async fn start(h: &Harness, issuer: &Issuer) -> Result<ServerStack> {
        let chain = Chain::start(h, issuer).await?;
        let mut sidecar = Sidecar::start(h, "sidecar", chain.sidecar_options(h)?).await?;
        sidecar
            .wait_revision(&chain.seed_commit, std::time::Duration::from_secs(60))
            .await?;
        let envoy = envoy(h, "envoy", &sidecar, &chain.ups, false).await?;
        Ok(ServerStack {
            envoy,
            sidecar,
            chain,
        })
    }
}
