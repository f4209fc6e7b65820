//! The `regent-sidecar` binary as a child process, shared by the tests that run it: spawned with
//! its stderr read line by line on a thread, JSON log events awaited with a bound, killed when the
//! test ends however it ends.
#![allow(dead_code)]

use std::io::BufRead;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_regent-sidecar");

/// Runs the binary to its end with `args`: (exit code, stderr).
pub(crate) fn run_to_end(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running sidecar. Dropping it kills the process and reaps it.
pub(crate) struct Proc {
    /// The process.
    pub child: Child,
    /// Its stderr, one line per message.
    pub lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts the binary with `args`.
    pub(crate) fn spawn(args: &[&str]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Proc::spawn_command(cmd)
    }

    /// Starts `cmd` (the binary, with arguments or environment set by the caller), with
    /// `RUST_LOG` removed so the log level is the configured one.
    pub(crate) fn spawn_command(mut cmd: Command) -> Proc {
        let mut child = cmd
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc { child, lines }
    }

    /// The first JSON log event with this message (bounded wait); panics with every line seen
    /// otherwise. Needs `--log-format json`.
    pub(crate) fn event(&self, message: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: serde_json::Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
                    if v["message"] == message {
                        return v;
                    }
                    seen.push(line);
                }
                Err(_) => break,
            }
        }
        panic!("no {message:?} event; saw {seen:#?}");
    }

    /// The exit status once the process has ended, waiting at most `timeout`.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The exit status if the process has already ended.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// The address under `key` (`grpc`, `http`) in a `regent-sidecar listening` event.
pub(crate) fn listening_addr(listening: &serde_json::Value, key: &str) -> std::net::SocketAddr {
    listening[key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{key} address in {listening}"))
}
