//! Remote key sets: the process-wide registry of JWKS the sidecar fetches from identity
//! providers, and the Rego interface to them.
//!
//! The sidecar fetches each configured issuer's JWKS in the background and publishes it here
//! ([`install`], [`update`]); policies reach it through
//!
//! - `io.jwt.decode_verify(token, {"jwks_issuer": issuer, ...})`: verifies with the issuer's
//!   current keys, parsed once per fetch (never per call), choosing the key by the token's `kid`.
//!   An unknown issuer, no current key set, or a `kid` that is not in the set makes the call
//!   undefined; the last two ask the sidecar for a refresh ([`RefreshHook`]), so a token signed
//!   with a key the provider has just rotated in passes once that refresh lands. In a Check, if
//!   that refresh can start at once, the Check waits for it (a deferred call, see
//!   [`super::remote`]) and evaluates again, so the first such token passes too. Without an `iss`
//!   constraint the token's `iss` must equal the issuer.
//! - `regent.jwks(issuer)`: the issuer's current key set as a JWKS JSON string (the usable keys
//!   only), for OPA's `{"cert": jwks}` pattern and for policies that inspect the keys.
//!
//! Where nothing publishes key sets (`regent serve`'s gate, `regent test`) both are undefined.
//!
//! Reading is lock-free: the registry is one immutable map behind an `ArcSwap`, loaded by each
//! call; writers (a fetch outcome, rarely) copy the map under a mutex and swap it. A key set past
//! its maximum age (`fetched_at + max_stale`) is treated as absent at call time, so an expired
//! set refuses tokens even if the fetcher is stuck.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use regorus::Value;

use super::jwt::JwtError;
use super::jwt_cache::KeySet;
use super::jwt_keys::Keys;
use super::{string_arg, Builtin};

/// Deepest JSON nesting accepted in a fetched JWKS (a JWKS needs 3: object, `keys`, a key, plus
/// arrays such as `x5c` inside a key).
pub const MAX_JWKS_DEPTH: usize = 8;
/// Most keys accepted in one fetched JWKS; providers publish a handful.
pub const MAX_JWKS_KEYS: usize = 256;

/// `regent.jwks`.
pub(crate) static BUILTINS: [Builtin; 1] = [Builtin {
    name: "regent.jwks",
    arity: 1,
    call: |args| {
        let issuer = string_arg(&args[0], "regent.jwks", "issuer")?;
        let set = current(issuer)?;
        Ok(Value::String(set.jwks.clone()))
    },
}];

/// Why a fetched JWKS was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    /// Not UTF-8, not JSON, nested too deeply, or not a JWKS.
    #[error("invalid JWKS: {0}")]
    Invalid(String),
    /// No usable key, or too many keys.
    #[error("{0}")]
    Keys(String),
}

/// One fetched key set, parsed once: what `decode_verify` verifies with and what `regent.jwks`
/// returns.
pub struct RemoteKeySet {
    pub(crate) set: Arc<KeySet>,
    /// `{"keys": [...]}` with the usable keys, as they came.
    jwks: Arc<str>,
    /// Kids of the usable keys (keys without one are not listed).
    kids: Vec<String>,
}

impl std::fmt::Debug for RemoteKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeySet")
            .field("keys", &self.len())
            .field("kids", &self.kids)
            .finish()
    }
}

