//! The io.jwt.* builtins, called from Rego through a real regorus Engine (and directly, for the
//! caches). Tokens are signed here with ring and the test-only keys in
//! sidecar/tests/fixtures/jwt/ (shared with the sidecar's server tests).

use base64::Engine as _;
use regent_policy::builtins::{self, jwt_thread_cache_stats, JwtCacheStats};
use regorus::{Engine, Value};
use ring::rand::SystemRandom;
use ring::signature as rsig;
use serde_json::{json, Value as Json};

const POLICY: &str = r#"
package t

decoded := io.jwt.decode(input.token)

decode_verify := io.jwt.decode_verify(input.token, input.constraints)

default allow := false

allow if {
    [true, _, _] = io.jwt.decode_verify(input.token, input.constraints)
}

rs256 := io.jwt.verify_rs256(input.token, input.cert)
rs384 := io.jwt.verify_rs384(input.token, input.cert)
rs512 := io.jwt.verify_rs512(input.token, input.cert)
ps256 := io.jwt.verify_ps256(input.token, input.cert)
ps384 := io.jwt.verify_ps384(input.token, input.cert)
ps512 := io.jwt.verify_ps512(input.token, input.cert)
es256 := io.jwt.verify_es256(input.token, input.cert)
es384 := io.jwt.verify_es384(input.token, input.cert)
es512 := io.jwt.verify_es512(input.token, input.cert)
eddsa := io.jwt.verify_eddsa(input.token, input.cert)
hs256 := io.jwt.verify_hs256(input.token, input.cert)
"#;

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sidecar/tests/fixtures/jwt")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn engine() -> Engine {
    let mut e = Engine::new();
    regent_policy::builtins::register(&mut e).expect("register");
    e.add_policy("t.rego".into(), POLICY.into())
        .expect("policy");
    e
}

fn eval(rule: &str, input: Json) -> anyhow::Result<Value> {
    let mut e = engine();
    e.set_input(Value::from(input));
    e.eval_rule(format!("data.t.{rule}"))
}

fn to_json(v: &Value) -> Json {
    serde_json::to_value(v).expect("serializes")
}

const NOW: i64 = 1_700_000_000;

fn claims() -> Json {
    json!({"sub": "alice", "iss": "https://issuer.example", "aud": "orders",
           "exp": NOW + 3600, "nbf": NOW - 60})
}

/// The JWS algorithms the tests sign with.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq)]
enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    fn name(self) -> String {
        format!("{self:?}")
    }
}

/// `header.payload` of a token, as jsonwebtoken wrote it (`typ`, `alg`, `kid` when given).
fn signing_input(alg: &str, kid: Option<&str>, claims: &Json) -> String {
    let mut header = json!({"typ": "JWT", "alg": alg});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// The JWS signature of `input` by `key`: a PKCS#8 PEM private key, or an HMAC secret's bytes.
fn signature(alg: Algorithm, key: &str, input: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    let der = || pem::parse(key).expect("test key PEM").into_contents();
    let rsa = |padding: &'static dyn rsig::RsaEncoding| {
        let kp = rsig::RsaKeyPair::from_pkcs8(&der()).expect("RSA test key");
        let mut sig = vec![0; kp.public().modulus_len()];
        kp.sign(padding, &rng, input, &mut sig).expect("signs");
        sig
    };
    let ecdsa = |a: &'static rsig::EcdsaSigningAlgorithm| {
        let kp = rsig::EcdsaKeyPair::from_pkcs8(a, &der(), &rng).expect("EC test key");
        kp.sign(&rng, input).expect("signs").as_ref().to_vec()
    };
    let hmac = |a| {
        ring::hmac::sign(&ring::hmac::Key::new(a, key.as_bytes()), input)
            .as_ref()
            .to_vec()
    };
    match alg {
        Algorithm::HS256 => hmac(ring::hmac::HMAC_SHA256),
        Algorithm::HS384 => hmac(ring::hmac::HMAC_SHA384),
        Algorithm::HS512 => hmac(ring::hmac::HMAC_SHA512),
        Algorithm::RS256 => rsa(&rsig::RSA_PKCS1_SHA256),
        Algorithm::RS384 => rsa(&rsig::RSA_PKCS1_SHA384),
        Algorithm::RS512 => rsa(&rsig::RSA_PKCS1_SHA512),
        Algorithm::PS256 => rsa(&rsig::RSA_PSS_SHA256),
        Algorithm::PS384 => rsa(&rsig::RSA_PSS_SHA384),
        Algorithm::PS512 => rsa(&rsig::RSA_PSS_SHA512),
        Algorithm::ES256 => ecdsa(&rsig::ECDSA_P256_SHA256_FIXED_SIGNING),
        Algorithm::ES384 => ecdsa(&rsig::ECDSA_P384_SHA384_FIXED_SIGNING),
        Algorithm::EdDSA => rsig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der())
            .expect("Ed25519 test key")
            .sign(input)
            .as_ref()
            .to_vec(),
    }
}

/// A token signed with the key in fixture `key_file` (for HMAC: the file's bytes as the secret).
fn sign(alg: Algorithm, key_file: &str, kid: Option<&str>, claims: &Json) -> String {
    sign_with(alg, &fixture(key_file), kid, claims)
}

