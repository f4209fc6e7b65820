//! Decision logs in OPA's EventV1 shape: one JSON line per decision on stdout or in a file,
//! and/or uploaded to an OPA decision log receiver ([`upload`]).
//!
//! The Check path only does a non-blocking `try_send` into a bounded queue; a writer thread serialises,
//! masks and writes. A full queue drops the event and counts it; a logging failure never changes a
//! decision (OPA-Envoy turns it into a deny).

mod pointer;
pub mod spool;
pub mod upload;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use serde_json::Value as Json;

use crate::config::{DecisionLogConfig, LogOutput};
use pointer::{remove_pointer, remove_value, segments, upsert_pointer};
use regent_policy::log_rules::{LogRules, MaskOp};
use upload::{Buffer, UploadHandle, Uploader};

/// How long the writer lets events gather after a batch (at 50,000 decisions a second, 50 of
/// the queue's `queue_size` places).
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// Every `reason` of `regent_decision_logs_dropped_total`, exported at 0 from start.
pub const DROP_REASONS: &[&str] = &[
    "queue_full",
    "buffer_full",
    "too_large",
    "encoding",
    "shutdown",
    "mask_error",
    "spool_full",
    "spool_corrupt",
];

/// The decision log's metrics.
#[derive(Clone)]
pub struct DecisionLogMetrics {
    dropped: IntCounterVec,
    /// Events the policy's `system.log.drop` kept out: wanted, not lost.
    policy_dropped: IntCounter,
    uploads: IntCounterVec,
    buffer_bytes: IntGauge,
    spool_bytes: IntGauge,
}

