//! `blockrepd`: one replicated resource as a daemon — attach a backing file or device with
//! its metadata, replicate to a peer, optionally promote, and serve the NBD export.
//!
//! Status lines go to stdout (`STATUS cs=... ro=.../... ds=.../... oos=<KiB> ... rs=<resync
//! bytes sent>`) whenever the state changes. Commands are read line by line from stdin (a FIFO works well from a
//! shell): `promote [force]`, `demote`, `status`, `disconnect`, `connect`, `down`, `quit`.
//! Each command answers `OK <cmd>` or `ERR <cmd>: <reason>`. SIGTERM/SIGINT shut down
//! cleanly (`down`); SIGKILL is a crash.

use clap::Parser;
use ha_blockrep::attach::{MetaMode, open_backing};
use ha_blockrep::device::{DynDevice, FileDevice};
use ha_blockrep::engine::{Engine, EngineConfig};
use ha_blockrep::error::{Error, Result};
use ha_blockrep::meta::{DEFAULT_AL_EXTENTS, Metadata};
use ha_blockrep::nbd::{Export, NbdServer};
use ha_blockrep::repl::rate::RateMode;
use ha_blockrep::state::Protocol;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(
    name = "blockrepd",
    about = "DRBD-class replicated block device with an NBD export"
)]
struct Args {
    /// Backing file or block device (data, plus metadata at its end when internal).
    #[arg(long)]
    disk: PathBuf,
    /// Create the backing file with this size if it does not exist (suffix K, M, G).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// External metadata file (default: internal metadata at the end of --disk).
    #[arg(long)]
    md: Option<PathBuf>,
    /// Write fresh metadata (create-md) instead of loading it.
    #[arg(long)]
    create_md: bool,
    /// Activity log extents (4 MiB each).
    #[arg(long, default_value_t = DEFAULT_AL_EXTENTS)]
    al_extents: u32,
    /// Open the backing device with O_DIRECT.
    #[arg(long)]
    direct: bool,
    /// Resource name (also the NBD export name).
    #[arg(long, default_value = "r0")]
    name: String,
    /// This node's name.
    #[arg(long, default_value = "node")]
    node: String,
    /// Listen for the peer on this address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Connect to the peer at this address (retried until it answers).
    #[arg(long)]
    connect: Option<SocketAddr>,
    /// Replication protocol: A, B or C.
    #[arg(long, default_value = "C", value_parser = parse_protocol)]
    protocol: Protocol,
    /// Shared secret for peer authentication.
    #[arg(long)]
    secret: Option<String>,
    /// Promote to Primary at start.
    #[arg(long)]
    primary: bool,
    /// With --primary: force (first Primary of fresh metadata, or a non-UpToDate disk).
    #[arg(long)]
    force: bool,
    /// Serve the NBD export on this address.
    #[arg(long)]
    nbd: Option<SocketAddr>,
    /// Fixed resync rate in bytes/s (suffix K, M, G); default: dynamic 250 KiB/s-100 MiB/s.
    #[arg(long, value_parser = parse_size)]
    rate: Option<u64>,
    /// Keep-alive interval in ms.
    #[arg(long, default_value_t = 1000)]
    ping_ms: u64,
    /// Peer silence (ms) after which it is declared dead.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// How often (ms) the state is checked for changes to print.
    #[arg(long, default_value_t = 50)]
    status_ms: u64,
    /// Runtime worker threads (0: one per CPU, at most 4).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Do not read commands from stdin.
    #[arg(long)]
    no_stdin: bool,
}

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in `{s}` (use K, M, G, T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|e| format!("bad size `{s}`: {e}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` overflows"))
}

fn parse_protocol(s: &str) -> std::result::Result<Protocol, String> {
    match s.to_ascii_uppercase().as_str() {
        "A" => Ok(Protocol::A),
        "B" => Ok(Protocol::B),
        "C" => Ok(Protocol::C),
        _ => Err(format!("protocol must be A, B or C, not `{s}`")),
    }
}

/// Open the disk (creating it if asked) and load or create the metadata.
async fn open_devices(a: &Args) -> Result<(DynDevice, Metadata)> {
    if let Some(size) = a.size
        && !a.disk.exists()
    {
        FileDevice::create(&a.disk, size)?;
    }
    let mode = if a.create_md {
        MetaMode::Create
    } else {
        MetaMode::Load
    };
    open_backing(&a.disk, a.md.as_deref(), a.al_extents, a.direct, mode).await
}

