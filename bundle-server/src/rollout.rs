//! `regent rollout status`: how much of the fleet runs a revision. (Not implemented yet.)

/// Arguments of `regent rollout`.
#[derive(Debug, clap::Args)]
pub struct RolloutArgs {}

/// Runs `regent rollout`; returns the exit code.
pub fn run(_args: RolloutArgs) -> anyhow::Result<u8> {
    anyhow::bail!("regent rollout is not implemented yet")
}
