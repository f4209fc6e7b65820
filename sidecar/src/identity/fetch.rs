//! One key set's fetcher: a task that keeps an issuer's JWKS current in the policy registry.
//!
//! - Fetches at start (in the background: listening never waits), then every `refresh_seconds`
//!   and on demand: a verification that meets an unknown `kid` (or no current set) wakes the task
//!   through a [`Notify`], which coalesces any number of wake-ups into one. The task does one
//!   fetch at a time (single-flight) and starts a demanded fetch no sooner than
//!   `min_refresh_interval_seconds` after the previous one began, so a flood of forged `kid`s
//!   costs the provider at most one request per interval.
//! - A response's `Cache-Control: max-age` can only bring the next scheduled refresh forward,
//!   never below `min_refresh_interval_seconds` nor past `refresh_seconds`; nothing else of HTTP
//!   caching is interpreted. An ETag is sent back as `If-None-Match`; a 304 confirms the keys.
//! - A failure keeps the last good set (stale-if-error) and retries after
//!   `min_refresh_interval_seconds`, doubling up to `refresh_seconds`. Once a set is older than
//!   `max_stale_seconds` it is dropped (the builtins also check the age on every call, so a stuck
//!   fetch cannot extend it).
//! - A new set is parsed with budgets (`max_bytes` while reading, JSON depth, key count); unusable
//!   keys are skipped with a log line; a set with no usable key is refused and the old one kept.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use regent_policy::builtins::keysets::{self, RemoteKeySet};
use reqwest::header::{CACHE_CONTROL, CONTENT_LENGTH, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::config::{check_provider_url, JwksSource};
use super::metrics::JwksMetrics;
use super::persist::{self, PersistedKeySet};

/// Why one refresh failed; [`FetchError::result`] is its `result` label.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The provider answered with a status other than 200 (or 304 to a conditional request).
    #[error("{url} answered HTTP {status}")]
    HttpStatus {
        /// URL requested.
        url: String,
        /// Status code.
        status: u16,
    },
    /// Connect, TLS or read error.
    #[error("request to {url} failed: {message}")]
    Transport {
        /// URL requested.
        url: String,
        /// What failed.
        message: String,
    },
    /// The request ran past `timeout_seconds`.
    #[error("request to {url} did not complete within {timeout:?}")]
    Timeout {
        /// URL requested.
        url: String,
        /// `timeout_seconds`.
        timeout: Duration,
    },
    /// The document is larger than `max_bytes`.
    #[error("{url}: document larger than max_bytes ({limit})")]
    TooLarge {
        /// URL requested.
        url: String,
        /// `max_bytes`.
        limit: u64,
    },
    /// Not a usable JWKS or discovery document.
    #[error("{url}: {message}")]
    Invalid {
        /// URL requested.
        url: String,
        /// What is wrong.
        message: String,
    },
}

impl FetchError {
    /// The `result` label of `regent_jwks_refresh_total`.
    pub fn result(&self) -> &'static str {
        match self {
            FetchError::HttpStatus { .. } => "http_status",
            FetchError::Transport { .. } => "transport",
            FetchError::Timeout { .. } => "timeout",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Invalid { .. } => "invalid",
        }
    }
}

/// What one GET returned.
enum Got {
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        max_age: Option<Duration>,
    },
}

/// GET `url` within `timeout`, reading at most `max_bytes` of body.
async fn get(
    client: &reqwest::Client,
    url: &str,
    etag: Option<&str>,
    max_bytes: u64,
    timeout: Duration,
) -> Result<Got, FetchError> {
    let transport = |e: reqwest::Error| {
        if e.is_timeout() {
            FetchError::Timeout {
                url: url.to_string(),
                timeout,
            }
        } else {
            FetchError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            }
        }
    };
    let work = async {
        let mut req = client.get(url).header(
            reqwest::header::ACCEPT,
            "application/jwk-set+json, application/json",
        );
        if let Some(etag) = etag {
            req = req.header(IF_NONE_MATCH, etag);
        }
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Got::NotModified);
        }
        if status != StatusCode::OK {
            return Err(FetchError::HttpStatus {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            limit: max_bytes,
        };
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_bytes) {
            return Err(too_large());
        }
        let new_etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let max_age = resp
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if bytes.len() as u64 + chunk.len() as u64 > max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Got::Body {
            bytes,
            etag: new_etag,
            max_age,
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout {
            url: url.to_string(),
            timeout,
        }),
    }
}