/// A token signed with `key` (PEM private key, or HMAC secret).
fn sign_with(alg: Algorithm, key: &str, kid: Option<&str>, claims: &Json) -> String {
    let input = signing_input(&alg.name(), kid, claims);
    let sig = signature(alg, key, input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn sign_es512(claims: &Json) -> String {
    use p521::ecdsa::signature::Signer as _;
    use p521::pkcs8::DecodePrivateKey as _;
    let secret = p521::SecretKey::from_pkcs8_pem(&fixture("ec521_private.pem")).expect("key");
    let signing = p521::ecdsa::SigningKey::from_slice(&secret.to_bytes()).expect("signing key");
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"ES512","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    );
    let sig: p521::ecdsa::Signature = signing.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

fn constraints_for(cert: &str) -> Json {
    json!({"cert": cert, "iss": "https://issuer.example", "aud": "orders",
           "time": NOW as f64 * 1e9})
}

fn decode_verify(token: &str, constraints: Json) -> Json {
    to_json(
        &eval(
            "decode_verify",
            json!({"token": token, "constraints": constraints}),
        )
        .expect("evaluates"),
    )
}

fn is_valid(token: &str, constraints: Json) -> bool {
    decode_verify(token, constraints)[0] == json!(true)
}

#[test]
fn decode_returns_header_payload_and_hex_signature() {
    let token = sign(
        Algorithm::HS256,
        "README.md",
        None,
        &json!({"sub": "bob", "n": 1}),
    );
    let v = to_json(&eval("decoded", json!({"token": token})).expect("evaluates"));
    assert_eq!(v[0], json!({"alg": "HS256", "typ": "JWT"}));
    assert_eq!(v[1], json!({"sub": "bob", "n": 1}));
    let sig_b64 = token.rsplit('.').next().expect("3 parts");
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig_b64)
        .expect("b64");
    assert_eq!(v[2], json!(hex::encode(sig)));
}

#[test]
fn malformed_tokens_are_builtin_errors() {
    for bad in [
        "garbage",
        "a.b",
        "a.b.c.d",
        "!!!.e30.",
        "e30.!!!.",
        "WzFd.e30.",
    ] {
        for rule in ["decoded", "decode_verify", "rs256"] {
            let r = eval(
                rule,
                json!({"token": bad, "cert": fixture("rsa_public.pem"),
                       "constraints": constraints_for(&fixture("rsa_public.pem"))}),
            );
            // As in OPA outside strict mode, a builtin error makes the call undefined.
            match r {
                Ok(Value::Undefined) => {}
                other => panic!("{rule}({bad}) gave {other:?}"),
            }
        }
    }
}

#[test]
fn decode_verify_accepts_a_good_token_for_each_algorithm() {
    let rsa = fixture("rsa_public.pem");
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
    ] {
        let token = sign(alg, "rsa_private.pem", None, &claims());
        let v = decode_verify(&token, constraints_for(&rsa));
        assert_eq!(v[0], json!(true), "{alg:?}");
        assert_eq!(v[2], claims(), "{alg:?}");
    }
    let es256 = sign(Algorithm::ES256, "ec256_private.pem", None, &claims());
    assert!(is_valid(
        &es256,
        constraints_for(&fixture("ec256_public.pem"))
    ));
    let es384 = sign(Algorithm::ES384, "ec384_private.pem", None, &claims());
    assert!(is_valid(
        &es384,
        constraints_for(&fixture("ec384_public.pem"))
    ));
    let es512 = sign_es512(&claims());
    assert!(is_valid(
        &es512,
        constraints_for(&fixture("ec521_public.pem"))
    ));
    let ed = sign(Algorithm::EdDSA, "ed25519_private.pem", None, &claims());
    assert!(is_valid(
        &ed,
        constraints_for(&fixture("ed25519_public.pem"))
    ));
    // A certificate works as well as a bare public key.
    let rs = sign(Algorithm::RS256, "rsa_private.pem", None, &claims());
    assert!(is_valid(&rs, constraints_for(&fixture("rsa_cert.pem"))));
}

#[test]
fn decode_verify_with_hmac_secret() {
    let secret = "test-only-secret";
    let token = sign_with(Algorithm::HS256, secret, None, &claims());
    let mut c = constraints_for("");
    c.as_object_mut().expect("object").remove("cert");
    c["secret"] = json!(secret);
    assert!(is_valid(&token, c.clone()));
    c["secret"] = json!("wrong");
    assert!(!is_valid(&token, c));
}

#[test]
fn decode_verify_rejects_expired_not_yet_valid_wrong_iss_and_aud() {
    let rsa = fixture("rsa_public.pem");
    let with = |patch: Json| {
        let mut c = claims();
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        sign(Algorithm::RS256, "rsa_private.pem", None, &c)
    };
    let unverified = json!([false, {}, {}]);
    assert_eq!(
        decode_verify(&with(json!({"exp": NOW - 1})), constraints_for(&rsa)),
        unverified
    );
    assert_eq!(
        decode_verify(&with(json!({"exp": NOW})), constraints_for(&rsa)),
        unverified
    );
    assert_eq!(
        decode_verify(&with(json!({"nbf": NOW + 10})), constraints_for(&rsa)),
        unverified
    );
    assert_eq!(
        decode_verify(&with(json!({"iss": "https://evil"})), constraints_for(&rsa)),
        unverified
    );
    assert_eq!(
        decode_verify(&with(json!({"iss": null})), constraints_for(&rsa)),
        unverified
    );
    assert_eq!(
        decode_verify(&with(json!({"aud": "billing"})), constraints_for(&rsa)),
        unverified
    );
    // aud as a list: one match suffices.
    assert!(is_valid(
        &with(json!({"aud": ["billing", "orders"]})),
        constraints_for(&rsa)
    ));
    // Token has aud but constraints do not.
    let mut no_aud = constraints_for(&rsa);
    no_aud.as_object_mut().expect("object").remove("aud");
    assert!(!is_valid(&with(json!({})), no_aud.clone()));
    // Constraints have aud but the token does not.
    assert!(!is_valid(
        &with(json!({"aud": null})),
        constraints_for(&rsa)
    ));
    // Neither has aud.
    assert!(is_valid(&with(json!({"aud": null})), no_aud));
    // Default time is now: a token valid in 2023 has long expired.
    let mut no_time = constraints_for(&rsa);
    no_time.as_object_mut().expect("object").remove("time");
    assert!(!is_valid(&with(json!({})), no_time.clone()));
    assert!(is_valid(&with(json!({"exp": null, "nbf": null})), no_time));
    // `time` as an integer number of nanoseconds, as `time.now_ns()` returns it: far above 2^53.
    let mut int_time = constraints_for(&rsa);
    int_time["time"] = json!(NOW * 1_000_000_000);
    assert!(is_valid(&with(json!({})), int_time.clone()));
    int_time["time"] = json!((NOW + 7200) * 1_000_000_000);
    assert!(!is_valid(&with(json!({})), int_time));
}

#[test]
fn pinned_alg_none_and_tampering_are_rejected() {
    let rsa = fixture("rsa_public.pem");
    let token = sign(Algorithm::RS256, "rsa_private.pem", None, &claims());
    let mut pinned = constraints_for(&rsa);
    pinned["alg"] = json!("RS256");
    assert!(is_valid(&token, pinned.clone()));
    pinned["alg"] = json!("PS256");
    assert!(!is_valid(&token, pinned));
    // A signature by another key.
    let other = sign(Algorithm::RS256, "rsa2_private.pem", None, &claims());
    assert!(!is_valid(&other, constraints_for(&rsa)));
    // alg none, with and without a signature.
    let payload = b64(claims().to_string().as_bytes());
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    for sig in ["", "AAAA"] {
        let none = format!("{none_header}.{payload}.{sig}");
        assert!(!is_valid(&none, constraints_for(&rsa)));
        let r = eval("rs256", json!({"token": none, "cert": rsa})).expect("evaluates");
        assert_eq!(r, Value::Bool(false));
    }
    // Unknown algorithm.
    let weird = format!("{}.{payload}.AAAA", b64(br#"{"alg":"XS999"}"#));
    assert!(!is_valid(&weird, constraints_for(&rsa)));
    // Tampered payload keeps the original signature.
    let parts: Vec<&str> = token.split('.').collect();
    let mut evil = claims();
    evil["sub"] = json!("mallory");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(evil.to_string().as_bytes()),
        parts[2]
    );
    assert!(!is_valid(&tampered, constraints_for(&rsa)));
    let r = eval("rs256", json!({"token": tampered, "cert": rsa})).expect("evaluates");
    assert_eq!(r, Value::Bool(false));
}

#[test]
fn verify_builtins_check_the_named_algorithm() {
    let cases: [(&str, String, String); 9] = [
        (
            "rs256",
            sign(Algorithm::RS256, "rsa_private.pem", None, &claims()),
            fixture("rsa_public.pem"),
        ),
        (
            "rs384",
            sign(Algorithm::RS384, "rsa_private.pem", None, &claims()),
            fixture("rsa_public.pem"),
        ),
        (
            "rs512",
            sign(Algorithm::RS512, "rsa_private.pem", None, &claims()),
            fixture("rsa_cert.pem"),
        ),
        (
            "ps256",
            sign(Algorithm::PS256, "rsa_private.pem", None, &claims()),
            fixture("rsa_public.pem"),
        ),
        (
            "ps512",
            sign(Algorithm::PS512, "rsa_private.pem", None, &claims()),
            fixture("rsa_public.pem"),
        ),
        (
            "es256",
            sign(Algorithm::ES256, "ec256_private.pem", None, &claims()),
            fixture("ec256_public.pem"),
        ),
        (
            "es384",
            sign(Algorithm::ES384, "ec384_private.pem", None, &claims()),
            fixture("ec384_public.pem"),
        ),
        ("es512", sign_es512(&claims()), fixture("ec521_public.pem")),
        (
            "eddsa",
            sign(Algorithm::EdDSA, "ed25519_private.pem", None, &claims()),
            fixture("ed25519_public.pem"),
        ),
    ];
    for (rule, token, cert) in &cases {
        let ok = eval(rule, json!({"token": token, "cert": cert})).expect("evaluates");
        assert_eq!(ok, Value::Bool(true), "{rule}");
        // The same token checked as another algorithm does not verify.
        let other = if *rule == "rs256" { "ps256" } else { "rs256" };
        let no = eval(other, json!({"token": token, "cert": cert})).expect("evaluates");
        assert_eq!(no, Value::Bool(false), "{rule} as {other}");
    }
    let hs = sign(Algorithm::HS256, "README.md", None, &claims());
    let ok = eval("hs256", json!({"token": hs, "cert": fixture("README.md")})).expect("evaluates");
    assert_eq!(ok, Value::Bool(true));
}

fn rsa_jwk(pem_file: &str, kid: &str) -> Json {
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let key = rsa::RsaPublicKey::from_public_key_pem(&fixture(pem_file)).expect("rsa key");
    json!({"kty": "RSA", "kid": kid, "use": "sig",
           "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())})
}

#[test]
fn jwks_selects_the_key_by_kid() {
    let jwks = json!({"keys": [rsa_jwk("rsa2_public.pem", "k2"), rsa_jwk("rsa_public.pem", "k1")]})
        .to_string();
    let k1 = sign(Algorithm::RS256, "rsa_private.pem", Some("k1"), &claims());
    assert!(is_valid(&k1, constraints_for(&jwks)));
    // kid naming the wrong key: only that key is tried, so the signature fails.
    let wrong_kid = sign(Algorithm::RS256, "rsa_private.pem", Some("k2"), &claims());
    assert!(!is_valid(&wrong_kid, constraints_for(&jwks)));
    // No kid: every RSA key is tried.
    let no_kid = sign(Algorithm::RS256, "rsa_private.pem", None, &claims());
    assert!(is_valid(&no_kid, constraints_for(&jwks)));
    // Unknown kid: falls back to every key, as OPA does.
    let unknown = sign(Algorithm::RS256, "rsa_private.pem", Some("k9"), &claims());
    assert!(is_valid(&unknown, constraints_for(&jwks)));
    // A single JWK (not a set) works with verify_rs256 too.
    let single = rsa_jwk("rsa_public.pem", "k1").to_string();
    let r = eval("rs256", json!({"token": k1, "cert": single})).expect("evaluates");
    assert_eq!(r, Value::Bool(true));
    // A JWK pinned to another alg is not used.
    let mut pinned = rsa_jwk("rsa_public.pem", "k1");
    pinned["alg"] = json!("PS256");
    assert!(!is_valid(
        &k1,
        constraints_for(&json!({"keys": [pinned]}).to_string())
    ));
}

#[test]
fn bad_keys_and_constraints_are_errors() {
    let token = sign(Algorithm::RS256, "rsa_private.pem", None, &claims());
    let bad_constraints = [
        json!({"cert": "not a key"}),
        json!({"cert": fixture("rsa_public.pem"), "secret": "x"}),
        json!({"iss": "x"}),
        json!({"cert": fixture("rsa_public.pem"), "color": "red"}),
        json!({"cert": fixture("rsa_public.pem"), "time": "now"}),
    ];
    for c in bad_constraints {
        match eval("decode_verify", json!({"token": token, "constraints": c})) {
            Ok(Value::Undefined) => {}
            other => panic!("{c} gave {other:?}"),
        }
    }
    match eval(
        "rs256",
        json!({"token": token, "cert": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}),
    ) {
        Ok(Value::Undefined) => {}
        other => panic!("bad PEM gave {other:?}"),
    }
}

#[test]
fn garbage_token_denies_instead_of_failing_evaluation() {
    let rsa = fixture("rsa_public.pem");
    let good = sign(Algorithm::RS256, "rsa_private.pem", None, &claims());
    let allow = |token: &str| {
        eval(
            "allow",
            json!({"token": token, "constraints": constraints_for(&rsa)}),
        )
        .expect("evaluation never fails on a bad token")
    };
    assert_eq!(allow(&good), Value::Bool(true));
    assert_eq!(allow("garbage"), Value::Bool(false));
    assert_eq!(allow("a.b.c"), Value::Bool(false));
}

/// The public key bytes at the end of a PEM SPKI (EC: 04||x||y, Ed25519: the 32-byte key).
fn spki_tail(pem_file: &str, len: usize) -> Vec<u8> {
    let der = pem::parse(fixture(pem_file)).expect("pem").into_contents();
    der[der.len() - len..].to_vec()
}

fn ec_jwk(pem_file: &str, crv: &str, coord_len: usize) -> Json {
    let point = spki_tail(pem_file, 1 + 2 * coord_len);
    assert_eq!(point[0], 4, "uncompressed point");
    json!({"kty": "EC", "crv": crv,
           "x": b64(&point[1..1 + coord_len]), "y": b64(&point[1 + coord_len..])})
}

#[test]
fn jwks_with_mixed_key_types_uses_the_keys_that_fit_the_algorithm() {
    let ed =
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&spki_tail("ed25519_public.pem", 32))});
    let jwks = json!({"keys": [
        ed,
        ec_jwk("ec256_public.pem", "P-256", 32),
        ec_jwk("ec384_public.pem", "P-384", 48),
        ec_jwk("ec521_public.pem", "P-521", 66),
        rsa_jwk("rsa_public.pem", "r1"),
    ]})
    .to_string();
    let tokens = [
        sign(Algorithm::EdDSA, "ed25519_private.pem", None, &claims()),
        sign(Algorithm::ES256, "ec256_private.pem", None, &claims()),
        sign(Algorithm::ES384, "ec384_private.pem", None, &claims()),
        sign_es512(&claims()),
        sign(Algorithm::RS256, "rsa_private.pem", None, &claims()),
        sign(Algorithm::PS384, "rsa_private.pem", None, &claims()),
    ];
    for token in &tokens {
        assert!(is_valid(token, constraints_for(&jwks)), "{token}");
    }
    let es512 = eval("es512", json!({"token": tokens[3], "cert": jwks})).expect("evaluates");
    assert_eq!(es512, Value::Bool(true));
    // The same keys, but the token was signed by a key that is not in the set.
    let stranger = sign(Algorithm::RS256, "rsa2_private.pem", None, &claims());
    assert!(!is_valid(&stranger, constraints_for(&jwks)));
}

// ---- Caches, RSA-PSS, ES384, certificates, JWKS ----------------------------------------------

/// Calls builtin `name` directly, as the VM's host-await path does, on this thread.
fn call(name: &str, args: &[Json]) -> Json {
    let args: Vec<Value> = args.iter().cloned().map(Value::from).collect();
    let v = builtins::call(name, &args);
    if v == Value::Undefined {
        return Json::String("<undefined>".into());
    }
    to_json(&v)
}

fn dv(token: &str, constraints: Json) -> Json {
    call("io.jwt.decode_verify", &[json!(token), constraints])
}

/// This thread's cache counts now minus `before`.
fn counts_since(before: JwtCacheStats) -> JwtCacheStats {
    let now = jwt_thread_cache_stats().counts;
    JwtCacheStats {
        token_hits: now.token_hits - before.token_hits,
        token_misses: now.token_misses - before.token_misses,
        keyset_hits: now.keyset_hits - before.keyset_hits,
        keyset_misses: now.keyset_misses - before.keyset_misses,
    }
}

fn counts() -> JwtCacheStats {
    jwt_thread_cache_stats().counts
}

/// Claims unique to one test, so tests sharing a thread (`--test-threads=1`) share no tokens.
fn claims_for(test: &str) -> Json {
    let mut c = claims();
    c["jti"] = json!(test);
    c
}

fn stats(
    token_hits: u64,
    token_misses: u64,
    keyset_hits: u64,
    keyset_misses: u64,
) -> JwtCacheStats {
    JwtCacheStats {
        token_hits,
        token_misses,
        keyset_hits,
        keyset_misses,
    }
}

#[test]
fn cache_a_second_call_with_the_same_token_hits() {
    // A key string no other test uses, so the key set is parsed here first.
    let cert = format!("{}\n\n", fixture("rsa_public.pem"));
    let token = sign(
        Algorithm::RS256,
        "rsa_private.pem",
        None,
        &claims_for("second-call"),
    );
    let before = counts();
    let first = dv(&token, constraints_for(&cert));
    assert_eq!(first[0], json!(true));
    assert_eq!(first[2], claims_for("second-call"));
    assert_eq!(counts_since(before), stats(0, 1, 0, 1));
    let second = dv(&token, constraints_for(&cert));
    assert_eq!(second, first);
    assert_eq!(counts_since(before), stats(1, 1, 1, 1));
    // Through Rego (the interpreter calls the builtin on this thread) it hits as well.
    assert!(is_valid(&token, constraints_for(&cert)));
    assert_eq!(counts_since(before), stats(2, 1, 2, 1));
    // The process-wide counters include this thread's.
    let global = builtins::jwt_cache_stats();
    assert!(global.token_hits >= 2 && global.token_misses >= 1);
    assert!(global.keyset_hits >= 2 && global.keyset_misses >= 1);
}

#[test]
fn cache_checks_time_issuer_audience_and_alg_on_every_call() {
    let rsa = fixture("rsa_public.pem");
    let mut c = claims_for("expiry");
    c["exp"] = json!(NOW + 10);
    let token = sign(Algorithm::RS256, "rsa_private.pem", None, &c);
    let at = |t: i64| {
        let mut k = constraints_for(&rsa);
        k["time"] = json!(t as f64 * 1e9);
        k
    };
    assert_eq!(dv(&token, at(NOW))[0], json!(true));
    let before = counts();
    let unverified = json!([false, {}, {}]);
    // Cached while valid, now past exp: rejected, from the cache.
    assert_eq!(dv(&token, at(NOW + 10)), unverified);
    assert_eq!(dv(&token, at(NOW + 3600)), unverified);
    // Before nbf.
    assert_eq!(dv(&token, at(NOW - 3600)), unverified);
    // Other issuer, audience or pinned algorithm.
    let mut k = at(NOW);
    k["iss"] = json!("https://other.example");
    assert_eq!(dv(&token, k), unverified);
    let mut k = at(NOW);
    k["aud"] = json!("billing");
    assert_eq!(dv(&token, k), unverified);
    let mut k = at(NOW);
    k["alg"] = json!("PS256");
    assert_eq!(dv(&token, k), unverified);
    let mut k = at(NOW);
    k["alg"] = json!("RS256");
    assert_eq!(dv(&token, k)[0], json!(true));
    assert_eq!(dv(&token, at(NOW))[0], json!(true));
    let d = counts_since(before);
    assert_eq!((d.token_hits, d.token_misses), (8, 0));
    // A claim of the wrong type is still an error on a hit.
    let mut bad = claims_for("exp-type");
    bad["exp"] = json!("tomorrow");
    let bad = sign(Algorithm::RS256, "rsa_private.pem", None, &bad);
    for _ in 0..2 {
        assert_eq!(dv(&bad, at(NOW)), json!("<undefined>"));
    }
}

#[test]
fn cache_a_different_key_set_misses_and_checks_that_key() {
    let token = sign(
        Algorithm::RS256,
        "rsa_private.pem",
        None,
        &claims_for("other-keys"),
    );
    let right = fixture("rsa_public.pem");
    let wrong = fixture("rsa2_public.pem");
    assert_eq!(dv(&token, constraints_for(&right))[0], json!(true));
    let before = counts();
    assert_eq!(dv(&token, constraints_for(&wrong)), json!([false, {}, {}]));
    assert_eq!(counts_since(before).token_misses, 1);
    // Both outcomes are now cached, each under its own key set.
    assert_eq!(dv(&token, constraints_for(&wrong)), json!([false, {}, {}]));
    assert_eq!(dv(&token, constraints_for(&right))[0], json!(true));
    assert_eq!(counts_since(before), stats(2, 1, 2, 1));
    // The same keys in a string that differs by one byte are another key set.
    let mut both = format!("{right}{wrong}");
    assert_eq!(dv(&token, constraints_for(&both))[0], json!(true));
    both.push('\n');
    assert_eq!(dv(&token, constraints_for(&both))[0], json!(true));
    assert_eq!(counts_since(before), stats(2, 3, 2, 3));
    // The same string as an HMAC secret is not the same key set as it is as a cert.
    let mut as_secret = constraints_for("");
    as_secret.as_object_mut().expect("object").remove("cert");
    as_secret["secret"] = json!(right);
    assert_eq!(dv(&token, as_secret), json!([false, {}, {}]));
    assert_eq!(counts_since(before), stats(2, 4, 2, 4));
}

#[test]
fn cache_never_makes_a_forged_token_verify() {
    let rsa = fixture("rsa_public.pem");
    let token = sign(
        Algorithm::RS256,
        "rsa_private.pem",
        None,
        &claims_for("forgery"),
    );
    assert_eq!(dv(&token, constraints_for(&rsa))[0], json!(true));
    let parts: Vec<&str> = token.split('.').collect();
    let mut evil = claims_for("forgery");
    evil["sub"] = json!("mallory");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(evil.to_string().as_bytes()),
        parts[2]
    );
    let before = counts();
    for _ in 0..3 {
        assert_eq!(dv(&forged, constraints_for(&rsa)), json!([false, {}, {}]));
        assert_eq!(
            call("io.jwt.verify_rs256", &[json!(forged), json!(rsa)]),
            json!(false)
        );
    }
    // Checked once per function, then the failure is cached.
    assert_eq!(counts_since(before), stats(4, 2, 6, 0));
    // alg none on a cached token's payload.
    let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), parts[1]);
    assert_eq!(dv(&none, constraints_for(&rsa)), json!([false, {}, {}]));
    // Padding on the signature is tolerated (as OPA does), but it is another token string.
    let padded = format!("{token}==");
    let before = counts();
    assert_eq!(dv(&padded, constraints_for(&rsa))[0], json!(true));
    assert_eq!(counts_since(before).token_misses, 1);
    // Malformed tokens are errors, every time.
    for _ in 0..2 {
        assert_eq!(dv("a.b.c", constraints_for(&rsa)), json!("<undefined>"));
    }
}

