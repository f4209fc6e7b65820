//! Per-thread caches for the JWT builtins: parsed key sets and signature-check outcomes.
//!
//! A policy usually passes the same key set (`json.marshal(data.jwks)`, a PEM string) on every
//! call, and a client sends the same token on every request until it expires. Parsing the keys
//! and checking an RSA or ECDSA signature are the dominant costs of a JWT builtin call, and both
//! depend only on the exact strings involved, so both are remembered:
//!
//! - **Key sets**, keyed by the exact key string and how it is used (`cert` or HMAC `secret`).
//!   A parse error is not cached.
//! - **Signature outcomes**, keyed by the exact token string, the key set and the check made
//!   (`decode_verify`, which uses the header's `alg` and `kid`, or `verify_<alg>`). Failed checks
//!   are cached too; for them only the boolean is kept. For a verified `decode_verify` the
//!   parsed header and payload are kept so a hit does no parsing. Malformed tokens are not cached
//!   (they stay builtin errors).
//!
//! What a hit can and cannot do: a lookup hashes the key with a per-thread random SipHash key,
//! then compares the stored strings *in full* with the ones given; an equal hash with different
//! strings is a miss. A token is identified by its exact bytes and a key set by its exact string,
//! so a token that differs in any byte (a forgery, a re-encoding) or a key set that differs in
//! any byte is checked afresh. Nothing time-dependent is cached: `exp`, `nbf`, `iss`, `aud` and
//! the pinned `alg` are checked on every call against that call's time and constraints, so a
//! token cached while valid is rejected once it expires.
//!
//! The caches are thread-local: the Check path takes no lock and no cache line is shared between
//! threads, at the price of one copy per worker thread. Each is a least-recently-used cache
//! bounded both in entries and in (estimated) bytes. Hit and miss counts are kept per thread and,
//! for metrics, process-wide in relaxed atomics ([`jwt_cache_stats`]).

use std::cell::{Cell, RefCell};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use regorus::Value;

use super::jwt::JwtError;
use super::jwt_keys::{Alg, Keys};

/// Key sets kept per thread.
pub const KEYSET_CACHE_ENTRIES: usize = 64;
/// Bytes of key strings kept per thread (each counted twice, for the parsed keys).
const KEYSET_CACHE_BYTES: usize = 4 << 20;
/// Signature outcomes kept per thread.
pub const TOKEN_CACHE_ENTRIES: usize = 4096;
/// Bytes of tokens kept per thread (a verified token counted three times, for its parsed header
/// and payload).
const TOKEN_CACHE_BYTES: usize = 16 << 20;
/// Bookkeeping bytes counted per entry on top of the strings.
const ENTRY_OVERHEAD: usize = 128;

/// Hit and miss counts of the JWT caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JwtCacheStats {
    /// `decode_verify` / `verify_*` calls answered from a cached signature outcome.
    pub token_hits: u64,
    /// Calls that had to check the signature.
    pub token_misses: u64,
    /// Calls whose key string was already parsed.
    pub keyset_hits: u64,
    /// Calls that had to parse their key string.
    pub keyset_misses: u64,
}

/// The calling thread's JWT caches: its counts and how full the caches are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JwtThreadCacheStats {
    /// This thread's hits and misses.
    pub counts: JwtCacheStats,
    /// Signature outcomes cached on this thread (at most [`TOKEN_CACHE_ENTRIES`]).
    pub token_entries: usize,
    /// Key sets cached on this thread (at most [`KEYSET_CACHE_ENTRIES`]).
    pub keyset_entries: usize,
}

static TOKEN_HITS: AtomicU64 = AtomicU64::new(0);
static TOKEN_MISSES: AtomicU64 = AtomicU64::new(0);
static KEYSET_HITS: AtomicU64 = AtomicU64::new(0);
static KEYSET_MISSES: AtomicU64 = AtomicU64::new(0);

