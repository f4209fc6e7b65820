//! Writes the generated data of the real-world benchmark policies:
//! `DIR/edge_jwt/data.json` (the JWKS of the keys `load` signs with), `DIR/edge_jwt_remote/data.json`
//! (its issuer and audience only: the keys come from `jwks_server`) and `DIR/bindings/data.json`
//! (5,000 role bindings). `bench/run.sh` runs it with `DIR = bench/policies` before measuring.
//! Both are deterministic, so a file is rewritten only when its content differs (a changed
//! generator, or a dependency that derives keys differently); `--check` fails instead.
//!
//! `fixtures [--check] DIR`

use std::path::Path;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut check = false;
    let mut dir = None;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--check" => check = true,
            _ if dir.is_none() => dir = Some(a),
            _ => anyhow::bail!("usage: fixtures [--check] DIR"),
        }
    }
    let dir = dir.context("usage: fixtures [--check] DIR")?;
    let dir = Path::new(&dir);
    let keys = regent_bench::edge_jwt::Keys::derive();
    let mut stale = Vec::new();
    for (file, content) in [
        (
            "edge_jwt/data.json",
            regent_bench::edge_jwt::data_json(&keys),
        ),
        (
            "edge_jwt_remote/data.json",
            regent_bench::edge_jwt::remote_data_json(),
        ),
        ("bindings/data.json", regent_bench::bindings::data_json()),
    ] {
        let path = dir.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
            continue;
        }
        std::fs::write(&path, &content).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "fixtures: wrote {} ({} bytes)",
            path.display(),
            content.len()
        );
    }
    anyhow::ensure!(
        stale.is_empty(),
        "out of date (run `fixtures {}`): {}",
        dir.display(),
        stale.join(", ")
    );
    Ok(())
}
