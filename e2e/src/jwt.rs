//! Test identity provider: an Ed25519 key whose public half goes into the bundle as a JWKS, and
//! tokens signed with it (valid, expired, or for another audience).

use anyhow::{Context, Result};
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey;

/// Issuer written into tokens and expected by the e2e policy.
pub const ISSUER: &str = "https://issuer.e2e.regent.invalid";
/// Audience expected by the e2e policy.
pub const AUDIENCE: &str = "regent-e2e";
/// Key id in the JWKS and in token headers.
pub const KID: &str = "e2e-key-1";

/// A signing key and its JWKS.
pub struct Issuer {
    encoding: jsonwebtoken::EncodingKey,
    public: [u8; 32],
}

impl Issuer {
    /// A fresh random key.
    pub fn generate() -> Result<Issuer> {
        let sk = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = sk
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the test key as PKCS#8: {e}"))?;
        let encoding = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes())
            .context("loading the test key into jsonwebtoken")?;
        Ok(Issuer {
            encoding,
            public: sk.verifying_key().to_bytes(),
        })
    }

    /// The public key as a JWKS document (RFC 8037 OKP key).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public),
            "kid": KID,
            "alg": "EdDSA",
            "use": "sig",
        }]})
    }

    /// The bundle data document the e2e policy reads at `data.jwt`.
    pub fn bundle_data(&self) -> serde_json::Value {
        serde_json::json!({"jwks": self.jwks(), "issuer": ISSUER, "audience": AUDIENCE})
    }

    /// A token for `sub` and `aud`, expiring `exp_offset` seconds from now (negative: expired).
    pub fn token(&self, sub: &str, aud: &str, exp_offset: i64) -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("clock before 1970")?
            .as_secs() as i64;
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": sub,
            "aud": aud,
            "iat": now - 60,
            "exp": now + exp_offset,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(KID.to_string());
        jsonwebtoken::encode(&header, &claims, &self.encoding).context("signing the test token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_against_the_jwks() {
        let issuer = Issuer::generate().unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(issuer.jwks()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        v.set_audience(&[AUDIENCE]);
        v.set_issuer(&[ISSUER]);
        let good = issuer.token("alice", AUDIENCE, 300).unwrap();
        let data = jsonwebtoken::decode::<serde_json::Value>(&good, &key, &v).unwrap();
        assert_eq!(data.claims["sub"], "alice");
        let expired = issuer.token("alice", AUDIENCE, -300).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&expired, &key, &v).is_err());
        let other = issuer.token("alice", "someone-else", 300).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&other, &key, &v).is_err());
    }
}
