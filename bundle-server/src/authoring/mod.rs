//! The policy authors' commands, one file each. Every `run` returns the process exit code.

/// `println!` that does not panic when the reader has gone away (`regent check ... | head`): the
/// output is then unwanted, and the exit code must still tell the verdict.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod build;
pub mod check;
pub mod check_request;
mod engine;
pub mod eval;
mod files;
pub mod keygen;
pub mod sign;
pub mod verify;
