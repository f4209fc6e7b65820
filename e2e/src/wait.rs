//! Bounded polling: every wait in the harness has a deadline and says what it waited for.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;

/// Default poll interval: short, because the e2e runtime is dominated by waits.
pub const POLL: Duration = Duration::from_millis(50);

/// Calls `probe` every `POLL` until it returns `Ok(Some(v))` or `timeout` passes. Errors from the
/// probe count as "not yet"; the last one is reported when the deadline passes.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last: Option<String> = None;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(format!("{e:#}")),
        }
        if start.elapsed() >= timeout {
            match last {
                Some(e) => {
                    anyhow::bail!("timed out after {timeout:?} waiting for {what}; last error: {e}")
                }
                None => anyhow::bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_first_ready_value() {
        let mut n = 0;
        let v = until("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let cur = n;
            async move { Ok((cur >= 3).then_some(cur)) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn deadline_names_what_and_last_error() {
        let err = until::<(), _, _>("a thing", Duration::from_millis(120), || async {
            anyhow::bail!("still broken")
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("a thing") && err.contains("still broken"),
            "{err}"
        );
    }
}
