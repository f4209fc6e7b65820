//! HTTP endpoints: bundles (with long polling), webhook, status, fleet, health, metrics. Every
//! error is a JSON body `{"code": "...", "message": "..."}` with a 4xx/5xx status.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::auth::verify_webhook;
use super::config::MAX_LONG_POLL_SECONDS;
use super::fleet::{ReportError, StatusReport};
use super::state::{now_rfc3339, Published, Shared};

/// Content type that tells OPA-compatible clients the server supports long polling.
pub const LONG_POLL_CONTENT_TYPE: &str = "application/vnd.openpolicyagent.bundles";

/// A JSON error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"regent\""),
            );
        }
        r
    }
}

type ApiResult = Result<Response, ApiError>;

/// All routes. Inside a tokio runtime this also starts feeding every publication to the fleet
/// view (`watch_publications`).
pub fn router(shared: Arc<Shared>) -> Router {
    watch_publications(&shared);
    Router::new()
        .route("/bundles/{name}", get(get_bundle))
        .route("/v1/hooks/git", post(webhook))
        .route("/v1/status/report", post(status_report))
        // OPA's default status resource, so stock OPA can report here too.
        .route("/status", post(status_report))
        .route("/v1/status", get(status))
        .route("/v1/fleet", get(fleet))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

/// Tells the fleet view about each revision as it is published (and the one restored at start),
/// so sidecars on a revision that was replaced before they reported are still recognised. One
/// task per bundle; each ends when the server shuts down or its `Shared` is dropped.
fn watch_publications(shared: &Arc<Shared>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    for (name, tx) in &shared.bundles {
        let mut rx = tx.subscribe();
        let mut shutdown = shared.shutdown.clone();
        let weak = Arc::downgrade(shared);
        let name = name.clone();
        rt.spawn(async move {
            loop {
                let revision = rx.borrow_and_update().as_ref().map(|p| p.revision.clone());
                match (revision, weak.upgrade()) {
                    (Some(r), Some(s)) => s.fleet.published(&name, &r),
                    (_, None) => return,
                    _ => {}
                }
                if *shutdown.borrow() {
                    return;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = shutdown.changed() => return,
                }
            }
        });
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on this endpoint"),
    )
}

fn require_token(s: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    if s.tokens.is_open() {
        return Ok(());
    }
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if s.tokens.check_header(value) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required (Authorization: Bearer <token>)",
        ))
    }
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // to_bytes reports an over-limit body as a length-limit error somewhere in its chain.
        let text = format!("{e}");
        let too_large = std::error::Error::source(&e)
            .map(|s| s.to_string().contains("length limit"))
            .unwrap_or(false)
            || text.contains("length limit");
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body exceeds {limit} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("reading the request body: {text}"),
            )
        }
    })
}

/// `wait=N` of `Prefer: modes=snapshot,delta;wait=N` (OPA long polling).
pub fn prefer_wait(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([';', ',']))
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .find_map(|n| n.trim().parse().ok())
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

fn bundle_response(s: &Shared, p: &Published) -> Response {
    let content_type = if s.cfg.distribution.max_long_poll_seconds > 0 {
        LONG_POLL_CONTENT_TYPE
    } else {
        "application/gzip"
    };
    s.metrics.bundle_requests.with_label_values(&["200"]).inc();
    let mut r = Response::new(Body::from(p.bytes.clone()));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&p.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&p.revision) {
        h.insert("x-regent-revision", v);
    }
    r
}

