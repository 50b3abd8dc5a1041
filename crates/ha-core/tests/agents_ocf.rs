//! OCF agents driven by `OcfAgent`, with agents of ours under a temporary OCF_ROOT.

mod agents_common;

use agents_common::{read_pid, spec, wait_dead, write_script};
use ha_core::model::AgentSpec;
use ha_core::resource::{AgentOptions, OcfAgent, Resource, agent_for, execute, run_with_timeout};
use ha_core::{OcfCode, ResourceOp};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn ocf(provider: &str, ty: &str) -> AgentSpec {
    AgentSpec::Ocf {
        provider: provider.into(),
        r#type: ty.into(),
    }
}

fn opts(root: &Path) -> AgentOptions {
    AgentOptions {
        ocf_root: root.to_path_buf(),
        ..AgentOptions::default()
    }
}

fn install(root: &Path, ty: &str, body: &str) {
    write_script(&root.join("resource.d").join("test"), ty, body);
}

/// Exits with OCF_RESKEY_rc for every action.
const EXIT_RC: &str = r#"exit "$OCF_RESKEY_rc""#;

#[tokio::test]
async fn every_exit_code_maps() {
    let tmp = tempfile::tempdir().unwrap();
    install(tmp.path(), "rc", EXIT_RC);
    let cases = [
        (0, OcfCode::Success),
        (1, OcfCode::ErrGeneric),
        (2, OcfCode::ErrArgs),
        (3, OcfCode::ErrUnimplemented),
        (4, OcfCode::ErrPerm),
        (5, OcfCode::ErrInstalled),
        (6, OcfCode::ErrConfigured),
        (7, OcfCode::NotRunning),
        (8, OcfCode::RunningPromoted),
        (9, OcfCode::FailedPromoted),
        (10, OcfCode::ErrGeneric),
        (199, OcfCode::ErrGeneric),
    ];
    for (rc, want) in cases {
        let s = spec("r", ocf("test", "rc"), &[("rc", &rc.to_string())], T);
        let r = OcfAgent::new(&s, &opts(tmp.path())).unwrap();
        assert_eq!(r.start().await, want, "start exit {rc}");
        assert_eq!(r.stop().await, want, "stop exit {rc}");
        assert_eq!(r.monitor().await, want, "monitor exit {rc}");
        assert_eq!(r.validate().await, want, "validate-all exit {rc}");
        // And back: unknown codes report as the generic 1.
        assert_eq!(want.exit_code(), if rc <= 9 { rc } else { 1 });
    }
}

#[tokio::test]
async fn environment_reaches_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("env");
    install(
        tmp.path(),
        "envdump",
        &format!(
            r#"{{ echo "ACTION=$1"; env | grep -E '^(OCF_|HA_RSCTMP)' | sort; }} > "{}.$1"; exit 0"#,
            dump.display()
        ),
    );
    let mut s = spec(
        "web-ip",
        ocf("test", "envdump"),
        &[
            ("ip", "192.0.2.10"),
            ("cidr_netmask", "24"),
            ("nic", "eth 0 'quoted'"),
        ],
        Duration::from_millis(4500),
    );
    s.monitor_interval = Some(Duration::from_secs(10));
    s.start_timeout = Duration::from_secs(7);
    let mut o = opts(tmp.path());
    o.extra_env.push(("HA_RSCTMP".into(), "/tmp/x".into()));
    let r = agent_for(&s, &o).unwrap();
    assert_eq!(r.start().await, OcfCode::Success);
    assert_eq!(r.monitor().await, OcfCode::Success);

    let read = |action: &str| -> BTreeMap<String, String> {
        std::fs::read_to_string(format!("{}.{action}", dump.display()))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let start = read("start");
    let root = tmp.path().to_str().unwrap();
    for (k, v) in [
        ("ACTION", "start"),
        ("OCF_ROOT", root),
        ("OCF_RESOURCE_INSTANCE", "web-ip"),
        ("OCF_RESOURCE_TYPE", "envdump"),
        ("OCF_RESOURCE_PROVIDER", "test"),
        ("OCF_RA_VERSION_MAJOR", "1"),
        ("OCF_RESKEY_ip", "192.0.2.10"),
        ("OCF_RESKEY_cidr_netmask", "24"),
        ("OCF_RESKEY_nic", "eth 0 'quoted'"),
        ("OCF_RESKEY_CRM_meta_timeout", "7000"),
        ("OCF_RESKEY_CRM_meta_interval", "0"),
        ("HA_RSCTMP", "/tmp/x"),
    ] {
        assert_eq!(
            start.get(k).map(String::as_str),
            Some(v),
            "{k} in {start:?}"
        );
    }
    let monitor = read("monitor");
    assert_eq!(monitor["OCF_RESKEY_CRM_meta_timeout"], "4500");
    assert_eq!(monitor["OCF_RESKEY_CRM_meta_interval"], "10000");
}

#[tokio::test]
async fn bad_specs_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(tmp.path());
    for params in [
        &[("bad-name", "x")][..],
        &[("", "x")],
        &[("ok", "nul\0byte")],
    ] {
        assert!(
            agent_for(&spec("r", ocf("test", "x"), params, T), &o).is_err(),
            "{params:?}"
        );
    }
    for (p, t) in [("..", "x"), ("test", "../../bin/sh"), ("", "x")] {
        assert!(
            agent_for(&spec("r", ocf(p, t), &[], T), &o).is_err(),
            "{p}:{t}"
        );
    }
    // Missing agent: not a config error, a per-node "not installed".
    let r = agent_for(&spec("r", ocf("test", "absent"), &[], T), &o).unwrap();
    assert_eq!(r.start().await, OcfCode::ErrInstalled);
    assert_eq!(r.monitor().await, OcfCode::ErrInstalled);
    let err = r.meta_data().await.unwrap_err().to_string();
    assert!(err.contains("absent"), "{err}");
}

