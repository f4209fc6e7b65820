//! `regent verify` (not implemented yet).

/// Arguments of `regent verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {}

/// Runs `regent verify`; returns the exit code.
pub fn run(_args: VerifyArgs) -> anyhow::Result<u8> {
    anyhow::bail!("regent verify is not implemented yet")
}
