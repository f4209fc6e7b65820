//! gRPC upstream implementing `regent.example.v1.Orders` (proto/regent/example/v1/orders.proto).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use regent_e2e::orders::OrdersServer;

/// Command line.
#[derive(Parser)]
#[command(
    name = "regent-e2e-orders",
    about = "gRPC Orders upstream for Regent's end-to-end tests"
)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!("regent-e2e-orders listening on {}", args.addr);
    tonic::transport::Server::builder()
        .add_service(OrdersServer::new())
        .serve_with_shutdown(args.addr, async {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            } else {
                std::future::pending::<()>().await
            }
        })
        .await
        .with_context(|| format!("serving gRPC on {}", args.addr))?;
    Ok(())
}