#[test]
fn cache_verify_functions_cache_per_algorithm() {
    let cert = fixture("rsa_public.pem");
    let token = sign(
        Algorithm::PS256,
        "rsa_private.pem",
        None,
        &claims_for("per-alg"),
    );
    let before = counts();
    assert_eq!(
        call("io.jwt.verify_ps256", &[json!(token), json!(cert)]),
        json!(true)
    );
    assert_eq!(
        call("io.jwt.verify_ps256", &[json!(token), json!(cert)]),
        json!(true)
    );
    assert_eq!(
        call("io.jwt.verify_rs256", &[json!(token), json!(cert)]),
        json!(false)
    );
    assert_eq!(
        call("io.jwt.verify_ps384", &[json!(token), json!(cert)]),
        json!(false)
    );
    assert_eq!(
        call("io.jwt.verify_rs256", &[json!(token), json!(cert)]),
        json!(false)
    );
    let d = counts_since(before);
    assert_eq!((d.token_hits, d.token_misses), (2, 3));
    // verify_hs256 takes the key string as a secret: never the RSA key.
    let hs = sign_with(Algorithm::HS256, &cert, None, &claims_for("per-alg"));
    assert_eq!(
        call("io.jwt.verify_hs256", &[json!(hs), json!(cert)]),
        json!(true)
    );
    assert_eq!(
        call("io.jwt.verify_rs256", &[json!(hs), json!(cert)]),
        json!(false)
    );
    assert_eq!(
        call("io.jwt.verify_hs512", &[json!(hs), json!(cert)]),
        json!(false)
    );
    let hs512 = sign_with(Algorithm::HS512, &cert, None, &claims_for("per-alg"));
    assert_eq!(
        call("io.jwt.verify_hs512", &[json!(hs512), json!(cert)]),
        json!(true)
    );
}

