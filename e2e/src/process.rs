//! Child processes that are always stopped: [`Proc`] sends SIGTERM, waits a bounded time, then
//! SIGKILLs, when it is stopped explicitly or dropped (also while a failing test unwinds).

// prctl and kill on our own children, each call with its SAFETY note.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long a process gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// A running child process whose stdout and stderr go to `<log dir>/<name>.log`.
pub struct Proc {
    name: String,
    log: PathBuf,
    child: Option<Child>,
    exit: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd`, appending its stdout and stderr to `<log_dir>/<name>.log`. The child gets
    /// its own process group, so a Ctrl-C in the terminal reaches only the harness, which then
    /// stops its children in order.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Proc> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating log dir {}", log_dir.display()))?;
        let log = log_dir.join(format!("{name}.log"));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. If the harness
        // itself dies without running its guards (SIGKILL, a CI timeout), the kernel sends the
        // child SIGTERM instead of leaving it running.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_string(),
            log,
            child: Some(child),
            exit: None,
        })
    }

    /// The name given at spawn (also the log file's stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process id while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Ok(None)` while running, `Ok(Some(status))` once exited.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(st) = self.exit {
            return Ok(Some(st));
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(self.exit);
        };
        let st = child
            .try_wait()
            .with_context(|| format!("polling {}", self.name))?;
        if let Some(st) = st {
            self.exit = Some(st);
            self.child = None;
        }
        Ok(st)
    }

    /// Fails with the tail of the log when the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(st) = self.try_exit()? {
            anyhow::bail!(
                "{} exited ({st}); last log lines:\n{}",
                self.name,
                tail(&self.log, 40)
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after a grace period; reaps the process. Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.signal_and_reap(libc::SIGTERM, TERM_GRACE)
    }

    /// SIGKILL at once (a crash, as far as its peers can tell); reaps the process.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.signal_and_reap(libc::SIGKILL, Duration::from_secs(5))
    }

    fn signal_and_reap(&mut self, sig: libc::c_int, grace: Duration) -> Option<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return self.exit;
        };
        if let Ok(Some(st)) = child.try_wait() {
            self.exit = Some(st);
            return self.exit;
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped
            // child, so it cannot have been recycled for another process.
            unsafe {
                libc::kill(pid, sig);
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    self.exit = Some(st);
                    return self.exit;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        let _ = child.kill();
        self.exit = child.wait().ok();
        self.exit
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a file (empty when unreadable); bounded to the last 64 KiB.
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_terminates_and_drop_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("regent-e2e-proc-{}", std::process::id()));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; exec sleep 600"]);
        let mut p = Proc::spawn("sleeper", cmd, &dir).unwrap();
        let pid = p.pid().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tail(p.log_path(), 5).contains("started") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(p.try_exit().unwrap().is_none());
        let st = p.stop().unwrap();
        assert!(!st.success());
        // The pid is reaped: signal 0 reports it gone.
        let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0;
        assert!(!alive);
        assert_eq!(p.stop(), Some(st));
        assert_eq!(tail(p.log_path(), 5), "started");
        drop(p);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ensure_running_reports_exit_with_log_tail() {
        let dir = std::env::temp_dir().join(format!("regent-e2e-proc2-{}", std::process::id()));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom-reason >&2; exit 3"]);
        let mut p = Proc::spawn("failing", cmd, &dir).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.try_exit().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let err = p.ensure_running().unwrap_err().to_string();
        assert!(err.contains("boom-reason"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
