//! `regent keygen`: a new signing key pair in PEM (PKCS#8 private, SPKI public), the same formats
//! `openssl genpkey` and `openssl pkey -pubout` produce: Ed25519 (the default), RSA, or ECDSA
//! P-256/P-384/P-521, chosen by the JWS algorithm the key will sign with.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use regent_bundle::signing::{self, Alg};

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
    /// JWS algorithm the key is for: EdDSA (Ed25519), RS256/RS384/RS512/PS256/PS384/PS512 (RSA,
    /// see --rsa-bits), ES256 (P-256), ES384 (P-384) or ES512 (P-521).
    #[arg(long, value_name = "ALG", default_value = "EdDSA")]
    pub alg: String,
    /// Modulus size of an RSA key (2048, 3072 or 4096).
    #[arg(long, value_name = "BITS", default_value_t = 2048)]
    pub rsa_bits: usize,
}

/// The algorithms keygen makes keys for, as listed in errors.
const ALGS: &str = "EdDSA, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or ES512";

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
    let alg = Alg::from_name(&args.alg)
        .filter(|a| !a.is_hmac())
        .with_context(|| {
            format!(
                "--alg {:?}: not a bundle signing algorithm ({ALGS})",
                args.alg
            )
        })?;
    let is_rsa = matches!(
        alg,
        Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512
    );
    if is_rsa && ![2048, 3072, 4096].contains(&args.rsa_bits) {
        bail!("--rsa-bits {}: use 2048, 3072 or 4096", args.rsa_bits);
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
    let (private_pem, public_pem) = generate(alg, args.rsa_bits)?;
    check_pair(&private_pem, &public_pem, alg)?;
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
    // PS* keys are RSA keys, which sign RS256 unless told otherwise; so are RS384/RS512.
    let alg_flag = if is_rsa && alg != Alg::RS256 {
        format!(" --signing-alg {alg}")
    } else {
        String::new()
    };
    outln!("algorithm:   {alg}");
    outln!(
        "sign with:   regent build DIR -o bundle.tar.gz --key {} --kid {name}{alg_flag}",
        private.display()
    );
    outln!(
        "verify with: regent verify bundle.tar.gz --key {}:{name}",
        public.display()
    );
    Ok(0)
}

/// A new key pair for `alg` as PEM strings: (PKCS#8 private, SPKI public).
fn generate(alg: Alg, rsa_bits: usize) -> anyhow::Result<(String, String)> {
    use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
    let mut rng = rand::rngs::OsRng;
    macro_rules! ec_pair {
        ($curve:ident) => {{
            let secret = $curve::SecretKey::random(&mut rng);
            let private = secret.to_pkcs8_pem(LineEnding::LF).context(concat!(
                "encoding the ",
                stringify!($curve),
                " private key"
            ))?;
            let public = secret
                .public_key()
                .to_public_key_pem(LineEnding::LF)
                .context(concat!("encoding the ", stringify!($curve), " public key"))?;
            (private.to_string(), public)
        }};
    }
    Ok(match alg {
        Alg::EdDSA => signing::generate_key_pem(),
        Alg::ES256 => ec_pair!(p256),
        Alg::ES384 => ec_pair!(p384),
        Alg::ES512 => ec_pair!(p521),
        Alg::HS256 | Alg::HS384 | Alg::HS512 => {
            bail!("{alg}: HMAC keys are shared secrets, not signing key pairs")
        }
        Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
            let key = rsa::RsaPrivateKey::new(&mut rng, rsa_bits)
                .with_context(|| format!("generating a {rsa_bits}-bit RSA key"))?;
            let private = key
                .to_pkcs8_pem(LineEnding::LF)
                .context("encoding the RSA private key")?;
            let public = key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .context("encoding the RSA public key")?;
            (private.to_string(), public)
        }
    })
}

/// Reads the new pair back the way `regent build` and `regent verify` will, so a key that would
/// not sign or verify with `alg` is never written.
fn check_pair(private_pem: &str, public_pem: &str, alg: Alg) -> anyhow::Result<()> {
    let key = signing::signing_key_from_pem(private_pem, "generated private key")?
        .with_alg(alg, "generated private key")?;
    let public = signing::verifying_key_from_pem(public_pem, "generated public key")?;
    let msg = b"regent keygen self-check";
    if !public.verify(alg, msg, &key.sign(msg).to_bytes()) {
        bail!("the generated {alg} key pair does not verify its own signature");
    }
    Ok(())
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
