//! HTTP download of one bundle: conditional GET, long polling, size limit, auth.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;

use super::config::HttpConfig;

/// Content type by which a bundle server says it supports long polling.
pub const LONG_POLL_CONTENT_TYPE: &str = "application/vnd.openpolicyagent.bundles";

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Could not build the HTTP client (bad CA or client certificate files).
    #[error("http client setup: {0}")]
    Setup(String),
    /// The bearer token file could not be read.
    #[error("reading bearer token file {path}: {source}")]
    Token {
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
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
    bearer_token_file: Option<PathBuf>,
}

fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, DownloadError> {
    std::fs::read(path)
        .map_err(|e| DownloadError::Setup(format!("reading {what} {}: {e}", path.display())))
}

fn build_client(
    http: &HttpConfig,
    read_timeout: Duration,
) -> Result<reqwest::Client, DownloadError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(http.connect_timeout_seconds))
        .read_timeout(read_timeout)
        .user_agent(concat!("regent-sidecar/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &http.ca_file {
        let pem = read_pem("ca_file", ca)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| DownloadError::Setup(format!("ca_file {}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(DownloadError::Setup(format!(
                "ca_file {} holds no certificate",
                ca.display()
            )));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&http.client_cert_file, &http.client_key_file) {
        let mut pem = read_pem("client_cert_file", cert)?;
        pem.push(b'\n');
        pem.extend(read_pem("client_key_file", key)?);
        let id = reqwest::Identity::from_pem(&pem)
            .map_err(|e| DownloadError::Setup(format!("client certificate/key: {e}")))?;
        b = b.identity(id);
    }
    b.build()
        .map_err(|e| DownloadError::Setup(format!("building HTTP client: {e}")))
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
            bearer_token_file: http.bearer_token_file.clone(),
        })
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
    pub async fn fetch(&mut self) -> Result<Fetched, DownloadError> {
        let long_poll = self.long_polling();
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
        if let Some(path) = &self.bearer_token_file {
            // Re-read every time so a rotated token is picked up without a restart.
            let token = std::fs::read_to_string(path).map_err(|source| DownloadError::Token {
                path: path.clone(),
                source,
            })?;
            req = req.bearer_auth(token.trim());
        }
        let transport = |source| DownloadError::Transport {
            url: self.url.clone(),
            source,
        };
        let mut resp = req.send().await.map_err(transport)?;
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
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if bytes.len() as u64 + chunk.len() as u64 > self.max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.is_empty() {
            return Ok(Fetched::NotModified);
        }
        Ok(Fetched::Bundle { bytes, etag })
    }
}
