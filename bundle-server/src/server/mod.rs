//! `regent serve`: the bundle server. (Not implemented yet.)

/// Arguments of `regent serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

/// Runs the server until it is stopped; returns the exit code.
pub fn run(_args: ServeArgs) -> anyhow::Result<u8> {
    anyhow::bail!("regent serve is not implemented yet")
}
