//! Builtins whose answer comes over the network (`http.send`, `regent.introspect`), evaluated
//! without waiting on I/O.
//!
//! regorus evaluates synchronously, on a runtime thread that must never block. So a call whose
//! answer is not known yet is *deferred*: the builtin records it and answers undefined, the Check
//! throws that evaluation away, the sidecar performs the deferred calls asynchronously, and
//! evaluates again with their answers in hand. One evaluation is a *round* ([`Calls::round`]).
//! A call is answered, in order, from:
//!
//! 1. this Check's earlier rounds, so every round (and a VM answer's interpreter re-check) sees
//!    the same answer for the same call, as OPA's per-query `http.send` cache guarantees;
//! 2. the process's shared cache, through the Check's [`Resolver`] (the sidecar's), which also
//!    answers at once what needs no network, such as a host the configuration does not allow;
//! 3. else it is deferred, unless this is the last round allowed, where it stays undefined.
//!
//! A policy whose calls all hit the cache runs in one round, on the Check's own thread. Chained
//! calls (a URL built from an earlier answer) take a round per link, up to the sidecar's limit.
//!
//! An answer may *raise* an error instead of giving a value (`http.send` with `raise_error`, its
//! default, on a disallowed host or a network failure): the evaluation then fails with that
//! message, as OPA's does, whatever the rest of the policy says.
//!
//! Outside a Check with a resolver (`regent test`, `regent eval`, the server's test gate, a
//! policy's trial evaluation) these builtins are undefined.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use regorus::Value;

use super::Builtin;

/// Names of the builtins answered remotely.
pub const HTTP_SEND: &str = "http.send";
/// See [`HTTP_SEND`].
pub const INTROSPECT: &str = "regent.introspect";
/// Not a Rego builtin: a verification that found no key for a token asks to wait for the
/// refresh of its issuer's key set (argument: the issuer). Its answer is `null`, once the
/// refresh ended; the next round verifies with what it fetched. Not in decision logs.
pub const KEY_REFRESH: &str = "regent.key_refresh";

/// `http.send(request)` and `regent.introspect(endpoint, token)`.
pub(crate) static BUILTINS: [Builtin; 2] = [
    Builtin {
        name: HTTP_SEND,
        arity: 1,
        call: |args| Ok(answer(HTTP_SEND, args)),
    },
    Builtin {
        name: INTROSPECT,
        arity: 2,
        call: |args| Ok(answer(INTROSPECT, args)),
    },
];

/// One call a policy made: which builtin, with which arguments.
#[derive(Debug, Clone)]
pub struct Call {
    /// [`HTTP_SEND`] or [`INTROSPECT`].
    pub builtin: &'static str,
    /// The arguments as the policy gave them.
    pub args: Vec<Value>,
    /// The arguments as canonical JSON: the call's identity within a Check and in caches.
    pub key: String,
}

/// What a call gives the policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The builtin's value (possibly undefined).
    Value(Value),
    /// The evaluation fails with this message.
    Raise(String),
}

/// Answers calls without waiting: the sidecar's caches and its configuration's refusals.
pub trait Resolver: Send + Sync {
    /// The answer to `call` if it is known now, `None` if it needs the network.
    fn cached(&self, call: &Call) -> Option<Answer>;
}

/// The remote calls of one Check, across its rounds.
#[derive(Default)]
pub struct Calls {
    /// Who answers from cache and performs deferred calls; none: the builtins are undefined.
    resolver: Option<Arc<dyn Resolver>>,
    /// Every answer known to this Check, by [`Call::key`].
    answers: HashMap<String, (Call, Answer)>,
    /// Calls of the last round that had no answer, in the order they were made, each once.
    deferred: Vec<Call>,
    /// The first error an answer raised in the last round.
    raised: Option<String>,
    /// The last round allowed: nothing is deferred any more.
    last_round: bool,
}

thread_local! {
    // The calls of the round being evaluated on this thread; moved in for the round and back out.
    static ROUND: RefCell<Option<Calls>> = const { RefCell::new(None) };
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("answers", &self.answers.len())
            .field("deferred", &self.deferred)
            .field("raised", &self.raised)
            .finish()
    }
}

impl Calls {
    /// A Check's calls before its first round, answered by `resolver`.
    pub fn new(resolver: Arc<dyn Resolver>) -> Calls {
        Calls {
            resolver: Some(resolver),
            ..Calls::default()
        }
    }

    /// Runs one evaluation (`eval`) with this Check's answers. Afterwards [`Calls::deferred`]
    /// lists what it asked and could not be answered, and [`Calls::raised`] the error an answer
    /// raised; a round with either must not be used as the Check's decision (undefined answers
    /// stood in for the deferred calls).
    pub fn round<R>(&mut self, eval: impl FnOnce() -> R) -> R {
        self.deferred.clear();
        self.raised = None;
        let mine = std::mem::take(self);
        let outer = ROUND.with(|r| r.borrow_mut().replace(mine));
        let result = eval();
        *self = ROUND
            .with(|r| std::mem::replace(&mut *r.borrow_mut(), outer))
            .unwrap_or_default();
        result
    }

    /// The calls the last round could not answer.
    pub fn deferred(&self) -> &[Call] {
        &self.deferred
    }

