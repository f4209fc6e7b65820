//! The `sync:` configuration section and its validation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;

/// The `sync:` section of the sidecar configuration. Every field has a default so an absent
/// section means "no bundle sync" (policy comes from elsewhere, e.g. `policy.path`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Bundles to download; their roots must not overlap.
    pub bundles: Vec<BundleSource>,
    /// Public keys (keyring) that bundle signatures are checked against, selected by `kid`.
    pub keys: Vec<KeyConfig>,
    /// Expected `scope` claim of bundle signatures (none = a token carrying a scope is refused).
    pub scope: Option<String>,
    /// Accept bundles without checking signatures. Logged loudly at every activation.
    pub insecure_skip_verification: bool,
    /// Accept a signed bundle older than the active one.
    pub allow_rollback: bool,
    /// Where activated bundles are kept so a restart is ready without the bundle server.
    /// None disables persistence.
    pub persist_dir: Option<PathBuf>,
    /// Poll timing.
    pub polling: PollingConfig,
    /// HTTP client settings shared by all bundle downloads.
    pub http: HttpConfig,
    /// Optional OPA-compatible status reporting.
    pub status: Option<StatusConfig>,
}

/// One bundle to keep in sync.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSource {
    /// Unique name; also the directory name under `persist_dir`.
    pub name: String,
    /// Full URL of the bundle (http or https).
    pub url: String,
    /// If set, the bundle's manifest roots must be exactly these (order ignored).
    #[serde(default)]
    pub roots: Option<Vec<String>>,
    /// Overrides `polling.long_poll_timeout_seconds` for this bundle.
    #[serde(default)]
    pub long_poll_timeout_seconds: Option<u64>,
}

/// One verification key: exactly one of `public_key_file` and `public_key`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id, matched against the `kid` of the signature's JWS header.
    pub kid: String,
    /// PEM file holding the public key (SPKI for Ed25519, RSA and EC; or PKCS#1 RSA).
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// The same PEM text inline (OPA's `keys.<kid>.key`).
    #[serde(default)]
    pub public_key: Option<String>,
    /// JWS `alg` this key must be used with (e.g. `RS256`, `ES256`, `EdDSA`). Unset: any
    /// algorithm of the key's type.
    #[serde(default)]
    pub algorithm: Option<String>,
}

/// Poll timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PollingConfig {
    /// Lower bound of the random wait between polls (default 10).
    pub min_delay_seconds: u64,
    /// Upper bound of the random wait between polls and cap of the error backoff (default 30).
    pub max_delay_seconds: u64,
    /// `wait=N` sent to servers that support long polling (default 30; 0 disables long polling).
    pub long_poll_timeout_seconds: u64,
}

impl Default for PollingConfig {
    fn default() -> Self {
        PollingConfig {
            min_delay_seconds: 10,
            max_delay_seconds: 30,
            long_poll_timeout_seconds: 30,
        }
    }
}

