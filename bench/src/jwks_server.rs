//! A JWKS endpoint on 127.0.0.1 for the benchmark of remote key sets
//! (`bench/policies/edge_jwt_remote`): `GET /jwks` answers the key set (200, no ETag, no caching
//! headers, so every refresh of the sidecar is a full fetch), `GET /requests` the number of `/jwks`
//! requests answered so far. Used by the `jwks_server` binary (`run.sh`, `callgrind.sh`) and in
//! process by `cold_kid`, which replaces the served set to rotate keys in.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

struct Served {
    jwks: RwLock<String>,
    requests: AtomicU64,
}

/// A running JWKS server (its task runs until the runtime stops).
#[derive(Clone)]
pub struct JwksServer {
    /// Where it listens.
    pub addr: SocketAddr,
    served: Arc<Served>,
}

impl JwksServer {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves `jwks` from a task of the current runtime.
    pub async fn start(addr: &str, jwks: &serde_json::Value) -> anyhow::Result<JwksServer> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let addr = listener.local_addr()?;
        let served = Arc::new(Served {
            jwks: RwLock::new(jwks.to_string()),
            requests: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/jwks", get(serve_jwks))
            .route("/requests", get(serve_requests))
            .with_state(served.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("jwks_server: {e}");
            }
        });
        Ok(JwksServer { addr, served })
    }

    /// The URL of the key set (`identity.jwks[].jwks_url`).
    pub fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    /// Serves `jwks` from now on.
    pub fn set(&self, jwks: &serde_json::Value) {
        *self.served.jwks.write().expect("lock") = jwks.to_string();
    }

    /// `/jwks` requests answered so far.
    pub fn requests(&self) -> u64 {
        self.served.requests.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(State(served): State<Arc<Served>>) -> impl IntoResponse {
    let body = served.jwks.read().expect("lock").clone();
    served.requests.fetch_add(1, Ordering::SeqCst);
    ([(CONTENT_TYPE, "application/json")], body)
}

async fn serve_requests(State(served): State<Arc<Served>>) -> String {
    format!("{}\n", served.requests.load(Ordering::SeqCst))
}