impl DecisionLogMetrics {
    /// The metrics, not registered yet.
    pub fn new() -> prometheus::Result<Self> {
        let dropped = IntCounterVec::new(
            Opts::new(
                "regent_decision_logs_dropped_total",
                "Decision log events dropped, by reason: queue_full (the writer could not keep up), buffer_full (the upload buffer was full; the oldest go), too_large (one event above upload_size_limit_bytes), encoding, shutdown (not uploaded in shutdown_flush_seconds), mask_error (the policy's system.log rules failed), spool_full (the oldest spooled files went beyond spool.size_limit_bytes), spool_corrupt (a spooled line was not JSON).",
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
        let spool_bytes = IntGauge::new(
            "regent_decision_log_spool_bytes",
            "Bytes of decision log events spooled to disk (decision_logs.upload.spool) for upload.",
        )?;
        Ok(DecisionLogMetrics {
            dropped,
            policy_dropped,
            uploads,
            buffer_bytes,
            spool_bytes,
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
        registry.register(Box::new(self.buffer_bytes.clone()))?;
        registry.register(Box::new(self.spool_bytes.clone()))
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
    /// `allow`, `deny` or `error`: the real decision, also under dry-run.
    pub decision: &'static str,
    /// Answers of the remote calls the policy made (`http.send`, `regent.introspect`), as OPA's
    /// `nd_builtin_cache`: builtin → arguments (a JSON array) → value. Empty: none made.
    pub nd_builtin_cache: NdBuiltinCache,
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
    /// Events queued for the writer thread and not written yet: shutdown waits for them.
    in_transit: Arc<AtomicUsize>,
    upload: Option<Arc<UploadHandle>>,
    otlp: Option<Arc<OtlpHandle>>,
}

/// The OTLP logs export of decision log events (`decision_logs.otlp`), for a final flush.
pub struct OtlpHandle {
    logs: regent_telemetry::logs::Logs,
    in_transit: Arc<AtomicUsize>,
    timeout: std::time::Duration,
}

impl OtlpHandle {
    /// Waits for the events still with the writer thread, then exports what is queued; each
    /// step bounded by `decision_logs.otlp.export_timeout_seconds`.
    pub async fn shutdown(&self) {
        let drained = tokio::time::timeout(self.timeout, written(&self.in_transit)).await;
        if drained.is_err() {
            tracing::warn!("the decision log writer did not finish before the OTLP logs flush");
        }
        self.logs.shutdown().await;
    }
}

/// Returns once the writer thread has written every event queued so far (shutdown: no new ones
/// come).
async fn written(in_transit: &AtomicUsize) {
    while in_transit.load(Ordering::Acquire) > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
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
        let in_transit = Arc::new(AtomicUsize::new(0));
        let uploader = match &cfg.upload {
            Some(u) => Some(Uploader::new(u, metrics.clone(), in_transit.clone())?),
            None => None,
        };
        let otlp = match &cfg.otlp {
            Some(o) => Some(Arc::new(OtlpHandle {
                logs: regent_telemetry::logs::Logs::start(o, "regent-sidecar/decision-log")
                    .context("decision_logs.otlp")?,
                in_transit: in_transit.clone(),
                timeout: std::time::Duration::from_secs(o.export_timeout_seconds),
            })),
            None => None,
        };
        if sink.is_none() && uploader.is_none() && otlp.is_none() {
            return Ok(DecisionLogger {
                tx: None,
                sample_rate: 0.0,
                nd_builtin_cache: false,
                dropped,
                in_transit,
                upload: None,
                otlp: None,
            });
        }
        let buffer = uploader.as_ref().map(|u| u.buffer.clone());
        let (tx, rx) = sync_channel(cfg.queue_size);
        let writer = Writer {
            sink: sink.map(std::io::BufWriter::new),
            buffer,
            otlp: otlp.clone(),
            in_transit: in_transit.clone(),
            masks: cfg.mask.clone(),
            value_masks: value_masks(&cfg.mask),
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
            in_transit,
            upload: uploader.map(|u| Arc::new(u.spawn())),
            otlp,
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

    /// The OTLP logs export, for a final flush at shutdown.
    pub fn otlp(&self) -> Option<Arc<OtlpHandle>> {
        self.otlp.clone()
    }

    /// Queues an event without blocking; a full queue drops it and counts the drop.
    pub fn log(&self, event: DecisionEvent) {
        let Some(tx) = &self.tx else { return };
        if self.sample_rate < 1.0 && rand::random::<f64>() >= self.sample_rate {
            return;
        }
        self.in_transit.fetch_add(1, Ordering::AcqRel);
        match tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.in_transit.fetch_sub(1, Ordering::AcqRel);
                self.dropped.inc()
            }
        }
    }
}

struct Writer {
    sink: Option<std::io::BufWriter<Box<dyn Write + Send>>>,
    buffer: Option<Arc<Buffer>>,
    otlp: Option<Arc<OtlpHandle>>,
    in_transit: Arc<AtomicUsize>,
    masks: Vec<String>,
    /// `masks` as pointers into the policy's values, when they all fall there.
    value_masks: Option<Vec<(Top, Vec<String>)>>,
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
            for e in pending.by_ref().take(4096) {
                ok &= self.write(e);
            }
            if let Some(sink) = &mut self.sink {
                ok &= sink.flush().is_ok();
            }
            if !ok {
                tracing::warn!("writing decision logs failed");
            }
            // Let the next events gather: a Check then queues its event without waking this
            // thread, and a batch costs one wake-up and one write instead of one per event.
            std::thread::sleep(GATHER);
        }
    }

    /// Renders one event to each output; false if writing the line failed.
    fn write(&mut self, event: DecisionEvent) -> bool {
        let mut ok = true;
        // Serialised once for both outputs (a dropped event is not serialised at all).
        if let Some(line) = self.render(&event) {
            if let Some(sink) = &mut self.sink {
                ok = sink
                    .write_all(&line)
                    .and_then(|()| sink.write_all(b"\n"))
                    .is_ok();
            }
            if let Some(otlp) = &self.otlp {
                otlp.logs.emit(otlp_record(&event, &line));
            }
            if let Some(buffer) = &self.buffer {
                buffer.push(line);
            }
        }
        self.in_transit.fetch_sub(1, Ordering::AcqRel);
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

    /// The event as logged (one JSON document), or `None` when the policy's `system.log.drop`
    /// drops it (or its mask fails: what it wanted hidden is not written).
    fn render(&mut self, e: &DecisionEvent) -> Option<Vec<u8>> {
        let timestamp = chrono::DateTime::<chrono::Utc>::from(e.timestamp)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let has_rules = e.policy.as_deref().and_then(|p| self.rules_of(p)).is_some();
        let mut event = EventV1::new(e, &self.id, &self.path, &timestamp);
        if !has_rules {
            if let Some(values) = self.value_masks.as_ref() {
                // The static masks fall on the input and the result: remove their fields from the
                // policy's values and write those straight to bytes, without a JSON tree (which
                // cost as much CPU as the Check it logged).
                let mut input = e.input.clone();
                let mut result = e.result.clone();
                let mut erased = Vec::new();
                for (pointer, (top, parts)) in self.masks.iter().zip(values) {
                    let at = if *top == Top::Input {
                        &mut input
                    } else {
                        &mut result
                    };
                    let removed = match (parts.is_empty(), at.as_mut()) {
                        (true, Some(_)) => at.take().is_some(),
                        (false, Some(v)) => remove_value(v, parts),
                        (_, None) => false,
                    };
                    if removed {
                        erased.push(pointer.as_str());
                    }
                }
                event.input = input.as_ref().map(Defined);
                event.result = result.as_ref().map(Defined);
                event.erased = (!erased.is_empty()).then_some(erased);
                return self.encode(serde_json::to_vec(&event));
            }
        }
        let mut tree = self.encode(serde_json::to_value(&event))?;
        let mut erased: Vec<Json> = Vec::new();
        let mut masked: Vec<Json> = Vec::new();
        if let Some(rules) = e.policy.as_deref().and_then(|p| self.rules_of(p)) {
            let asked = rules
                .drops(&tree)
                .and_then(|d| Ok((d, if d { Vec::new() } else { rules.mask(&tree)? })));
            match asked {
                Ok((true, _)) => {
                    self.metrics.policy_dropped.inc();
                    return None;
                }
                Ok((false, ops)) => apply_mask(&mut tree, ops, &mut erased, &mut masked),
                Err(err) => {
                    tracing::warn!(error = %err.message, "the policy's system.log rules failed; the decision log event is dropped");
                    self.metrics.dropped("mask_error").inc();
                    return None;
                }
            }
        }
        for p in &self.masks {
            if remove_pointer(&mut tree, p) && !erased.iter().any(|e| e == p.as_str()) {
                erased.push(Json::String(p.clone()));
            }
        }
        if !erased.is_empty() {
            tree["erased"] = Json::Array(erased);
        }
        if !masked.is_empty() {
            tree["masked"] = Json::Array(masked);
        }
        Some(tree.to_string().into_bytes())
    }

    /// The encoded event; a failure drops it, counted (`encoding`).
    fn encode<T>(&self, encoded: serde_json::Result<T>) -> Option<T> {
        encoded
            .map_err(|err| {
                tracing::warn!(error = %err, "a decision log event could not be encoded");
                self.metrics.dropped("encoding").inc();
            })
            .ok()
    }
}

/// The OTLP log record of an event: the logged JSON as its body, linked to the Check's span.
fn otlp_record<'e>(e: &'e DecisionEvent, line: &[u8]) -> regent_telemetry::logs::Record<'e> {
    regent_telemetry::logs::Record {
        event_name: "regent.decision",
        timestamp: e.timestamp,
        body: String::from_utf8_lossy(line).into_owned(),
        trace: e.trace_id.as_deref().zip(e.span_id.as_deref()),
        attributes: vec![
            ("regent.decision_id", e.decision_id.clone()),
            ("regent.decision", e.decision.to_string()),
        ],
    }
}

/// The part of an event a static mask falls on, when it is one of the policy's values.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Top {
    Input,
    Result,
}

