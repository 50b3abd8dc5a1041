//! The operator's control socket: heartbeat's `hb_standby` and `cl_status`, for a running node.
//!
//! A Unix stream socket (mode 0600: whoever may signal the daemon) takes one command line per
//! connection and answers, then closes:
//!
//! | command       | effect                                                   | answer   |
//! |---------------|----------------------------------------------------------|----------|
//! | `standby`     | hand every group to the peers, keep running              | `ok`     |
//! | `online`      | leave standby (groups come back with auto_failback)      | `ok`     |
//! | `move GROUP`  | run GROUP here (heartbeat's `hb_takeover`, `crm_resource --move`) | `ok` |
//! | `ban GROUP`   | never run GROUP here (`crm_resource --ban`)              | `ok`     |
//! | `clear GROUP` | drop this node's move/ban of GROUP                       | `ok`     |
//! | `status`      | nothing                                                  | the JSON snapshot |
//!
//! A move or ban holds until cleared (or this node restarts) and is shared through this
//! node's heartbeats, so every node places the group alike. Anything else gets `error: ...`
//! naming the commands. Moving groups home by hand without auto_failback: `move GROUP` on
//! the node that should run it, then `clear GROUP`, or `standby` on the holder, then
//! `online`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use ha_core::GroupId;
use ha_core::message::OperatorPref;

use crate::runtime::NodeControl;
use crate::{Error, Result};

/// Longest command line accepted (longer ones are refused unread).
pub const MAX_LINE: usize = 256;

/// How long a client may take to send its line before the server hangs up.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`request`] waits for the node's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed control command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlCommand {
    /// Hand every group over to the peers and keep running.
    Standby,
    /// Leave standby.
    Online,
    /// Report the status snapshot as JSON.
    Status,
    /// Run the group on this node.
    Move(GroupId),
    /// Never run the group on this node.
    Ban(GroupId),
    /// Drop this node's move or ban of the group.
    Clear(GroupId),
}

/// The commands as the help text lists them.
const USAGE: &str = "standby, online, status, move GROUP, ban GROUP, clear GROUP";

impl ControlCommand {
    /// The command's verb on the wire.
    pub fn word(&self) -> &'static str {
        match self {
            ControlCommand::Standby => "standby",
            ControlCommand::Online => "online",
            ControlCommand::Status => "status",
            ControlCommand::Move(_) => "move",
            ControlCommand::Ban(_) => "ban",
            ControlCommand::Clear(_) => "clear",
        }
    }

    /// Parse one command line: a verb and, for move/ban/clear, a group name, separated by
    /// white space (surrounding white space and the line end are ignored).
    pub fn parse(line: &str) -> std::result::Result<ControlCommand, String> {
        let mut words = line.split_whitespace();
        let (verb, arg, extra) = (words.next(), words.next(), words.next());
        let shown = |w: &str| w.chars().take(40).collect::<String>();
        let group = |arg: Option<&str>, verb: &str| match arg {
            Some(g) => Ok(GroupId::from(g)),
            None => Err(format!("`{verb}` needs a group name (commands: {USAGE})")),
        };
        let cmd = match verb.unwrap_or("") {
            "standby" if arg.is_none() => ControlCommand::Standby,
            "online" if arg.is_none() => ControlCommand::Online,
            "status" if arg.is_none() => ControlCommand::Status,
            "move" if extra.is_none() => ControlCommand::Move(group(arg, "move")?),
            "ban" if extra.is_none() => ControlCommand::Ban(group(arg, "ban")?),
            "clear" if extra.is_none() => ControlCommand::Clear(group(arg, "clear")?),
            _ => {
                return Err(format!(
                    "unknown command `{}` (commands: {USAGE})",
                    shown(line.trim())
                ));
            }
        };
        Ok(cmd)
    }
}

