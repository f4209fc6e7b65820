//! Decision logs shipped to a remote receiver with OPA's decision log API, so existing OPA log
//! receivers work: `POST <url>` of a gzipped JSON array of events (`Content-Encoding: gzip`,
//! `Content-Type: application/json`), each chunk at most `upload_size_limit_bytes` gzipped.
//!
//! The writer thread renders and masks each event and hands its JSON to the `Buffer`, which
//! holds at most `buffer_size_limit_bytes` of events and drops the oldest beyond that (counted).
//! An upload task takes chunks from the front every `min_delay_seconds`-`max_delay_seconds`
//! (uniformly random, as OPA does, so a fleet does not upload in step), and on a failure puts
//! the chunk back in front and retries after a jittered, doubling delay. Nothing here is on the
//! Check's path: a slow or failing receiver only fills the buffer. At shutdown what is buffered
//! is uploaded within `shutdown_flush_seconds`; what cannot be is counted as dropped.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::write::GzEncoder;
use rand::Rng as _;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::spool::{Spool, SpoolConfig};
use super::DecisionLogMetrics;
use crate::sync::config::{HttpConfig, Secret};
use crate::sync::credentials::Bearer;

/// Longest delay between two attempts while uploads fail.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// `decision_logs.upload:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    /// Where chunks are POSTed (OPA: the service URL plus `resource`, default `/logs`).
    pub url: String,
    /// File holding a bearer token, re-read for every upload (a rotated Secret needs no restart).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// The token itself (OPA's `credentials.bearer.token`); not with `bearer_token_file`.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// Scheme of the `Authorization` header.
    #[serde(default = "default_scheme")]
    pub bearer_scheme: String,
    /// PEM CA bundle trusted in addition to the built-in web roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS, with `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// PEM key of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Shortest time between two uploads.
    #[serde(default = "default_min_delay")]
    pub min_delay_seconds: u64,
    /// Longest time between two uploads.
    #[serde(default = "default_max_delay")]
    pub max_delay_seconds: u64,
    /// Largest chunk, gzipped.
    #[serde(default = "default_upload_size_limit")]
    pub upload_size_limit_bytes: u64,
    /// Most bytes of events (uncompressed JSON) waiting for upload; beyond it the oldest go.
    #[serde(default = "default_buffer_size_limit")]
    pub buffer_size_limit_bytes: u64,
    /// Longest one upload may take, connect to answer.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// How long shutdown waits for what is buffered to be uploaded.
    #[serde(default = "default_shutdown_flush")]
    pub shutdown_flush_seconds: u64,
    /// Spool to disk what the memory buffer cannot hold, and what shutdown could not upload.
    #[serde(default)]
    pub spool: Option<SpoolConfig>,
}

fn default_scheme() -> String {
    "Bearer".into()
}
fn default_min_delay() -> u64 {
    5
}
fn default_max_delay() -> u64 {
    10
}
fn default_upload_size_limit() -> u64 {
    32_768
}
fn default_buffer_size_limit() -> u64 {
    64 << 20
}
fn default_timeout() -> u64 {
    10
}
fn default_shutdown_flush() -> u64 {
    5
}