#[test]
fn cache_eviction_keeps_the_size_bound() {
    let secret = "eviction-test-secret";
    let tokens: Vec<String> = (0..builtins::TOKEN_CACHE_ENTRIES + 50)
        .map(|i| sign_with(Algorithm::HS256, secret, None, &json!({"i": i})))
        .collect();
    for t in &tokens {
        assert_eq!(
            call("io.jwt.verify_hs256", &[json!(t), json!(secret)]),
            json!(true)
        );
        assert!(jwt_thread_cache_stats().token_entries <= builtins::TOKEN_CACHE_ENTRIES);
    }
    assert_eq!(
        jwt_thread_cache_stats().token_entries,
        builtins::TOKEN_CACHE_ENTRIES
    );
    let before = counts();
    // The most recent token is still cached; the oldest was evicted and is checked again.
    let last = tokens.last().expect("tokens");
    assert_eq!(
        call("io.jwt.verify_hs256", &[json!(last), json!(secret)]),
        json!(true)
    );
    assert_eq!(
        call("io.jwt.verify_hs256", &[json!(tokens[0]), json!(secret)]),
        json!(true)
    );
    let d = counts_since(before);
    assert_eq!((d.token_hits, d.token_misses), (1, 1));
    // Key sets too.
    let secrets: Vec<String> = (0..builtins::KEYSET_CACHE_ENTRIES + 5)
        .map(|i| format!("secret-{i}"))
        .collect();
    for s in &secrets {
        let t = sign_with(Algorithm::HS384, s, None, &json!({}));
        assert_eq!(
            call("io.jwt.verify_hs384", &[json!(t), json!(s)]),
            json!(true)
        );
        assert!(jwt_thread_cache_stats().keyset_entries <= builtins::KEYSET_CACHE_ENTRIES);
    }
    let before = counts();
    let t = sign_with(Algorithm::HS384, &secrets[0], None, &json!({}));
    assert_eq!(
        call("io.jwt.verify_hs384", &[json!(t), json!(secrets[0])]),
        json!(true)
    );
    assert_eq!(counts_since(before).keyset_misses, 1);
}

