//! `identity.passport`: the keys and limits of passports, the short-lived internal JWTs an edge
//! sidecar mints in exchange for the user's token (`regent.passport.mint`) and a service's
//! sidecar verifies (`regent.passport.verify`); see `regent_policy::builtins::passport`.
//!
//! The key files are read at start and published in the policy crate's registry; a [`Watcher`]
//! re-reads them when they change (a Secret update), swapping the new keys in only when every
//! file parses. The replay window lives in the policy crate and is kept across reloads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use regent_policy::builtins::passport::{self, PassportConfig, Signer, TrustedKey};
use serde::Deserialize;

use super::config::IdentityConfigError;
use crate::reload::Watcher;

/// Default of `max_ttl_seconds`.
pub const DEFAULT_MAX_TTL_SECONDS: u64 = 300;
/// Largest `max_ttl_seconds` accepted: a passport is meant to outlive one request, not a session.
pub const MAX_MAX_TTL_SECONDS: u64 = 3600;
/// Default of `replay_cache_entries`.
pub const DEFAULT_REPLAY_CACHE_ENTRIES: usize = 100_000;
/// Largest `replay_cache_entries` accepted (an entry is about 100 bytes).
pub const MAX_REPLAY_CACHE_ENTRIES: usize = 10_000_000;
/// Default of `leeway_seconds`.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 5;
/// Largest `leeway_seconds` accepted.
pub const MAX_LEEWAY_SECONDS: u64 = 300;

/// `identity.passport`. Off unless `signing_key_file` or `trusted` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassportSettings {
    /// `iss` of the passports this sidecar mints.
    pub issuer: Option<String>,
    /// PKCS#8 PEM private key (Ed25519 or P-256) passports are signed with.
    pub signing_key_file: Option<PathBuf>,
    /// `kid` header of minted passports.
    pub key_id: Option<String>,
    /// Cap on a minted passport's lifetime, and on a verified one's `exp - iat`.
    pub max_ttl_seconds: u64,
    /// Issuers whose passports this sidecar accepts, with their public keys.
    pub trusted: Vec<TrustedIssuer>,
    /// Most passport ids remembered at once against replay.
    pub replay_cache_entries: usize,
    /// Slack on `exp`, `nbf` and `iat` for clocks that disagree.
    pub leeway_seconds: u64,
}

impl Default for PassportSettings {
    fn default() -> Self {
        PassportSettings {
            issuer: None,
            signing_key_file: None,
            key_id: None,
            max_ttl_seconds: DEFAULT_MAX_TTL_SECONDS,
            trusted: Vec::new(),
            replay_cache_entries: DEFAULT_REPLAY_CACHE_ENTRIES,
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
        }
    }
}

/// One trusted issuer's key (an issuer may be listed once per key, for rotation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The `iss` its passports carry.
    pub issuer: String,
    /// PEM `PUBLIC KEY` file (Ed25519 or P-256; several blocks allowed).
    pub public_key_file: PathBuf,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> IdentityConfigError {
    IdentityConfigError {
        key: format!("passport.{}", key.into()),
        message: message.into(),
    }
}

impl PassportSettings {
    /// Whether anything is configured: a signing key or a trusted issuer.
    pub fn enabled(&self) -> bool {
        self.signing_key_file.is_some() || !self.trusted.is_empty()
    }

