//! OPA's configuration file (`opa run --config-file`, as the OPA-Envoy image is started) read into a
//! [`SidecarConfig`], so an OPA-Envoy user can keep the file when swapping the image.
//!
//! Every key OPA documents either maps onto a Regent setting or is refused with an error that names
//! its dotted path (and its line where one can be found): a key that changed nothing would leave the
//! user believing their settings are in force.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_yaml::{Mapping, Value};

use crate::config::{LogOutput, SidecarConfig};
use crate::sync::config::{is_safe_name, BundleSource, KeyConfig, StatusConfig};

/// Top-level keys that only OPA's format has.
pub const OPA_ONLY_KEYS: &[&str] = &[
    "services",
    "bundles",
    "keys",
    "labels",
    "plugins",
    "status",
    "discovery",
    "persistence_directory",
    "default_decision",
    "default_authorization_decision",
    "server",
    "caching",
    "distributed_tracing",
    "nd_builtin_cache",
];

/// Keys of OPA's `decision_logs` section (Regent's section of the same name has other keys).
const OPA_DECISION_LOG_KEYS: &[&str] = &[
    "console",
    "service",
    "resource",
    "reporting",
    "partition_name",
    "mask_decision",
    "drop_decision",
    "plugin",
    "request_context",
];

/// OPA's defaults that differ from Regent's.
const OPA_MIN_DELAY_SECONDS: u64 = 60;
const OPA_MAX_DELAY_SECONDS: u64 = 120;
/// OPA's decision log upload delays (`decision_logs.reporting.*_delay_seconds`).
const OPA_LOG_MIN_DELAY_SECONDS: u64 = 300;
const OPA_LOG_MAX_DELAY_SECONDS: u64 = 600;
const OPA_KEY_ALGORITHM: &str = "RS256";
const OPA_PERSISTENCE_DIRECTORY: &str = ".opa";
const OPA_ENVOY_ADDR: &str = ":9191";
/// OPA-Envoy's default `grpc-max-send-msg-size` (Go's max int32): no limit, which is what Regent does.
const OPA_UNLIMITED_SEND: u64 = i32::MAX as u64;

/// An OPA key Regent cannot honour, or a value it cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{key}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct OpaConfigError {
    /// Dotted path of the key, e.g. `plugins.envoy_ext_authz_grpc.addr`.
    pub key: String,
    /// 1-based line of the key in the file, when it could be found.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// What the mapping decided that an operator should hear about at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpaOrigin {
    /// One line per consequence of the mapping worth logging (e.g. unsigned bundles accepted).
    pub notes: Vec<String>,
}

/// Which format a configuration file is in, decided by its top-level keys.
#[derive(Debug, PartialEq, Eq)]
pub enum Format {
    /// Regent's own format.
    Regent,
    /// OPA's format.
    Opa,
}

/// Regent's own top-level keys.
const REGENT_ONLY_KEYS: &[&str] = &[
    "grpc",
    "http",
    "policy",
    "fail_mode",
    "log",
    "sync",
    "runtime",
];

/// Decides the format of a parsed file. `decision_logs` exists in both: alone, it is OPA's when it
/// holds only OPA's keys. A file mixing both formats' keys is an error naming them.
pub fn detect(top: &Mapping) -> Result<Format, String> {
    let keys: Vec<&str> = top.keys().filter_map(Value::as_str).collect();
    let opa: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| OPA_ONLY_KEYS.contains(k))
        .collect();
    let regent: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| REGENT_ONLY_KEYS.contains(k))
        .collect();
    if !opa.is_empty() && !regent.is_empty() {
        return Err(format!(
            "mixes OPA configuration keys ({}) with Regent configuration keys ({}); use one format",
            opa.join(", "),
            regent.join(", ")
        ));
    }
    if !opa.is_empty() {
        return Ok(Format::Opa);
    }
    if regent.is_empty() {
        if let Some(Value::Mapping(dl)) = top.get("decision_logs") {
            let dl_keys: Vec<&str> = dl.keys().filter_map(Value::as_str).collect();
            if !dl_keys.is_empty() && dl_keys.iter().all(|k| OPA_DECISION_LOG_KEYS.contains(k)) {
                return Ok(Format::Opa);
            }
        }
    }
    Ok(Format::Regent)
}

/// Maps a parsed OPA configuration onto Regent's. `text` is the file, used only to find lines.
pub fn map(text: &str, top: &Mapping) -> Result<(SidecarConfig, OpaOrigin), OpaConfigError> {
    Mapper { text }.map(top)
}

struct Mapper<'t> {
    text: &'t str,
}

/// One mapping of the file being read: each key taken is marked, and [`Obj::finish`] refuses the
/// rest by name.
struct Obj<'a> {
    path: String,
    map: &'a Mapping,
    taken: BTreeSet<String>,
}

/// The connection settings of one OPA service, as Regent's single `sync.http` can hold them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Transport {
    bearer_token_file: Option<PathBuf>,
    bearer_token: Option<crate::sync::config::Secret>,
    bearer_scheme: Option<String>,
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
    read_timeout_seconds: Option<u64>,
}

struct Service {
    url: String,
    transport: Transport,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Signing {
    keyid: Option<String>,
    scope: Option<String>,
}

struct Bundle {
    name: String,
    service: String,
    url: String,
    polling: (u64, u64),
    long_poll: u64,
    signing: Option<Signing>,
    persist: bool,
}

struct Key {
    kid: String,
    pem: String,
    algorithm: String,
    scope: Option<String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

impl<'t> Mapper<'t> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> OpaConfigError {
        let key = key.into();
        OpaConfigError {
            line: find_line(self.text, &key),
            key,
            message: message.into(),
        }
    }