impl UploadConfig {
    /// The defaults, uploading to `url`.
    pub fn for_url(url: String) -> UploadConfig {
        UploadConfig {
            url,
            bearer_token_file: None,
            bearer_token: None,
            bearer_scheme: default_scheme(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            min_delay_seconds: default_min_delay(),
            max_delay_seconds: default_max_delay(),
            upload_size_limit_bytes: default_upload_size_limit(),
            buffer_size_limit_bytes: default_buffer_size_limit(),
            timeout_seconds: default_timeout(),
            shutdown_flush_seconds: default_shutdown_flush(),
            spool: None,
        }
    }

    /// A problem with the section, as `(key below decision_logs.upload, message)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| ("url", e.to_string()))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(("url", format!("must be http(s), got {:?}", self.url)));
        }
        if self.bearer_token_file.is_some() && self.bearer_token.is_some() {
            return Err((
                "bearer_token",
                "give bearer_token_file or bearer_token, not both".into(),
            ));
        }
        crate::sync::credentials::check_inline(
            &self.bearer_scheme,
            self.bearer_token.as_ref().map(Secret::expose),
        )
        .map_err(|m| ("bearer_token", m.to_string()))?;
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err((
                "client_cert_file",
                "client_cert_file and client_key_file must be given together".into(),
            ));
        }
        for (key, v) in [
            ("min_delay_seconds", self.min_delay_seconds),
            ("timeout_seconds", self.timeout_seconds),
            ("buffer_size_limit_bytes", self.buffer_size_limit_bytes),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if self.max_delay_seconds < self.min_delay_seconds {
            return Err((
                "max_delay_seconds",
                format!(
                    "{} is less than min_delay_seconds ({})",
                    self.max_delay_seconds, self.min_delay_seconds
                ),
            ));
        }
        if self.upload_size_limit_bytes < 1024 {
            return Err((
                "upload_size_limit_bytes",
                format!("at least 1024, got {}", self.upload_size_limit_bytes),
            ));
        }
        if let Some(spool) = &self.spool {
            spool.validate()?;
        }
        Ok(())
    }

    /// The HTTP settings of the uploads, in the form the bundle client takes.
    fn http(&self) -> HttpConfig {
        HttpConfig {
            connect_timeout_seconds: self.timeout_seconds,
            read_timeout_seconds: self.timeout_seconds,
            bearer_token_file: self.bearer_token_file.clone(),
            bearer_token: self.bearer_token.clone(),
            bearer_scheme: self.bearer_scheme.clone(),
            ca_file: self.ca_file.clone(),
            client_cert_file: self.client_cert_file.clone(),
            client_key_file: self.client_key_file.clone(),
            ..HttpConfig::default()
        }
    }

    /// The TLS files of the uploads, for the reload watcher.
    pub fn client_files(&self) -> crate::tls::ClientFiles {
        crate::sync::download::client_files(&self.http())
    }
}

/// Rendered events waiting for upload, oldest first, bounded in bytes.
pub(super) struct Buffer {
    events: Mutex<VecDeque<Vec<u8>>>,
    bytes: AtomicUsize,
    limit: usize,
    /// Events handed to the writer thread and not written yet: shutdown waits for them.
    pub(super) in_transit: Arc<AtomicUsize>,
    metrics: DecisionLogMetrics,
    /// Where the oldest events go beyond `limit`, instead of being dropped.
    spool: Option<Arc<Spool>>,
}

impl Buffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Vec<u8>>> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends one event; beyond the byte limit the oldest are spooled (blocking: the writer
    /// thread calls this) or dropped.
    pub(super) fn push(&self, event: Vec<u8>) {
        let overflow = {
            let mut events = self.lock();
            let bytes = self.bytes.load(Ordering::Relaxed) + event.len();
            events.push_back(event);
            self.trim(&mut events, bytes)
        };
        if let (Some(spool), false) = (&self.spool, overflow.is_empty()) {
            spool.write(overflow);
        }
    }

    /// Brings the buffer within its limit: drops the oldest events, or with a spool takes them
    /// out (down to three quarters of the limit, so spills are few) and returns them.
    fn trim(&self, events: &mut VecDeque<Vec<u8>>, mut bytes: usize) -> Vec<Vec<u8>> {
        let mut overflow = Vec::new();
        if bytes > self.limit {
            let target = if self.spool.is_some() {
                self.limit / 4 * 3
            } else {
                self.limit
            };
            while bytes > target {
                let Some(old) = events.pop_front() else { break };
                bytes -= old.len();
                if self.spool.is_some() {
                    overflow.push(old);
                } else {
                    self.metrics.dropped("buffer_full").inc();
                }
            }
        }
        self.bytes.store(bytes, Ordering::Relaxed);
        self.metrics.buffer_bytes.set(bytes as i64);
        overflow
    }

    /// Takes up to `n` events from the front.
    fn take(&self, n: usize) -> Vec<Vec<u8>> {
        let mut events = self.lock();
        let n = n.min(events.len());
        let taken: Vec<Vec<u8>> = events.drain(..n).collect();
        let bytes = self.bytes.load(Ordering::Relaxed) - taken.iter().map(Vec::len).sum::<usize>();
        self.bytes.store(bytes, Ordering::Relaxed);
        self.metrics.buffer_bytes.set(bytes as i64);
        taken
    }

    /// Puts events taken for a failed upload back in front (the oldest beyond the limit are
    /// spooled, off the runtime, or dropped).
    fn put_back(&self, taken: Vec<Vec<u8>>) {
        let overflow = {
            let mut events = self.lock();
            let mut bytes = self.bytes.load(Ordering::Relaxed);
            for e in taken.into_iter().rev() {
                bytes += e.len();
                events.push_front(e);
            }
            self.trim(&mut events, bytes)
        };
        if let (Some(spool), false) = (&self.spool, overflow.is_empty()) {
            let spool = spool.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || spool.write(overflow))),
                Err(_) => spool.write(overflow),
            }
        }
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// One gzipped chunk and the events in it.
struct Chunk {
    body: Vec<u8>,
    events: Vec<Vec<u8>>,
}

