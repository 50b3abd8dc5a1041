//! `ha-net-node`: one cluster node as a process (used by the namespace tests; also a minimal
//! daemon). SIGTERM or SIGINT hands the groups over and exits; SIGKILL is a crash.
//!
//! ```text
//! ha-net-node --model MODEL.json --node ID [--log FILE] [--echo-port PORT] [--stop-timeout-ms MS]
//!             [--realtime] [--status FILE]
//! ```
//! `--echo-port` answers every UDP datagram on PORT with the node's name, so a client can tell
//! which node answers for a floating address. `--status` rewrites FILE with the JSON status
//! snapshot whenever it changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ha_core::NodeId;
use ha_core::model::ClusterModel;
use ha_net::runtime::{NodeRuntime, RuntimeConfig, raise_priority};
use tokio::signal::unix::{SignalKind, signal};

struct Args {
    model: PathBuf,
    node: u16,
    log: Option<PathBuf>,
    echo_port: Option<u16>,
    stop_timeout: Duration,
    realtime: bool,
    status: Option<PathBuf>,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "ha-net-node: {msg}\nusage: ha-net-node --model MODEL.json --node ID [--log FILE] \
         [--echo-port PORT] [--stop-timeout-ms MS] [--realtime] [--status FILE]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        model: PathBuf::new(),
        node: 0,
        log: None,
        echo_port: None,
        stop_timeout: Duration::from_secs(10),
        realtime: false,
        status: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{k} needs a value")))
        };
        match k.as_str() {
            "--model" => a.model = PathBuf::from(val()),
            "--node" => a.node = val().parse().unwrap_or_else(|_| usage("bad --node")),
            "--log" => a.log = Some(PathBuf::from(val())),
            "--status" => a.status = Some(PathBuf::from(val())),
            "--echo-port" => {
                a.echo_port = Some(val().parse().unwrap_or_else(|_| usage("bad --echo-port")))
            }
            "--stop-timeout-ms" => {
                a.stop_timeout = Duration::from_millis(
                    val()
                        .parse()
                        .unwrap_or_else(|_| usage("bad --stop-timeout-ms")),
                )
            }
            "--realtime" => a.realtime = true,
            _ => usage(&format!("unknown argument {k}")),
        }
    }
    if a.model.as_os_str().is_empty() || a.node == 0 {
        usage("--model and --node are required");
    }
    a
}

fn main() {
    let args = parse_args();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match &args.log {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init(),
            Err(e) => usage(&format!("cannot create log {}: {e}", path.display())),
        },
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => usage(&format!("cannot start tokio: {e}")),
    };
    if args.realtime {
        // Current-thread runtime: the node runs on this very thread.
        raise_priority(50);
    }
    if let Err(e) = rt.block_on(run(args)) {
        tracing::error!(error = %e, "node failed");
        eprintln!("ha-net-node: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(&args.model)
        .map_err(|e| format!("read {}: {e}", args.model.display()))?;
    let model: ClusterModel =
        serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", args.model.display()))?;
    let model = Arc::new(model);
    let me = NodeId(args.node);
    let name = model
        .node(me)
        .map(|n| n.name.clone())
        .ok_or_else(|| format!("node {me} is not in the model"))?;
    let mut cfg = RuntimeConfig::new(model, me);
    ha_net::floating_ip::register(&mut cfg.agents.registry);
    let node = NodeRuntime::start(cfg)?;
    if let Some(port) = args.echo_port {
        let sock = tokio::net::UdpSocket::bind(("0.0.0.0", port)).await?;
        let name = name.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let mut reply = name.as_bytes().to_vec();
                reply.push(b' ');
                reply.extend_from_slice(&buf[..n]);
                let _ = sock.send_to(&reply, from).await;
            }
        });
    }
    if let Some(path) = args.status.clone() {
        let mut w = node.watch_status();
        tokio::spawn(async move {
            loop {
                let json = serde_json::to_string_pretty(&*w.borrow_and_update());
                if let Ok(j) = json {
                    let tmp = path.with_extension("tmp");
                    if std::fs::write(&tmp, j).is_ok() {
                        let _ = std::fs::rename(&tmp, &path);
                    }
                }
                if w.changed().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stop requested: handing groups over");
    let handed = node.shutdown(args.stop_timeout).await?;
    tracing::info!(handed, "stopped");
    Ok(())
}
