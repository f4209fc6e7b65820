//! Writes the fuzz seeds of `seeds/unpack_verify/` and the generated ones of `seeds/data_parse/`
//! (see seeds/README.md): small archives and files that reach the hostile cases of issue 22, which
//! random mutation of small inputs never builds (a valid gzip stream holding a valid tar holding
//! a signed bundle beside an unsigned file whose content expands a thousandfold).
//!
//! Deterministic: same code, same bytes (fixed key, fixed `iat`, deterministic archives), so
//! running it again changes no committed file unless the cases change.
//!
//! ```sh
//! cargo run --manifest-path bundle/fuzz/Cargo.toml --example gen_seeds -- bundle/fuzz/seeds
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use regent_bundle::signing::{self, Keyring, SignClaims, SigningKey, VerifyOptions};
use regent_bundle::{write_tar_gz, Bundle, UnpackLimits, MANIFEST_FILE, SIGNATURES_FILE};

/// The key and key id of the keyring in fuzz_targets/unpack_verify.rs.
const SEED: [u8; 32] = [7; 32];
const KID: &str = "k";
/// The largest file the unpack_verify target's limits admit (`max_file_bytes`).
const TARGET_MAX_FILE: usize = 1 << 20;

type Files = Vec<(String, Vec<u8>)>;