/// `max-age=N` of a Cache-Control value.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| {
        let (k, v) = d.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

/// What a key set's fetcher shares with the Checks that want it to refresh.
pub(crate) struct RefreshSignal {
    /// Wakes the fetcher; any number of wake-ups coalesce into one.
    wake: Notify,
    /// Refresh attempts ended so far: a waiting Check waits for it to change.
    ended: watch::Sender<u64>,
    /// Whether an attempt is running.
    running: AtomicBool,
    /// When the last attempt began, in milliseconds since `epoch` (`u64::MAX`: none yet).
    last_start_ms: AtomicU64,
    epoch: Instant,
    min_interval: Duration,
    wait: Duration,
}

impl RefreshSignal {
    pub(crate) fn new(src: &JwksSource) -> RefreshSignal {
        RefreshSignal {
            wake: Notify::new(),
            ended: watch::channel(0).0,
            running: AtomicBool::new(false),
            last_start_ms: AtomicU64::new(u64::MAX),
            epoch: Instant::now(),
            min_interval: Duration::from_secs(src.min_refresh_interval_seconds),
            wait: Duration::from_millis(src.refresh_wait_ms),
        }
    }

    fn started(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_start_ms.store(ms, Ordering::Release);
        self.running.store(true, Ordering::Release);
    }

    fn ended(&self) {
        self.running.store(false, Ordering::Release);
        self.ended.send_modify(|n| *n += 1);
    }

    /// Whether a refresh asked for now runs without waiting for `min_refresh_interval_seconds`
    /// (or is running already).
    fn imminent(&self) -> bool {
        if self.running.load(Ordering::Acquire) {
            return true;
        }
        match self.last_start_ms.load(Ordering::Acquire) {
            u64::MAX => true,
            ms => self.epoch.elapsed() >= Duration::from_millis(ms) + self.min_interval,
        }
    }
}

/// Wakes a fetcher when a verification wants a refresh, and lets a Check wait for one that
/// starts at once; never blocks.
pub(crate) struct NotifyHook(pub(crate) Arc<RefreshSignal>);

impl keysets::RefreshHook for NotifyHook {
    fn refresh_wanted(&self) {
        self.0.wake.notify_one();
    }

    fn wait_for_refresh(&self) -> Option<keysets::RefreshWait> {
        // A refresh held back by the rate limit would keep the Check past any sensible
        // ext_authz timeout; a flood of forged `kid`s then costs no waiting either.
        if self.0.wait.is_zero() || !self.0.imminent() {
            return None;
        }
        let mut ended = self.0.ended.subscribe();
        self.0.wake.notify_one();
        let wait = self.0.wait;
        Some(Box::pin(async move {
            let _ = tokio::time::timeout(wait, ended.changed()).await;
        }))
    }
}

/// The fetcher of one key set.
pub(crate) struct KeySetTask {
    pub(crate) src: JwksSource,
    pub(crate) client: reqwest::Client,
    pub(crate) metrics: JwksMetrics,
    /// File the last good set is persisted to, when persistence is on.
    pub(crate) persist: Option<PathBuf>,
    pub(crate) signal: Arc<RefreshSignal>,
    /// The raw JWKS in force and its ETag (what a 304 confirms).
    pub(crate) raw: Option<(String, Option<String>)>,
    /// `jwks_uri` read from the discovery document.
    pub(crate) discovered: Option<String>,
}

