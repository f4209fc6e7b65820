//! `regent build` (not implemented yet).

/// Arguments of `regent build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {}

/// Runs `regent build`; returns the exit code.
pub fn run(_args: BuildArgs) -> anyhow::Result<u8> {
    anyhow::bail!("regent build is not implemented yet")
}
