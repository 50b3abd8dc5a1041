//! heartbeat `resource.d` scripts driven by `HeartbeatAgent`, with scripts of ours.

mod agents_common;

use agents_common::{spec, write_script};
use ha_core::OcfCode;
use ha_core::model::AgentSpec;
use ha_core::resource::{AgentOptions, HeartbeatAgent, Resource, agent_for};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn hb(script: &str, args: &[&str]) -> AgentSpec {
    AgentSpec::Heartbeat {
        script: script.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

fn opts(dirs: &[&Path], env: &[(&str, &str)]) -> AgentOptions {
    AgentOptions {
        heartbeat_dirs: dirs.iter().map(|d| d.to_path_buf()).collect(),
        extra_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..AgentOptions::default()
    }
}

/// A well-behaved v1 script: `svc ARG1 ARG2 start|stop|status`, state in a file, args logged.
const STATEFUL: &str = r#"
state="$STATE_DIR/$1.state"
echo "$*" >> "$STATE_DIR/calls"
case "$3" in
start) touch "$state";;
stop) rm -f "$state";;
status) if [ -f "$state" ]; then echo "running"; else echo "stopped"; fi;;
*) exit 1;;
esac
"#;

#[tokio::test]
async fn args_from_double_colon_and_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("resource.d");
    write_script(&dir, "svc", STATEFUL);
    let state = tmp.path().to_str().unwrap();
    let o = opts(&[&dir], &[("STATE_DIR", state)]);
    let r = agent_for(&spec("svc1", hb("svc", &["10.0.0.1", "eth0"]), &[], T), &o).unwrap();
    assert_eq!(r.id().as_str(), "svc1");
    assert_eq!(r.monitor().await, OcfCode::NotRunning);
    assert_eq!(r.start().await, OcfCode::Success);
    assert_eq!(r.monitor().await, OcfCode::Success);
    assert_eq!(r.start().await, OcfCode::Success);
    assert_eq!(r.stop().await, OcfCode::Success);
    assert_eq!(r.monitor().await, OcfCode::NotRunning);
    assert_eq!(r.stop().await, OcfCode::Success);
    let calls = std::fs::read_to_string(tmp.path().join("calls")).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(
        lines,
        [
            "10.0.0.1 eth0 status",
            "10.0.0.1 eth0 start",
            "10.0.0.1 eth0 status",
            "10.0.0.1 eth0 start",
            "10.0.0.1 eth0 stop",
            "10.0.0.1 eth0 status",
            "10.0.0.1 eth0 stop",
        ]
    );
}

/// status prints $OUT and exits $RC.
#[tokio::test]
async fn status_output_and_exit_code_mapping() {
    let tmp = tempfile::tempdir().unwrap();
    write_script(tmp.path(), "st", r#"printf '%s\n' "$OUT"; exit "$RC""#);
    let cases = [
        ("running", "0", OcfCode::Success),
        ("svc is running", "1", OcfCode::Success),
        ("Running", "3", OcfCode::Success),
        ("OK", "1", OcfCode::Success),
        ("status: OK.", "7", OcfCode::Success),
        ("", "0", OcfCode::Success),
        ("whatever", "0", OcfCode::Success),
        ("stopped", "0", OcfCode::NotRunning),
        ("svc is not running", "0", OcfCode::NotRunning),
        ("svc is NOT RUNNING", "3", OcfCode::NotRunning),
        ("BROKEN", "1", OcfCode::NotRunning),
        ("", "1", OcfCode::NotRunning),
        ("", "3", OcfCode::NotRunning),
    ];
    for (out, rc, want) in cases {
        let o = opts(&[tmp.path()], &[("OUT", out), ("RC", rc)]);
        let r = HeartbeatAgent::new(&spec("r", hb("st", &[]), &[], T), &o).unwrap();
        assert_eq!(r.monitor().await, want, "status output {out:?} exit {rc}");
    }
}

#[tokio::test]
async fn start_stop_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    // start/stop exit $RC; status says $OUT.
    write_script(
        tmp.path(),
        "ss",
        r#"case "$1" in status) echo "$OUT";; *) exit "$RC";; esac"#,
    );
    for (rc, want) in [
        ("0", OcfCode::Success),
        ("1", OcfCode::ErrGeneric),
        ("5", OcfCode::ErrGeneric),
        ("6", OcfCode::ErrGeneric),
        ("7", OcfCode::ErrGeneric),
    ] {
        let o = opts(&[tmp.path()], &[("RC", rc), ("OUT", "running")]);
        let r = HeartbeatAgent::new(&spec("r", hb("ss", &[]), &[], T), &o).unwrap();
        assert_eq!(r.start().await, want, "start exit {rc}");
        assert_eq!(
            r.stop().await,
            want,
            "stop exit {rc} while status says running"
        );
    }
    // A failing stop of a stopped resource is a successful stop.
    let o = opts(&[tmp.path()], &[("RC", "1"), ("OUT", "stopped")]);
    let r = HeartbeatAgent::new(&spec("r", hb("ss", &[]), &[], T), &o).unwrap();
    assert_eq!(r.stop().await, OcfCode::Success);
    assert_eq!(r.start().await, OcfCode::ErrGeneric);
}

#[tokio::test]
async fn lookup_order_missing_and_not_executable() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("resource.d");
    let second = tmp.path().join("init.d");
    write_script(&second, "both", "exit 0");
    write_script(&first, "both", "exit 1");
    write_script(&second, "only2", "exit 0");
    std::fs::write(first.join("noexec"), "#!/bin/sh\nexit 0\n").unwrap();
    let o = opts(&[&first, &second], &[]);
    let mk = |name: &str| HeartbeatAgent::new(&spec("r", hb(name, &[]), &[], T), &o).unwrap();
    assert_eq!(mk("both").script_path(), Some(first.join("both")));
    assert_eq!(
        mk("both").start().await,
        OcfCode::ErrGeneric,
        "first directory wins"
    );
    assert_eq!(mk("only2").start().await, OcfCode::Success);
    assert_eq!(mk("missing").script_path(), None);
    assert_eq!(mk("missing").start().await, OcfCode::ErrInstalled);
    assert_eq!(mk("missing").monitor().await, OcfCode::ErrInstalled);
    assert_eq!(mk("noexec").start().await, OcfCode::ErrPerm);
    // Names that would escape the directories are configuration errors.
    for bad in ["../etc/passwd", "a/b", "", ".."] {
        let err = agent_for(&spec("r", hb(bad, &[]), &[], T), &o).err();
        assert!(err.is_some(), "{bad:?} accepted");
    }
}

#[tokio::test]
async fn status_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    write_script(
        tmp.path(),
        "slow",
        r#"[ "$1" = status ] && sleep 30; exit 0"#,
    );
    let o = opts(&[tmp.path()], &[]);
    let mut s = spec("r", hb("slow", &[]), &[], T);
    s.monitor_timeout = Duration::from_millis(300);
    let r = HeartbeatAgent::new(&s, &o).unwrap();
    let t0 = std::time::Instant::now();
    assert_eq!(r.monitor().await, OcfCode::Timeout);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(r.start().await, OcfCode::Success);
}
