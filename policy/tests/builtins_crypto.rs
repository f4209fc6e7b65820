//! The crypto, x509 and JWT-signing builtins evaluated through Rego, on the interpreter
//! (`load::prepared_engine`) and on the bytecode VM (`ActivePolicy` with `engine: vm`).
//!
//! Expected values are known vectors: RFC 1321/3174/6234 digests, RFC 2202/4231 HMACs (test
//! case 2) and the usual "quick brown fox" ones, RFC 7515 appendix A tokens as OPA's own test
//! cases compute them, and certificates made once with `openssl` (`fixtures/gen.sh`; keys for the
//! signing round trips from `fixtures/gen_jwk.py`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use regent_bundle::Bundle;
use regent_policy::load::prepared_engine;
use regent_policy::{ActivePolicy, EngineChoice, PolicySettings};
use regorus::Value;

const ROOT: &str = include_str!("fixtures/root.pem");
const INTERMEDIATE: &str = include_str!("fixtures/intermediate.pem");
const SERVER: &str = include_str!("fixtures/server.pem");
const CLIENT: &str = include_str!("fixtures/client.pem");
const CONSTRAINED: &str = include_str!("fixtures/constrained.pem");
const INSIDE: &str = include_str!("fixtures/inside.pem");
const OUTSIDE: &str = include_str!("fixtures/outside.pem");
const OTHER: &str = include_str!("fixtures/other.pem");
const REQUEST: &str = include_str!("fixtures/request.csr");
const JWK: &str = include_str!("fixtures/jwk.json");

/// RFC 7515 appendix A.2's RSA key, as a private JWK.
const RFC7515_RSA: &str = r#"{"kty":"RSA",
"n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
"e":"AQAB",
"d":"Eq5xpGnNCivDflJsRQBXHx1hdR1k6Ulwe2JZD50LpXyWPEAeP88vLNO97IjlA7_GQ5sLKMgvfTeXZx9SE-7YwVol2NXOoAJe46sui395IW_GO-pWJ1O0BkTGoVEn2bKVRUCgu-GjBVaYLU6f3l9kJfFNS3E0QbVdxzubSu3Mkqzjkn439X0M_V51gfpRLI9JYanrC4D4qAdGcopV_0ZHHzQlBjudU2QvXt4ehNYTCBr6XCLQUShb1juUO1ZdiYoFaFQT5Tw8bGUl_x_jTj3ccPDVZFD9pIuhLhBOneufuBiB4cS98l2SR_RQyGWSeWjnczT0QU91p1DhOVRuOopznQ",
"p":"4BzEEOtIpmVdVEZNCqS7baC4crd0pqnRH_5IB3jw3bcxGn6QLvnEtfdUdiYrqBdss1l58BQ3KhooKeQTa9AB0Hw_Py5PJdTJNPY8cQn7ouZ2KKDcmnPGBY5t7yLc1QlQ5xHdwW1VhvKn-nXqhJTBgIPgtldC-KDV5z-y2XDwGUc",
"q":"uQPEfgmVtjL0Uyyx88GZFF1fOunH3-7cepKmtH4pxhtCoHqpWmT8YAmZxaewHgHAjLYsp1ZSe7zFYHj7C6ul7TjeLQeZD_YwD66t62wDmpe_HlB-TnBA-njbglfIsRLtXlnDzQkv5dTltRJ11BKBBypeeF6689rjcJIDEz9RWdc",
"dp":"BwKfV3Akq5_MFZDFZCnW-wzl-CCo83WoZvnLQwCTeDv8uzluRSnm71I3QCLdhrqE2e9YkxvuxdBfpT_PI7Yz-FOKnu1R6HsJeDCjn12Sk3vmAktV2zb34MCdy7cpdTh_YVr7tss2u6vneTwrA86rZtu5Mbr1C1XsmvkxHQAdYo0",
"dq":"h_96-mK1R_7glhsum81dZxjTnYynPbZpHziZjeeHcXYsXaaMwkOlODsWa7I9xXDoRwbKgB719rrmI2oKr6N3Do9U0ajaHF-NKJnwgjMd2w9cjz3_-kyNlxAr2v4IKhGNpmM5iIgOS1VZnOZ68m6_pbLBSp3nssTdlqvd0tIiTHU",
"qi":"IYd7DHOhrWvxkwPQsRM2tOgrjbcrfvtQJipd-DlcxyVuuM9sQLdgjVk2oy26F0EmpScGLq2MowX7fhd_QJQ3ydy5cY7YIBi87w93IKLEdfnbJtoOPLUW0ITrJReOgo1cq9SbsxYawBgfp_gh6A5603k2-ZQwVK0JKSHuLFkuQ3U"}"#;

