//! What a hostile bundle costs the sidecar's reader before it is refused: peak memory above the
//! steady state and CPU time of `Bundle::from_verified_tar_gz`, for archives the keyring does not
//! accept (issue 22's worst cases: unsigned, unlisted files before and after `.signatures.json`, no
//! signatures at all) and two whose signature is valid but whose listed file was replaced (another
//! length, refused at its tar header; the same length, refused by its digest).
//!
//! Each case runs in a child process of its own, reading an archive the parent wrote to a file,
//! so the peak (VmHWM) belongs to the read alone. Prints a Markdown table.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use regent_bundle::signing::{self, Keyring, SignClaims, VerifyOptions};
use regent_bundle::{write_tar_gz, Bundle, UnpackLimits, MANIFEST_FILE, SIGNATURES_FILE};

const MANIFEST: &str = r#"{"revision":"r1","roots":["authz"]}"#;
const POLICY: &str = "package authz\n\ndefault allow := false\n";
const KID: &str = "k1";

/// An archive's entries, in order.
type Entry = (String, Vec<u8>);
type Files = Vec<Entry>;

struct Case {
    name: &'static str,
    what: &'static str,
    files: fn(&[Entry]) -> Files,
}

/// A data file the signature does not list: inside the manifest's root, so the only reason to
/// refuse it is that it is unsigned (not its path or its root).
const UNLISTED_JSON: &str = "authz/extra/data.json";
const UNLISTED_YAML: &str = "authz/extra/data.yaml";

const CASES: &[Case] = &[
    Case {
        name: "alias_bomb",
        what: "unsigned `data.yaml`, ~1 KB of anchors expanding to ~10^11 nodes",
        files: |signed| with(signed, AFTER_SIGNATURES, UNLISTED_YAML, alias_bomb()),
    },
    Case {
        name: "zeros_before_signatures",
        what: "unsigned 150 MiB `data.json` of zeros, before `.signatures.json`",
        files: |signed| with(signed, BEFORE_SIGNATURES, UNLISTED_JSON, zeros_json(150 << 20)),
    },
    Case {
        name: "big_json_after_signatures",
        what: "unsigned 200 MiB `data.json`, after `.signatures.json`",
        files: |signed| with(signed, AFTER_SIGNATURES, UNLISTED_JSON, zeros_json(200 << 20)),
    },
    Case {
        name: "deep_yaml",
        what: "unsigned 140 KB `data.yaml` nested 70,000 levels",
        files: |signed| with(signed, AFTER_SIGNATURES, UNLISTED_YAML, deep_yaml()),
    },
    Case {
        name: "no_signatures",
        what: "no `.signatures.json`, 150 MiB `data.json`",
        files: |signed| {
            let mut f = with(signed, BEFORE_SIGNATURES, UNLISTED_JSON, zeros_json(150 << 20));
            f.retain(|(p, _)| p != SIGNATURES_FILE);
            f
        },
    },
    Case {
        name: "listed_file_replaced",
        what: "valid signature replayed, its listed `data.json` replaced by 150 MiB of zeros",
        files: |signed| replaced(signed, zeros_json(150 << 20)),
    },
    Case {
        name: "listed_file_replaced_same_length",
        what: "valid signature replayed, its listed `data.json` replaced by other bytes of the same length",
        files: |signed| replaced(signed, br#"{"a": 2}"#.to_vec()),
    },
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--child") => {
            let file = args.get(2).context("--child FILE KEY")?;
            let key = args.get(3).context("--child FILE KEY")?;
            child(Path::new(file), Path::new(key))
        }
        _ => parent(),
    }
}