#[tokio::test]
async fn meta_data_of_our_agent() {
    let tmp = tempfile::tempdir().unwrap();
    install(
        tmp.path(),
        "md",
        r#"case "$1" in
meta-data) cat <<'END'
<?xml version="1.0"?>
<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">
<resource-agent name="md">
<version>0.9</version>
<parameters>
<parameter name="ip" required="1" unique="1"><content type="string"/></parameter>
<parameter name="port"><content type="integer" default="80"/></parameter>
</parameters>
<actions>
<action name="start" timeout="20s"/>
<action name="stop" timeout="20s"/>
<action name="monitor" timeout="10s" interval="5s"/>
<action name="meta-data" timeout="5s"/>
</actions>
</resource-agent>
END
exit 0;;
garbage) echo "not xml"; exit 0;;
*) exit 3;;
esac"#,
    );
    let r = OcfAgent::new(&spec("r", ocf("test", "md"), &[], T), &opts(tmp.path())).unwrap();
    let md = r.meta_data().await.unwrap().unwrap();
    assert_eq!(md.name, "md");
    assert_eq!(md.version.as_deref(), Some("0.9"));
    assert_eq!(md.parameter_names(), ["ip", "port"]);
    assert!(md.parameter("ip").unwrap().required);
    assert_eq!(md.parameter("port").unwrap().default.as_deref(), Some("80"));
    assert_eq!(md.action_names(), ["start", "stop", "monitor", "meta-data"]);
    assert_eq!(
        md.action("monitor").unwrap().interval,
        Some(Duration::from_secs(5))
    );
    assert_eq!(r.validate().await, OcfCode::ErrUnimplemented);
    assert_eq!(r.run_action("reload", T).await, OcfCode::ErrUnimplemented);
    assert_eq!(r.label(), "ocf:test:md");
}

/// The agent writes its pid and a grandchild's pid, then waits forever.
const HANG: &str = r#"
echo $$ > "$OCF_RESKEY_dir/leader.$1"
sleep 60 &
echo $! > "$OCF_RESKEY_dir/child.$1"
wait
"#;

#[tokio::test]
async fn timeout_kills_the_process_group() {
    let tmp = tempfile::tempdir().unwrap();
    install(tmp.path(), "hang", HANG);
    let dir = tmp.path().to_str().unwrap();
    // Generous enough for the script to write its pids on a loaded machine.
    let s = spec(
        "r",
        ocf("test", "hang"),
        &[("dir", dir)],
        Duration::from_millis(1500),
    );
    let r = agent_for(&s, &opts(tmp.path())).unwrap();
    let t0 = Instant::now();
    assert_eq!(r.start().await, OcfCode::Timeout);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let leader = read_pid(&tmp.path().join("leader.start"));
    let child = read_pid(&tmp.path().join("child.start"));
    assert!(wait_dead(leader), "agent {leader} still running");
    assert!(wait_dead(child), "agent's child {child} still running");
}

#[tokio::test]
async fn cancellation_by_run_with_timeout_kills_the_process_group() {
    let tmp = tempfile::tempdir().unwrap();
    install(tmp.path(), "hang", HANG);
    let dir = tmp.path().to_str().unwrap();
    // The spec allows 60 s; the caller allows 1.5 s.
    let s = spec(
        "r",
        ocf("test", "hang"),
        &[("dir", dir)],
        Duration::from_secs(60),
    );
    let r = agent_for(&s, &opts(tmp.path())).unwrap();
    let t0 = Instant::now();
    let code = run_with_timeout(r.as_ref(), ResourceOp::Monitor, Duration::from_millis(1500)).await;
    assert_eq!(code, OcfCode::Timeout);
    assert!(t0.elapsed() < Duration::from_secs(6));
    let leader = read_pid(&tmp.path().join("leader.monitor"));
    let child = read_pid(&tmp.path().join("child.monitor"));
    assert!(wait_dead(leader), "agent {leader} still running");
    assert!(wait_dead(child), "agent's child {child} still running");

    // execute() applies the spec's own timeout: a quick agent is unaffected.
    install(tmp.path(), "rc", EXIT_RC);
    let mut s = spec("q", ocf("test", "rc"), &[("rc", "7")], T);
    s.stop_timeout = Duration::from_millis(400);
    let q = agent_for(&s, &opts(tmp.path())).unwrap();
    assert_eq!(
        execute(q.as_ref(), ResourceOp::Monitor).await,
        OcfCode::NotRunning
    );
    assert_eq!(q.timeout(ResourceOp::Stop), Duration::from_millis(400));
    assert_eq!(q.timeout(ResourceOp::Start), T);
}

#[tokio::test]
async fn killed_by_signal_is_a_generic_error() {
    let tmp = tempfile::tempdir().unwrap();
    install(tmp.path(), "selfkill", "kill -9 $$");
    let r = agent_for(
        &spec("r", ocf("test", "selfkill"), &[], T),
        &opts(tmp.path()),
    )
    .unwrap();
    assert_eq!(r.monitor().await, OcfCode::ErrGeneric);
}
