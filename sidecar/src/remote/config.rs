//! The `remote_calls:` configuration section: what `http.send` may reach, and the token
//! introspection endpoints of `regent.introspect`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::Deserialize;

/// `remote_calls:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteCallsConfig {
    /// Most evaluations of one Check: a round per wave of calls whose answers were not cached.
    pub max_rounds: u32,
    /// Most remote calls one Check may wait for, over all its rounds.
    pub max_calls_per_check: u32,
    /// `http.send`.
    pub http_send: HttpSendConfig,
    /// RFC 7662 token introspection endpoints, by name.
    pub introspection: Vec<IntrospectionEndpoint>,
}

impl Default for RemoteCallsConfig {
    fn default() -> Self {
        RemoteCallsConfig {
            max_rounds: 3,
            max_calls_per_check: 8,
            http_send: HttpSendConfig::default(),
            introspection: Vec::new(),
        }
    }
}

/// `remote_calls.http_send:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSendConfig {
    /// Hosts `http.send` may call: `host`, `host:port`, or `*.domain` (any subdomain). Empty: none.
    pub allowed_hosts: Vec<String>,
    /// Timeout of a request that gives no `timeout`.
    pub timeout_seconds: u64,
    /// Longest `timeout` a request may ask for.
    pub max_timeout_seconds: u64,
    /// Largest response body read.
    pub max_response_bytes: u64,
    /// Memory for cached responses (`cache`, `force_cache`), shared by all Checks.
    pub cache_max_bytes: u64,
    /// PEM CA bundle trusted in addition to the built-in web roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for HttpSendConfig {
    fn default() -> Self {
        HttpSendConfig {
            allowed_hosts: Vec::new(),
            timeout_seconds: 5,
            max_timeout_seconds: 30,
            max_response_bytes: 1 << 20,
            cache_max_bytes: 16 << 20,
            ca_file: None,
        }
    }
}

/// Default of `introspection[].timeout_seconds`.
pub const DEFAULT_INTROSPECTION_TIMEOUT_SECONDS: u64 = 2;
/// Default of `introspection[].max_cache_seconds`.
pub const DEFAULT_MAX_CACHE_SECONDS: u64 = 60;
/// Default of `introspection[].negative_cache_seconds`.
pub const DEFAULT_NEGATIVE_CACHE_SECONDS: u64 = 5;
/// Default of `introspection[].cache_entries`.
pub const DEFAULT_CACHE_ENTRIES: u64 = 10_000;
/// Default of `introspection[].max_bytes`.
pub const DEFAULT_INTROSPECTION_MAX_BYTES: u64 = 64 << 10;

/// One RFC 7662 introspection endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionEndpoint {
    /// The name policies give: `regent.introspect(name, token)`.
    pub name: String,
    /// The endpoint's URL.
    pub url: String,
    /// Client id for HTTP Basic client authentication (with `client_secret_file`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// File holding the client secret (a mounted Secret); read at start.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// PEM client certificate for mutual-TLS client authentication (with `client_key_file`).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// PEM CA bundle trusted in addition to the built-in web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `token_type_hint` sent with each request.
    #[serde(default = "default_hint")]
    pub token_type_hint: String,
    /// Longest one request may take, connect to last byte.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Longest an active answer is reused; never past the token's `exp`.
    #[serde(default = "default_max_cache")]
    pub max_cache_seconds: u64,
    /// How long an inactive answer is reused (0: never); never past the token's `exp`.
    #[serde(default = "default_negative")]
    pub negative_cache_seconds: u64,
    /// Most answers kept.
    #[serde(default = "default_entries")]
    pub cache_entries: u64,
    /// Largest answer read.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_hint() -> String {
    "access_token".into()
}
fn default_timeout() -> u64 {
    DEFAULT_INTROSPECTION_TIMEOUT_SECONDS
}
fn default_max_cache() -> u64 {
    DEFAULT_MAX_CACHE_SECONDS
}
fn default_negative() -> u64 {
    DEFAULT_NEGATIVE_CACHE_SECONDS
}
fn default_entries() -> u64 {
    DEFAULT_CACHE_ENTRIES
}
fn default_max_bytes() -> u64 {
    DEFAULT_INTROSPECTION_MAX_BYTES
}