/// Process-wide hit and miss counts of the JWT caches, summed over every thread. Reads relaxed
/// atomics: the four numbers are each exact but not read at one instant.
pub fn jwt_cache_stats() -> JwtCacheStats {
    JwtCacheStats {
        token_hits: TOKEN_HITS.load(Relaxed),
        token_misses: TOKEN_MISSES.load(Relaxed),
        keyset_hits: KEYSET_HITS.load(Relaxed),
        keyset_misses: KEYSET_MISSES.load(Relaxed),
    }
}

/// The calling thread's JWT cache counts and sizes (the interpreter and the VM call the builtins
/// on the evaluating thread).
pub fn jwt_thread_cache_stats() -> JwtThreadCacheStats {
    JwtThreadCacheStats {
        counts: THREAD_COUNTS.with(|c| c.get()),
        token_entries: TOKENS.with(|c| c.borrow().len()),
        keyset_entries: KEYSETS.with(|c| c.borrow().len()),
    }
}

fn count(global: &AtomicU64, local: impl FnOnce(&mut JwtCacheStats)) {
    global.fetch_add(1, Relaxed);
    THREAD_COUNTS.with(|c| {
        let mut s = c.get();
        local(&mut s);
        c.set(s);
    });
}

/// How a key string is used: parsed as PEM/JWK(S), or taken as an HMAC secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyUse {
    Cert,
    Secret,
}

/// Parsed keys and the identity of the string they came from.
pub(crate) struct KeySet {
    /// Unique in the process for its life: outcomes cached for one key set are never found
    /// through another. Process-wide rather than per thread because the remote key sets of
    /// `keysets` are shared by every thread.
    id: u64,
    pub(crate) keys: Keys,
}

/// Source of [`KeySet`] ids; relaxed is enough, only uniqueness matters.
static NEXT_KEYSET_ID: AtomicU64 = AtomicU64::new(0);

impl KeySet {
    /// `keys` with a fresh id.
    pub(crate) fn new(keys: Keys) -> KeySet {
        KeySet {
            id: NEXT_KEYSET_ID.fetch_add(1, Relaxed),
            keys,
        }
    }
}

/// The keys in `source`, parsed on this thread's first call with that exact string.
pub(crate) fn key_set(usage: KeyUse, source: &str) -> Result<Arc<KeySet>, JwtError> {
    let (hash, found) = KEYSETS.with(|c| {
        let mut c = c.borrow_mut();
        let hash = c.hash(&(usage, source));
        let found = c
            .get(hash, |(u, s): &KeySetKey| *u == usage && **s == *source)
            .cloned();
        (hash, found)
    });
    if let Some(ks) = found {
        count(&KEYSET_HITS, |s| s.keyset_hits += 1);
        return Ok(ks);
    }
    count(&KEYSET_MISSES, |s| s.keyset_misses += 1);
    let keys = match usage {
        KeyUse::Cert => Keys::parse(source)?,
        KeyUse::Secret => Keys::secret(source),
    };
    let ks = Arc::new(KeySet::new(keys));
    KEYSETS.with(|c| {
        c.borrow_mut().insert(
            hash,
            (usage, source.into()),
            ks.clone(),
            2 * source.len() + ENTRY_OVERHEAD,
        )
    });
    Ok(ks)
}

/// The signature check a cached outcome answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Check {
    /// `decode_verify`: the header's `alg` and `kid` choose the algorithm and key.
    Header,
    /// `verify_<alg>`: that algorithm, every key.
    Alg(Alg),
}

/// The outcome of checking one token's signature against one key set.
pub(crate) struct Outcome {
    /// A key verified the signature.
    pub(crate) verified: bool,
    /// The parsed header, kept only when verified by [`Check::Header`] (else `Undefined`).
    pub(crate) header: Value,
    /// The parsed payload, kept only when verified by [`Check::Header`] (else `Undefined`).
    pub(crate) payload: Value,
}

impl Outcome {
    /// An outcome without the parsed token.
    pub(crate) fn bare(verified: bool) -> Outcome {
        Outcome {
            verified,
            header: Value::Undefined,
            payload: Value::Undefined,
        }
    }
}

