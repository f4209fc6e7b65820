//! State shared by the build loop and the HTTP handlers: the bundles being served (one watch
//! channel each, so any number of long polls wait on it for free), the build reports, readiness.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::watch;

use super::auth::TokenSet;
use super::config::ServerConfig;
use super::fleet::Fleet;
use super::gate::{BuiltBundle, Failure};
use super::git::CommitInfo;
use super::metrics::Metrics;

/// A bundle being served.
#[derive(Debug)]
pub struct Published {
    /// Revision (commit SHA).
    pub revision: String,
    /// Signed `.tar.gz`.
    pub bytes: Bytes,
    /// Strong ETag (quoted).
    pub etag: String,
    /// Key that signed it.
    pub kid: String,
    /// RFC 3339 time it was published (or restored).
    pub published_at: String,
}

/// Outcome of one build.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum BuildResult {
    /// Every bundle passed and is now served.
    Published,
    /// The gate refused the commit; the previous revision stays served.
    Rejected,
    /// Fetching, exporting or persisting failed (not the commit's fault).
    Error,
}

/// What one build did; shown in `GET /v1/status` and the webhook response.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Outcome.
    pub result: BuildResult,
    /// Commit built (absent if the fetch failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Author and subject of the commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_info: Option<CommitInfo>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// Wall time.
    pub duration_seconds: f64,
    /// Why the gate refused the commit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Failure>,
    /// Infrastructure error (result `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Build bookkeeping.
#[derive(Debug, Default)]
pub struct BuildBook {
    /// The last build that ran.
    pub last: Option<BuildReport>,
    /// The last build whose commit was refused (kept until a later commit publishes).
    pub last_rejected: Option<BuildReport>,
    /// (commit, fingerprint) of the last gated commit, published or rejected: not gated again.
    pub attempted: Option<(String, String)>,
    /// Commit currently served and when it was published.
    pub published_commit: Option<(String, String)>,
}

/// Everything the handlers and the build loop share.
pub struct Shared {
    /// The configuration in force.
    pub cfg: Arc<ServerConfig>,
    /// One channel per configured bundle; `None` until first published.
    pub bundles: BTreeMap<String, watch::Sender<Option<Arc<Published>>>>,
    /// Build reports.
    pub book: Mutex<BuildBook>,
    /// Generation of the last build request (webhook, poll timer, start).
    pub requested: watch::Sender<u64>,
    /// Generation of the last finished build.
    pub completed: watch::Sender<u64>,
    /// Ready once the first build attempt finished or bundles were restored.
    pub ready: AtomicBool,
    /// Metrics.
    pub metrics: Metrics,
    /// Status reports.
    pub fleet: Fleet,
    /// Client tokens.
    pub tokens: TokenSet,
    /// Webhook secret (`None`: webhook disabled).
    pub webhook_secret: Option<Vec<u8>>,
    /// Turns true when the server shuts down (releases long polls).
    pub shutdown: watch::Receiver<bool>,
    /// `regent_git_stale_locks_removed_total`: stale lock files removed from the git mirror
    /// (shared with the build loop's [`super::git::GitSource`]).
    pub git_stale_locks_removed: prometheus::IntCounter,
}

impl Shared {
    /// Locks the build book (a poisoned lock still holds consistent data: every update is a
    /// single assignment).
    pub fn book(&self) -> std::sync::MutexGuard<'_, BuildBook> {
        match self.book.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Requests a build; returns its generation.
    pub fn request_build(&self) -> u64 {
        let mut gen = 0;
        self.requested.send_modify(|g| {
            *g += 1;
            gen = *g;
        });
        gen
    }

    /// Is the server ready to serve?
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the server ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Swaps in a new set of bundles; every long poll waiting on them wakes.
    pub fn publish(&self, built: &[BuiltBundle], published_at: &str) {
        for b in built {
            let Some(tx) = self.bundles.get(&b.name) else {
                continue;
            };
            let previous = tx.borrow().as_ref().map(|p| p.revision.clone());
            self.metrics
                .published(&b.name, previous.as_deref(), &b.revision);
            tx.send_replace(Some(Arc::new(Published {
                revision: b.revision.clone(),
                bytes: b.bytes.clone(),
                etag: b.etag.clone(),
                kid: b.kid.clone(),
                published_at: published_at.to_string(),
            })));
        }
    }

    /// Revision served for each bundle that has one.
    pub fn published_revisions(&self) -> BTreeMap<String, String> {
        self.bundles
            .iter()
            .filter_map(|(n, tx)| {
                tx.borrow()
                    .as_ref()
                    .map(|p| (n.clone(), p.revision.clone()))
            })
            .collect()
    }
}

/// Now, RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
