//! The export queue's bound, counted. The SDK's batch processor drops a span when its queue is
//! full but only logs the first drop and keeps the count to itself; the program needs it as a
//! metric. So admission is decided here, in front of it: a span enters only while fewer than
//! `max_queue_size` spans are between ending and being handed to the exporter (the processor's
//! channel and its batch buffer together), and the exporter side gives the slots back. The
//! processor's channel is [`CONTROL_SLOTS`] larger: it also carries the processor's control
//! messages (its resource, flush ticks, shutdown), which must never take the place of a span
//! admitted here, nor fail to be sent because admitted spans filled it.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use prometheus::IntCounter;

use crate::TracingMetrics;

/// Room in the processor's channel beyond the admitted spans, for its control messages.
pub(crate) const CONTROL_SLOTS: usize = 16;

/// The admitting side, before it wraps the processor.
pub(crate) struct Admission {
    queued: Arc<AtomicUsize>,
    capacity: usize,
    dropped: IntCounter,
}

/// Pairs an admission of `capacity` spans with `exporter`, which frees the slots of each batch.
pub(crate) fn bounded<E: SpanExporter>(
    exporter: E,
    capacity: usize,
    metrics: TracingMetrics,
) -> (Admission, CountingExporter<E>) {
    let queued = Arc::new(AtomicUsize::new(0));
    let admission = Admission {
        queued: Arc::clone(&queued),
        capacity,
        dropped: metrics.spans_dropped.clone(),
    };
    let exporter = CountingExporter {
        inner: exporter,
        queued,
        ok: metrics.exports.with_label_values(&["ok"]),
        error: metrics.exports.with_label_values(&["error"]),
        timeout: metrics.exports.with_label_values(&["timeout"]),
    };
    (admission, exporter)
}

impl Admission {
    /// The processor `inner` behind this admission.
    pub(crate) fn wrap<P: SpanProcessor>(self, inner: P) -> Admitting<P> {
        Admitting {
            inner,
            admission: self,
        }
    }
}

/// A span processor that admits at most `capacity` queued spans into `inner`.
pub(crate) struct Admitting<P> {
    inner: P,
    admission: Admission,
}

impl<P: fmt::Debug> fmt::Debug for Admitting<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admitting")
            .field("inner", &self.inner)
            .field("capacity", &self.admission.capacity)
            .field("queued", &self.admission.queued.load(Ordering::Relaxed))
            .finish()
    }
}

impl<P: SpanProcessor> SpanProcessor for Admitting<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // The batch processor ignores unsampled spans: they take no slot.
        if !span.span_context.is_sampled() {
            return;
        }
        let a = &self.admission;
        if a.queued.fetch_add(1, Ordering::AcqRel) >= a.capacity {
            a.queued.fetch_sub(1, Ordering::AcqRel);
            a.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// An exporter that frees the queue slots of each batch it is handed and counts the outcome.
pub(crate) struct CountingExporter<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    ok: IntCounter,
    error: IntCounter,
    timeout: IntCounter,
}

impl<E: fmt::Debug> fmt::Debug for CountingExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingExporter")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Counts an export that the processor abandoned at its timeout (the future is dropped unfinished).
struct Outcome {
    timeout: Option<IntCounter>,
}

impl Outcome {
    fn done(&mut self) {
        self.timeout = None;
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if let Some(t) = self.timeout.take() {
            t.inc();
        }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let n = batch.len();
        // Never below zero, even if the SDK hands over spans this did not admit.
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
        let mut outcome = Outcome {
            timeout: Some(self.timeout.clone()),
        };
        let export = self.inner.export(batch);
        async move {
            let result = export.await;
            // A method call, so the future owns the whole guard, not only the field.
            outcome.done();
            match &result {
                Ok(()) => self.ok.inc(),
                Err(_) => self.error.inc(),
            }
            result
        }
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
