//! Decision logs in OPA's EventV1 shape: one JSON line per decision on stdout or in a file,
//! and/or uploaded to an OPA decision log receiver ([`upload`]).
//!
//! The Check path only does a non-blocking `try_send` into a bounded queue; a writer thread serialises,
//! masks and writes. A full queue drops the event and counts it; a logging failure never changes a
//! decision (OPA-Envoy turns it into a deny).

pub mod upload;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use serde_json::{json, Map, Value as Json};

use crate::config::{DecisionLogConfig, LogOutput};
use regent_policy::log_rules::{LogRules, MaskOp};
use upload::{Buffer, UploadHandle, Uploader};

/// Every `reason` of `regent_decision_logs_dropped_total`, exported at 0 from start.
pub const DROP_REASONS: &[&str] = &[
    "queue_full",
    "buffer_full",
    "too_large",
    "encoding",
    "shutdown",
    "mask_error",
];

/// The decision log's metrics.
#[derive(Clone)]
pub struct DecisionLogMetrics {
    dropped: IntCounterVec,
    /// Events the policy's `system.log.drop` kept out: wanted, not lost.
    policy_dropped: IntCounter,
    uploads: IntCounterVec,
    buffer_bytes: IntGauge,
}

impl DecisionLogMetrics {
    /// The metrics, not registered yet.
    pub fn new() -> prometheus::Result<Self> {
        let dropped = IntCounterVec::new(
            Opts::new(
                "regent_decision_logs_dropped_total",
                "Decision log events dropped, by reason: queue_full (the writer could not keep up), buffer_full (the upload buffer was full; the oldest go), too_large (one event above upload_size_limit_bytes), encoding, shutdown (not uploaded in shutdown_flush_seconds), mask_error (the policy's system.log rules failed).",
            ),
            &["reason"],
        )?;
        for r in DROP_REASONS {
            dropped.with_label_values(&[r]);
        }
        let policy_dropped = IntCounter::new(
            "regent_decision_logs_policy_dropped_total",
            "Decision log events not logged because the policy's data.system.log.drop is true.",
        )?;
        let uploads = IntCounterVec::new(
            Opts::new(
                "regent_decision_log_uploads_total",
                "Decision log chunks POSTed to decision_logs.upload.url, by result (ok, error).",
            ),
            &["result"],
        )?;
        let buffer_bytes = IntGauge::new(
            "regent_decision_log_buffer_bytes",
            "Bytes of decision log events waiting for upload.",
        )?;
        Ok(DecisionLogMetrics {
            dropped,
            policy_dropped,
            uploads,
            buffer_bytes,
        })
    }

    /// Registers the drop counter (every sidecar has it).
    pub fn register(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.dropped.clone()))?;
        registry.register(Box::new(self.policy_dropped.clone()))
    }

    /// Registers the upload series, when uploads are configured.
    pub fn register_uploads(&self, registry: &prometheus::Registry) -> prometheus::Result<()> {
        for r in ["ok", "error"] {
            self.uploads.with_label_values(&[r]);
        }
        registry.register(Box::new(self.uploads.clone()))?;
        registry.register(Box::new(self.buffer_bytes.clone()))
    }

    /// `regent_decision_logs_dropped_total{reason}`.
    pub fn dropped(&self, reason: &str) -> IntCounter {
        self.dropped.with_label_values(&[reason])
    }

    fn upload(&self, result: &str) {
        self.uploads.with_label_values(&[result]).inc();
    }
}

/// One decision, as handed to the writer.
pub struct DecisionEvent {
    /// uuid4, also in the CheckResponse's dynamic metadata.
    pub decision_id: String,
    /// When the Check arrived.
    pub timestamp: SystemTime,
    /// The input document (absent when the request could not be parsed).
    pub input: Option<regorus::Value>,
    /// The policy's result.
    pub result: Option<regorus::Value>,
    /// Error message, for errors and parse failures.
    pub error: Option<String>,
    /// Bundle revisions of the policy used.
    pub revisions: Option<Arc<BTreeMap<String, String>>>,
    /// The policy that decided: its `system.log` rules mask or drop the event.
    pub policy: Option<Arc<regent_policy::ActivePolicy>>,
    /// Nanoseconds spent evaluating.
    pub eval_ns: u64,
    /// Nanoseconds spent in the whole handler.
    pub handler_ns: u64,
    /// Whether dry-run replaced the answer with an allow.
    pub dry_run: bool,
    /// Answers of the remote calls the policy made (`http.send`, `regent.introspect`), as OPA's
    /// `nd_builtin_cache`: builtin → arguments (a JSON array) → value. Empty: none made.
    pub nd_builtin_cache: BTreeMap<&'static str, BTreeMap<String, regorus::Value>>,
    /// The Check span's trace id (32 hex digits), when Checks are traced (sampled or not).
    pub trace_id: Option<String>,
    /// The Check span's id (16 hex digits), with `trace_id`.
    pub span_id: Option<String>,
}

