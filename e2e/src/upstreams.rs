//! Starting the echo and Orders upstreams (binaries of this crate) and waiting until they listen.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::harness::Harness;
use crate::process::Proc;
use crate::wait;

/// A running upstream.
pub struct Upstream {
    /// Its port on 127.0.0.1.
    pub port: u16,
    proc: Proc,
}

impl Upstream {
    /// Starts the HTTP echo upstream on `port`.
    pub async fn echo(h: &Harness, port: u16) -> Result<Upstream> {
        Self::start(h, "echo", &h.bins.echo, port).await
    }

    /// Starts the gRPC Orders upstream on `port`.
    pub async fn orders(h: &Harness, port: u16) -> Result<Upstream> {
        Self::start(h, "orders", &h.bins.orders, port).await
    }

    async fn start(h: &Harness, name: &str, bin: &std::path::Path, port: u16) -> Result<Upstream> {
        let mut cmd = Command::new(bin);
        cmd.arg("--addr").arg(format!("127.0.0.1:{port}"));
        let mut proc = Proc::spawn(name, cmd, &h.logs)?;
        wait_listening(&mut proc, port, Duration::from_secs(20)).await?;
        Ok(Upstream { port, proc })
    }

    /// The process.
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`, failing early (with its
/// log) if `proc` exits.
pub async fn wait_listening(proc: &mut Proc, port: u16, timeout: Duration) -> Result<()> {
    let what = format!("{} to listen on 127.0.0.1:{port}", proc.name());
    let start = std::time::Instant::now();
    loop {
        proc.ensure_running()?;
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(wait::POLL).await;
    }
}
