//! The per-bundle sync loop: download, hand to the activator, persist, report, wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::backoff::{error_backoff, poll_delay};
use super::download::{Downloader, Fetched};
use super::persist::PersistDir;
use super::status::{now_rfc3339, StatusBoard, SyncMetrics};
use super::trace::{self, attr, Round, SyncTrace};

/// Why a bundle was not activated. `reason` is a short stable label used in metrics.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Refusal {
    /// Metric label: e.g. `unpack`, `signature`, `roots`, `rollback`, `compile`, `internal`.
    pub reason: &'static str,
    /// Human readable description.
    pub message: String,
    /// Detailed errors (file:line etc.) for the status report.
    pub errors: Vec<String>,
}

impl Refusal {
    /// A refusal without detail lines.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
            errors: Vec::new(),
        }
    }
}

/// Turns downloaded bytes into the policy in force. Blocking and CPU heavy: the loop calls it
/// from `spawn_blocking`. On `Err` the policy in force must be unchanged.
pub trait Activator: Send + Sync + 'static {
    /// Unpack, verify and activate bundle `name` from `bytes`, together with the other bundles
    /// already active. Returns the activated revision.
    fn activate(&self, name: &str, bytes: &[u8]) -> Result<String, Refusal>;
}

/// Everything one bundle's loop needs.
pub(crate) struct BundleLoop {
    pub name: String,
    pub downloader: Downloader,
    pub activator: Arc<dyn Activator>,
    pub persist: Option<PersistDir>,
    pub board: StatusBoard,
    pub metrics: SyncMetrics,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Revision in force for this bundle (from the persisted copy, if any).
    pub active_revision: Option<String>,
    /// Makes the spans of each round, when tracing is on.
    pub trace: Option<SyncTrace>,
}

/// Activate `bytes` for bundle `name` on a blocking thread, updating metrics and status.
/// Returns the revision on success. The activator's spans, if it makes any, are children of
/// `round`.
pub(crate) async fn activate_and_record(
    name: &str,
    bytes: Arc<Vec<u8>>,
    activator: &Arc<dyn Activator>,
    board: &StatusBoard,
    metrics: &SyncMetrics,
    previous: Option<&str>,
    round: Option<&Round>,
) -> Result<String, Refusal> {
    let started = Instant::now();
    let act = Arc::clone(activator);
    let (n, b) = (name.to_string(), Arc::clone(&bytes));
    let cx = round.map(|r| r.context().clone());
    let activate = move || {
        let _attached = cx.map(|cx| cx.attach());
        act.activate(&n, &b)
    };
    let result = match tokio::task::spawn_blocking(activate).await {
        Ok(r) => r,
        Err(e) => Err(Refusal::new(
            "internal",
            format!("activation task failed: {e}"),
        )),
    };
    match &result {
        Ok(revision) => {
            metrics.activated(name, previous, revision, started.elapsed());
            tracing::info!(bundle = name, revision = %revision, "bundle activated");
            let rev = revision.clone();
            board.update(name, true, |s| {
                s.active_revision = rev;
                s.last_successful_activation = Some(now_rfc3339());
                s.clear_error();
            });
        }
        Err(refusal) => {
            metrics.activation_failure(name, refusal.reason);
            tracing::error!(bundle = name, reason = refusal.reason, error = %refusal.message,
                errors = ?refusal.errors, "bundle refused; keeping the last good policy");
            let (msg, errs) = (refusal.to_string(), refusal.errors.clone());
            board.update(name, true, |s| s.fail(msg, None, errs));
        }
    }
    result
}