/// Sends events to the writer thread.
#[derive(Clone)]
pub struct DecisionLogger {
    tx: Option<SyncSender<DecisionEvent>>,
    sample_rate: f64,
    nd_builtin_cache: bool,
    dropped: IntCounter,
    /// The upload buffer, whose in-transit count shutdown waits on.
    buffer: Option<Arc<Buffer>>,
    upload: Option<Arc<UploadHandle>>,
}

impl DecisionLogger {
    /// Starts the writer thread for the configured output and, with `upload`, the upload task
    /// (on the current runtime). Neither: a logger that discards.
    pub fn start(
        cfg: &DecisionLogConfig,
        path: &str,
        metrics: DecisionLogMetrics,
    ) -> anyhow::Result<DecisionLogger> {
        let dropped = metrics.dropped("queue_full");
        let sink: Option<Box<dyn Write + Send>> = match cfg.output {
            LogOutput::None => None,
            LogOutput::Stdout => Some(Box::new(std::io::stdout())),
            LogOutput::File => {
                let file = cfg
                    .file
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("decision_logs.file not set"))?;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
                    .map_err(|e| anyhow::anyhow!("decision_logs.file {}: {e}", file.display()))?;
                Some(Box::new(f))
            }
        };
        let uploader = match &cfg.upload {
            Some(u) => Some(Uploader::new(u, metrics.clone())?),
            None => None,
        };
        if sink.is_none() && uploader.is_none() {
            return Ok(DecisionLogger {
                tx: None,
                sample_rate: 0.0,
                nd_builtin_cache: false,
                dropped,
                buffer: None,
                upload: None,
            });
        }
        let buffer = uploader.as_ref().map(|u| u.buffer.clone());
        let (tx, rx) = sync_channel(cfg.queue_size);
        let writer = Writer {
            sink: sink.map(std::io::BufWriter::new),
            buffer: buffer.clone(),
            masks: cfg.mask.clone(),
            path: path.trim_matches('/').to_string(),
            id: uuid::Uuid::new_v4().to_string(),
            log_rules: None,
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(DecisionLogger {
            tx: Some(tx),
            sample_rate: cfg.sample_rate,
            nd_builtin_cache: cfg.nd_builtin_cache,
            dropped,
            buffer,
            upload: uploader.map(|u| Arc::new(u.spawn())),
        })
    }

    /// Whether events are written at all (so callers can skip building them).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether events carry the remote calls' answers (`decision_logs.nd_builtin_cache`).
    pub fn records_nd_builtin_cache(&self) -> bool {
        self.nd_builtin_cache && self.enabled()
    }

    /// The upload task, for a final flush at shutdown.
    pub fn upload(&self) -> Option<Arc<UploadHandle>> {
        self.upload.clone()
    }

    /// Queues an event without blocking; a full queue drops it and counts the drop.
    pub fn log(&self, event: DecisionEvent) {
        let Some(tx) = &self.tx else { return };
        if self.sample_rate < 1.0 && rand::random::<f64>() >= self.sample_rate {
            return;
        }
        if let Some(b) = &self.buffer {
            b.in_transit.fetch_add(1, Ordering::AcqRel);
        }
        match tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if let Some(b) = &self.buffer {
                    b.in_transit.fetch_sub(1, Ordering::AcqRel);
                }
                self.dropped.inc()
            }
        }
    }
}