/// Gzips `events` as one JSON array.
fn gzip_array(events: &[Vec<u8>]) -> std::io::Result<Vec<u8>> {
    // Level 1: the writer shares the sidecar's CPU with Checks; a receiver's bytes are cheaper.
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"[")?;
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            gz.write_all(b",")?;
        }
        gz.write_all(e)?;
    }
    gz.write_all(b"]")?;
    gz.finish()
}

/// Builds chunks from the front of the buffer.
struct Chunker {
    buffer: Arc<Buffer>,
    metrics: DecisionLogMetrics,
    /// Largest chunk, gzipped.
    limit: usize,
    /// Events per chunk to try first: adapts to how well the events compress.
    guess: usize,
}

impl Chunker {
    /// The next chunk from the front of the buffer, as many events as fit the gzipped limit.
    /// An event that alone does not fit is dropped (counted `too_large`).
    fn next_chunk(&mut self) -> Option<Chunk> {
        let limit = self.limit;
        loop {
            let mut events = self.buffer.take(self.guess.max(1));
            if events.is_empty() {
                return None;
            }
            loop {
                let body = match gzip_array(&events) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "compressing decision logs failed; dropping the chunk");
                        for _ in &events {
                            self.metrics.dropped("encoding").inc();
                        }
                        break;
                    }
                };
                if body.len() <= limit {
                    // Room to spare: try more next time; the events compress well.
                    if body.len() < limit / 2 && events.len() == self.guess {
                        self.guess = self.guess.saturating_mul(2).min(100_000);
                    }
                    return Some(Chunk { body, events });
                }
                if events.len() == 1 {
                    tracing::warn!(
                        gzipped = body.len(),
                        limit,
                        "a decision log event is larger than upload_size_limit_bytes gzipped; dropped"
                    );
                    self.metrics.dropped("too_large").inc();
                    break;
                }
                // Too big: halve, and give the rest back for the next chunk.
                let half = events.len() / 2;
                let rest = events.split_off(half);
                self.buffer.put_back(rest);
                self.guess = half;
            }
        }
    }
}

/// The uploader: its buffer, client and pacing.
pub(super) struct Uploader {
    cfg: UploadConfig,
    client: reqwest::Client,
    bearer: Option<Bearer>,
    pub(super) buffer: Arc<Buffer>,
    metrics: DecisionLogMetrics,
    /// Events per chunk to try first: adapts to how well the events compress.
    guess: usize,
}

/// What the server holds to stop the uploader: a final flush within `shutdown_flush_seconds`.
pub struct UploadHandle {
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl UploadHandle {
    /// Stops the uploader after a last upload of what is buffered (bounded in time).
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Uploader {
    /// The uploader of a validated section (reads its TLS files now, blocking).
    pub(super) fn new(
        cfg: &UploadConfig,
        metrics: DecisionLogMetrics,
        in_transit: Arc<AtomicUsize>,
    ) -> anyhow::Result<Self> {
        let http = cfg.http();
        let client =
            crate::sync::download::client_builder(&http, Duration::from_secs(cfg.timeout_seconds))
                .map_err(|e| anyhow::anyhow!("decision_logs.upload: {e}"))?
                .timeout(Duration::from_secs(cfg.timeout_seconds))
                .build()
                .map_err(|e| {
                    anyhow::anyhow!("decision_logs.upload: building the HTTP client: {e}")
                })?;
        let buffer = Arc::new(Buffer {
            events: Mutex::new(VecDeque::new()),
            bytes: AtomicUsize::new(0),
            limit: usize::try_from(cfg.buffer_size_limit_bytes).unwrap_or(usize::MAX),
            in_transit,
            metrics: metrics.clone(),
            spool: match &cfg.spool {
                Some(sc) => Some(Arc::new(Spool::open(sc, metrics.clone())?)),
                None => None,
            },
        });
        Ok(Uploader {
            cfg: cfg.clone(),
            client,
            bearer: Bearer::from_config(&http),
            buffer,
            metrics,
            guess: 64,
        })
    }

    /// Runs the upload loop on the runtime; the handle stops it.
    pub(super) fn spawn(self) -> UploadHandle {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(self.run(stop_rx));
        UploadHandle {
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut failures = 0u32;
        loop {
            let delay = self.delay(failures);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            match self.upload_all().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, url = %self.cfg.url, buffered = self.buffer.len(), "decision log upload failed; keeping the events and retrying");
                }
            }
        }
        self.flush_at_shutdown().await;
    }

