//! The `identity:` configuration section: remote key sets (JWKS) of identity providers, and
//! passports (`passport`, see `super::passport`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::passport::PassportSettings;

/// `identity:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Key sets fetched from identity providers, one per issuer.
    pub jwks: Vec<JwksSource>,
    /// Where the last good key sets are kept (in `jwks/`) so a restart with a provider down still
    /// verifies. Default: `sync.persist_dir`; neither set disables persistence.
    pub persist_dir: Option<PathBuf>,
    /// Passports: minting at the edge, verifying at a service. Off unless keys are configured.
    pub passport: PassportSettings,
}

/// Default of `refresh_seconds`.
pub const DEFAULT_REFRESH_SECONDS: u64 = 300;
/// Default of `min_refresh_interval_seconds`.
pub const DEFAULT_MIN_REFRESH_INTERVAL_SECONDS: u64 = 10;
/// Default of `max_stale_seconds`.
pub const DEFAULT_MAX_STALE_SECONDS: u64 = 86_400;
/// Default of `timeout_seconds`.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 5;
/// Default of `max_bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;
/// Default of `refresh_wait_ms`: within the 0.5 s ext_authz timeout the deployment guide sets.
pub const DEFAULT_REFRESH_WAIT_MS: u64 = 250;
/// Largest `refresh_wait_ms` accepted.
pub const MAX_REFRESH_WAIT_MS: u64 = 30_000;
/// Largest `max_bytes` accepted: a key set is a few kilobytes.
pub const MAX_MAX_BYTES: u64 = 16 << 20;

/// One issuer's key set: `jwks_url`, or `discovery_url` (OIDC discovery, whose `jwks_uri` is
/// read).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksSource {
    /// The issuer: the name policies give as `jwks_issuer` / `regent.jwks(issuer)`, and the `iss`
    /// its tokens must carry unless the policy's `iss` constraint says otherwise.
    pub issuer: String,
    /// URL of the JWKS document.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// URL of the OpenID Provider Configuration (`.well-known/openid-configuration`).
    #[serde(default)]
    pub discovery_url: Option<String>,
    /// Period of the background refresh.
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u64,
    /// Shortest time between two fetches caused by unknown `kid`s (or by retries after errors).
    #[serde(default = "default_min_refresh")]
    pub min_refresh_interval_seconds: u64,
    /// How long after its last successful fetch a key set is still used while refreshes fail;
    /// beyond it the set is dropped and its tokens are refused.
    #[serde(default = "default_max_stale")]
    pub max_stale_seconds: u64,
    /// Longest one request to the provider may take, connect to last byte.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// PEM CA bundle trusted in addition to the built-in web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Largest JWKS (and discovery document) accepted, enforced while reading.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// How long a Check whose token names a `kid` not in the set (or that finds no usable set)
    /// waits for the refresh it causes, when that refresh can start at once; 0: never waits.
    #[serde(default = "default_refresh_wait")]
    pub refresh_wait_ms: u64,
}

fn default_refresh() -> u64 {
    DEFAULT_REFRESH_SECONDS
}
fn default_min_refresh() -> u64 {
    DEFAULT_MIN_REFRESH_INTERVAL_SECONDS
}
fn default_max_stale() -> u64 {
    DEFAULT_MAX_STALE_SECONDS
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECONDS
}
fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}
fn default_refresh_wait() -> u64 {
    DEFAULT_REFRESH_WAIT_MS
}

