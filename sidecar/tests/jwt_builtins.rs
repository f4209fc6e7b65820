//! The io.jwt.* extensions, called from Rego through a real regorus Engine. Tokens are made here
//! with the test-only keys in tests/fixtures/jwt/.

use base64::Engine as _;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use regorus::{Engine, Value};
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
        .join("tests/fixtures/jwt")
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

fn sign(alg: Algorithm, key_file: &str, kid: Option<&str>, claims: &Json) -> String {
    let pem = fixture(key_file);
    let key = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => Ok(EncodingKey::from_secret(pem.as_bytes())),
    }
    .expect("test key");
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, &key).expect("signs")
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
    let key = EncodingKey::from_secret(secret.as_bytes());
    let token = encode(&Header::new(Algorithm::HS256), &claims(), &key).expect("signs");
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