/// The policy every case is a rule of.
const POLICY: &str = r#"package t

import rego.v1

fx := data.fixtures

fox := "The quick brown fox jumps over the lazy dog"

# ---- digests and HMACs
md5_empty := crypto.md5("")
md5_fox := crypto.md5(fox)
sha1_abc := crypto.sha1("abc")
sha1_fox := crypto.sha1(fox)
sha256_empty := crypto.sha256("")
sha256_abc := crypto.sha256("abc")
sha256_fox := crypto.sha256(fox)
sha256_utf8 := crypto.sha256("héllo")
hmac_md5_rfc2202 := crypto.hmac.md5("what do ya want for nothing?", "Jefe")
hmac_sha1_rfc2202 := crypto.hmac.sha1("what do ya want for nothing?", "Jefe")
hmac_sha256_rfc4231 := crypto.hmac.sha256("what do ya want for nothing?", "Jefe")
hmac_sha512_rfc4231 := crypto.hmac.sha512("what do ya want for nothing?", "Jefe")
hmac_fox := [crypto.hmac.md5(fox, "key"), crypto.hmac.sha1(fox, "key"), crypto.hmac.sha256(fox, "key"), crypto.hmac.sha512(fox, "key")]
hmac_equal := [
	crypto.hmac.equal(crypto.hmac.sha256("msg", "key"), crypto.hmac.sha256("msg", "key")),
	crypto.hmac.equal(crypto.hmac.sha256("msg", "key"), crypto.hmac.sha256("msg", "kez")),
	crypto.hmac.equal("abc", "abcd"),
	crypto.hmac.equal("", ""),
]

# ---- JWT signing
claims := {"aud": ["bob", "saul"], "exp": 1300819380, "http://example.com/is_root": true, "iss": "joe", "privateParams": {"private_one": "one", "private_two": "two"}}
hs_key := {"k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow", "kty": "oct"}
hs256_rfc7515 := io.jwt.encode_sign({"alg": "HS256", "typ": "JWT"}, claims, hs_key)
rs256_rfc7515 := io.jwt.encode_sign({"alg": "RS256"}, claims, fx.rfc7515_rsa)
eddsa_vector := io.jwt.encode_sign(
	{"alg": "EdDSA", "typ": "JWT"},
	claims,
	{"kty": "OKP", "alg": "EdDSA", "crv": "Ed25519", "x": "wEZFfoAj1rFKTLOOmjJjVZlCHwksuvMb2I5y_hg70E8", "d": "9XI34uQzYUJfWhDZf_0nYsLMBRVu8a6dFsy60P8uugk"},
)
raw_rfc7515 := io.jwt.encode_sign_raw(
	"{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}",
	"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}",
	json.marshal(hs_key),
)
jwks_first_key := io.jwt.encode_sign({"alg": "HS256", "typ": "JWT"}, claims, {"keys": [hs_key, {"kty": "oct", "k": "b3RoZXI"}]})

# "secret" is c2VjcmV0 in base64url.
hmac_round_trips := [
	io.jwt.verify_hs256(io.jwt.encode_sign({"alg": "HS256"}, {"sub": "alice"}, {"kty": "oct", "k": "c2VjcmV0"}), "secret"),
	io.jwt.verify_hs384(io.jwt.encode_sign({"alg": "HS384"}, {"sub": "alice"}, {"kty": "oct", "k": "c2VjcmV0"}), "secret"),
	io.jwt.verify_hs512(io.jwt.encode_sign({"alg": "HS512"}, {"sub": "alice"}, {"kty": "oct", "k": "c2VjcmV0"}), "secret"),
	io.jwt.verify_hs256(io.jwt.encode_sign({"alg": "HS256"}, {"sub": "alice"}, {"kty": "oct", "k": "c2VjcmV0"}), "wrong"),
]

