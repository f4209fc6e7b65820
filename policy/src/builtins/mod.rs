//! Builtins that regorus lacks and OPA-Envoy policies use, with OPA's semantics.
//!
//! Each builtin is a plain function over its arguments, listed once in [`all`]. The same function
//! serves both evaluators: the interpreter calls it as a regorus extension ([`register`]), and the
//! bytecode VM, which cannot call extensions, compiles each call to a host-await instruction that
//! suspends the VM; [`call`] answers it and the VM resumes (see `active.rs`).
//!
//! Errors (a malformed token, an unusable key, bad constraints) make the call *undefined*, which is
//! what OPA does outside strict mode: a client sending a garbage token then meets the policy's
//! `default allow := false` instead of turning the check into an evaluation error (which Envoy's
//! `failure_mode_allow` would let through). regorus would otherwise abort the whole evaluation on
//! an extension error. The error is logged at debug level.

mod crypto;
mod jwt;
mod jwt_cache;
mod jwt_keys;
mod jwt_sign;
pub mod keysets;
pub mod passport;
pub mod remote;
pub mod scope;
mod x509;

use std::collections::HashMap;
use std::sync::OnceLock;

use regorus::{Engine, Value};

pub use jwt::JwtError;
pub use jwt_cache::{
    jwt_cache_stats, jwt_thread_cache_stats, JwtCacheStats, JwtThreadCacheStats,
    KEYSET_CACHE_ENTRIES, TOKEN_CACHE_ENTRIES,
};

/// One builtin: its name in Rego, how many arguments it takes, and the function both evaluators
/// call. An `Err` makes the call undefined (see the module docs).
pub struct Builtin {
    /// Dotted name, e.g. `io.jwt.decode_verify`.
    pub name: &'static str,
    /// Number of arguments.
    pub arity: usize,
    /// The implementation; `args.len() == arity` is checked before it is called.
    pub call: fn(&[Value]) -> anyhow::Result<Value>,
}

/// Every builtin Regent adds, by family.
pub fn all() -> impl Iterator<Item = &'static Builtin> {
    jwt::BUILTINS
        .iter()
        .chain(jwt_sign::BUILTINS.iter())
        .chain(crypto::BUILTINS.iter())
        .chain(x509::BUILTINS.iter())
        .chain(keysets::BUILTINS.iter())
        .chain(passport::BUILTINS.iter())
        .chain(remote::BUILTINS.iter())
}

/// Names of every builtin Regent adds, for callers that pick an evaluator per policy.
pub fn names() -> impl Iterator<Item = &'static str> {
    all().map(|b| b.name)
}

/// `(name, arity)` of every builtin, as regorus's VM compiler registers host-await calls.
pub fn host_await_table() -> Vec<(&'static str, usize)> {
    all().map(|b| (b.name, b.arity)).collect()
}

fn by_name() -> &'static HashMap<&'static str, &'static Builtin> {
    static TABLE: OnceLock<HashMap<&'static str, &'static Builtin>> = OnceLock::new();
    TABLE.get_or_init(|| all().map(|b| (b.name, b)).collect())
}

/// The builtin called `name`, if Regent provides it.
pub fn lookup(name: &str) -> Option<&'static Builtin> {
    by_name().get(name).copied()
}

/// Calls builtin `name` with `args` as both evaluators do: a wrong argument count, an unknown
/// name or an error from the builtin gives `Undefined` (logged at debug level).
pub fn call(name: &str, args: &[Value]) -> Value {
    let Some(builtin) = lookup(name) else {
        tracing::debug!(builtin = name, "unknown builtin; result is undefined");
        return Value::Undefined;
    };
    invoke(builtin, args)
}

fn invoke(builtin: &Builtin, args: &[Value]) -> Value {
    if args.len() != builtin.arity {
        tracing::debug!(
            builtin = builtin.name,
            expected = builtin.arity,
            got = args.len(),
            "wrong number of arguments; result is undefined"
        );
        return Value::Undefined;
    }
    match (builtin.call)(args) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(builtin = builtin.name, error = %e, "builtin error; result is undefined");
            Value::Undefined
        }
    }
}

/// Adds every builtin to `engine` as an interpreter extension.
pub fn register(engine: &mut Engine) -> anyhow::Result<()> {
    for builtin in all() {
        engine.add_extension(
            builtin.name.to_string(),
            u8::try_from(builtin.arity)?,
            Box::new(move |args: Vec<Value>| Ok(invoke(builtin, &args))),
        )?;
    }
    Ok(())
}

/// The string operand `what` of builtin `name`.
pub(crate) fn string_arg<'a>(v: &'a Value, name: &str, what: &str) -> anyhow::Result<&'a str> {
    match v {
        Value::String(s) => Ok(s),
        _ => anyhow::bail!("{name}: operand {what} must be a string"),
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let mut seen = std::collections::BTreeSet::new();
        for b in all() {
            assert!(seen.insert(b.name), "{} listed twice", b.name);
            assert!(std::ptr::eq(lookup(b.name).unwrap(), b));
        }
        assert!(lookup("io.jwt.decode").is_some());
        assert!(lookup("no.such.builtin").is_none());
    }

    #[test]
    fn wrong_arity_and_unknown_names_are_undefined() {
        assert_eq!(call("io.jwt.decode", &[]), Value::Undefined);
        assert_eq!(call("no.such.builtin", &[Value::Null]), Value::Undefined);
    }
}
