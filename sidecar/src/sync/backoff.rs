//! Delays between polls: jittered periodic polling and gRPC-style error backoff.

use std::time::Duration;

use rand::Rng;

/// Delay before retry number `attempt` (0 = first retry) after consecutive errors:
/// 100ms·1.6^attempt capped at `max`, then ±20% jitter so a fleet that lost the server at
/// the same moment does not come back in lock step.
pub fn error_backoff(attempt: u32, max: Duration) -> Duration {
    let base = 0.1_f64 * 1.6_f64.powi(attempt.min(64) as i32);
    let capped = base.min(max.as_secs_f64());
    let jitter = rand::thread_rng().gen_range(0.8..=1.2);
    Duration::from_secs_f64(capped * jitter)
}

/// Uniformly random wait in `[min, max]` between periodic polls.
pub fn poll_delay(min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    let secs = rand::thread_rng().gen_range(min.as_secs_f64()..=max.as_secs_f64());
    Duration::from_secs_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let max = Duration::from_secs(30);
        for _ in 0..200 {
            let d0 = error_backoff(0, max).as_secs_f64();
            assert!((0.08..=0.12).contains(&d0), "{d0}");
            let d5 = error_backoff(5, max).as_secs_f64();
            let base5 = 0.1 * 1.6_f64.powi(5);
            assert!((base5 * 0.8..=base5 * 1.2).contains(&d5), "{d5}");
            let big = error_backoff(1000, max).as_secs_f64();
            assert!((24.0..=36.0).contains(&big), "{big}");
        }
    }

    #[test]
    fn poll_delay_stays_in_range() {
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(5));
        for _ in 0..200 {
            let d = poll_delay(min, max);
            assert!(d >= min && d <= max, "{d:?}");
        }
        assert_eq!(poll_delay(max, min), max);
    }
}
