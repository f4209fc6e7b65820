//! `regent serve` configuration: one YAML file, unknown keys refused by name, defaults documented
//! in docs/server.md (tested by tests/docs_config_table.rs), common keys overridable by flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use regent_telemetry::TracingConfig;
use serde::{Deserialize, Serialize};

/// The whole server configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP(S) server listens on (default `0.0.0.0:8181`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the git mirror and the last published bundles are kept (default `./regent-data`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// If set, every published bundle is also written to `DIR/NAME.tar.gz` (+ `NAME.tar.gz.etag`).
    #[serde(default)]
    pub publish_dir: Option<PathBuf>,
    /// The policy repository.
    pub git: GitConfig,
    /// Push notifications.
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// Bundles built from the repository.
    pub bundles: Vec<BundleConfig>,
    /// Signing keys.
    pub signing: SigningConfig,
    /// Serving bundles.
    #[serde(default)]
    pub distribution: DistributionConfig,
    /// Client authentication.
    #[serde(default)]
    pub auth: AuthConfig,
    /// HTTPS.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Status reports and the fleet view.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Tracing of builds: the sidecar's `tracing:` keys, with `service_name` defaulting to
    /// [`SERVER_SERVICE_NAME`].
    #[serde(default = "default_tracing", deserialize_with = "tracing_section")]
    pub tracing: TracingConfig,
}

/// `service.name` of the server's spans unless `tracing.service_name` says otherwise.
pub const SERVER_SERVICE_NAME: &str = "regent-server";

fn default_tracing() -> TracingConfig {
    TracingConfig::for_service(SERVER_SERVICE_NAME)
}

/// The section as the sidecar reads it, except for the default of `service_name`, which is the
/// server's: a missing key is filled in before the shared type (which defaults to the sidecar's
/// name) sees the section.
fn tracing_section<'de, D: serde::Deserializer<'de>>(de: D) -> Result<TracingConfig, D::Error> {
    use serde::de::Error as _;
    let mut section = serde_yaml::Value::deserialize(de)?;
    match &mut section {
        serde_yaml::Value::Mapping(m) => {
            let key = serde_yaml::Value::from("service_name");
            if !m.contains_key(&key) {
                m.insert(key, SERVER_SERVICE_NAME.into());
            }
        }
        serde_yaml::Value::Null => return Ok(default_tracing()),
        _ => {}
    }
    serde_yaml::from_value(section).map_err(D::Error::custom)
}

pub(crate) fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8181))
}

pub(crate) fn default_data_dir() -> PathBuf {
    PathBuf::from("regent-data")
}

/// The policy git repository.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// URL (`https://`, `ssh://`, `git@host:path`, `file://`) or local path of the repository.
    pub repo: String,
    /// Branch to publish (default `main`).
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Fetch every N seconds in addition to webhooks; 0 = webhooks only (default 60).
    #[serde(default = "default_poll")]
    pub poll_interval_seconds: u64,
    /// Longest a single git command may run (default 120).
    #[serde(default = "default_git_timeout")]
    pub timeout_seconds: u64,
}

pub(crate) fn default_branch() -> String {
    "main".into()
}
fn default_poll() -> u64 {
    60
}
fn default_git_timeout() -> u64 {
    120
}

/// `POST /v1/hooks/git`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// File holding the shared secret (GitHub HMAC secret, or GitLab token). Unset = webhook off.
    pub secret_file: Option<PathBuf>,
    /// Largest accepted webhook body (default 1 MiB).
    pub max_body_bytes: usize,
    /// How long the webhook waits for the build it triggered before answering 202 (default 8;
    /// GitHub gives up after 10 s).
    pub wait_seconds: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            secret_file: None,
            max_body_bytes: 1024 * 1024,
            wait_seconds: 8,
        }
    }
}

/// One bundle built from a directory of the repository.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BundleConfig {
    /// Name served at `/bundles/NAME`.
    pub name: String,
    /// Directory in the repository (relative; `.` for the root).
    pub dir: String,
    /// Manifest roots (default: the bundle owns all of `data`, `[""]`).
    #[serde(default)]
    pub roots: Option<Vec<String>>,
    /// Decision rules that must exist and evaluate without error on an empty input, as
    /// slash paths (`envoy/authz/allow`).
    #[serde(default)]
    pub entrypoints: Vec<String>,
}