/// A value of the `remote_calls:` section that cannot work, with the key it concerns.
#[derive(Debug, thiserror::Error)]
#[error("remote_calls.{key}: {message}")]
pub struct RemoteConfigError {
    /// Dotted key path below `remote_calls.`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> RemoteConfigError {
    RemoteConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// One entry of `allowed_hosts`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// `host` (any port) or `host:port`.
    Exact {
        /// Lowercase host name or address (IPv6 without brackets).
        host: String,
        /// Port, when given.
        port: Option<u16>,
    },
    /// `*.domain`: any host ending in `.domain`.
    Subdomains(String),
}

impl HostRule {
    /// Parses an `allowed_hosts` entry.
    pub fn parse(raw: &str) -> Result<HostRule, String> {
        let s = raw.trim().to_ascii_lowercase();
        if s.is_empty() {
            return Err("empty host".into());
        }
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "{raw:?}: give a host (`host`, `host:port`, `*.domain`), not a URL"
            ));
        }
        if let Some(domain) = s.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') || domain.contains(':') {
                return Err(format!("{raw:?}: a wildcard is `*.domain`"));
            }
            return Ok(HostRule::Subdomains(domain.to_string()));
        }
        if s.contains('*') {
            return Err(format!("{raw:?}: `*` is allowed only as `*.domain`"));
        }
        // `[::1]:8080`, `[::1]`, `::1`, `host:port`, `host`.
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("{raw:?}: unclosed `[`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("{raw:?}: unexpected text after `]`")),
            };
            (h.to_string(), port)
        } else if s.matches(':').count() > 1 {
            (s.clone(), None)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (s.clone(), None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| format!("{raw:?}: invalid port {p:?}"))
            })
            .transpose()?;
        Ok(HostRule::Exact { host, port })
    }

    /// Whether a request to `host` (lowercase, IPv6 without brackets) on `port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        match self {
            HostRule::Exact { host: h, port: p } => h == host && p.is_none_or(|p| p == port),
            HostRule::Subdomains(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|prefix| prefix.ends_with('.') && prefix.len() > 1),
        }
    }
}

