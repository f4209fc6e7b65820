//! A NOP ext_authz server: answers every Check with OK without looking at the request. Same stack as
//! the sidecar (tonic, tokio multi-thread runtime), so it is the floor the sidecar is measured against.
//!
//! `nop_authz [--addr 127.0.0.1:9291]`; prints `listening <addr>` once bound.

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
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
