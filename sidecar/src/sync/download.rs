//! HTTP download of one bundle: conditional GET, long polling, size limit, auth, and the
//! time bounds of a download: an overall deadline and a minimum transfer rate.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;

use super::config::HttpConfig;
use super::credentials::{Bearer, TokenError};

/// Content type by which a bundle server says it supports long polling.
pub const LONG_POLL_CONTENT_TYPE: &str = "application/vnd.openpolicyagent.bundles";

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Could not build the HTTP client (bad CA or client certificate files).
    #[error("http client setup: {0}")]
    Setup(String),
    /// The bearer token file could not be read or holds no usable token.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// Connect, TLS, timeout or read error.
    #[error("request to {url} failed: {source}")]
    Transport {
        /// Bundle URL.
        url: String,
        /// Underlying error.
        source: reqwest::Error,
    },
    /// A status other than 200 or 304.
    #[error("bundle server answered HTTP {status} for {url}")]
    Status {
        /// Bundle URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The download ran past `http.download_timeout_seconds` (plus the long-poll wait).
    #[error("download from {url} did not complete within sync.http.download_timeout_seconds ({timeout:?}) + long-poll wait ({wait:?}); aborted")]
    Deadline {
        /// Bundle URL.
        url: String,
        /// `download_timeout_seconds`.
        timeout: Duration,
        /// The long-poll wait of the request (zero when it did not long-poll).
        wait: Duration,
    },
    /// The body arrived slower than `http.min_transfer_bytes_per_second`.
    #[error("download from {url} too slow: {received} bytes in {window:?}, below sync.http.min_transfer_bytes_per_second ({min_rate}) over sync.http.min_transfer_window_seconds; aborted")]
    TooSlow {
        /// Bundle URL.
        url: String,
        /// Bytes received in the window that failed.
        received: u64,
        /// How long that window lasted.
        window: Duration,
        /// The configured minimum rate in bytes per second.
        min_rate: u64,
    },
    /// The bundle is larger than `max_bundle_bytes`.
    #[error("bundle from {url} exceeds max_bundle_bytes ({limit} bytes)")]
    TooLarge {
        /// Bundle URL.
        url: String,
        /// The limit.
        limit: u64,
    },
}

impl DownloadError {
    /// HTTP status of the failed response, if there was one.
    pub fn http_code(&self) -> Option<u16> {
        match self {
            DownloadError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True if the download was given up because time ran out: the overall deadline, the
    /// minimum transfer rate, or the HTTP client's connect/read timeouts.
    pub fn is_timeout(&self) -> bool {
        match self {
            DownloadError::Deadline { .. } | DownloadError::TooSlow { .. } => true,
            DownloadError::Transport { source, .. } => source.is_timeout(),
            _ => false,
        }
    }
}

/// Enforces a minimum transfer rate: the bytes received during each window of `window` must
/// reach `min_rate × window`. A body that ends before its window closes is never judged, so a
/// small bundle is not refused for being small.
#[derive(Debug)]
pub struct RateMeter {
    min_per_window: u64,
    window: Duration,
    window_start: Instant,
    received: u64,
}

impl RateMeter {
    /// A meter starting its first window at `now`; `None` when `min_rate` is 0 (no check).
    pub fn new(min_rate: u64, window: Duration, now: Instant) -> Option<Self> {
        if min_rate == 0 || window.is_zero() {
            return None;
        }
        let per_window = (min_rate as f64 * window.as_secs_f64()).ceil();
        Some(RateMeter {
            min_per_window: per_window.min(u64::MAX as f64) as u64,
            window,
            window_start: now,
            received: 0,
        })
    }

    /// Time left in the current window at `now` (zero once it is over).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.window
            .saturating_sub(now.saturating_duration_since(self.window_start))
    }

    /// Record `n` bytes received at `now`, then judge the window if it is over.
    pub fn add(&mut self, n: usize, now: Instant) -> Result<(), (u64, Duration)> {
        self.received = self.received.saturating_add(n as u64);
        self.check(now)
    }

    /// Judge the current window if it is over at `now`: `Err((received, elapsed))` if too few
    /// bytes came in it, else start the next window.
    pub fn check(&mut self, now: Instant) -> Result<(), (u64, Duration)> {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < self.window {
            return Ok(());
        }
        if self.received < self.min_per_window {
            return Err((self.received, elapsed));
        }
        self.window_start = now;
        self.received = 0;
        Ok(())
    }
}

/// Outcome of one successful request.
#[derive(Debug)]
pub enum Fetched {
    /// 304, or a 200 with an empty body: keep what is active.
    NotModified,
    /// A new bundle body.
    Bundle {
        /// The raw .tar.gz bytes.
        bytes: Vec<u8>,
        /// The response ETag, if any.
        etag: Option<String>,
    },
}

/// Downloads one bundle URL, remembering the ETag to send and whether the server long-polls.
pub struct Downloader {
    url: String,
    client: reqwest::Client,
    long_poll_client: Option<reqwest::Client>,
    long_poll_wait: u64,
    long_poll_supported: bool,
    etag: Option<String>,
    max_bytes: u64,
    bearer: Option<Bearer>,
    download_timeout: Duration,
    min_rate: u64,
    rate_window: Duration,
    last_status: Option<u16>,
}

/// The TLS files of `http` (`ca_file`, `client_cert_file` with `client_key_file`).
pub fn client_files(http: &HttpConfig) -> crate::tls::ClientFiles {
    crate::tls::ClientFiles {
        ca_file: http.ca_file.clone(),
        client_identity: http
            .client_cert_file
            .clone()
            .zip(http.client_key_file.clone()),
    }
}

/// The HTTP client of every request to the bundle server (bundles and status reports): rustls,
/// the connect timeout, `read_timeout` between reads, the extra CA and the client certificate of
/// `http`. The TLS files are read now, and re-read for new connections when a reload watcher
/// of the same files sees them change ([`crate::tls::ClientTls`]).
pub(crate) fn build_client(
    http: &HttpConfig,
    read_timeout: Duration,
) -> Result<reqwest::Client, DownloadError> {
    client_builder(http, read_timeout)?
        .build()
        .map_err(|e| DownloadError::Setup(format!("building HTTP client: {e}")))
}

/// [`build_client`]'s settings, for a caller that adds its own (a redirect policy).
pub(crate) fn client_builder(
    http: &HttpConfig,
    read_timeout: Duration,
) -> Result<reqwest::ClientBuilder, DownloadError> {
    let b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(http.connect_timeout_seconds))
        .read_timeout(read_timeout)
        .user_agent(concat!("regent-sidecar/", env!("CARGO_PKG_VERSION")));
    let files = client_files(http);
    if files.is_empty() {
        return Ok(b.use_rustls_tls());
    }
    let tls = crate::tls::client_config(&files).map_err(|e| DownloadError::Setup(e.to_string()))?;
    Ok(b.use_preconfigured_tls(tls))
}

