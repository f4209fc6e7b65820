//! `regent keygen` (not implemented yet).

/// Arguments of `regent keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {}

/// Runs `regent keygen`; returns the exit code.
pub fn run(_args: KeygenArgs) -> anyhow::Result<u8> {
    anyhow::bail!("regent keygen is not implemented yet")
}