    /// Uniform in [min, max] while uploads succeed; doubling from `min` (jittered, capped) while
    /// they fail.
    fn delay(&self, failures: u32) -> Duration {
        let min = Duration::from_secs(self.cfg.min_delay_seconds);
        let max = Duration::from_secs(self.cfg.max_delay_seconds);
        let mut rng = rand::thread_rng();
        if failures == 0 {
            return rng.gen_range(min..=max);
        }
        let backoff = min
            .saturating_mul(1u32 << (failures - 1).min(16))
            .min(MAX_RETRY_DELAY.max(max));
        backoff.mul_f64(rng.gen_range(0.5..=1.0))
    }

    /// Uploads chunks until the buffer, and then the spool, are empty or one fails (its events
    /// are back in front).
    async fn upload_all(&mut self) -> anyhow::Result<()> {
        loop {
            self.upload_buffered(None).await?;
            if !self.refill_from_spool().await {
                return Ok(());
            }
        }
    }

    /// Uploads chunks until the memory buffer is empty, one fails, or `deadline` passes; the
    /// events of a chunk not uploaded go back in front.
    async fn upload_buffered(&mut self, deadline: Option<Instant>) -> anyhow::Result<()> {
        while let Some(Chunk { body, events }) = self.next_chunk_off_runtime().await {
            let posted = match deadline {
                Some(d) => tokio::time::timeout_at(d, self.post(body))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("shutdown_flush_seconds passed"))),
                None => self.post(body).await,
            };
            if let Err(e) = posted {
                self.metrics.upload("error");
                self.buffer.put_back(events);
                return Err(e);
            }
            self.metrics.upload("ok");
        }
        Ok(())
    }

    /// Moves the oldest spool file into the memory buffer once it has room; whether it did.
    async fn refill_from_spool(&self) -> bool {
        let Some(spool) = self.buffer.spool.clone() else {
            return false;
        };
        match spool.oldest_bytes() {
            Some(n) if n as usize <= self.buffer.limit.saturating_sub(self.buffer.bytes()) => {}
            // The buffer holds a file's worth already (or the limit shrank below a file written
            // by an earlier run: take it anyway once the buffer is empty; it spills back the part
            // that does not fit, and each round uploads some).
            Some(_) if self.buffer.len() == 0 => {}
            _ => return false,
        }
        match tokio::task::spawn_blocking(move || spool.take_oldest()).await {
            Ok(events) => {
                self.buffer.put_back(events);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the decision log spool failed");
                false
            }
        }
    }

    /// The next chunk, compressed off the runtime: on the single-threaded runtime a chunk's
    /// gzip would otherwise hold up every Check for a millisecond or more.
    async fn next_chunk_off_runtime(&mut self) -> Option<Chunk> {
        let mut chunker = Chunker {
            buffer: self.buffer.clone(),
            metrics: self.metrics.clone(),
            limit: usize::try_from(self.cfg.upload_size_limit_bytes).unwrap_or(usize::MAX),
            guess: self.guess,
        };
        let (chunk, guess) = tokio::task::spawn_blocking(move || {
            let chunk = chunker.next_chunk();
            (chunk, chunker.guess)
        })
        .await
        .ok()?;
        self.guess = guess;
        chunk
    }

    async fn post(&self, body: Vec<u8>) -> anyhow::Result<()> {
        let mut req = self
            .client
            .post(&self.cfg.url)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_ENCODING, "gzip")
            .body(body);
        if let Some(b) = &self.bearer {
            req = req.header(reqwest::header::AUTHORIZATION, b.header().await?);
        }
        let resp = req.send().await?;
        let status = resp.status();
        if !status.is_success() {
            anyhow::bail!("{} answered HTTP {status}", self.cfg.url);
        }
        Ok(())
    }

    /// The last uploads at shutdown: waits for events still with the writer thread, then uploads
    /// until the buffer is empty, one upload fails, or `shutdown_flush_seconds` pass. What is
    /// left goes to the spool (uploaded by the next run), or without one is counted as dropped
    /// (`shutdown`). Spooled files stay where they are.
    async fn flush_at_shutdown(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(self.cfg.shutdown_flush_seconds);
        let drained =
            tokio::time::timeout_at(deadline, super::written(&self.buffer.in_transit)).await;
        let flushed = match drained {
            Ok(()) => self.upload_buffered(Some(deadline)).await,
            Err(_) => Err(anyhow::anyhow!("the writer thread did not finish in time")),
        };
        let left = self.buffer.take(usize::MAX);
        match &flushed {
            Ok(()) => tracing::info!("decision logs uploaded"),
            Err(e) => {
                tracing::warn!(error = %e, left = left.len(), "last decision log upload did not finish")
            }
        }
        if left.is_empty() {
            return;
        }
        match self.buffer.spool.clone() {
            Some(spool) => {
                let n = left.len();
                if tokio::task::spawn_blocking(move || spool.write(left))
                    .await
                    .is_ok()
                {
                    tracing::info!(events = n, "decision logs not uploaded were spooled");
                }
            }
            None => self.metrics.dropped("shutdown").inc_by(left.len() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> UploadConfig {
        serde_yaml::from_str(yaml).expect("parses")
    }

    #[test]
    fn the_section_is_validated_naming_the_key() {
        for (yaml, key) in [
            ("{url: 'not a url'}", "url"),
            ("{url: 'ftp://logs/x'}", "url"),
            (
                "{url: 'https://l/logs', min_delay_seconds: 10, max_delay_seconds: 5}",
                "max_delay_seconds",
            ),
            (
                "{url: 'https://l/logs', upload_size_limit_bytes: 10}",
                "upload_size_limit_bytes",
            ),
            (
                "{url: 'https://l/logs', bearer_token_file: /t, bearer_token: x}",
                "bearer_token",
            ),
            (
                "{url: 'https://l/logs', client_cert_file: /c}",
                "client_cert_file",
            ),
        ] {
            assert_eq!(cfg(yaml).validate().map_err(|e| e.0), Err(key), "{yaml}");
        }
        assert!(cfg("{url: 'https://l/logs'}").validate().is_ok());
    }

    #[test]
    fn chunks_fit_the_gzipped_limit_and_oversized_events_are_dropped() {
        let metrics = DecisionLogMetrics::new().expect("metrics");
        let up = Uploader::new(
            &cfg("{url: 'http://127.0.0.1:1/logs', upload_size_limit_bytes: 1024}"),
            metrics.clone(),
            Default::default(),
        )
        .expect("uploader");
        // Incompressible events of ~300 bytes: three or so per chunk.
        let mut rng = rand::thread_rng();
        for i in 0..20 {
            let noise: String = (0..300)
                .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
                .collect();
            up.buffer
                .push(format!(r#"{{"decision_id":"{i}","n":"{noise}"}}"#).into_bytes());
        }
        let huge: String = (0..4000)
            .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
            .collect();
        up.buffer.push(format!(r#"{{"n":"{huge}"}}"#).into_bytes());
        let mut ids = Vec::new();
        let mut chunker = Chunker {
            buffer: up.buffer.clone(),
            metrics: metrics.clone(),
            limit: 1024,
            guess: up.guess,
        };
        while let Some(chunk) = chunker.next_chunk() {
            assert!(chunk.body.len() <= 1024, "{} bytes", chunk.body.len());
            let mut json = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(&chunk.body[..]),
                &mut json,
            )
            .expect("gunzips");
            let array: Vec<serde_json::Value> = serde_json::from_slice(&json).expect("an array");
            assert_eq!(array.len(), chunk.events.len());
            ids.extend(array.iter().map(|e| e["decision_id"].clone()));
        }
        let want: Vec<serde_json::Value> = (0..20).map(|i| i.to_string().into()).collect();
        assert_eq!(ids, want, "every event once, in order");
        assert_eq!(metrics.dropped("too_large").get(), 1);
    }

    #[test]
    fn the_buffer_drops_the_oldest_beyond_its_byte_limit() {
        let metrics = DecisionLogMetrics::new().expect("metrics");
        let up = Uploader::new(
            &cfg("{url: 'http://127.0.0.1:1/logs', buffer_size_limit_bytes: 100}"),
            metrics.clone(),
            Default::default(),
        )
        .expect("uploader");
        for i in 0..10 {
            up.buffer.push(format!("{{\"i\":{i:>10}}}").into_bytes());
        }
        let left = up.buffer.take(100);
        assert!(left.iter().map(Vec::len).sum::<usize>() <= 100);
        assert_eq!(
            left.last(),
            Some(&format!("{{\"i\":{:>10}}}", 9).into_bytes())
        );
        assert_eq!(
            metrics.dropped("buffer_full").get() as usize + left.len(),
            10
        );
    }
}
