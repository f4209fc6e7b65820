//! A small bundle server on 127.0.0.1 for the sync tests: serves bytes we control with an
//! ETag, answers 304, long-polls when asked, can fail on demand, and records what it received.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use regent_bundle::signing::{self, SignClaims};
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub(crate) const LONG_POLL_TYPE: &str = "application/vnd.openpolicyagent.bundles";

#[derive(Default)]
pub(crate) struct Served {
    pub body: Vec<u8>,
    pub etag: String,
    /// Answer with the long-poll content type (else application/gzip, like nginx).
    pub long_poll: bool,
    /// Answer every request with this status instead.
    pub fail_with: Option<u16>,
}

#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub if_none_match: Option<String>,
    pub prefer: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
pub(crate) struct Server {
    pub served: Mutex<Served>,
    pub seen: Mutex<Vec<Seen>>,
    pub statuses: Mutex<Vec<serde_json::Value>>,
    changed: Notify,
}

impl Server {
    pub(crate) fn publish(&self, body: Vec<u8>, etag: &str) {
        {
            let mut s = self.served.lock().unwrap();
            s.body = body;
            s.etag = etag.to_string();
        }
        self.changed.notify_waiters();
    }
    pub(crate) fn set(&self, f: impl FnOnce(&mut Served)) {
        f(&mut self.served.lock().unwrap());
        self.changed.notify_waiters();
    }
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn wait_seconds(prefer: &Option<String>) -> Option<u64> {
    let p = prefer.as_ref()?;
    p.split(';')
        .find_map(|part| part.trim().strip_prefix("wait="))
        .and_then(|n| n.parse().ok())
}

async fn bundle(State(srv): State<Arc<Server>>, headers: HeaderMap) -> Response {
    let seen = Seen {
        if_none_match: header(&headers, "if-none-match"),
        prefer: header(&headers, "prefer"),
        authorization: header(&headers, "authorization"),
    };
    srv.seen.lock().unwrap().push(seen.clone());
    let wait = wait_seconds(&seen.prefer);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.unwrap_or(0));
    loop {
        // Register interest before reading state so a publish in between is not missed.
        let notified = srv.changed.notified();
        let (fail, etag, body, lp) = {
            let s = srv.served.lock().unwrap();
            (s.fail_with, s.etag.clone(), s.body.clone(), s.long_poll)
        };
        if let Some(code) = fail {
            return StatusCode::from_u16(code).unwrap().into_response();
        }
        let unchanged = seen.if_none_match.as_deref() == Some(etag.as_str());
        if !unchanged {
            let ctype = if lp {
                LONG_POLL_TYPE
            } else {
                "application/gzip"
            };
            return Response::builder()
                .status(200)
                .header("etag", etag)
                .header("content-type", ctype)
                .body(Body::from(body))
                .unwrap();
        }
        if wait.is_none() || tokio::time::timeout_at(deadline, notified).await.is_err() {
            return StatusCode::NOT_MODIFIED.into_response();
        }
    }
}

async fn status(State(srv): State<Arc<Server>>, body: axum::Json<serde_json::Value>) -> StatusCode {
    srv.statuses.lock().unwrap().push(body.0);
    StatusCode::OK
}

/// Start the server; returns it and its base URL. The task ends with the test runtime.
pub(crate) async fn start() -> (Arc<Server>, String) {
    let srv = Arc::new(Server::default());
    let app = Router::new()
        .route("/bundles/{name}", get(bundle))
        .route("/status", post(status))
        .with_state(Arc::clone(&srv));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (srv, format!("http://{addr}"))
}

/// A port on which nothing listens.
pub(crate) async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/bundles/authz")
}

/// A server that accepts connections and never answers.
pub(crate) async fn hanging_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    format!("http://{addr}/bundles/authz")
}

/// A server that accepts connections and closes them at once (the peer goes away mid-request).
pub(crate) async fn resetting_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    format!("http://{addr}/bundles/authz")
}

/// A bundle of revision `rev` (roots `envoy`, allowing everything) signed by `key` as kid `k1`
/// with issue time `iat`.
pub(crate) fn signed(rev: &str, key: &signing::SigningKey, iat: i64) -> Vec<u8> {
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        ".manifest".to_string(),
        format!(r#"{{"revision":"{rev}","roots":["envoy"]}}"#).into_bytes(),
    );
    files.insert(
        "envoy/authz/policy.rego".to_string(),
        b"package envoy.authz\n\nallow := true\n".to_vec(),
    );
    let mut b = regent_bundle::Bundle::from_files(files).expect("bundle");
    let claims = SignClaims {
        iat: Some(iat),
        ..SignClaims::default()
    };
    signing::sign(&mut b, key, "k1", &claims).expect("sign");
    b.to_tar_gz().expect("tar.gz")
}

/// A fresh Ed25519 key pair: the signing key and the public key PEM.
pub(crate) fn key_pair() -> (signing::SigningKey, String) {
    let (private, public) = signing::generate_key_pem();
    (
        signing::signing_key_from_pem(&private, "test key").expect("key"),
        public,
    )
}
