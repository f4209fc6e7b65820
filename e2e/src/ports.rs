//! Free TCP ports on 127.0.0.1, chosen by the kernel (bind to port 0).

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use anyhow::{Context, Result};

/// Ports already handed out by this process: tests run in parallel threads, and a port that
/// was free a moment ago is handed out once only.
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port that is free on 127.0.0.1 now and was not given to another caller in this process.
pub fn free_port() -> Result<u16> {
    for _ in 0..64 {
        let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let port = l.local_addr().context("reading the bound address")?.port();
        drop(l);
        let mut given = GIVEN
            .lock()
            .map_err(|_| anyhow::anyhow!("port registry poisoned"))?;
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port found on 127.0.0.1 after 64 attempts")
}

/// Fails, naming `what`, when `port` cannot be bound on 127.0.0.1 now (used by `make run`,
/// whose ports are fixed so the printed commands stay the same).
pub fn check_free(port: u16, what: &str) -> Result<()> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| {
            format!("port 127.0.0.1:{port} ({what}) is in use; stop whatever holds it")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
        check_free(a, "test").unwrap();
        let held = TcpListener::bind(("127.0.0.1", b)).unwrap();
        let err = check_free(b, "held port").unwrap_err().to_string();
        assert!(err.contains("held port"), "{err}");
        drop(held);
    }
}
