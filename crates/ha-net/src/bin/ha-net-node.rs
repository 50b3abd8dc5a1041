//! `ha-net-node`: one cluster node as a process (the namespace tests and benchmarks use it; it
//! is also a minimal daemon). SIGTERM or SIGINT hands the groups over and exits (heartbeat's
//! standby on stop); SIGKILL is a crash.
//!
//! ```text
//! ha-net-node (--config CLUSTER.toml | --config MODEL.json | --heartbeat DIR) [--node ID|NAME]
//!             [--log FILE] [--echo-port PORT] [--stop-timeout-ms MS] [--realtime] [--status FILE]
//!             [--control SOCKET] [--state FILE] [--no-unreachable] [--no-exit-watch] [--check]
//! ha-net-node --ctl SOCKET (standby|online|status|move GROUP|ban GROUP|clear GROUP)
//! ```
//! `--config` takes the TOML cluster file (`ha_core::config`) or a JSON `ClusterModel`;
//! `--heartbeat DIR` imports DIR/ha.cf, DIR/haresources and DIR/authkeys (as in /etc/ha.d).
//! `--node` defaults to this host's name (`uname -n`), as heartbeat picks its own `node` line.
//! `--check` validates the configuration, prints the node it would run as and exits.
//! `--echo-port` answers every UDP datagram on PORT with the node's name, so a client can tell
//! which node answers for a floating address. `--status` rewrites FILE with the JSON status
//! snapshot whenever it changes. `--control` serves the operator socket
//! ([`ha_net::control`]); `--ctl SOCKET COMMAND` is its client (heartbeat's `hb_standby`, its
//! return, `hb_takeover` as `move GROUP`, and `cl_status`): it prints the node's answer and
//! exits 1 on an error. `--state FILE` keeps the operator's standby, moves and bans across
//! restarts ([`ha_net::operator_state`]). `--no-unreachable` ignores ICMP "port unreachable"
//! from peers' hosts (see [`RuntimeConfig::unreachable_reports`]): only deadtime then detects a
//! killed peer daemon. `--no-exit-watch` opens no exit-watch connections
//! ([`RuntimeConfig::exit_watch`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ha_core::model::ClusterModel;
use ha_net::control::{self, ControlCommand};
use ha_net::runtime::{NodeRuntime, RuntimeConfig, local_node, raise_priority};

/// Where the cluster model comes from.
enum Source {
    /// TOML cluster file, or JSON when the name ends in `.json`.
    Config(PathBuf),
    /// A heartbeat configuration directory (ha.cf, haresources, authkeys).
    Heartbeat(PathBuf),
}

struct Args {
    source: Option<Source>,
    node: Option<String>,
    check: bool,
    log: Option<PathBuf>,
    echo_port: Option<u16>,
    stop_timeout: Duration,
    realtime: bool,
    status: Option<PathBuf>,
    control: Option<PathBuf>,
    state: Option<PathBuf>,
    no_unreachable: bool,
    no_exit_watch: bool,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "ha-net-node: {msg}\nusage: ha-net-node (--config CLUSTER.toml|MODEL.json | --heartbeat DIR) \
         [--node ID|NAME] [--log FILE] [--echo-port PORT] [--stop-timeout-ms MS] [--realtime] \
         [--status FILE] [--control SOCKET] [--state FILE] [--no-unreachable] [--no-exit-watch] [--check]\n       ha-net-node --ctl SOCKET (standby|online|status|move GROUP|ban GROUP|clear GROUP)"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        source: None,
        node: None,
        check: false,
        log: None,
        echo_port: None,
        stop_timeout: Duration::from_secs(10),
        realtime: false,
        status: None,
        control: None,
        state: None,
        no_unreachable: false,
        no_exit_watch: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{k} needs a value")))
        };
        match k.as_str() {
            // `--model` is the older name of `--config`.
            "--config" | "--model" => a.source = Some(Source::Config(PathBuf::from(val()))),
            "--heartbeat" => a.source = Some(Source::Heartbeat(PathBuf::from(val()))),
            "--node" => a.node = Some(val()),
            "--check" => a.check = true,
            "--log" => a.log = Some(PathBuf::from(val())),
            "--status" => a.status = Some(PathBuf::from(val())),
            "--control" => a.control = Some(PathBuf::from(val())),
            "--state" => a.state = Some(PathBuf::from(val())),
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
            "--no-unreachable" => a.no_unreachable = true,
            "--no-exit-watch" => a.no_exit_watch = true,
            _ => usage(&format!("unknown argument {k}")),
        }
    }
    if a.source.is_none() {
        usage("--config or --heartbeat is required");
    }
    a
}

/// `--ctl SOCKET COMMAND [GROUP]`: the control client; exits.
fn control_client(mut args: impl Iterator<Item = String>) -> ! {
    let Some(path) = args.next() else {
        usage("--ctl takes SOCKET and a command")
    };
    let line = args.collect::<Vec<_>>().join(" ");
    let cmd = ControlCommand::parse(&line).unwrap_or_else(|e| usage(&e));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| usage(&format!("cannot start tokio: {e}")));
    match rt.block_on(control::request(std::path::Path::new(&path), &cmd)) {
        Ok(answer) => {
            println!("{answer}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("ha-net-node: {e}");
            std::process::exit(1)
        }
    }
}

fn main() {
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some("--ctl") {
        control_client(raw);
    }
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
    let model = Arc::new(load_model(&args)?);
    let me = local_node(&model, args.node.as_deref())?;
    let name = model
        .node(me)
        .map(|n| n.name.clone())
        .ok_or_else(|| format!("node {me} is not in the model"))?;
    if args.check {
        println!(
            "configuration OK: cluster `{}`, {} nodes, {} groups; this is node {me} ({name})",
            model.name,
            model.nodes.len(),
            model.groups.len()
        );
        return Ok(());
    }
    let mut cfg = RuntimeConfig::new(model, me);
    cfg.state_file = args.state.clone();
    cfg.unreachable_reports = !args.no_unreachable;
    cfg.exit_watch = !args.no_exit_watch;
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
    // Kept until the node stops: dropping it removes the socket file.
    let _control = match &args.control {
        Some(path) => Some(control::serve(path, node.control()).await?),
        None => None,
    };
    let handed = node.shutdown_on_signal(args.stop_timeout).await?;
    tracing::info!(handed, "stopped");
    Ok(())
}

fn load_model(args: &Args) -> Result<ClusterModel, Box<dyn std::error::Error>> {
    match &args.source {
        Some(Source::Config(path)) if path.extension().is_some_and(|e| e == "json") => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            Ok(
                serde_json::from_str(&text)
                    .map_err(|e| format!("parse {}: {e}", path.display()))?,
            )
        }
        // ha-core's errors already name file:line and the field.
        Some(Source::Config(path)) => Ok(ha_core::config::load_file(path)?),
        Some(Source::Heartbeat(dir)) => Ok(ha_core::config::import_heartbeat(
            &dir.join("ha.cf"),
            &dir.join("haresources"),
            &dir.join("authkeys"),
        )?),
        None => Err("no configuration given".into()),
    }
}
