//! The webhook's serving certificate, re-read when its files change.
//!
//! cert-manager renews the certificate into the same Secret and the kubelet swaps the mounted
//! files; the webhook picks the new pair up without a restart. A pair that fails to load (e.g.
//! read half-way through the swap) is ignored and the previous one stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, Context};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate/key pair loaded from PEM files, reloadable.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The PEM bytes the key was built from, to notice changes.
    source: (Vec<u8>, Vec<u8>),
}

impl ReloadingCert {
    /// Loads the pair; fails with the file and the reason.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Self> {
        let loaded = load_pair(cert_path, key_path, &provider)?;
        Ok(ReloadingCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current: RwLock::new(loaded),
        })
    }

    /// Re-reads the files; returns true when a new pair was activated. On error the previous pair
    /// stays active.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let cert = read(&self.cert_path)?;
        let key = read(&self.key_path)?;
        {
            let current = self
                .current
                .read()
                .map_err(|_| anyhow!("certificate lock poisoned"))?;
            if current.source.0 == cert && current.source.1 == key {
                return Ok(false);
            }
        }
        let loaded = build(&self.cert_path, &self.key_path, cert, key, &self.provider)?;
        let mut current = self
            .current
            .write()
            .map_err(|_| anyhow!("certificate lock poisoned"))?;
        *current = loaded;
        Ok(true)
    }

    /// The certificate chain in use (DER), leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .map(|c| c.key.cert.clone())
            .unwrap_or_default()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.key.clone())
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<Loaded> {
    let cert = read(cert_path)?;
    let key = read(key_path)?;
    build(cert_path, key_path, cert, key, provider)
}

fn build(
    cert_path: &Path,
    key_path: &Path,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    provider: &CryptoProvider,
) -> anyhow::Result<Loaded> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert_path.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate found", cert_path.display());
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("{}: not a PEM private key", key_path.display()))?
        .ok_or_else(|| anyhow!("{}: no private key found", key_path.display()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| anyhow!("{}: unsupported private key: {e}", key_path.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        anyhow!(
            "{} and {} do not belong together: {e}",
            cert_path.display(),
            key_path.display()
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        source: (cert_pem, key_pem),
    })
}