#[test]
fn caches_are_per_thread() {
    let cert = fixture("ec256_public.pem");
    let token = sign(
        Algorithm::ES256,
        "ec256_private.pem",
        None,
        &claims_for("threads"),
    );
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (cert, token) = (cert.clone(), token.clone());
            std::thread::spawn(move || {
                let before = counts();
                for _ in 0..3 {
                    assert_eq!(dv(&token, constraints_for(&cert))[0], json!(true));
                }
                counts_since(before)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), stats(2, 1, 2, 1));
    }
}

#[test]
fn rsa_pss_tokens_verify_as_pss_only() {
    let pem = fixture("rsa_public.pem");
    let jwk = rsa_jwk("rsa_public.pem", "r1");
    for (alg, rule) in [
        (Algorithm::PS256, "ps256"),
        (Algorithm::PS384, "ps384"),
        (Algorithm::PS512, "ps512"),
    ] {
        let token = sign(alg, "rsa_private.pem", None, &claims_for("pss"));
        let f = format!("io.jwt.verify_{rule}");
        assert_eq!(call(&f, &[json!(token), json!(pem)]), json!(true), "{rule}");
        assert_eq!(
            call(&f, &[json!(token), json!(jwk.to_string())]),
            json!(true),
            "{rule}"
        );
        // PKCS#1 v1.5 with the same hash, and PSS with another hash, do not verify.
        let rs = f.replace("_ps", "_rs");
        assert_eq!(
            call(&rs, &[json!(token), json!(pem)]),
            json!(false),
            "{rule} as RS"
        );
        let other = if rule == "ps256" {
            "io.jwt.verify_ps512"
        } else {
            "io.jwt.verify_ps256"
        };
        assert_eq!(
            call(other, &[json!(token), json!(pem)]),
            json!(false),
            "{rule} as {other}"
        );
        assert_eq!(
            call(&f, &[json!(token), json!(fixture("rsa2_public.pem"))]),
            json!(false)
        );
        assert!(is_valid(&token, constraints_for(&pem)), "{rule}");
    }
    // A JWK limited to PS384 serves PS384 only.
    let mut pinned = rsa_jwk("rsa_public.pem", "r1");
    pinned["alg"] = json!("PS384");
    let set = json!({"keys": [pinned]}).to_string();
    let ps384 = sign(
        Algorithm::PS384,
        "rsa_private.pem",
        Some("r1"),
        &claims_for("pss"),
    );
    let ps256 = sign(
        Algorithm::PS256,
        "rsa_private.pem",
        Some("r1"),
        &claims_for("pss"),
    );
    assert!(is_valid(&ps384, constraints_for(&set)));
    assert!(!is_valid(&ps256, constraints_for(&set)));
}