/// A cached outcome's key: the token, the key set's id and the check.
type TokenKey = (Box<str>, u64, Check);
/// A cached key set's key: how the string is used and the string.
type KeySetKey = (KeyUse, Box<str>);

/// The outcome of `check` for `token` against `keys`: cached, or computed by `compute` (an
/// error is returned and not cached).
pub(crate) fn outcome(
    token: &str,
    keys: &KeySet,
    check: Check,
    compute: impl FnOnce() -> Result<Outcome, JwtError>,
) -> Result<Rc<Outcome>, JwtError> {
    let (hash, found) = TOKENS.with(|c| {
        let mut c = c.borrow_mut();
        let hash = c.hash(&(token, keys.id, check));
        let found = c
            .get(hash, |(t, id, ch): &TokenKey| {
                *id == keys.id && *ch == check && **t == *token
            })
            .cloned();
        (hash, found)
    });
    if let Some(o) = found {
        count(&TOKEN_HITS, |s| s.token_hits += 1);
        return Ok(o);
    }
    count(&TOKEN_MISSES, |s| s.token_misses += 1);
    let o = Rc::new(compute()?);
    let cost = if matches!(o.header, Value::Undefined) {
        token.len()
    } else {
        3 * token.len()
    } + ENTRY_OVERHEAD;
    TOKENS.with(|c| {
        c.borrow_mut()
            .insert(hash, (token.into(), keys.id, check), o.clone(), cost)
    });
    Ok(o)
}

thread_local! {
    static KEYSETS: RefCell<Lru<KeySetKey, Arc<KeySet>>> =
        RefCell::new(Lru::new(KEYSET_CACHE_ENTRIES, KEYSET_CACHE_BYTES));
    static TOKENS: RefCell<Lru<TokenKey, Rc<Outcome>>> =
        RefCell::new(Lru::new(TOKEN_CACHE_ENTRIES, TOKEN_CACHE_BYTES));
    static THREAD_COUNTS: Cell<JwtCacheStats> = const {
        Cell::new(JwtCacheStats {
            token_hits: 0,
            token_misses: 0,
            keyset_hits: 0,
            keyset_misses: 0,
        })
    };
}

/// A hasher for keys that already are keyed SipHash values.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const NIL: usize = usize::MAX;

struct Slot<K, V> {
    hash: u64,
    cost: usize,
    prev: usize,
    next: usize,
    entry: Option<(K, V)>,
}

