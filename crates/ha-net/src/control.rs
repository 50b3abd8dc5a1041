//! The operator's control socket: heartbeat's `hb_standby` and `cl_status`, for a running node.
//!
//! A Unix stream socket (mode 0600: whoever may signal the daemon) takes one command line per
//! connection and answers, then closes:
//!
//! | command   | effect                                               | answer            |
//! |-----------|------------------------------------------------------|-------------------|
//! | `standby` | hand every group to the peers, keep running          | `ok`              |
//! | `online`  | leave standby (groups come back with auto_failback)  | `ok`              |
//! | `status`  | nothing                                              | the JSON snapshot |
//!
//! Anything else gets `error: ...` naming the commands. Moving groups home by hand without
//! auto_failback is heartbeat's workflow: `standby` on the node holding them, then `online`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::runtime::NodeControl;
use crate::{Error, Result};

/// Longest command line accepted (longer ones are refused unread).
pub const MAX_LINE: usize = 256;

/// How long a client may take to send its line before the server hangs up.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand {
    /// Hand every group over to the peers and keep running.
    Standby,
    /// Leave standby.
    Online,
    /// Report the status snapshot as JSON.
    Status,
}

impl ControlCommand {
    /// Every command, in the order the help text lists them.
    pub const ALL: [ControlCommand; 3] = [
        ControlCommand::Standby,
        ControlCommand::Online,
        ControlCommand::Status,
    ];

    /// The command's word on the wire.
    pub fn word(self) -> &'static str {
        match self {
            ControlCommand::Standby => "standby",
            ControlCommand::Online => "online",
            ControlCommand::Status => "status",
        }
    }

    /// Parse one command line (surrounding white space and the line end are ignored).
    pub fn parse(line: &str) -> std::result::Result<ControlCommand, String> {
        let word = line.trim();
        Self::ALL
            .into_iter()
            .find(|c| c.word() == word)
            .ok_or_else(|| {
                let shown: String = word.chars().take(40).collect();
                format!(
                    "unknown command `{shown}` (commands: {})",
                    Self::ALL.map(ControlCommand::word).join(", ")
                )
            })
    }
}

/// A running control socket; dropping it stops serving and removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Serve `node`'s control socket at `path`. A stale socket file (nobody listening) is
/// replaced; a live one is an error, so two daemons cannot share a path. Needs a tokio runtime.
pub async fn serve(path: &Path, node: NodeControl) -> Result<ControlServer> {
    let ctx = |what: &str| format!("control socket {}: {what}", path.display());
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        // Never delete what is not a socket (a mistyped path must not cost a file).
        if !meta.file_type().is_socket() {
            return Err(Error::Control(format!(
                "{} exists and is not a socket; pick another --control path",
                path.display()
            )));
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(Error::Control(format!(
                "{} is in use by a running node; stop it or pick another --control path",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| Error::io(ctx("remove the stale socket"), e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| Error::io(ctx("bind"), e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(ctx("chmod 0600"), e))?;
    }
    tracing::info!(path = %path.display(), "control socket open");
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let node = node.clone();
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &node).await {
                            tracing::debug!(error = %e, "control client");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(ControlServer {
        path: path.to_path_buf(),
        task,
    })
}

/// Read one line from a client, run it, write the answer.
async fn answer(stream: UnixStream, node: &NodeControl) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut limited = BufReader::new(rd.take(MAX_LINE as u64 + 1));
    let read = tokio::time::timeout(READ_TIMEOUT, limited.read_line(&mut line)).await;
    let reply = match read {
        Err(_) => "error: no command line within 5 s\n".to_string(),
        Ok(Err(e)) => format!("error: unreadable command: {e}\n"),
        Ok(Ok(_)) if line.len() > MAX_LINE => {
            format!("error: command longer than {MAX_LINE} bytes\n")
        }
        Ok(Ok(_)) => match ControlCommand::parse(&line) {
            Err(e) => format!("error: {e}\n"),
            Ok(cmd) => run(cmd, node).await,
        },
    };
    wr.write_all(reply.as_bytes()).await?;
    wr.shutdown().await
}

async fn run(cmd: ControlCommand, node: &NodeControl) -> String {
    tracing::info!(command = cmd.word(), "control command");
    let done = match cmd {
        ControlCommand::Standby => node.standby().await,
        ControlCommand::Online => node.online().await,
        ControlCommand::Status => {
            return match serde_json::to_string_pretty(&node.status()) {
                Ok(json) => json + "\n",
                Err(e) => format!("error: status: {e}\n"),
            };
        }
    };
    match done {
        Ok(()) => "ok\n".into(),
        Err(e) => format!("error: {e}\n"),
    }
}

/// Send `cmd` to the node serving `path` and return its answer (without the final line end);
/// an `error: ...` answer becomes [`Error::Control`].
pub async fn request(path: &Path, cmd: ControlCommand) -> Result<String> {
    let ctx = |what: &str| format!("control socket {}: {what}", path.display());
    let mut s = UnixStream::connect(path)
        .await
        .map_err(|e| Error::io(ctx("connect (is the node running with --control?)"), e))?;
    s.write_all(format!("{}\n", cmd.word()).as_bytes())
        .await
        .map_err(|e| Error::io(ctx("send"), e))?;
    let mut answer = String::new();
    BufReader::new(s)
        .read_to_string(&mut answer)
        .await
        .map_err(|e| Error::io(ctx("read the answer"), e))?;
    let answer = answer.trim_end().to_string();
    match answer.strip_prefix("error: ") {
        Some(e) => Err(Error::Control(e.to_string())),
        None if answer.is_empty() => {
            Err(Error::Control("the node closed without answering".into()))
        }
        None => Ok(answer),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_command_and_refuses_others() {
        for c in ControlCommand::ALL {
            assert_eq!(ControlCommand::parse(c.word()), Ok(c));
            assert_eq!(ControlCommand::parse(&format!("  {}\r\n", c.word())), Ok(c));
        }
        let e = ControlCommand::parse("takeover").unwrap_err();
        assert!(
            e.contains("takeover") && e.contains("standby, online, status"),
            "{e}"
        );
        assert!(ControlCommand::parse("").is_err());
        assert!(ControlCommand::parse("standby now").is_err());
    }

    proptest! {
        #[test]
        fn round_trips_and_never_panics(i in 0usize..3, junk in ".{0,300}") {
            let c = ControlCommand::ALL[i];
            prop_assert_eq!(ControlCommand::parse(c.word()), Ok(c));
            if let Ok(p) = ControlCommand::parse(&junk) {
                prop_assert_eq!(p.word(), junk.trim());
            }
        }
    }
}