#[test]
fn es384_with_pem_and_jwk_and_only_on_its_curve() {
    let token = sign(
        Algorithm::ES384,
        "ec384_private.pem",
        None,
        &claims_for("es384"),
    );
    let pem384 = fixture("ec384_public.pem");
    let jwk384 = ec_jwk("ec384_public.pem", "P-384", 48).to_string();
    let pem256 = fixture("ec256_public.pem");
    for cert in [&pem384, &jwk384] {
        assert_eq!(
            call("io.jwt.verify_es384", &[json!(token), json!(cert)]),
            json!(true)
        );
        assert_eq!(
            call("io.jwt.verify_es256", &[json!(token), json!(cert)]),
            json!(false)
        );
        assert_eq!(
            call("io.jwt.verify_es512", &[json!(token), json!(cert)]),
            json!(false)
        );
        assert!(is_valid(&token, constraints_for(cert)));
    }
    assert_eq!(
        call("io.jwt.verify_es384", &[json!(token), json!(pem256)]),
        json!(false)
    );
    assert!(!is_valid(&token, constraints_for(&pem256)));
    // An ES256 token against the P-384 key does not verify.
    let es256 = sign(
        Algorithm::ES256,
        "ec256_private.pem",
        None,
        &claims_for("es384"),
    );
    assert_eq!(
        call("io.jwt.verify_es256", &[json!(es256), json!(pem384)]),
        json!(false)
    );
    // JWS signatures are r||s; the same signature DER-encoded does not verify.
    let input = signing_input("ES384", None, &claims_for("es384"));
    let rng = SystemRandom::new();
    let der = pem::parse(fixture("ec384_private.pem"))
        .expect("pem")
        .into_contents();
    let kp = rsig::EcdsaKeyPair::from_pkcs8(&rsig::ECDSA_P384_SHA384_ASN1_SIGNING, &der, &rng)
        .expect("key");
    let asn1 = kp.sign(&rng, input.as_bytes()).expect("signs");
    let asn1_token = format!("{input}.{}", b64(asn1.as_ref()));
    assert_eq!(
        call("io.jwt.verify_es384", &[json!(asn1_token), json!(pem384)]),
        json!(false)
    );
    // A tampered signature does not verify.
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.rsplit('.').next().expect("sig"))
        .expect("b64");
    sig[10] ^= 1;
    let tampered = format!("{}.{}", &token[..token.rfind('.').expect("dot")], b64(&sig));
    assert_eq!(
        call("io.jwt.verify_es384", &[json!(tampered), json!(pem384)]),
        json!(false)
    );
}

