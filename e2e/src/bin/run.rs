//! `make run`: the whole system on its embedded defaults, on fixed local ports, until Ctrl-C.
//!
//! A bare git repository seeded from `policies/` (with a pre-receive hook that refuses a push
//! the publish gate would refuse, and a post-receive hook that notifies the bundle server), a
//! signing key from `regent keygen`, `regent serve`, `regent-sidecar` syncing from it, the echo
//! and Orders upstreams, and Envoy on 127.0.0.1:10000. Every process is stopped when this
//! program ends (Ctrl-C, SIGTERM, or one of them dying).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use regent_e2e::envoy::{Envoy, EnvoyOptions};
use regent_e2e::git::PolicyRepo;
use regent_e2e::harness::Harness;
use regent_e2e::ports::check_free;
use regent_e2e::server::{keygen, BundleServer, KID};
use regent_e2e::sidecar::{Sidecar, SidecarOptions};
use regent_e2e::upstreams::Upstream;

/// Command line (every value has the default `make run` uses).
#[derive(Parser)]
#[command(
    name = "regent-e2e-run",
    about = "Regent, locally: git repo, bundle server, sidecar, Envoy, upstreams"
)]
struct Args {
    /// Working directory (emptied at start): repository, clone, keys, configs, logs.
    #[arg(long, default_value = ".run")]
    dir: PathBuf,
    /// Policy tree the repository is seeded from (default: policies/, else the e2e test policy).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Envoy listener port.
    #[arg(long, default_value_t = 10000)]
    envoy_port: u16,
    /// Envoy admin port.
    #[arg(long, default_value_t = 9901)]
    envoy_admin_port: u16,
    /// Bundle server port.
    #[arg(long, default_value_t = 8282)]
    server_port: u16,
    /// Sidecar ext_authz gRPC port.
    #[arg(long, default_value_t = 9191)]
    sidecar_grpc_port: u16,
    /// Sidecar health/metrics port.
    #[arg(long, default_value_t = 8181)]
    sidecar_http_port: u16,
    /// Echo upstream port.
    #[arg(long, default_value_t = 8080)]
    echo_port: u16,
    /// Orders gRPC upstream port.
    #[arg(long, default_value_t = 50051)]
    orders_port: u16,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    for (port, what) in [
        (args.envoy_port, "Envoy listener"),
        (args.envoy_admin_port, "Envoy admin"),
        (args.server_port, "regent serve"),
        (args.sidecar_grpc_port, "sidecar gRPC"),
        (args.sidecar_http_port, "sidecar HTTP"),
        (args.echo_port, "echo upstream"),
        (args.orders_port, "Orders upstream"),
    ] {
        check_free(port, what)?;
    }
    regent_e2e::server::check_hook_tools()?;
    let exe = std::env::current_exe().context("locating this binary")?;
    let dir = std::path::absolute(&args.dir).context("resolving --dir")?;
    let mut h = Harness::at("make-run", dir, &exe, false)?;
    let result = run(&h, &args).await;
    if result.is_ok() {
        h.pass();
    }
    result
}

/// The policy tree the repository is seeded from, and the bundle's directory inside it.
fn seed(args: &Args) -> (PathBuf, String) {
    if let Some(p) = &args.policies {
        return (p.clone(), ".".to_string());
    }
    let root = regent_e2e::bins::repo_root();
    let policies = root.join("policies");
    if policies.join("envoy/.manifest").is_file() {
        (policies, "envoy".to_string())
    } else {
        (root.join("e2e/testdata/policy"), ".".to_string())
    }
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}

/// Demo tokens (`policies/envoy/demo-tokens.json`), by name.
fn demo_tokens(seed: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(seed.join("envoy/demo-tokens.json")).ok()?;
    serde_json::from_str(&text).ok()
}

