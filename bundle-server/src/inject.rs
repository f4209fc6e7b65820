//! `regent inject-webhook`: the mutating admission webhook that adds regent-sidecar to pods.
//! (Not implemented yet.)

/// Arguments of `regent inject-webhook`.
#[derive(Debug, clap::Args)]
pub struct InjectWebhookArgs {}

/// Runs the webhook server; returns the exit code.
pub fn run(_args: InjectWebhookArgs) -> anyhow::Result<u8> {
    anyhow::bail!("regent inject-webhook is not implemented yet")
}
