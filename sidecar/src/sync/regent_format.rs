//! Bundles in regent-bundle's (OPA-compatible) format: safe unpack with limits, EdDSA/RSA/ECDSA
//! signatures checked against the configured keyring before any content is parsed, parse
//! budgets, rollback by signed `iat`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use regent_bundle::signing::{self, Keyring, VerifiedSignature, VerifyOptions};
use regent_bundle::{Bundle, ReadError, UnpackLimits};

use super::activate::{BundleFormat, PolicySink, Rules, SetActivator};
use super::runner::Refusal;
use super::SyncConfig;

/// [`BundleFormat`] implemented with regent-bundle.
pub struct RegentFormat {
    /// Swapped whole when the key files change (see [`crate::reload`]); each read loads it once,
    /// so a verification in progress finishes with the keyring it started with.
    keyring: Arc<ArcSwap<Keyring>>,
    verify: VerifyOptions,
    limits: UnpackLimits,
}

impl RegentFormat {
    /// Keyring, scope and limits from the sync configuration. Key files are read now; an
    /// unreadable or malformed key is an error naming its `sync.keys[i]` entry.
    pub fn from_config(cfg: &SyncConfig) -> anyhow::Result<Self> {
        Ok(RegentFormat {
            keyring: Arc::new(ArcSwap::from_pointee(keyring_from_config(cfg)?)),
            verify: VerifyOptions {
                scope: cfg.scope.clone(),
            },
            limits: UnpackLimits {
                max_compressed_bytes: cfg.http.max_bundle_bytes,
                ..UnpackLimits::default()
            },
        })
    }

    /// The keyring in force, shared: storing into it changes the keys the next read verifies with.
    pub fn keyring_handle(&self) -> Arc<ArcSwap<Keyring>> {
        Arc::clone(&self.keyring)
    }
}

/// Builds the whole keyring from `sync.keys[]`, reading the key files (blocking). An unreadable or
/// malformed key is an error naming its `sync.keys[i]` entry, and no keyring is returned, so a
/// reload with one bad file keeps every old key.
pub fn keyring_from_config(cfg: &SyncConfig) -> anyhow::Result<Keyring> {
    let mut keyring = Keyring::new();
    for (i, k) in cfg.keys.iter().enumerate() {
        let alg = match &k.algorithm {
            None => None,
            Some(name) => Some(signing::Alg::from_name(name).ok_or_else(|| {
                anyhow::anyhow!("sync.keys[{i}].algorithm: {name:?} is not a JWS algorithm name")
            })?),
        };
        let inserted = match (&k.public_key_file, &k.public_key) {
            (Some(path), _) => keyring.insert_file_with_alg(&k.kid, path, alg),
            (None, Some(pem)) => keyring.insert_pem_with_alg(&k.kid, pem, alg),
            (None, None) => anyhow::bail!(
                "sync.keys[{i}] (kid {:?}): one of public_key_file or public_key is required",
                k.kid
            ),
        };
        inserted.with_context(|| format!("sync.keys[{i}] (kid {:?})", k.kid))?;
    }
    Ok(keyring)
}

/// The key files of `sync.keys[]` (inline keys cannot change without a restart).
pub fn key_files(cfg: &SyncConfig) -> Vec<PathBuf> {
    cfg.keys
        .iter()
        .filter_map(|k| k.public_key_file.clone())
        .collect()
}

/// A [`crate::reload::Watcher`] that rebuilds the keyring from `cfg` when a key file changes and
/// stores it into `keyring` only if every key parsed.
pub fn keyring_watcher(cfg: &SyncConfig, keyring: Arc<ArcSwap<Keyring>>) -> crate::reload::Watcher {
    let cfg = cfg.clone();
    crate::reload::Watcher::new(
        "keyring",
        key_files(&cfg),
        Box::new(move || {
            let fresh = keyring_from_config(&cfg)?;
            keyring.store(Arc::new(fresh));
            Ok(())
        }),
    )
}

impl BundleFormat for RegentFormat {
    type Bundle = Bundle;
    type Signature = VerifiedSignature;

    /// Verified: [`Bundle::from_verified_tar_gz`], which checks the signature (and refuses files
    /// it does not list) before parsing anything. Unverified (`insecure_skip_verification`): the
    /// plain read, within the same unpack limits and parse budgets.
    fn read(
        &self,
        bytes: &[u8],
        previous: Option<&Bundle>,
        verify: bool,
    ) -> Result<(Bundle, Option<VerifiedSignature>), Refusal> {
        if !verify {
            return Bundle::from_tar_gz_after(bytes, &self.limits, previous)
                .map(|b| (b, None))
                .map_err(|e| Refusal::new("unpack", e.to_string()));
        }
        let keyring = self.keyring.load_full();
        Bundle::from_verified_tar_gz(bytes, &self.limits, &keyring, &self.verify, previous)
            .map(|(b, s)| (b, Some(s)))
            .map_err(|e| match e {
                ReadError::Bundle(e) => Refusal::new("unpack", e.to_string()),
                ReadError::Signature(e) => Refusal::new("signature", e.to_string()),
            })
    }

    fn revision(&self, bundle: &Bundle) -> String {
        bundle.revision().to_string()
    }

    fn roots(&self, bundle: &Bundle) -> Vec<String> {
        bundle.manifest().effective_roots()
    }

    fn check_not_rollback(
        &self,
        active: &VerifiedSignature,
        candidate: &VerifiedSignature,
    ) -> Result<(), Refusal> {
        signing::check_not_rollback(active, candidate)
            .map_err(|e| Refusal::new("rollback", e.to_string()))
    }

    fn key_id(&self, signature: &VerifiedSignature) -> Option<String> {
        Some(signature.kid.clone())
    }
}

/// The activation rules of the sync configuration.
pub fn rules_from_config(cfg: &SyncConfig) -> Rules {
    Rules {
        expected_roots: cfg
            .bundles
            .iter()
            .map(|b| (b.name.clone(), b.roots.clone()))
            .collect(),
        insecure_skip_verification: cfg.insecure_skip_verification,
        allow_rollback: cfg.allow_rollback,
    }
}

/// An activator for regent bundles that compiles and swaps through `sink`.
pub fn regent_activator<S: PolicySink<Bundle>>(
    cfg: &SyncConfig,
    sink: S,
) -> anyhow::Result<SetActivator<RegentFormat, S>> {
    Ok(SetActivator::new(
        RegentFormat::from_config(cfg)?,
        sink,
        rules_from_config(cfg),
    ))
}
