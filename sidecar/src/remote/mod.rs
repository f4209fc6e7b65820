//! Remote calls made for policies: `http.send` and `regent.introspect` (see docs/remote-calls.md).
//!
//! The policy crate defers a call it has no answer for (`regent_policy::builtins::remote`); a
//! Check then awaits [`RemoteCalls::perform`] and evaluates again. Here: answering from cache
//! without waiting ([`Resolver::cached`]), and performing calls, each once at a time however many
//! Checks ask for it together (single-flight: a burst of Checks carrying the same new token costs
//! the introspection endpoint one request).

pub mod config;
pub mod http_send;
pub mod introspect;
pub mod metrics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use regent_policy::builtins::keysets;
use regent_policy::builtins::remote::{Answer, Call, Resolver, HTTP_SEND, INTROSPECT, KEY_REFRESH};
use regorus::Value;

pub use config::RemoteCallsConfig;
use http_send::HttpSend;
use introspect::Introspection;
use metrics::RemoteMetrics;

use crate::reload::Watcher;

type InFlight = Shared<BoxFuture<'static, Answer>>;

/// The sidecar's remote call machinery, shared by every Check.
pub struct RemoteCalls {
    http_send: HttpSend,
    introspection: Introspection,
    metrics: RemoteMetrics,
    max_rounds: u32,
    max_calls: u32,
    /// Calls being performed, by builtin and key. Only misses touch it.
    in_flight: Mutex<HashMap<(&'static str, String), InFlight>>,
    /// Watchers of the files read at start, until the server takes them.
    watchers: Mutex<Vec<Watcher>>,
}

impl RemoteCalls {
    /// Builds clients and caches for a validated `remote_calls:` section (reading its files,
    /// blocking) and registers metrics.
    pub fn new(cfg: &RemoteCallsConfig, registry: &prometheus::Registry) -> anyhow::Result<Self> {
        let names: Vec<String> = cfg.introspection.iter().map(|e| e.name.clone()).collect();
        let metrics = RemoteMetrics::register(registry, &names)?;
        let mut watchers = Vec::new();
        Ok(RemoteCalls {
            http_send: HttpSend::new(&cfg.http_send, metrics.clone(), &mut watchers)?,
            introspection: Introspection::new(&cfg.introspection, metrics.clone(), &mut watchers)?,
            metrics,
            max_rounds: cfg.max_rounds,
            max_calls: cfg.max_calls_per_check,
            in_flight: Mutex::new(HashMap::new()),
            watchers: Mutex::new(watchers),
        })
    }

    /// Watchers that re-read the CA, client certificate and client secret files when they
    /// change (`remote_tls`, `introspection_secret`); empty after the first call.
    pub fn take_watchers(&self) -> Vec<Watcher> {
        std::mem::take(
            &mut *self
                .watchers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Most evaluations of one Check.
    pub fn max_rounds(&self) -> u32 {
        self.max_rounds
    }

    /// Most calls one Check may wait for.
    pub fn max_calls(&self) -> u32 {
        self.max_calls
    }

    /// The metrics, for the Check path's counters.
    pub fn metrics(&self) -> &RemoteMetrics {
        &self.metrics
    }

    /// Performs `calls` concurrently; answers in the same order.
    pub async fn perform(self: &Arc<Self>, calls: Vec<Call>) -> Vec<(Call, Answer)> {
        let waits = calls.into_iter().map(|call| {
            let shared = self.in_flight(&call);
            async move { (call, shared.await) }
        });
        futures::future::join_all(waits).await
    }

    /// The one in-flight performance of `call`, started if there is none.
    fn in_flight(self: &Arc<Self>, call: &Call) -> InFlight {
        let id = (call.builtin, call.key.clone());
        let mut flights = self
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(f) = flights.get(&id) {
            return f.clone();
        }
        let me = self.clone();
        let owned = call.clone();
        let done = id.clone();
        // Spawned, so the call completes (and leaves the map) even if every Check waiting for
        // it is cancelled by Envoy's timeout; its answer then still fills the cache.
        let task = tokio::spawn(async move {
            let answer = me.perform_one(&owned).await;
            me.in_flight
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&done);
            answer
        });
        let fut = async move {
            task.await
                .unwrap_or_else(|e| Answer::Raise(format!("remote call task failed: {e}")))
        }
        .boxed()
        .shared();
        flights.insert(id, fut.clone());
        fut
    }

    async fn perform_one(&self, call: &Call) -> Answer {
        match call.builtin {
            HTTP_SEND => self.http_send.perform(call).await,
            INTROSPECT => self.introspection.perform(call).await,
            KEY_REFRESH => {
                if let Some(wait) = issuer(call).and_then(keysets::wait_for_refresh) {
                    wait.await;
                }
                Answer::Value(Value::Null)
            }
            other => Answer::Raise(format!("{other}: not a remote builtin")),
        }
    }
}

impl Resolver for RemoteCalls {
    fn cached(&self, call: &Call) -> Option<Answer> {
        match call.builtin {
            HTTP_SEND => self.http_send.cached(call),
            INTROSPECT => self.introspection.cached(call),
            // Waited for only when the refresh starts at once (see `identity::fetch`).
            KEY_REFRESH => match issuer(call).and_then(keysets::wait_for_refresh) {
                Some(_) => None,
                None => Some(Answer::Value(Value::Null)),
            },
            _ => None,
        }
    }
}

/// The issuer a [`KEY_REFRESH`] call names.
fn issuer(call: &Call) -> Option<&str> {
    call.args.first()?.as_string().ok().map(|s| s.as_ref())
}