#[test]
fn certificates_pkcs1_and_pem_bundles() {
    let cert = fixture("rsa_cert.pem");
    for (alg, f) in [
        (Algorithm::RS256, "io.jwt.verify_rs256"),
        (Algorithm::RS512, "io.jwt.verify_rs512"),
        (Algorithm::PS256, "io.jwt.verify_ps256"),
    ] {
        let token = sign(alg, "rsa_private.pem", None, &claims_for("cert"));
        assert_eq!(
            call(f, &[json!(token), json!(cert)]),
            json!(true),
            "{alg:?}"
        );
        assert!(is_valid(&token, constraints_for(&cert)), "{alg:?}");
    }
    // The certificate carries rsa_public's key: another key's token fails.
    let other = sign(
        Algorithm::RS256,
        "rsa2_private.pem",
        None,
        &claims_for("cert"),
    );
    assert_eq!(
        call("io.jwt.verify_rs256", &[json!(other), json!(cert)]),
        json!(false)
    );
    // PKCS#1 `RSA PUBLIC KEY`.
    let pkcs1 = {
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        use rsa::pkcs8::DecodePublicKey as _;
        rsa::RsaPublicKey::from_public_key_pem(&fixture("rsa_public.pem"))
            .expect("key")
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .expect("pkcs1")
    };
    assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
    let rs = sign(
        Algorithm::RS384,
        "rsa_private.pem",
        None,
        &claims_for("cert"),
    );
    assert_eq!(
        call("io.jwt.verify_rs384", &[json!(rs), json!(pkcs1)]),
        json!(true)
    );
    // Several blocks: every key in them is tried.
    let bundle = format!(
        "{}{}{}",
        fixture("rsa2_public.pem"),
        fixture("ec256_public.pem"),
        cert
    );
    let es = sign(
        Algorithm::ES256,
        "ec256_private.pem",
        None,
        &claims_for("cert"),
    );
    let ed = sign(
        Algorithm::EdDSA,
        "ed25519_private.pem",
        None,
        &claims_for("cert"),
    );
    assert!(is_valid(&rs, constraints_for(&bundle)));
    assert!(is_valid(&other, constraints_for(&bundle)));
    assert!(is_valid(&es, constraints_for(&bundle)));
    assert!(!is_valid(&ed, constraints_for(&bundle)));
    // A private key, a corrupt certificate or an unknown block is not a key (undefined).
    let corrupt = cert.replacen("MII", "MIA", 1);
    for bad in [
        fixture("rsa_private.pem"),
        corrupt,
        "-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n".into(),
    ] {
        assert_eq!(
            call("io.jwt.verify_rs256", &[json!(rs), json!(bad)]),
            json!("<undefined>")
        );
        assert_eq!(dv(&rs, constraints_for(&bad)), json!("<undefined>"));
    }
}