impl RemoteKeySet {
    /// Parses a JWKS document with the budgets of a fetched one ([`MAX_JWKS_DEPTH`],
    /// [`MAX_JWKS_KEYS`]). Returns the set and one line per key skipped as unusable.
    pub fn parse(bytes: &[u8]) -> Result<(RemoteKeySet, Vec<String>), KeySetError> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| KeySetError::Invalid("not UTF-8".into()))?;
        let depth = json_depth(text);
        if depth > MAX_JWKS_DEPTH {
            return Err(KeySetError::Invalid(format!(
                "JSON nested {depth} deep (at most {MAX_JWKS_DEPTH})"
            )));
        }
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| KeySetError::Invalid(e.to_string()))?;
        let parsed = Keys::from_remote_jwks(&doc, MAX_JWKS_KEYS).map_err(|e| match e {
            JwtError::Key(m) => KeySetError::Keys(m),
            other => KeySetError::Keys(other.to_string()),
        })?;
        let kids = parsed
            .usable
            .iter()
            .filter_map(|k| k.get("kid").and_then(|v| v.as_str()).map(str::to_string))
            .collect();
        let jwks = serde_json::json!({ "keys": parsed.usable }).to_string();
        Ok((
            RemoteKeySet {
                set: Arc::new(KeySet::new(parsed.keys)),
                jwks: jwks.into(),
                kids,
            },
            parsed.skipped,
        ))
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.set.keys.len()
    }

    /// Always false: a set without usable keys is refused by [`RemoteKeySet::parse`].
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Kids of the usable keys.
    pub fn kids(&self) -> &[String] {
        &self.kids
    }

    /// The usable keys as a JWKS JSON document.
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }
}

/// The deepest nesting of arrays and objects in `text` (strings skipped). Run before parsing so
/// a hostile document is refused in one linear pass instead of by the parser's recursion limit.
fn json_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Told by a verification that found no key for a token (a `kid` not in the set, or no current
/// set): the publisher should refetch. Called on the evaluating thread, once per such call, so it
/// must not block and should coalesce (the sidecar rate-limits the fetches it causes).
pub trait RefreshHook: Send + Sync {
    /// A refresh of the issuer's key set is wanted.
    fn refresh_wanted(&self);

    /// Asks for a refresh a Check can wait for: a future that completes when it has ended (or
    /// the publisher's wait limit passed), or `None` when no refresh would start soon (held
    /// back by the publisher's rate limit), so the Check decides without waiting. Called on
    /// the evaluating thread; must not block.
    fn wait_for_refresh(&self) -> Option<RefreshWait> {
        None
    }
}

/// See [`RefreshHook::wait_for_refresh`].
pub type RefreshWait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// [`RefreshHook::wait_for_refresh`] of `issuer`'s publisher (`None` for an unknown issuer).
pub fn wait_for_refresh(issuer: &str) -> Option<RefreshWait> {
    registry()
        .load()
        .get(issuer)?
        .hook
        .as_ref()?
        .wait_for_refresh()
}

/// What the registry holds for one issuer.
#[derive(Clone)]
pub struct KeySetState {
    /// The last good key set, if any.
    pub keys: Option<Arc<RemoteKeySet>>,
    /// When `keys` was fetched (or last confirmed unchanged by the provider).
    pub fetched_at: Option<SystemTime>,
    /// How long after `fetched_at` the keys stay usable when refreshes fail.
    pub max_stale: Duration,
    /// The last refresh failure, cleared by a success.
    pub last_error: Option<String>,
    /// When the last refresh attempt ended.
    pub last_attempt: Option<SystemTime>,
}

impl KeySetState {
    /// A state with no keys yet.
    pub fn empty(max_stale: Duration) -> KeySetState {
        KeySetState {
            keys: None,
            fetched_at: None,
            max_stale,
            last_error: None,
            last_attempt: None,
        }
    }

    /// Age of the keys at `now` (zero if fetched "in the future", after a clock step back).
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        self.fetched_at
            .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO))
    }

    /// Whether the keys are past their maximum age at `now` (or there are none).
    pub fn expired(&self, now: SystemTime) -> bool {
        self.keys.is_none() || self.age(now).is_none_or(|a| a > self.max_stale)
    }

    /// The keys, unless absent or past their maximum age at `now`.
    pub fn usable(&self, now: SystemTime) -> Option<&Arc<RemoteKeySet>> {
        if self.expired(now) {
            None
        } else {
            self.keys.as_ref()
        }
    }
}

struct Entry {
    issuer: Arc<str>,
    state: KeySetState,
    hook: Option<Arc<dyn RefreshHook>>,
    /// Which [`install`] made the entry, so an owner removes only its own.
    installation: u64,
}

type Map = HashMap<Box<str>, Arc<Entry>>;

fn registry() -> &'static ArcSwap<Map> {
    static REGISTRY: OnceLock<ArcSwap<Map>> = OnceLock::new();
    REGISTRY.get_or_init(|| ArcSwap::from_pointee(Map::new()))
}