fn not_modified(s: &Shared, etag: &str) -> Response {
    s.metrics.bundle_requests.with_label_values(&["304"]).inc();
    let mut r = StatusCode::NOT_MODIFIED.into_response();
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// 503 for a configured bundle that no build has published yet.
fn not_published(s: &Shared, name: &str) -> Response {
    s.metrics.bundle_requests.with_label_values(&["503"]).inc();
    let mut r = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "bundle_not_published",
        format!("bundle {name:?} has not been published yet"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// Decrements the waiting gauge however the wait ends (including a dropped connection).
struct Waiting<'a>(&'a prometheus::IntGauge);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn get_bundle(
    State(s): State<Arc<Shared>>,
    name: Result<Path<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> ApiResult {
    let Path(name) = name.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_bundle_name",
            format!("invalid bundle name in the path: {e}"),
        )
    })?;
    if let Err(e) = require_token(&s, &headers) {
        s.metrics.bundle_requests.with_label_values(&["401"]).inc();
        return Err(e);
    }
    let Some(tx) = s.bundles.get(&name) else {
        s.metrics.bundle_requests.with_label_values(&["404"]).inc();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "bundle_not_found",
            format!("no bundle named {name:?} is configured"),
        ));
    };
    let mut rx = tx.subscribe();
    let max = s.cfg.distribution.max_long_poll_seconds;
    let wait = prefer_wait(&headers).map(|w| w.min(max)).unwrap_or(0);
    // checked: `Instant + Duration` panics on overflow, and `wait` comes from the client.
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(Duration::from_secs(wait))
        .unwrap_or(now + Duration::from_secs(MAX_LONG_POLL_SECONDS));
    let mut shutdown = s.shutdown.clone();
    let mut waiting: Option<Waiting<'_>> = None;
    loop {
        let current = rx.borrow_and_update().clone();
        match current {
            Some(p) if !etag_matches(&headers, &p.etag) => return Ok(bundle_response(&s, &p)),
            Some(p) if wait == 0 => return Ok(not_modified(&s, &p.etag)),
            None if wait == 0 => return Ok(not_published(&s, &name)),
            _ => {}
        }
        if waiting.is_none() {
            s.metrics.long_polls_waiting.inc();
            waiting = Some(Waiting(&s.metrics.long_polls_waiting));
        }
        let timed_out = tokio::select! {
            r = rx.changed() => r.is_err(),
            _ = tokio::time::sleep_until(deadline) => true,
            _ = shutdown.changed() => true,
        };
        if timed_out {
            drop(waiting);
            let current = rx.borrow().clone();
            return Ok(match current {
                Some(p) if !etag_matches(&headers, &p.etag) => bundle_response(&s, &p),
                Some(p) => not_modified(&s, &p.etag),
                // A 304 would claim the client's copy is current, and it may have none.
                None => not_published(&s, &name),
            });
        }
    }
}

async fn webhook(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> ApiResult {
    let count = |r: &str| s.metrics.webhooks.with_label_values(&[r]).inc();
    let Some(secret) = &s.webhook_secret else {
        count("disabled");
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "webhook_disabled",
            "the webhook is not configured (webhook.secret_file)",
        ));
    };
    let body = read_body(body, s.cfg.webhook.max_body_bytes)
        .await
        .inspect_err(|_| count("bad_request"))?;
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let via = verify_webhook(secret, h("x-hub-signature-256"), h("x-gitlab-token"), &body)
        .map_err(|e| {
            count("unauthorized");
            tracing::warn!(error = %e, "webhook refused");
            ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string())
        })?;
    // GitHub's form-encoded delivery option is not supported: JSON only.
    let payload: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            count("bad_request");
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_payload",
                format!("webhook body is not JSON: {e}"),
            )
        })?
    };
    if !payload.is_object() {
        count("bad_request");
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_payload",
            "webhook body must be a JSON object",
        ));
    }
    // Hook scripts ask for a few lines a person reads; webhooks of git hosts get JSON.
    let text = h("accept").is_some_and(|a| a.contains("text/plain"));
    let answer = |status: StatusCode, body: serde_json::Value, summary: String| {
        if text {
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                summary,
            )
                .into_response()
        } else {
            (status, axum::Json(body)).into_response()
        }
    };
    if h("x-github-event") == Some("ping") {
        count("ignored");
        return Ok(answer(
            StatusCode::OK,
            json!({"result": "pong"}),
            "regent: pong\n".into(),
        ));
    }
    let tracked = format!("refs/heads/{}", s.cfg.git.branch);
    if let Some(r) = payload.get("ref") {
        let Some(r) = r.as_str() else {
            count("bad_request");
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_payload",
                "\"ref\" must be a string",
            ));
        };
        if r != tracked {
            count("ignored");
            let message = format!("{r} is not the tracked branch {tracked}");
            return Ok(answer(
                StatusCode::OK,
                json!({"result": "ignored", "message": message}),
                format!("regent: {message}: nothing to publish\n"),
            ));
        }
    }
    count("accepted");
    let gen = s.request_build();
    tracing::info!(?via, generation = gen, "webhook accepted; build requested");
    let mut done = s.completed.subscribe();
    let wait = Duration::from_secs(s.cfg.webhook.wait_seconds);
    let finished = tokio::time::timeout(wait, done.wait_for(|g| *g >= gen))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    if !finished {
        let message = "build requested; see GET /v1/status for the outcome";
        return Ok(answer(
            StatusCode::ACCEPTED,
            json!({"result": "building", "message": message}),
            format!(
                "regent: still building after {}s: {message}\n",
                wait.as_secs()
            ),
        ));
    }
    let revisions = s.published_revisions();
    let book = s.book();
    let published = book.published_commit.as_ref().map(|(c, _)| c.as_str());
    let summary = crate::hook::build_summary(book.last.as_ref(), published, &revisions);
    let body = json!({
        "result": "built",
        "published_commit": published,
        "build": book.last,
        "last_rejected": book.last_rejected,
    });
    Ok(answer(StatusCode::OK, body, summary))
}

