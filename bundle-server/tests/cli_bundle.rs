//! `regent keygen`, `build`, `sign` and `verify` on the real binary, checked against the bundle
//! library.

mod cli_support;

use std::path::Path;

use cli_support::*;
use regent_bundle::signing::{verify, Keyring, VerifyError, VerifyOptions};
use regent_bundle::{Bundle, UnpackLimits};

fn keygen(cwd: &Path, name: &str) {
    let o = regent(cwd, &["keygen", "--out-dir", "keys", "--name", name]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

fn read_bundle(path: &Path) -> Bundle {
    Bundle::from_tar_gz(&std::fs::read(path).unwrap(), &UnpackLimits::default()).unwrap()
}

#[test]
fn keygen_build_verify_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    policy_dir(cwd);
    keygen(cwd, "k1");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cwd.join("keys/k1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let private = std::fs::read_to_string(cwd.join("keys/k1.key")).unwrap();
    assert!(
        private.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{private}"
    );
    let public = std::fs::read_to_string(cwd.join("keys/k1.pub")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");

    let o = regent(
        cwd,
        &[
            "build",
            "policies",
            "-o",
            "b.tar.gz",
            "--revision",
            "rev-1",
            "--key",
            "keys/k1.key",
            "--kid",
            "k1",
            "--path",
            "envoy/authz/allow",
        ],
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("signed: kid \"k1\""), "{}", stdout(&o));

    let o = regent(cwd, &["verify", "b.tar.gz", "--key", "keys/k1.pub:k1"]);
    let out = stdout(&o);
    assert_eq!(code(&o), 0, "{out}{}", stderr(&o));
    assert!(out.contains("signature OK"), "{out}");
    assert!(out.contains("revision: rev-1"), "{out}");
    assert!(out.contains("signed by: kid \"k1\""), "{out}");
    assert!(out.contains("envoy/authz.rego"), "{out}");
    // tests are not shipped
    assert!(!out.contains("authz_test.rego"), "{out}");

    // A key given without a kid is tried for the kid the bundle names.
    let o = regent(cwd, &["verify", "b.tar.gz", "--key", "keys/k1.pub"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // The library agrees.
    let bundle = read_bundle(&cwd.join("b.tar.gz"));
    let mut ring = Keyring::new();
    ring.insert_file("k1", &cwd.join("keys/k1.pub")).unwrap();
    let v = verify(&bundle, &ring, &VerifyOptions::default()).unwrap();
    assert_eq!(v.kid, "k1");
    assert_eq!(v.revision.as_deref(), Some("rev-1"));
    assert_eq!(bundle.revision(), "rev-1");
    assert!(bundle.file("authz/data.json").is_some());
    assert!(bundle.file("envoy/authz_test.rego").is_none());
}

#[test]
fn verify_refuses_wrong_key_tampering_and_missing_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    policy_dir(cwd);
    keygen(cwd, "good");
    keygen(cwd, "other");
    let o = regent(
        cwd,
        &[
            "build",
            "policies",
            "-o",
            "b.tar.gz",
            "--key",
            "keys/good.key",
            "--kid",
            "good",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let o = regent(cwd, &["verify", "b.tar.gz", "--key", "keys/other.pub:good"]);
    assert_clean_error(&o, "signature does not verify");
    let o = regent(
        cwd,
        &["verify", "b.tar.gz", "--key", "keys/good.pub:someone"],
    );
    assert_clean_error(&o, "unknown key id \"good\"");
    let o = regent(
        cwd,
        &[
            "verify",
            "b.tar.gz",
            "--key",
            "keys/good.pub:good",
            "--scope",
            "write",
        ],
    );
    assert_clean_error(&o, "scope");

    // Tamper with a module and repack with the library (a valid archive, wrong content).
    let bundle = read_bundle(&cwd.join("b.tar.gz"));
    let mut files: std::collections::BTreeMap<String, Vec<u8>> = bundle
        .files()
        .map(|(p, b)| (p.to_string(), b.to_vec()))
        .collect();
    let module = files.get_mut("envoy/authz.rego").unwrap();
    let text = String::from_utf8(module.clone()).unwrap();
    *module = text
        .replace("\"alice\"", "\"mallory\"")
        .replace("user in data.authz.users", "true")
        .into_bytes();
    let tampered = Bundle::from_files(files).unwrap();
    std::fs::write(cwd.join("t.tar.gz"), tampered.to_tar_gz().unwrap()).unwrap();
    let o = regent(cwd, &["verify", "t.tar.gz", "--key", "keys/good.pub:good"]);
    assert_clean_error(&o, "envoy/authz.rego: ");
    assert_clean_error(&o, "but the signature lists");

    // Flip one byte of the archive itself.
    let mut bytes = std::fs::read(cwd.join("b.tar.gz")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(cwd.join("flipped.tar.gz"), &bytes).unwrap();
    let o = regent(
        cwd,
        &["verify", "flipped.tar.gz", "--key", "keys/good.pub:good"],
    );
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));

    let o = regent(cwd, &["build", "policies", "-o", "unsigned.tar.gz"]);
    assert_eq!(code(&o), 0);
    let o = regent(
        cwd,
        &["verify", "unsigned.tar.gz", "--key", "keys/good.pub:good"],
    );
    assert_clean_error(&o, "no .signatures.json");
}

#[test]
fn sign_adds_and_replaces_signatures() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    policy_dir(cwd);
    keygen(cwd, "a");
    keygen(cwd, "b");
    assert_eq!(
        code(&regent(cwd, &["build", "policies", "-o", "u.tar.gz"])),
        0
    );
    let o = regent(
        cwd,
        &[
            "sign",
            "u.tar.gz",
            "--key",
            "keys/a.key",
            "--kid",
            "a",
            "-o",
            "s.tar.gz",
            "--scope",
            "write",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = regent(
        cwd,
        &[
            "verify",
            "s.tar.gz",
            "--key",
            "keys/a.pub:a",
            "--scope",
            "write",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("scope: write"), "{}", stdout(&o));

    // Re-signing in place with another key replaces the signature.
    let o = regent(
        cwd,
        &["sign", "s.tar.gz", "--key", "keys/b.key", "--kid", "b"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("replacing"), "{}", stdout(&o));
    let bundle = read_bundle(&cwd.join("s.tar.gz"));
    let mut ring = Keyring::new();
    ring.insert_file("a", &cwd.join("keys/a.pub")).unwrap();
    assert_eq!(
        verify(&bundle, &ring, &VerifyOptions::default()),
        Err(VerifyError::UnknownKid("b".into()))
    );
    ring.insert_file("b", &cwd.join("keys/b.pub")).unwrap();
    assert_eq!(
        verify(&bundle, &ring, &VerifyOptions::default())
            .unwrap()
            .kid,
        "b"
    );
}

#[test]
fn builds_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    policy_dir(cwd);
    keygen(cwd, "k");
    for out in ["1.tar.gz", "2.tar.gz"] {
        let o = regent(cwd, &["build", "policies", "-o", out, "--revision", "r"]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    assert_eq!(
        std::fs::read(cwd.join("1.tar.gz")).unwrap(),
        std::fs::read(cwd.join("2.tar.gz")).unwrap()
    );
    // Signed builds too, once `iat` is pinned (Ed25519 signatures are deterministic).
    for out in ["s1.tar.gz", "s2.tar.gz"] {
        let o = regent(
            cwd,
            &[
                "build",
                "policies",
                "-o",
                out,
                "--key",
                "keys/k.key",
                "--kid",
                "k",
                "--iat",
                "1700000000",
            ],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    assert_eq!(
        std::fs::read(cwd.join("s1.tar.gz")).unwrap(),
        std::fs::read(cwd.join("s2.tar.gz")).unwrap()
    );
}

#[test]
fn keygen_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    keygen(cwd, "k");
    let before = std::fs::read(cwd.join("keys/k.key")).unwrap();
    let o = regent(cwd, &["keygen", "--out-dir", "keys", "--name", "k"]);
    assert_clean_error(&o, "already exists");
    assert_eq!(std::fs::read(cwd.join("keys/k.key")).unwrap(), before);
    // A lone public key also blocks, and nothing is written.
    std::fs::write(cwd.join("keys/p.pub"), "x").unwrap();
    let o = regent(cwd, &["keygen", "--out-dir", "keys", "--name", "p"]);
    assert_clean_error(&o, "p.pub already exists");
    assert!(!cwd.join("keys/p.key").exists());
    let o = regent(cwd, &["keygen", "--out-dir", "keys", "--name", "../escape"]);
    assert_clean_error(&o, "--name");
}

#[test]
fn build_refuses_broken_policies() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let dir = policy_dir(cwd);
    write_tree(
        &dir,
        &[(
            "envoy/unsafe.rego",
            "package envoy.unsafe\n\nimport rego.v1\n\nz if {\n\tw == 1\n}\n",
        )],
    );
    let o = regent(cwd, &["build", "policies", "-o", "b.tar.gz"]);
    assert_clean_error(&o, "unsafe.rego:6");
    assert!(!cwd.join("b.tar.gz").exists());

    // A decision path the sidecar cannot use is refused when asked for.
    let dir = cwd.join("p2");
    write_tree(&dir, &[("authz.rego", POLICY), ("authz/data.json", DATA)]);
    let o = regent(
        cwd,
        &[
            "build",
            "p2",
            "-o",
            "c.tar.gz",
            "--path",
            "envoy/authz/nope",
        ],
    );
    assert_clean_error(&o, "envoy/authz/nope");
    let o = regent(
        cwd,
        &[
            "build",
            "p2",
            "-o",
            "c.tar.gz",
            "--path",
            "envoy/authz/allow",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // A decision rule that cannot be evaluated (an unsafe variable in its head, which regorus
    // reports only at evaluation) is refused, as the server's gate and the sidecar refuse it.
    let dir = cwd.join("p3");
    write_tree(
        &dir,
        &[(
            "authz.rego",
            "package envoy.authz\n\nimport rego.v1\n\nallow := {\"allowed\": true, \"headers\": {\"x\": y}}\n",
        )],
    );
    let o = regent(
        cwd,
        &[
            "build",
            "p3",
            "-o",
            "d.tar.gz",
            "--path",
            "envoy/authz/allow",
        ],
    );
    assert_clean_error(&o, "authz.rego:5");
    assert!(!cwd.join("d.tar.gz").exists());

    // --key without --kid is a usage error (exit 1, like any error), not a panic.
    let o = regent(cwd, &["build", "p2", "--key", "k.key"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("--kid"), "{}", stderr(&o));
}

#[test]
fn build_sets_roots_and_refuses_packages_outside_them() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    policy_dir(cwd);
    let o = regent(
        cwd,
        &[
            "build", "policies", "-o", "b.tar.gz", "--root", "envoy", "--root", "authz",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let bundle = read_bundle(&cwd.join("b.tar.gz"));
    assert_eq!(
        bundle.manifest().effective_roots(),
        vec!["envoy".to_string(), "authz".to_string()]
    );

    let o = regent(
        cwd,
        &["build", "policies", "-o", "c.tar.gz", "--root", "envoy"],
    );
    assert_clean_error(&o, "authz/data.json");
    assert!(
        stderr(&o).contains("outside the bundle roots"),
        "{}",
        stderr(&o)
    );
    assert!(!cwd.join("c.tar.gz").exists());

    // A .manifest in the directory is used when no --root is given.
    write_tree(
        cwd,
        &[("policies/.manifest", r#"{"roots": ["envoy/authz"]}"#)],
    );
    let o = regent(cwd, &["build", "policies", "-o", "d.tar.gz"]);
    assert_clean_error(&o, "outside the bundle roots");
}

fn openssl(cwd: &Path, args: &[&str]) {
    let o = std::process::Command::new("openssl")
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn build_sign_and_verify_with_rsa_and_ec_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    policy_dir(cwd);
    let keys: [(&str, &[&str], Option<&str>, &str); 4] = [
        (
            "rsa",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            None,
            "RS256",
        ),
        (
            "rsa",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Some("PS384"),
            "PS384",
        ),
        (
            "p256",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            None,
            "ES256",
        ),
        (
            "p521",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521"],
            None,
            "ES512",
        ),
    ];
    for (name, genpkey, alg, want) in keys {
        let (key, public) = (format!("{name}.pem"), format!("{name}.pub.pem"));
        let mut args = vec!["genpkey"];
        args.extend_from_slice(genpkey);
        args.extend(["-out", &key]);
        openssl(cwd, &args);
        openssl(cwd, &["pkey", "-in", &key, "-pubout", "-out", &public]);

        let mut build = vec![
            "build", "policies", "-o", "b.tar.gz", "--key", &key, "--kid", name,
        ];
        if let Some(a) = alg {
            build.extend(["--signing-alg", a]);
        }
        let o = regent(cwd, &build);
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
        let kid_spec = format!("{public}:{name}");
        let o = regent(cwd, &["verify", "b.tar.gz", "--key", &kid_spec]);
        assert_eq!(code(&o), 0, "{want}: {}{}", stdout(&o), stderr(&o));

        // `regent sign` re-signs the archive; the library sees the algorithm in the header.
        let mut sign = vec!["sign", "b.tar.gz", "--key", &key, "--kid", name];
        if let Some(a) = alg {
            sign.extend(["--signing-alg", a]);
        }
        let o = regent(cwd, &sign);
        assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains(want), "{}", stdout(&o));
        let mut ring = Keyring::new();
        ring.insert_file(name, &cwd.join(&public)).unwrap();
        verify(
            &read_bundle(&cwd.join("b.tar.gz")),
            &ring,
            &VerifyOptions::default(),
        )
        .unwrap();
    }
    // An algorithm that does not fit the key, and HMAC, are refused by name.
    for bad in ["ES256", "HS256"] {
        let o = regent(
            cwd,
            &[
                "sign",
                "b.tar.gz",
                "--key",
                "rsa.pem",
                "--kid",
                "rsa",
                "--signing-alg",
                bad,
            ],
        );
        assert_eq!(code(&o), 1);
        assert!(stderr(&o).contains(bad), "{}", stderr(&o));
    }
    // An RS256 bundle checked against an EC key: refused, naming kid and algorithm.
    let o = regent(cwd, &["sign", "b.tar.gz", "--key", "rsa.pem", "--kid", "k"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = regent(cwd, &["verify", "b.tar.gz", "--key", "p256.pub.pem:k"]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains("\"k\"") && err.contains("RS256"), "{err}");
}

#[test]
fn keygen_makes_keys_for_every_algorithm_that_build_and_verify_use() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    policy_dir(cwd);
    for alg in [
        "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
    ] {
        let o = regent(
            cwd,
            &["keygen", "--out-dir", "keys", "--name", alg, "--alg", alg],
        );
        assert_eq!(code(&o), 0, "{alg}: {}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains(&format!("algorithm:   {alg}")),
            "{}",
            stdout(&o)
        );
        let private = std::fs::read_to_string(cwd.join(format!("keys/{alg}.key"))).unwrap();
        assert!(
            private.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{alg}: {private}"
        );
        let public = std::fs::read_to_string(cwd.join(format!("keys/{alg}.pub"))).unwrap();
        assert!(
            public.starts_with("-----BEGIN PUBLIC KEY-----\n"),
            "{alg}: {public}"
        );

        let key = format!("keys/{alg}.key");
        let o = regent(
            cwd,
            &[
                "build",
                "policies",
                "-o",
                "b.tar.gz",
                "--key",
                &key,
                "--kid",
                alg,
                "--signing-alg",
                alg,
            ],
        );
        assert_eq!(code(&o), 0, "{alg}: {}{}", stdout(&o), stderr(&o));
        let spec = format!("keys/{alg}.pub:{alg}");
        let o = regent(cwd, &["verify", "b.tar.gz", "--key", &spec]);
        assert_eq!(code(&o), 0, "{alg}: {}{}", stdout(&o), stderr(&o));
        // The library agrees, and the token names the algorithm asked for.
        let mut ring = Keyring::new();
        ring.insert_file(alg, &cwd.join(format!("keys/{alg}.pub")))
            .unwrap();
        let bundle = read_bundle(&cwd.join("b.tar.gz"));
        verify(&bundle, &ring, &VerifyOptions::default()).unwrap();
        assert_eq!(token_header(&bundle)["alg"], alg);
    }
    // openssl reads the keys as what they claim to be.
    for (alg, want) in [
        ("RS256", "2048 bit"),
        ("ES384", "384 bit"),
        ("ES512", "521 bit"),
    ] {
        let o = std::process::Command::new("openssl")
            .current_dir(cwd)
            .args(["pkey", "-in", &format!("keys/{alg}.key"), "-noout", "-text"])
            .output()
            .expect("openssl");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && text.contains(want), "{alg}: {text}");
    }
    let o = regent(
        cwd,
        &[
            "keygen",
            "--out-dir",
            "keys",
            "--name",
            "rsa-big",
            "--alg",
            "RS256",
            "--rsa-bits",
            "4096",
        ],
    );
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = regent(
        cwd,
        &[
            "keygen",
            "--out-dir",
            "keys",
            "--name",
            "weak",
            "--alg",
            "RS256",
            "--rsa-bits",
            "1024",
        ],
    );
    assert_clean_error(&o, "--rsa-bits 1024");
    for bad in ["HS256", "none", "rs256"] {
        let o = regent(
            cwd,
            &["keygen", "--out-dir", "keys", "--name", "x", "--alg", bad],
        );
        assert_clean_error(&o, &format!("--alg {bad:?}"));
        assert!(!cwd.join("keys/x.key").exists());
    }
}
