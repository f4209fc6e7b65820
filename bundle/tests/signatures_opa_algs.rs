//! RSA and ECDSA bundle signatures: tokens made the way `opa build --signing-alg ALG
//! --signing-key k.pem` writes them, signed by openssl (not by our code), verify; Regent's own
//! signatures verify with `openssl dgst -verify`; wrong algorithms, short keys and tampering
//! are refused with the reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use regent_bundle::signing::{
    file_digest, read_signing_key, sign, verify, Alg, Keyring, SignClaims, VerifyError,
    VerifyOptions,
};
use regent_bundle::{Bundle, SIGNATURES_FILE};

const FILES: [(&str, &str); 3] = [
    (".manifest", r#"{"revision":"r7","roots":["authz"]}"#),
    ("authz/data.json", r#"{"admins":["alice"]}"#),
    (
        "authz/policy.rego",
        "package authz\n\ndefault allow := false\n",
    ),
];

fn bundle() -> Bundle {
    let files: BTreeMap<String, Vec<u8>> = FILES
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect();
    Bundle::from_files(files).unwrap()
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// (private PKCS#8 PEM, public SPKI PEM) made by openssl.
fn openssl_key(
    dir: &Path,
    name: &str,
    genpkey: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let mut args = vec!["genpkey"];
    args.extend_from_slice(genpkey);
    args.extend_from_slice(&["-out", p(&private)]);
    openssl(&args);
    openssl(&["pkey", "-in", p(&private), "-pubout", "-out", p(&public)]);
    (private, public)
}

fn key_for(alg: &str) -> &'static [&'static str] {
    match alg {
        "ES256" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "ES384" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "ES512" => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
        _ => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    }
}

fn digest_flag(alg: &str) -> &'static str {
    match &alg[2..] {
        "384" => "-sha384",
        "512" => "-sha512",
        _ => "-sha256",
    }
}

fn pss_opts(alg: &str) -> Vec<&'static str> {
    if alg.starts_with("PS") {
        vec![
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ]
    } else {
        vec![]
    }
}

/// Reads a DER ECDSA-Sig-Value into JWS's fixed r||s form.
fn der_to_raw(der: &[u8], width: usize) -> Vec<u8> {
    let mut i = 2 + usize::from(der[1] & 0x80 != 0) * usize::from(der[1] & 0x7f);
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02);
        let len = usize::from(der[i + 1]);
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.iter().position(|&b| b != 0).unwrap_or(int.len())..];
        out.extend(std::iter::repeat_n(0, width - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

/// Writes JWS's r||s as a DER ECDSA-Sig-Value for openssl.
fn raw_to_der(raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for half in raw.chunks(raw.len() / 2) {
        let mut int = half[half.iter().position(|&b| b != 0).unwrap_or(half.len() - 1)..].to_vec();
        if int[0] & 0x80 != 0 {
            int.insert(0, 0);
        }
        body.push(0x02);
        body.push(int.len() as u8);
        body.extend(int);
    }
    let mut der = vec![0x30];
    if body.len() >= 0x80 {
        der.push(0x81);
    }
    der.push(body.len() as u8);
    der.extend(body);
    der
}

fn ec_width(alg: &str) -> usize {
    match alg {
        "ES384" => 48,
        "ES512" => 66,
        _ => 32,
    }
}

/// A `.signatures.json` as `opa build --signing-alg ALG` writes it, signed by openssl with `key`.
fn opa_style_signatures(dir: &Path, alg: &str, kid: &str, key: &Path) -> Vec<u8> {
    let files: Vec<serde_json::Value> = FILES
        .iter()
        .map(|(name, content)| {
            serde_json::json!({
                "name": name,
                "hash": file_digest(name, content.as_bytes(), "SHA-256").unwrap().unwrap(),
                "algorithm": "SHA-256",
            })
        })
        .collect();
    let header = serde_json::json!({"alg": alg, "kid": kid});
    let payload = serde_json::json!({"files": files});
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string())
    );
    let input_file = dir.join("input");
    let sig_file = dir.join("sig");
    std::fs::write(&input_file, &input).unwrap();
    let mut args = vec!["dgst", digest_flag(alg), "-sign", p(key)];
    args.extend(pss_opts(alg));
    args.extend(["-out", p(&sig_file), p(&input_file)]);
    openssl(&args);
    let mut sig = std::fs::read(&sig_file).unwrap();
    if alg.starts_with("ES") {
        sig = der_to_raw(&sig, ec_width(alg));
    }
    serde_json::json!({"signatures": [format!("{input}.{}", B64.encode(sig))]})
        .to_string()
        .into_bytes()
}

