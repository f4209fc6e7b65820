//! The build loop: one build at a time. Requests (start, poll timer, webhook) that arrive during a
//! build coalesce into exactly one more build, which fetches whatever the branch points to then.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::gate::{gate_commit, BuiltBundle, Failure, Signer};
use super::git::GitSource;
use super::state::{now_rfc3339, BuildReport, BuildResult, Shared};
use super::store::{write_publish_dir, DataStore, PublishedState};
use super::trace::{self, attr};
use opentelemetry::trace::Span as _;
use opentelemetry::KeyValue;
use regent_telemetry::spans::{self, Task, TaskTracer};

/// What the build loop needs besides the shared state.
pub struct Builder {
    /// The repository.
    pub git: GitSource,
    /// The active signing key.
    pub signer: Arc<Signer>,
    /// Where publications are persisted.
    pub store: DataStore,
    /// Scratch space for exported commits.
    pub tmp_dir: PathBuf,
    /// Makes the spans of each build, when tracing is on.
    pub trace: Option<TaskTracer>,
}

impl Builder {
    /// Runs until `shutdown` turns true. The first build starts at once.
    pub async fn run(self, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
        let tmp_dir = self.tmp_dir.clone();
        // A large leftover tree must not hold up the runtime that already serves requests.
        let _ = tokio::task::spawn_blocking(move || remove_stale_exports(&tmp_dir)).await;
        let mut requests = shared.requested.subscribe();
        requests.mark_changed();
        let poll = Duration::from_secs(shared.cfg.git.poll_interval_seconds);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                r = requests.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(poll), if !poll.is_zero() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let gen = *requests.borrow_and_update();
            self.build_once(&shared).await;
            shared.set_ready();
            shared.completed.send_replace(gen);
        }
    }

    async fn build_once(&self, shared: &Shared) {
        let task = self.trace.as_ref().map(|t| {
            t.root(
                trace::BUILD_SPAN,
                vec![
                    KeyValue::new(attr::REPO, self.git.display_repo().to_string()),
                    KeyValue::new(attr::BRANCH, self.git.branch().to_string()),
                ],
            )
        });
        let outcome = self.build_traced(shared, task.as_ref()).await;
        if let Some(task) = task {
            let (result, commit, error) = outcome;
            task.set_attribute(KeyValue::new(attr::RESULT, result));
            if let Some(c) = commit {
                task.set_attribute(KeyValue::new(attr::COMMIT, c.clone()));
                if result == "published" {
                    task.set_attribute(KeyValue::new(attr::REVISION, c));
                }
            }
            task.finish(error);
        }
    }

    /// One build; its result (`published`, `rejected`, `error`, `unchanged`), commit and error
    /// for the build span.
    async fn build_traced(
        &self,
        shared: &Shared,
        task: Option<&Task>,
    ) -> (&'static str, Option<String>, Option<String>) {
        let started = Instant::now();
        let started_at = now_rfc3339();
        let fingerprint = shared.cfg.build_fingerprint();
        let finish = |result, commit: Option<String>, failures: Vec<Failure>, error| {
            let took = started.elapsed();
            shared.metrics.build_duration.observe(took.as_secs_f64());
            BuildReport {
                result,
                commit,
                commit_info: None,
                started_at: started_at.clone(),
                finished_at: now_rfc3339(),
                duration_seconds: took.as_secs_f64(),
                failures,
                error,
            }
        };
        let span = task.and_then(|t| t.child(trace::FETCH_SPAN, Vec::new()));
        let fetched = self.git.fetch().await;
        if let Some(mut span) = span {
            match &fetched {
                Ok(c) => {
                    span.set_attribute(KeyValue::new(attr::RESULT, "ok"));
                    span.set_attribute(KeyValue::new(attr::COMMIT, c.clone()));
                    span.end();
                }
                Err(e) => {
                    span.set_attribute(KeyValue::new(attr::RESULT, "error"));
                    spans::end(span, Some(e.to_string()));
                }
            }
        }
        let commit = match fetched {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(repo = %self.git.display_repo(), branch = %self.git.branch(), error = %e, "fetching the policy repository failed");
                let report = finish(BuildResult::Error, None, Vec::new(), Some(e.to_string()));
                shared.metrics.builds.with_label_values(&["error"]).inc();
                shared.book().last = Some(report);
                return ("error", None, Some(e.to_string()));
            }
        };
        if shared.book().attempted.as_ref() == Some(&(commit.clone(), fingerprint.clone())) {
            tracing::debug!(%commit, "commit already gated");
            return ("unchanged", Some(commit), None);
        }
        tracing::info!(%commit, "gating commit");
        let info = self.git.commit_info(&commit).await.ok();
        let mut report = match self.gate(shared, &commit, task).await {
            Ok(Ok(built)) => {
                let span = task.and_then(|t| {
                    t.child(
                        trace::PUBLISH_SPAN,
                        vec![
                            KeyValue::new(attr::COMMIT, commit.clone()),
                            KeyValue::new(attr::BUNDLES, built.len() as i64),
                        ],
                    )
                });
                let published_at = now_rfc3339();
                let state = PublishedState {
                    commit: commit.clone(),
                    fingerprint: fingerprint.clone(),
                    published_at: published_at.clone(),
                };
                self.persist(shared, &commit, &built, state).await;
                shared.publish(&built, &published_at);
                for b in &built {
                    tracing::info!(bundle = %b.name, revision = %b.revision, etag = %b.etag, kid = %b.kid, size = b.bytes.len(), "bundle published");
                }
                let mut book = shared.book();
                book.attempted = Some((commit.clone(), fingerprint));
                book.published_commit = Some((commit.clone(), published_at));
                book.last_rejected = None;
                drop(book);
                if let Some(mut span) = span {
                    span.set_attribute(KeyValue::new(attr::RESULT, "ok"));
                    span.set_attribute(KeyValue::new(attr::REVISION, commit.clone()));
                    span.end();
                }
                shared
                    .metrics
                    .builds
                    .with_label_values(&["published"])
                    .inc();
                finish(
                    BuildResult::Published,
                    Some(commit.clone()),
                    Vec::new(),
                    None,
                )
            }
            Ok(Err(failures)) => {
                for f in &failures {
                    let failed_tests: Vec<String> = f
                        .tests
                        .iter()
                        .map(|t| format!("{} ({}:{})", t.name, t.file, t.line))
                        .collect();
                    shared
                        .metrics
                        .publish_failures
                        .with_label_values(&[f.bundle.as_str(), f.reason])
                        .inc();
                    tracing::warn!(
                        %commit,
                        bundle = %f.bundle,
                        reason = f.reason,
                        file = f.file.as_deref().unwrap_or(""),
                        line = f.line.unwrap_or(0),
                        failed_tests = %failed_tests.join(", "),
                        message = %f.message,
                        "commit refused by the publish gate; the previous revision stays served"
                    );
                }
                shared.metrics.builds.with_label_values(&["rejected"]).inc();
                shared.book().attempted = Some((commit.clone(), fingerprint));
                finish(BuildResult::Rejected, Some(commit.clone()), failures, None)
            }
            Err(e) => {
                tracing::error!(%commit, error = %e, "building the commit failed");
                shared.metrics.builds.with_label_values(&["error"]).inc();
                finish(
                    BuildResult::Error,
                    Some(commit.clone()),
                    Vec::new(),
                    Some(e),
                )
            }
        };
        report.commit_info = info;
        let outcome = match report.result {
            BuildResult::Published => ("published", None),
            BuildResult::Rejected => {
                let messages: Vec<&str> =
                    report.failures.iter().map(|f| f.message.as_str()).collect();
                ("rejected", Some(messages.join("; ")))
            }
            BuildResult::Error => ("error", report.error.clone()),
        };
        let mut book = shared.book();
        if report.result == BuildResult::Rejected {
            book.last_rejected = Some(report.clone());
        }
        book.last = Some(report);
        (outcome.0, Some(commit), outcome.1)
    }

    /// Writes the publication to the data dir and the publish dir on a blocking thread (fsyncs
    /// must not stall the runtime that serves thousands of long polls). A disk problem must not
    /// keep a good commit from the fleet: it is logged, and the only cost is a rebuild after a
    /// restart.
    async fn persist(
        &self,
        shared: &Shared,
        commit: &str,
        built: &[BuiltBundle],
        state: PublishedState,
    ) {
        let store = self.store.clone();
        let publish_dir = shared.cfg.publish_dir.clone();
        // Cheap: the bundle bytes are reference-counted.
        let built = built.to_vec();
        let task = tokio::task::spawn_blocking(move || {
            let saved = store.save(&built, &state);
            let published = publish_dir
                .as_ref()
                .map(|dir| (dir.clone(), write_publish_dir(dir, &built)));
            (saved, published)
        })
        .await;
        match task {
            Ok((saved, published)) => {
                if let Err(e) = saved {
                    tracing::error!(%commit, error = %e, "persisting the published bundles failed");
                }
                if let Some((dir, Err(e))) = published {
                    tracing::error!(%commit, dir = %dir.display(), error = %e, "writing the publish dir failed");
                }
            }
            Err(e) => {
                tracing::error!(%commit, error = %e, "persisting the published bundles failed")
            }
        }
    }

    /// Exports the commit and runs the gate on a blocking thread.
    async fn gate(
        &self,
        shared: &Shared,
        commit: &str,
        task: Option<&Task>,
    ) -> Result<Result<Vec<BuiltBundle>, Vec<Failure>>, String> {
        std::fs::create_dir_all(&self.tmp_dir)
            .map_err(|e| format!("creating {}: {e}", self.tmp_dir.display()))?;
        let tree = tempfile::Builder::new()
            .prefix("commit-")
            .tempdir_in(&self.tmp_dir)
            .map_err(|e| format!("creating a temporary directory: {e}"))?;
        self.git
            .export(commit, tree.path())
            .await
            .map_err(|e| e.to_string())?;
        let root = tree.path().to_path_buf();
        let signed_at = self
            .git
            .commit_time(commit)
            .await
            .map_err(|e| e.to_string())?;
        let commit_s = commit.to_string();
        let bundles = shared.cfg.bundles.clone();
        let signer = Arc::clone(&self.signer);
        // The gate's steps are children of the build.
        let cx = task.map(|t| t.context().clone());
        // The exported tree is removed on the blocking thread too.
        tokio::task::spawn_blocking(move || {
            let _attached = cx.map(|cx| cx.attach());
            let res = gate_commit(&root, &commit_s, signed_at, &bundles, &signer);
            drop(tree);
            res
        })
        .await
        .map_err(|e| format!("build task failed: {e}"))
    }
}

/// A build interrupted by a crash or a kill leaves its exported tree behind.
fn remove_stale_exports(tmp_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(tmp_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("commit-") {
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(path = %e.path().display(), error = %err, "cannot remove a stale build directory");
            }
        }
    }
}