impl BundleLoop {
    /// Poll until `shutdown` turns true.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut consecutive_errors: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            self.board
                .update(&self.name, false, |s| s.last_request = Some(now_rfc3339()));
            let requested = Instant::now();
            let round = self.trace.as_ref().map(|t| t.round(&self.name, "download"));
            let download = round.as_ref().and_then(|r| r.child(trace::DOWNLOAD_SPAN));
            let fetched = tokio::select! {
                r = self.downloader.fetch() => r,
                // A round cut short by shutdown ends its spans as they are dropped, without an outcome.
                _ = shutdown.changed() => return,
            };
            if let Some(span) = download {
                self.end_download(span, &fetched);
            }
            let delay = match fetched {
                Ok(Fetched::NotModified) => {
                    if let Some(r) = round {
                        r.finish("not_modified", self.active_revision.as_deref(), None);
                    }
                    consecutive_errors = 0;
                    self.metrics.download(&self.name, "not_modified");
                    let was_failing = self
                        .board
                        .get(&self.name)
                        .is_some_and(|s| !s.code.is_empty());
                    // A 304 after a failed download means the active bundle is current again.
                    self.board.update(&self.name, was_failing, |s| {
                        s.last_successful_request = Some(now_rfc3339());
                        if s.http_code.is_some() {
                            s.clear_error();
                        }
                    });
                    // A long-poll 304 should have waited; one that came back at once means the
                    // server ignores `wait`, and re-asking immediately would spin.
                    if self.downloader.long_polling()
                        && requested.elapsed() < Duration::from_secs(1)
                    {
                        poll_delay(self.min_delay, self.max_delay)
                    } else {
                        self.next_poll_delay()
                    }
                }
                Ok(Fetched::Bundle { bytes, etag }) => {
                    consecutive_errors = 0;
                    self.metrics.download(&self.name, "ok");
                    self.board.update(&self.name, false, |s| {
                        let now = now_rfc3339();
                        s.last_successful_request = Some(now.clone());
                        s.last_successful_download = Some(now);
                    });
                    let bytes = Arc::new(bytes);
                    match activate_and_record(
                        &self.name,
                        Arc::clone(&bytes),
                        &self.activator,
                        &self.board,
                        &self.metrics,
                        self.active_revision.as_deref(),
                        round.as_ref(),
                    )
                    .await
                    {
                        Ok(revision) => {
                            if let Some(r) = round {
                                r.finish("activated", Some(&revision), None);
                            }
                            self.active_revision = Some(revision);
                            self.downloader.set_etag(etag.clone());
                            self.persist(bytes, etag).await;
                            self.next_poll_delay()
                        }
                        // The downloader still holds the last *activated* ETag, so the refused
                        // bundle is fetched again; wait a normal poll interval rather than
                        // re-requesting at once (a long-poll server would resend it instantly).
                        Err(refusal) => {
                            if let Some(r) = round {
                                r.finish("refused", None, Some(refusal.to_string()));
                            }
                            poll_delay(self.min_delay, self.max_delay)
                        }
                    }
                }
                Err(e) => {
                    if let Some(r) = round {
                        r.finish("error", None, Some(e.to_string()));
                    }
                    self.metrics.download(&self.name, "error");
                    if e.is_timeout() {
                        // Given up for time (deadline, minimum rate, connect/read timeout): a
                        // bundle that may be new never arrived, which `error` alone would hide.
                        self.metrics.activation_failure(&self.name, "timeout");
                    }
                    tracing::warn!(bundle = %self.name, error = %e, "bundle download failed; keeping the last good policy");
                    let (msg, code) = (e.to_string(), e.http_code());
                    self.board
                        .update(&self.name, true, |s| s.fail(msg, code, Vec::new()));
                    let d = error_backoff(consecutive_errors, self.max_delay);
                    consecutive_errors = consecutive_errors.saturating_add(1);
                    d
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn end_download(
        &self,
        mut span: opentelemetry_sdk::trace::Span,
        fetched: &Result<Fetched, super::download::DownloadError>,
    ) {
        use opentelemetry::trace::Span as _;
        use opentelemetry::KeyValue;
        span.set_attribute(KeyValue::new(
            attr::URL,
            trace::redact_url(self.downloader.url()),
        ));
        match fetched {
            Ok(Fetched::NotModified) => {
                span.set_attribute(KeyValue::new(attr::RESULT, "ok"));
                span.set_attribute(KeyValue::new(attr::NOT_MODIFIED, true));
                if let Some(status) = self.downloader.last_status() {
                    span.set_attribute(KeyValue::new(attr::HTTP_STATUS, i64::from(status)));
                }
                span.end();
            }
            Ok(Fetched::Bundle { bytes, etag }) => {
                span.set_attribute(KeyValue::new(attr::RESULT, "ok"));
                span.set_attribute(KeyValue::new(attr::NOT_MODIFIED, false));
                span.set_attribute(KeyValue::new(attr::HTTP_STATUS, 200_i64));
                span.set_attribute(KeyValue::new(
                    attr::BYTES,
                    i64::try_from(bytes.len()).unwrap_or(i64::MAX),
                ));
                if let Some(etag) = etag {
                    span.set_attribute(KeyValue::new(attr::ETAG, etag.clone()));
                }
                span.end();
            }
            Err(e) => {
                span.set_attribute(KeyValue::new(attr::RESULT, "error"));
                if let Some(status) = e.http_code() {
                    span.set_attribute(KeyValue::new(attr::HTTP_STATUS, i64::from(status)));
                }
                trace::fail(span, e.to_string());
            }
        }
    }

    fn next_poll_delay(&self) -> Duration {
        if self.downloader.long_polling() {
            Duration::ZERO
        } else {
            poll_delay(self.min_delay, self.max_delay)
        }
    }

    async fn persist(&self, bytes: Arc<Vec<u8>>, etag: Option<String>) {
        let Some(dir) = self.persist.clone() else {
            return;
        };
        let name = self.name.clone();
        let res =
            tokio::task::spawn_blocking(move || dir.save(&name, &bytes, etag.as_deref())).await;
        match res {
            Ok(Ok(())) => {}
            // The bundle is active; only the restart-without-server guarantee is lost.
            Ok(Err(e)) => {
                tracing::error!(bundle = %self.name, error = %e, "persisting bundle failed")
            }
            Err(e) => tracing::error!(bundle = %self.name, error = %e, "persist task failed"),
        }
    }
}