/// A secret from the configuration: shown as `<redacted>` in debug output, so logging a
/// configuration never prints it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// HTTP client settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// TCP + TLS connect timeout (default 5).
    pub connect_timeout_seconds: u64,
    /// Longest silence while reading a response (default 10). Long-poll requests get
    /// `wait + read_timeout_seconds`.
    pub read_timeout_seconds: u64,
    /// Longest one download may take, connect to last byte (default 60). Long-poll requests
    /// get `wait + download_timeout_seconds`. Exceeding it aborts the download.
    pub download_timeout_seconds: u64,
    /// Slowest body transfer accepted, in bytes per second averaged over each
    /// `min_transfer_window_seconds` (default 1024; 0 disables the check). A body slower than
    /// this is aborted even while every byte arrives within `read_timeout_seconds`.
    pub min_transfer_bytes_per_second: u64,
    /// Length of the window over which `min_transfer_bytes_per_second` is measured (default 10).
    pub min_transfer_window_seconds: u64,
    /// Largest bundle accepted, compressed (default 256 MiB). Enforced while downloading.
    pub max_bundle_bytes: u64,
    /// File holding a bearer token; re-read on every request so rotation needs no restart.
    pub bearer_token_file: Option<PathBuf>,
    /// The bearer token itself, in the configuration (OPA's `credentials.bearer.token`); not
    /// with `bearer_token_file`, which keeps the secret out of the config and follows rotation.
    pub bearer_token: Option<Secret>,
    /// Scheme of the `Authorization` header sent with the token (default `Bearer`).
    pub bearer_scheme: String,
    /// PEM CA bundle trusted in addition to the built-in web roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (with `client_key_file`) for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout_seconds: 5,
            read_timeout_seconds: 10,
            download_timeout_seconds: 60,
            min_transfer_bytes_per_second: 1024,
            min_transfer_window_seconds: 10,
            max_bundle_bytes: 256 * 1024 * 1024,
            bearer_token_file: None,
            bearer_token: None,
            bearer_scheme: "Bearer".to_string(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

/// Status reporting (OPA status API compatible).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// URL the status report is POSTed to.
    pub url: String,
    /// Period of the report in addition to every change (default 60).
    #[serde(default = "default_status_interval")]
    pub interval_seconds: u64,
    /// Extra labels; `id` defaults to a random uuid per process, `version` to the sidecar version.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_status_interval() -> u64 {
    60
}

/// A configuration value that cannot work, with the key it concerns.
#[derive(Debug, thiserror::Error)]
#[error("sync.{key}: {message}")]
pub struct ConfigError {
    /// Dotted key path below `sync.`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// True if `name` can be used as one directory level under `persist_dir`.
pub(crate) fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn check_http_url(key: &str, raw: &str) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(raw).map_err(|e| err(key, format!("invalid URL {raw:?}: {e}")))?;
    match parsed.scheme() {
        "http" | "https" => Ok(()),
        other => Err(err(
            key,
            format!("URL scheme must be http or https, got {other:?}"),
        )),
    }
}

