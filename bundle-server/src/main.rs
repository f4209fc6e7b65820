//! `regent`: the bundle server and the policy authors' CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use regent_bundle_server::{authoring, hook, inject, policy_test, rollout, server};

/// Regent: central Rego policy, signed bundles, and the tools policy authors use.
#[derive(Parser)]
#[command(name = "regent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bundle server: watch the policy git repository, gate, sign and serve bundles.
    Serve(server::ServeArgs),
    /// Build a deterministic bundle (.tar.gz) from a policy directory.
    Build(authoring::build::BuildArgs),
    /// Sign an existing bundle.
    Sign(authoring::sign::SignArgs),
    /// Verify a bundle's signature against public keys.
    Verify(authoring::verify::VerifyArgs),
    /// Generate a signing key pair (PEM): Ed25519 by default, RSA or ECDSA with --alg.
    Keygen(authoring::keygen::KeygenArgs),
    /// Run the `*_test.rego` tests of a policy directory.
    Test(policy_test::TestArgs),
    /// Evaluate a rule of a bundle against an input document.
    Eval(authoring::eval::EvalArgs),
    /// Run an Envoy CheckRequest (JSON) through the sidecar's input builder and decision mapping.
    Check(authoring::check::CheckArgs),
    /// Fleet rollout commands.
    Rollout(rollout::RolloutArgs),
    /// Serve the mutating admission webhook that injects regent-sidecar into pods.
    InjectWebhook(inject::InjectWebhookArgs),
    /// Git server hooks: `pre-receive` refuses a push the publish gate would refuse.
    Hook(hook::HookArgs),
}

fn main() -> ExitCode {
    // clap exits with 2 on a usage error, which `regent test` uses for "tests failed": usage errors
    // exit 1 like any other error, so scripts can rely on each command's documented codes.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Serve(a) => server::run(a),
        Command::Build(a) => authoring::build::run(a),
        Command::Sign(a) => authoring::sign::run(a),
        Command::Verify(a) => authoring::verify::run(a),
        Command::Keygen(a) => authoring::keygen::run(a),
        Command::Test(a) => policy_test::run(a),
        Command::Eval(a) => authoring::eval::run(a),
        Command::Check(a) => authoring::check::run(a),
        Command::Rollout(a) => rollout::run(a),
        Command::InjectWebhook(a) => inject::run(a),
        Command::Hook(a) => hook::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("regent: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