/// Signing keys (Ed25519, RSA or EC).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// JWS algorithm of the active key (default: EdDSA for Ed25519, RS256 for RSA, ES* by curve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// Every known key; only `active_kid` signs. Keeping the previous key listed lets bundles it
    /// signed be restored from the data dir during a rotation.
    pub keys: Vec<SigningKeyConfig>,
    /// The kid that signs new bundles.
    pub active_kid: String,
    /// `scope` claim put in signatures (default none).
    #[serde(default)]
    pub scope: Option<String>,
    /// `iss` claim (default `regent`).
    #[serde(default = "default_issuer")]
    pub issuer: String,
}

fn default_issuer() -> String {
    "regent".into()
}

/// One signing key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    /// Key id written in the signature header.
    pub kid: String,
    /// PEM private key: PKCS#8 Ed25519 (`regent keygen`), RSA (2048+ bits) or EC
    /// P-256/P-384/P-521.
    pub private_key_file: PathBuf,
}

/// Largest accepted `distribution.max_long_poll_seconds` (an hour): clients re-poll anyway, and
/// a longer hold only hides dead connections.
pub const MAX_LONG_POLL_SECONDS: u64 = 3600;

/// Serving bundles.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributionConfig {
    /// Upper bound of a long poll's `wait=N`; 0 disables long polling (default 60).
    pub max_long_poll_seconds: u64,
}

impl Default for DistributionConfig {
    fn default() -> Self {
        DistributionConfig {
            max_long_poll_seconds: 60,
        }
    }
}

/// Bearer-token authentication of clients.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accepted tokens, stored as hashes. Empty = open server.
    pub tokens: Vec<TokenConfig>,
    /// Deprecated spelling of `fleet.require_token` (kept so existing configs still load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reports_require_token: Option<bool>,
}

/// One accepted client token.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (logged, never secret).
    pub name: String,
    /// Lowercase hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
}