impl SyncConfig {
    /// Check everything that can be checked without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        for (i, b) in self.bundles.iter().enumerate() {
            if !is_safe_name(&b.name) {
                return Err(err(
                    format!("bundles[{i}].name"),
                    format!(
                        "{:?} must be 1-128 characters of A-Z a-z 0-9 - _ . (and not . or ..)",
                        b.name
                    ),
                ));
            }
            if !names.insert(b.name.as_str()) {
                return Err(err(
                    format!("bundles[{i}].name"),
                    format!("duplicate bundle name {:?}", b.name),
                ));
            }
            check_http_url(&format!("bundles[{i}].url"), &b.url)?;
            if let Some(roots) = &b.roots {
                if roots.is_empty() {
                    return Err(err(
                        format!("bundles[{i}].roots"),
                        "must not be empty when given",
                    ));
                }
            }
        }
        let mut kids = BTreeSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            if k.kid.is_empty() {
                return Err(err(format!("keys[{i}].kid"), "must not be empty"));
            }
            if !kids.insert(k.kid.as_str()) {
                return Err(err(
                    format!("keys[{i}].kid"),
                    format!("duplicate kid {:?}", k.kid),
                ));
            }
            match (&k.public_key_file, &k.public_key) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        format!("keys[{i}]"),
                        "give either public_key_file or public_key, not both",
                    ))
                }
                (None, None) => {
                    return Err(err(
                        format!("keys[{i}]"),
                        "one of public_key_file or public_key is required",
                    ))
                }
                _ => {}
            }
            if let Some(alg) = &k.algorithm {
                let known = regent_bundle::jws_keys::Alg::from_name(alg);
                if known.is_none_or(|a| a.is_hmac()) {
                    return Err(err(
                        format!("keys[{i}].algorithm"),
                        format!(
                            "{alg:?} is not a bundle signing algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA)"
                        ),
                    ));
                }
            }
        }
        if !self.bundles.is_empty() && self.keys.is_empty() && !self.insecure_skip_verification {
            return Err(err(
                "keys",
                "at least one key is required to verify bundle signatures (or set insecure_skip_verification: true)",
            ));
        }
        let p = &self.polling;
        if p.min_delay_seconds == 0 {
            return Err(err("polling.min_delay_seconds", "must be at least 1"));
        }
        if p.min_delay_seconds > p.max_delay_seconds {
            return Err(err(
                "polling.min_delay_seconds",
                format!(
                    "{} is greater than polling.max_delay_seconds ({})",
                    p.min_delay_seconds, p.max_delay_seconds
                ),
            ));
        }
        let h = &self.http;
        if h.connect_timeout_seconds == 0 {
            return Err(err("http.connect_timeout_seconds", "must be at least 1"));
        }
        if h.read_timeout_seconds == 0 {
            return Err(err("http.read_timeout_seconds", "must be at least 1"));
        }
        if h.download_timeout_seconds == 0 {
            return Err(err("http.download_timeout_seconds", "must be at least 1"));
        }
        if h.min_transfer_bytes_per_second > 0 && h.min_transfer_window_seconds == 0 {
            return Err(err(
                "http.min_transfer_window_seconds",
                "must be at least 1 while http.min_transfer_bytes_per_second is set",
            ));
        }
        if h.max_bundle_bytes == 0 {
            return Err(err("http.max_bundle_bytes", "must be at least 1"));
        }
        if h.bearer_token.is_some() && h.bearer_token_file.is_some() {
            return Err(err(
                "http.bearer_token",
                "give bearer_token or bearer_token_file, not both",
            ));
        }
        if let Err(why) = super::credentials::check_inline(
            &h.bearer_scheme,
            h.bearer_token.as_ref().map(Secret::expose),
        ) {
            let key = if why.contains("scheme") {
                "http.bearer_scheme"
            } else {
                "http.bearer_token"
            };
            return Err(err(key, why));
        }
        if h.client_cert_file.is_some() != h.client_key_file.is_some() {
            return Err(err(
                "http.client_cert_file",
                "client_cert_file and client_key_file must be given together",
            ));
        }
        if let Some(s) = &self.status {
            check_http_url("status.url", &s.url)?;
            if s.interval_seconds == 0 {
                return Err(err("status.interval_seconds", "must be at least 1"));
            }
        }
        Ok(())
    }

    /// Long-poll wait for one bundle in seconds (0 = never long-poll).
    pub fn long_poll_wait(&self, source: &BundleSource) -> u64 {
        source
            .long_poll_timeout_seconds
            .unwrap_or(self.polling.long_poll_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<SyncConfig, String> {
        let cfg: SyncConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn empty_section_uses_defaults() {
        let cfg = parse("{}").unwrap();
        assert!(cfg.bundles.is_empty());
        assert_eq!(cfg.polling.min_delay_seconds, 10);
        assert_eq!(cfg.http.max_bundle_bytes, 256 * 1024 * 1024);
        assert_eq!(cfg.http.download_timeout_seconds, 60);
        assert_eq!(cfg.http.min_transfer_bytes_per_second, 1024);
        assert_eq!(cfg.http.min_transfer_window_seconds, 10);
        assert!(!cfg.insecure_skip_verification);
        assert!(!cfg.allow_rollback);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("polling: {min_delay_seconds: 1, max_delay: 2}").unwrap_err();
        assert!(e.contains("max_delay"), "{e}");
    }

    #[test]
    fn min_above_max_is_refused() {
        let e = parse("polling: {min_delay_seconds: 5, max_delay_seconds: 2}").unwrap_err();
        assert!(e.contains("sync.polling.min_delay_seconds"), "{e}");
    }

    #[test]
    fn bundle_names_must_be_unique_and_safe() {
        let keys = "keys: [{kid: k, public_key_file: /k.pem}]\n";
        let e = parse(&format!(
            "{keys}bundles: [{{name: a, url: 'http://x/a'}}, {{name: a, url: 'http://x/b'}}]"
        ))
        .unwrap_err();
        assert!(
            e.contains("sync.bundles[1].name") && e.contains("duplicate"),
            "{e}"
        );
        let e = parse(&format!(
            "{keys}bundles: [{{name: '../etc', url: 'http://x/a'}}]"
        ))
        .unwrap_err();
        assert!(e.contains("sync.bundles[0].name"), "{e}");
        let e = parse(&format!("{keys}bundles: [{{name: '', url: 'http://x/a'}}]")).unwrap_err();
        assert!(e.contains("sync.bundles[0].name"), "{e}");
    }

    #[test]
    fn url_scheme_must_be_http() {
        let e = parse(
            "keys: [{kid: k, public_key_file: /k.pem}]\nbundles: [{name: a, url: 'file:///tmp/b.tar.gz'}]",
        )
        .unwrap_err();
        assert!(e.contains("sync.bundles[0].url"), "{e}");
    }

    #[test]
    fn keys_required_unless_insecure() {
        let e = parse("bundles: [{name: a, url: 'http://x/a'}]").unwrap_err();
        assert!(e.contains("sync.keys"), "{e}");
        parse("insecure_skip_verification: true\nbundles: [{name: a, url: 'http://x/a'}]").unwrap();
    }

    #[test]
    fn key_needs_exactly_one_source_and_a_known_alg() {
        let cfg = parse(
            "keys: [{kid: a, public_key_file: /a.pem, algorithm: RS256}, {kid: b, public_key: \"-----BEGIN PUBLIC KEY-----\"}]",
        )
        .unwrap();
        assert_eq!(cfg.keys[0].algorithm.as_deref(), Some("RS256"));
        assert!(cfg.keys[1].public_key.is_some());
        let e = parse("keys: [{kid: a}]").unwrap_err();
        assert!(e.contains("sync.keys[0]") && e.contains("required"), "{e}");
        let e = parse("keys: [{kid: a, public_key_file: /a.pem, public_key: x}]").unwrap_err();
        assert!(e.contains("sync.keys[0]") && e.contains("not both"), "{e}");
        let e = parse("keys: [{kid: a, public_key_file: /a.pem, algorithm: HS256}]").unwrap_err();
        assert!(
            e.contains("sync.keys[0].algorithm") && e.contains("HS256"),
            "{e}"
        );
    }

    #[test]
    fn bearer_credentials_are_checked() {
        let e = parse("http: {bearer_token: abc, bearer_token_file: /t}").unwrap_err();
        assert!(
            e.contains("sync.http.bearer_token") && e.contains("not both"),
            "{e}"
        );
        let e = parse("http: {bearer_token: \"a\\nb\"}").unwrap_err();
        assert!(
            e.contains("sync.http.bearer_token") && e.contains("header"),
            "{e}"
        );
        let e = parse("http: {bearer_token: abc, bearer_scheme: \"Bear er\"}").unwrap_err();
        assert!(e.contains("sync.http.bearer_scheme"), "{e}");
        let cfg = parse("http: {bearer_token: abc, bearer_scheme: Token}").unwrap();
        assert_eq!(
            cfg.http.bearer_token.as_ref().map(Secret::expose),
            Some("abc")
        );
        assert!(!format!("{cfg:?}").contains("abc"));
    }

    #[test]
    fn client_cert_needs_key() {
        let e = parse("http: {client_cert_file: /c.pem}").unwrap_err();
        assert!(e.contains("sync.http.client_cert_file"), "{e}");
    }

    #[test]
    fn download_deadline_and_rate_are_checked() {
        let e = parse("http: {download_timeout_seconds: 0}").unwrap_err();
        assert!(e.contains("sync.http.download_timeout_seconds"), "{e}");
        let e = parse("http: {min_transfer_window_seconds: 0}").unwrap_err();
        assert!(e.contains("sync.http.min_transfer_window_seconds"), "{e}");
        // With the rate check off, the window does not matter.
        let cfg = parse(
            "http: {min_transfer_bytes_per_second: 0, min_transfer_window_seconds: 0, download_timeout_seconds: 5}",
        )
        .unwrap();
        assert_eq!(cfg.http.download_timeout_seconds, 5);
    }
}
