//! `http.send` with OPA's request and response objects, limited to the hosts the configuration
//! allows.
//!
//! Request fields: `method`, `url` (required); `headers`, `body` (sent as JSON), `raw_body`,
//! `enable_redirect`, `force_json_decode`, `raise_error` (default `true`), `timeout` (a Go
//! duration string such as `"500ms"`, or nanoseconds), `cache`, `force_cache` with
//! `force_cache_duration_seconds`. OPA's other fields (`tls_*`, `max_retry_attempts`, ...) are
//! refused by name rather than ignored, so a policy never runs with a setting silently dropped.
//!
//! The response is OPA's: `status`, `status_code`, `headers` (lowercase names → arrays of
//! values), `raw_body`, and `body` (the decoded JSON when the response is JSON or
//! `force_json_decode` is set, else `null`). A request that cannot be made (a host not allowed, a
//! bad field, a network error, a timeout, a body over the limit) raises an error that fails the
//! evaluation, as OPA does; with `raise_error: false` it gives `{"status_code": 0, "error":
//! {"code", "message"}}` instead.
//!
//! Caching, shared by all Checks in a byte-bounded cache keyed by the whole request object:
//! `force_cache` keeps a response for `force_cache_duration_seconds`; `cache` honours the
//! response's `Cache-Control: max-age` (`no-store` and `no-cache` keep nothing). Only OPA's
//! cacheable statuses are kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use regent_policy::builtins::remote::{Answer, Call};
use regorus::Value;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use serde_json::{json, Map, Value as Json};

use super::config::{HostRule, HttpSendConfig};
use super::metrics::RemoteMetrics;

/// Statuses OPA's `http.send` caches.
const CACHEABLE: &[u16] = &[200, 203, 204, 206, 300, 301, 404, 405, 410, 414, 501];
/// Most redirects followed with `enable_redirect`.
const MAX_REDIRECTS: usize = 10;
/// OPA's request fields Regent does not implement.
const UNSUPPORTED: &[&str] = &[
    "tls_use_system_certs",
    "tls_ca_cert",
    "tls_ca_cert_file",
    "tls_ca_cert_env_variable",
    "tls_client_cert",
    "tls_client_cert_file",
    "tls_client_cert_env_variable",
    "tls_client_key",
    "tls_client_key_file",
    "tls_client_key_env_variable",
    "tls_insecure_skip_verify",
    "tls_server_name",
    "max_retry_attempts",
    "force_yaml_decode",
    "caching_mode",
    "cache_ignored_headers",
];