/// HTTPS.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Status reports and the fleet view.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// A sidecar that has not reported for this long leaves the fleet view (default 300).
    pub ttl_seconds: u64,
    /// Largest accepted status report (default 256 KiB).
    pub max_report_bytes: usize,
    /// Most sidecars tracked; reports from new ids beyond it are refused with 429 (default 100000).
    pub max_sidecars: usize,
    /// Most bytes of status reports kept in memory, all sidecars together; a report that would
    /// exceed it is refused with 429 (default 256 MiB).
    pub max_total_report_bytes: usize,
    /// Require one of `auth.tokens` on status reports (`POST /v1/status/report`, `POST
    /// /status`); a report without a valid one gets 401 and changes nothing. Unset: required
    /// whenever `auth.tokens` is not empty. See [`ServerConfig::status_reports_require_token`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub require_token: Option<bool>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            ttl_seconds: 300,
            max_report_bytes: 256 * 1024,
            max_sidecars: 100_000,
            max_total_report_bytes: 256 * 1024 * 1024,
            require_token: None,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json` (default `text`).
    pub format: String,
    /// `tracing` filter directive (default `info`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// A configuration value that cannot work, naming its key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted key.
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

/// Bundle names end up in URLs and file names.
pub fn valid_bundle_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A branch name git accepts (`git check-ref-format --branch` rules) that cannot be read as an
/// option or change the meaning of the fetch refspec it is put in.
pub fn valid_branch_name(branch: &str) -> bool {
    !branch.is_empty()
        && branch != "@"
        && !branch.starts_with('-')
        && !branch.starts_with('/')
        && !branch.ends_with('/')
        && !branch.ends_with('.')
        && !branch.contains("..")
        && !branch.contains("//")
        && !branch.contains("@{")
        && !branch
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c))
        && branch
            .split('/')
            .all(|part| !part.starts_with('.') && !part.ends_with(".lock"))
}

impl ServerConfig {
    /// Reads and parses a YAML file (unknown keys are errors naming the key).
    pub fn from_file(path: &Path) -> anyhow::Result<ServerConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Self::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses YAML text.
    pub fn from_yaml(text: &str) -> anyhow::Result<ServerConfig> {
        Ok(serde_yaml::from_str(text)?)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = self.tracing.validate() {
            // The shared section's messages start with the key they are about.
            let (key, message) = e.split_once(' ').unwrap_or(("tracing", e.as_str()));
            return Err(err(key, message));
        }
        if self.git.repo.trim().is_empty() {
            return Err(err("git.repo", "must not be empty"));
        }
        if self.git.repo.starts_with('-') {
            return Err(err("git.repo", "must not start with '-'"));
        }
        if !valid_branch_name(&self.git.branch) {
            return Err(err(
                "git.branch",
                format!("{:?} is not a valid branch name", self.git.branch),
            ));
        }
        if self.git.timeout_seconds == 0 {
            return Err(err("git.timeout_seconds", "must be at least 1"));
        }
        if self.bundles.is_empty() {
            return Err(err("bundles", "at least one bundle is required"));
        }
        for (i, b) in self.bundles.iter().enumerate() {
            if !valid_bundle_name(&b.name) {
                return Err(err(
                    format!("bundles[{i}].name"),
                    format!(
                        "{:?}: use 1-128 characters from A-Z a-z 0-9 - _ . (not . or ..)",
                        b.name
                    ),
                ));
            }
            if self.bundles[..i].iter().any(|o| o.name == b.name) {
                return Err(err(
                    format!("bundles[{i}].name"),
                    format!("{:?} is used twice", b.name),
                ));
            }
            let dir = Path::new(&b.dir);
            if b.dir.is_empty()
                || dir.is_absolute()
                || dir
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(err(
                    format!("bundles[{i}].dir"),
                    format!("{:?} must be a relative path inside the repository", b.dir),
                ));
            }
            for (j, e) in b.entrypoints.iter().enumerate() {
                let ok = !e.is_empty()
                    && e.trim_matches('/').split('/').all(|s| {
                        !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')
                    });
                if !ok {
                    return Err(err(
                        format!("bundles[{i}].entrypoints[{j}]"),
                        format!("{e:?} is not a rule path like envoy/authz/allow"),
                    ));
                }
            }
        }
        if self.signing.keys.is_empty() {
            return Err(err("signing.keys", "at least one key is required"));
        }
        for (i, k) in self.signing.keys.iter().enumerate() {
            if k.kid.is_empty() {
                return Err(err(format!("signing.keys[{i}].kid"), "must not be empty"));
            }
            if self.signing.keys[..i].iter().any(|o| o.kid == k.kid) {
                return Err(err(
                    format!("signing.keys[{i}].kid"),
                    format!("{:?} is used twice", k.kid),
                ));
            }
        }
        if !self
            .signing
            .keys
            .iter()
            .any(|k| k.kid == self.signing.active_kid)
        {
            return Err(err(
                "signing.active_kid",
                format!(
                    "{:?} is not one of signing.keys[].kid",
                    self.signing.active_kid
                ),
            ));
        }
        if let Some(name) = &self.signing.algorithm {
            if self.signing_alg().is_none() {
                return Err(err(
                    "signing.algorithm",
                    format!(
                        "{name:?} is not a bundle signing algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA)"
                    ),
                ));
            }
        }
        for (i, t) in self.auth.tokens.iter().enumerate() {
            let ok = t.sha256.len() == 64
                && t.sha256
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
            if !ok {
                return Err(err(
                    format!("auth.tokens[{i}].sha256"),
                    "must be 64 lowercase hex characters (sha256 of the token)",
                ));
            }
        }
        if self.distribution.max_long_poll_seconds > MAX_LONG_POLL_SECONDS {
            return Err(err(
                "distribution.max_long_poll_seconds",
                format!("at most {MAX_LONG_POLL_SECONDS}"),
            ));
        }
        if self.webhook.max_body_bytes == 0 {
            return Err(err("webhook.max_body_bytes", "must be at least 1"));
        }
        if self.fleet.ttl_seconds == 0 {
            return Err(err("fleet.ttl_seconds", "must be at least 1"));
        }
        if self.fleet.max_sidecars == 0 {
            return Err(err("fleet.max_sidecars", "must be at least 1"));
        }
        if self.fleet.max_total_report_bytes < self.fleet.max_report_bytes {
            return Err(err(
                "fleet.max_total_report_bytes",
                "must be at least fleet.max_report_bytes",
            ));
        }
        if self.fleet.max_report_bytes == 0 {
            return Err(err("fleet.max_report_bytes", "must be at least 1"));
        }
        if let (Some(new), Some(old)) = (
            self.fleet.require_token,
            self.auth.status_reports_require_token,
        ) {
            if new != old {
                return Err(err(
                    "fleet.require_token",
                    "contradicts auth.status_reports_require_token (its deprecated spelling); \
                     set only fleet.require_token",
                ));
            }
        }
        if self.fleet.require_token == Some(true) && self.auth.tokens.is_empty() {
            return Err(err(
                "fleet.require_token",
                "is true but auth.tokens is empty: configure the tokens sidecars send",
            ));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(err(
                "log.format",
                format!("{:?}: use text or json", self.log.format),
            ));
        }
        if let Some(p) = &self.publish_dir {
            if p.as_os_str().is_empty() {
                return Err(err("publish_dir", "must not be empty"));
            }
        }
        Ok(())
    }

    /// `signing.algorithm` as an algorithm, when set and one bundles may be signed with (not
    /// HMAC; JWS names are case-sensitive). [`ServerConfig::validate`] refuses any other value.
    pub fn signing_alg(&self) -> Option<regent_bundle::signing::Alg> {
        let name = self.signing.algorithm.as_deref()?;
        regent_bundle::signing::Alg::from_name(name).filter(|a| !a.is_hmac())
    }

    /// Whether status reports must carry one of `auth.tokens`: `fleet.require_token` (or its
    /// deprecated spelling `auth.status_reports_require_token`) if set, else whenever tokens
    /// are configured. Without tokens the server is open and nothing is required.
    pub fn status_reports_require_token(&self) -> bool {
        !self.auth.tokens.is_empty()
            && self
                .fleet
                .require_token
                .or(self.auth.status_reports_require_token)
                .unwrap_or(true)
    }

    /// What decides whether a commit must be rebuilt besides the commit itself: the bundle
    /// definitions and the signing identity.
    pub fn build_fingerprint(&self) -> String {
        use sha2::Digest;
        let v = serde_json::json!({
            "bundles": self.bundles,
            "kid": self.signing.active_kid,
            "scope": self.signing.scope,
            "iss": self.signing.issuer,
        });
        hex::encode(sha2::Sha256::digest(v.to_string().as_bytes()))
    }
}

/// Best-effort 1-based line of a dotted key (`signing.algorithm`, `bundles[1].dir`) in
/// block-style YAML. Where a nested key cannot be found (flow style `{...}`, or a key the file
/// does not hold because it came from a default), the line of the deepest enclosing key that was
/// found; `None` when not even the first segment is in the file.
pub fn key_line(text: &str, dotted: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    // (leading spaces, indentation of the content after any `- ` list markers, the content)
    let split = |l: &'_ str| -> (usize, usize, String) {
        let outer = l.len() - l.trim_start_matches(' ').len();
        let mut rest = &l[outer..];
        let mut inner = outer;
        while let Some(r) = rest.strip_prefix("- ") {
            let r2 = r.trim_start_matches(' ');
            inner += rest.len() - r2.len();
            rest = r2;
        }
        (outer, inner, rest.to_string())
    };
    let blank = |c: &str| c.is_empty() || c.starts_with('#') || c == "-";
    // The scope being searched: from line `start`, until a later line indented `limit` or less.
    let (mut start, mut limit): (usize, Option<usize>) = (0, None);
    let mut found = None;
    for seg in dotted.split('.') {
        let (name, index) = match seg.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        let mut child_indent = None;
        let mut hit = None;
        for (i, l) in lines.iter().enumerate().skip(start) {
            let (outer, inner, content) = split(l);
            if blank(&content) {
                continue;
            }
            if i > start && limit.is_some_and(|lim| outer <= lim) {
                break;
            }
            let want = *child_indent.get_or_insert(inner);
            if inner == want
                && (content
                    .strip_prefix(name)
                    .is_some_and(|r| r.starts_with(':'))
                    || content
                        .strip_prefix(&format!("{name:?}"))
                        .is_some_and(|r| r.starts_with(':')))
            {
                hit = Some((i, inner));
                break;
            }
        }
        let Some((line, indent)) = hit else {
            return found;
        };
        found = Some(line + 1);
        (start, limit) = (line + 1, Some(indent));
        if let Some(want) = index {
            // The list items under the key: `- ` lines at the first such indentation.
            let mut dash = None;
            let mut n = 0;
            let mut item = None;
            for (i, l) in lines.iter().enumerate().skip(line + 1) {
                let (outer, _, _) = split(l);
                let trimmed = l.trim_start_matches(' ');
                if blank(trimmed) && !trimmed.starts_with('-') {
                    continue;
                }
                let is_dash = trimmed.starts_with("- ") || trimmed == "-";
                if outer < indent || (outer == indent && !is_dash) {
                    break;
                }
                if is_dash && *dash.get_or_insert(outer) == outer {
                    if n == want {
                        item = Some((i, outer));
                        break;
                    }
                    n += 1;
                }
            }
            let Some((i, outer)) = item else {
                return found;
            };
            found = Some(i + 1);
            // The item's first key sits on the `- ` line itself, hence `start` includes it.
            (start, limit) = (i, Some(outer));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
git: {repo: /srv/policy.git}
bundles: [{name: authz, dir: authz, roots: [envoy]}]
signing: {keys: [{kid: k1, private_key_file: /k}], active_kid: k1}
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = ServerConfig::from_yaml(MIN).unwrap();
        c.validate().unwrap();
        assert_eq!(c.git.branch, "main");
        assert_eq!(c.listen.port(), 8181);
        assert_eq!(c.distribution.max_long_poll_seconds, 60);
        assert_eq!(c.fleet.ttl_seconds, 300);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = ServerConfig::from_yaml(&format!("{MIN}\nlisten_addr: x\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_addr"), "{e}");
        let e = ServerConfig::from_yaml(&MIN.replace("branch_x", "").replace(
            "repo: /srv/policy.git",
            "repo: /srv/policy.git, brunch: main",
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("brunch"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = ServerConfig::from_yaml(MIN).unwrap();
        c.signing.active_kid = "k2".into();
        assert_eq!(c.validate().unwrap_err().key, "signing.active_kid");
        let mut c = ServerConfig::from_yaml(MIN).unwrap();
        c.bundles[0].dir = "../x".into();
        assert_eq!(c.validate().unwrap_err().key, "bundles[0].dir");
        let mut c = ServerConfig::from_yaml(MIN).unwrap();
        c.bundles[0].name = "a/b".into();
        assert_eq!(c.validate().unwrap_err().key, "bundles[0].name");
        let mut c = ServerConfig::from_yaml(MIN).unwrap();
        c.auth.tokens.push(TokenConfig {
            name: "x".into(),
            sha256: "ABC".into(),
        });
        assert_eq!(c.validate().unwrap_err().key, "auth.tokens[0].sha256");
        for bad in [
            "a..b",
            "-main",
            "--upload-pack=x",
            "main:refs/heads/x",
            "a/.hidden",
            "x.lock",
            "a//b",
            "/a",
            "a/",
            "a.",
            "a@{1}",
            "@",
            "a b",
            "*",
        ] {
            let mut c = ServerConfig::from_yaml(MIN).unwrap();
            c.git.branch = bad.into();
            assert_eq!(c.validate().unwrap_err().key, "git.branch", "{bad}");
        }
        for good in ["main", "release/v1.2", "feature-x_y", "policy@prod"] {
            assert!(valid_branch_name(good), "{good}");
        }
        let mut c = ServerConfig::from_yaml(MIN).unwrap();
        c.fleet.max_sidecars = 0;
        assert_eq!(c.validate().unwrap_err().key, "fleet.max_sidecars");
        let mut c = ServerConfig::from_yaml(MIN).unwrap();
        c.fleet.max_total_report_bytes = 1;
        assert_eq!(
            c.validate().unwrap_err().key,
            "fleet.max_total_report_bytes"
        );
        let mut c = ServerConfig::from_yaml(MIN).unwrap();
        c.distribution.max_long_poll_seconds = u64::MAX;
        assert_eq!(
            c.validate().unwrap_err().key,
            "distribution.max_long_poll_seconds"
        );
        let mut c = ServerConfig::from_yaml(MIN).unwrap();
        c.git.repo = "--upload-pack=touch /tmp/x".into();
        assert_eq!(c.validate().unwrap_err().key, "git.repo");
        let mut c = ServerConfig::from_yaml(MIN).unwrap();
        c.fleet.require_token = Some(true);
        assert_eq!(c.validate().unwrap_err().key, "fleet.require_token");
    }

    #[test]
    fn lines_of_dotted_keys() {
        let text = "git:\n  repo: /r\nbundles:\n  - name: a\n    dir: x\n  - name: b\n    # c\n    dir: y\nsigning:\n  keys:\n  - kid: k\n    private_key_file: /k\n  active_kid: k\n  algorithm: XS1\nlog: {format: xml}\n";
        assert_eq!(key_line(text, "git.repo"), Some(2));
        assert_eq!(key_line(text, "bundles[0].name"), Some(4));
        assert_eq!(key_line(text, "bundles[1].dir"), Some(8));
        assert_eq!(key_line(text, "signing.keys[0].private_key_file"), Some(12));
        assert_eq!(key_line(text, "signing.algorithm"), Some(14));
        // Flow style: the section's line.
        assert_eq!(key_line(text, "log.format"), Some(15));
        assert_eq!(key_line(text, "tls.cert_file"), None);
        assert_eq!(key_line(text, "bundles[5].dir"), Some(3));
    }

    #[test]
    fn signing_algorithm_is_checked_with_the_rest() {
        let mut c = ServerConfig::from_yaml(MIN).unwrap();
        for ok in ["RS256", "PS512", "ES384", "EdDSA"] {
            c.signing.algorithm = Some(ok.into());
            c.validate().unwrap();
        }
        for bad in ["HS256", "none", "rs256", ""] {
            c.signing.algorithm = Some(bad.into());
            let e = c.validate().unwrap_err();
            assert_eq!(e.key, "signing.algorithm", "{bad}");
            assert!(e.message.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn status_reports_need_the_token_by_default_once_tokens_exist() {
        let token = format!(
            "\nauth: {{tokens: [{{name: fleet, sha256: {}}}]}}\n",
            "ab".repeat(32)
        );
        let c = ServerConfig::from_yaml(MIN).unwrap();
        assert!(
            !c.status_reports_require_token(),
            "an open server stays open"
        );
        let c = ServerConfig::from_yaml(&format!("{MIN}{token}")).unwrap();
        c.validate().unwrap();
        assert!(c.status_reports_require_token());
        let off = format!("{MIN}{token}fleet: {{require_token: false}}\n");
        let c = ServerConfig::from_yaml(&off).unwrap();
        c.validate().unwrap();
        assert!(!c.status_reports_require_token());
        // The deprecated spelling still works, and must agree with the new key.
        let old = format!(
            "{MIN}{}",
            token.replace("}]}", "}], status_reports_require_token: false}")
        );
        let c = ServerConfig::from_yaml(&old).unwrap();
        c.validate().unwrap();
        assert!(!c.status_reports_require_token());
        let both = format!("{old}fleet: {{require_token: true}}\n");
        let c = ServerConfig::from_yaml(&both).unwrap();
        assert_eq!(c.validate().unwrap_err().key, "fleet.require_token");
    }
}