struct Writer {
    sink: Option<std::io::BufWriter<Box<dyn Write + Send>>>,
    buffer: Option<Arc<Buffer>>,
    masks: Vec<String>,
    path: String,
    id: String,
    /// The `system.log` rules of the last policy seen, by its generation.
    log_rules: Option<(u64, Option<LogRules>)>,
    metrics: DecisionLogMetrics,
}

impl Writer {
    fn run(mut self, rx: Receiver<DecisionEvent>) {
        while let Ok(event) = rx.recv() {
            let mut ok = self.write(event);
            // Flush when the queue is drained, so lines appear promptly without a syscall per event.
            let mut pending = rx.try_iter();
            for e in pending.by_ref().take(256) {
                ok &= self.write(e);
            }
            if let Some(sink) = &mut self.sink {
                ok &= sink.flush().is_ok();
            }
            if !ok {
                tracing::warn!("writing decision logs failed");
            }
        }
    }

    /// Renders one event to each output; false if writing the line failed.
    fn write(&mut self, event: DecisionEvent) -> bool {
        let policy = event.policy.clone();
        let mut ok = true;
        // Serialised once for both outputs (a dropped event is not serialised at all).
        if let Some(line) = self.render(event, policy.as_deref()).map(|j| j.to_string()) {
            if let Some(sink) = &mut self.sink {
                ok = writeln!(sink, "{line}").is_ok();
            }
            if let Some(buffer) = &self.buffer {
                buffer.push(line.into_bytes());
            }
        }
        if let Some(buffer) = &self.buffer {
            buffer.in_transit.fetch_sub(1, Ordering::AcqRel);
        }
        ok
    }

    /// The `system.log` rules of `policy`, compiled once per policy generation.
    fn rules_of(&mut self, policy: &regent_policy::ActivePolicy) -> Option<&mut LogRules> {
        let generation = policy.generation();
        if self.log_rules.as_ref().map(|(g, _)| *g) != Some(generation) {
            self.log_rules = Some((generation, policy.log_rules()));
        }
        self.log_rules.as_mut().and_then(|(_, r)| r.as_mut())
    }

    /// The event as logged, or `None` when the policy's `system.log.drop` drops it (or its mask
    /// fails: what it wanted hidden is not written).
    fn render(
        &mut self,
        e: DecisionEvent,
        policy: Option<&regent_policy::ActivePolicy>,
    ) -> Option<Json> {
        let mut event = self.event_json(e);
        let mut erased: Vec<Json> = Vec::new();
        let mut masked: Vec<Json> = Vec::new();
        if let Some(rules) = policy.and_then(|p| self.rules_of(p)) {
            let asked = rules
                .drops(&event)
                .and_then(|d| Ok((d, if d { Vec::new() } else { rules.mask(&event)? })));
            match asked {
                Ok((true, _)) => {
                    self.metrics.policy_dropped.inc();
                    return None;
                }
                Ok((false, ops)) => apply_mask(&mut event, ops, &mut erased, &mut masked),
                Err(err) => {
                    tracing::warn!(error = %err.message, "the policy's system.log rules failed; the decision log event is dropped");
                    self.metrics.dropped("mask_error").inc();
                    return None;
                }
            }
        }
        for p in &self.masks {
            if remove_pointer(&mut event, p) && !erased.iter().any(|e| e == p.as_str()) {
                erased.push(Json::String(p.clone()));
            }
        }
        if !erased.is_empty() {
            event["erased"] = Json::Array(erased);
        }
        if !masked.is_empty() {
            event["masked"] = Json::Array(masked);
        }
        Some(event)
    }