impl Downloader {
    /// A downloader for `url`. `long_poll_wait` = 0 disables long polling.
    pub fn new(url: &str, http: &HttpConfig, long_poll_wait: u64) -> Result<Self, DownloadError> {
        let read = Duration::from_secs(http.read_timeout_seconds);
        let client = build_client(http, read)?;
        // A long-poll request legitimately stays silent for `wait` seconds, so it needs
        // its own client with a read timeout that covers the wait.
        let long_poll_client = if long_poll_wait > 0 {
            Some(build_client(
                http,
                Duration::from_secs(long_poll_wait) + read,
            )?)
        } else {
            None
        };
        Ok(Downloader {
            url: url.to_string(),
            client,
            long_poll_client,
            long_poll_wait,
            long_poll_supported: false,
            etag: None,
            max_bytes: http.max_bundle_bytes,
            bearer: Bearer::from_config(http),
            download_timeout: Duration::from_secs(http.download_timeout_seconds),
            min_rate: http.min_transfer_bytes_per_second,
            rate_window: Duration::from_secs(http.min_transfer_window_seconds),
            last_status: None,
        })
    }

    /// The overall deadline of the next request: `download_timeout_seconds`, plus the wait
    /// when it long-polls (the server may legitimately stay silent for all of it).
    pub fn deadline(&self) -> Duration {
        if self.long_polling() {
            self.download_timeout
                .saturating_add(Duration::from_secs(self.long_poll_wait))
        } else {
            self.download_timeout
        }
    }

    /// The bundle URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// HTTP status of the last response received, if the last request got one.
    pub fn last_status(&self) -> Option<u16> {
        self.last_status
    }

    /// ETag sent in `If-None-Match` on the next request.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// Set the ETag to send: the one of the last *activated* bundle.
    pub fn set_etag(&mut self, etag: Option<String>) {
        self.etag = etag;
    }

    /// True if the next request will long-poll.
    pub fn long_polling(&self) -> bool {
        self.long_poll_supported && self.long_poll_client.is_some()
    }

    /// One request. On 200 the ETag is NOT remembered: the caller sets it once the bundle
    /// is activated, so a bundle that fails to activate is downloaded again.
    ///
    /// The whole request, connect to last byte, is bounded by [`Downloader::deadline`], and the
    /// body by the minimum transfer rate; either aborts it (the connection is dropped).
    pub async fn fetch(&mut self) -> Result<Fetched, DownloadError> {
        self.last_status = None;
        let long_poll = self.long_polling();
        let limit = self.deadline();
        match tokio::time::timeout(limit, self.fetch_once(long_poll)).await {
            Ok(r) => r,
            Err(_) => Err(DownloadError::Deadline {
                url: self.url.clone(),
                timeout: self.download_timeout,
                wait: limit.saturating_sub(self.download_timeout),
            }),
        }
    }

