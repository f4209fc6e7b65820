//! `regent.introspect(endpoint, token)`: RFC 7662 token introspection, for opaque tokens and for
//! tokens whose revocation must take effect at once.
//!
//! The answer is the endpoint's JSON object (`active`, and for an active token its claims:
//! `sub`, `scope`, `exp`, ...). The call is **undefined** when the endpoint is not configured,
//! the token is not a non-empty string, or the endpoint cannot be asked or answers something
//! other than a JSON object with a boolean `active` (counted by reason in
//! `regent_introspection_total`), so the policy's `default` decides.
//!
//! Client authentication (RFC 7662 §2.1) is HTTP Basic with the client id and the secret read
//! from a file (each form-urlencoded first, as RFC 6749 §2.3.1 says), or mutual TLS with a
//! client certificate, or both.
//!
//! Answers are cached per endpoint, keyed by a SHA-256 of the token (the cache never holds
//! tokens): an active answer for `max_cache_seconds` but never past the token's `exp`; an
//! inactive one for `negative_cache_seconds`, so a revoked token is refused within that long at
//! the latest. Failures are not cached.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use regent_policy::builtins::remote::{Answer, Call, INTROSPECT};
use regorus::Value;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::config::IntrospectionEndpoint;
use super::metrics::RemoteMetrics;
use crate::reload::Watcher;

/// Label of calls naming an endpoint that is not configured.
const UNKNOWN_ENDPOINT: &str = "(unknown)";

struct Cached {
    value: Value,
    expires: Instant,
}

struct Endpoint {
    cfg: IntrospectionEndpoint,
    client: reqwest::Client,
    /// Form-urlencoded client id and secret, for HTTP Basic; swapped when the secret file
    /// changes (a rotated Secret is used without a restart).
    basic: Option<Arc<ArcSwap<(String, String)>>>,
    cache: quick_cache::sync::Cache<[u8; 32], Arc<Cached>>,
}

/// The configured introspection endpoints.
pub struct Introspection {
    endpoints: HashMap<String, Endpoint>,
    metrics: RemoteMetrics,
}

/// What a call names, checked.
struct Asked<'a> {
    endpoint: &'a Endpoint,
    token: &'a str,
    key: [u8; 32],
}

impl Introspection {
    /// Builds each endpoint's client and reads its secret and certificate files (blocking).
    /// `watchers` gains one per file set read, to re-read it when it changes.
    pub fn new(
        cfgs: &[IntrospectionEndpoint],
        metrics: RemoteMetrics,
        watchers: &mut Vec<Watcher>,
    ) -> anyhow::Result<Self> {
        let mut endpoints = HashMap::new();
        for (i, cfg) in cfgs.iter().enumerate() {
            let section = format!("remote_calls.introspection[{i}]");
            let basic = match (&cfg.client_id, &cfg.client_secret_file) {
                (Some(id), Some(file)) => {
                    let paths = vec![file.clone()];
                    // Taken before the read, so a change made meanwhile is seen by the first poll.
                    let print = crate::reload::fingerprint(&paths);
                    let at = format!("{section}.client_secret_file");
                    let basic = Arc::new(ArcSwap::from_pointee(read_basic(id, file, &at)?));
                    let (swap, id, file) = (basic.clone(), id.clone(), file.clone());
                    watchers.push(Watcher::from_fingerprint(
                        "introspection_secret",
                        paths,
                        Box::new(move || {
                            swap.store(Arc::new(read_basic(&id, &file, &at)?));
                            Ok(())
                        }),
                        print,
                    ));
                    Some(basic)
                }
                _ => None,
            };
            let http = crate::sync::HttpConfig {
                connect_timeout_seconds: cfg.timeout_seconds,
                read_timeout_seconds: cfg.timeout_seconds,
                ca_file: cfg.ca_file.clone(),
                client_cert_file: cfg.client_cert_file.clone(),
                client_key_file: cfg.client_key_file.clone(),
                ..Default::default()
            };
            watchers.extend(crate::tls::ClientTls::watcher_of(
                "remote_tls",
                &section,
                crate::sync::download::client_files(&http),
            ));
            let client = crate::sync::download::client_builder(
                &http,
                Duration::from_secs(cfg.timeout_seconds),
            )
            .map_err(|e| anyhow::anyhow!("{section}: {e}"))?
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
            let entries = usize::try_from(cfg.cache_entries).unwrap_or(usize::MAX);
            endpoints.insert(
                cfg.name.clone(),
                Endpoint {
                    cfg: cfg.clone(),
                    client,
                    basic,
                    cache: quick_cache::sync::Cache::new(entries),
                },
            );
        }
        Ok(Introspection { endpoints, metrics })
    }

    /// The cached answer to `call`, or undefined for a call that cannot be made.
    pub fn cached(&self, call: &Call) -> Option<Answer> {
        let asked = match self.asked(call) {
            Ok(a) => a,
            Err(label) => {
                self.metrics.introspection(label, "bad_argument");
                return Some(Answer::Value(Value::Undefined));
            }
        };
        let hit = asked.endpoint.cache.get(&asked.key)?;
        if hit.expires <= Instant::now() {
            asked.endpoint.cache.remove(&asked.key);
            return None;
        }
        self.metrics
            .introspection(&asked.endpoint.cfg.name, "cache_hit");
        Some(Answer::Value(hit.value.clone()))
    }

