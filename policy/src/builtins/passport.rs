//! Passports: the short-lived internal JWTs an edge sidecar mints for the upstream in exchange
//! for the user's token, and that the upstream's sidecar verifies.
//!
//! - `regent.passport.mint(spec)`, with `spec` `{"aud": string, "sub": string, "claims": object
//!   (optional), "act": object (optional, RFC 8693 actor), "ttl_seconds": number (optional)}`,
//!   returns a compact JWS: header `{"alg", "typ": "passport+jwt", "kid" (when configured)}`,
//!   payload `iss` (the configured edge issuer), `aud`, `sub`, the selected claims, `act`, `iat`,
//!   `nbf` (both now), `exp` = now + min(ttl, `max_ttl_seconds`) and a random 128-bit `jti`.
//!   Undefined without a signing key, or when the spec is bad: an unknown key, a missing `aud` or
//!   `sub`, a non-positive ttl, or `claims` naming a registered claim (`iss`, `aud`, `sub`, `exp`,
//!   `nbf`, `iat`, `jti`, `act`), which the edge alone sets.
//! - `regent.passport.verify(token, {"aud": string, "iss": string (optional)})` returns the
//!   payload when: the header is `typ` `passport+jwt` with `alg` EdDSA or ES256; `iss` is a
//!   trusted issuer (and equals the `iss` option when given) one of whose keys, of the type that
//!   fits `alg` (Ed25519 for EdDSA, P-256 for ES256: the algorithm is pinned by the key, never
//!   taken from the token alone), verifies the signature; `aud` (a string or an array) contains
//!   the required audience; `exp`, `nbf` and `iat` are numbers with `nbf` and `iat` not in the
//!   future and `exp` not past (each with `leeway_seconds`); `exp - iat` is at most
//!   `max_ttl_seconds`; and the `jti` was not accepted before (replay). Undefined otherwise; the
//!   reason is logged at debug level and counted ([`stats`]).
//!
//! The explicit `typ` keeps a user token signed by a key that happens to be trusted here from
//! passing as a passport (RFC 8725 section 3.11).
//!
//! **Replay window.** Each accepted `(iss, jti)` is remembered until its `exp` plus the leeway,
//! when the token would be refused anyway. One Check may evaluate its policy several times and
//! regorus may call a builtin more than once per evaluation, so a sighting is tied to the Check
//! ([`scope::check_id`]): the same `jti` again under the same Check id is the same request, under
//! another id (or outside any Check, where each call stands alone) a replay. The window holds at
//! most `replay_cache_entries`; when full, expired entries are dropped, and if none are, the
//! passport is refused (fail closed: accepting it unremembered would let it be replayed) and
//! counted in [`PassportStats::replay_cache_full`].
//!
//! The sidecar publishes its configuration with [`install`] (and [`reload`] when key files
//! change). Where nothing does (`regent test`, `regent eval`), both builtins are undefined.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use regent_bundle::jws_keys::{Alg, EcCurve, PublicKey};
use regent_bundle::signing::SigningKey;
use regorus::Value;
use ring::rand::SecureRandom as _;

use super::{now_ns, scope, string_arg, Builtin};

/// The `typ` header of every passport.
pub const PASSPORT_TYP: &str = "passport+jwt";
/// Longest token `verify` looks at; a passport is a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest `jti` accepted (ours are 22 characters).
pub const MAX_JTI_BYTES: usize = 256;

/// Claims the edge sets itself and that `claims` may not name.
const REGISTERED: [&str; 8] = ["iss", "aud", "sub", "exp", "nbf", "iat", "jti", "act"];

/// `regent.passport.mint` and `regent.passport.verify`.
pub(crate) static BUILTINS: [Builtin; 2] = [
    Builtin {
        name: "regent.passport.mint",
        arity: 1,
        call: |args| {
            let cfg = configured()?;
            let spec = to_json(&args[0])?;
            let token = mint(&cfg, &spec, now_s())?;
            STATS.minted.fetch_add(1, Ordering::Relaxed);
            Ok(Value::from(token))
        },
    },
    Builtin {
        name: "regent.passport.verify",
        arity: 2,
        call: |args| {
            let cfg = configured()?;
            let token = string_arg(&args[0], "regent.passport.verify", "token")?;
            let options = to_json(&args[1])?;
            let claims = verify(
                &cfg,
                replay_window(),
                token,
                &options,
                now_s(),
                scope::check_id(),
            )
            .inspect_err(|e| e.count())?;
            STATS.verified.fetch_add(1, Ordering::Relaxed);
            Value::from_json_str(&claims.to_string())
                .map_err(|e| anyhow::anyhow!("regent.passport.verify: claims: {e}"))
        },
    },
];