impl std::fmt::Display for ControlCommand {
    /// The command line (without the line end); [`ControlCommand::parse`] reads it back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlCommand::Move(g) | ControlCommand::Ban(g) | ControlCommand::Clear(g) => {
                write!(f, "{} {g}", self.word())
            }
            _ => f.write_str(self.word()),
        }
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
    tracing::info!(command = %cmd, "control command");
    let done = match cmd {
        ControlCommand::Standby => node.standby().await,
        ControlCommand::Online => node.online().await,
        ControlCommand::Move(g) => node.place(&g, OperatorPref::Prefer).await,
        ControlCommand::Ban(g) => node.place(&g, OperatorPref::Avoid).await,
        ControlCommand::Clear(g) => node.place(&g, OperatorPref::None).await,
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
/// an `error: ...` answer, or none within [`ANSWER_TIMEOUT`], becomes [`Error::Control`].
pub async fn request(path: &Path, cmd: &ControlCommand) -> Result<String> {
    request_within(path, cmd, ANSWER_TIMEOUT).await
}

/// [`request`] waiting at most `limit` for the answer.
pub async fn request_within(path: &Path, cmd: &ControlCommand, limit: Duration) -> Result<String> {
    let ctx = |what: &str| format!("control socket {}: {what}", path.display());
    let mut s = UnixStream::connect(path)
        .await
        .map_err(|e| Error::io(ctx("connect (is the node running with --control?)"), e))?;
    s.write_all(format!("{cmd}\n").as_bytes())
        .await
        .map_err(|e| Error::io(ctx("send"), e))?;
    let mut answer = String::new();
    // A node whose loop is stuck must not hang its operator's shell.
    tokio::time::timeout(limit, BufReader::new(s).read_to_string(&mut answer))
        .await
        .map_err(|_| {
            Error::Control(format!(
                "{}: no answer within {} ms (is the node stuck?)",
                path.display(),
                limit.as_millis()
            ))
        })?
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
        let g = || GroupId::from("web");
        for c in [
            ControlCommand::Standby,
            ControlCommand::Online,
            ControlCommand::Status,
            ControlCommand::Move(g()),
            ControlCommand::Ban(g()),
            ControlCommand::Clear(g()),
        ] {
            assert_eq!(ControlCommand::parse(&c.to_string()), Ok(c.clone()));
            assert_eq!(ControlCommand::parse(&format!("  {c}\r\n")), Ok(c));
        }
        assert_eq!(
            ControlCommand::parse("move\t web "),
            Ok(ControlCommand::Move(g()))
        );
        let e = ControlCommand::parse("takeover").unwrap_err();
        assert!(e.contains("`takeover`") && e.contains(USAGE), "{e}");
        assert!(
            ControlCommand::parse("move")
                .unwrap_err()
                .contains("needs a group")
        );
        for bad in ["", "standby now", "move a b", "status x"] {
            assert!(ControlCommand::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_silent_node_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let l = UnixListener::bind(&path).unwrap();
        // Accepts and keeps the connection open without answering.
        let server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let limit = Duration::from_millis(200);
        let t0 = std::time::Instant::now();
        let e = request_within(&path, &ControlCommand::Status, limit)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no answer within 200 ms"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        server.abort();
    }

    proptest! {
        #[test]
        fn round_trips_and_never_panics(verb in 0usize..6, group in "[a-z0-9_.-]{1,20}", junk in ".{0,300}") {
            let g = GroupId::from(group.as_str());
            let c = [
                ControlCommand::Standby,
                ControlCommand::Online,
                ControlCommand::Status,
                ControlCommand::Move(g.clone()),
                ControlCommand::Ban(g.clone()),
                ControlCommand::Clear(g),
            ][verb].clone();
            prop_assert_eq!(ControlCommand::parse(&c.to_string()), Ok(c));
            if let Ok(p) = ControlCommand::parse(&junk) {
                let normal = junk.split_whitespace().collect::<Vec<_>>().join(" ");
                prop_assert_eq!(p.to_string(), normal);
            }
        }
    }
}