# [verify_<alg>, decode_verify valid, subject, header alg]
round_trip(alg, key, pub) := [verified, ok, payload.sub, header.alg] if {
	token := io.jwt.encode_sign({"alg": alg, "typ": "JWT"}, {"sub": "alice", "iss": "regent"}, key)
	verified := jwt_verify(alg, token, json.marshal(pub))
	[ok, header, payload] := io.jwt.decode_verify(token, {"cert": json.marshal(pub), "alg": alg, "iss": "regent"})
}

jwt_verify("ES256", token, pub) := io.jwt.verify_es256(token, pub)
jwt_verify("ES384", token, pub) := io.jwt.verify_es384(token, pub)
jwt_verify("ES512", token, pub) := io.jwt.verify_es512(token, pub)
jwt_verify("RS256", token, pub) := io.jwt.verify_rs256(token, pub)
jwt_verify("RS384", token, pub) := io.jwt.verify_rs384(token, pub)
jwt_verify("RS512", token, pub) := io.jwt.verify_rs512(token, pub)
jwt_verify("PS256", token, pub) := io.jwt.verify_ps256(token, pub)
jwt_verify("PS384", token, pub) := io.jwt.verify_ps384(token, pub)
jwt_verify("PS512", token, pub) := io.jwt.verify_ps512(token, pub)

es256_round_trip := round_trip("ES256", fx.jwk.es256, fx.jwk.es256_pub)
es384_round_trip := round_trip("ES384", fx.jwk.es384, fx.jwk.es384_pub)
es512_round_trip := round_trip("ES512", fx.jwk.es512, fx.jwk.es512_pub)
rsa_round_trips := [round_trip(alg, fx.jwk.rsa, fx.jwk.rsa_pub) | some alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]]
es256_jwks_round_trip := round_trip("ES256", {"keys": [fx.jwk.es256]}, fx.jwk.es256_pub)
es256_wrong_key := io.jwt.verify_es256(io.jwt.encode_sign({"alg": "ES256"}, {}, fx.jwk.es256), json.marshal(fx.jwk.es384_pub))

unsignable := [name |
	some name, args in {
		"none": [{"alg": "none"}, {}, hs_key],
		"no alg": [{"typ": "JWT"}, {}, hs_key],
		"oct key for ES256": [{"alg": "ES256"}, {}, hs_key],
		"EC key for HS256": [{"alg": "HS256"}, {}, fx.jwk.es256],
		"public EC key": [{"alg": "ES256"}, {}, fx.jwk.es256_pub],
		"P-256 key for ES384": [{"alg": "ES384"}, {}, fx.jwk.es256],
		"empty JWKS": [{"alg": "HS256"}, {}, {"keys": []}],
	}
	not io.jwt.encode_sign(args[0], args[1], args[2])
]

# A payload that is not JSON is signed only when `typ` says it is not a JWT.
raw_payload_text := is_string(io.jwt.encode_sign_raw(`{"alg":"HS256","typ":"text"}`, "not json", json.marshal(hs_key)))
raw_payload_jwt_refused if not io.jwt.encode_sign_raw(`{"alg":"HS256","typ":"JWT"}`, "not json", json.marshal(hs_key))
raw_payload_no_typ_refused if not io.jwt.encode_sign_raw(`{"alg":"HS256"}`, "not json", json.marshal(hs_key))

# ---- x509
certs(pem) := crypto.x509.parse_certificates(pem)

server := certs(fx.server)[0]

server_subject := object.remove(server.Subject, ["Names"])
server_names := server.Subject.Names
server_issuer_cn := server.Issuer.CommonName
server_version := server.Version
server_serial_ok := server.SerialNumber == 387165715252267757836693082728079159041
server_validity := [server.NotBefore, server.NotAfter]
server_sans := {"dns": server.DNSNames, "email": server.EmailAddresses, "ip": server.IPAddresses, "uris": server.URIStrings}
server_uri := server.URIs[0]
server_usage := {"ku": server.KeyUsage, "eku": server.ExtKeyUsage, "ca": server.IsCA, "bc": server.BasicConstraintsValid, "maxpath": server.MaxPathLen}
server_urls := {"ocsp": server.OCSPServer, "issuers": server.IssuingCertificateURL, "crl": server.CRLDistributionPoints, "policies": server.PolicyIdentifiers}
server_algorithms := [server.SignatureAlgorithm, server.PublicKeyAlgorithm, [k | some k, _ in server.PublicKey]]
server_key_ids := [server.SubjectKeyId, server.AuthorityKeyId]
server_raw := server.Raw
server_extensions := [[e.Id, e.Critical] | some e in server.Extensions]
server_nulls := [server.UnknownExtKeyUsage, server.UnhandledCriticalExtensions, server.ExtraExtensions, server.PermittedDNSDomains, server.PermittedIPRanges, server.Issuer.ExtraNames]

