//! `regent sign` (not implemented yet).

/// Arguments of `regent sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {}

/// Runs `regent sign`; returns the exit code.
pub fn run(_args: SignArgs) -> anyhow::Result<u8> {
    anyhow::bail!("regent sign is not implemented yet")
}