fn with_signatures(sigs: Vec<u8>) -> Bundle {
    let mut files: BTreeMap<String, Vec<u8>> = FILES
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect();
    files.insert(SIGNATURES_FILE.into(), sigs);
    Bundle::from_files(files).unwrap()
}

const ALGS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
];

#[test]
fn opa_style_signatures_verify_for_every_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ALGS {
        let (private, public) = openssl_key(dir.path(), alg, key_for(alg));
        let b = with_signatures(opa_style_signatures(dir.path(), alg, "opa", &private));
        let mut ring = Keyring::new();
        ring.insert_file("opa", &public).unwrap();
        let v =
            verify(&b, &ring, &VerifyOptions::default()).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(v.kid, "opa");
        // Pinned to its own algorithm it still verifies; pinned to a sibling it is refused.
        let mut pinned = Keyring::new();
        pinned
            .insert_file_with_alg("opa", &public, Alg::from_name(alg))
            .unwrap();
        verify(&b, &pinned, &VerifyOptions::default()).unwrap();
        if alg.starts_with('R') || alg.starts_with('P') {
            let other = if alg == "RS256" {
                Alg::PS256
            } else {
                Alg::RS256
            };
            let mut pinned = Keyring::new();
            pinned
                .insert_file_with_alg("opa", &public, Some(other))
                .unwrap();
            let e = verify(&b, &pinned, &VerifyOptions::default()).unwrap_err();
            assert!(
                matches!(&e, VerifyError::AlgorithmMismatch { kid, alg: a, .. } if kid == "opa" && a == alg),
                "{alg}: {e}"
            );
            assert!(e.to_string().contains(&format!("pinned to {other}")), "{e}");
        }
    }
}

#[test]
fn regent_signatures_verify_with_openssl_for_every_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ALGS {
        let (private, public) = openssl_key(dir.path(), alg, key_for(alg));
        let key = read_signing_key(&private)
            .unwrap()
            .with_alg(Alg::from_name(alg).unwrap(), "test key")
            .unwrap();
        let mut b = bundle();
        sign(&mut b, &key, "regent", &SignClaims::default()).unwrap();
        let mut ring = Keyring::new();
        ring.insert_file("regent", &public).unwrap();
        verify(&b, &ring, &VerifyOptions::default()).unwrap_or_else(|e| panic!("{alg}: {e}"));

        let file: serde_json::Value =
            serde_json::from_slice(b.file(SIGNATURES_FILE).unwrap()).unwrap();
        let token = file["signatures"][0].as_str().unwrap();
        let (input, sig64) = token.rsplit_once('.').unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(input.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], alg);
        assert_eq!(header["kid"], "regent");
        let mut sig = B64.decode(sig64).unwrap();
        if alg.starts_with("ES") {
            assert_eq!(sig.len(), 2 * ec_width(alg), "{alg}: JWS r||s width");
            sig = raw_to_der(&sig);
        }
        std::fs::write(dir.path().join("input"), input).unwrap();
        std::fs::write(dir.path().join("sig"), &sig).unwrap();
        let mut args = vec!["dgst", digest_flag(alg), "-verify", p(&public)];
        args.extend(pss_opts(alg));
        let sig_path = dir.path().join("sig");
        let input_path = dir.path().join("input");
        args.extend(["-signature", p(&sig_path), p(&input_path)]);
        openssl(&args);
    }
}

