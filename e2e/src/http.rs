//! HTTP client helpers for talking to Envoy, the sidecar and the bundle server.

use std::time::Duration;

use anyhow::{Context, Result};

/// A client that never uses a proxy (the tests talk only to 127.0.0.1) and never waits long.
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")
}

/// Status, headers and body of one response.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers (lower-case names; repeated names joined with `,`).
    pub headers: std::collections::BTreeMap<String, String>,
    /// Body as text.
    pub body: String,
}

impl Answer {
    /// The body parsed as JSON (the echo upstream answers JSON).
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("body is not JSON (status {}): {}", self.status, self.body))
    }

    /// A header the upstream received, from the echo upstream's answer.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        let v = self.json().ok()?;
        v.get("headers")?.get(name)?.as_str().map(str::to_string)
    }
}

/// Sends `req` and collects the answer.
pub async fn send(req: reqwest::RequestBuilder) -> Result<Answer> {
    let resp = req.send().await.context("sending the request")?;
    let status = resp.status().as_u16();
    let mut headers = std::collections::BTreeMap::new();
    for (k, v) in resp.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_string())
            .and_modify(|old: &mut String| {
                old.push(',');
                old.push_str(&v)
            })
            .or_insert(v);
    }
    let body = resp.text().await.context("reading the body")?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}
