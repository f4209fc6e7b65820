//! `regent sign`: (re)signs an existing bundle archive.

use std::path::PathBuf;

use anyhow::Context;
use regent_bundle::signing::{read_signing_key, sign, Alg, SignClaims, SigningKey};
use regent_bundle::{Bundle, UnpackLimits, SIGNATURES_FILE};

use super::build::display_revision;
use super::files::{signing_time, write_atomic};

/// Arguments of `regent sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Bundle archive (`.tar.gz`) to sign.
    pub bundle: PathBuf,
    /// Private key (PEM): PKCS#8 Ed25519, RSA (2048+ bits) or EC P-256/P-384/P-521, or PKCS#1
    /// RSA.
    #[arg(long, value_name = "PRIVATE_KEY")]
    pub key: PathBuf,
    /// JWS algorithm (default: EdDSA for Ed25519, RS256 for RSA, ES256/ES384/ES512 by curve).
    /// RSA keys also take RS384, RS512, PS256, PS384, PS512.
    #[arg(long, value_name = "ALG")]
    pub signing_alg: Option<String>,
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
    let key = load_signing_key(&args.key, args.signing_alg.as_deref())?;
    let claims = SignClaims {
        iss: args.iss.clone(),
        scope: args.scope.clone(),
        iat: signing_time(args.iat)?,
    };
    sign(&mut bundle, &key, &args.kid, &claims)?;
    let out = args.output.as_ref().unwrap_or(&args.bundle);
    write_atomic(out, &bundle.to_tar_gz()?)?;
    outln!(
        "signed {} (revision {}) with kid {:?} ({}){}",
        out.display(),
        display_revision(bundle.revision()),
        args.kid,
        key.alg(),
        if replaced {
            ", replacing its previous signature"
        } else {
            ""
        }
    );
    Ok(0)
}

/// Reads a private key and sets its JWS algorithm: `alg` when given (refused when it does not fit
/// the key, and for HMAC and `none`), else the key's default.
pub(crate) fn load_signing_key(
    path: &std::path::Path,
    alg: Option<&str>,
) -> anyhow::Result<SigningKey> {
    let key = read_signing_key(path)?;
    let Some(name) = alg else {
        return Ok(key);
    };
    let alg = Alg::from_name(name).filter(|a| !a.is_hmac()).ok_or_else(|| {
        anyhow::anyhow!(
            "--signing-alg {name:?}: not a bundle signing algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA)"
        )
    })?;
    Ok(key.with_alg(alg, &format!("--signing-alg with key {}", path.display()))?)
}
