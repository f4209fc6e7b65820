//! `regent eval`: evaluates one rule of a bundle for an input document and prints the result.
//!
//! Exit codes: 0 the rule has a value (printed as JSON), 2 it is undefined for this input, 1 error.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use regorus::Value;

use super::engine::{policy_engine, rule_from_path};
use super::files::{read_bundle, read_input};

/// Arguments of `regent eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Bundle: a policy directory or a `.tar.gz` archive.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Input document (JSON file, `-` for standard input); without it `input` is undefined.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Rule to evaluate: a decision path as in the sidecar's `policy.path`, or a `data.` reference.
    #[arg(long, default_value = "envoy/authz/allow")]
    pub path: String,
    /// Extra data (JSON or YAML object merged into `data`), repeatable.
    #[arg(long = "data", value_name = "FILE")]
    pub data: Vec<PathBuf>,
}

/// Runs `regent eval`; returns the exit code (0 defined, 2 undefined, 1 error).
pub fn run(args: EvalArgs) -> anyhow::Result<u8> {
    let rule = rule_from_path(&args.path)?;
    let bundle = read_bundle(&args.bundle)?;
    let mut engine = policy_engine(&bundle)?;
    for file in &args.data {
        let value = read_data(file)?;
        engine
            .add_data(value)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .with_context(|| format!("--data {}: cannot merge into data", file.display()))?;
    }
    if let Some(path) = &args.input {
        let bytes = read_input(path, "--input")?;
        let input: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("--input {}: not valid JSON", path.display()))?;
        engine.set_input(input);
    }
    let result = match engine.eval_rule(rule.clone()) {
        Ok(v) => v,
        // Plain data documents and whole packages are not rules; a query reads them.
        Err(e) if format!("{e:#}").contains("not a valid rule path") => {
            let results = engine
                .eval_query(rule.clone(), false)
                .map_err(|e| anyhow::anyhow!("{e:#}"))
                .with_context(|| format!("evaluating {rule}"))?;
            results
                .result
                .first()
                .and_then(|r| r.expressions.first())
                .map_or(Value::Undefined, |e| e.value.clone())
        }
        Err(e) => {
            return Err(anyhow::anyhow!("{e:#}")).with_context(|| format!("evaluating {rule}"))
        }
    };
    if result == Value::Undefined {
        eprintln!("regent: {rule} is undefined for this input");
        return Ok(2);
    }
    outln!("{}", serde_json::to_string_pretty(&result)?);
    Ok(0)
}

fn read_data(file: &Path) -> anyhow::Result<Value> {
    let bytes = read_input(file, "--data")?;
    let yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let value: serde_json::Value = if yaml {
        serde_yaml::from_slice(&bytes)
            .with_context(|| format!("--data {}: not valid YAML", file.display()))?
    } else {
        serde_json::from_slice(&bytes)
            .with_context(|| format!("--data {}: not valid JSON", file.display()))?
    };
    if !value.is_object() {
        bail!("--data {}: must be an object", file.display());
    }
    serde_json::from_value(value).with_context(|| format!("--data {}", file.display()))
}
