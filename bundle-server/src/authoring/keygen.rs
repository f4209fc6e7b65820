//! `regent keygen`: a new Ed25519 signing key pair in PEM (PKCS#8 private, SPKI public), the same
//! formats `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout` produce.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Arguments of `regent keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Directory to write `NAME.key` (private, mode 0600) and `NAME.pub` (public) into; created if
    /// missing.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Base name of the two files; a good choice is the key id (`kid`) you will sign with.
    #[arg(long, default_value = "regent-signing")]
    pub name: String,
}

/// Runs `regent keygen`; returns the exit code (0, or 1 on any error, an existing file included).
pub fn run(args: KeygenArgs) -> anyhow::Result<u8> {
    let name = args.name.as_str();
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
    {
        bail!("--name {name:?}: must be a plain file name (no slash, not starting with a dot)");
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let private = args.out_dir.join(format!("{name}.key"));
    let public = args.out_dir.join(format!("{name}.pub"));
    for p in [&private, &public] {
        // `symlink_metadata` so that a dangling symlink also counts as existing.
        if p.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; refusing to overwrite a key (choose another --name or --out-dir)",
                p.display()
            );
        }
    }
    let (private_pem, public_pem) = regent_bundle::signing::generate_key_pem();
    if private_pem.is_empty() || public_pem.is_empty() {
        bail!("key generation produced an empty PEM");
    }
    write_new(&private, private_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, public_pem.as_bytes(), 0o644) {
        // Do not leave half a key pair behind.
        let _ = std::fs::remove_file(&private);
        return Err(e);
    }
    outln!(
        "private key: {} (keep it secret; mode 0600)",
        private.display()
    );
    outln!("public key:  {}", public.display());
    outln!(
        "sign with:   regent build DIR -o bundle.tar.gz --key {} --kid {name}",
        private.display()
    );
    outln!(
        "verify with: regent verify bundle.tar.gz --key {}:{name}",
        public.display()
    );
    Ok(0)
}

/// Creates a file that must not exist yet, with `mode` from the start (no window where a private
/// key is readable by others).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
