//! Running host commands with errors that say which command failed and why.

use std::process::{Command, Output, Stdio};

use crate::{Error, Result};

/// Render a command line for error messages.
pub(crate) fn render(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push_str(&format!("'{a}'"));
        } else {
            s.push_str(a);
        }
    }
    s
}

/// Run `program args`, capture its output, and fail unless it exits 0.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = output(program, args)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(failure(program, args, &out))
    }
}

/// Run `program args` and capture its output whatever the exit status.
pub(crate) fn output(program: &str, args: &[&str]) -> Result<Output> {
    tracing::debug!(command = %render(program, args), "run");
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("cannot start `{}`", render(program, args)), e))
}

/// The error for a command that exited with a failure.
pub(crate) fn failure(program: &str, args: &[&str], out: &Output) -> Error {
    Error::Command {
        command: render(program, args),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

/// Find a program on the standard PATH directories.
pub(crate) fn which(prog: &str) -> Option<std::path::PathBuf> {
    [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|d| std::path::Path::new(d).join(prog))
    .find(|p| p.is_file())
}
