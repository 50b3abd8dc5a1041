//! LSB init scripts driven by `LsbAgent`, with scripts of ours.

mod agents_common;

use agents_common::{read_pid, spec, wait_dead, write_script};
use ha_core::OcfCode;
use ha_core::model::AgentSpec;
use ha_core::resource::{AgentOptions, LsbAgent, Resource, agent_for};
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn lsb(script: &str) -> AgentSpec {
    AgentSpec::Lsb {
        script: script.into(),
    }
}

fn opts(dir: &Path, env: &[(&str, &str)]) -> AgentOptions {
    AgentOptions {
        lsb_dirs: vec![dir.to_path_buf()],
        extra_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..AgentOptions::default()
    }
}

/// A real-looking init script managing a background daemon through a pid file. The daemon keeps
/// the script's stdout open (no redirection), as sloppy init scripts do.
const DAEMON: &str = r#"
PIDFILE="$RUN_DIR/daemon.pid"
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
case "$1" in
start)
    running && exit 0
    sleep 300 &
    echo $! > "$PIDFILE"
    echo "Starting daemon"
    exit 0;;
stop)
    running || { rm -f "$PIDFILE"; exit 0; }
    kill "$(cat "$PIDFILE")"; rm -f "$PIDFILE"; exit 0;;
status)
    if running; then echo "daemon is running"; exit 0; fi
    [ -f "$PIDFILE" ] && exit 1
    exit 3;;
*) exit 2;;
esac
"#;

#[tokio::test]
async fn daemon_lifecycle_is_idempotent_and_daemon_survives_start() {
    let tmp = tempfile::tempdir().unwrap();
    write_script(tmp.path(), "daemon", DAEMON);
    let o = opts(tmp.path(), &[("RUN_DIR", tmp.path().to_str().unwrap())]);
    let r = agent_for(&spec("d", lsb("daemon"), &[], T), &o).unwrap();
    assert_eq!(r.monitor().await, OcfCode::NotRunning);
    assert_eq!(
        r.stop().await,
        OcfCode::Success,
        "stop of a stopped service"
    );
    let t0 = Instant::now();
    assert_eq!(r.start().await, OcfCode::Success);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "start must not wait for the daemon holding stdout: {:?}",
        t0.elapsed()
    );
    let pid = read_pid(&tmp.path().join("daemon.pid"));
    assert!(
        !agents_common::pid_dead(pid),
        "the daemon must survive a successful start"
    );
    assert_eq!(r.monitor().await, OcfCode::Success);
    assert_eq!(
        r.start().await,
        OcfCode::Success,
        "start of a running service"
    );
    assert_eq!(
        read_pid(&tmp.path().join("daemon.pid")),
        pid,
        "no second daemon"
    );
    assert_eq!(r.stop().await, OcfCode::Success);
    assert!(wait_dead(pid));
    assert_eq!(r.monitor().await, OcfCode::NotRunning);
    // A stale pid file: "dead but pid file exists" is a failure, not a clean stop.
    std::fs::write(tmp.path().join("daemon.pid"), "999999999\n").unwrap();
    assert_eq!(r.monitor().await, OcfCode::ErrGeneric);
}

#[tokio::test]
async fn status_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    write_script(tmp.path(), "st", r#"exit "$RC""#);
    for rc in 0..=9 {
        let want = match rc {
            0 => OcfCode::Success,
            3 => OcfCode::NotRunning,
            _ => OcfCode::ErrGeneric,
        };
        let o = opts(tmp.path(), &[("RC", &rc.to_string())]);
        let r = LsbAgent::new(&spec("r", lsb("st"), &[], T), &o).unwrap();
        assert_eq!(r.monitor().await, want, "status exit {rc}");
    }
}

#[tokio::test]
async fn start_and_stop_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    // start/stop exit $RC; status exits $ST.
    write_script(
        tmp.path(),
        "ss",
        r#"case "$1" in status) exit "$ST";; *) exit "$RC";; esac"#,
    );
    let cases = [
        (0, OcfCode::Success),
        (1, OcfCode::ErrGeneric),
        (2, OcfCode::ErrArgs),
        (3, OcfCode::ErrUnimplemented),
        (4, OcfCode::ErrPerm),
        (5, OcfCode::ErrInstalled),
        (6, OcfCode::ErrConfigured),
        (7, OcfCode::NotRunning),
        (150, OcfCode::ErrGeneric),
    ];
    for (rc, want) in cases {
        // Status says "running": a failed stop really failed.
        let o = opts(tmp.path(), &[("RC", &rc.to_string()), ("ST", "0")]);
        let r = LsbAgent::new(&spec("r", lsb("ss"), &[], T), &o).unwrap();
        assert_eq!(r.start().await, want, "start exit {rc}");
        let stop_want = match want {
            OcfCode::NotRunning => OcfCode::Success,
            w => w,
        };
        assert_eq!(r.stop().await, stop_want, "stop exit {rc}, status running");
        // Status says "stopped": any failing stop is a successful stop (LSB idempotence).
        let o = opts(tmp.path(), &[("RC", &rc.to_string()), ("ST", "3")]);
        let r = LsbAgent::new(&spec("r", lsb("ss"), &[], T), &o).unwrap();
        assert_eq!(
            r.stop().await,
            OcfCode::Success,
            "stop exit {rc}, status stopped"
        );
    }
}

#[tokio::test]
async fn missing_script_and_stop_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(tmp.path(), &[]);
    let r = LsbAgent::new(&spec("r", lsb("nope"), &[], T), &o).unwrap();
    assert_eq!(r.start().await, OcfCode::ErrInstalled);
    assert_eq!(r.monitor().await, OcfCode::ErrInstalled);

    write_script(
        tmp.path(),
        "hang",
        r#"[ "$1" = stop ] && exec sleep 30; exit 0"#,
    );
    let r = LsbAgent::new(&spec("r", lsb("hang"), &[], Duration::from_millis(300)), &o).unwrap();
    let t0 = Instant::now();
    assert_eq!(
        r.stop().await,
        OcfCode::Timeout,
        "a timed-out stop is not double-checked"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}