/// A request object, checked.
#[derive(Debug)]
pub struct HttpRequest {
    method: reqwest::Method,
    url: url::Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    enable_redirect: bool,
    force_json_decode: bool,
    raise_error: bool,
    timeout: Duration,
    cache: Caching,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caching {
    Off,
    /// `cache: true`: as the response's `Cache-Control` says.
    Http,
    /// `force_cache`: for this long.
    Forced(Duration),
}

/// Why a request was not made or failed; `result` is its metric label.
#[derive(Debug)]
struct SendError {
    result: &'static str,
    message: String,
}

fn send_error(result: &'static str, message: impl Into<String>) -> SendError {
    SendError {
        result,
        message: format!("http.send: {}", message.into()),
    }
}

/// A cached response.
struct Cached {
    value: Value,
    expires: Instant,
    weight: u64,
}

/// What `http.send` may reach, its clients and its cache.
pub struct HttpSend {
    rules: Vec<HostRule>,
    cfg: HttpSendConfig,
    client: reqwest::Client,
    redirecting: reqwest::Client,
    cache: quick_cache::sync::Cache<String, Arc<Cached>, CachedWeight>,
    metrics: RemoteMetrics,
}

#[derive(Clone)]
struct CachedWeight;

impl quick_cache::Weighter<String, Arc<Cached>> for CachedWeight {
    fn weight(&self, key: &String, value: &Arc<Cached>) -> u64 {
        key.len() as u64 + value.weight
    }
}

impl HttpSend {
    /// Builds the clients (reading `ca_file`, blocking) for a validated configuration;
    /// `watchers` gains one for `ca_file`.
    pub fn new(
        cfg: &HttpSendConfig,
        metrics: RemoteMetrics,
        watchers: &mut Vec<crate::reload::Watcher>,
    ) -> anyhow::Result<HttpSend> {
        let rules = cfg
            .allowed_hosts
            .iter()
            .map(|h| HostRule::parse(h).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let http = crate::sync::HttpConfig {
            connect_timeout_seconds: cfg.max_timeout_seconds,
            read_timeout_seconds: cfg.max_timeout_seconds,
            ca_file: cfg.ca_file.clone(),
            ..Default::default()
        };
        watchers.extend(crate::tls::ClientTls::watcher_of(
            "remote_tls",
            "remote_calls.http_send",
            crate::sync::download::client_files(&http),
        ));
        let read = Duration::from_secs(cfg.max_timeout_seconds);
        let client = crate::sync::download::client_builder(&http, read)?
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let allowed = rules.clone();
        let redirecting = crate::sync::download::client_builder(&http, read)?
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                } else if let Err(e) = check_host(&allowed, attempt.url()) {
                    attempt.error(e)
                } else {
                    attempt.follow()
                }
            }))
            .build()?;
        let cache_bytes = cfg.cache_max_bytes.max(1);
        Ok(HttpSend {
            rules,
            cfg: cfg.clone(),
            client,
            redirecting,
            // The estimate only sizes the shards; the byte budget is the bound.
            cache: quick_cache::sync::Cache::with_weighter(
                (cache_bytes / 4096).clamp(16, 1 << 20) as usize,
                cache_bytes,
                CachedWeight,
            ),
            metrics,
        })
    }

    /// The answer to `call` without the network: a refusal, or a cached response.
    pub fn cached(&self, call: &Call) -> Option<Answer> {
        let req = match self.parse(call) {
            Ok(r) => r,
            Err((e, raise)) => return Some(self.failed(e, raise)),
        };
        if req.cache == Caching::Off {
            return None;
        }
        let hit = self.cache.get(&call.key)?;
        if hit.expires <= Instant::now() {
            self.cache.remove(&call.key);
            return None;
        }
        self.metrics.http_send("cache_hit");
        Some(Answer::Value(hit.value.clone()))
    }

    /// Makes the request of `call`.
    pub async fn perform(&self, call: &Call) -> Answer {
        let req = match self.parse(call) {
            Ok(r) => r,
            Err((e, raise)) => return self.failed(e, raise),
        };
        let raise = req.raise_error;
        let started = Instant::now();
        let outcome = self.send(req).await;
        self.metrics.remote_duration(
            regent_policy::builtins::remote::HTTP_SEND,
            started.elapsed(),
        );
        match outcome {
            Ok((value, keep)) => {
                self.metrics.http_send("ok");
                if let Some(ttl) = keep {
                    let weight = value.to_json_str().map_or(1024, |s| s.len() as u64);
                    self.cache.insert(
                        call.key.clone(),
                        Arc::new(Cached {
                            value: value.clone(),
                            expires: Instant::now() + ttl,
                            weight,
                        }),
                    );
                }
                Answer::Value(value)
            }
            Err(e) => self.failed(e, raise),
        }
    }

    fn failed(&self, e: SendError, raise: bool) -> Answer {
        self.metrics.http_send(e.result);
        tracing::debug!(error = %e.message, "http.send failed");
        if raise {
            return Answer::Raise(e.message);
        }
        let code = match e.result {
            "transport" | "timeout" | "too_large" => "eval_http_send_network_error",
            _ => "eval_http_send_internal_error",
        };
        Answer::Value(Value::from(json!({
            "status_code": 0,
            "error": {"code": code, "message": e.message},
        })))
    }

    /// The request object of `call`, checked against the configuration. The error comes with
    /// whether to raise it (`raise_error`, true when the object cannot be read).
    fn parse(&self, call: &Call) -> Result<HttpRequest, (SendError, bool)> {
        let raw = match call.args.first() {
            Some(v) => serde_json::to_value(v).unwrap_or(Json::Null),
            None => Json::Null,
        };
        let Json::Object(obj) = raw else {
            return Err((
                send_error("bad_request", "the request must be an object"),
                true,
            ));
        };
        let raise = raises(&obj);
        parse_request(&obj, &self.cfg)
            .and_then(|req| {
                check_host(&self.rules, &req.url).map_err(|m| send_error("not_allowed", m))?;
                Ok(req)
            })
            .map_err(|e| (e, raise))
    }

    async fn send(&self, req: HttpRequest) -> Result<(Value, Option<Duration>), SendError> {
        let client = if req.enable_redirect {
            &self.redirecting
        } else {
            &self.client
        };
        let url = req.url.to_string();
        let timeout = req.timeout;
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                send_error("timeout", format!("{url}: no answer within {timeout:?}"))
            } else {
                send_error("transport", format!("{url}: {e}"))
            }
        };
        let mut builder = client
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(body) = req.body {
            builder = builder.body(body);
        }
        let limit = self.cfg.max_response_bytes;
        let work = async {
            let mut resp = builder.send().await.map_err(transport)?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let too_large = || {
                send_error(
                    "too_large",
                    format!(
                        "{url}: response larger than remote_calls.http_send.max_response_bytes ({limit})"
                    ),
                )
            };
            if resp.content_length().is_some_and(|n| n > limit) {
                return Err(too_large());
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(transport)? {
                if (body.len() + chunk.len()) as u64 > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, headers, body))
        };
        let (status, headers, body) = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(send_error(
                    "timeout",
                    format!("{}: no answer within {timeout:?}", req.url),
                ))
            }
        };
        let keep = match req.cache {
            _ if !CACHEABLE.contains(&status.as_u16()) => None,
            Caching::Off => None,
            Caching::Forced(d) => Some(d),
            Caching::Http => http_max_age(&headers),
        };
        let value = response_object(status, &headers, &body, req.force_json_decode);
        Ok((value, keep))
    }
}