fn main() -> Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: gen_seeds SEEDS_DIR (bundle/fuzz/seeds)")?,
    );
    if !out.join("README.md").is_file() {
        bail!("{}: not the seeds directory (no README.md)", out.display());
    }
    let archives = out.join("unpack_verify");
    let data = out.join("data_parse");
    std::fs::create_dir_all(&archives)?;
    std::fs::create_dir_all(&data)?;

    let key = SigningKey::ed25519_from_bytes(&SEED);
    let signed = signed(&key)?;
    let unsigned: Files = signed
        .iter()
        .filter(|(p, _)| p != SIGNATURES_FILE)
        .cloned()
        .collect();
    let zeros = zeros_json(TARGET_MAX_FILE - 64);

    let cases: Vec<(&str, Files)> = vec![
        // Accepted by both reads: the verified read's whole path, and the YAML anchors,
        // aliases and merge keys a valid signed file may hold.
        ("signed_valid.tar.gz", signed.clone()),
        // Accepted by the unverified read only (no `.signatures.json`).
        ("unsigned_valid.tar.gz", unsigned.clone()),
        // Unlisted files, refused by name at their tar header in the verified read, and parsed
        // within the budgets in the unverified one: before and after `.signatures.json`.
        (
            "unlisted_alias_bomb_yaml_after_signatures.tar.gz",
            insert(&signed, 2, "authz/extra/data.yaml", alias_bomb()),
        ),
        (
            "unlisted_alias_bomb_yaml_before_signatures.tar.gz",
            insert(&signed, 1, "authz/extra/data.yaml", alias_bomb()),
        ),
        (
            "unlisted_zeros_json_before_signatures.tar.gz",
            insert(&signed, 1, "authz/extra/data.json", zeros.clone()),
        ),
        (
            "unlisted_zeros_json_after_signatures.tar.gz",
            insert(&signed, 2, "authz/extra/data.json", zeros.clone()),
        ),
        (
            "unlisted_deep_yaml_flow.tar.gz",
            insert(&signed, 2, "authz/extra/data.yaml", deep_yaml_flow(70_000)),
        ),
        (
            "unlisted_deep_yaml_block.tar.gz",
            insert(&signed, 2, "authz/extra/data.yaml", deep_yaml_block(1_400)),
        ),
        (
            "unlisted_deep_json.tar.gz",
            insert(&signed, 2, "authz/extra/data.json", deep_json(100_000)),
        ),
        (
            "unlisted_policy.tar.gz",
            insert(
                &signed,
                2,
                "authz/extra.rego",
                b"package authz\n\nallow := true\n".to_vec(),
            ),
        ),
        // The same hostile files with no signature at all: the verified read refuses them
        // before reading content, the unverified read runs every parser on them.
        (
            "unsigned_alias_bomb_yaml.tar.gz",
            replace(&unsigned, "authz/data.yaml", alias_bomb()),
        ),
        (
            "unsigned_zeros_json.tar.gz",
            replace(&unsigned, "authz/data.json", zeros.clone()),
        ),
        (
            "unsigned_zeros_json_over_file_limit.tar.gz",
            replace(
                &unsigned,
                "authz/data.json",
                zeros_json(2 * TARGET_MAX_FILE),
            ),
        ),
        (
            "unsigned_deep_yaml_flow.tar.gz",
            replace(&unsigned, "authz/data.yaml", deep_yaml_flow(70_000)),
        ),
        (
            "unsigned_deep_json.tar.gz",
            replace(&unsigned, "authz/data.json", deep_json(100_000)),
        ),
        // Listed files whose bytes changed: another length (refused at the header by the
        // signed size), the same length (refused by the digest), and one made hostile.
        (
            "listed_replaced_same_length.tar.gz",
            replace(&signed, "authz/data.json", same_length_other(&signed)?),
        ),
        (
            "listed_replaced_zeros_json.tar.gz",
            replace(&signed, "authz/data.json", zeros.clone()),
        ),
        (
            "listed_replaced_alias_bomb_yaml.tar.gz",
            replace(&signed, "authz/data.yaml", alias_bomb()),
        ),
        // A listed file missing from the archive.
        (
            "listed_missing.tar.gz",
            signed
                .iter()
                .filter(|(p, _)| p != "authz/data.yaml")
                .cloned()
                .collect(),
        ),
    ];
    for (name, files) in &cases {
        let bytes = write_tar_gz(files.iter().map(|(p, d)| (p.as_str(), d.as_slice())))
            .with_context(|| format!("writing {name}"))?;
        write(&archives.join(name), &bytes)?;
        // What the unpack_verify target's two reads make of it: only signed_valid passes the
        // verified read, so every other seed reaches a refusal.
        let (verified, plain) = reads(&bytes);
        println!("         verified read: {verified}\n         unverified read: {plain}");
        if (*name == "signed_valid.tar.gz") != verified.starts_with("accepted") {
            bail!("{name}: the verified read was not what the seed is for: {verified}");
        }
    }

    // Data files for data_parse (first byte: 0 data.json, 1 data.yaml, 2 data.yml). Kept under
    // the target's -max_len (tools/fuzz.sh).
    let data_cases: Vec<(&str, u8, Vec<u8>)> = vec![
        ("gen_json_zeros", 0, zeros_json(16 << 10)),
        ("gen_json_deep", 0, deep_json(5_000)),
        ("gen_yaml_alias_bomb_merge", 1, alias_bomb_merge()),
        ("gen_yaml_deep_flow", 1, deep_yaml_flow(5_000)),
        ("gen_yaml_deep_block", 2, deep_yaml_block(200)),
        ("gen_yaml_anchors_valid", 1, yaml_with_anchors()),
    ];
    for (name, kind, body) in data_cases {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&body);
        write(&data.join(name), &bytes)?;
    }
    Ok(())
}

/// The unpack_verify target's reads, with its limits and keyring: each one's outcome.
fn reads(bytes: &[u8]) -> (String, String) {
    let limits = UnpackLimits {
        max_compressed_bytes: 1 << 20,
        max_total_bytes: 4 << 20,
        max_file_bytes: 1 << 20,
        max_entries: 256,
        max_depth: 16,
    };
    let mut ring = Keyring::new();
    ring.insert(KID, SigningKey::ed25519_from_bytes(&SEED).verifying_key());
    let verified = match Bundle::from_verified_tar_gz(
        bytes,
        &limits,
        &ring,
        &VerifyOptions::default(),
        None,
    ) {
        Ok(_) => "accepted".to_string(),
        Err(e) => format!("refused: {e}"),
    };
    let plain = match Bundle::from_tar_gz(bytes, &limits).map(|b| b.data().map(|_| ())) {
        Ok(Ok(())) => "accepted".to_string(),
        Ok(Err(e)) => format!("data refused: {e}"),
        Err(e) => format!("refused: {e}"),
    };
    (verified, plain)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    println!("{:>8} {}", bytes.len(), path.display());
    Ok(())
}

