//! Spans of bundle sync: one root span `bundle.sync` per round of a bundle's loop (or per restore
//! of its persisted copy), with `bundle.download`, `bundle.verify` and `bundle.activate` children.
//! A round has no caller, so each is a trace of its own, sampled at `tracing.sample_ratio`.
//!
//! Without tracing there is no [`SyncTrace`] and no span, attribute or context is made. The
//! verify and activate spans are made by the activator on its blocking thread: the round's
//! context is attached there ([`regent_telemetry::spans`]), so the [`super::Activator`] trait
//! stays as it is and other activators simply make no such spans.

use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use regent_telemetry::spans::{self, Task, TaskTracer};

/// Name of the span of one sync round of a bundle.
pub const SYNC_SPAN: &str = "bundle.sync";
/// Name of the span of one bundle request.
pub const DOWNLOAD_SPAN: &str = "bundle.download";
/// Name of the span of unpacking a bundle and checking its signature.
pub const VERIFY_SPAN: &str = "bundle.verify";
/// Name of the span of the activation rules and the compile-and-swap.
pub const ACTIVATE_SPAN: &str = "bundle.activate";

/// Attribute keys of the sync spans.
pub mod attr {
    /// The bundle's name (`sync.bundles[].name`), on every sync span.
    pub const BUNDLE: &str = "regent.bundle";
    /// `download` (a round of the loop) or `persisted` (the copy restored at start).
    pub const SOURCE: &str = "regent.sync.source";
    /// Outcome: `activated`, `not_modified`, `refused`, `error` (sync); `ok`, `error`
    /// (download); `ok`, `skipped`, `refused` (verify); `ok`, `refused` (activate).
    pub const RESULT: &str = "regent.result";
    /// The refusal reason (`unpack`, `signature`, `rollback`, `compile`, ...).
    pub const REASON: &str = "regent.reason";
    /// The bundle URL, without user info or query.
    pub const URL: &str = "url.full";
    /// The HTTP status of the bundle response.
    pub const HTTP_STATUS: &str = "http.response.status_code";
    /// Bytes of the downloaded bundle.
    pub const BYTES: &str = "regent.bundle.bytes";
    /// The response's ETag.
    pub const ETAG: &str = "regent.bundle.etag";
    /// The server answered that the active bundle is current (304 or an empty 200).
    pub const NOT_MODIFIED: &str = "regent.bundle.not_modified";
    /// Key id that signed the bundle.
    pub const SIGNING_KID: &str = "regent.signing.kid";
    /// The bundle's manifest revision.
    pub const REVISION: &str = "regent.bundle.revision";
    /// `vm` or `interpreter`: the evaluator of the policy activated.
    pub const EVALUATOR: &str = "regent.evaluator";
}

/// Makes the sync spans of the sidecar's bundles.
#[derive(Clone)]
pub struct SyncTrace {
    tasks: TaskTracer,
}

impl SyncTrace {
    /// Sync spans made with `tracer`.
    pub fn new(tracer: SdkTracer) -> Self {
        SyncTrace {
            tasks: TaskTracer::new(tracer),
        }
    }

    /// Starts the root span of a round for `bundle`; `source` is [`attr::SOURCE`].
    pub fn round(&self, bundle: &str, source: &'static str) -> Round {
        let task = self.tasks.root(
            SYNC_SPAN,
            vec![
                KeyValue::new(attr::BUNDLE, bundle.to_string()),
                KeyValue::new(attr::SOURCE, source),
            ],
        );
        Round {
            task,
            bundle: bundle.to_string(),
        }
    }
}

/// One round's root span, in the context its children are made in.
pub struct Round {
    task: Task,
    bundle: String,
}

impl Round {
    /// The context the round's children hang under (with the tracer, for the activator).
    pub fn context(&self) -> &Context {
        self.task.context()
    }

    /// Starts a child span of the round.
    pub fn child(&self, name: &'static str) -> Option<Span> {
        child(self.context(), name, &self.bundle)
    }

    /// Ends the round with its outcome, and the error message when there is one.
    pub fn finish(self, result: &'static str, revision: Option<&str>, error: Option<String>) {
        self.task.set_attribute(KeyValue::new(attr::RESULT, result));
        if let Some(r) = revision {
            self.task
                .set_attribute(KeyValue::new(attr::REVISION, r.to_string()));
        }
        self.task.finish(error);
    }
}

/// A child span of bundle `bundle`'s round whose context is `cx`: `None` without tracing.
pub fn child(cx: &Context, name: &'static str, bundle: &str) -> Option<Span> {
    spans::child(
        cx,
        name,
        vec![KeyValue::new(attr::BUNDLE, bundle.to_string())],
    )
}

/// Ends `span` with the error status carrying `message`.
pub fn fail(span: Span, message: String) {
    spans::end(span, Some(message));
}

/// `url` without user info, query or fragment, which may carry credentials.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        // Not a URL (validated at start, so not expected): nothing of it is shown.
        Err(_) => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://user:secret@bundles.example/b/authz.tar.gz?token=t#x"),
            "https://bundles.example/b/authz.tar.gz"
        );
        assert_eq!(redact_url("http://127.0.0.1:1/b"), "http://127.0.0.1:1/b");
        assert_eq!(redact_url("::"), "(not a URL)");
    }
}
