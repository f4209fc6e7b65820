//! `regent verify`: checks a bundle's signature the way the sidecar does before activating it:
//! the signature first, then only the files it lists are parsed (a hostile archive costs no more
//! here than in a sidecar).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use regent_bundle::signing::{
    read_verifying_key, Keyring, VerifiedSignature, VerifyError, VerifyOptions, VerifyingKey,
};
use regent_bundle::{Bundle, ReadError, UnpackLimits};

use super::build::display_revision;

/// Arguments of `regent verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Bundle archive (`.tar.gz`).
    pub bundle: PathBuf,
    /// Trusted public key (PEM: SPKI for Ed25519/RSA/EC, or PKCS#1 RSA) as `FILE:KID`, repeatable. A key given as plain `FILE` is
    /// tried for whatever key id the bundle names.
    #[arg(long = "key", value_name = "PUBLIC_KEY[:KID]", required = true)]
    pub keys: Vec<String>,
    /// Required `scope` claim (without it, a signature carrying a scope is refused, as in OPA).
    #[arg(long)]
    pub scope: Option<String>,
}

/// Runs `regent verify`; returns the exit code (0 valid, 1 refused or unreadable).
pub fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    let mut keyring = Keyring::new();
    let mut anonymous: Vec<(String, VerifyingKey)> = Vec::new();
    for spec in &args.keys {
        let (file, kid) = split_key_spec(spec);
        let key = read_verifying_key(Path::new(file))?;
        match kid {
            Some(kid) => keyring.insert(kid, key),
            None => anonymous.push((file.to_string(), key)),
        }
    }
    let bytes =
        std::fs::read(&args.bundle).with_context(|| format!("bundle {}", args.bundle.display()))?;
    let opts = VerifyOptions {
        scope: args.scope.clone(),
    };
    let (bundle, verified) = match read_verified(&bytes, &keyring, &anonymous, &opts) {
        Ok(v) => v,
        Err(ReadError::Signature(e)) => {
            bail!("{}: signature refused: {e}", args.bundle.display())
        }
        Err(ReadError::Bundle(e)) => {
            return Err(e).with_context(|| format!("bundle {}", args.bundle.display()))
        }
    };
    outln!("{}: signature OK", args.bundle.display());
    outln!("  revision: {}", display_revision(bundle.revision()));
    outln!("  roots: {:?}", bundle.manifest().effective_roots());
    outln!("  signed by: kid {:?}", verified.kid);
    if let Some(iat) = verified.iat {
        let when = chrono::DateTime::from_timestamp(iat, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "out of range".into());
        outln!("  signed at: {iat} ({when})");
    }
    if let Some(iss) = &verified.iss {
        outln!("  issuer: {iss}");
    }
    if let Some(scope) = &verified.scope {
        outln!("  scope: {scope}");
    }
    let files: Vec<_> = bundle.files().collect();
    outln!("  files ({}):", files.len());
    for (path, content) in files {
        outln!("    {path} ({} bytes)", content.len());
    }
    Ok(0)
}

/// `FILE` or `FILE:KID`. An existing file whose name contains `:` is taken whole.
fn split_key_spec(spec: &str) -> (&str, Option<&str>) {
    if Path::new(spec).is_file() {
        return (spec, None);
    }
    match spec.rsplit_once(':') {
        Some((file, kid)) if !file.is_empty() && !kid.is_empty() => (file, Some(kid)),
        _ => (spec, None),
    }
}

/// Reads the archive verified with the keys bound to a kid; when the bundle names a kid none of
/// them has, each key given without a kid is tried under that kid.
fn read_verified(
    bytes: &[u8],
    keyring: &Keyring,
    anonymous: &[(String, VerifyingKey)],
    opts: &VerifyOptions,
) -> Result<(Bundle, VerifiedSignature), ReadError> {
    let read = |ring: &Keyring| {
        Bundle::from_verified_tar_gz(bytes, &UnpackLimits::default(), ring, opts, None)
    };
    let first = read(keyring);
    let kid = match &first {
        Err(ReadError::Signature(VerifyError::UnknownKid(kid))) if !anonymous.is_empty() => {
            kid.clone()
        }
        _ => return first,
    };
    let mut last = first;
    for (_, key) in anonymous {
        let mut ring = keyring.clone();
        ring.insert(kid.clone(), key.clone());
        match read(&ring) {
            Ok(v) => return Ok(v),
            Err(e @ ReadError::Signature(VerifyError::BadSignature(_))) => last = Err(e),
            Err(e) => return Err(e),
        }
    }
    last
}
