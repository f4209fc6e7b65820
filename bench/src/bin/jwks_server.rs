//! Serves the JWKS of the edge JWT benchmark (the keys `load` signs with, derived from the fixed
//! seed: the same set `fixtures` writes into `bench/policies/edge_jwt/data.json`) over HTTP, for
//! `bench/policies/edge_jwt_remote`, whose sidecar is configured with
//! `identity.jwks: [{issuer, jwks_url: http://ADDR/jwks}]`. Prints `listening ADDR` on stdout once
//! bound; `GET /requests` answers how many key-set requests it served (see
//! `regent_bench::jwks_server`). Runs until killed.
//!
//! `jwks_server [--addr 127.0.0.1:0]`

use std::io::Write as _;

use clap::Parser;
use regent_bench::jwks_server::JwksServer;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let keys = regent_bench::edge_jwt::Keys::derive();
    let server = JwksServer::start(&args.addr, &keys.jwks()).await?;
    println!("listening {}", server.addr);
    std::io::stdout().flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