/// A valid bundle signed by the fuzz target's key, its entries in archive order: `.manifest`,
/// `.signatures.json`, then the content.
fn signed(key: &SigningKey) -> Result<Files> {
    let files = BTreeMap::from([
        (
            MANIFEST_FILE.to_string(),
            br#"{"revision":"r1","roots":["authz"]}"#.to_vec(),
        ),
        (
            "authz/policy.rego".to_string(),
            b"package authz\n\ndefault allow := false\n\nallow if input.user in data.authz.admins\n"
                .to_vec(),
        ),
        ("authz/data.json".to_string(), br#"{"a": [1, 2, {"b": null}]}"#.to_vec()),
        ("authz/data.yaml".to_string(), yaml_with_anchors()),
    ]);
    let mut bundle = Bundle::from_files(files).context("the valid seed bundle")?;
    let claims = SignClaims {
        iat: Some(1_700_000_000),
        ..SignClaims::default()
    };
    signing::sign(&mut bundle, key, KID, &claims).context("signing the seed bundle")?;
    let files: Files = bundle
        .files()
        .map(|(p, d)| (p.to_string(), d.to_vec()))
        .collect();
    if files.get(1).map(|(p, _)| p.as_str()) != Some(SIGNATURES_FILE) {
        bail!("unexpected entry order in the signed bundle");
    }
    Ok(files)
}

/// `files` with `(path, data)` inserted at index `at`.
fn insert(files: &Files, at: usize, path: &str, data: Vec<u8>) -> Files {
    let mut f = files.clone();
    f.insert(at.min(f.len()), (path.to_string(), data));
    f
}

/// `files` with the bytes of `path` replaced.
fn replace(files: &Files, path: &str, data: Vec<u8>) -> Files {
    let mut f = files.clone();
    if let Some((_, d)) = f.iter_mut().find(|(p, _)| p == path) {
        *d = data;
    }
    f
}

/// The signed `authz/data.json` with one digit changed: same length, other digest.
fn same_length_other(signed: &Files) -> Result<Vec<u8>> {
    let (_, d) = signed
        .iter()
        .find(|(p, _)| p == "authz/data.json")
        .context("authz/data.json in the signed seed")?;
    let mut d = d.clone();
    let i = d
        .iter()
        .position(|b| *b == b'1')
        .context("a digit in authz/data.json")?;
    d[i] = b'9';
    Ok(d)
}

/// Valid YAML with anchors, aliases and a merge key, well within the budgets.
fn yaml_with_anchors() -> Vec<u8> {
    b"admins: &admins [alice, bob]\nbase: &base {read: true, write: false}\nroles:\n  - name: ops\n    <<: *base\n    members: *admins\n  - {name: dev, <<: *base}\n"
        .to_vec()
}

/// ~1 KB of anchors expanding to ~10^11 nodes ("billion laughs").
fn alias_bomb() -> Vec<u8> {
    let mut s = String::from("a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    s.into_bytes()
}

/// The same expansion through merge keys of block mappings.
fn alias_bomb_merge() -> Vec<u8> {
    let mut s = String::from("m0: &m0\n  k0: \"lol\"\n  k1: \"lol\"\n");
    for i in 1..12 {
        s.push_str(&format!("m{i}: &m{i}\n"));
        for j in 0..8 {
            s.push_str(&format!("  x{j}: *m{}\n", i - 1));
        }
        s.push_str(&format!("  <<: *m{}\n", i - 1));
    }
    s.into_bytes()
}

fn zeros_json(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.push(b'[');
    while v.len() < len.saturating_sub(2) {
        v.extend_from_slice(b"0,");
    }
    v.extend_from_slice(b"0]");
    v
}

fn deep_json(depth: usize) -> Vec<u8> {
    format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
}

fn deep_yaml_flow(depth: usize) -> Vec<u8> {
    format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth)).into_bytes()
}

/// Block mappings nested `depth` levels, one space of indentation per level.
fn deep_yaml_block(depth: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..depth {
        s.push_str(&" ".repeat(i));
        s.push_str("k:\n");
    }
    s.push_str(&" ".repeat(depth));
    s.push_str("k: 0\n");
    s.into_bytes()
}