    /// Takes the deferred calls, to perform them.
    pub fn take_deferred(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.deferred)
    }

    /// The error an answer raised in the last round.
    pub fn raised(&self) -> Option<&str> {
        self.raised.as_deref()
    }

    /// Records the answer to a performed call, for the next round.
    pub fn answer(&mut self, call: Call, answer: Answer) {
        self.answers.insert(call.key.clone(), (call, answer));
    }

    /// Marks the next round as the last: calls it cannot answer stay undefined.
    pub fn set_last_round(&mut self) {
        self.last_round = true;
    }

    /// Whether any call was made (answered or not).
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty() && self.deferred.is_empty()
    }

    /// The answered calls as OPA's `nd_builtin_cache` decision log field: builtin name →
    /// arguments as a JSON array string → value. Raised errors and undefined values are left out,
    /// as OPA caches only values.
    pub fn nd_builtin_cache(&self) -> BTreeMap<&'static str, BTreeMap<String, Value>> {
        let mut out: BTreeMap<&'static str, BTreeMap<String, Value>> = BTreeMap::new();
        for (call, answer) in self.answers.values() {
            if call.builtin == KEY_REFRESH {
                continue;
            }
            if let Answer::Value(v) = answer {
                if *v != Value::Undefined {
                    out.entry(call.builtin)
                        .or_default()
                        .insert(call.key.clone(), v.clone());
                }
            }
        }
        out
    }
}

impl Call {
    /// A call of `builtin` with `args`.
    pub fn new(builtin: &'static str, args: Vec<Value>) -> Call {
        let key = Value::from(args.clone())
            .to_json_str()
            .unwrap_or_else(|_| format!("{args:?}"));
        Call { builtin, args, key }
    }
}

/// In a Check, defers a wait for `issuer`'s key set refresh unless this Check has waited for
/// it already (see [`KEY_REFRESH`]); elsewhere does nothing.
pub(crate) fn defer_key_refresh(issuer: &str) {
    answer(KEY_REFRESH, &[Value::from(issuer)]);
}

/// The value of a remote builtin's call, per the module docs.
fn answer(builtin: &'static str, args: &[Value]) -> Value {
    ROUND.with(|r| {
        let mut round = r.borrow_mut();
        // Outside a Check, or without a resolver, nothing answers.
        let Some(calls) = round.as_mut() else {
            return Value::Undefined;
        };
        let Some(resolver) = calls.resolver.clone() else {
            return Value::Undefined;
        };
        let call = Call::new(builtin, args.to_vec());
        let known = calls.answers.get(&call.key).map(|(_, a)| a.clone());
        let found = known.or_else(|| {
            let a = resolver.cached(&call)?;
            calls.answer(call.clone(), a.clone());
            Some(a)
        });
        match found {
            Some(Answer::Value(v)) => v,
            Some(Answer::Raise(message)) => {
                calls.raised.get_or_insert(message);
                Value::Undefined
            }
            None => {
                if !calls.last_round && !calls.deferred.iter().any(|d| d.key == call.key) {
                    calls.deferred.push(call);
                }
                Value::Undefined
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Resolver for Fixed {
        fn cached(&self, call: &Call) -> Option<Answer> {
            match call.args.first() {
                Some(Value::String(s)) if s.as_ref() == "cached" => {
                    Some(Answer::Value(Value::from("from cache")))
                }
                Some(Value::String(s)) if s.as_ref() == "refused" => {
                    Some(Answer::Raise("refused by config".into()))
                }
                _ => None,
            }
        }
    }

    fn send(arg: &str) -> Value {
        answer(HTTP_SEND, &[Value::from(arg)])
    }

    #[test]
    fn unknown_calls_are_deferred_once_then_answered_in_the_next_round() {
        let mut calls = Calls::new(Arc::new(Fixed));
        let first = calls.round(|| (send("a"), send("a"), send("cached")));
        assert_eq!(first.0, Value::Undefined);
        assert_eq!(first.2, Value::from("from cache"));
        let deferred = calls.take_deferred();
        assert_eq!(deferred.len(), 1, "{deferred:?}");
        calls.answer(deferred[0].clone(), Answer::Value(Value::from(7)));
        let second = calls.round(|| send("a"));
        assert_eq!(second, Value::from(7));
        assert!(calls.deferred().is_empty());
        let log = calls.nd_builtin_cache();
        assert_eq!(log[HTTP_SEND].len(), 2, "{log:?}");
    }

    #[test]
    fn a_raised_answer_fails_the_round_and_the_last_round_defers_nothing() {
        let mut calls = Calls::new(Arc::new(Fixed));
        calls.round(|| send("refused"));
        assert_eq!(calls.raised(), Some("refused by config"));
        calls.set_last_round();
        let (_, v) = calls.round(|| (send("refused"), send("never answered")));
        assert_eq!(v, Value::Undefined);
        assert!(calls.deferred().is_empty());
        assert_eq!(calls.raised(), Some("refused by config"));
    }

    #[test]
    fn outside_a_round_calls_are_undefined() {
        assert_eq!(send("cached"), Value::Undefined);
        let mut calls = Calls::default();
        assert_eq!(calls.round(|| send("cached")), Value::Undefined);
        assert!(calls.deferred().is_empty());
    }
}