    /// Asks the endpoint about the token of `call`.
    pub async fn perform(&self, call: &Call) -> Answer {
        let asked = match self.asked(call) {
            Ok(a) => a,
            Err(label) => {
                self.metrics.introspection(label, "bad_argument");
                return Answer::Value(Value::Undefined);
            }
        };
        let name = asked.endpoint.cfg.name.as_str();
        let started = Instant::now();
        let outcome = ask(asked.endpoint, asked.token).await;
        self.metrics.remote_duration(INTROSPECT, started.elapsed());
        match outcome {
            Ok((answer, active)) => {
                self.metrics
                    .introspection(name, if active { "active" } else { "inactive" });
                let ttl = cache_ttl(&asked.endpoint.cfg, &answer, active);
                let value = Value::from(answer);
                if let Some(ttl) = ttl {
                    asked.endpoint.cache.insert(
                        asked.key,
                        Arc::new(Cached {
                            value: value.clone(),
                            expires: Instant::now() + ttl,
                        }),
                    );
                }
                Answer::Value(value)
            }
            Err((result, message)) => {
                self.metrics.introspection(name, result);
                tracing::debug!(endpoint = name, result, error = %message, "introspection failed; the call is undefined");
                Answer::Value(Value::Undefined)
            }
        }
    }

    /// The endpoint and token a call names; `Err` carries the metric label to count it under.
    fn asked<'a>(&'a self, call: &'a Call) -> Result<Asked<'a>, &'a str> {
        let name = match call.args.first() {
            Some(Value::String(s)) => s.as_ref(),
            _ => return Err(UNKNOWN_ENDPOINT),
        };
        let Some((label, endpoint)) = self.endpoints.get_key_value(name) else {
            return Err(UNKNOWN_ENDPOINT);
        };
        let token = match call.args.get(1) {
            Some(Value::String(s)) if !s.is_empty() => s.as_ref(),
            _ => return Err(label.as_str()),
        };
        Ok(Asked {
            endpoint,
            token,
            key: Sha256::digest(token.as_bytes()).into(),
        })
    }
}

/// How long an answer may be reused: see the module docs. `None`: not at all.
fn cache_ttl(cfg: &IntrospectionEndpoint, answer: &Json, active: bool) -> Option<Duration> {
    let limit = if active {
        cfg.max_cache_seconds
    } else {
        cfg.negative_cache_seconds
    };
    let mut ttl = Duration::from_secs(limit);
    if active {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Some(exp) = answer.get("exp").and_then(Json::as_f64) {
            let left = (exp - now as f64).max(0.0);
            ttl = ttl.min(Duration::from_secs_f64(left.min(u32::MAX as f64)));
        }
    }
    (!ttl.is_zero()).then_some(ttl)
}

/// One introspection request: the answer and its `active`, or a failure's label and message.
async fn ask(e: &Endpoint, token: &str) -> Result<(Json, bool), (&'static str, String)> {
    let url = e.cfg.url.as_str();
    let timeout = Duration::from_secs(e.cfg.timeout_seconds);
    let limit = e.cfg.max_bytes;
    let transport = |err: reqwest::Error| {
        if err.is_timeout() {
            ("timeout", format!("{url}: no answer within {timeout:?}"))
        } else {
            ("transport", format!("{url}: {err}"))
        }
    };
    let body = format!(
        "token={}&token_type_hint={}",
        form_encode(token),
        form_encode(&e.cfg.token_type_hint)
    );
    let mut req = e
        .client
        .post(url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ACCEPT, "application/json")
        .body(body);
    if let Some(basic) = &e.basic {
        let basic = basic.load();
        req = req.basic_auth(&basic.0, Some(&basic.1));
    }
    let work = async {
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            return Err(("http_status", format!("{url} answered HTTP {status}")));
        }
        let too_large = || {
            (
                "too_large",
                format!("{url}: answer larger than max_bytes ({limit})"),
            )
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    let bytes = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r?,
        Err(_) => return Err(("timeout", format!("{url}: no answer within {timeout:?}"))),
    };
    let answer: Json = serde_json::from_slice(&bytes)
        .map_err(|err| ("invalid", format!("{url}: answer is not JSON: {err}")))?;
    let active = match answer.get("active") {
        Some(Json::Bool(b)) => *b,
        _ => {
            return Err((
                "invalid",
                format!("{url}: answer has no boolean \"active\" (RFC 7662 §2.2)"),
            ))
        }
    };
    Ok((answer, active))
}

/// The form-urlencoded client id and the secret read from `file` (`at` names its key).
fn read_basic(id: &str, file: &Path, at: &str) -> anyhow::Result<(String, String)> {
    let secret = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("{at}: reading {}: {e}", file.display()))?;
    let secret = secret.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        anyhow::bail!("{at}: {} is empty", file.display());
    }
    Ok((form_encode(id), form_encode(secret)))
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoint() -> IntrospectionEndpoint {
        serde_yaml::from_str(
            "{name: idp, url: 'https://idp/i', client_id: c, client_secret_file: /s}",
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn active_answers_are_kept_until_exp_at_most() {
        let cfg = endpoint();
        let long = json!({"active": true, "exp": now() + 3600});
        assert_eq!(cache_ttl(&cfg, &long, true), Some(Duration::from_secs(60)));
        let short = json!({"active": true, "exp": now() + 10});
        let ttl = cache_ttl(&cfg, &short, true).unwrap();
        assert!(
            ttl <= Duration::from_secs(10) && ttl >= Duration::from_secs(8),
            "{ttl:?}"
        );
        let expired = json!({"active": true, "exp": now() - 5});
        assert_eq!(cache_ttl(&cfg, &expired, true), None);
        assert_eq!(
            cache_ttl(&cfg, &json!({"active": false}), false),
            Some(Duration::from_secs(5))
        );
    }
}