/// Why a passport was not minted or not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PassportError {
    /// No configuration published, or no signing key / no trusted issuer for what was asked.
    #[error("passports are not configured: {0}")]
    NotConfigured(&'static str),
    /// The mint spec or the verify options are ill-formed.
    #[error("bad {what}: {message}")]
    Arguments {
        /// `spec` or `options`.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The token is not a compact JWS with JSON header and payload.
    #[error("malformed passport: {0}")]
    Malformed(String),
    /// Well-formed, but not acceptable here (issuer, signature, audience, time, lifetime).
    #[error("passport refused: {0}")]
    Refused(String),
    /// The `jti` was accepted before under another Check.
    #[error("passport refused: jti {0:?} was already used (replay)")]
    Replay(String),
    /// The replay window is full of live entries.
    #[error("passport refused: the replay window is full ({0} live entries)")]
    WindowFull(usize),
    /// The signing key failed to sign (the system RNG failed).
    #[error("signing the passport failed")]
    Signing,
}

impl PassportError {
    fn count(&self) {
        let counter = match self {
            PassportError::Replay(_) => &STATS.replays,
            PassportError::WindowFull(_) => &STATS.replay_cache_full,
            _ => &STATS.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn bad(what: &'static str, message: impl Into<String>) -> PassportError {
    PassportError::Arguments {
        what,
        message: message.into(),
    }
}

fn refused(message: impl Into<String>) -> PassportError {
    PassportError::Refused(message.into())
}

/// The edge's signing key.
pub struct Signer {
    issuer: String,
    key: SigningKey,
    key_id: Option<String>,
}

impl Signer {
    /// A signer for `issuer` from a PKCS#8 PEM private key (Ed25519 signs EdDSA, P-256 ES256;
    /// any other key is refused). `what` names the key in errors (e.g. the file).
    pub fn from_pem(
        issuer: &str,
        pem: &str,
        key_id: Option<String>,
        what: &str,
    ) -> anyhow::Result<Signer> {
        let key = regent_bundle::signing::signing_key_from_pem(pem, what)?;
        if !matches!(key.alg(), Alg::EdDSA | Alg::ES256) {
            anyhow::bail!(
                "{what}: a {} key signs {}; passports are signed with Ed25519 (EdDSA) or P-256 (ES256)",
                key.verifying_key().describe(),
                key.alg()
            );
        }
        Ok(Signer {
            issuer: issuer.to_string(),
            key,
            key_id,
        })
    }

    /// The algorithm passports are signed with.
    pub fn alg(&self) -> Alg {
        self.key.alg()
    }

    /// The public half, PEM-free: what a downstream service is configured with.
    pub fn public_key(&self) -> PublicKey {
        self.key.verifying_key()
    }
}

/// A key of a trusted issuer.
pub struct TrustedKey {
    issuer: String,
    key: PublicKey,
    alg: Alg,
}

impl TrustedKey {
    /// The keys of every PEM block of `pem` (`PUBLIC KEY`, Ed25519 or P-256) for `issuer`.
    /// `what` names the key in errors.
    pub fn from_pem(issuer: &str, pem: &str, what: &str) -> anyhow::Result<Vec<TrustedKey>> {
        let keys = PublicKey::from_pem_blocks(pem).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        keys.into_iter()
            .map(|key| TrustedKey::new(issuer, key, what))
            .collect()
    }

    /// `key` for `issuer`, refused unless it is Ed25519 or P-256.
    pub fn new(issuer: &str, key: PublicKey, what: &str) -> anyhow::Result<TrustedKey> {
        let alg = match &key {
            PublicKey::Ed25519(_) => Alg::EdDSA,
            PublicKey::Ec {
                curve: Some(EcCurve::P256),
                ..
            } => Alg::ES256,
            other => anyhow::bail!(
                "{what}: a {} key; passports are verified with Ed25519 or EC P-256 keys",
                other.describe()
            ),
        };
        Ok(TrustedKey {
            issuer: issuer.to_string(),
            key,
            alg,
        })
    }
}

/// What the sidecar publishes: the edge's signer, the trusted issuers' keys and the limits.
pub struct PassportConfig {
    /// Mints passports; `None` on a sidecar that only verifies.
    pub signer: Option<Signer>,
    /// Keys passports are verified with; empty on a sidecar that only mints.
    pub trusted: Vec<TrustedKey>,
    /// Cap on a minted passport's ttl and on a verified one's `exp - iat`.
    pub max_ttl_seconds: u64,
    /// Slack on `exp`, `nbf` and `iat` for clocks that disagree.
    pub leeway_seconds: u64,
    /// Most `jti`s remembered at once.
    pub replay_cache_entries: usize,
}

struct Installed {
    installation: u64,
    config: Arc<PassportConfig>,
}

fn registry() -> &'static ArcSwapOption<Installed> {
    static REGISTRY: OnceLock<ArcSwapOption<Installed>> = OnceLock::new();
    REGISTRY.get_or_init(ArcSwapOption::empty)
}

/// Serialises writers, so an owner's check-then-swap is not interleaved with another's.
static WRITER: Mutex<u64> = Mutex::new(0);

/// Publishes `config` (replacing any other); returns the installation, for [`reload`] and
/// [`uninstall`].
pub fn install(config: PassportConfig) -> u64 {
    let mut installs = WRITER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *installs += 1;
    registry().store(Some(Arc::new(Installed {
        installation: *installs,
        config: Arc::new(config),
    })));
    *installs
}

/// Replaces the configuration of `installation` (new key files); false when another owner has
/// installed one since, which is then left alone.
pub fn reload(installation: u64, config: PassportConfig) -> bool {
    let _w = WRITER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let current = registry().load();
    if current.as_ref().map(|i| i.installation) != Some(installation) {
        return false;
    }
    registry().store(Some(Arc::new(Installed {
        installation,
        config: Arc::new(config),
    })));
    true
}

/// Withdraws the configuration if it is still the one `installation` published.
pub fn uninstall(installation: u64) {
    let _w = WRITER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if registry().load().as_ref().map(|i| i.installation) == Some(installation) {
        registry().store(None);
    }
}

fn configured() -> Result<Arc<PassportConfig>, PassportError> {
    registry()
        .load()
        .as_ref()
        .map(|i| i.config.clone())
        .ok_or(PassportError::NotConfigured("no identity.passport section"))
}

/// Counters of the builtins since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassportStats {
    /// Passports minted.
    pub minted: u64,
    /// Passports accepted (a repeat under the same Check counts again).
    pub verified: u64,
    /// Passports refused for their issuer, signature, audience, times or form.
    pub refused: u64,
    /// Passports refused as replays.
    pub replays: u64,
    /// Passports refused because the replay window was full of live entries.
    pub replay_cache_full: u64,
}

struct Counters {
    minted: AtomicU64,
    verified: AtomicU64,
    refused: AtomicU64,
    replays: AtomicU64,
    replay_cache_full: AtomicU64,
}

static STATS: Counters = Counters {
    minted: AtomicU64::new(0),
    verified: AtomicU64::new(0),
    refused: AtomicU64::new(0),
    replays: AtomicU64::new(0),
    replay_cache_full: AtomicU64::new(0),
};

/// The counters now.
pub fn stats() -> PassportStats {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    PassportStats {
        minted: get(&STATS.minted),
        verified: get(&STATS.verified),
        refused: get(&STATS.refused),
        replays: get(&STATS.replays),
        replay_cache_full: get(&STATS.replay_cache_full),
    }
}

/// Accepted `jti`s, each until it expires.
#[derive(Default)]
pub(crate) struct ReplayWindow {
    seen: Mutex<HashMap<String, Seen>>,
}

struct Seen {
    /// Unix seconds after which the passport is refused anyway (its `exp` plus the leeway).
    until: i64,
    /// The Check that accepted it; `None` outside a Check.
    check: Option<u64>,
}

/// The process's window: it outlives configuration reloads, so new keys do not reopen it.
fn replay_window() -> &'static ReplayWindow {
    static WINDOW: OnceLock<ReplayWindow> = OnceLock::new();
    WINDOW.get_or_init(ReplayWindow::default)
}

impl ReplayWindow {
    /// Records `key` as accepted by `check` until `until`, or says why it cannot be.
    fn admit(
        &self,
        key: String,
        until: i64,
        now: i64,
        check: Option<u64>,
        capacity: usize,
    ) -> Result<(), PassportError> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = seen.get(&key) {
            if s.until >= now {
                return match (s.check, check) {
                    (Some(a), Some(b)) if a == b => Ok(()),
                    _ => Err(PassportError::Replay(jti_of(&key).to_string())),
                };
            }
        }
        if !seen.contains_key(&key) && seen.len() >= capacity {
            seen.retain(|_, s| s.until >= now);
            if seen.len() >= capacity {
                return Err(PassportError::WindowFull(seen.len()));
            }
        }
        seen.insert(key, Seen { until, check });
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }
}

