//! `regent check` (not implemented yet).

/// Arguments of `regent check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

/// Runs `regent check`; returns the exit code.
pub fn run(_args: CheckArgs) -> anyhow::Result<u8> {
    anyhow::bail!("regent check is not implemented yet")
}