    /// The event in OPA's EventV1 shape, before masking.
    fn event_json(&self, e: DecisionEvent) -> Json {
        let timestamp = chrono::DateTime::<chrono::Utc>::from(e.timestamp)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut event = Map::new();
        event.insert(
            "labels".into(),
            json!({"id": self.id, "version": env!("CARGO_PKG_VERSION")}),
        );
        event.insert("decision_id".into(), e.decision_id.into());
        event.insert("timestamp".into(), timestamp.into());
        event.insert("path".into(), self.path.clone().into());
        if let Some(input) = &e.input {
            event.insert("input".into(), to_json(input));
        }
        if let Some(result) = &e.result {
            event.insert("result".into(), to_json(result));
        }
        if let Some(err) = e.error {
            event.insert("error".into(), json!({"message": err}));
        }
        if let Some(revs) = &e.revisions {
            let bundles: Map<String, Json> = revs
                .iter()
                .map(|(n, r)| (n.clone(), json!({"revision": r})))
                .collect();
            event.insert("bundles".into(), bundles.into());
        }
        event.insert(
            "metrics".into(),
            json!({"timer_rego_query_eval_ns": e.eval_ns, "timer_server_handler_ns": e.handler_ns}),
        );
        if e.dry_run {
            event.insert("dry_run".into(), true.into());
        }
        // OPA's EventV1 names.
        if let Some(trace_id) = e.trace_id {
            event.insert("trace_id".into(), trace_id.into());
        }
        if let Some(span_id) = e.span_id {
            event.insert("span_id".into(), span_id.into());
        }
        if !e.nd_builtin_cache.is_empty() {
            event.insert(
                "nd_builtin_cache".into(),
                serde_json::to_value(&e.nd_builtin_cache).unwrap_or(Json::Null),
            );
        }
        Json::Object(event)
    }
}

/// Applies a mask rule's answer, listing what changed as OPA does (`erased`, `masked`).
fn apply_mask(event: &mut Json, ops: Vec<MaskOp>, erased: &mut Vec<Json>, masked: &mut Vec<Json>) {
    for op in ops {
        match op {
            MaskOp::Erase(p) => {
                if remove_pointer(event, &p) {
                    erased.push(p.into());
                }
            }
            MaskOp::Remove(p) => {
                if remove_pointer(event, &p) {
                    masked.push(p.into());
                }
            }
            MaskOp::Upsert { path, value } => {
                if upsert_pointer(event, &path, value) {
                    masked.push(path.into());
                }
            }
        }
    }
}

fn to_json(v: &regorus::Value) -> Json {
    if *v == regorus::Value::Undefined {
        return Json::Null;
    }
    serde_json::to_value(v).unwrap_or(Json::Null)
}

/// Sets the value at a JSON pointer, creating missing parent objects; returns whether it was set
/// (not when a parent is a scalar, or an array index is out of range).
pub fn upsert_pointer(doc: &mut Json, pointer: &str, value: Json) -> bool {
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    let mut at = doc;
    for part in parents {
        at = match at {
            Json::Object(m) => m
                .entry(part.clone())
                .or_insert_with(|| Json::Object(Map::new())),
            Json::Array(a) => match part.parse::<usize>() {
                Ok(i) if i < a.len() => &mut a[i],
                _ => return false,
            },
            _ => return false,
        };
    }
    match at {
        Json::Object(m) => {
            m.insert(last.clone(), value);
            true
        }
        Json::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a[i] = value;
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Removes the value at a JSON pointer; returns whether something was removed.
pub fn remove_pointer(doc: &mut Json, pointer: &str) -> bool {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return false;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    let target = if parent.is_empty() {
        Some(doc)
    } else {
        doc.pointer_mut(parent)
    };
    match target {
        Some(Json::Object(m)) => m.remove(&last).is_some(),
        Some(Json::Array(a)) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_set_fields_and_create_parents() {
        let mut doc = json!({"input": {"l": [1, 2], "s": "x"}});
        assert!(upsert_pointer(
            &mut doc,
            "/input/user/name",
            json!("redacted")
        ));
        assert!(upsert_pointer(&mut doc, "/input/l/1", json!(0)));
        assert!(!upsert_pointer(&mut doc, "/input/l/5", json!(0)));
        assert!(!upsert_pointer(&mut doc, "/input/s/deeper", json!(0)));
        assert_eq!(
            doc,
            json!({"input": {"l": [1, 0], "s": "x", "user": {"name": "redacted"}}})
        );
    }

    #[test]
    fn pointers_remove_fields() {
        let mut doc = json!({"input": {"h": {"authorization": "x", "a/b": 1}, "l": [1, 2]}});
        assert!(remove_pointer(&mut doc, "/input/h/authorization"));
        assert!(remove_pointer(&mut doc, "/input/h/a~1b"));
        assert!(remove_pointer(&mut doc, "/input/l/0"));
        assert!(!remove_pointer(&mut doc, "/input/missing/x"));
        assert_eq!(doc, json!({"input": {"h": {}, "l": [2]}}));
    }
}
