//! Secrets checked on requests: client bearer tokens (stored as SHA-256 hashes) and the webhook
//! secret (GitHub HMAC-SHA256 signature or GitLab token). Every comparison is constant-time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Accepted client tokens, as SHA-256 digests.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    hashes: Vec<[u8; 32]>,
}

impl TokenSet {
    /// From lowercase hex digests (validated by the config); invalid entries are skipped.
    pub fn from_hex<'a>(hexes: impl IntoIterator<Item = &'a str>) -> TokenSet {
        let hashes = hexes
            .into_iter()
            .filter_map(|h| hex::decode(h).ok())
            .filter_map(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
            .collect();
        TokenSet { hashes }
    }

    /// True when no token is configured: the server is open.
    pub fn is_open(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Checks an `Authorization` header value (`Bearer <token>`).
    pub fn check_header(&self, header: Option<&str>) -> bool {
        let Some(value) = header else { return false };
        let mut parts = value.trim().splitn(2, ' ');
        let (Some(scheme), Some(token)) = (parts.next(), parts.next()) else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && self.check(token.trim())
    }

    /// Checks a token. Every configured hash is compared, so timing does not reveal which (or
    /// whether one) matched.
    pub fn check(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut ok = subtle::Choice::from(0);
        for h in &self.hashes {
            ok |= h.ct_eq(&digest);
        }
        bool::from(ok)
    }
}

/// How a webhook call proved it knows the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAuth {
    /// GitHub (and Gitea, Forgejo): `X-Hub-Signature-256: sha256=<hex HMAC of the body>`.
    GithubSignature,
    /// GitLab: `X-Gitlab-Token: <secret>`.
    GitlabToken,
}

/// Why a webhook call is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookAuthError {
    /// Neither header was sent.
    #[error("missing X-Hub-Signature-256 or X-Gitlab-Token header")]
    Missing,
    /// The signature header is not `sha256=<64 hex>`.
    #[error("malformed X-Hub-Signature-256 header (expected sha256=<hex>)")]
    Malformed,
    /// Wrong signature or token.
    #[error("webhook signature or token does not match the configured secret")]
    Mismatch,
}

/// Verifies a webhook call against `secret`: the GitHub signature when present, else the
/// GitLab token.
pub fn verify_webhook(
    secret: &[u8],
    github_signature: Option<&str>,
    gitlab_token: Option<&str>,
    body: &[u8],
) -> Result<WebhookAuth, WebhookAuthError> {
    if let Some(sig) = github_signature {
        let hex_sig = sig
            .trim()
            .strip_prefix("sha256=")
            .ok_or(WebhookAuthError::Malformed)?;
        let given = hex::decode(hex_sig).map_err(|_| WebhookAuthError::Malformed)?;
        if given.len() != 32 {
            return Err(WebhookAuthError::Malformed);
        }
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .map_err(|_| WebhookAuthError::Mismatch)?;
        mac.update(body);
        // verify_slice compares in constant time.
        mac.verify_slice(&given)
            .map_err(|_| WebhookAuthError::Mismatch)?;
        return Ok(WebhookAuth::GithubSignature);
    }
    if let Some(token) = gitlab_token {
        // Comparing digests keeps the comparison constant-time even when lengths differ.
        let a: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let b: [u8; 32] = Sha256::digest(secret).into();
        if bool::from(a.ct_eq(&b)) {
            return Ok(WebhookAuth::GitlabToken);
        }
        return Err(WebhookAuthError::Mismatch);
    }
    Err(WebhookAuthError::Missing)
}

/// `sha256=<hex>` signature of `body`, as GitHub sends it (used by tests and tooling).
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_hash() {
        let h = hex::encode(Sha256::digest(b"s3cret"));
        let t = TokenSet::from_hex([h.as_str()]);
        assert!(!t.is_open());
        assert!(t.check_header(Some("Bearer s3cret")));
        assert!(t.check_header(Some("bearer  s3cret ")));
        assert!(!t.check_header(Some("Bearer s3cre")));
        assert!(!t.check_header(Some("Basic s3cret")));
        assert!(!t.check_header(None));
        assert!(TokenSet::default().is_open());
    }

    #[test]
    fn github_signature_round_trip_and_rejections() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = github_signature(b"k", body);
        assert_eq!(
            verify_webhook(b"k", Some(&sig), None, body),
            Ok(WebhookAuth::GithubSignature)
        );
        assert_eq!(
            verify_webhook(b"other", Some(&sig), None, body),
            Err(WebhookAuthError::Mismatch)
        );
        assert_eq!(
            verify_webhook(b"k", Some(&sig), None, b"{}"),
            Err(WebhookAuthError::Mismatch)
        );
        assert_eq!(
            verify_webhook(b"k", Some("sha1=00"), None, body),
            Err(WebhookAuthError::Malformed)
        );
        assert_eq!(
            verify_webhook(b"k", None, None, body),
            Err(WebhookAuthError::Missing)
        );
        assert_eq!(
            verify_webhook(b"k", None, Some("k"), body),
            Ok(WebhookAuth::GitlabToken)
        );
        assert_eq!(
            verify_webhook(b"k", None, Some("kk"), body),
            Err(WebhookAuthError::Mismatch)
        );
    }
}
