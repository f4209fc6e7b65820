//! What Regent's test suites share, so each helper is written once: bounded polling of a
//! condition (tests wait for background work, never sleep a fixed time) and reading samples out
//! of a Prometheus `/metrics` page. Dev-only: no program depends on it.

#![forbid(unsafe_code)]

use std::future::Future;
use std::time::Duration;

/// How often the conditions are polled.
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it holds or `timeout` passes; whether it held.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    eventually_some(timeout, || {
        let held = cond().then_some(());
        async move { held }
    })
    .await
    .is_some()
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub async fn eventually_some<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The value of one sample in Prometheus text, named exactly with its labels, e.g.
/// `regent_check_errors_total{reason="eval_error"}` (a longer name with the same prefix does not
/// match).
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_their_exact_name_and_labels() {
        let page = "# HELP x_total X.\nx_total 3\nx_total_more 9\ny{a=\"b\"} 1.5 1700000000\n";
        assert_eq!(metric(page, "x_total"), Some(3.0));
        assert_eq!(metric(page, "x_total_more"), Some(9.0));
        assert_eq!(
            metric(page, "y{a=\"b\"}"),
            Some(1.5),
            "timestamps are ignored"
        );
        assert_eq!(metric(page, "x"), None);
        assert_eq!(metric(page, "y"), None);
    }

    #[tokio::test]
    async fn polling_stops_when_the_condition_holds_or_the_time_is_up() {
        let mut n = 0;
        assert!(
            eventually(Duration::from_secs(5), || {
                n += 1;
                n == 3
            })
            .await
        );
        assert_eq!(n, 3);
        let started = tokio::time::Instant::now();
        assert!(!eventually(Duration::from_millis(60), || false).await);
        assert!(started.elapsed() >= Duration::from_millis(60));
        let got = eventually_some(Duration::from_secs(5), || async { Some(7) }).await;
        assert_eq!(got, Some(7));
    }
}
