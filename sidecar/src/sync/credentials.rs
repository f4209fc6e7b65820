//! The `Authorization` header of bundle downloads and status reports (`sync.http`): a bearer
//! token read from a file for every request, so a rotated Kubernetes Secret needs no restart, or
//! given inline as OPA's `credentials.bearer.token` allows, with the scheme OPA's
//! `credentials.bearer.scheme` names (`Bearer` by default).

use std::path::{Path, PathBuf};

use reqwest::header::HeaderValue;
use tokio::io::AsyncReadExt;

use super::config::HttpConfig;

/// Largest token file read. A token is a few KB at most; the bound keeps a mis-mounted file
/// (a log, a device) from being read whole on every request.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// Why no `Authorization` header could be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("reading bearer token file {path}: {source}")]
    Read {
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The token file holds nothing usable as a header value.
    #[error("bearer token file {path}: {why}")]
    Invalid {
        /// The token file.
        path: PathBuf,
        /// What is wrong with its content.
        why: &'static str,
    },
}

/// The bearer credentials of `sync.http`, when it has any.
#[derive(Debug, Clone)]
pub enum Bearer {
    /// A token file, re-read for every request and sent with `scheme`.
    File {
        /// The token file.
        path: PathBuf,
        /// The `Authorization` scheme.
        scheme: String,
    },
    /// The whole header value, checked once at configuration time ([`check_inline`]).
    Inline(HeaderValue),
}

impl Bearer {
    /// The credentials `http` configures: `bearer_token_file` or `bearer_token` (validation
    /// allows one of them), sent with `bearer_scheme`.
    pub fn from_config(http: &HttpConfig) -> Option<Bearer> {
        if let Some(path) = &http.bearer_token_file {
            return Some(Bearer::File {
                path: path.clone(),
                scheme: http.bearer_scheme.clone(),
            });
        }
        let token = http.bearer_token.as_ref()?.expose();
        // validate() has refused a token that makes no header value.
        header_value(&http.bearer_scheme, token).map(Bearer::Inline)
    }

    /// The `Authorization` header value for the next request.
    pub async fn header(&self) -> Result<HeaderValue, TokenError> {
        match self {
            Bearer::Inline(v) => Ok(v.clone()),
            Bearer::File { path, scheme } => {
                let token = read_token_file(path).await?;
                header_value(scheme, &token).ok_or_else(|| TokenError::Invalid {
                    path: path.clone(),
                    why: "holds characters not allowed in an HTTP header (a control character?)",
                })
            }
        }
    }
}

/// Why an inline token or a scheme cannot be sent, for configuration errors.
pub fn check_inline(scheme: &str, token: Option<&str>) -> Result<(), &'static str> {
    let token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/!#$%&'*^`|".contains(c);
    if scheme.is_empty() || !scheme.chars().all(token68) {
        return Err("the scheme must be one HTTP auth-scheme token (letters, digits, -._~+/)");
    }
    if let Some(token) = token {
        if token.trim().is_empty() {
            return Err("the token is empty");
        }
        if header_value(scheme, token).is_none() {
            return Err("the token holds characters not allowed in an HTTP header");
        }
    }
    Ok(())
}

/// `SCHEME TOKEN`, marked sensitive so it never shows in debug output; `None` for a token that
/// is empty or holds characters a header cannot carry.
fn header_value(scheme: &str, token: &str) -> Option<HeaderValue> {
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    let mut v = HeaderValue::from_str(&format!("{scheme} {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

async fn read_token_file(path: &Path) -> Result<String, TokenError> {
    let read = |source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(read)?;
    let invalid = |why| TokenError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(invalid("is larger than 64 KiB; not a token"));
    }
    let text = String::from_utf8(bytes).map_err(|_| invalid("is not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(invalid("is empty"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(token: Option<&str>, file: Option<&Path>, scheme: &str) -> HttpConfig {
        HttpConfig {
            bearer_token: token.map(|t| t.to_string().into()),
            bearer_token_file: file.map(Path::to_path_buf),
            bearer_scheme: scheme.to_string(),
            ..HttpConfig::default()
        }
    }

    #[tokio::test]
    async fn an_inline_token_is_sent_with_its_scheme_and_hidden() {
        let b = Bearer::from_config(&http(Some(" s3cret\n"), None, "Bearer")).unwrap();
        let v = b.header().await.unwrap();
        assert_eq!(v.to_str().unwrap(), "Bearer s3cret");
        assert!(v.is_sensitive());
        let b = Bearer::from_config(&http(Some("abc"), None, "Token")).unwrap();
        assert_eq!(b.header().await.unwrap().to_str().unwrap(), "Token abc");
        assert!(Bearer::from_config(&http(None, None, "Bearer")).is_none());
    }

    #[tokio::test]
    async fn a_token_file_is_read_for_every_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let b = Bearer::from_config(&http(None, Some(&path), "Bearer")).unwrap();
        assert_eq!(b.header().await.unwrap().to_str().unwrap(), "Bearer first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(b.header().await.unwrap().to_str().unwrap(), "Bearer second");

        for (content, want) in [
            (&b"  \n"[..], "is empty"),
            (&b"a\x01b"[..], "not allowed in an HTTP header"),
            (&b"\xff\xfe"[..], "not UTF-8"),
        ] {
            std::fs::write(&path, content).unwrap();
            let e = b.header().await.unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("token"), "{e}");
        }
        std::fs::write(&path, vec![b'a'; 70 * 1024]).unwrap();
        let e = b.header().await.unwrap_err().to_string();
        assert!(e.contains("64 KiB"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = b.header().await.unwrap_err().to_string();
        assert!(e.starts_with("reading bearer token file"), "{e}");
    }

    #[test]
    fn schemes_and_inline_tokens_are_checked() {
        assert!(check_inline("Bearer", Some("abc.def-ghi")).is_ok());
        assert!(check_inline("Bearer", None).is_ok());
        assert!(check_inline("", None).unwrap_err().contains("scheme"));
        assert!(check_inline("Bear er", None)
            .unwrap_err()
            .contains("scheme"));
        assert!(check_inline("Bearer", Some(" "))
            .unwrap_err()
            .contains("empty"));
        assert!(check_inline("Bearer", Some("a\nb"))
            .unwrap_err()
            .contains("not allowed"));
    }
}