/// The static masks as (top-level field, pointer below it), when every one falls on `input` or
/// `result`; `None` sends events through the JSON tree.
fn value_masks(masks: &[String]) -> Option<Vec<(Top, Vec<String>)>> {
    masks
        .iter()
        .map(|p| {
            let mut parts = segments(p)?;
            let top = match parts.first().map(String::as_str) {
                Some("input") => Top::Input,
                Some("result") => Top::Result,
                _ => return None,
            };
            parts.remove(0);
            Some((top, parts))
        })
        .collect()
}

/// An event in OPA's EventV1 shape, borrowing the decision's values. Fields in alphabetical
/// order, as a JSON object built from a map would have them, so both render paths agree.
#[derive(serde::Serialize)]
struct EventV1<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    bundles: Option<Bundles<'a>>,
    decision_id: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    erased: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorV1<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<Defined<'a>>,
    labels: Labels<'a>,
    metrics: Timers,
    #[serde(skip_serializing_if = "no_calls")]
    nd_builtin_cache: &'a NdBuiltinCache,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Defined<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<&'a str>,
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
}

impl<'a> EventV1<'a> {
    fn new(e: &'a DecisionEvent, id: &'a str, path: &'a str, timestamp: &'a str) -> Self {
        EventV1 {
            bundles: e.revisions.as_deref().map(Bundles),
            decision_id: &e.decision_id,
            dry_run: e.dry_run,
            erased: None,
            error: e.error.as_deref().map(|message| ErrorV1 { message }),
            input: e.input.as_ref().map(Defined),
            labels: Labels {
                id,
                version: env!("CARGO_PKG_VERSION"),
            },
            metrics: Timers {
                timer_rego_query_eval_ns: e.eval_ns,
                timer_server_handler_ns: e.handler_ns,
            },
            nd_builtin_cache: &e.nd_builtin_cache,
            path,
            result: e.result.as_ref().map(Defined),
            span_id: e.span_id.as_deref(),
            timestamp,
            trace_id: e.trace_id.as_deref(),
        }
    }
}

/// Builtin → arguments (a JSON array) → value, as OPA's `nd_builtin_cache`.
pub type NdBuiltinCache = BTreeMap<&'static str, BTreeMap<String, regorus::Value>>;

fn no_calls(calls: &&NdBuiltinCache) -> bool {
    calls.is_empty()
}

#[derive(serde::Serialize)]
struct Labels<'a> {
    id: &'a str,
    version: &'a str,
}

#[derive(serde::Serialize)]
struct Timers {
    timer_rego_query_eval_ns: u64,
    timer_server_handler_ns: u64,
}

#[derive(serde::Serialize)]
struct ErrorV1<'a> {
    message: &'a str,
}

/// `{"<bundle>": {"revision": "<rev>"}}`.
struct Bundles<'a>(&'a BTreeMap<String, String>);

impl serde::Serialize for Bundles<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, revision) in self.0 {
            map.serialize_entry(name, &Revision { revision })?;
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
struct Revision<'a> {
    revision: &'a str,
}

/// A policy value, with an undefined one written as `null` (regorus writes `"<undefined>"`).
struct Defined<'a>(&'a regorus::Value);

impl serde::Serialize for Defined<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            regorus::Value::Undefined => s.serialize_unit(),
            v => v.serialize(s),
        }
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
