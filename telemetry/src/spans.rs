//! Root spans of background work (a sync round, a build) whose steps may run on other threads.
//!
//! Such work has no caller, so each [`Task`] is the root of a trace of its own. Its context
//! carries the tracer as a context value: code handed only the context (attached on a blocking
//! thread, say) makes child spans with [`child`], and makes none when there is no such context,
//! which is how tracing off costs nothing there.

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};

/// Makes the root spans of one kind of background work.
#[derive(Clone)]
pub struct TaskTracer {
    tracer: SdkTracer,
}

impl TaskTracer {
    /// Spans made with `tracer`.
    pub fn new(tracer: SdkTracer) -> Self {
        TaskTracer { tracer }
    }

    /// Starts a root span `name` with `attributes`.
    pub fn root(&self, name: &'static str, attributes: Vec<KeyValue>) -> Task {
        let span = self.span(name, attributes, &Context::new());
        Task {
            cx: Context::new().with_span(span).with_value(self.clone()),
        }
    }

    fn span(&self, name: &'static str, attributes: Vec<KeyValue>, parent: &Context) -> Span {
        self.tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent)
    }
}

/// A root span in progress, in the context its children are made in.
pub struct Task {
    cx: Context,
}

impl Task {
    /// The task's context: attach it where children are made from [`Context::current`].
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// Starts a child span of the task.
    pub fn child(&self, name: &'static str, attributes: Vec<KeyValue>) -> Option<Span> {
        child(&self.cx, name, attributes)
    }

    /// Sets an attribute of the task's span.
    pub fn set_attribute(&self, attribute: KeyValue) {
        self.cx.span().set_attribute(attribute);
    }

    /// Ends the task's span, with the error status carrying `error` when there is one.
    pub fn finish(self, error: Option<String>) {
        let span = self.cx.span();
        if let Some(message) = error {
            span.set_status(Status::error(message));
        }
        span.end();
    }
}

/// A child span of the task whose context is `cx`; `None` when `cx` is no task's (tracing is off).
pub fn child(cx: &Context, name: &'static str, attributes: Vec<KeyValue>) -> Option<Span> {
    let tracer = cx.get::<TaskTracer>()?;
    Some(tracer.span(name, attributes, cx))
}

/// Ends `span`, with the error status carrying `error` when there is one.
pub fn end(mut span: Span, error: Option<String>) {
    if let Some(message) = error {
        span.set_status(Status::error(message));
    }
    span.end();
}
