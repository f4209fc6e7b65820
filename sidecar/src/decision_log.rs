//! Decision logs in OPA's EventV1 shape, one JSON line per decision.
//!
//! The Check path only does a non-blocking `try_send` into a bounded queue; a writer thread serialises,
//! masks and writes. A full queue drops the event and counts it; a logging failure never changes a
//! decision (OPA-Envoy turns it into a deny).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Map, Value as Json};

use crate::config::{DecisionLogConfig, LogOutput};

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
    /// Nanoseconds spent evaluating.
    pub eval_ns: u64,
    /// Nanoseconds spent in the whole handler.
    pub handler_ns: u64,
    /// Whether dry-run replaced the answer with an allow.
    pub dry_run: bool,
    /// Answers of the remote calls the policy made (`http.send`, `regent.introspect`), as OPA's
    /// `nd_builtin_cache`: builtin → arguments (a JSON array) → value. Empty: none made.
    pub nd_builtin_cache: BTreeMap<&'static str, BTreeMap<String, regorus::Value>>,
}

/// Sends events to the writer thread.
#[derive(Clone)]
pub struct DecisionLogger {
    tx: Option<SyncSender<DecisionEvent>>,
    sample_rate: f64,
    nd_builtin_cache: bool,
    dropped: prometheus::IntCounter,
}

impl DecisionLogger {
    /// Starts the writer thread for the configured output (none: a logger that discards).
    pub fn start(
        cfg: &DecisionLogConfig,
        path: &str,
        dropped: prometheus::IntCounter,
    ) -> std::io::Result<DecisionLogger> {
        let sink: Box<dyn Write + Send> = match cfg.output {
            LogOutput::None => {
                return Ok(DecisionLogger {
                    tx: None,
                    sample_rate: 0.0,
                    nd_builtin_cache: false,
                    dropped,
                })
            }
            LogOutput::Stdout => Box::new(std::io::stdout()),
            LogOutput::File => {
                let file = cfg
                    .file
                    .as_ref()
                    .ok_or_else(|| std::io::Error::other("decision_logs.file not set"))?;
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(file)?,
                )
            }
        };
        let (tx, rx) = sync_channel(cfg.queue_size);
        let writer = Writer {
            sink: std::io::BufWriter::new(sink),
            masks: cfg.mask.clone(),
            path: path.trim_matches('/').to_string(),
            id: uuid::Uuid::new_v4().to_string(),
        };
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(DecisionLogger {
            tx: Some(tx),
            sample_rate: cfg.sample_rate,
            nd_builtin_cache: cfg.nd_builtin_cache,
            dropped,
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

    /// Queues an event without blocking; a full queue drops it and counts the drop.
    pub fn log(&self, event: DecisionEvent) {
        let Some(tx) = &self.tx else { return };
        if self.sample_rate < 1.0 && rand::random::<f64>() >= self.sample_rate {
            return;
        }
        match tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

struct Writer {
    sink: std::io::BufWriter<Box<dyn Write + Send>>,
    masks: Vec<String>,
    path: String,
    id: String,
}

impl Writer {
    fn run(mut self, rx: Receiver<DecisionEvent>) {
        while let Ok(event) = rx.recv() {
            let line = self.render(event);
            let mut ok = writeln!(self.sink, "{line}").is_ok();
            // Flush when the queue is drained, so lines appear promptly without a syscall per event.
            let mut pending = rx.try_iter();
            for e in pending.by_ref().take(256) {
                let line = self.render(e);
                ok &= writeln!(self.sink, "{line}").is_ok();
            }
            ok &= self.sink.flush().is_ok();
            if !ok {
                tracing::warn!("writing decision logs failed");
            }
        }
    }

    fn render(&self, e: DecisionEvent) -> Json {
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
        if !e.nd_builtin_cache.is_empty() {
            event.insert(
                "nd_builtin_cache".into(),
                serde_json::to_value(&e.nd_builtin_cache).unwrap_or(Json::Null),
            );
        }
        let mut event = Json::Object(event);
        let erased: Vec<Json> = self
            .masks
            .iter()
            .filter(|p| remove_pointer(&mut event, p))
            .map(|p| Json::String(p.clone()))
            .collect();
        if !erased.is_empty() {
            event["erased"] = Json::Array(erased);
        }
        event
    }
}

fn to_json(v: &regorus::Value) -> Json {
    if *v == regorus::Value::Undefined {
        return Json::Null;
    }
    serde_json::to_value(v).unwrap_or(Json::Null)
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
    fn pointers_remove_fields() {
        let mut doc = json!({"input": {"h": {"authorization": "x", "a/b": 1}, "l": [1, 2]}});
        assert!(remove_pointer(&mut doc, "/input/h/authorization"));
        assert!(remove_pointer(&mut doc, "/input/h/a~1b"));
        assert!(remove_pointer(&mut doc, "/input/l/0"));
        assert!(!remove_pointer(&mut doc, "/input/missing/x"));
        assert_eq!(doc, json!({"input": {"h": {}, "l": [2]}}));
    }
}
