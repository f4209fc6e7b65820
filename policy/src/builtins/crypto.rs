//! `crypto.md5`, `crypto.sha1`, `crypto.sha256`, `crypto.hmac.*` with OPA's semantics.
//!
//! - The digests hash the UTF-8 bytes of their string operand and return lowercase hex.
//! - `crypto.hmac.<hash>(x, key)` is HMAC-`<hash>` keyed with the UTF-8 bytes of `key` over the
//!   bytes of `x`, as lowercase hex.
//! - `crypto.hmac.equal(mac1, mac2)` compares the two strings' bytes in constant time (strings
//!   of different lengths are unequal); it does not decode hex, as OPA does not.
//! - A non-string operand is an error (the call is undefined).

use hmac::{Mac, SimpleHmac};
use regorus::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use super::{string_arg, Builtin};

macro_rules! digest_builtin {
    ($name:literal, $hash:ty) => {
        Builtin {
            name: $name,
            arity: 1,
            call: |args| {
                let s = string_arg(&args[0], $name, "x")?;
                Ok(Value::from(hex::encode(<$hash>::digest(s.as_bytes()))))
            },
        }
    };
}

macro_rules! hmac_builtin {
    ($name:literal, $hash:ty) => {
        Builtin {
            name: $name,
            arity: 2,
            call: |args| {
                let x = string_arg(&args[0], $name, "x")?;
                let key = string_arg(&args[1], $name, "key")?;
                Ok(Value::from(hmac_hex::<$hash>(
                    key.as_bytes(),
                    x.as_bytes(),
                )?))
            },
        }
    };
}

/// The digest and HMAC builtins.
pub(crate) static BUILTINS: [Builtin; 8] = [
    digest_builtin!("crypto.md5", md5::Md5),
    digest_builtin!("crypto.sha1", Sha1),
    digest_builtin!("crypto.sha256", Sha256),
    hmac_builtin!("crypto.hmac.md5", md5::Md5),
    hmac_builtin!("crypto.hmac.sha1", Sha1),
    hmac_builtin!("crypto.hmac.sha256", Sha256),
    hmac_builtin!("crypto.hmac.sha512", Sha512),
    Builtin {
        name: "crypto.hmac.equal",
        arity: 2,
        call: |args| {
            let a = string_arg(&args[0], "crypto.hmac.equal", "mac1")?;
            let b = string_arg(&args[1], "crypto.hmac.equal", "mac2")?;
            Ok(Value::Bool(bool::from(a.as_bytes().ct_eq(b.as_bytes()))))
        },
    },
];

/// HMAC of `msg` keyed with `key` (any length: HMAC hashes long keys), as lowercase hex.
fn hmac_hex<D>(key: &[u8], msg: &[u8]) -> anyhow::Result<String>
where
    D: Digest + hmac::digest::core_api::BlockSizeUser,
{
    let mut mac = <SimpleHmac<D> as hmac::digest::KeyInit>::new_from_slice(key)
        .map_err(|e| anyhow::anyhow!("HMAC key: {e}"))?;
    mac.update(msg);
    Ok(hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &[&str]) -> Value {
        let args: Vec<Value> = args.iter().map(|s| Value::from(*s)).collect();
        super::super::call(name, &args)
    }

    #[test]
    fn digests_of_known_strings() {
        assert_eq!(
            call("crypto.md5", &[""]),
            Value::from("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(
            call("crypto.sha1", &["abc"]),
            Value::from("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert_eq!(
            call("crypto.sha256", &["abc"]),
            Value::from("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
    }

    #[test]
    fn non_strings_are_undefined() {
        assert_eq!(
            super::super::call("crypto.sha256", &[Value::from(1u64)]),
            Value::Undefined
        );
        assert_eq!(
            super::super::call("crypto.hmac.equal", &[Value::from("a"), Value::Null]),
            Value::Undefined
        );
    }

    #[test]
    fn hmac_equal_compares_bytes() {
        assert_eq!(
            call("crypto.hmac.equal", &["abc", "abc"]),
            Value::Bool(true)
        );
        assert_eq!(
            call("crypto.hmac.equal", &["abc", "abd"]),
            Value::Bool(false)
        );
        assert_eq!(
            call("crypto.hmac.equal", &["abc", "abcd"]),
            Value::Bool(false)
        );
        assert_eq!(call("crypto.hmac.equal", &["", ""]), Value::Bool(true));
        // Not hex-decoded: different case is a different MAC string.
        assert_eq!(call("crypto.hmac.equal", &["AB", "ab"]), Value::Bool(false));
    }
}