/// The window's key of a passport: issuers choose their `jti`s independently.
fn window_key(iss: &str, jti: &str) -> String {
    format!("{iss}\n{jti}")
}

fn jti_of(key: &str) -> &str {
    key.rsplit_once('\n').map_or(key, |(_, j)| j)
}

fn now_s() -> i64 {
    (now_ns() / 1_000_000_000) as i64
}

fn to_json(v: &Value) -> anyhow::Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| anyhow::anyhow!("not representable as JSON: {e}"))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// Mints a passport from `spec` at `now` (Unix seconds).
pub(crate) fn mint(
    cfg: &PassportConfig,
    spec: &serde_json::Value,
    now: i64,
) -> Result<String, PassportError> {
    let signer = cfg.signer.as_ref().ok_or(PassportError::NotConfigured(
        "no signing key (identity.passport.signing_key_file)",
    ))?;
    let spec = spec
        .as_object()
        .ok_or_else(|| bad("spec", "must be an object"))?;
    if let Some(k) = spec
        .keys()
        .find(|k| !matches!(k.as_str(), "aud" | "sub" | "claims" | "act" | "ttl_seconds"))
    {
        return Err(bad("spec", format!("unknown key {k:?}")));
    }
    let text = |name: &str| match spec.get(name) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(bad("spec", format!("{name} must be a non-empty string"))),
    };
    let (aud, sub) = (text("aud")?, text("sub")?);
    let max = cfg.max_ttl_seconds as f64;
    let ttl = match spec.get("ttl_seconds") {
        None => max,
        Some(v) => match v.as_f64() {
            Some(t) if t > 0.0 => t.min(max),
            _ => return Err(bad("spec", "ttl_seconds must be a positive number")),
        },
    };
    let mut claims = serde_json::Map::new();
    match spec.get("claims") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(selected)) => {
            if let Some(k) = selected.keys().find(|k| REGISTERED.contains(&k.as_str())) {
                return Err(bad(
                    "spec",
                    format!("claims must not set the registered claim {k:?}"),
                ));
            }
            claims.extend(selected.clone());
        }
        Some(_) => return Err(bad("spec", "claims must be an object")),
    }
    match spec.get("act") {
        None | Some(serde_json::Value::Null) => {}
        Some(act @ serde_json::Value::Object(_)) => {
            claims.insert("act".into(), act.clone());
        }
        Some(_) => return Err(bad("spec", "act must be an object")),
    }
    let mut jti = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut jti)
        .map_err(|_| PassportError::Signing)?;
    for (k, v) in [
        ("iss", serde_json::Value::from(signer.issuer.as_str())),
        ("aud", aud.into()),
        ("sub", sub.into()),
        ("iat", now.into()),
        ("nbf", now.into()),
        // Whole seconds, rounded down: a fractional ttl never stretches the lifetime.
        ("exp", (now + ttl as i64).into()),
        ("jti", b64().encode(jti).into()),
    ] {
        claims.insert(k.into(), v);
    }
    sign(signer, &serde_json::Value::Object(claims))
}