#[test]
fn wrong_algorithm_hmac_none_short_keys_and_tampering_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (rsa_priv, rsa_pub) = openssl_key(dir.path(), "rsa", key_for("RS256"));
    let (_, ec_pub) = openssl_key(dir.path(), "ec", key_for("ES256"));

    // An RS256 token whose kid names an EC key.
    let b = with_signatures(opa_style_signatures(dir.path(), "RS256", "k", &rsa_priv));
    let mut ring = Keyring::new();
    ring.insert_file("k", &ec_pub).unwrap();
    let e = verify(&b, &ring, &VerifyOptions::default()).unwrap_err();
    assert_eq!(
        e,
        VerifyError::AlgorithmMismatch {
            kid: "k".into(),
            alg: "RS256".into(),
            key: "EC P-256".into()
        }
    );
    assert!(
        e.to_string().contains("\"k\"") && e.to_string().contains("RS256"),
        "{e}"
    );

    // HS256 (an RSA public key must never become an HMAC secret) and none.
    let mut ring = Keyring::new();
    ring.insert_file("k", &rsa_pub).unwrap();
    let good = with_signatures(opa_style_signatures(dir.path(), "RS256", "k", &rsa_priv));
    verify(&good, &ring, &VerifyOptions::default()).unwrap();
    let file: serde_json::Value =
        serde_json::from_slice(good.file(SIGNATURES_FILE).unwrap()).unwrap();
    let token = file["signatures"][0].as_str().unwrap().to_string();
    let mut parts = token.split('.');
    let (_, p64, s64) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
    for alg in ["HS256", "none"] {
        let h = B64.encode(serde_json::json!({"alg": alg, "kid": "k"}).to_string());
        let forged = format!("{h}.{p64}.{s64}");
        let b = with_signatures(
            serde_json::json!({"signatures": [forged]})
                .to_string()
                .into_bytes(),
        );
        let e = verify(&b, &ring, &VerifyOptions::default()).unwrap_err();
        assert_eq!(e, VerifyError::AlgorithmNotAllowed(alg.into()));
    }
    // Pinning a key to HMAC or to another family is refused when the keyring is built.
    let e = Keyring::new()
        .insert_file_with_alg("k", &rsa_pub, Some(Alg::HS256))
        .unwrap_err();
    assert!(e.to_string().contains("HS256"), "{e}");
    let e = Keyring::new()
        .insert_file_with_alg("k", &ec_pub, Some(Alg::ES384))
        .unwrap_err();
    assert!(
        e.to_string().contains("ES384") && e.to_string().contains("P-256"),
        "{e}"
    );

    // A tampered payload (a file hash replaced) no longer verifies.
    let mut payload: serde_json::Value = serde_json::from_slice(&B64.decode(p64).unwrap()).unwrap();
    payload["files"][1]["hash"] = serde_json::json!("00");
    let h64 = token.split('.').next().unwrap();
    let tampered = format!("{h64}.{}.{s64}", B64.encode(payload.to_string()));
    let b = with_signatures(
        serde_json::json!({"signatures": [tampered]})
            .to_string()
            .into_bytes(),
    );
    assert_eq!(
        verify(&b, &ring, &VerifyOptions::default()).unwrap_err(),
        VerifyError::BadSignature("k".into())
    );

    // RSA keys below 2048 bits: refused as public keys and as signing keys.
    let (short_priv, short_pub) = openssl_key(
        dir.path(),
        "short",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let e = Keyring::new().insert_file("s", &short_pub).unwrap_err();
    assert!(e.to_string().contains("1024 bits"), "{e}");
    let e = read_signing_key(&short_priv).unwrap_err();
    assert!(e.to_string().contains("2048"), "{e}");
}

#[test]
fn pkcs1_rsa_public_keys_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (private, _) = openssl_key(dir.path(), "rsa", key_for("RS256"));
    let pkcs1 = dir.path().join("pkcs1.pem");
    openssl(&[
        "rsa",
        "-in",
        p(&private),
        "-RSAPublicKey_out",
        "-out",
        p(&pkcs1),
    ]);
    assert!(std::fs::read_to_string(&pkcs1)
        .unwrap()
        .contains("BEGIN RSA PUBLIC KEY"));
    let b = with_signatures(opa_style_signatures(dir.path(), "RS256", "k", &private));
    let mut ring = Keyring::new();
    ring.insert_file("k", &pkcs1).unwrap();
    verify(&b, &ring, &VerifyOptions::default()).unwrap();
}