fn status_line(e: &Engine) -> String {
    let s = e.status();
    let mut line = format!(
        "STATUS cs={} ro={}/{} ds={}/{} oos={} ns={} nr={} dw={} rs={}",
        s.cs(),
        s.role,
        s.peer_role,
        s.disk,
        s.peer_disk,
        s.oos,
        s.ns,
        s.nr,
        s.dw,
        e.resync_bytes_sent()
    );
    if let Some(p) = &s.sync {
        line += &format!(" synced={:.1}%", p.percent());
    }
    line
}

/// The part of the status whose change is worth a line.
fn status_key(e: &Engine) -> String {
    let s = e.status();
    format!(
        "{} {}/{} {}/{} {}",
        s.cs(),
        s.role,
        s.peer_role,
        s.disk,
        s.peer_disk,
        s.sync
            .as_ref()
            .map(|p| p.percent() as u32 / 10)
            .unwrap_or(100)
    )
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn command(e: &Engine, a: &Args, line: &str) -> Option<Result<()>> {
    let mut words = line.split_whitespace();
    let cmd = words.next()?;
    let r = match cmd {
        "promote" => e.promote(words.next() == Some("force")).await,
        "demote" => e.demote().await,
        "status" => {
            say(&status_line(e));
            Ok(())
        }
        "disconnect" => {
            e.disconnect().await;
            Ok(())
        }
        "connect" => {
            e.reconnect();
            if let Some(addr) = a.connect {
                e.connect(addr);
            }
            Ok(())
        }
        "down" | "quit" | "exit" => return None,
        other => Err(Error::State(format!(
            "unknown command `{other}` (promote [force], demote, status, disconnect, connect, down)"
        ))),
    };
    Some(r)
}

async fn run(a: Args) -> Result<()> {
    let (data, md) = open_devices(&a).await?;
    let mut cfg = EngineConfig::new(&a.name, &a.node);
    cfg.protocol = a.protocol;
    cfg.secret = a.secret.as_ref().map(|s| s.as_bytes().to_vec());
    cfg.ping_interval = Duration::from_millis(a.ping_ms.max(1));
    cfg.ping_timeout = Duration::from_millis(a.timeout_ms.max(1));
    if let Some(r) = a.rate {
        cfg.rate = RateMode::Fixed(r.max(1));
    }
    let engine = Engine::attach(data, md, cfg).await?;
    if a.primary {
        engine.promote(a.force).await?;
    }
    let mut ready = format!("READY size={}", engine.size());
    if let Some(l) = a.listen {
        let bound = engine.listen(l).await?;
        ready += &format!(" listen={bound}");
    }
    if let Some(c) = a.connect {
        engine.connect(c);
        ready += &format!(" connect={c}");
    }
    if let Some(n) = a.nbd {
        let srv = NbdServer::new(vec![Arc::new(engine.clone()) as Arc<dyn Export>]);
        let (bound, _task) = srv.spawn(n).await?;
        ready += &format!(" nbd={bound}");
    }
    say(&ready);

    let (cmd_tx, mut cmd_rx) = tokio::sync::mpsc::channel::<String>(16);
    if !a.no_stdin {
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if cmd_tx.send(l).await.is_err() {
                    return;
                }
            }
            // EOF on stdin: keep running (a closed stdin is not a request to stop).
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("install SIGTERM handler", e))?;
    let mut tick = tokio::time::interval(Duration::from_millis(a.status_ms.max(1)));
    let mut last_key = String::new();
    let mut stdin_open = !a.no_stdin;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let k = status_key(&engine);
                if k != last_key {
                    say(&status_line(&engine));
                    last_key = k;
                }
            }
            line = cmd_rx.recv(), if stdin_open => {
                let Some(line) = line else {
                    stdin_open = false;
                    continue;
                };
                let line = line.trim().to_string();
                match command(&engine, &a, &line).await {
                    None if line.is_empty() => {}
                    None => break,
                    Some(Ok(())) => say(&format!("OK {line}")),
                    Some(Err(e)) => say(&format!("ERR {line}: {e}")),
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    engine.down().await?;
    say("DOWN");
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // In a one-CPU VM every extra worker only adds cross-thread wake-ups.
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
        n => n,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("blockrepd: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let r = rt.block_on(run(args));
    // The stdin reader sits in a blocking read that a normal runtime drop would wait for.
    rt.shutdown_background();
    if let Err(e) = r {
        eprintln!("blockrepd: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_protocols_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("x").is_err());
        assert_eq!(parse_protocol("a"), Ok(Protocol::A));
        assert!(parse_protocol("D").is_err());
    }
}