/// OPA's response object.
fn response_object(
    status: reqwest::StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    force_json: bool,
) -> Value {
    let mut names = Map::new();
    for (name, value) in headers {
        let entry = names
            .entry(name.as_str().to_string())
            .or_insert_with(|| Json::Array(Vec::new()));
        if let Json::Array(values) = entry {
            values.push(Json::String(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        }
    }
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || m.ends_with("+json")
        })
        .unwrap_or(false);
    let raw = String::from_utf8_lossy(body).into_owned();
    let decoded = if is_json || force_json {
        serde_json::from_slice::<Json>(body).unwrap_or(Json::Null)
    } else {
        Json::Null
    };
    Value::from(json!({
        "status": status.to_string(),
        "status_code": status.as_u16(),
        "headers": names,
        "raw_body": raw,
        "body": decoded,
    }))
}

/// How long `Cache-Control` lets a response be reused.
fn http_max_age(headers: &HeaderMap) -> Option<Duration> {
    let cc = headers
        .get(CACHE_CONTROL)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    let directives: Vec<&str> = cc.split(',').map(str::trim).collect();
    if directives
        .iter()
        .any(|d| *d == "no-store" || *d == "no-cache")
    {
        return None;
    }
    directives.iter().find_map(|d| {
        let secs = d
            .strip_prefix("max-age=")?
            .trim_matches('"')
            .parse::<u64>()
            .ok()?;
        (secs > 0).then(|| Duration::from_secs(secs))
    })
}

/// Whether `url` may be requested under `rules`.
fn check_host(rules: &[HostRule], url: &url::Url) -> Result<(), String> {
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(format!("{url}: no host")),
    };
    let port = url.port_or_known_default().unwrap_or(0);
    if rules.iter().any(|r| r.allows(&host, port)) {
        Ok(())
    } else {
        Err(format!(
            "host {host:?} (port {port}) is not in remote_calls.http_send.allowed_hosts"
        ))
    }
}