impl RemoteCallsConfig {
    /// Checks everything that can be checked without reading files or the network.
    pub fn validate(&self) -> Result<(), RemoteConfigError> {
        if !(1..=16).contains(&self.max_rounds) {
            return Err(err(
                "max_rounds",
                format!("must be between 1 and 16, got {}", self.max_rounds),
            ));
        }
        if !(1..=256).contains(&self.max_calls_per_check) {
            return Err(err(
                "max_calls_per_check",
                format!(
                    "must be between 1 and 256, got {}",
                    self.max_calls_per_check
                ),
            ));
        }
        let h = &self.http_send;
        for (i, raw) in h.allowed_hosts.iter().enumerate() {
            HostRule::parse(raw).map_err(|m| err(format!("http_send.allowed_hosts[{i}]"), m))?;
        }
        for (name, v) in [
            ("timeout_seconds", h.timeout_seconds),
            ("max_timeout_seconds", h.max_timeout_seconds),
            ("max_response_bytes", h.max_response_bytes),
        ] {
            if v == 0 {
                return Err(err(format!("http_send.{name}"), "must be at least 1"));
            }
        }
        if h.timeout_seconds > h.max_timeout_seconds {
            return Err(err(
                "http_send.timeout_seconds",
                format!(
                    "{} is greater than max_timeout_seconds ({})",
                    h.timeout_seconds, h.max_timeout_seconds
                ),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, e) in self.introspection.iter().enumerate() {
            let key = |k: &str| format!("introspection[{i}].{k}");
            if e.name.trim().is_empty() {
                return Err(err(key("name"), "must not be empty"));
            }
            if !names.insert(e.name.as_str()) {
                return Err(err(key("name"), format!("duplicate name {:?}", e.name)));
            }
            crate::identity::config::check_provider_url(&e.url).map_err(|m| err(key("url"), m))?;
            if e.client_id.is_some() != e.client_secret_file.is_some() {
                return Err(err(
                    format!("introspection[{i}]"),
                    "client_id and client_secret_file must be given together",
                ));
            }
            if e.client_cert_file.is_some() != e.client_key_file.is_some() {
                return Err(err(
                    format!("introspection[{i}]"),
                    "client_cert_file and client_key_file must be given together",
                ));
            }
            if e.client_id.is_none() && e.client_cert_file.is_none() {
                return Err(err(
                    format!("introspection[{i}]"),
                    "the endpoint needs client authentication: client_id with \
                     client_secret_file, or client_cert_file with client_key_file",
                ));
            }
            for (name, v) in [
                ("timeout_seconds", e.timeout_seconds),
                ("max_cache_seconds", e.max_cache_seconds),
                ("cache_entries", e.cache_entries),
                ("max_bytes", e.max_bytes),
            ] {
                if v == 0 {
                    return Err(err(key(name), "must be at least 1"));
                }
            }
            if e.negative_cache_seconds > e.max_cache_seconds {
                return Err(err(
                    key("negative_cache_seconds"),
                    format!(
                        "{} is greater than max_cache_seconds ({})",
                        e.negative_cache_seconds, e.max_cache_seconds
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<RemoteCallsConfig, String> {
        let cfg: RemoteCallsConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn defaults_apply() {
        let c = parse(
            "introspection: [{name: idp, url: 'https://idp/introspect', client_id: regent, \
             client_secret_file: /s}]",
        )
        .unwrap();
        assert_eq!(c.max_rounds, 3);
        assert_eq!(c.max_calls_per_check, 8);
        assert!(c.http_send.allowed_hosts.is_empty());
        assert_eq!(c.http_send.timeout_seconds, 5);
        let e = &c.introspection[0];
        assert_eq!(e.token_type_hint, "access_token");
        assert_eq!(e.timeout_seconds, 2);
        assert_eq!(e.max_cache_seconds, 60);
        assert_eq!(e.negative_cache_seconds, 5);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (yaml, needle) in [
            ("max_rounds: 0", "remote_calls.max_rounds"),
            (
                "http_send: {allowed_hosts: ['https://x/']}",
                "remote_calls.http_send.allowed_hosts[0]",
            ),
            (
                "http_send: {allowed_hosts: [a, 'x*y']}",
                "remote_calls.http_send.allowed_hosts[1]",
            ),
            (
                "http_send: {timeout_seconds: 40}",
                "remote_calls.http_send.timeout_seconds",
            ),
            (
                "introspection: [{name: a, url: 'http://idp.example/i', client_id: c, client_secret_file: /s}]",
                "remote_calls.introspection[0].url",
            ),
            (
                "introspection: [{name: a, url: 'https://i', client_id: c}]",
                "remote_calls.introspection[0]: client_id and client_secret_file",
            ),
            (
                "introspection: [{name: a, url: 'https://i'}]",
                "needs client authentication",
            ),
            (
                "introspection: [{name: a, url: 'https://i', client_id: c, client_secret_file: /s}, \
                 {name: a, url: 'https://j', client_id: c, client_secret_file: /s}]",
                "remote_calls.introspection[1].name: duplicate",
            ),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
    }

    #[test]
    fn host_rules_match_hosts_ports_and_subdomains() {
        let rule = |s: &str| HostRule::parse(s).unwrap();
        assert!(rule("api.example.com").allows("api.example.com", 443));
        assert!(!rule("api.example.com").allows("evil.example.com", 443));
        assert!(rule("127.0.0.1:8080").allows("127.0.0.1", 8080));
        assert!(!rule("127.0.0.1:8080").allows("127.0.0.1", 8081));
        assert!(rule("[::1]:9").allows("::1", 9));
        assert!(rule("::1").allows("::1", 1));
        assert!(rule("*.example.com").allows("a.b.example.com", 443));
        assert!(!rule("*.example.com").allows("example.com", 443));
        assert!(!rule("*.example.com").allows("badexample.com", 443));
        assert!(HostRule::parse("host:http").is_err());
    }
}