root := certs(fx.root)[0]
root_facts := {"ca": root.IsCA, "maxpath": root.MaxPathLen, "zero": root.MaxPathLenZero, "e": root.PublicKey.E, "algs": [root.SignatureAlgorithm, root.PublicKeyAlgorithm], "self_issued": root.Subject == root.Issuer, "ku": root.KeyUsage, "version": root.Version}

intermediate := certs(fx.intermediate)[0]
intermediate_facts := {"maxpath": intermediate.MaxPathLen, "zero": intermediate.MaxPathLenZero, "sig": intermediate.SignatureAlgorithm, "aki_is_root_ski": intermediate.AuthorityKeyId == root.SubjectKeyId}

constrained := certs(fx.constrained)[0]
constrained_facts := {"critical": constrained.PermittedDNSDomainsCritical, "permitted": constrained.PermittedDNSDomains, "excluded": constrained.ExcludedDNSDomains, "ips": constrained.PermittedIPRanges}

chain_pem := concat("", [fx.root, fx.intermediate, fx.server])
input_forms := [
	[c.Subject.CommonName | some c in certs(chain_pem)],
	[c.Subject.CommonName | some c in certs(base64.encode(chain_pem))],
	[c.Subject.CommonName | some c in certs(fx.chain_der_base64)],
]
unparsable := [name |
	some name, s in {"request PEM": fx.request, "garbage": "not base64 !", "truncated DER": substring(fx.chain_der_base64, 0, 400)}
	not certs(s)
]

# An unterminated PEM block is no block, as for Go's pem.Decode: no certificates.
truncated_pem := certs(substring(fx.server, 0, 200))

verify(pems) := [ok, [c.Subject.CommonName | some c in chain]] if {
	[ok, chain] := crypto.x509.parse_and_verify_certificates(concat("", pems))
}

verify_with(pems, opts) := [ok, [c.Subject.CommonName | some c in chain]] if {
	[ok, chain] := crypto.x509.parse_and_verify_certificates_with_options(concat("", pems), opts)
}

verified_chain := verify([fx.root, fx.intermediate, fx.server])
verified_uri_strings := crypto.x509.parse_and_verify_certificates(chain_pem)[1][0].URIStrings
verified_base64 := crypto.x509.parse_and_verify_certificates(base64.encode(chain_pem))[0]
refused := {name: verify(pems) |
	some name, pems in {
		"leaf first": [fx.server, fx.intermediate, fx.root],
		"client auth only": [fx.root, fx.intermediate, fx.client],
		"unrelated root": [fx.other, fx.intermediate, fx.server],
		"missing intermediate": [fx.root, fx.server],
		"one certificate": [fx.root],
		"outside name constraints": [fx.root, fx.constrained, fx.outside],
		"garbage": ["not a certificate"],
	}
}
inside_constraints := verify([fx.root, fx.constrained, fx.inside])

with_options := {name: verify_with([fx.root, fx.intermediate, leaf], opts) |
	some name, [leaf, opts] in {
		"client auth": [fx.client, {"KeyUsages": ["KeyUsageClientAuth"]}],
		"any usage": [fx.client, {"KeyUsages": {"KeyUsageAny"}}],
		"server for client auth": [fx.server, {"KeyUsages": ["KeyUsageClientAuth"]}],
		"client for server auth": [fx.client, {"KeyUsages": ["KeyUsageServerAuth"]}],
		"dns name": [fx.server, {"DNSName": "server.example.com"}],
		"wildcard": [fx.server, {"DNSName": "x.api.example.com"}],
		"wildcard is one label": [fx.server, {"DNSName": "a.b.api.example.com"}],
		"wrong dns name": [fx.server, {"DNSName": "other.example.com"}],
		"ip": [fx.server, {"DNSName": "127.0.0.1"}],
		"in 2128": [fx.server, {"CurrentTime": 5000000000000000000}],
		"in 2001": [fx.server, {"CurrentTime": 1000000000000000000}],
		"no options": [fx.server, {}],
	}
}
with_options_no_uri_strings if {
	[true, chain] := crypto.x509.parse_and_verify_certificates_with_options(chain_pem, {})
	not chain[0].URIStrings
}
bad_options := [name |
	some name, opts in {"unknown key": {"Nope": 1}, "bad usage": {"KeyUsages": ["KeyUsageNope"]}, "dns not a string": {"DNSName": 1}}
	not crypto.x509.parse_and_verify_certificates_with_options(chain_pem, opts)
]