    /// Checks what can be checked without reading the key files.
    pub fn validate(&self) -> Result<(), IdentityConfigError> {
        match (&self.signing_key_file, &self.issuer) {
            (Some(_), None) => return Err(err("issuer", "required with signing_key_file")),
            (Some(_), Some(i)) if i.trim().is_empty() => {
                return Err(err("issuer", "must not be empty"))
            }
            (None, Some(_)) => {
                return Err(err(
                    "issuer",
                    "set without signing_key_file: nothing would sign",
                ))
            }
            _ => {}
        }
        if self.key_id.is_some() && self.signing_key_file.is_none() {
            return Err(err("key_id", "set without signing_key_file"));
        }
        if !(1..=MAX_MAX_TTL_SECONDS).contains(&self.max_ttl_seconds) {
            return Err(err(
                "max_ttl_seconds",
                format!("1 to {MAX_MAX_TTL_SECONDS}, got {}", self.max_ttl_seconds),
            ));
        }
        if !(1..=MAX_REPLAY_CACHE_ENTRIES).contains(&self.replay_cache_entries) {
            return Err(err(
                "replay_cache_entries",
                format!(
                    "1 to {MAX_REPLAY_CACHE_ENTRIES}, got {}",
                    self.replay_cache_entries
                ),
            ));
        }
        if self.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(err(
                "leeway_seconds",
                format!("at most {MAX_LEEWAY_SECONDS}, got {}", self.leeway_seconds),
            ));
        }
        for (i, t) in self.trusted.iter().enumerate() {
            if t.issuer.trim().is_empty() {
                return Err(err(format!("trusted[{i}].issuer"), "must not be empty"));
            }
            if t.public_key_file.as_os_str().is_empty() {
                return Err(err(
                    format!("trusted[{i}].public_key_file"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }

    /// Every key file this configuration reads, for the reload watcher.
    pub fn key_files(&self) -> Vec<PathBuf> {
        self.signing_key_file
            .iter()
            .cloned()
            .chain(self.trusted.iter().map(|t| t.public_key_file.clone()))
            .collect()
    }

    /// Reads and parses every key file (blocking). Errors name the key and the file.
    pub fn load(&self) -> anyhow::Result<PassportConfig> {
        let signer = match (&self.signing_key_file, &self.issuer) {
            (Some(path), Some(issuer)) => {
                let pem = read(path, "identity.passport.signing_key_file")?;
                let what = format!("identity.passport.signing_key_file {}", path.display());
                Some(Signer::from_pem(issuer, &pem, self.key_id.clone(), &what)?)
            }
            _ => None,
        };
        let mut trusted = Vec::new();
        for (i, t) in self.trusted.iter().enumerate() {
            let key = format!("identity.passport.trusted[{i}].public_key_file");
            let pem = read(&t.public_key_file, &key)?;
            let what = format!("{key} {}", t.public_key_file.display());
            trusted.extend(TrustedKey::from_pem(&t.issuer, &pem, &what)?);
        }
        Ok(PassportConfig {
            signer,
            trusted,
            max_ttl_seconds: self.max_ttl_seconds,
            leeway_seconds: self.leeway_seconds,
            replay_cache_entries: self.replay_cache_entries,
        })
    }
}

fn read(path: &Path, key: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{key}: reading {}", path.display()))
}

/// The published passport configuration of one sidecar.
pub struct PassportHandle {
    installation: u64,
    settings: PassportSettings,
}

impl PassportHandle {
    /// Loads the key files of `settings` (blocking) and publishes them.
    pub fn start(
        settings: &PassportSettings,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<PassportHandle> {
        let config = settings.load()?;
        tracing::info!(
            signs = config.signer.is_some(),
            trusted_keys = config.trusted.len(),
            "passport keys loaded"
        );
        // A second sidecar in one process (tests) finds the collector registered: its counters
        // are process-wide anyway.
        if let Err(e) = registry.register(Box::new(PassportCollector::new()?)) {
            if !matches!(e, prometheus::Error::AlreadyReg) {
                return Err(e).context("registering the passport metrics");
            }
        }
        Ok(PassportHandle {
            installation: passport::install(config),
            settings: settings.clone(),
        })
    }

    /// A watcher that re-reads the key files when they change. Fingerprints them now
    /// (blocking): call right after [`PassportHandle::start`].
    pub fn watcher(&self) -> Watcher {
        let (settings, installation) = (self.settings.clone(), self.installation);
        Watcher::new(
            "passport_keys",
            settings.key_files(),
            Box::new(move || {
                let config = settings.load()?;
                if !passport::reload(installation, config) {
                    anyhow::bail!("the passport configuration was replaced by another owner");
                }
                Ok(())
            }),
        )
    }

    /// Withdraws the keys: both builtins become undefined.
    pub fn shutdown(&self) {
        passport::uninstall(self.installation);
    }
}

/// `regent_passport_total{result}`, read from the builtins' counters at scrape time.
struct PassportCollector {
    desc: Desc,
}

impl PassportCollector {
    fn new() -> prometheus::Result<Self> {
        Ok(PassportCollector {
            desc: Desc::new(
                "regent_passport_total".into(),
                "Passports by result: minted, verified, refused (issuer, signature, audience, \
                 times or form), replay, replay_cache_full (refused: the replay window was full)."
                    .into(),
                vec!["result".into()],
                HashMap::new(),
            )?,
        })
    }
}

impl Collector for PassportCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = passport::stats();
        let family = crate::metrics::counter_family(
            &self.desc,
            "result",
            &[
                ("minted", s.minted),
                ("verified", s.verified),
                ("refused", s.refused),
                ("replay", s.replays),
                ("replay_cache_full", s.replay_cache_full),
            ],
        );
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<PassportSettings, String> {
        let s: PassportSettings = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn defaults_apply_and_an_empty_section_is_off() {
        let s = parse("{}").unwrap();
        assert!(!s.enabled());
        assert_eq!(s.max_ttl_seconds, 300);
        assert_eq!(s.replay_cache_entries, 100_000);
        assert_eq!(s.leeway_seconds, 5);
        let s = parse("trusted: [{issuer: edge, public_key_file: /k.pem}]").unwrap();
        assert!(s.enabled());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (yaml, needle) in [
            (
                "signing_key_file: /k.pem",
                "identity.passport.issuer: required",
            ),
            ("issuer: edge", "identity.passport.issuer: set without"),
            (
                "{issuer: '', signing_key_file: /k}",
                "identity.passport.issuer: must not",
            ),
            ("key_id: k1", "identity.passport.key_id"),
            ("max_ttl_seconds: 0", "identity.passport.max_ttl_seconds"),
            (
                "max_ttl_seconds: 86400",
                "identity.passport.max_ttl_seconds",
            ),
            (
                "replay_cache_entries: 0",
                "identity.passport.replay_cache_entries",
            ),
            ("leeway_seconds: 3600", "identity.passport.leeway_seconds"),
            (
                "trusted: [{issuer: '', public_key_file: /k}]",
                "identity.passport.trusted[0].issuer",
            ),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
        let e = parse("trusted: [{issuer: a}]").unwrap_err();
        assert!(e.contains("public_key_file"), "{e}");
    }

    #[test]
    fn unreadable_or_unusable_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let s = PassportSettings {
            trusted: vec![TrustedIssuer {
                issuer: "edge".into(),
                public_key_file: missing.clone(),
            }],
            ..PassportSettings::default()
        };
        let e = format!("{:#}", s.load().err().expect("refused"));
        assert!(
            e.contains("identity.passport.trusted[0].public_key_file")
                && e.contains(&missing.display().to_string()),
            "{e}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a key").unwrap();
        let s = PassportSettings {
            issuer: Some("edge".into()),
            signing_key_file: Some(garbage.clone()),
            ..PassportSettings::default()
        };
        let e = format!("{:#}", s.load().err().expect("refused"));
        assert!(
            e.contains("identity.passport.signing_key_file")
                && e.contains(&garbage.display().to_string()),
            "{e}"
        );
    }
}
