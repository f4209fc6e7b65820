//! `regent eval` (not implemented yet).

/// Arguments of `regent eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {}

/// Runs `regent eval`; returns the exit code.
pub fn run(_args: EvalArgs) -> anyhow::Result<u8> {
    anyhow::bail!("regent eval is not implemented yet")
}