    fn unsupported(&self, key: impl Into<String>, why: &str) -> OpaConfigError {
        self.err(key, format!("not supported by Regent ({why})"))
    }

    fn obj<'a>(&self, path: &str, v: &'a Value) -> Result<Obj<'a>, OpaConfigError> {
        match v {
            Value::Mapping(map) => Ok(Obj {
                path: path.to_string(),
                map,
                taken: BTreeSet::new(),
            }),
            other => Err(self.err(path, format!("must be a mapping, got {}", type_name(other)))),
        }
    }

    fn map(&self, top: &Mapping) -> Result<(SidecarConfig, OpaOrigin), OpaConfigError> {
        let mut cfg = SidecarConfig::default();
        let mut origin = OpaOrigin::default();
        let mut top = Obj {
            path: String::new(),
            map: top,
            taken: BTreeSet::new(),
        };
        for (key, why) in [
            ("discovery", "discovery bundles; list the bundles in `bundles`"),
            (
                "default_decision",
                "Regent serves no OPA REST data API; the decision is plugins.envoy_ext_authz_grpc.path",
            ),
            (
                "default_authorization_decision",
                "Regent serves no OPA REST API to authorize",
            ),
            ("server", "Regent serves no OPA REST API to configure"),
            ("caching", "the inter-query builtin cache"),
        ] {
            if let Some(v) = top.take(key) {
                let mut path = key.to_string();
                // Name the first nested key, e.g. `server.encoding`, so the user sees which setting.
                if let Value::Mapping(m) = v {
                    if let Some(first) = m.keys().next().and_then(Value::as_str) {
                        path = join(key, first);
                    }
                }
                return Err(self.unsupported(path, why));
            }
        }

        let services = match top.take("services") {
            Some(v) => self.services(v)?,
            None => BTreeMap::new(),
        };
        let keys = match top.take("keys") {
            Some(v) => self.keys(v)?,
            None => BTreeMap::new(),
        };
        let bundles = match top.take("bundles") {
            Some(v) => self.bundles(v, &services)?,
            None => Vec::new(),
        };
        let persistence_directory = top
            .string(self, "persistence_directory")?
            .unwrap_or_else(|| OPA_PERSISTENCE_DIRECTORY.to_string());
        let labels = match top.take("labels") {
            Some(v) => self.labels(v)?,
            None => BTreeMap::new(),
        };
        let status = match top.take("status") {
            Some(v) => self.status(v, &services)?,
            None => None,
        };
        if let Some(v) = top.take("decision_logs") {
            self.decision_logs(v, &mut cfg, &services)?;
        }
        if let Some(v) = top.take("distributed_tracing") {
            self.distributed_tracing(v, &mut cfg)?;
        }
        // OPA's switch is top-level; Regent's lives with the log it fills.
        if top.bool(self, "nd_builtin_cache")? == Some(true) {
            cfg.decision_logs.nd_builtin_cache = true;
        }
        match top.take("plugins") {
            Some(v) => self.plugins(v, &mut cfg)?,
            None => self.envoy_plugin(None, &mut cfg)?,
        }
        top.finish(self)?;

        self.apply_sync(
            &mut cfg,
            &mut origin,
            SyncParts {
                services: &services,
                keys: &keys,
                bundles: &bundles,
                persistence_directory,
                labels,
                status,
            },
        )?;
        Ok((cfg, origin))
    }

    fn services(&self, v: &Value) -> Result<BTreeMap<String, Service>, OpaConfigError> {
        let mut out = BTreeMap::new();
        match v {
            // OPA accepts both `services: {name: {...}}` and `services: [{name: ..., ...}]`.
            Value::Mapping(m) => {
                for (name, body) in m {
                    let name = self.key_name("services", name)?;
                    let path = join("services", &name);
                    let svc = self.service(&path, self.obj(&path, body)?)?;
                    out.insert(name, svc);
                }
            }
            Value::Sequence(items) => {
                for (i, body) in items.iter().enumerate() {
                    let path = format!("services[{i}]");
                    let mut o = self.obj(&path, body)?;
                    let name = o
                        .string(self, "name")?
                        .ok_or_else(|| self.err(join(&path, "name"), "is required"))?;
                    let svc = self.service(&path, o)?;
                    out.insert(name, svc);
                }
            }
            other => {
                return Err(self.err(
                    "services",
                    format!("must be a mapping or a list, got {}", type_name(other)),
                ))
            }
        }
        Ok(out)
    }

    fn key_name(&self, path: &str, k: &Value) -> Result<String, OpaConfigError> {
        match k {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(self.err(
                path,
                format!("keys must be names, got {}", type_name(other)),
            )),
        }
    }

    fn service(&self, path: &str, mut o: Obj<'_>) -> Result<Service, OpaConfigError> {
        // `name` is the list form's key; in the mapping form it repeats the key.
        o.take("name");
        let url = o
            .string(self, "url")?
            .ok_or_else(|| self.err(join(path, "url"), "is required"))?;
        let mut transport = Transport::default();
        if o.take("headers").is_some() {
            return Err(self.unsupported(
                join(path, "headers"),
                "Regent sends no custom headers to bundle servers",
            ));
        }
        if let Some(t) = o.string(self, "type")? {
            return Err(self.unsupported(
                join(path, "type"),
                &format!("service type {t:?}; Regent downloads bundles over HTTP(S) only"),
            ));
        }
        if o.bool(self, "allow_insecure_tls")? == Some(true) {
            return Err(self.unsupported(
                join(path, "allow_insecure_tls"),
                "Regent always verifies the server's certificate; add its CA with tls.ca_cert",
            ));
        }
        transport.read_timeout_seconds = o.u64(self, "response_header_timeout_seconds")?;
        if let Some(v) = o.take("tls") {
            let tp = join(path, "tls");
            let mut t = self.obj(&tp, v)?;
            transport.ca_file = t.string(self, "ca_cert")?.map(PathBuf::from);
            // Regent always trusts the system roots as well, which is what `true` asks for.
            if t.bool(self, "system_ca_required")? == Some(false) {
                return Err(self.unsupported(
                    join(&tp, "system_ca_required"),
                    "Regent always trusts the built-in web roots besides tls.ca_cert",
                ));
            }
            t.finish(self)?;
        }
        if let Some(v) = o.take("credentials") {
            let cp = join(path, "credentials");
            let mut c = self.obj(&cp, v)?;
            if let Some(v) = c.take("bearer") {
                let bp = join(&cp, "bearer");
                let mut b = self.obj(&bp, v)?;
                // OPA: `token` inline or `token_path` (a file read for every request), one of them.
                let token = b.string(self, "token")?;
                let token_path = b.string(self, "token_path")?;
                match (token, token_path) {
                    (Some(_), Some(_)) => {
                        return Err(
                            self.err(join(&bp, "token"), "give token or token_path, not both")
                        )
                    }
                    (Some(token), None) => {
                        // The scheme is checked on its own below.
                        if let Err(why) =
                            crate::sync::credentials::check_inline("Bearer", Some(&token))
                        {
                            return Err(self.err(join(&bp, "token"), why));
                        }
                        transport.bearer_token = Some(token.into());
                    }
                    (None, Some(file)) => transport.bearer_token_file = Some(PathBuf::from(file)),
                    (None, None) => {
                        return Err(self.err(join(&bp, "token_path"), "is required (or token)"))
                    }
                }
                if let Some(scheme) = b.string(self, "scheme")? {
                    if let Err(why) = crate::sync::credentials::check_inline(&scheme, None) {
                        return Err(self.err(join(&bp, "scheme"), why));
                    }
                    transport.bearer_scheme = Some(scheme);
                }
                b.finish(self)?;
            }
            if let Some(v) = c.take("client_tls") {
                let tp = join(&cp, "client_tls");
                let mut t = self.obj(&tp, v)?;
                let cert = t
                    .string(self, "cert")?
                    .ok_or_else(|| self.err(join(&tp, "cert"), "is required"))?;
                let key = t
                    .string(self, "private_key")?
                    .ok_or_else(|| self.err(join(&tp, "private_key"), "is required"))?;
                if t.take("private_key_passphrase").is_some() {
                    return Err(self.unsupported(
                        join(&tp, "private_key_passphrase"),
                        "encrypted private keys; give an unencrypted PEM key",
                    ));
                }
                if t.take("ca_cert").is_some() {
                    return Err(
                        self.unsupported(join(&tp, "ca_cert"), "deprecated here; use tls.ca_cert")
                    );
                }
                transport.client_cert_file = Some(PathBuf::from(cert));
                transport.client_key_file = Some(PathBuf::from(key));
                t.finish(self)?;
            }
            for (k, why) in [
                ("oauth2", "OAuth2 token exchange"),
                ("s3_signing", "AWS request signing"),
                ("gcp_metadata", "GCP metadata tokens"),
                ("azure_managed_identity", "Azure managed identity tokens"),
                ("plugin", "credential plugins"),
            ] {
                if c.take(k).is_some() {
                    return Err(self.unsupported(join(&cp, k), why));
                }
            }
            c.finish(self)?;
        }
        o.finish(self)?;
        Ok(Service { url, transport })
    }

    fn keys(&self, v: &Value) -> Result<BTreeMap<String, Key>, OpaConfigError> {
        let mut o = self.obj("keys", v)?;
        let mut out = BTreeMap::new();
        let names: Vec<String> = o
            .map
            .keys()
            .map(|k| self.key_name("keys", k))
            .collect::<Result<_, _>>()?;
        for kid in names {
            let path = join("keys", &kid);
            let body = o.take(&kid).unwrap_or(&Value::Null);
            let mut k = self.obj(&path, body)?;
            if k.take("private_key").is_some() {
                return Err(self.unsupported(
                    join(&path, "private_key"),
                    "signing keys are for `opa build`; Regent only verifies, with `key` (a PEM public key)",
                ));
            }
            let algorithm = k
                .string(self, "algorithm")?
                .unwrap_or_else(|| OPA_KEY_ALGORITHM.to_string());
            if algorithm.starts_with("HS") {
                return Err(self.unsupported(
                    join(&path, "algorithm"),
                    &format!("{algorithm}: HMAC shared secrets; Regent verifies bundles with public keys only"),
                ));
            }
            let pem = k
                .string(self, "key")?
                .ok_or_else(|| self.err(join(&path, "key"), "is required (a PEM public key)"))?;
            if !pem.contains("-----BEGIN") {
                return Err(self.err(
                    join(&path, "key"),
                    "is not a PEM public key (no -----BEGIN line)",
                ));
            }
            let scope = k.string(self, "scope")?;
            k.finish(self)?;
            out.insert(
                kid.clone(),
                Key {
                    kid,
                    pem,
                    algorithm,
                    scope,
                },
            );
        }
        Ok(out)
    }

    fn bundles(
        &self,
        v: &Value,
        services: &BTreeMap<String, Service>,
    ) -> Result<Vec<Bundle>, OpaConfigError> {
        let o = self.obj("bundles", v)?;
        let mut out = Vec::new();
        for (name, body) in o.map {
            let name = self.key_name("bundles", name)?;
            let path = join("bundles", &name);
            if !is_safe_name(&name) {
                return Err(self.err(
                    &path,
                    "Regent needs bundle names of 1-128 characters of A-Z a-z 0-9 - _ . (and not . or ..)",
                ));
            }
            let mut b = self.obj(&path, body)?;
            let service = match b.string(self, "service")? {
                Some(s) => s,
                // Without a service OPA needs exactly one to be configured.
                None if services.len() == 1 => services.keys().next().cloned().unwrap_or_default(),
                None => {
                    return Err(self.err(
                        join(&path, "service"),
                        "is required when there is not exactly one service",
                    ))
                }
            };
            let svc = services.get(&service).ok_or_else(|| {
                self.err(
                    join(&path, "service"),
                    format!("names service {service:?}, which is not in `services`"),
                )
            })?;
            let resource = b
                .string(self, "resource")?
                .unwrap_or_else(|| format!("bundles/{name}"));
            if resource.starts_with("file://") {
                return Err(self.unsupported(
                    join(&path, "resource"),
                    "file:// bundles; use Regent's policy.bundle for a local bundle",
                ));
            }
            let url = format!(
                "{}/{}",
                svc.url.trim_end_matches('/'),
                resource.trim_start_matches('/')
            );
            let mut polling = (OPA_MIN_DELAY_SECONDS, OPA_MAX_DELAY_SECONDS);
            let mut long_poll = 0;
            if let Some(v) = b.take("polling") {
                let pp = join(&path, "polling");
                let mut p = self.obj(&pp, v)?;
                if let Some(min) = p.u64(self, "min_delay_seconds")? {
                    polling.0 = min;
                }
                if let Some(max) = p.u64(self, "max_delay_seconds")? {
                    polling.1 = max;
                }
                if let Some(lp) = p.u64(self, "long_polling_timeout_seconds")? {
                    long_poll = lp;
                }
                p.finish(self)?;
                if polling.0 == 0 || polling.0 > polling.1 {
                    return Err(self.err(
                        join(&pp, "min_delay_seconds"),
                        format!(
                            "must be at least 1 and at most max_delay_seconds ({}), got {}",
                            polling.1, polling.0
                        ),
                    ));
                }
            }
            let signing = match b.take("signing") {
                Some(v) => {
                    let sp = join(&path, "signing");
                    let mut s = self.obj(&sp, v)?;
                    if let Some(v) = s.take("exclude_files") {
                        let empty = matches!(v, Value::Sequence(items) if items.is_empty());
                        if !empty {
                            return Err(self.unsupported(
                                join(&sp, "exclude_files"),
                                "every file of a signed bundle must be listed in its signature",
                            ));
                        }
                    }
                    if s.take("plugin").is_some() {
                        return Err(self.unsupported(join(&sp, "plugin"), "custom verifiers"));
                    }
                    let signing = Signing {
                        keyid: s.string(self, "keyid")?,
                        scope: s.string(self, "scope")?,
                    };
                    s.finish(self)?;
                    Some(signing)
                }
                None => None,
            };
            let persist = b.bool(self, "persist")?.unwrap_or(false);
            if let Some(t) = b.string(self, "trigger")? {
                if t != "periodic" {
                    return Err(self.unsupported(
                        join(&path, "trigger"),
                        &format!("trigger {t:?}; Regent polls (periodic)"),
                    ));
                }
            }
            if b.take("size_limit_bytes").is_some() {
                return Err(self.unsupported(
                    join(&path, "size_limit_bytes"),
                    "a per-file limit; Regent limits the whole download (sync.http.max_bundle_bytes, 256 MiB)",
                ));
            }
            b.finish(self)?;
            out.push(Bundle {
                name,
                service,
                url,
                polling,
                long_poll,
                signing,
                persist,
            });
        }
        Ok(out)
    }

    fn labels(&self, v: &Value) -> Result<BTreeMap<String, String>, OpaConfigError> {
        let mut o = self.obj("labels", v)?;
        let names: Vec<String> = o
            .map
            .keys()
            .map(|k| self.key_name("labels", k))
            .collect::<Result<_, _>>()?;
        let mut out = BTreeMap::new();
        for n in names {
            let value = o.string(self, &n)?.unwrap_or_default();
            out.insert(n, value);
        }
        Ok(out)
    }

    /// The status URL, and the service it goes through.
    fn status(
        &self,
        v: &Value,
        services: &BTreeMap<String, Service>,
    ) -> Result<Option<(String, String)>, OpaConfigError> {
        let mut s = self.obj("status", v)?;
        // Regent's /metrics (on http.addr) always exports bundle metrics.
        s.bool(self, "prometheus")?;
        for (k, why) in [
            (
                "console",
                "status printed to the console; use Regent's logs",
            ),
            ("plugin", "status plugins"),
            ("trigger", "manual triggers"),
            ("prometheus_config", "custom metric buckets"),
        ] {
            if s.take(k).is_some() {
                return Err(self.unsupported(join("status", k), why));
            }
        }
        let service = s.string(self, "service")?;
        let partition = s.string(self, "partition_name")?;
        s.finish(self)?;
        let Some(service) = service else {
            return Ok(None);
        };
        let svc = services.get(&service).ok_or_else(|| {
            self.err(
                "status.service",
                format!("names service {service:?}, which is not in `services`"),
            )
        })?;
        let mut url = format!("{}/status", svc.url.trim_end_matches('/'));
        if let Some(p) = partition {
            url = format!("{url}/{}", p.trim_matches('/'));
        }
        Ok(Some((url, service)))
    }

    fn decision_logs(
        &self,
        v: &Value,
        cfg: &mut SidecarConfig,
        services: &BTreeMap<String, Service>,
    ) -> Result<(), OpaConfigError> {
        let mut d = self.obj("decision_logs", v)?;
        let service = d.string(self, "service")?;
        let resource = d.string(self, "resource")?;
        let partition = d.string(self, "partition_name")?;
        let reporting = d.take("reporting");
        if let Some(service) = service {
            let svc = services.get(&service).ok_or_else(|| {
                self.err(
                    "decision_logs.service",
                    format!("names service {service:?}, which is not in `services`"),
                )
            })?;
            // OPA: `resource` (default `/logs`), or the deprecated `/logs/<partition_name>`.
            let resource = match (resource, partition) {
                (Some(r), _) => r,
                (None, Some(p)) => format!("/logs/{}", p.trim_matches('/')),
                (None, None) => "/logs".into(),
            };
            let url = format!(
                "{}/{}",
                svc.url.trim_end_matches('/'),
                resource.trim_start_matches('/')
            );
            let mut up = crate::decision_log::upload::UploadConfig::for_url(url);
            up.min_delay_seconds = OPA_LOG_MIN_DELAY_SECONDS;
            up.max_delay_seconds = OPA_LOG_MAX_DELAY_SECONDS;
            let t = &svc.transport;
            up.bearer_token_file = t.bearer_token_file.clone();
            up.bearer_token = t.bearer_token.clone();
            if let Some(scheme) = &t.bearer_scheme {
                up.bearer_scheme = scheme.clone();
            }
            up.ca_file = t.ca_file.clone();
            up.client_cert_file = t.client_cert_file.clone();
            up.client_key_file = t.client_key_file.clone();
            if let Some(r) = reporting {
                self.reporting(r, &mut up)?;
            }
            cfg.decision_logs.upload = Some(up);
        } else if let Some(k) = [
            ("resource", resource.is_some()),
            ("partition_name", partition.is_some()),
            ("reporting", reporting.is_some()),
        ]
        .iter()
        .find_map(|(k, set)| set.then_some(*k))
        {
            return Err(self.err(
                join("decision_logs", k),
                "needs decision_logs.service (the service logs are uploaded to)",
            ));
        }
        // Regent evaluates OPA's default rules; other paths would silently not mask.
        for (k, default) in [
            ("mask_decision", "system/log/mask"),
            ("drop_decision", "system/log/drop"),
        ] {
            if let Some(path) = d.string(self, k)? {
                if path.trim_matches('/') != default {
                    return Err(self.unsupported(
                        join("decision_logs", k),
                        &format!(
                            "a rule other than /{default}; Regent evaluates data.{} only",
                            default.replace('/', ".")
                        ),
                    ));
                }
            }
        }
        for (k, why) in [
            ("plugin", "decision log plugins"),
            ("request_context", "request context headers"),
        ] {
            if d.take(k).is_some() {
                return Err(self.unsupported(join("decision_logs", k), why));
            }
        }
        if d.bool(self, "console")? == Some(true) {
            cfg.decision_logs.output = LogOutput::Stdout;
        }
        d.finish(self)
    }

    /// `distributed_tracing`: OPA's OTLP exporter settings onto `tracing`. Without `type` OPA
    /// does not trace, and neither does Regent.
    fn distributed_tracing(
        &self,
        v: &Value,
        cfg: &mut SidecarConfig,
    ) -> Result<(), OpaConfigError> {
        use crate::telemetry::{Exporter, TracingConfig};
        let path = "distributed_tracing";
        let mut t = self.obj(path, v)?;
        let kind = t.string(self, "type")?;
        let address = t.string(self, "address")?;
        let service_name = t.string(self, "service_name")?;
        let percentage = t.u64(self, "sample_percentage")?;
        let encryption = t.string(self, "encryption")?;
        for (k, why) in [
            ("allow_insecure_tls", "skipping TLS verification"),
            ("tls_ca_cert_file", "a CA file for the collector"),
            ("tls_cert_file", "client certificates to the collector"),
            (
                "tls_private_key_file",
                "client certificates to the collector",
            ),
            ("resource", "custom resource attributes"),
        ] {
            if t.take(k).is_some() {
                return Err(self.unsupported(join(path, k), why));
            }
        }
        t.finish(self)?;
        let exporter = match kind.as_deref() {
            None => return Ok(()),
            Some("grpc") => Exporter::OtlpGrpc,
            Some("http") => Exporter::OtlpHttp,
            Some(other) => {
                return Err(self.err(
                    join(path, "type"),
                    format!("must be grpc or http, got {other:?}"),
                ))
            }
        };
        let scheme = match (encryption.as_deref(), exporter) {
            (None | Some("off"), _) => "http",
            (Some("tls"), Exporter::OtlpHttp) => "https",
            (Some(other), _) => {
                return Err(self.unsupported(
                    join(path, "encryption"),
                    &format!("encryption {other:?} with type {kind:?}; Regent exports over plain gRPC, or HTTPS with type http and encryption tls", kind = kind.as_deref().unwrap_or_default()),
                ))
            }
        };
        cfg.tracing = TracingConfig {
            exporter,
            // OPA's defaults: its collector address and service name.
            endpoint: Some(format!(
                "{scheme}://{}",
                address.as_deref().unwrap_or("localhost:4317")
            )),
            sample_ratio: percentage.map_or(1.0, |p| p as f64 / 100.0),
            service_name: service_name.unwrap_or_else(|| "opa".into()),
            ..TracingConfig::default()
        };
        Ok(())
    }

    /// `decision_logs.reporting`: the upload pacing and sizes Regent has; the others refused.
    fn reporting(
        &self,
        v: &Value,
        up: &mut crate::decision_log::upload::UploadConfig,
    ) -> Result<(), OpaConfigError> {
        let path = "decision_logs.reporting";
        let mut r = self.obj(path, v)?;
        if let Some(n) = r.u64(self, "min_delay_seconds")? {
            up.min_delay_seconds = n;
        }
        if let Some(n) = r.u64(self, "max_delay_seconds")? {
            up.max_delay_seconds = n;
        }
        if let Some(n) = r.u64(self, "upload_size_limit_bytes")? {
            up.upload_size_limit_bytes = n;
        }
        if let Some(n) = r.u64(self, "buffer_size_limit_bytes")? {
            up.buffer_size_limit_bytes = n;
        }
        match r.string(self, "buffer_type")?.as_deref() {
            None | Some("size") => {}
            Some(other) => {
                return Err(self.unsupported(
                    join(path, "buffer_type"),
                    &format!(
                        "buffer_type {other:?}; Regent buffers by size (buffer_size_limit_bytes)"
                    ),
                ))
            }
        }
        match r.string(self, "trigger")?.as_deref() {
            None | Some("periodic") => {}
            Some(other) => {
                return Err(self.unsupported(
                    join(path, "trigger"),
                    &format!("trigger {other:?}; Regent uploads periodically"),
                ))
            }
        }
        for (k, why) in [
            (
                "buffer_size_limit_events",
                "an event-count buffer limit; Regent bounds bytes",
            ),
            ("max_decisions_per_second", "rate-limiting decision logs"),
        ] {
            if r.take(k).is_some() {
                return Err(self.unsupported(join(path, k), why));
            }
        }
        r.finish(self)
    }

    fn plugins(&self, v: &Value, cfg: &mut SidecarConfig) -> Result<(), OpaConfigError> {
        let mut p = self.obj("plugins", v)?;
        let envoy = p.take("envoy_ext_authz_grpc");
        self.envoy_plugin(envoy, cfg)?;
        if let Some(other) = p
            .map
            .keys()
            .filter_map(Value::as_str)
            .find(|k| !p.taken.contains(*k))
        {
            return Err(self.unsupported(
                join("plugins", other),
                "Regent's only plugin is envoy_ext_authz_grpc",
            ));
        }
        p.finish(self)
    }

    fn envoy_plugin(
        &self,
        v: Option<&Value>,
        cfg: &mut SidecarConfig,
    ) -> Result<(), OpaConfigError> {
        const P: &str = "plugins.envoy_ext_authz_grpc";
        let empty = Mapping::new();
        let mut o = match v {
            Some(Value::Null) | None => Obj {
                path: P.to_string(),
                map: &empty,
                taken: BTreeSet::new(),
            },
            Some(v) => self.obj(P, v)?,
        };
        let addr = o
            .string(self, "addr")?
            .unwrap_or_else(|| OPA_ENVOY_ADDR.to_string());
        cfg.grpc.addr = parse_go_addr(&addr).map_err(|m| self.err(join(P, "addr"), m))?;
        if o.take("query").is_some() {
            return Err(self.unsupported(
                join(P, "query"),
                "the deprecated query form; give the decision as path, e.g. envoy/authz/allow",
            ));
        }
        if let Some(path) = o.string(self, "path")? {
            cfg.policy.path = path.trim_start_matches('/').to_string();
        }
        if let Some(b) = o.bool(self, "dry-run")? {
            cfg.policy.dry_run = b;
        }
        if let Some(b) = o.bool(self, "enable-reflection")? {
            cfg.grpc.reflection = b;
        }
        if let Some(b) = o.bool(self, "skip-request-body-parse")? {
            cfg.policy.skip_request_body_parse = b;
        }
        if let Some(p) = o.string(self, "proto-descriptor")? {
            cfg.policy.proto_descriptor = Some(PathBuf::from(p));
        }
        if let Some(n) = o.u64(self, "grpc-max-recv-msg-size")? {
            cfg.grpc.max_recv_message_bytes = usize::try_from(n)
                .map_err(|_| self.err(join(P, "grpc-max-recv-msg-size"), "is too large"))?;
        }
        if let Some(n) = o.u64(self, "grpc-max-send-msg-size")? {
            if n < OPA_UNLIMITED_SEND {
                return Err(self.unsupported(
                    join(P, "grpc-max-send-msg-size"),
                    "a send limit; Regent's Check responses are not limited (OPA's default, 2147483647, is accepted)",
                ));
            }
        }
        if o.take("enable-performance-metrics").is_some() {
            return Err(self.unsupported(
                join(P, "enable-performance-metrics"),
                "the grpc_request_duration_seconds histogram; Regent's /metrics has its own Check metrics",
            ));
        }
        o.finish(self)
    }

    fn apply_sync(
        &self,
        cfg: &mut SidecarConfig,
        origin: &mut OpaOrigin,
        parts: SyncParts<'_>,
    ) -> Result<(), OpaConfigError> {
        let SyncParts {
            services,
            keys,
            bundles,
            persistence_directory,
            labels,
            status,
        } = parts;
        let sync = &mut cfg.sync;

        // Regent has one HTTP client setting for every download and the status report.
        let mut used: Vec<(&str, &str)> = bundles
            .iter()
            .map(|b| (b.service.as_str(), b.name.as_str()))
            .collect();
        if let Some((_, svc)) = &status {
            used.push((svc.as_str(), "status"));
        }
        let mut transport: Option<(&str, &Transport)> = None;
        for (svc, _) in &used {
            let Some(s) = services.get(*svc) else {
                continue;
            };
            match transport {
                None => transport = Some((svc, &s.transport)),
                Some((first, t)) if t != &s.transport => {
                    return Err(self.unsupported(
                        join("services", svc),
                        &format!(
                            "its credentials or TLS settings differ from service {first:?}'s; Regent uses one set for all bundle downloads and status reports"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some((_, t)) = transport {
            sync.http.bearer_token_file = t.bearer_token_file.clone();
            sync.http.bearer_token = t.bearer_token.clone();
            if let Some(scheme) = &t.bearer_scheme {
                sync.http.bearer_scheme = scheme.clone();
            }
            sync.http.ca_file = t.ca_file.clone();
            sync.http.client_cert_file = t.client_cert_file.clone();
            sync.http.client_key_file = t.client_key_file.clone();
            if let Some(r) = t.read_timeout_seconds {
                sync.http.read_timeout_seconds = r;
            }
        }

        if let Some(first) = bundles.first() {
            for b in bundles {
                if b.polling != first.polling {
                    return Err(self.unsupported(
                        join(&join("bundles", &b.name), "polling"),
                        &format!(
                            "polling differs from bundle {:?}'s; Regent polls every bundle with the same min/max delay",
                            first.name
                        ),
                    ));
                }
                if b.persist != first.persist {
                    return Err(self.unsupported(
                        join(&join("bundles", &b.name), "persist"),
                        &format!(
                            "persist differs from bundle {:?}'s; Regent persists every bundle or none",
                            first.name
                        ),
                    ));
                }
                if b.signing.is_some() != first.signing.is_some() {
                    return Err(self.unsupported(
                        join(&join("bundles", &b.name), "signing"),
                        &format!(
                            "signing is set on one of bundles {:?} and {:?} only; Regent verifies every bundle or none",
                            first.name, b.name
                        ),
                    ));
                }
            }
            sync.polling.min_delay_seconds = first.polling.0;
            sync.polling.max_delay_seconds = first.polling.1;
            // Each bundle carries its own long-poll wait (OPA's default: no long polling).
            sync.polling.long_poll_timeout_seconds = 0;
            if first.persist {
                sync.persist_dir = Some(PathBuf::from(persistence_directory).join("bundles"));
            }
        }
        sync.bundles = bundles
            .iter()
            .map(|b| BundleSource {
                name: b.name.clone(),
                url: b.url.clone(),
                roots: None,
                long_poll_timeout_seconds: Some(b.long_poll),
            })
            .collect();

        let signings: Vec<(&str, &Signing)> = bundles
            .iter()
            .filter_map(|b| b.signing.as_ref().map(|s| (b.name.as_str(), s)))
            .collect();
        if let Some((first_name, first)) = signings.first() {
            for (name, s) in &signings {
                if s.keyid != first.keyid {
                    return Err(self.unsupported(
                        format!("bundles.{name}.signing.keyid"),
                        &format!(
                            "differs from bundle {first_name:?}'s; Regent verifies every bundle against one keyring"
                        ),
                    ));
                }
            }
            let ring: Vec<&Key> = match &first.keyid {
                // OPA trusts only that key for the bundle: so does Regent's keyring.
                Some(kid) => vec![keys.get(kid).ok_or_else(|| {
                    self.err(
                        format!("bundles.{first_name}.signing.keyid"),
                        format!("names key {kid:?}, which is not in `keys`"),
                    )
                })?],
                None => keys.values().collect(),
            };
            if ring.is_empty() {
                return Err(self.err(
                    "keys",
                    "bundles have signing but no key is configured to verify them",
                ));
            }
            let key_scope = ring.iter().find_map(|k| k.scope.clone());
            let mut scope: Option<Option<String>> = None;
            for (name, s) in &signings {
                let effective = s.scope.clone().or_else(|| key_scope.clone());
                match &scope {
                    None => scope = Some(effective),
                    Some(prev) if prev != &effective => {
                        return Err(self.unsupported(
                            format!("bundles.{name}.signing.scope"),
                            "differs between bundles; Regent checks one scope for every bundle",
                        ))
                    }
                    Some(_) => {}
                }
            }
            sync.scope = scope.flatten();
            sync.keys = ring
                .iter()
                .map(|k| KeyConfig {
                    kid: k.kid.clone(),
                    public_key: Some(k.pem.clone()),
                    algorithm: Some(k.algorithm.clone()),
                    ..KeyConfig::default()
                })
                .collect();
        } else if !bundles.is_empty() {
            // OPA does not verify a bundle without `signing`; neither does Regent then, loudly.
            sync.insecure_skip_verification = true;
            origin.notes.push(
                "bundles have no `signing` section: signatures are NOT checked, as in OPA; add bundles.<name>.signing.keyid to verify them".into(),
            );
        }

        match status {
            Some((url, _)) => {
                sync.status = Some(StatusConfig {
                    url,
                    interval_seconds: 60,
                    labels,
                });
            }
            None if !labels.is_empty() => origin.notes.push(
                "labels are sent in status reports only, and no status service is configured"
                    .into(),
            ),
            None => {}
        }
        Ok(())
    }
}

struct SyncParts<'a> {
    services: &'a BTreeMap<String, Service>,
    keys: &'a BTreeMap<String, Key>,
    bundles: &'a [Bundle],
    persistence_directory: String,
    labels: BTreeMap<String, String>,
    status: Option<(String, String)>,
}

impl<'a> Obj<'a> {
    fn take(&mut self, key: &str) -> Option<&'a Value> {
        let v = self.map.get(key)?;
        self.taken.insert(key.to_string());
        Some(v)
    }

    fn string(&mut self, m: &Mapper<'_>, key: &str) -> Result<Option<String>, OpaConfigError> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(m.err(
                join(&self.path, key),
                format!("must be a string, got {}", type_name(other)),
            )),
        }
    }

    fn bool(&mut self, m: &Mapper<'_>, key: &str) -> Result<Option<bool>, OpaConfigError> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(m.err(
                join(&self.path, key),
                format!("must be true or false, got {}", type_name(other)),
            )),
        }
    }

    fn u64(&mut self, m: &Mapper<'_>, key: &str) -> Result<Option<u64>, OpaConfigError> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(other) => Err(m.err(
                join(&self.path, key),
                format!(
                    "must be a whole number of at least 0, got {}",
                    type_name(other)
                ),
            )),
        }
    }

    /// Refuses the first key nothing took.
    fn finish(self, m: &Mapper<'_>) -> Result<(), OpaConfigError> {
        for k in self.map.keys() {
            let name = match k {
                Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            if !self.taken.contains(&name) {
                return Err(m.err(join(&self.path, &name), "not supported by Regent"));
            }
        }
        Ok(())
    }
}