/// A least-recently-used map bounded in entries and in bytes (as estimated by the caller).
/// Entries are found by a 64-bit hash and then confirmed by the caller's full comparison; one
/// entry per hash (an insert replaces whatever had the same hash).
struct Lru<K, V> {
    hasher: RandomState,
    index: HashMap<u64, usize, BuildHasherDefault<PreHashed>>,
    slots: Vec<Slot<K, V>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: evicted first.
    tail: usize,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl<K, V> Lru<K, V> {
    fn new(max_entries: usize, max_bytes: usize) -> Self {
        Lru {
            hasher: RandomState::new(),
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn hash(&self, key: &impl std::hash::Hash) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The value stored under `hash` if `matches` accepts its key; it becomes the most recent.
    fn get(&mut self, hash: u64, matches: impl FnOnce(&K) -> bool) -> Option<&V> {
        let i = *self.index.get(&hash)?;
        if !matches(&self.slots[i].entry.as_ref()?.0) {
            return None;
        }
        self.unlink(i);
        self.push_front(i);
        self.slots[i].entry.as_ref().map(|(_, v)| v)
    }

    /// Stores `value` as the most recent entry, evicting the least recent ones until both bounds
    /// hold. An entry costing more than the whole byte budget is not stored.
    fn insert(&mut self, hash: u64, key: K, value: V, cost: usize) {
        if self.max_entries == 0 || cost > self.max_bytes {
            return;
        }
        if let Some(i) = self.index.remove(&hash) {
            self.release(i);
        }
        while self.index.len() >= self.max_entries || self.bytes + cost > self.max_bytes {
            let lru = self.tail;
            if lru == NIL {
                break;
            }
            self.index.remove(&self.slots[lru].hash);
            self.release(lru);
        }
        let slot = Slot {
            hash,
            cost,
            prev: NIL,
            next: NIL,
            entry: Some((key, value)),
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.push_front(i);
        self.bytes += cost;
        self.index.insert(hash, i);
    }

    /// Unlinks slot `i`, drops its entry and frees it (the caller removes it from the index).
    fn release(&mut self, i: usize) {
        self.unlink(i);
        self.bytes -= self.slots[i].cost;
        self.slots[i].entry = None;
        self.free.push(i);
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next].prev = prev;
        }
        self.slots[i].prev = NIL;
        self.slots[i].next = NIL;
    }

    fn push_front(&mut self, i: usize) {
        self.slots[i].prev = NIL;
        self.slots[i].next = self.head;
        if self.head != NIL {
            self.slots[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(lru: &mut Lru<String, u32>, key: &str) -> Option<u32> {
        let h = lru.hash(&key);
        lru.get(h, |k| k == key).copied()
    }

    fn put(lru: &mut Lru<String, u32>, key: &str, v: u32, cost: usize) {
        let h = lru.hash(&key);
        lru.insert(h, key.to_string(), v, cost);
    }

    #[test]
    fn evicts_the_least_recently_used_entry_at_the_entry_bound() {
        let mut lru = Lru::new(3, 1 << 20);
        put(&mut lru, "a", 1, 1);
        put(&mut lru, "b", 2, 1);
        put(&mut lru, "c", 3, 1);
        assert_eq!(get(&mut lru, "a"), Some(1)); // a is now the most recent; b the least
        put(&mut lru, "d", 4, 1);
        assert_eq!(lru.len(), 3);
        assert_eq!(get(&mut lru, "b"), None);
        assert_eq!(get(&mut lru, "a"), Some(1));
        assert_eq!(get(&mut lru, "c"), Some(3));
        assert_eq!(get(&mut lru, "d"), Some(4));
        for i in 0..100 {
            put(&mut lru, &format!("k{i}"), i, 1);
            assert!(lru.len() <= 3);
        }
        assert_eq!(get(&mut lru, "k99"), Some(99));
        assert_eq!(get(&mut lru, "k96"), None);
        assert_eq!(lru.slots.len(), 3, "slots are reused");
    }

    #[test]
    fn the_byte_budget_evicts_too_and_oversized_entries_are_not_kept() {
        let mut lru = Lru::new(100, 10);
        put(&mut lru, "a", 1, 4);
        put(&mut lru, "b", 2, 4);
        put(&mut lru, "c", 3, 4); // 12 > 10: a goes
        assert_eq!(get(&mut lru, "a"), None);
        assert_eq!((lru.len(), lru.bytes), (2, 8));
        put(&mut lru, "huge", 9, 11);
        assert_eq!(get(&mut lru, "huge"), None);
        assert_eq!(get(&mut lru, "b"), Some(2));
        put(&mut lru, "b", 20, 2); // replaces b
        assert_eq!(get(&mut lru, "b"), Some(20));
        assert_eq!((lru.len(), lru.bytes), (2, 6));
    }

    #[test]
    fn an_equal_hash_with_another_key_is_a_miss_and_is_replaced() {
        let mut lru: Lru<String, u32> = Lru::new(10, 100);
        lru.insert(7, "first".into(), 1, 1);
        assert_eq!(lru.get(7, |k| k == "second"), None);
        assert_eq!(lru.get(7, |k| k == "first").copied(), Some(1));
        lru.insert(7, "second".into(), 2, 1);
        assert_eq!(lru.get(7, |k| k == "first"), None);
        assert_eq!(lru.get(7, |k| k == "second").copied(), Some(2));
        assert_eq!((lru.len(), lru.bytes), (1, 1));
    }
}