/// Signs `claims` as a passport of `signer`.
fn sign(signer: &Signer, claims: &serde_json::Value) -> Result<String, PassportError> {
    let mut header = serde_json::json!({"alg": signer.alg().name(), "typ": PASSPORT_TYP});
    if let Some(kid) = &signer.key_id {
        header["kid"] = kid.as_str().into();
    }
    let input = format!(
        "{}.{}",
        b64().encode(header.to_string()),
        b64().encode(claims.to_string())
    );
    let signature = signer.key.sign(input.as_bytes()).to_bytes();
    if signature.is_empty() {
        return Err(PassportError::Signing);
    }
    Ok(format!("{input}.{}", b64().encode(signature)))
}

/// The claims of `token` if it is a passport acceptable under `options` at `now` for Check
/// `check`; see the module docs for the rules.
pub(crate) fn verify(
    cfg: &PassportConfig,
    window: &ReplayWindow,
    token: &str,
    options: &serde_json::Value,
    now: i64,
    check: Option<u64>,
) -> Result<serde_json::Value, PassportError> {
    let (want_aud, want_iss) = verify_options(options)?;
    if cfg.trusted.is_empty() {
        return Err(PassportError::NotConfigured(
            "no trusted issuer (identity.passport.trusted)",
        ));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(PassportError::Malformed(format!(
            "{} bytes, more than {MAX_TOKEN_BYTES}",
            token.len()
        )));
    }
    let (header, claims, signing_input, signature) = split(token)?;
    if header.get("typ").and_then(|t| t.as_str()) != Some(PASSPORT_TYP) {
        return Err(refused(format!("typ is not {PASSPORT_TYP:?}")));
    }
    let alg = match header.get("alg").and_then(|a| a.as_str()) {
        Some("EdDSA") => Alg::EdDSA,
        Some("ES256") => Alg::ES256,
        other => return Err(refused(format!("alg {other:?} is not EdDSA or ES256"))),
    };
    let iss = claim_str(&claims, "iss")?;
    if want_iss.is_some_and(|w| w != iss) {
        return Err(refused(format!("iss {iss:?} is not the required issuer")));
    }
    let mut keys = cfg.trusted.iter().filter(|k| k.issuer == iss).peekable();
    if keys.peek().is_none() {
        return Err(refused(format!("iss {iss:?} is not a trusted issuer")));
    }
    if !keys
        .filter(|k| k.alg == alg)
        .any(|k| k.key.verify(alg, signing_input.as_bytes(), &signature))
    {
        return Err(refused(format!(
            "no {alg} key of issuer {iss:?} verifies the signature"
        )));
    }
    let audience_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == want_aud,
        Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want_aud)),
        _ => false,
    };
    if !audience_ok {
        return Err(refused(format!("aud does not contain {want_aud:?}")));
    }
    let leeway = i64::try_from(cfg.leeway_seconds).unwrap_or(i64::MAX);
    let (exp, nbf, iat) = (
        claim_time(&claims, "exp")?,
        claim_time(&claims, "nbf")?,
        claim_time(&claims, "iat")?,
    );
    if exp.saturating_add(leeway) < now {
        return Err(refused(format!("expired at {exp} (now {now})")));
    }
    if nbf > now.saturating_add(leeway) {
        return Err(refused(format!("not valid before {nbf} (now {now})")));
    }
    if iat > now.saturating_add(leeway) {
        return Err(refused(format!(
            "issued in the future at {iat} (now {now})"
        )));
    }
    let max = i64::try_from(cfg.max_ttl_seconds).unwrap_or(i64::MAX);
    if exp.saturating_sub(iat) > max {
        return Err(refused(format!(
            "lifetime of {} s exceeds max_ttl_seconds ({max})",
            exp.saturating_sub(iat)
        )));
    }
    let jti = claim_str(&claims, "jti")?;
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(refused(format!("jti must be 1 to {MAX_JTI_BYTES} bytes")));
    }
    window.admit(
        window_key(iss, jti),
        exp.saturating_add(leeway),
        now,
        check,
        cfg.replay_cache_entries,
    )?;
    Ok(claims)
}