async fn status_report(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> ApiResult {
    let count = |r: &str| s.metrics.status_reports.with_label_values(&[r]).inc();
    if s.cfg.status_reports_require_token() {
        // Refused before the body is read: a report without the token changes nothing.
        require_token(&s, &headers).inspect_err(|_| count("refused"))?;
    }
    let body = read_body(body, s.cfg.fleet.max_report_bytes)
        .await
        .inspect_err(|_| count("invalid"))?;
    let report = StatusReport::parse(&body).map_err(|e| {
        count("invalid");
        ApiError::new(StatusCode::BAD_REQUEST, "bad_report", e.to_string())
    })?;
    // Normally known already (watch_publications); this covers a server without that task.
    s.fleet.published_all(&s.published_revisions());
    s.fleet.record(report).map_err(|e| {
        count("refused");
        match e {
            ReportError::Full(_) | ReportError::TooMuchData(_) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "fleet_full", e.to_string())
            }
            ReportError::Invalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_report", e.to_string())
            }
        }
    })?;
    count("ok");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn status(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    require_token(&s, &headers)?;
    let bundles: serde_json::Map<String, serde_json::Value> = s
        .bundles
        .iter()
        .map(|(name, tx)| {
            let v = match tx.borrow().as_ref() {
                Some(p) => json!({
                    "revision": p.revision,
                    "etag": p.etag,
                    "kid": p.kid,
                    "size": p.bytes.len(),
                    "published_at": p.published_at,
                }),
                None => serde_json::Value::Null,
            };
            (name.clone(), v)
        })
        .collect();
    let book = s.book();
    let body = json!({
        "ready": s.is_ready(),
        "now": now_rfc3339(),
        "source": {
            "repo": super::git::redact_url(&s.cfg.git.repo),
            "branch": s.cfg.git.branch,
        },
        "published_commit": book.published_commit.as_ref().map(|(c, _)| c),
        "published_at": book.published_commit.as_ref().map(|(_, t)| t),
        "bundles": bundles,
        "last_build": book.last,
        "last_rejected": book.last_rejected,
    });
    Ok(axum::Json(body).into_response())
}

async fn fleet(State(s): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    require_token(&s, &headers)?;
    let view = s.fleet.view(&s.published_revisions());
    Ok(axum::Json(view).into_response())
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    s.fleet.prune();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    if s.is_ready() {
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "code": "not_ready",
                "message": "no bundle restored and the first build has not finished",
            })),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_opa_prefer_header() {
        let mut h = HeaderMap::new();
        assert_eq!(prefer_wait(&h), None);
        h.insert("prefer", HeaderValue::from_static("modes=snapshot,delta"));
        assert_eq!(prefer_wait(&h), None);
        h.insert(
            "prefer",
            HeaderValue::from_static("modes=snapshot,delta;wait=30"),
        );
        assert_eq!(prefer_wait(&h), Some(30));
        h.insert("prefer", HeaderValue::from_static("wait=abc"));
        assert_eq!(prefer_wait(&h), None);
    }

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        let mut h = HeaderMap::new();
        assert!(!etag_matches(&h, "\"a\""));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"a\""),
        );
        assert!(etag_matches(&h, "\"a\""));
        assert!(!etag_matches(&h, "\"b\""));
        // An unquoted tag is not the quoted one.
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("b"));
        assert!(!etag_matches(&h, "\"b\""));
        // Several header lines count as one list.
        h.append(header::IF_NONE_MATCH, HeaderValue::from_static("\"b\""));
        assert!(etag_matches(&h, "\"b\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(etag_matches(&h, "\"anything\""));
    }
}
