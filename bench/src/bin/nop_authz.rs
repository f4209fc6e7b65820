//! A NOP ext_authz server: answers every Check with OK without looking at the request. Same stack as
//! the sidecar (tonic on tokio), so it is the floor the sidecar is measured against.
//!
//! `nop_authz [--addr 127.0.0.1:9291] [--current-thread]`; prints `listening <addr>` once bound.
//! By default it runs on tokio's multi-thread runtime, as `#[tokio::main]` gives a tonic server;
//! `--current-thread` runs the single-threaded scheduler the sidecar picks on one CPU, so the bench
//! can also report the sidecar against a floor on the same scheduler.

use clap::Parser;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status;
use tokio_stream::StreamExt as _;

#[derive(Parser)]
struct Args {
    /// Listen address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9291")]
    addr: std::net::SocketAddr,
    /// Run on tokio's single-threaded scheduler instead of the multi-thread one.
    #[arg(long)]
    current_thread: bool,
}

struct Nop;

#[tonic::async_trait]
impl Authorization for Nop {
    async fn check(
        &self,
        _request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse {
            status: Some(Status::default()),
            ..Default::default()
        }))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = if args.current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()?.block_on(serve(args.addr))
}

async fn serve(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    // TCP_NODELAY, as the sidecar sets it: small gRPC frames must not wait for Nagle.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(Nop))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
