//! Builtins that regorus lacks and OPA-Envoy policies use, registered as regorus extensions.
//!
//! regorus extensions run in its interpreter only (not in the RVM), so a policy that calls any of
//! these must be evaluated by the interpreter.
//!
//! Errors (a malformed token, an unusable key, bad constraints) make the call *undefined*, which is
//! what OPA does outside strict mode: a client sending a garbage token then meets the policy's
//! `default allow := false` instead of turning the check into an evaluation error (which Envoy's
//! `failure_mode_allow` would let through). regorus would otherwise abort the whole evaluation on
//! an extension error. The error is logged at debug level.

mod jwt;
mod jwt_keys;

use regorus::{Engine, Value};

pub use jwt::JwtError;

/// Names of every builtin [`register`] adds, for callers that pick an evaluator per policy.
pub const BUILTIN_NAMES: &[&str] = &[
    "io.jwt.decode",
    "io.jwt.decode_verify",
    "io.jwt.verify_rs256",
    "io.jwt.verify_rs384",
    "io.jwt.verify_rs512",
    "io.jwt.verify_ps256",
    "io.jwt.verify_ps384",
    "io.jwt.verify_ps512",
    "io.jwt.verify_es256",
    "io.jwt.verify_es384",
    "io.jwt.verify_es512",
    "io.jwt.verify_eddsa",
    "io.jwt.verify_hs256",
    "io.jwt.verify_hs384",
    "io.jwt.verify_hs512",
];

/// Adds OPA's `io.jwt.*` builtins to `engine`: `io.jwt.decode`, `io.jwt.decode_verify` and
/// `io.jwt.verify_{rs,ps,es}{256,384,512}`, `verify_eddsa`, `verify_hs{256,384,512}`, with OPA's
/// semantics (see `docs/input-and-decisions.md`).
pub fn register(engine: &mut Engine) -> anyhow::Result<()> {
    engine.add_extension(
        "io.jwt.decode".to_string(),
        1,
        Box::new(|args: Vec<Value>| {
            undefined_on_error("io.jwt.decode", || {
                let [token] = args_n::<1>(args, "io.jwt.decode")?;
                Ok(jwt::decode(string_arg(&token, "io.jwt.decode", "jwt")?)?)
            })
        }),
    )?;
    engine.add_extension(
        "io.jwt.decode_verify".to_string(),
        2,
        Box::new(|args: Vec<Value>| {
            undefined_on_error("io.jwt.decode_verify", || {
                let [token, constraints] = args_n::<2>(args, "io.jwt.decode_verify")?;
                let token = string_arg(&token, "io.jwt.decode_verify", "jwt")?;
                Ok(jwt::decode_verify(token, &constraints, now_ns())?)
            })
        }),
    )?;
    for (alg, name) in jwt::VERIFY_ALGORITHMS.into_iter().zip(&BUILTIN_NAMES[2..]) {
        // The closure captures only `&'static` data: regorus may clone it on a call.
        engine.add_extension(
            name.to_string(),
            2,
            Box::new(move |args: Vec<Value>| {
                undefined_on_error(name, || {
                    let [token, key] = args_n::<2>(args, name)?;
                    let token = string_arg(&token, name, "jwt")?;
                    let key = string_arg(&key, name, "certificate")?;
                    Ok(Value::Bool(jwt::verify(token, key, alg)?))
                })
            }),
        )?;
    }
    Ok(())
}

fn undefined_on_error(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<Value>,
) -> anyhow::Result<Value> {
    match f() {
        Ok(v) => Ok(v),
        Err(e) => {
            tracing::debug!(builtin = name, error = %e, "builtin error; result is undefined");
            Ok(Value::Undefined)
        }
    }
}

fn args_n<const N: usize>(args: Vec<Value>, name: &str) -> anyhow::Result<[Value; N]> {
    let got = args.len();
    args.try_into()
        .map_err(|_| anyhow::anyhow!("{name}: expected {N} arguments, got {got}"))
}

fn string_arg<'a>(v: &'a Value, name: &str, what: &str) -> anyhow::Result<&'a str> {
    match v {
        Value::String(s) => Ok(s),
        _ => anyhow::bail!("{name}: operand {what} must be a string"),
    }
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_builtin_names_line_up_with_algorithms() {
        assert_eq!(jwt::VERIFY_ALGORITHMS.len(), BUILTIN_NAMES.len() - 2);
        for (alg, name) in jwt::VERIFY_ALGORITHMS.iter().zip(&BUILTIN_NAMES[2..]) {
            assert_eq!(
                *name,
                format!("io.jwt.verify_{}", alg.name().to_ascii_lowercase())
            );
        }
    }
}