#[test]
fn jwks_kid_selection_and_key_types() {
    let mut es = ec_jwk("ec256_public.pem", "P-256", 32);
    es["kid"] = json!("e1");
    let jwks = json!({"keys": [
        rsa_jwk("rsa_public.pem", "k1"),
        rsa_jwk("rsa2_public.pem", "k2"),
        es,
        {"kty": "oct", "kid": "h1", "k": b64(b"jwks-hmac-secret")},
    ]})
    .to_string();
    let k1 = sign(
        Algorithm::RS256,
        "rsa_private.pem",
        Some("k1"),
        &claims_for("kid"),
    );
    let k2 = sign(
        Algorithm::RS256,
        "rsa2_private.pem",
        Some("k2"),
        &claims_for("kid"),
    );
    let e1 = sign(
        Algorithm::ES256,
        "ec256_private.pem",
        Some("e1"),
        &claims_for("kid"),
    );
    let h1 = sign_with(
        Algorithm::HS256,
        "jwks-hmac-secret",
        Some("h1"),
        &claims_for("kid"),
    );
    let before = counts();
    for t in [&k1, &k2, &e1, &h1] {
        assert!(is_valid(t, constraints_for(&jwks)), "{t}");
    }
    // One parse of the set serves every token.
    assert!(counts_since(before).keyset_misses <= 1);
    // kid naming another key of the right type: only that key is tried.
    let crossed = sign(
        Algorithm::RS256,
        "rsa_private.pem",
        Some("k2"),
        &claims_for("kid"),
    );
    assert!(!is_valid(&crossed, constraints_for(&jwks)));
    // kid naming the EC key for an RSA token: the EC key does not fit RS256.
    let wrong_type = sign(
        Algorithm::RS256,
        "rsa_private.pem",
        Some("e1"),
        &claims_for("kid"),
    );
    assert!(!is_valid(&wrong_type, constraints_for(&jwks)));
    // An HMAC token signed with the RSA key's PEM text as its secret never verifies.
    let confused = sign_with(
        Algorithm::HS256,
        &fixture("rsa_public.pem"),
        None,
        &claims_for("kid"),
    );
    assert!(!is_valid(
        &confused,
        constraints_for(&fixture("rsa_public.pem"))
    ));
    // Unusable JWKs make the set an error.
    for bad in [
        json!({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}),
        json!({"kty": "OKP", "crv": "X25519", "x": "AA"}),
        json!({"kty": "RSA", "n": "AQAB"}),
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": 7}),
        json!({"kty": "RSA", "n": "AQAB", "e": "AQAB", "key_ops": "verify"}),
        json!({"kty": "RSA", "n": "A Q", "e": "AQAB"}),
        json!({"n": "AQAB", "e": "AQAB"}),
        json!({"keys": []}),
        json!({"keys": {}}),
        json!({"keys": [5]}),
    ] {
        assert_eq!(
            dv(&k1, constraints_for(&bad.to_string())),
            json!("<undefined>"),
            "{bad}"
        );
    }
}