    async fn fetch_once(&mut self, long_poll: bool) -> Result<Fetched, DownloadError> {
        let client = match (&self.long_poll_client, long_poll) {
            (Some(c), true) => c,
            _ => &self.client,
        };
        let mut req = client.get(&self.url);
        if let Some(etag) = &self.etag {
            if let Ok(v) = HeaderValue::from_str(etag) {
                req = req.header(IF_NONE_MATCH, v);
            }
        }
        req = if long_poll {
            req.header(
                "Prefer",
                format!("modes=snapshot,delta;wait={}", self.long_poll_wait),
            )
        } else {
            req.header("Prefer", "modes=snapshot,delta")
        };
        if let Some(bearer) = &self.bearer {
            req = req.header(AUTHORIZATION, bearer.header().await?);
        }
        let transport = |source| DownloadError::Transport {
            url: self.url.clone(),
            source,
        };
        let mut resp = req.send().await.map_err(transport)?;
        self.last_status = Some(resp.status().as_u16());
        match resp.status() {
            StatusCode::NOT_MODIFIED => return Ok(Fetched::NotModified),
            StatusCode::OK => {}
            s => {
                return Err(DownloadError::Status {
                    url: self.url.clone(),
                    status: s.as_u16(),
                })
            }
        }
        self.long_poll_supported = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().starts_with(LONG_POLL_CONTENT_TYPE))
            .unwrap_or(false);
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let too_large = || DownloadError::TooLarge {
            url: self.url.clone(),
            limit: self.max_bytes,
        };
        if let Some(len) = resp.content_length() {
            if len > self.max_bytes {
                return Err(too_large());
            }
        }
        let mut bytes = Vec::with_capacity(
            resp.content_length()
                .unwrap_or(0)
                .min(self.max_bytes)
                .min(64 * 1024 * 1024) as usize,
        );
        let mut meter = RateMeter::new(self.min_rate, self.rate_window, Instant::now());
        let too_slow = |(received, window)| DownloadError::TooSlow {
            url: self.url.clone(),
            received,
            window,
            min_rate: self.min_rate,
        };
        loop {
            let chunk = match &mut meter {
                None => resp.chunk().await.map_err(transport)?,
                Some(m) => {
                    let left = m.remaining(Instant::now());
                    match tokio::time::timeout(left, resp.chunk()).await {
                        Ok(c) => c.map_err(transport)?,
                        // The window closed with no chunk: judge it, then keep reading.
                        Err(_) => {
                            m.check(Instant::now()).map_err(too_slow)?;
                            continue;
                        }
                    }
                }
            };
            let Some(chunk) = chunk else { break };
            if bytes.len() as u64 + chunk.len() as u64 > self.max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
            if let Some(m) = &mut meter {
                m.add(chunk.len(), Instant::now()).map_err(too_slow)?;
            }
        }
        if bytes.is_empty() {
            return Ok(Fetched::NotModified);
        }
        Ok(Fetched::Bundle { bytes, etag })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_meter_judges_each_full_window() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(
            RateMeter::new(0, s(10), t0).is_none(),
            "0 disables the check"
        );
        let mut m = RateMeter::new(100, s(10), t0).unwrap();
        // Within the window nothing is judged, however little has arrived.
        m.add(1, t0 + s(9)).unwrap();
        assert_eq!(m.remaining(t0 + s(9)), s(1));
        // 1000 bytes needed per 10 s window.
        m.add(999, t0 + s(10)).unwrap();
        assert_eq!(m.remaining(t0 + s(10)), s(10), "next window started");
        m.add(500, t0 + s(15)).unwrap();
        assert_eq!(m.check(t0 + s(20)), Err((500, s(10))));
    }

    #[test]
    fn rate_meter_fails_a_silent_window() {
        let t0 = Instant::now();
        let mut m = RateMeter::new(1024, Duration::from_secs(1), t0).unwrap();
        assert_eq!(m.remaining(t0 + Duration::from_secs(2)), Duration::ZERO);
        assert!(m.check(t0 + Duration::from_millis(1500)).is_err());
    }

    #[test]
    fn deadline_adds_the_long_poll_wait_only_when_long_polling() {
        let http = HttpConfig {
            download_timeout_seconds: 60,
            ..HttpConfig::default()
        };
        let mut d = Downloader::new("http://127.0.0.1:1/b", &http, 30).unwrap();
        assert_eq!(d.deadline(), Duration::from_secs(60));
        d.long_poll_supported = true;
        assert_eq!(d.deadline(), Duration::from_secs(90));
        let mut d = Downloader::new("http://127.0.0.1:1/b", &http, 0).unwrap();
        d.long_poll_supported = true;
        assert_eq!(d.deadline(), Duration::from_secs(60));
    }
}