fn parent() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("regent-refusal-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (private, public) = signing::generate_key_pem();
    let key = signing::signing_key_from_pem(&private, "bench key")?;
    let key_file = dir.join("k1.pem");
    std::fs::write(&key_file, public)?;
    let signed = signed_files(&key)?;
    if signed.get(AFTER_SIGNATURES - 1).map(|(p, _)| p.as_str()) != Some(SIGNATURES_FILE) {
        bail!("the signed bundle's entries are not in the order the cases assume");
    }
    println!("| case | archive | refusal | peak RSS above steady state | CPU |");
    println!("|---|---:|---|---:|---:|");
    let me = std::env::current_exe()?;
    for case in CASES {
        let path = dir.join(format!("{}.tar.gz", case.name));
        let files = (case.files)(&signed);
        let bytes = write_tar_gz(files.iter().map(|(p, d)| (p.as_str(), d.as_slice())))?;
        std::fs::write(&path, &bytes)?;
        drop(files);
        let out = Command::new(&me)
            .arg("--child")
            .arg(&path)
            .arg(&key_file)
            .output()
            .with_context(|| format!("running case {}", case.name))?;
        if !out.status.success() {
            bail!(
                "case {}: {}",
                case.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let mut parts = line.trim().splitn(3, '\t');
        let (Some(rss), Some(cpu), Some(refusal)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("case {}: unexpected child output {line:?}", case.name);
        };
        println!(
            "| {} | {} KiB | {} | {rss} MiB | {cpu} s |",
            case.what,
            bytes.len().div_ceil(1024),
            refusal.replace('|', "\\|")
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Reads one archive and prints `peak-MiB <TAB> cpu-seconds <TAB> refusal`.
fn child(file: &Path, key: &Path) -> Result<()> {
    let bytes = std::fs::read(file)?;
    let mut ring = Keyring::new();
    ring.insert_file(KID, key)?;
    let opts = VerifyOptions::default();
    let limits = UnpackLimits::default();
    let steady = proc_status_kib("VmRSS")?;
    let cpu0 = cpu_seconds()?;
    let result = Bundle::from_verified_tar_gz(&bytes, &limits, &ring, &opts, None);
    let cpu = cpu_seconds()? - cpu0;
    let peak = proc_status_kib("VmHWM")?;
    let refusal = match result {
        Ok(_) => bail!("{}: accepted", file.display()),
        Err(e) => e.to_string(),
    };
    println!(
        "{:.1}\t{cpu:.2}\t{refusal}",
        peak.saturating_sub(steady) as f64 / 1024.0
    );
    Ok(())
}

fn signed_files(key: &signing::SigningKey) -> Result<Files> {
    let mut files = std::collections::BTreeMap::new();
    files.insert(MANIFEST_FILE.to_string(), MANIFEST.as_bytes().to_vec());
    files.insert("authz/policy.rego".to_string(), POLICY.as_bytes().to_vec());
    files.insert("authz/data.json".to_string(), br#"{"a": 1}"#.to_vec());
    let mut b = Bundle::from_files(files)?;
    signing::sign(&mut b, key, KID, &SignClaims::default())?;
    Ok(b.files()
        .map(|(p, d)| (p.to_string(), d.to_vec()))
        .collect())
}

/// Index in [`signed_files`]'s order (`.manifest`, `.signatures.json`, then the signed content):
/// an entry inserted here comes before `.signatures.json`.
const BEFORE_SIGNATURES: usize = 1;
/// An entry inserted here comes right after `.signatures.json`.
const AFTER_SIGNATURES: usize = 2;

/// All of `signed`, with the unlisted file `path` holding `data` inserted at `at`.
fn with(signed: &[Entry], at: usize, path: &str, data: Vec<u8>) -> Files {
    let mut f = signed.to_vec();
    f.insert(at.min(f.len()), (path.to_string(), data));
    f
}

/// `signed` with the bytes of its listed `authz/data.json` replaced by `data`.
fn replaced(signed: &[Entry], data: Vec<u8>) -> Files {
    let mut f = signed.to_vec();
    if let Some((_, d)) = f.iter_mut().find(|(p, _)| p == "authz/data.json") {
        *d = data;
    }
    f
}

fn zeros_json(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.push(b'[');
    while v.len() < len - 2 {
        v.extend_from_slice(b"0,");
    }
    v.extend_from_slice(b"0]");
    v
}

fn alias_bomb() -> Vec<u8> {
    let mut s = String::from("a0: &a0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    s.into_bytes()
}

fn deep_yaml() -> Vec<u8> {
    format!("a: {}{}\n", "[".repeat(70_000), "]".repeat(70_000)).into_bytes()
}

fn proc_status_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} in /proc/self/status"))
}

/// User + system CPU time of this process.
fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .context("utime/stime in /proc/self/stat")
    };
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name and state.
    // In clock ticks of USER_HZ, which is 100 on every Linux architecture Regent builds for.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