fn verify_options(options: &serde_json::Value) -> Result<(&str, Option<&str>), PassportError> {
    let options = options
        .as_object()
        .ok_or_else(|| bad("options", "must be an object"))?;
    if let Some(k) = options
        .keys()
        .find(|k| !matches!(k.as_str(), "aud" | "iss"))
    {
        return Err(bad("options", format!("unknown key {k:?}")));
    }
    let aud = match options.get("aud") {
        Some(serde_json::Value::String(a)) if !a.is_empty() => a.as_str(),
        _ => return Err(bad("options", "aud must be a non-empty string")),
    };
    let iss = match options.get("iss") {
        None => None,
        Some(serde_json::Value::String(i)) => Some(i.as_str()),
        Some(_) => return Err(bad("options", "iss must be a string")),
    };
    Ok((aud, iss))
}

type Parts<'a> = (serde_json::Value, serde_json::Value, &'a str, Vec<u8>);

/// Header, claims, signing input and signature of a compact JWS.
fn split(token: &str) -> Result<Parts<'_>, PassportError> {
    let malformed = |m: &str| PassportError::Malformed(m.to_string());
    let (signing_input, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| malformed("not three dot-separated parts"))?;
    let (header, payload) = signing_input
        .split_once('.')
        .ok_or_else(|| malformed("not three dot-separated parts"))?;
    if payload.contains('.') {
        return Err(malformed("not three dot-separated parts"));
    }
    let object = |part: &str, what: &str| -> Result<serde_json::Value, PassportError> {
        let bytes = b64()
            .decode(part)
            .map_err(|e| PassportError::Malformed(format!("{what} is not base64url: {e}")))?;
        match serde_json::from_slice(&bytes) {
            Ok(v @ serde_json::Value::Object(_)) => Ok(v),
            _ => Err(PassportError::Malformed(format!(
                "{what} is not a JSON object"
            ))),
        }
    };
    let signature = b64()
        .decode(signature)
        .map_err(|e| PassportError::Malformed(format!("signature is not base64url: {e}")))?;
    Ok((
        object(header, "header")?,
        object(payload, "payload")?,
        signing_input,
        signature,
    ))
}

fn claim_str<'a>(claims: &'a serde_json::Value, name: &str) -> Result<&'a str, PassportError> {
    claims
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| refused(format!("{name} must be a string")))
}