/// A value of the `identity:` section that cannot work, with the key it concerns.
#[derive(Debug, thiserror::Error)]
#[error("identity.{key}: {message}")]
pub struct IdentityConfigError {
    /// Dotted key path below `identity.`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> IdentityConfigError {
    IdentityConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// Checks a provider URL: http(s), and https unless the host is a loopback address (tests and
/// node-local proxies), since a key set fetched in the clear lets anyone on the path sign tokens.
pub(crate) fn check_provider_url(raw: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(raw).map_err(|e| format!("invalid URL {raw:?}: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback(&parsed) => Ok(parsed),
        "http" => Err(format!(
            "{raw:?}: https is required (plain http only to 127.0.0.1, ::1 or localhost)"
        )),
        other => Err(format!("URL scheme must be https, got {other:?}")),
    }
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl IdentityConfig {
    /// Checks everything that can be checked without the network (the CA files are read at
    /// start).
    pub fn validate(&self) -> Result<(), IdentityConfigError> {
        let mut issuers = BTreeSet::new();
        for (i, s) in self.jwks.iter().enumerate() {
            let key = |k: &str| format!("jwks[{i}].{k}");
            if s.issuer.trim().is_empty() {
                return Err(err(key("issuer"), "must not be empty"));
            }
            if !issuers.insert(s.issuer.as_str()) {
                return Err(err(
                    key("issuer"),
                    format!("duplicate issuer {:?}", s.issuer),
                ));
            }
            match (&s.jwks_url, &s.discovery_url) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        format!("jwks[{i}]"),
                        "give jwks_url or discovery_url, not both",
                    ))
                }
                (None, None) => {
                    return Err(err(
                        format!("jwks[{i}]"),
                        "one of jwks_url or discovery_url is required",
                    ))
                }
                (Some(u), None) => {
                    check_provider_url(u).map_err(|m| err(key("jwks_url"), m))?;
                }
                (None, Some(u)) => {
                    check_provider_url(u).map_err(|m| err(key("discovery_url"), m))?;
                }
            }
            for (name, v) in [
                ("refresh_seconds", s.refresh_seconds),
                (
                    "min_refresh_interval_seconds",
                    s.min_refresh_interval_seconds,
                ),
                ("max_stale_seconds", s.max_stale_seconds),
                ("timeout_seconds", s.timeout_seconds),
                ("max_bytes", s.max_bytes),
            ] {
                if v == 0 {
                    return Err(err(key(name), "must be at least 1"));
                }
            }
            if s.min_refresh_interval_seconds > s.refresh_seconds {
                return Err(err(
                    key("min_refresh_interval_seconds"),
                    format!(
                        "{} is greater than refresh_seconds ({})",
                        s.min_refresh_interval_seconds, s.refresh_seconds
                    ),
                ));
            }
            if s.max_stale_seconds < s.refresh_seconds {
                return Err(err(
                    key("max_stale_seconds"),
                    format!(
                        "{} is less than refresh_seconds ({}): the key set would lapse between two refreshes",
                        s.max_stale_seconds, s.refresh_seconds
                    ),
                ));
            }
            if s.refresh_wait_ms > MAX_REFRESH_WAIT_MS {
                return Err(err(
                    key("refresh_wait_ms"),
                    format!("at most {MAX_REFRESH_WAIT_MS}, got {}", s.refresh_wait_ms),
                ));
            }
            if s.max_bytes > MAX_MAX_BYTES {
                return Err(err(
                    key("max_bytes"),
                    format!("at most {MAX_MAX_BYTES}, got {}", s.max_bytes),
                ));
            }
        }
        self.passport.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<IdentityConfig, String> {
        let cfg: IdentityConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn defaults_apply() {
        let c = parse("jwks: [{issuer: 'https://idp', jwks_url: 'https://idp/keys'}]").unwrap();
        let s = &c.jwks[0];
        assert_eq!(s.refresh_seconds, 300);
        assert_eq!(s.min_refresh_interval_seconds, 10);
        assert_eq!(s.max_stale_seconds, 86_400);
        assert_eq!(s.timeout_seconds, 5);
        assert_eq!(s.max_bytes, 1 << 20);
        assert!(c.persist_dir.is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (yaml, needle) in [
            ("jwks: [{issuer: a}]", "identity.jwks[0]: one of jwks_url"),
            (
                "jwks: [{issuer: a, jwks_url: 'https://x', discovery_url: 'https://y'}]",
                "identity.jwks[0]: give jwks_url",
            ),
            (
                "jwks: [{issuer: a, jwks_url: 'http://idp.example/keys'}]",
                "identity.jwks[0].jwks_url: \"http://idp.example/keys\": https is required",
            ),
            (
                "jwks: [{issuer: a, discovery_url: 'ftp://x'}]",
                "identity.jwks[0].discovery_url",
            ),
            (
                "jwks: [{issuer: a, jwks_url: 'https://x'}, {issuer: a, jwks_url: 'https://y'}]",
                "identity.jwks[1].issuer: duplicate",
            ),
            (
                "jwks: [{issuer: '', jwks_url: 'https://x'}]",
                "identity.jwks[0].issuer",
            ),
            (
                "jwks: [{issuer: a, jwks_url: 'https://x', timeout_seconds: 0}]",
                "identity.jwks[0].timeout_seconds",
            ),
            (
                "jwks: [{issuer: a, jwks_url: 'https://x', refresh_seconds: 5, min_refresh_interval_seconds: 6}]",
                "identity.jwks[0].min_refresh_interval_seconds",
            ),
            (
                "jwks: [{issuer: a, jwks_url: 'https://x', max_stale_seconds: 10}]",
                "identity.jwks[0].max_stale_seconds",
            ),
            (
                "jwks: [{issuer: a, jwks_url: 'https://x', max_bytes: 999999999}]",
                "identity.jwks[0].max_bytes",
            ),
            (
                "jwks: [{issuer: a, jwks_url: 'https://x', refresh_wait_ms: 60000}]",
                "identity.jwks[0].refresh_wait_ms: at most 30000",
            ),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
        let e = parse("jwks: [{issuer: a, jwks_url: 'https://x', refresh: 1}]").unwrap_err();
        assert!(e.contains("unknown field `refresh`"), "{e}");
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        for ok in [
            "http://127.0.0.1:8080/jwks",
            "http://[::1]/jwks",
            "http://localhost/jwks",
            "https://idp.example/jwks",
        ] {
            assert!(check_provider_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/jwks",
            "http://idp.example/jwks",
            "file:///k",
        ] {
            assert!(check_provider_url(bad).is_err(), "{bad}");
        }
    }
}
