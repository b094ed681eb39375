//! Programs a test runs: to the end, or in the background as a
//! [`Running`] child that is killed when the test ends, passed or failed.
//!
//! The program is the caller's: `env!("CARGO_BIN_EXE_weir")` exists only
//! in the tests of the crate that builds the binary.

use std::ffi::OsStr;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// A running process, killed (SIGKILL) and reaped when dropped, also when
/// a test fails, so that no process outlives its test. It derefs to the
/// [`Child`] for `kill`, `wait` and `try_wait`.
pub struct Running(pub Child);

impl Deref for Running {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `program ARGS` in `dir`, to the end, with its output captured.
pub fn run(program: impl AsRef<OsStr>, args: &[&str], dir: &Path) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.to_string_lossy()))
}

/// `program ARGS` in `dir`, in the background: no standard input or
/// output, its standard error to `stderr`.
pub fn start(
    program: impl AsRef<OsStr>,
    args: &[&str],
    dir: &Path,
    stderr: impl Into<Stdio>,
) -> Running {
    let program = program.as_ref();
    Running(
        Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.to_string_lossy())),
    )
}