impl KeySetTask {
    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Runs until `shutdown` turns true (or its sender is dropped).
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let min_interval = Self::secs(self.src.min_refresh_interval_seconds);
        let refresh = Self::secs(self.src.refresh_seconds);
        let mut next = Instant::now();
        let mut last_start: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            let expiry = self.expiry();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep_until(next) => {}
                _ = self.signal.wake.notified() => {
                    if let Some(earliest) = last_start.map(|t| t + min_interval) {
                        if Instant::now() < earliest {
                            tracing::debug!(issuer = %self.src.issuer, "refresh wanted; waiting for min_refresh_interval_seconds");
                            tokio::select! {
                                _ = shutdown.changed() => return,
                                _ = tokio::time::sleep_until(earliest) => {}
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(expiry.unwrap_or(next)), if expiry.is_some() => {
                    self.drop_if_expired();
                    continue;
                }
            }
            if *shutdown.borrow() {
                return;
            }
            let started = Instant::now();
            last_start = Some(started);
            self.signal.started();
            let outcome = self.refresh_once().await;
            self.signal.ended();
            match outcome {
                Ok(max_age) => {
                    failures = 0;
                    let delay = max_age.map_or(refresh, |a| a.clamp(min_interval, refresh));
                    next = started + delay;
                    // Wake-ups stored while this fetch was in flight came from Checks evaluated
                    // against the previous set; the set just published answers them, and
                    // fetching again for them would only delay the next genuinely new `kid`.
                    let _ = futures::FutureExt::now_or_never(self.signal.wake.notified());
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let backoff = min_interval
                        .saturating_mul(1u32 << (failures - 1).min(16))
                        .min(refresh);
                    tracing::warn!(issuer = %self.src.issuer, error = %e, retry_in = ?backoff, "key set refresh failed; keeping the last good key set");
                    next = Instant::now() + backoff;
                }
            }
        }
    }

    /// When the key set in force passes `max_stale_seconds`, as a timer instant.
    fn expiry(&self) -> Option<Instant> {
        let state = keysets::state(&self.src.issuer)?;
        state.keys.as_ref()?;
        let age = state.age(SystemTime::now())?;
        let left = state.max_stale.checked_sub(age).unwrap_or(Duration::ZERO);
        // Just past the limit, so the check below sees it expired.
        Some(Instant::now() + left + Duration::from_millis(1))
    }

    fn drop_if_expired(&mut self) {
        let now = SystemTime::now();
        let Some(state) = keysets::state(&self.src.issuer) else {
            return;
        };
        if state.keys.is_some() && state.expired(now) {
            tracing::error!(issuer = %self.src.issuer, max_stale_seconds = self.src.max_stale_seconds, "key set is past max_stale_seconds: dropped; its tokens are refused until a refresh succeeds");
            keysets::update(&self.src.issuer, |s| s.keys = None);
            self.raw = None;
        }
    }

    /// The JWKS URL: configured, or read from the discovery document (once, until a failure).
    async fn jwks_url(&mut self) -> Result<String, FetchError> {
        if let Some(u) = &self.src.jwks_url {
            return Ok(u.clone());
        }
        if let Some(u) = &self.discovered {
            return Ok(u.clone());
        }
        let url = self.src.discovery_url.clone().unwrap_or_default();
        let invalid = |message: String| FetchError::Invalid {
            url: url.clone(),
            message,
        };
        let Got::Body { bytes, .. } = get(
            &self.client,
            &url,
            None,
            self.src.max_bytes,
            Self::secs(self.src.timeout_seconds),
        )
        .await?
        else {
            return Err(invalid("unexpected 304".into()));
        };
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("discovery document is not JSON: {e}")))?;
        let issuer = doc.get("issuer").and_then(|v| v.as_str());
        if issuer != Some(self.src.issuer.as_str()) {
            return Err(invalid(format!(
                "discovery document names issuer {issuer:?}, not the configured {:?}",
                self.src.issuer
            )));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| invalid("discovery document has no string jwks_uri".into()))?;
        check_provider_url(jwks_uri).map_err(|m| invalid(format!("jwks_uri: {m}")))?;
        self.discovered = Some(jwks_uri.to_string());
        Ok(jwks_uri.to_string())
    }

    /// One refresh; on success, the response's max-age if it gave one.
    async fn refresh_once(&mut self) -> Result<Option<Duration>, FetchError> {
        let outcome = self.fetch_and_publish().await;
        let now = SystemTime::now();
        match &outcome {
            Ok((result, _)) => {
                self.metrics.refresh(&self.src.issuer, result);
                keysets::update(&self.src.issuer, |s| {
                    s.last_error = None;
                    s.last_attempt = Some(now);
                });
            }
            Err(e) => {
                self.metrics.refresh(&self.src.issuer, e.result());
                // A discovered URL that fails may have moved: discover again next time.
                self.discovered = None;
                let message = e.to_string();
                keysets::update(&self.src.issuer, |s| {
                    s.last_error = Some(message);
                    s.last_attempt = Some(now);
                });
            }
        }
        outcome.map(|(_, max_age)| max_age)
    }

    async fn fetch_and_publish(&mut self) -> Result<(&'static str, Option<Duration>), FetchError> {
        let url = self.jwks_url().await?;
        let etag = self.raw.as_ref().and_then(|(_, e)| e.clone());
        let got = get(
            &self.client,
            &url,
            etag.as_deref(),
            self.src.max_bytes,
            Self::secs(self.src.timeout_seconds),
        )
        .await?;
        let now = SystemTime::now();
        match got {
            Got::NotModified => {
                keysets::update(&self.src.issuer, |s| s.fetched_at = Some(now));
                if let Some((raw, etag)) = self.raw.clone() {
                    self.persist(raw, etag, now).await;
                }
                Ok(("not_modified", None))
            }
            Got::Body {
                bytes,
                etag,
                max_age,
            } => {
                let (set, skipped) =
                    RemoteKeySet::parse(&bytes).map_err(|e| FetchError::Invalid {
                        url: url.clone(),
                        message: e.to_string(),
                    })?;
                for s in &skipped {
                    tracing::warn!(issuer = %self.src.issuer, url = %url, "unusable key skipped: {s}");
                }
                let raw = String::from_utf8_lossy(&bytes).into_owned();
                let changed = self.raw.as_ref().is_none_or(|(r, _)| *r != raw);
                if changed {
                    tracing::info!(issuer = %self.src.issuer, keys = set.len(), kids = ?set.kids(), "key set updated");
                }
                let set = Arc::new(set);
                keysets::update(&self.src.issuer, |s| {
                    s.keys = Some(set);
                    s.fetched_at = Some(now);
                });
                self.raw = Some((raw.clone(), etag.clone()));
                self.persist(raw, etag, now).await;
                Ok(("ok", max_age))
            }
        }
    }

    /// Persists the set in force; a failure is logged (the keys stay in use).
    async fn persist(&self, jwks: String, etag: Option<String>, fetched_at: SystemTime) {
        let Some(path) = self.persist.clone() else {
            return;
        };
        let issuer = self.src.issuer.clone();
        let set = PersistedKeySet {
            jwks,
            fetched_at,
            etag,
        };
        let issuer2 = issuer.clone();
        match tokio::task::spawn_blocking(move || persist::save(&path, &issuer2, &set)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(issuer = %issuer, error = %e, "cannot persist the key set")
            }
            Err(e) => tracing::error!(issuer = %issuer, error = %e, "key set persist task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=600, must-revalidate"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("MAX-AGE=\"5\""), Some(Duration::from_secs(5)));
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn every_result_label_is_listed() {
        let url = String::new();
        for e in [
            FetchError::HttpStatus {
                url: url.clone(),
                status: 500,
            },
            FetchError::Transport {
                url: url.clone(),
                message: String::new(),
            },
            FetchError::Timeout {
                url: url.clone(),
                timeout: Duration::ZERO,
            },
            FetchError::TooLarge {
                url: url.clone(),
                limit: 0,
            },
            FetchError::Invalid {
                url: url.clone(),
                message: String::new(),
            },
        ] {
            assert!(super::super::metrics::REFRESH_RESULTS.contains(&e.result()));
        }
        for r in ["ok", "not_modified"] {
            assert!(super::super::metrics::REFRESH_RESULTS.contains(&r));
        }
    }
}
