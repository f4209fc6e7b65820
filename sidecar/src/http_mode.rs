//! Envoy's HTTP-service ext_authz mode (`http_service` instead of `grpc_service`; OPA-Envoy #693).
//!
//! Envoy forwards the request head (and body, with `with_request_body`) to this server. The request is
//! turned into the CheckRequest Envoy would have sent over gRPC, answered by the same [`Authorizer`],
//! and the answer mapped back: 200 allows (headers for the upstream travel as response headers, which
//! Envoy forwards when listed in `authorization_response.allowed_upstream_headers`); anything else is a
//! denial Envoy passes to the client with its status, headers and body. A Check that has no answer
//! (undefined decision, evaluation error) is a 500 whose body names the reason.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::authorizer::Authorizer;
use regent_policy::decision::to_http_response;
use regent_policy::input::{check_request_from_http, HttpCheck};

#[derive(Clone)]
struct ModeState {
    authorizer: Arc<Authorizer>,
    prefix: Arc<str>,
    max_body: usize,
}

/// Routes every method and path to the authorizer.
pub fn router(authorizer: Arc<Authorizer>, path_prefix: String, max_body: usize) -> axum::Router {
    axum::Router::new()
        .fallback(authorize)
        .with_state(ModeState {
            authorizer,
            prefix: path_prefix.into(),
            max_body,
        })
}

async fn authorize(State(s): State<ModeState>, req: Request) -> Response {
    let time = SystemTime::now();
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, s.max_body).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "regent: request body over http.ext_authz_max_body_bytes ({})\n",
                    s.max_body
                ),
            )
                .into_response()
        }
    };
    let check = check_request_from_http(&HttpCheck {
        parts: &parts,
        body: &body,
        path_prefix: &s.prefix,
        peer: None,
        time,
    });
    match s.authorizer.check(&check).await {
        Ok(resp) => match to_http_response(&resp) {
            Ok(r) => r.map(Body::from),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("regent: {}: {e}\n", e.reason()),
            )
                .into_response(),
        },
        Err(f) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("regent: {}: {}\n", f.reason, f.message),
        )
            .into_response(),
    }
}