/// A NumericDate claim in whole seconds (fractions rounded towards the stricter side do not
/// matter at this resolution: the leeway dwarfs them).
fn claim_time(claims: &serde_json::Value, name: &str) -> Result<i64, PassportError> {
    match claims.get(name).and_then(|v| v.as_f64()) {
        Some(t) if t.is_finite() => Ok(t as i64),
        _ => Err(refused(format!("{name} must be a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn ed25519_pem() -> String {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("generates");
        pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()))
    }

    fn p256_pem() -> String {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .expect("generates");
        pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()))
    }

    fn signer(issuer: &str, pem: &str) -> Signer {
        Signer::from_pem(issuer, pem, Some("edge-1".into()), "test key").expect("signer")
    }

    fn trusted(s: &Signer) -> TrustedKey {
        TrustedKey::new(&s.issuer, s.public_key(), "test key").expect("trusted")
    }

    /// An edge that mints and trusts itself, as one sidecar configured for both ends.
    fn config(pem: &str) -> PassportConfig {
        let edge = signer("https://edge.test", pem);
        let trust = trusted(&edge);
        PassportConfig {
            signer: Some(edge),
            trusted: vec![trust],
            max_ttl_seconds: 300,
            leeway_seconds: 5,
            replay_cache_entries: 100,
        }
    }

    fn spec() -> serde_json::Value {
        json!({"aud": "orders", "sub": "alice", "claims": {"tenant": "acme", "scope": "orders:read"},
               "act": {"sub": "spiffe://test/edge"}, "ttl_seconds": 60})
    }

    fn payload(token: &str) -> serde_json::Value {
        split(token).expect("well-formed").1
    }

    fn header(token: &str) -> serde_json::Value {
        split(token).expect("well-formed").0
    }

    #[test]
    fn a_minted_passport_verifies_with_its_claims_on_both_key_types() {
        for pem in [ed25519_pem(), p256_pem()] {
            let cfg = config(&pem);
            let token = mint(&cfg, &spec(), NOW).expect("mints");
            let h = header(&token);
            assert_eq!(h["typ"], PASSPORT_TYP);
            assert_eq!(h["kid"], "edge-1");
            assert!(h["alg"] == "EdDSA" || h["alg"] == "ES256", "{h}");
            let window = ReplayWindow::default();
            let claims = verify(
                &cfg,
                &window,
                &token,
                &json!({"aud": "orders"}),
                NOW + 1,
                None,
            )
            .expect("verifies");
            assert_eq!(claims["iss"], "https://edge.test");
            assert_eq!(claims["aud"], "orders");
            assert_eq!(claims["sub"], "alice");
            assert_eq!(claims["tenant"], "acme");
            assert_eq!(claims["act"]["sub"], "spiffe://test/edge");
            assert_eq!(claims["iat"], NOW);
            assert_eq!(claims["nbf"], NOW);
            assert_eq!(claims["exp"], NOW + 60);
            assert_eq!(claims["jti"].as_str().map(str::len), Some(22));
        }
    }

    #[test]
    fn each_passport_gets_its_own_jti() {
        let cfg = config(&ed25519_pem());
        let a = payload(&mint(&cfg, &spec(), NOW).unwrap());
        let b = payload(&mint(&cfg, &spec(), NOW).unwrap());
        assert_ne!(a["jti"], b["jti"]);
    }

    #[test]
    fn the_ttl_is_capped_at_the_configured_maximum() {
        let cfg = config(&ed25519_pem());
        let mut long = spec();
        long["ttl_seconds"] = json!(86_400);
        assert_eq!(payload(&mint(&cfg, &long, NOW).unwrap())["exp"], NOW + 300);
        long.as_object_mut().unwrap().remove("ttl_seconds");
        assert_eq!(
            payload(&mint(&cfg, &long, NOW).unwrap())["exp"],
            NOW + 300,
            "no ttl: the maximum"
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        let cfg = config(&ed25519_pem());
        for (tweak, needle) in [
            (json!({"aud": ""}), "aud must be"),
            (json!({"sub": 1}), "sub must be"),
            (json!({"ttl_seconds": 0}), "ttl_seconds"),
            (json!({"ttl_seconds": "60"}), "ttl_seconds"),
            (json!({"claims": {"exp": 1}}), "registered claim \"exp\""),
            (json!({"claims": {"iss": "me"}}), "registered claim \"iss\""),
            (json!({"claims": []}), "claims must be an object"),
            (json!({"act": "svc"}), "act must be an object"),
            (json!({"audience": "x"}), "unknown key \"audience\""),
        ] {
            let mut s = spec();
            for (k, v) in tweak.as_object().unwrap() {
                s[k] = v.clone();
            }
            let e = mint(&cfg, &s, NOW).unwrap_err().to_string();
            assert!(e.contains(needle), "{tweak}: {e}");
        }
        let no_signer = PassportConfig {
            signer: None,
            ..config(&ed25519_pem())
        };
        assert!(matches!(
            mint(&no_signer, &spec(), NOW),
            Err(PassportError::NotConfigured(_))
        ));
    }

    #[test]
    fn an_expired_passport_is_refused_after_the_leeway() {
        let cfg = config(&ed25519_pem());
        let token = mint(&cfg, &spec(), NOW).unwrap();
        let opts = json!({"aud": "orders"});
        let at = |now| verify(&cfg, &ReplayWindow::default(), &token, &opts, now, None);
        assert!(at(NOW + 60 + 5).is_ok(), "within the leeway");
        let e = at(NOW + 60 + 6).unwrap_err().to_string();
        assert!(e.contains("expired"), "{e}");
        let e = at(NOW - 6).unwrap_err().to_string();
        assert!(e.contains("not valid before"), "{e}");
    }

    #[test]
    fn a_passport_for_another_audience_is_refused() {
        let cfg = config(&ed25519_pem());
        let token = mint(&cfg, &spec(), NOW).unwrap();
        let w = ReplayWindow::default();
        let e = verify(&cfg, &w, &token, &json!({"aud": "billing"}), NOW, None).unwrap_err();
        assert!(e.to_string().contains("aud does not contain"), "{e}");
        let e = verify(&cfg, &w, &token, &json!({}), NOW, None).unwrap_err();
        assert!(matches!(e, PassportError::Arguments { .. }), "{e}");
        assert_eq!(w.len(), 0, "refused passports are not remembered");
    }

    #[test]
    fn a_passport_signed_by_another_key_or_issuer_is_refused() {
        let service = config(&ed25519_pem());
        let w = ReplayWindow::default();
        let opts = json!({"aud": "orders"});
        // Same issuer name, another key.
        let forger = config(&ed25519_pem());
        let token = mint(&forger, &spec(), NOW).unwrap();
        let e = verify(&service, &w, &token, &opts, NOW, None).unwrap_err();
        assert!(e.to_string().contains("verifies the signature"), "{e}");
        // A P-256 key claiming EdDSA: the key's type pins the algorithm.
        let ec = config(&p256_pem());
        let token = mint(&ec, &spec(), NOW).unwrap();
        let e = verify(&service, &w, &token, &opts, NOW, None).unwrap_err();
        assert!(e.to_string().contains("verifies the signature"), "{e}");
        // An issuer nobody trusts.
        let other = PassportConfig {
            signer: Some(signer("https://other.test", &ed25519_pem())),
            ..config(&ed25519_pem())
        };
        let token = mint(&other, &spec(), NOW).unwrap();
        let e = verify(&service, &w, &token, &opts, NOW, None).unwrap_err();
        assert!(e.to_string().contains("not a trusted issuer"), "{e}");
        // The trusted issuer, but the caller pinned another.
        let token = mint(&service, &spec(), NOW).unwrap();
        let e = verify(
            &service,
            &w,
            &token,
            &json!({"aud": "orders", "iss": "https://x"}),
            NOW,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("required issuer"), "{e}");
    }

    #[test]
    fn tampered_or_untyped_tokens_are_refused() {
        let pem = ed25519_pem();
        let cfg = config(&pem);
        let w = ReplayWindow::default();
        let opts = json!({"aud": "orders"});
        let token = mint(&cfg, &spec(), NOW).unwrap();
        let (h, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let mut p = payload(&token);
        p["sub"] = json!("mallory");
        let forged = format!("{h}.{}.{sig}", b64().encode(p.to_string()));
        assert!(verify(&cfg, &w, &forged, &opts, NOW, None).is_err());
        // A correctly signed JWT without the passport typ (a user token from the same key).
        let signer = cfg.signer.as_ref().unwrap();
        let input = format!(
            "{}.{}",
            b64().encode(json!({"alg": "EdDSA", "typ": "JWT"}).to_string()),
            b64().encode(payload(&token).to_string())
        );
        let sig = b64().encode(signer.key.sign(input.as_bytes()).to_bytes());
        let e = verify(&cfg, &w, &format!("{input}.{sig}"), &opts, NOW, None).unwrap_err();
        assert!(e.to_string().contains("typ"), "{e}");
        for garbage in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            "a".repeat(MAX_TOKEN_BYTES + 1).as_str(),
        ] {
            assert!(
                verify(&cfg, &w, garbage, &opts, NOW, None).is_err(),
                "{garbage:.20}"
            );
        }
    }

    #[test]
    fn a_lifetime_beyond_the_maximum_is_refused_even_when_validly_signed() {
        let cfg = config(&ed25519_pem());
        let signer = cfg.signer.as_ref().unwrap();
        let long = json!({"iss": signer.issuer, "aud": "orders", "sub": "alice", "iat": NOW,
                          "nbf": NOW, "exp": NOW + 301, "jti": "j-long"});
        let token = sign(signer, &long).unwrap();
        let e = verify(
            &cfg,
            &ReplayWindow::default(),
            &token,
            &json!({"aud": "orders"}),
            NOW,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_ttl_seconds"), "{e}");
        let mut no_iat = long.clone();
        no_iat["exp"] = json!(NOW + 60);
        no_iat.as_object_mut().unwrap().remove("iat");
        let token = sign(signer, &no_iat).unwrap();
        let e = verify(
            &cfg,
            &ReplayWindow::default(),
            &token,
            &json!({"aud": "orders"}),
            NOW,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("iat must be a number"), "{e}");
    }

    #[test]
    fn a_jti_is_a_replay_under_another_check_but_not_under_the_same_one() {
        let cfg = config(&ed25519_pem());
        let token = mint(&cfg, &spec(), NOW).unwrap();
        let opts = json!({"aud": "orders"});
        let w = ReplayWindow::default();
        let (first, second) = (scope::new_check_id(), scope::new_check_id());
        let at = |check| verify(&cfg, &w, &token, &opts, NOW, check);
        assert!(at(Some(first)).is_ok());
        assert!(at(Some(first)).is_ok(), "the same Check evaluating again");
        assert!(matches!(at(Some(second)), Err(PassportError::Replay(_))));
        assert!(matches!(at(None), Err(PassportError::Replay(_))));
        // Outside a Check, every call stands alone.
        let other = mint(&cfg, &spec(), NOW).unwrap();
        assert!(verify(&cfg, &w, &other, &opts, NOW, None).is_ok());
        assert!(matches!(
            verify(&cfg, &w, &other, &opts, NOW, None),
            Err(PassportError::Replay(_))
        ));
    }

    #[test]
    fn a_full_window_drops_expired_entries_and_then_fails_closed() {
        let cfg = PassportConfig {
            replay_cache_entries: 2,
            ..config(&ed25519_pem())
        };
        let opts = json!({"aud": "orders"});
        let w = ReplayWindow::default();
        let short = json!({"aud": "orders", "sub": "alice", "ttl_seconds": 10});
        for _ in 0..2 {
            let t = mint(&cfg, &short, NOW).unwrap();
            assert!(verify(&cfg, &w, &t, &opts, NOW, None).is_ok());
        }
        let t = mint(&cfg, &short, NOW).unwrap();
        assert!(matches!(
            verify(&cfg, &w, &t, &opts, NOW, None),
            Err(PassportError::WindowFull(2))
        ));
        // Later, the first two have lapsed (exp + leeway) and make room.
        let later = NOW + 16;
        let t = mint(&cfg, &short, later).unwrap();
        assert!(verify(&cfg, &w, &t, &opts, later, None).is_ok());
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn signing_keys_other_than_ed25519_and_p256_are_refused_with_their_name() {
        let rng = ring::rand::SystemRandom::new();
        let p384 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", p384.as_ref().to_vec()));
        let e = Signer::from_pem("i", &pem, None, "/keys/edge.pem")
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("/keys/edge.pem") && e.contains("ES256"), "{e}");
        let e = Signer::from_pem("i", "not pem", None, "/keys/edge.pem")
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("/keys/edge.pem"), "{e}");
    }

    #[test]
    fn the_builtins_use_the_installed_configuration_and_are_undefined_without_one() {
        let mint_call = |spec: serde_json::Value| {
            crate::builtins::call(
                "regent.passport.mint",
                &[Value::from_json_str(&spec.to_string()).unwrap()],
            )
        };
        let verify_call = |token: &Value| {
            crate::builtins::call(
                "regent.passport.verify",
                &[
                    token.clone(),
                    Value::from_json_str(r#"{"aud": "orders"}"#).unwrap(),
                ],
            )
        };
        let installation = install(config(&ed25519_pem()));
        let token = mint_call(spec());
        assert!(matches!(token, Value::String(_)), "{token:?}");
        let before = stats();
        let claims = {
            let _scope = scope::enter(scope::new_check_id());
            let first = verify_call(&token);
            assert_eq!(verify_call(&token), first, "same Check: same answer");
            first
        };
        assert_eq!(claims["sub"], Value::from("alice"));
        {
            let _scope = scope::enter(scope::new_check_id());
            assert_eq!(verify_call(&token), Value::Undefined, "replayed");
        }
        let after = stats();
        assert!(after.verified >= before.verified + 2);
        assert!(after.replays > before.replays);
        // New keys: tokens of the old key no longer verify.
        assert!(reload(installation, config(&ed25519_pem())));
        let fresh = mint_call(spec());
        assert_eq!(verify_call(&token), Value::Undefined);
        assert!(matches!(verify_call(&fresh), Value::Object(_)));
        uninstall(installation);
        assert!(!reload(installation, config(&ed25519_pem())));
        assert_eq!(mint_call(spec()), Value::Undefined);
        assert_eq!(verify_call(&fresh), Value::Undefined);
    }
}
