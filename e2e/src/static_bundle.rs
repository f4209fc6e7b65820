//! A plain static HTTP server for one bundle file (like nginx or an object store would serve it):
//! used to hand the sidecar a bundle the real bundle server would never produce, e.g. a tampered one.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::http::{header, HeaderMap, StatusCode};

/// Serves the current bytes at `/bundle.tar.gz` with an ETag that changes with every `set`.
pub struct StaticBundleServer {
    /// Port on 127.0.0.1.
    pub port: u16,
    state: Arc<Mutex<(u64, Vec<u8>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl StaticBundleServer {
    /// Starts serving `bytes` (a bundle archive).
    pub async fn start(bytes: Vec<u8>) -> Result<StaticBundleServer> {
        let state = Arc::new(Mutex::new((1u64, bytes)));
        let served = state.clone();
        let app = axum::Router::new().route(
            "/bundle.tar.gz",
            axum::routing::get(move |req_headers: HeaderMap| {
                let served = served.clone();
                async move {
                    let (version, body) = match served.lock() {
                        Ok(g) => (g.0, g.1.clone()),
                        Err(_) => {
                            return (
                                StatusCode::INTERNAL_SERVER_ERROR,
                                HeaderMap::new(),
                                Vec::new(),
                            )
                        }
                    };
                    let etag = format!("\"v{version}\"");
                    let mut h = HeaderMap::new();
                    if let Ok(v) = etag.parse() {
                        h.insert(header::ETAG, v);
                    }
                    let same = req_headers
                        .get(header::IF_NONE_MATCH)
                        .and_then(|v| v.to_str().ok())
                        == Some(etag.as_str());
                    if same {
                        (StatusCode::NOT_MODIFIED, h, Vec::new())
                    } else {
                        h.insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static("application/gzip"),
                        );
                        (StatusCode::OK, h, body)
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the static bundle server")?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(StaticBundleServer { port, state, task })
    }

    /// The bundle URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/bundle.tar.gz", self.port)
    }

    /// Serves `bytes` from now on, under a new ETag.
    pub fn set(&self, bytes: Vec<u8>) -> Result<()> {
        let mut g = self
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("static bundle state poisoned"))?;
        g.0 += 1;
        g.1 = bytes;
        Ok(())
    }
}

impl Drop for StaticBundleServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Rewrites one file of a bundle archive with `edit` and repacks it, leaving `.signatures.json`
/// untouched: the result is what an attacker who can write to the bundle's storage would serve.
pub fn tamper(bundle: &[u8], file: &str, edit: impl Fn(&str) -> String) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bundle));
    let mut out = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut found = false;
    for entry in archive.entries().context("reading the bundle archive")? {
        let mut entry = entry.context("reading a bundle entry")?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        let normalized = path.trim_start_matches("./").trim_start_matches('/');
        if normalized == file.trim_start_matches('/') {
            let text = String::from_utf8(data).with_context(|| format!("{path} is not UTF-8"))?;
            data = edit(&text).into_bytes();
            found = true;
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        out.append_data(&mut header, &path, data.as_slice())?;
    }
    if !found {
        anyhow::bail!("{file} is not in the bundle");
    }
    let gz = out.into_inner().context("finishing the tar")?;
    gz.finish().context("finishing the gzip stream")
}

/// File names inside a bundle archive.
pub fn list(bundle: &[u8]) -> Result<Vec<String>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bundle));
    let mut names = Vec::new();
    for entry in archive.entries()? {
        names.push(entry?.path()?.to_string_lossy().into_owned());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for (name, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn tamper_rewrites_one_file_only() {
        let a = archive(&[
            ("a.rego", "package a\nx := 1\n"),
            (".signatures.json", "{}"),
        ]);
        let t = tamper(&a, "a.rego", |s| s.replace("1", "2")).unwrap();
        assert_eq!(list(&t).unwrap(), vec!["a.rego", ".signatures.json"]);
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(t.as_slice()));
        let mut texts = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            texts.push(s);
        }
        assert_eq!(texts, vec!["package a\nx := 2\n", "{}"]);
        assert!(tamper(&a, "missing.rego", |s| s.to_string()).is_err());
    }

    #[tokio::test]
    async fn serves_with_changing_etag_and_304() {
        let s = StaticBundleServer::start(b"one".to_vec()).await.unwrap();
        let c = crate::http::client().unwrap();
        let r = c.get(s.url()).send().await.unwrap();
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"one");
        let r = c
            .get(s.url())
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304);
        s.set(b"two".to_vec()).unwrap();
        let r = c
            .get(s.url())
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"two");
    }
}