/// Serialises writers: each copies the map, changes it and swaps it in, and must not lose
/// another's change.
static WRITER: Mutex<u64> = Mutex::new(0);

fn write<T>(f: impl FnOnce(&mut Map, &mut u64) -> T) -> T {
    let mut installs = WRITER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut map = Map::clone(&registry().load());
    let out = f(&mut map, &mut installs);
    registry().store(Arc::new(map));
    out
}

/// Registers (or replaces) `issuer` with `state`; `hook` is told when a verification wants a
/// refresh. Returns the installation, for [`uninstall`].
pub fn install(issuer: &str, hook: Option<Arc<dyn RefreshHook>>, state: KeySetState) -> u64 {
    write(|m, installs| {
        *installs += 1;
        m.insert(
            issuer.into(),
            Arc::new(Entry {
                issuer: issuer.into(),
                state,
                hook,
                installation: *installs,
            }),
        );
        *installs
    })
}

/// Unregisters `issuer` if it is still the entry `installation` made (a newer owner's entry is
/// left alone).
pub fn uninstall(issuer: &str, installation: u64) {
    write(|m, _| {
        if m.get(issuer)
            .is_some_and(|e| e.installation == installation)
        {
            m.remove(issuer);
        }
    });
}

/// Changes the state of a registered issuer; does nothing for an unknown one.
pub fn update(issuer: &str, f: impl FnOnce(&mut KeySetState)) {
    write(|m, _| {
        if let Some(e) = m.get_mut(issuer) {
            let mut state = e.state.clone();
            f(&mut state);
            *e = Arc::new(Entry {
                issuer: e.issuer.clone(),
                state,
                hook: e.hook.clone(),
                installation: e.installation,
            });
        }
    });
}

/// Unregisters `issuer` (its key set becomes unknown to policies).
pub fn remove(issuer: &str) {
    write(|m, _| {
        m.remove(issuer);
    });
}

/// The state of one issuer.
pub fn state(issuer: &str) -> Option<KeySetState> {
    registry().load().get(issuer).map(|e| e.state.clone())
}

