//! The async runtime the sidecar runs on, sized to the CPUs it may use.
//!
//! A sidecar is usually given one core or less. On one core, tokio's multi-thread scheduler still
//! hands work between its worker and the thread that drives `block_on`, with atomics and futex
//! wake-ups on every hand-off; measured here, a Check cost about a quarter more server CPU on it than
//! on the single-threaded scheduler (BENCHMARKS.md, "Sidecar Check"). So one usable CPU gets the
//! single-threaded scheduler, and more get the multi-thread one with a worker per CPU. Work that
//! blocks (activation, bundle files) runs on the blocking pool either way, so it never stalls Check.

use serde::Deserialize;

/// `runtime:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads answering requests; 0 means one per CPU the process may use.
    pub worker_threads: usize,
}

/// Most worker threads accepted: far above any core count a sidecar gets, low enough that a typo
/// (an extra digit or two) is refused instead of starting thousands of threads.
pub const MAX_WORKER_THREADS: usize = 1024;

impl RuntimeConfig {
    /// Checks the value range.
    pub fn validate(&self) -> Result<(), String> {
        if self.worker_threads > MAX_WORKER_THREADS {
            return Err(format!(
                "runtime.worker_threads must be at most {MAX_WORKER_THREADS} (0 means one per CPU), got {}",
                self.worker_threads
            ));
        }
        Ok(())
    }
}

/// Which scheduler, and with how many workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Everything on the thread that calls `block_on`.
    CurrentThread,
    /// Work-stealing over this many worker threads (at least 2).
    MultiThread(usize),
}

impl Scheduler {
    /// The scheduler for `cfg`, given the CPUs the process may use (`None` when unknown).
    /// `std::thread::available_parallelism` counts both the CPU affinity mask and a cgroup CPU
    /// quota, so a pod limited to one CPU or less gets the single-threaded scheduler.
    pub fn choose(cfg: &RuntimeConfig, available_cpus: Option<usize>) -> Scheduler {
        let workers = match cfg.worker_threads {
            0 => available_cpus.unwrap_or(1),
            n => n,
        };
        if workers <= 1 {
            Scheduler::CurrentThread
        } else {
            Scheduler::MultiThread(workers)
        }
    }

    /// The name logged at start-up.
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::CurrentThread => "current_thread",
            Scheduler::MultiThread(_) => "multi_thread",
        }
    }

    /// Threads answering requests.
    pub fn worker_threads(self) -> usize {
        match self {
            Scheduler::CurrentThread => 1,
            Scheduler::MultiThread(n) => n,
        }
    }

    /// Builds the runtime, with I/O and timers enabled.
    pub fn build(self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self {
            Scheduler::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Scheduler::MultiThread(n) => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n);
                b
            }
        };
        builder.enable_all().thread_name("regent-sidecar").build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(worker_threads: usize) -> RuntimeConfig {
        RuntimeConfig { worker_threads }
    }

    #[test]
    fn one_cpu_gets_the_single_threaded_scheduler() {
        assert_eq!(
            Scheduler::choose(&cfg(0), Some(1)),
            Scheduler::CurrentThread
        );
        assert_eq!(
            Scheduler::choose(&cfg(1), Some(8)),
            Scheduler::CurrentThread
        );
        // Unknown CPU count: tokio's own fallback is one worker too.
        assert_eq!(Scheduler::choose(&cfg(0), None), Scheduler::CurrentThread);
    }

    #[test]
    fn more_cpus_get_a_worker_each_unless_set() {
        assert_eq!(
            Scheduler::choose(&cfg(0), Some(4)),
            Scheduler::MultiThread(4)
        );
        assert_eq!(
            Scheduler::choose(&cfg(3), Some(1)),
            Scheduler::MultiThread(3)
        );
        assert_eq!(Scheduler::MultiThread(3).worker_threads(), 3);
        assert_eq!(Scheduler::CurrentThread.worker_threads(), 1);
    }

    #[test]
    fn absurd_thread_counts_are_refused_with_the_key_named() {
        let err = cfg(MAX_WORKER_THREADS + 1).validate().unwrap_err();
        assert!(err.contains("runtime.worker_threads"), "{err}");
        assert!(cfg(MAX_WORKER_THREADS).validate().is_ok());
    }

    #[test]
    fn both_schedulers_build_and_run_blocking_work() {
        for s in [Scheduler::CurrentThread, Scheduler::MultiThread(2)] {
            let rt = s.build().expect("runtime");
            let got = rt.block_on(async { tokio::task::spawn_blocking(|| 6 * 7).await });
            assert_eq!(got.expect("blocking task"), 42, "{s:?}");
        }
    }
}
