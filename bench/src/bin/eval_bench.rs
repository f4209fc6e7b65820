//! In-process policy evaluation cost per decision, on regorus's VM and on its interpreter.
//!
//! `eval_bench --policy bench/policies/rbac [--iterations 200000]`
//!
//! Compiles the policy directory the way the sidecar does (PolicyStore, Regent's builtins), checks
//! both evaluators give the expected answers for the RBAC request mix, then times (a) evaluation
//! alone (`ActivePolicy::evaluate` on the per-thread evaluator) and (b) the whole decision without
//! gRPC: input document + evaluation + CheckResponse. Prints Markdown table rows.
//!
//! Each figure is the median of several rounds, the three measurements interleaved: on a shared
//! (virtual) machine a neighbour's burst then spoils one round rather than the whole figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use regent_bench::{rbac_mix, RBAC_EXPECTED};
use regent_policy::decision::to_check_response;
use regent_policy::input::{build_input_for, InputNeeds, InputOptions};
use regent_sidecar::config::EngineChoice;
use regent_sidecar::policy::{decision_rule, PolicySettings, PolicyStore};

#[derive(Parser)]
struct Args {
    /// Policy directory or .tar.gz bundle.
    #[arg(long)]
    policy: std::path::PathBuf,
    /// Decision path.
    #[arg(long, default_value = "envoy/authz/allow")]
    path: String,
    /// Timed decisions per evaluator and measurement, over all rounds.
    #[arg(long, default_value_t = 200_000)]
    iterations: usize,
    /// Only this evaluator (`vm` or `interpreter`); both by default.
    #[arg(long)]
    only: Option<String>,
    /// Rounds per measurement; the median round is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bundle = Arc::new(regent_sidecar::local_bundle::load(&args.policy)?);
    let requests = rbac_mix();
    let opts = InputOptions::default();
    for (name, engine) in [
        ("vm", EngineChoice::Vm),
        ("interpreter", EngineChoice::Interpreter),
    ] {
        if args.only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let store = PolicyStore::new(
            PolicySettings {
                rule: decision_rule(&args.path).map_err(anyhow::Error::msg)?,
                engine,
                eval_timeout: Duration::from_millis(100),
                ..PolicySettings::default()
            },
            prometheus::IntCounter::new("bench_activations_total", "activations")?,
        );
        let t = Instant::now();
        let policy = store.activate(&[("rbac".to_string(), bundle.clone())])?;
        let compile = t.elapsed();
        // What the sidecar evaluates: only the parts of the input the policy can read.
        let needs = policy.input_needs();
        let inputs: Vec<_> = requests
            .iter()
            .map(|r| build_input_for(r, &opts, needs))
            .collect::<Result<_, _>>()?;
        for (i, input) in inputs.iter().enumerate() {
            let v = policy.evaluate(input.clone())?;
            anyhow::ensure!(
                v == regorus::Value::from(RBAC_EXPECTED[i]),
                "{name}: request {i} gave {v}, expected {}",
                RBAC_EXPECTED[i]
            );
        }
        // Warm-up, then evaluation alone.
        for i in 0..args.iterations / 10 {
            policy.evaluate(inputs[i % inputs.len()].clone())?;
        }
        let per_round = (args.iterations / args.rounds.max(1)).max(1);
        let eval = || -> anyhow::Result<f64> {
            let t = Instant::now();
            for i in 0..per_round {
                std::hint::black_box(policy.evaluate(inputs[i % inputs.len()].clone())?);
            }
            Ok(t.elapsed().as_secs_f64() * 1e6 / per_round as f64)
        };
        // The whole decision without gRPC, on the pruned input (as the sidecar runs it) and on the
        // whole input document (as with decision logging on).
        let decide = |needs: &InputNeeds| -> anyhow::Result<f64> {
            let t = Instant::now();
            for i in 0..per_round {
                let input = build_input_for(&requests[i % requests.len()], &opts, needs)?;
                let v = policy.evaluate(input)?;
                std::hint::black_box(to_check_response(&v, "bench")?);
            }
            Ok(t.elapsed().as_secs_f64() * 1e6 / per_round as f64)
        };
        let (mut eval_r, mut pruned_r, mut whole_r) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.rounds.max(1) {
            eval_r.push(eval()?);
            pruned_r.push(decide(needs)?);
            whole_r.push(decide(&InputNeeds::All)?);
        }
        let (eval_us, pruned_us, whole_us) = (median(eval_r), median(pruned_r), median(whole_r));
        println!(
            "| {name} ({}) | {:.2} | {:.2} | {:.2} | {:.1} |",
            policy.kind().as_str(),
            eval_us,
            pruned_us,
            whole_us,
            compile.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