/// Every registered issuer and its state, sorted by issuer.
pub fn all_states() -> Vec<(String, KeySetState)> {
    let mut v: Vec<(String, KeySetState)> = registry()
        .load()
        .iter()
        .map(|(k, e)| (k.to_string(), e.state.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A key set a verification can use now.
pub(crate) struct Current {
    pub(crate) keys: Arc<RemoteKeySet>,
    issuer: Arc<str>,
    hook: Option<Arc<dyn RefreshHook>>,
    jwks: Arc<str>,
}

impl Current {
    /// Asks the publisher for a refresh (a token's `kid` is not in the set).
    pub(crate) fn want_refresh(&self) {
        want_refresh(&self.issuer, self.hook.as_ref());
    }
}

/// Asks `issuer`'s publisher for a refresh and, in a Check, to wait for it.
fn want_refresh(issuer: &str, hook: Option<&Arc<dyn RefreshHook>>) {
    if let Some(h) = hook {
        h.refresh_wanted();
        super::remote::defer_key_refresh(issuer);
    }
}

/// The usable key set of `issuer`. No registered issuer, or no usable keys (which also asks for a
/// refresh), is an error: the builtin is then undefined.
pub(crate) fn current(issuer: &str) -> Result<Current, JwtError> {
    let map = registry().load();
    let Some(entry) = map.get(issuer) else {
        return Err(JwtError::Constraints(format!(
            "no key set is configured for issuer {issuer:?}"
        )));
    };
    match entry.state.usable(SystemTime::now()) {
        Some(keys) => Ok(Current {
            keys: keys.clone(),
            issuer: entry.issuer.clone(),
            hook: entry.hook.clone(),
            jwks: keys.jwks.clone(),
        }),
        None => {
            want_refresh(issuer, entry.hook.as_ref());
            Err(JwtError::Key(format!(
                "the key set of issuer {issuer:?} is not available (not fetched yet, or past its maximum age)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl RefreshHook for Count {
        fn refresh_wanted(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A 2048-bit RSA modulus as base64url: parsed, never used to verify.
    fn rsa_n() -> String {
        format!("s{}", "A".repeat(341))
    }

    fn jwks(keys: serde_json::Value) -> Vec<u8> {
        serde_json::json!({ "keys": keys }).to_string().into_bytes()
    }

    #[test]
    fn unusable_keys_are_skipped_and_a_set_without_usable_keys_is_refused() {
        let doc = jwks(serde_json::json!([
            {"kty": "RSA", "kid": "good", "n": rsa_n(), "e": "AQAB", "use": "sig"},
            {"kty": "RSA", "kid": "enc", "n": rsa_n(), "e": "AQAB", "use": "enc"},
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "short", "crv": "P-256", "x": "AQAB", "y": "AQAB"},
            {"kty": "RSA", "kid": "hs", "n": rsa_n(), "e": "AQAB", "alg": "HS256"},
            {"kty": "weird", "kid": "w"},
        ]));
        let (set, skipped) = RemoteKeySet::parse(&doc).expect("one good key");
        assert_eq!(set.len(), 1);
        assert_eq!(set.kids(), ["good"]);
        assert_eq!(skipped.len(), 6, "{skipped:?}");
        let returned: serde_json::Value = serde_json::from_str(set.jwks_json()).unwrap();
        assert_eq!(returned["keys"][0]["kid"], "good");
        assert_eq!(returned["keys"].as_array().map(Vec::len), Some(1));

        let only_bad = jwks(serde_json::json!([{"kty": "oct", "k": "c2VjcmV0"}]));
        assert!(matches!(
            RemoteKeySet::parse(&only_bad),
            Err(KeySetError::Keys(_))
        ));
        assert!(matches!(
            RemoteKeySet::parse(b"{\"keys\": 1}"),
            Err(KeySetError::Keys(_))
        ));
        assert!(matches!(
            RemoteKeySet::parse(b"not json"),
            Err(KeySetError::Invalid(_))
        ));
        assert!(matches!(
            RemoteKeySet::parse(&[0xff, 0xfe]),
            Err(KeySetError::Invalid(_))
        ));
    }

    #[test]
    fn deep_documents_and_huge_key_counts_are_refused() {
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        let e = RemoteKeySet::parse(format!("{{\"keys\": {deep}}}").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("nested"), "{e}");
        // Brackets inside strings do not count.
        assert_eq!(
            json_depth(r#"{"a": "[[[[[[[[[[[[[[[[[[[[", "b": ["\"{"]}"#),
            2
        );
        let many: Vec<serde_json::Value> = (0..=MAX_JWKS_KEYS)
            .map(|i| serde_json::json!({"kty": "RSA", "kid": i.to_string(), "n": rsa_n(), "e": "AQAB"}))
            .collect();
        let e = RemoteKeySet::parse(&jwks(serde_json::Value::Array(many))).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
    }

    #[test]
    fn registry_serves_current_keys_until_their_maximum_age() {
        let issuer = "https://unit.test/registry";
        let hook = Arc::new(Count(AtomicUsize::new(0)));
        let first = install(
            issuer,
            Some(hook.clone()),
            KeySetState::empty(Duration::from_secs(60)),
        );
        assert!(current(issuer).is_err(), "no keys yet");
        assert_eq!(
            hook.0.load(Ordering::Relaxed),
            1,
            "no keys asks for a refresh"
        );
        let doc = jwks(serde_json::json!([{"kty": "RSA", "kid": "k1", "n": rsa_n(), "e": "AQAB"}]));
        let (set, _) = RemoteKeySet::parse(&doc).unwrap();
        update(issuer, |s| {
            s.keys = Some(Arc::new(set));
            s.fetched_at = Some(SystemTime::now());
        });
        let c = current(issuer).expect("usable");
        assert!(c.keys.set.keys.has_kid("k1"));
        let out = BUILTINS[0].call;
        assert!(matches!(out(&[Value::from(issuer)]), Ok(Value::String(_))));
        update(issuer, |s| {
            s.fetched_at = Some(SystemTime::now() - Duration::from_secs(61));
        });
        assert!(current(issuer).is_err(), "past max_stale");
        assert!(out(&[Value::from(issuer)]).is_err());
        let second = install(issuer, None, KeySetState::empty(Duration::from_secs(60)));
        uninstall(issuer, first);
        assert!(state(issuer).is_some(), "a newer owner's entry stays");
        uninstall(issuer, second);
        assert!(state(issuer).is_none());
        assert!(out(&[Value::from("https://never.registered")]).is_err());
    }

    mod rego {
        use super::*;
        use crate::{ActivePolicy, EngineChoice, EvaluatorKind, PolicySettings};
        use base64::Engine as _;
        use ring::signature::{Ed25519KeyPair, KeyPair as _};

        const POLICY: &str = r#"
package t

import rego.v1

verified := io.jwt.decode_verify(input.token, {"jwks_issuer": input.issuer, "time": input.time})

via_cert := io.jwt.decode_verify(input.token, {"cert": regent.jwks(input.issuer), "time": input.time})

jwks := regent.jwks(input.issuer)
"#;

        fn b64(data: &[u8]) -> String {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
        }

        fn key() -> Ed25519KeyPair {
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generates");
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parses")
        }

        fn jwk(k: &Ed25519KeyPair, kid: &str) -> serde_json::Value {
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                               "x": b64(k.public_key().as_ref())})
        }

        fn token(k: &Ed25519KeyPair, kid: &str, iss: &str) -> String {
            let input = format!(
                "{}.{}",
                b64(serde_json::json!({"alg": "EdDSA", "kid": kid})
                    .to_string()
                    .as_bytes()),
                b64(serde_json::json!({"iss": iss, "sub": "alice"})
                    .to_string()
                    .as_bytes())
            );
            format!("{input}.{}", b64(k.sign(input.as_bytes()).as_ref()))
        }

        fn policies() -> Vec<ActivePolicy> {
            let files = [("t.rego".to_string(), POLICY.as_bytes().to_vec())];
            let bundle = Arc::new(
                regent_bundle::Bundle::from_files(files.into_iter().collect()).expect("bundle"),
            );
            [EngineChoice::Vm, EngineChoice::Interpreter]
                .into_iter()
                .map(|engine| {
                    let settings = PolicySettings {
                        rule: "data.t".into(),
                        engine,
                        ..PolicySettings::default()
                    };
                    let p = ActivePolicy::compile(&[("t".to_string(), bundle.clone())], &settings)
                        .expect("compiles");
                    let want = match engine {
                        EngineChoice::Vm => EvaluatorKind::Vm,
                        _ => EvaluatorKind::Interpreter,
                    };
                    assert_eq!(p.kind(), want);
                    p
                })
                .collect()
        }

        /// Publishes `keys` (JWKs) as `issuer`'s current key set, fetched now.
        fn publish(issuer: &str, keys: serde_json::Value) {
            let (set, _) = RemoteKeySet::parse(&jwks(keys)).expect("parses");
            update(issuer, |s| {
                s.keys = Some(Arc::new(set));
                s.fetched_at = Some(SystemTime::now());
            });
        }

        fn eval(p: &ActivePolicy, token: &str, issuer: &str) -> serde_json::Value {
            let input = serde_json::json!({"token": token, "issuer": issuer, "time": 1e18});
            let v = p
                .evaluate(Value::from_json_str(&input.to_string()).expect("input"))
                .expect("evaluates");
            serde_json::to_value(&v).expect("JSON")
        }

        #[test]
        fn without_a_registry_entry_both_are_undefined_on_both_evaluators() {
            let k = key();
            let issuer = "https://unit.test/none";
            assert_eq!(
                crate::builtins::call("regent.jwks", &[Value::from(issuer)]),
                Value::Undefined
            );
            for p in policies() {
                let out = eval(&p, &token(&k, "k1", issuer), issuer);
                for rule in ["verified", "via_cert", "jwks"] {
                    assert!(out.get(rule).is_none(), "{rule} defined: {out}");
                }
            }
        }

        #[test]
        fn the_constraint_verifies_with_the_registry_and_asks_for_unknown_kids() {
            let (k1, k2) = (key(), key());
            let issuer = "https://unit.test/constraint";
            let hook = Arc::new(Count(AtomicUsize::new(0)));
            install(
                issuer,
                Some(hook.clone()),
                KeySetState::empty(Duration::from_secs(60)),
            );
            let publish = |keys| publish(issuer, keys);
            publish(serde_json::json!([jwk(&k1, "k1")]));
            for p in policies() {
                let out = eval(&p, &token(&k1, "k1", issuer), issuer);
                assert_eq!(out["verified"][0], true, "{out}");
                assert_eq!(out["verified"][2]["sub"], "alice", "{out}");
                assert_eq!(out["via_cert"][0], true, "{out}");
                assert!(out["jwks"].as_str().is_some_and(|s| s.contains("\"k1\"")));
                // Another issuer's token: `iss` defaults to the key set's issuer.
                let out = eval(&p, &token(&k1, "k1", "https://other"), issuer);
                assert_eq!(out["verified"][0], false, "{out}");
                // The right kid with another key's signature.
                let out = eval(&p, &token(&k2, "k1", issuer), issuer);
                assert_eq!(out["verified"][0], false, "{out}");
            }
            let before = hook.0.load(Ordering::Relaxed);
            for p in policies() {
                let out = eval(&p, &token(&k2, "k2", issuer), issuer);
                assert!(out.get("verified").is_none(), "unknown kid: {out}");
            }
            assert!(
                hook.0.load(Ordering::Relaxed) >= before + 2,
                "asked per call"
            );
            // The provider rotates k2 in: the same token now verifies, nothing restarted.
            publish(serde_json::json!([jwk(&k1, "k1"), jwk(&k2, "k2")]));
            for p in policies() {
                let out = eval(&p, &token(&k2, "k2", issuer), issuer);
                assert_eq!(out["verified"][0], true, "{out}");
            }
            remove(issuer);
        }

        /// A publisher a Check can wait for (its wait is over at once).
        struct Waitable;
        impl RefreshHook for Waitable {
            fn refresh_wanted(&self) {}
            fn wait_for_refresh(&self) -> Option<RefreshWait> {
                Some(Box::pin(async {}))
            }
        }

        /// Defers every key refresh: the sidecar's answer when one can start at once.
        struct Defers;
        impl crate::builtins::remote::Resolver for Defers {
            fn cached(
                &self,
                _: &crate::builtins::remote::Call,
            ) -> Option<crate::builtins::remote::Answer> {
                None
            }
        }

        #[test]
        fn in_a_check_an_unknown_kid_defers_one_wait_then_verifies_with_the_refreshed_keys() {
            use crate::builtins::remote::{Answer, Calls, KEY_REFRESH};
            let (k1, k2) = (key(), key());
            let issuer = "https://unit.test/wait";
            install(
                issuer,
                Some(Arc::new(Waitable)),
                KeySetState::empty(Duration::from_secs(60)),
            );
            let publish = |keys| publish(issuer, keys);
            for p in policies() {
                publish(serde_json::json!([jwk(&k1, "k1")]));
                let mut calls = Calls::new(Arc::new(Defers));
                let first = calls.round(|| eval(&p, &token(&k2, "k2", issuer), issuer));
                assert!(first.get("verified").is_none(), "{first}");
                let deferred = calls.take_deferred();
                assert_eq!(deferred.len(), 1, "{deferred:?}");
                assert_eq!(deferred[0].builtin, KEY_REFRESH);
                // The refresh the Check waited for brought k2.
                publish(serde_json::json!([jwk(&k1, "k1"), jwk(&k2, "k2")]));
                calls.answer(deferred[0].clone(), Answer::Value(Value::Null));
                let second = calls.round(|| eval(&p, &token(&k2, "k2", issuer), issuer));
                assert_eq!(second["verified"][0], true, "{second}");
                // Still unknown after the wait: refused, and not deferred again.
                let third = calls.round(|| eval(&p, &token(&k2, "k3", issuer), issuer));
                assert!(third.get("verified").is_none(), "{third}");
                assert!(calls.deferred().is_empty());
                assert!(calls.nd_builtin_cache().is_empty(), "not a logged call");
            }
            remove(issuer);
        }
    }
}