async fn run(h: &Harness, args: &Args) -> Result<()> {
    let (seed, bundle_dir) = seed(args);
    println!(
        "Regent: starting locally in {} (logs in {})",
        h.dir.display(),
        h.logs.display()
    );
    let repo = PolicyRepo::create(&h.path("git")?, &seed, "main")
        .with_context(|| format!("seeding the policy repository from {}", seed.display()))?;
    let (private, public) = keygen(h, &h.path("keys")?)?;
    let mut sopts = BundleServer::options(h, &repo.bare, "main", &private)?;
    sopts.port = args.server_port;
    sopts.bundle_dir = bundle_dir;
    // The hook notifies the server at once; polling also catches pushes made around the hook.
    sopts.poll_interval_seconds = 10;
    let mut server = BundleServer::start(h, sopts).await?;
    server.install_hooks(&repo)?;
    let seed_commit = repo.head()?;
    let status = server
        .wait_processed(&seed_commit, Duration::from_secs(120))
        .await?;
    if status["published_commit"] != seed_commit.as_str() {
        anyhow::bail!(
            "the bundle server refused the seed commit of {}: {}",
            seed.display(),
            status["last_build"]
        );
    }

    let mut echo = Upstream::echo(h, args.echo_port).await?;
    let mut orders = Upstream::orders(h, args.orders_port).await?;
    let mut opts = SidecarOptions::new()?;
    opts.grpc_port = args.sidecar_grpc_port;
    opts.http_port = args.sidecar_http_port;
    opts.bundle_url = Some(server.bundle_url());
    opts.keys = vec![(KID.to_string(), public)];
    opts.persist_dir = Some(h.path("sidecar-persist")?);
    opts.decision_log = Some(h.logs.join("decisions.jsonl"));
    opts.status_url = Some(server.status_report_url());
    let mut sidecar = Sidecar::start(h, "sidecar", opts).await?;
    sidecar
        .wait_revision(&seed_commit, Duration::from_secs(120))
        .await?;
    let mut envoy = Envoy::start(
        h,
        "envoy",
        EnvoyOptions {
            listener_port: args.envoy_port,
            admin_port: args.envoy_admin_port,
            authz_port: args.sidecar_grpc_port,
            echo_port: args.echo_port,
            orders_port: args.orders_port,
            failure_mode_allow: false,
            otlp_port: None,
        },
    )
    .await?;

    // A clone for the user to edit, with a local identity so `git commit` works on a fresh machine.
    let clone = h.dir.join("my-policies");
    regent_e2e::git::git(
        &h.dir,
        &["clone", "--quiet", path_str(&repo.bare)?, path_str(&clone)?],
    )?;
    regent_e2e::git::git(&clone, &["config", "user.name", "Regent demo"])?;
    regent_e2e::git::git(&clone, &["config", "user.email", "demo@regent.invalid"])?;

    match demo_tokens(&seed) {
        Some(tokens) => print_demo_guide(args, &repo.bare, &h.dir, &h.logs, &tokens),
        None => print_test_policy_guide(args, &repo.bare, &h.dir, &h.logs),
    }

    // Supervise until Ctrl-C / SIGTERM, or until a process dies (then report it and stop the rest).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                sidecar.proc().ensure_running()?;
                envoy.proc().ensure_running()?;
                echo.proc().ensure_running()?;
                orders.proc().ensure_running()?;
                server.ensure_running()?;
            }
        }
    }
    println!("\nStopping Envoy, the sidecar, the upstreams and the bundle server...");
    drop(envoy);
    drop(sidecar);
    drop(echo);
    drop(orders);
    server.stop();
    println!(
        "Stopped. The repository, clone and logs stay in {}.",
        h.dir.display()
    );
    Ok(())
}

