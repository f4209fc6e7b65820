//! `regent sign`: (re)signs an existing bundle archive.

use std::path::PathBuf;

use anyhow::Context;
use regent_bundle::signing::{read_signing_key, sign, SignClaims};
use regent_bundle::{Bundle, UnpackLimits, SIGNATURES_FILE};

use super::build::display_revision;
use super::files::{signing_time, write_atomic};

/// Arguments of `regent sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Bundle archive (`.tar.gz`) to sign.
    pub bundle: PathBuf,
    /// Ed25519 private key (PKCS#8 PEM).
    #[arg(long, value_name = "PRIVATE_KEY")]
    pub key: PathBuf,
    /// Key id written in the signature header.
    #[arg(long)]
    pub kid: String,
    /// `scope` claim.
    #[arg(long)]
    pub scope: Option<String>,
    /// `iss` claim.
    #[arg(long)]
    pub iss: Option<String>,
    /// `iat` claim, Unix seconds (default: `SOURCE_DATE_EPOCH` if set, else now).
    #[arg(long)]
    pub iat: Option<i64>,
    /// Output file (default: replace BUNDLE atomically).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Runs `regent sign`; returns the exit code (0, or 1 on any error).
pub fn run(args: SignArgs) -> anyhow::Result<u8> {
    if args.bundle.is_dir() {
        anyhow::bail!(
            "{} is a directory: build and sign it with `regent build DIR -o OUT --key K --kid ID`",
            args.bundle.display()
        );
    }
    let bytes =
        std::fs::read(&args.bundle).with_context(|| format!("bundle {}", args.bundle.display()))?;
    let mut bundle = Bundle::from_tar_gz(&bytes, &UnpackLimits::default())
        .with_context(|| format!("bundle {}", args.bundle.display()))?;
    let replaced = bundle.file(SIGNATURES_FILE).is_some();
    let key = read_signing_key(&args.key)?;
    let claims = SignClaims {
        iss: args.iss.clone(),
        scope: args.scope.clone(),
        iat: signing_time(args.iat)?,
    };
    sign(&mut bundle, &key, &args.kid, &claims)?;
    let out = args.output.as_ref().unwrap_or(&args.bundle);
    write_atomic(out, &bundle.to_tar_gz()?)?;
    outln!(
        "signed {} (revision {}) with kid {:?}{}",
        out.display(),
        display_revision(bundle.revision()),
        args.kid,
        if replaced {
            ", replacing its previous signature"
        } else {
            ""
        }
    );
    Ok(0)
}