csr := crypto.x509.parse_certificate_request(fx.request)
csr_facts := {"cn": csr.Subject.CommonName, "org": csr.Subject.Organization, "dns": csr.DNSNames, "uri": [csr.URIs[0].Scheme, csr.URIs[0].Host, csr.URIs[0].Path], "version": csr.Version, "algs": [csr.SignatureAlgorithm, csr.PublicKeyAlgorithm]}
csr_base64_cn := crypto.x509.parse_certificate_request(base64.encode(fx.request)).Subject.CommonName
"#;

/// `(rule, expected value as JSON)`.
fn cases() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let b64 = |hex_str: &str| {
        base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_str).unwrap())
    };
    let server_der =
        base64::engine::general_purpose::STANDARD.encode(pem::parse(SERVER).unwrap().contents());
    let no = json!([false, []]);
    vec![
        ("md5_empty", json!("d41d8cd98f00b204e9800998ecf8427e")),
        ("md5_fox", json!("9e107d9d372bb6826bd81d3542a419d6")),
        ("sha1_abc", json!("a9993e364706816aba3e25717850c26c9cd0d89d")),
        ("sha1_fox", json!("2fd4e1c67a2d28fced849ee1bb76e7391b93eb12")),
        ("sha256_empty", json!("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")),
        ("sha256_abc", json!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")),
        ("sha256_fox", json!("d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592")),
        ("sha256_utf8", json!("3c48591d8d098a4538f5e013dfcf406e948eac4d3277b10bf614e295d6068179")),
        ("hmac_md5_rfc2202", json!("750c783e6ab0b503eaa86e310a5db738")),
        ("hmac_sha1_rfc2202", json!("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")),
        ("hmac_sha256_rfc4231", json!("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")),
        (
            "hmac_sha512_rfc4231",
            json!("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"),
        ),
        (
            "hmac_fox",
            json!([
                "80070713463e7749b90c2dc24911e275",
                "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9",
                "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
                "b42af09057bac1e2d41708e48a902e09b5ff7f12ab428a4fe86653c73dd248fb82f948a549f7b791a5b41915ee4d1ec3935357e4e2317250d0372afa2ebeeb3a"
            ]),
        ),
        ("hmac_equal", json!([true, false, false, true])),
        // OPA's test cases jwtencodesign/rfc7515 A.1, A.2 and EdDSA.
        (
            "hs256_rfc7515",
            json!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOlsiYm9iIiwic2F1bCJdLCJleHAiOjEzMDA4MTkzODAsImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlLCJpc3MiOiJqb2UiLCJwcml2YXRlUGFyYW1zIjp7InByaXZhdGVfb25lIjoib25lIiwicHJpdmF0ZV90d28iOiJ0d28ifX0.-Or2eol8bzly-Ztb0v7_7UkcKBkN_aNNpK33HK0MeOY"),
        ),
        (
            "rs256_rfc7515",
            json!("eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsiYm9iIiwic2F1bCJdLCJleHAiOjEzMDA4MTkzODAsImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlLCJpc3MiOiJqb2UiLCJwcml2YXRlUGFyYW1zIjp7InByaXZhdGVfb25lIjoib25lIiwicHJpdmF0ZV90d28iOiJ0d28ifX0.kvCjo2z80h4YO3umCn3iayUXEnBGgw-Nk4-cYNPWagW4SAg34nZSonUt9Kpnc5h0s6LpJAnam1xuEezk-2VRPnu05foQdWTDKJAze-9vZ0wr0L_KyXLZaW0vVfehdGpPgJj_FqVfgnc-hXdL0RADfrKjApsrO7oHpv-Ii3u7oKwauzq5oQ2AXt4cp6ahu8VhOBGQiPXtV98Yw3U3NBetMX-I_qR6-UGsN6Z0pRO0bsdk1ANvMiHT6Y04x8nh4kzk5pfv71ACgnxrs1zxwg7YfYzm2tQXGceu7fwI9sqO_jz2c8RvMsg4u8q0js58F-gR1SVjmTyipnXv0tAGzpZnhg"),
        ),
        (
            "eddsa_vector",
            json!("eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJhdWQiOlsiYm9iIiwic2F1bCJdLCJleHAiOjEzMDA4MTkzODAsImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlLCJpc3MiOiJqb2UiLCJwcml2YXRlUGFyYW1zIjp7InByaXZhdGVfb25lIjoib25lIiwicHJpdmF0ZV90d28iOiJ0d28ifX0.T_X7SzKEehTnRdgYrDobpKO-EqZ0LW3Y-idx16wNHXCL5aiR24h2Ei0pWRHG2X2BYomwbvNwyxPcasgHqs_eBA"),
        ),
        // RFC 7515 A.1 exactly (header and payload with their line breaks).
        (
            "raw_rfc7515",
            json!("eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        ),
        (
            "jwks_first_key",
            json!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOlsiYm9iIiwic2F1bCJdLCJleHAiOjEzMDA4MTkzODAsImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlLCJpc3MiOiJqb2UiLCJwcml2YXRlUGFyYW1zIjp7InByaXZhdGVfb25lIjoib25lIiwicHJpdmF0ZV90d28iOiJ0d28ifX0.-Or2eol8bzly-Ztb0v7_7UkcKBkN_aNNpK33HK0MeOY"),
        ),
        ("hmac_round_trips", json!([true, true, true, false])),
        ("es256_round_trip", json!([true, true, "alice", "ES256"])),
        ("es384_round_trip", json!([true, true, "alice", "ES384"])),
        ("es512_round_trip", json!([true, true, "alice", "ES512"])),
        (
            "rsa_round_trips",
            json!([
                [true, true, "alice", "RS256"],
                [true, true, "alice", "RS384"],
                [true, true, "alice", "RS512"],
                [true, true, "alice", "PS256"],
                [true, true, "alice", "PS384"],
                [true, true, "alice", "PS512"]
            ]),
        ),
        ("es256_jwks_round_trip", json!([true, true, "alice", "ES256"])),
        ("es256_wrong_key", json!(false)),
        (
            "unsignable",
            json!([
                "EC key for HS256",
                "P-256 key for ES384",
                "empty JWKS",
                "no alg",
                "none",
                "oct key for ES256",
                "public EC key"
            ]),
        ),
        ("raw_payload_text", json!(true)),
        ("raw_payload_jwt_refused", json!(true)),
        ("raw_payload_no_typ_refused", json!(true)),
        // x509
        (
            "server_subject",
            json!({
                "Country": ["GB"],
                "Organization": ["Regent Test", "Second Org"],
                "OrganizationalUnit": ["Edge"],
                "Locality": ["London"],
                "Province": ["London"],
                "StreetAddress": null,
                "PostalCode": null,
                "SerialNumber": "",
                "CommonName": "server.example.com",
                "ExtraNames": null
            }),
        ),
        (
            "server_names",
            json!([
                {"Type": [2, 5, 4, 6], "Value": "GB"},
                {"Type": [2, 5, 4, 8], "Value": "London"},
                {"Type": [2, 5, 4, 7], "Value": "London"},
                {"Type": [2, 5, 4, 10], "Value": "Regent Test"},
                {"Type": [2, 5, 4, 10], "Value": "Second Org"},
                {"Type": [2, 5, 4, 11], "Value": "Edge"},
                {"Type": [2, 5, 4, 3], "Value": "server.example.com"},
                {"Type": [1, 2, 840, 113549, 1, 9, 1], "Value": "ops@example.com"}
            ]),
        ),
        ("server_issuer_cn", json!("Regent Test Intermediate")),
        ("server_version", json!(3)),
        ("server_serial_ok", json!(true)),
        ("server_validity", json!(["2026-12-02T14:14:29Z", "2126-11-08T14:14:29Z"])),
        (
            "server_sans",
            json!({
                "dns": ["server.example.com", "*.api.example.com"],
                "email": ["ops@example.com"],
                "ip": ["127.0.0.1", "::1"],
                "uris": ["spiffe://example.com/ns/default/sa/web"]
            }),
        ),
        (
            "server_uri",
            json!({
                "Scheme": "spiffe", "Opaque": "", "User": null, "Host": "example.com",
                "Path": "/ns/default/sa/web", "RawPath": "", "OmitHost": false, "ForceQuery": false,
                "RawQuery": "", "Fragment": "", "RawFragment": ""
            }),
        ),
        (
            "server_usage",
            json!({"ku": 5, "eku": [1, 2], "ca": false, "bc": true, "maxpath": -1}),
        ),
        (
            "server_urls",
            json!({
                "ocsp": ["http://ocsp.example.com"],
                "issuers": ["http://ca.example.com/intermediate.crt"],
                "crl": ["http://crl.example.com/intermediate.crl"],
                "policies": [[2, 23, 140, 1, 2, 2]]
            }),
        ),
        ("server_algorithms", json!([10, 3, ["Curve", "X", "Y"]])),
        (
            "server_key_ids",
            json!([
                b64("D62BFD504F954B6D7FFD5FB5918D386B9CCC5655"),
                b64("517DE98F60D56AA5D8EEE67340119F31556817ED")
            ]),
        ),
        ("server_raw", json!(server_der)),
        (
            "server_extensions",
            json!([
                [[2, 5, 29, 19], true],
                [[2, 5, 29, 15], true],
                [[2, 5, 29, 37], false],
                [[2, 5, 29, 17], false],
                [[2, 5, 29, 14], false],
                [[2, 5, 29, 35], false],
                [[1, 3, 6, 1, 5, 5, 7, 1, 1], false],
                [[2, 5, 29, 31], false],
                [[2, 5, 29, 32], false]
            ]),
        ),
        ("server_nulls", json!([null, null, null, null, null, null])),
        (
            "root_facts",
            json!({"ca": true, "maxpath": -1, "zero": false, "e": 65537, "algs": [4, 1], "self_issued": true, "ku": 96, "version": 3}),
        ),
        (
            "intermediate_facts",
            json!({"maxpath": 0, "zero": true, "sig": 4, "aki_is_root_ski": true}),
        ),
        (
            "constrained_facts",
            json!({
                "critical": true,
                "permitted": ["example.com"],
                "excluded": ["bad.example.com"],
                "ips": [{"IP": "10.0.0.0", "Mask": "/wAAAA=="}]
            }),
        ),
        (
            "input_forms",
            json!([
                ["Regent Test Root", "Regent Test Intermediate", "server.example.com"],
                ["Regent Test Root", "Regent Test Intermediate", "server.example.com"],
                ["Regent Test Root", "Regent Test Intermediate", "server.example.com"]
            ]),
        ),
        ("unparsable", json!(["garbage", "request PEM", "truncated DER"])),
        ("truncated_pem", json!([])),
        (
            "verified_chain",
            json!([true, ["server.example.com", "Regent Test Intermediate", "Regent Test Root"]]),
        ),
        ("verified_uri_strings", json!(["spiffe://example.com/ns/default/sa/web"])),
        ("verified_base64", json!(true)),
        (
            "refused",
            json!({
                "leaf first": no,
                "client auth only": no,
                "unrelated root": no,
                "missing intermediate": no,
                "one certificate": no,
                "outside name constraints": no,
                "garbage": no
            }),
        ),
        (
            "inside_constraints",
            json!([true, ["www.example.com", "Regent Constrained Intermediate", "Regent Test Root"]]),
        ),
        (
            "with_options",
            json!({
                "client auth": [true, ["client", "Regent Test Intermediate", "Regent Test Root"]],
                "any usage": [true, ["client", "Regent Test Intermediate", "Regent Test Root"]],
                "server for client auth": [true, ["server.example.com", "Regent Test Intermediate", "Regent Test Root"]],
                "client for server auth": no,
                "dns name": [true, ["server.example.com", "Regent Test Intermediate", "Regent Test Root"]],
                "wildcard": [true, ["server.example.com", "Regent Test Intermediate", "Regent Test Root"]],
                "wildcard is one label": no,
                "wrong dns name": no,
                "ip": [true, ["server.example.com", "Regent Test Intermediate", "Regent Test Root"]],
                "in 2128": no,
                "in 2001": no,
                "no options": [true, ["server.example.com", "Regent Test Intermediate", "Regent Test Root"]]
            }),
        ),
        ("with_options_no_uri_strings", json!(true)),
        ("bad_options", json!(["bad usage", "dns not a string", "unknown key"])),
        (
            "csr_facts",
            json!({
                "cn": "csr.example.com",
                "org": ["Regent Test"],
                "dns": ["csr.example.com"],
                "uri": ["spiffe", "example.com", "/csr"],
                "version": 0,
                "algs": [10, 3]
            }),
        ),
        ("csr_base64_cn", json!("csr.example.com")),
    ]
}

fn data_json() -> String {
    let der: Vec<u8> = [ROOT, INTERMEDIATE, SERVER]
        .iter()
        .flat_map(|p| pem::parse(p).unwrap().into_contents())
        .collect();
    serde_json::json!({
        "fixtures": {
            "root": ROOT,
            "intermediate": INTERMEDIATE,
            "server": SERVER,
            "client": CLIENT,
            "constrained": CONSTRAINED,
            "inside": INSIDE,
            "outside": OUTSIDE,
            "other": OTHER,
            "request": REQUEST,
            "chain_der_base64": base64::engine::general_purpose::STANDARD.encode(der),
            "jwk": serde_json::from_str::<serde_json::Value>(JWK).unwrap(),
            "rfc7515_rsa": serde_json::from_str::<serde_json::Value>(RFC7515_RSA).unwrap(),
        }
    })
    .to_string()
}

fn bundle(files: &[(&str, &str)]) -> Bundle {
    Bundle::from_files(
        files
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect(),
    )
    .unwrap()
}

fn policy_bundle() -> Bundle {
    let data = data_json();
    bundle(&[("t/policy.rego", POLICY), ("data.json", &data)])
}

fn expected(v: &serde_json::Value) -> Value {
    Value::from_json_str(&v.to_string()).unwrap()
}

fn show(v: &Value) -> String {
    if *v == Value::Undefined {
        "undefined".into()
    } else {
        v.to_json_str().unwrap_or_else(|e| format!("<{e}>"))
    }
}

/// Runs every case through `eval`, and fails listing every mismatch.
fn check_all(what: &str, mut eval: impl FnMut(&str) -> Result<Value, String>) {
    let mut failures = Vec::new();
    for (rule, want) in cases() {
        let want = expected(&want);
        match eval(rule) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("{rule}: got {}, want {}", show(&got), show(&want))),
            Err(e) => failures.push(format!("{rule}: error: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} cases failed:\n{}",
        failures.len(),
        cases().len(),
        failures.join("\n")
    );
}

#[test]
fn builtins_on_the_interpreter() {
    let b = policy_bundle();
    let mut engine = prepared_engine(&[("t", &b)], Duration::from_secs(10)).unwrap();
    check_all("interpreter", |rule| {
        engine
            .eval_rule(format!("data.t.{rule}"))
            .map_err(|e| format!("{e:#}"))
    });
}

#[test]
fn builtins_on_the_vm() {
    let b = Arc::new(policy_bundle());
    check_all("vm", |rule| {
        let settings = PolicySettings {
            rule: format!("data.t.{rule}"),
            engine: EngineChoice::Vm,
            eval_timeout: Duration::from_secs(10),
            ..PolicySettings::default()
        };
        let policy = ActivePolicy::compile(&[("t".to_string(), b.clone())], &settings)
            .map_err(|e| format!("activation: {e}"))?;
        policy
            .fresh_eval(Value::new_object())
            .map_err(|e| format!("evaluation: {e}"))
    });
}

// ----- http.send is answered (remote.rs), so mentioning it never stops a load --------------

#[test]
fn a_policy_that_only_mentions_http_send_loads() {
    let src = "package envoy.authz\n\nimport rego.v1\n\n# http.send({})\nx := \"http.send({})\"\n\
               y := data.http.send\n";
    let b = bundle(&[("policy.rego", src)]);
    let mut engine = prepared_engine(&[("authz", &b)], Duration::from_secs(1)).unwrap();
    assert_eq!(
        engine.eval_rule("data.envoy.authz.x".into()).unwrap(),
        Value::from("http.send({})")
    );
}