fn print_running(args: &Args, bare: &Path, logs: &Path) {
    println!(
        r#"
Regent is running:
  Envoy            http://127.0.0.1:{e}   (admin http://127.0.0.1:{admin})
  regent serve     http://127.0.0.1:{srv}  (curl -s http://127.0.0.1:{srv}/v1/status, /v1/fleet)
  regent-sidecar   gRPC 127.0.0.1:{grpc}, health/metrics http://127.0.0.1:{http}/ready
  upstreams        echo http://127.0.0.1:{echo}, gRPC Orders 127.0.0.1:{orders}
  policy repo      {bare}
  logs             {logs}  (decisions.jsonl: the sidecar's decision log)"#,
        e = args.envoy_port,
        admin = args.envoy_admin_port,
        srv = args.server_port,
        grpc = args.sidecar_grpc_port,
        http = args.sidecar_http_port,
        echo = args.echo_port,
        orders = args.orders_port,
        bare = bare.display(),
        logs = logs.display(),
    );
}

fn print_demo_guide(args: &Args, bare: &Path, dir: &Path, logs: &Path, tokens: &serde_json::Value) {
    print_running(args, bare, logs);
    let e = args.envoy_port;
    let clone = dir.join("my-policies");
    let token = |name: &str| tokens[name].as_str().unwrap_or("").to_string();
    println!(
        r#"
Demo tokens (policies/envoy/demo-tokens.json; paste these into your shell):
  ALICE='{alice}'
  ADMIN='{admin}'

Try it (the echo upstream answers with the method, path and headers it received):
  curl -i http://127.0.0.1:{e}/public/hello                                          # open route: 200
  curl -i -H "Authorization: Bearer $ALICE" http://127.0.0.1:{e}/api/orders          # allowed: 200, upstream sees x-regent-subject: alice
  curl -i -X DELETE -H "Authorization: Bearer $ALICE" http://127.0.0.1:{e}/api/orders/1  # denied: 403 {{"error":"forbidden","reason":"missing scope orders:admin",...}}
  curl -i -X DELETE -H "Authorization: Bearer $ADMIN" http://127.0.0.1:{e}/api/orders/1  # allowed: the admin token has orders:admin
  curl -i http://127.0.0.1:{e}/api/catalog                                           # no token: 401 {{"error":"unauthenticated",...}}

Change the policy with git and watch the answer flip (make /api/catalog public):
  cd {clone}        # a clone of {bare}
  sed -i 's|"public_routes": \[|"public_routes": [\n    {{"methods": ["GET"], "path": ["api", "catalog"]}},|' envoy/envoy/authz/data.json
  git commit -qam 'public catalog' && git push      # remote: regent: published commit ...
  curl -i http://127.0.0.1:{e}/api/catalog                                           # now 200

A push whose policy tests fail is refused by git (pre-receive hook), and the old answer stays:
  sed -i 's|"scope": "orders:admin"|"scope": "orders:write"|' envoy/envoy/authz/data.json
  git commit -qam 'let writers delete' && git push  # refused: test test_obvious_deny_alice_cannot_delete failed at ...
  curl -i -X DELETE -H "Authorization: Bearer $ALICE" http://127.0.0.1:{e}/api/orders/1  # still 403
  git reset -q --hard HEAD~1                        # drop the refused commit

Press Ctrl-C to stop everything."#,
        alice = token("alice"),
        admin = token("admin"),
        bare = bare.display(),
        clone = clone.display(),
    );
}

fn print_test_policy_guide(args: &Args, bare: &Path, dir: &Path, logs: &Path) {
    print_running(args, bare, logs);
    let e = args.envoy_port;
    let clone = dir.join("my-policies");
    println!(
        r#"
Try it (the echo upstream answers with the method, path and headers it received):
  curl -i -H 'x-user: bob' http://127.0.0.1:{e}/api/items                 # allowed: bob is a reader
  curl -i -H 'x-user: bob' -X DELETE http://127.0.0.1:{e}/api/items/1     # denied: 403 and the policy's body
  curl -i http://127.0.0.1:{e}/api/items                                  # no identity: the policy's 401

Change the policy with git and watch the answer flip (carol becomes an admin):
  cd {clone}        # a clone of {bare}
  sed -i 's/"carol": \[\]/"carol": ["admin"]/' roles/data.json
  git commit -qam 'grant carol admin' && git push
  curl -i -H 'x-user: carol' -X DELETE http://127.0.0.1:{e}/api/items/1   # now 200

Press Ctrl-C to stop everything."#,
        bare = bare.display(),
        clone = clone.display(),
    );
}