fn parse_request(obj: &Map<String, Json>, cfg: &HttpSendConfig) -> Result<HttpRequest, SendError> {
    let bad = |m: String| send_error("bad_request", m);
    for key in obj.keys() {
        if UNSUPPORTED.contains(&key.as_str()) {
            return Err(bad(format!(
                "request field {key:?} is not supported by Regent"
            )));
        }
        if ![
            "method",
            "url",
            "headers",
            "body",
            "raw_body",
            "enable_redirect",
            "force_json_decode",
            "raise_error",
            "timeout",
            "cache",
            "force_cache",
            "force_cache_duration_seconds",
        ]
        .contains(&key.as_str())
        {
            return Err(bad(format!("unknown request field {key:?}")));
        }
    }
    let string = |k: &str| match obj.get(k) {
        Some(Json::String(s)) => Ok(s.as_str()),
        Some(_) => Err(bad(format!("{k:?} must be a string"))),
        None => Err(bad(format!("{k:?} is required"))),
    };
    let flag = |k: &str| match obj.get(k) {
        None => Ok(false),
        Some(Json::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("{k:?} must be a boolean"))),
    };
    let method = reqwest::Method::from_bytes(string("method")?.to_ascii_uppercase().as_bytes())
        .map_err(|_| bad("invalid \"method\"".into()))?;
    let raw_url = string("url")?;
    let url = url::Url::parse(raw_url).map_err(|e| bad(format!("invalid url {raw_url:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!("url {raw_url:?}: only http and https")));
    }
    let mut headers = HeaderMap::new();
    match obj.get("headers") {
        None | Some(Json::Null) => {}
        Some(Json::Object(h)) => {
            for (k, v) in h {
                let Json::String(v) = v else {
                    return Err(bad(format!("header {k:?} must be a string")));
                };
                let name = HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| bad(format!("invalid header name {k:?}")))?;
                let value = HeaderValue::from_str(v)
                    .map_err(|_| bad(format!("invalid value of header {k:?}")))?;
                headers.append(name, value);
            }
        }
        Some(_) => return Err(bad("\"headers\" must be an object".into())),
    }
    let body = match (obj.get("body"), obj.get("raw_body")) {
        (Some(_), Some(_)) => return Err(bad("give \"body\" or \"raw_body\", not both".into())),
        (Some(b), None) => {
            if !headers.contains_key(CONTENT_TYPE) {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Some(serde_json::to_vec(b).map_err(|e| bad(format!("body: {e}")))?)
        }
        (None, Some(Json::String(s))) => Some(s.as_bytes().to_vec()),
        (None, Some(_)) => return Err(bad("\"raw_body\" must be a string".into())),
        (None, None) => None,
    };
    let max = Duration::from_secs(cfg.max_timeout_seconds);
    let timeout =
        match obj.get("timeout") {
            None => Duration::from_secs(cfg.timeout_seconds),
            Some(Json::Number(n)) => Duration::from_nanos(n.as_u64().ok_or_else(|| {
                bad("\"timeout\" must be a positive number of nanoseconds".into())
            })?),
            Some(Json::String(s)) => {
                go_duration(s).ok_or_else(|| bad(format!("invalid \"timeout\" {s:?}")))?
            }
            Some(_) => return Err(bad("\"timeout\" must be a string or a number".into())),
        };
    if timeout.is_zero() || timeout > max {
        return Err(bad(format!(
            "\"timeout\" must be above 0 and at most remote_calls.http_send.max_timeout_seconds ({}s)",
            cfg.max_timeout_seconds
        )));
    }
    let cache = if flag("force_cache")? {
        match obj.get("force_cache_duration_seconds") {
            Some(Json::Number(n)) if n.as_u64().is_some_and(|s| s > 0) => {
                Caching::Forced(Duration::from_secs(n.as_u64().unwrap_or(1)))
            }
            Some(_) => {
                return Err(bad(
                    "\"force_cache_duration_seconds\" must be a positive integer".into(),
                ))
            }
            None => {
                return Err(bad(
                    "\"force_cache\" is set but \"force_cache_duration_seconds\" is missing".into(),
                ))
            }
        }
    } else if flag("cache")? {
        Caching::Http
    } else {
        Caching::Off
    };
    Ok(HttpRequest {
        method,
        url,
        headers,
        body,
        enable_redirect: flag("enable_redirect")?,
        force_json_decode: flag("force_json_decode")?,
        raise_error: raises(obj),
        timeout,
        cache,
    })
}

/// `raise_error`, whose default is `true`: read before the rest, so a request that cannot be
/// read still fails the way it asked.
fn raises(obj: &Map<String, Json>) -> bool {
    !matches!(obj.get("raise_error"), Some(Json::Bool(false)))
}

/// A Go duration string (`"1.5s"`, `"300ms"`, `"1m30s"`).
fn go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += number * scale;
    }
    (total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HttpSendConfig {
        HttpSendConfig::default()
    }

    fn parse(j: Json) -> Result<HttpRequest, String> {
        let Json::Object(o) = j else { panic!() };
        parse_request(&o, &cfg()).map_err(|e| e.message)
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(go_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(go_duration("5"), None);
        assert_eq!(go_duration("5 parsecs"), None);
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let ok = parse(json!({"method": "get", "url": "https://a/x", "body": {"q": 1}})).unwrap();
        assert_eq!(ok.method, reqwest::Method::GET);
        assert_eq!(ok.body.as_deref(), Some(&b"{\"q\":1}"[..]));
        assert_eq!(ok.headers[CONTENT_TYPE], "application/json");
        for (req, needle) in [
            (json!({"url": "https://a"}), "\"method\" is required"),
            (
                json!({"method": "GET", "url": "ftp://a"}),
                "only http and https",
            ),
            (
                json!({"method": "GET", "url": "https://a", "tls_client_cert": "x"}),
                "\"tls_client_cert\" is not supported",
            ),
            (
                json!({"method": "GET", "url": "https://a", "colour": 1}),
                "unknown request field",
            ),
            (
                json!({"method": "GET", "url": "https://a", "force_cache": true}),
                "force_cache_duration_seconds\" is missing",
            ),
            (
                json!({"method": "GET", "url": "https://a", "timeout": "1h"}),
                "max_timeout_seconds",
            ),
            (
                json!({"method": "GET", "url": "https://a", "headers": {"x": 1}}),
                "header \"x\" must be a string",
            ),
        ] {
            let e = parse(req.clone()).unwrap_err();
            assert!(e.contains(needle), "{req}: {e}");
        }
    }

    #[test]
    fn max_age_reads_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=30"),
        );
        assert_eq!(http_max_age(&h), Some(Duration::from_secs(30)));
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=30, no-store"),
        );
        assert_eq!(http_max_age(&h), None);
    }
}