/// Go's listen address forms as OPA-Envoy takes them: `:9191` (every interface), `localhost:9191`,
/// `0.0.0.0:9191`, `[::1]:9191`.
pub fn parse_go_addr(addr: &str) -> Result<SocketAddr, String> {
    if addr.starts_with("unix://") {
        return Err(format!(
            "{addr:?}: Unix socket listeners are not supported in an OPA configuration (Regent's grpc.unix_socket is)"
        ));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port or :port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{addr:?}: port {port:?} is not a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = match host {
        "" => [0, 0, 0, 0].into(),
        "localhost" => [127, 0, 0, 1].into(),
        h => h.parse().map_err(|_| {
            format!("{addr:?}: host {h:?} is not an IP address, `localhost` or empty")
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Best-effort line of a dotted key in block-style YAML: each segment is looked for among the
/// children (deeper indentation) of the previous one's line. `None` when the key was not found
/// (e.g. flow style or list forms).
pub fn find_line(text: &str, dotted: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize;
    // Indentation of the previous segment's key (a `- key:` item counts the dash as indentation).
    let mut parent_indent: Option<usize> = None;
    let mut found = None;
    for seg in dotted.split('.') {
        let seg = seg.split('[').next().unwrap_or(seg);
        // Children all sit at the indentation of the first line below their parent.
        let mut child_indent = if parent_indent.is_none() {
            Some(0)
        } else {
            None
        };
        let mut hit = None;
        for (i, raw) in lines.iter().enumerate().skip(start) {
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (item, indent) = match trimmed.strip_prefix("- ") {
                Some(rest) => (rest, raw.len() - rest.len()),
                None => (trimmed, raw.len() - trimmed.len()),
            };
            if let Some(p) = parent_indent {
                if indent <= p {
                    break;
                }
            }
            let want = *child_indent.get_or_insert(indent);
            if indent != want {
                continue;
            }
            let key = item.split(':').next().unwrap_or("").trim();
            let key = key.trim_matches(|c| c == '"' || c == '\'');
            if key == seg && item.contains(':') {
                hit = Some((i, indent));
                break;
            }
        }
        let (i, indent) = hit?;
        found = Some(i + 1);
        start = i + 1;
        parent_indent = Some(indent);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_addresses() {
        assert_eq!(parse_go_addr(":9191").unwrap().to_string(), "0.0.0.0:9191");
        assert_eq!(
            parse_go_addr("localhost:9191").unwrap().to_string(),
            "127.0.0.1:9191"
        );
        assert_eq!(
            parse_go_addr("0.0.0.0:9191").unwrap().to_string(),
            "0.0.0.0:9191"
        );
        assert_eq!(
            parse_go_addr("[::1]:9191").unwrap().to_string(),
            "[::1]:9191"
        );
        assert!(parse_go_addr("opa:9191").unwrap_err().contains("opa"));
        assert!(parse_go_addr("9191").is_err());
        assert!(parse_go_addr("unix:///tmp/s").unwrap_err().contains("Unix"));
    }

    #[test]
    fn lines_of_nested_keys() {
        let text = "services:\n  a:\n    url: x\nplugins:\n  envoy_ext_authz_grpc:\n    # c\n    addr: :9191\n    path: p\n";
        assert_eq!(
            find_line(text, "plugins.envoy_ext_authz_grpc.path"),
            Some(8)
        );
        assert_eq!(find_line(text, "services.a.url"), Some(3));
        assert_eq!(find_line(text, "plugins.envoy_ext_authz_grpc.nope"), None);
        assert_eq!(find_line(text, "services.url"), None);
    }
}
