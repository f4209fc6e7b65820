//! `regent build`: a deterministic bundle (`.tar.gz`) from a policy directory, compile-checked and
//! optionally signed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use regent_bundle::signing::{sign, SignClaims};
use regent_bundle::{BuildOptions, Bundle, SIGNATURES_FILE};
use regent_policy::load::LOCAL_BUNDLE_NAME;
use regent_policy::{ActivePolicy, EngineChoice, PolicySettings};
use sha2::Digest;

use super::engine::{policy_engine, rule_from_path};
use super::files::{signing_time, write_atomic};

/// Arguments of `regent build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Policy directory: `.rego` modules (`*_test.rego` left out), `data.json`/`data.yaml`, and an
    /// optional `.manifest`.
    pub dir: PathBuf,
    /// Output file.
    #[arg(short, long, default_value = "bundle.tar.gz")]
    pub output: PathBuf,
    /// Manifest revision (the bundle server uses the commit SHA).
    #[arg(long)]
    pub revision: Option<String>,
    /// Manifest root (repeatable); replaces the roots of the directory's `.manifest`.
    #[arg(long = "root", value_name = "ROOT")]
    pub roots: Vec<String>,
    /// Also check that the sidecar can activate the bundle with this decision path (repeatable):
    /// the rule exists, compiles and calls no unknown function.
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Sign with this private key (PEM; Ed25519, RSA 2048+ or EC P-256/P-384/P-521, as for
    /// `regent sign`).
    #[arg(long, requires = "kid", value_name = "PRIVATE_KEY")]
    pub key: Option<PathBuf>,
    /// JWS algorithm (default: EdDSA for Ed25519, RS256 for RSA, ES256/ES384/ES512 by curve).
    #[arg(long, requires = "key", value_name = "ALG")]
    pub signing_alg: Option<String>,
    /// Key id written in the signature header; verifiers select the public key by it.
    #[arg(long, requires = "key")]
    pub kid: Option<String>,
    /// `scope` claim (verifiers configured with a scope require it to match exactly).
    #[arg(long, requires = "key")]
    pub scope: Option<String>,
    /// `iss` claim.
    #[arg(long, requires = "key")]
    pub iss: Option<String>,
    /// `iat` claim, Unix seconds (default: `SOURCE_DATE_EPOCH` if set, else now). Sidecars refuse a
    /// bundle signed before the one they run, so only pin it for reproducible builds.
    #[arg(long, requires = "key")]
    pub iat: Option<i64>,
}

/// Runs `regent build`; returns the exit code (0, or 1 on any error).
pub fn run(args: BuildArgs) -> anyhow::Result<u8> {
    let opts = BuildOptions {
        include_tests: false,
        revision: args.revision.clone(),
        roots: (!args.roots.is_empty()).then(|| args.roots.clone()),
    };
    let mut bundle = Bundle::from_dir(&args.dir, &opts)
        .with_context(|| format!("reading policy directory {}", args.dir.display()))?;
    if bundle.file(SIGNATURES_FILE).is_some() {
        // A signature copied from elsewhere never matches a fresh build.
        eprintln!(
            "regent: warning: ignoring {}/{SIGNATURES_FILE}",
            args.dir.display()
        );
        let files: BTreeMap<String, Vec<u8>> = bundle
            .files()
            .filter(|(p, _)| *p != SIGNATURES_FILE)
            .map(|(p, b)| (p.to_string(), b.to_vec()))
            .collect();
        bundle = Bundle::from_files(files)?;
    }
    policy_engine(&bundle).context("compile check failed")?;
    for path in &args.paths {
        check_decision_path(&bundle, path)?;
    }
    let signer = match (&args.key, &args.kid) {
        (Some(key_path), Some(kid)) => {
            let key = super::sign::load_signing_key(key_path, args.signing_alg.as_deref())?;
            let claims = SignClaims {
                iss: args.iss.clone(),
                scope: args.scope.clone(),
                iat: signing_time(args.iat)?,
            };
            sign(&mut bundle, &key, kid, &claims)?;
            Some(kid.clone())
        }
        _ => None,
    };
    let bytes = bundle.to_tar_gz()?;
    write_atomic(&args.output, &bytes)?;
    outln!("wrote {}", args.output.display());
    outln!("  revision: {}", display_revision(bundle.revision()));
    outln!("  roots: {:?}", bundle.manifest().effective_roots());
    outln!(
        "  files: {}",
        bundle
            .files()
            .map(|(p, _)| p)
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!(
        "  size: {} bytes, sha256 {}",
        bytes.len(),
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    match signer {
        Some(kid) => outln!("  signed: kid {kid:?}"),
        None => outln!("  signed: no (sidecars refuse unsigned bundles; use --key and --kid)"),
    }
    Ok(0)
}

pub(crate) fn display_revision(r: &str) -> &str {
    if r.is_empty() {
        "(none)"
    } else {
        r
    }
}

/// Compiles the bundle exactly as a sidecar activating it with `policy.path = path` would.
fn check_decision_path(bundle: &Bundle, path: &str) -> anyhow::Result<()> {
    let settings = PolicySettings {
        rule: rule_from_path(path)?,
        engine: EngineChoice::Auto,
        eval_timeout: Duration::from_secs(5),
        ..PolicySettings::default()
    };
    ActivePolicy::compile(
        &[(LOCAL_BUNDLE_NAME.to_string(), Arc::new(bundle.clone()))],
        &settings,
    )
    .with_context(|| {
        format!("decision path {path:?}: the sidecar could not activate this bundle")
    })?;
    Ok(())
}
