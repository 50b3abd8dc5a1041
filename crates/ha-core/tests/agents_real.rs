//! The real OCF agents of Debian's `resource-agents` package: ocf:heartbeat:Dummy and
//! ocf:heartbeat:Delay. Skipped (or failed, when skipping is forbidden) if it is not installed.

mod agents_common;

use agents_common::spec;
use ha_core::model::AgentSpec;
use ha_core::resource::{AgentOptions, agent_for, execute};
use ha_core::{OcfCode, ResourceOp};
use std::path::Path;
use std::time::{Duration, Instant};

const OCF_ROOT: &str = "/usr/lib/ocf";

fn installed(test: &str, ty: &str) -> bool {
    let path = Path::new(OCF_ROOT).join("resource.d/heartbeat").join(ty);
    if path.is_file() {
        return true;
    }
    testkit::skip_or_fail(
        test,
        "resource-agents not installed (apt-get install resource-agents)",
    )
}

fn heartbeat(ty: &str) -> AgentSpec {
    AgentSpec::Ocf {
        provider: "heartbeat".into(),
        r#type: ty.into(),
    }
}

/// Agents keep pseudo-resource state in HA_RSCTMP; keep it in the test's own directory.
fn opts(tmp: &Path) -> AgentOptions {
    AgentOptions {
        ocf_root: OCF_ROOT.into(),
        extra_env: vec![("HA_RSCTMP".into(), tmp.to_string_lossy().into_owned())],
        ..AgentOptions::default()
    }
}

#[tokio::test]
async fn dummy_lifecycle_meta_data_and_validate() {
    if !installed("dummy_lifecycle_meta_data_and_validate", "Dummy") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("Dummy-d1.state");
    let s = spec(
        "d1",
        heartbeat("Dummy"),
        &[("state", state.to_str().unwrap())],
        Duration::from_secs(20),
    );
    let r = agent_for(&s, &opts(tmp.path())).unwrap();

    assert_eq!(r.monitor().await, OcfCode::NotRunning, "probe before start");
    assert_eq!(r.stop().await, OcfCode::Success, "stop of a stopped Dummy");
    assert_eq!(
        execute(r.as_ref(), ResourceOp::Start).await,
        OcfCode::Success
    );
    assert!(
        state.exists(),
        "Dummy keeps its state where OCF_RESKEY_state says"
    );
    assert_eq!(r.monitor().await, OcfCode::Success);
    assert_eq!(
        r.start().await,
        OcfCode::Success,
        "start of a running Dummy"
    );
    assert_eq!(
        execute(r.as_ref(), ResourceOp::Stop).await,
        OcfCode::Success
    );
    assert!(!state.exists());
    assert_eq!(r.monitor().await, OcfCode::NotRunning);

    let md = r
        .meta_data()
        .await
        .unwrap()
        .expect("OCF agents have meta-data");
    assert_eq!(md.name, "Dummy");
    for action in ["start", "stop", "monitor", "meta-data", "validate-all"] {
        assert!(
            md.has_action(action),
            "{action} missing from {:?}",
            md.action_names()
        );
    }
    assert_eq!(md.parameter_names(), ["state", "fake"]);
    assert!(md.parameter("state").unwrap().unique);
    assert_eq!(
        md.action("start").unwrap().timeout,
        Some(Duration::from_secs(20))
    );
    assert_eq!(
        md.action("monitor").unwrap().interval,
        Some(Duration::from_secs(10))
    );

    assert_eq!(r.validate().await, OcfCode::Success);
    // An unwritable state directory is invalid configuration (OCF_ERR_ARGS).
    let bad = spec(
        "d2",
        heartbeat("Dummy"),
        &[(
            "state",
            tmp.path().join("no/such/dir/x.state").to_str().unwrap(),
        )],
        Duration::from_secs(20),
    );
    let bad = agent_for(&bad, &opts(tmp.path())).unwrap();
    assert_eq!(bad.validate().await, OcfCode::ErrArgs);
}

#[tokio::test]
async fn delay_lifecycle_and_timeout() {
    if !installed("delay_lifecycle_and_timeout", "Delay") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let quick = [("startdelay", "0"), ("stopdelay", "0"), ("mondelay", "0")];
    let r = agent_for(
        &spec(
            "delay1",
            heartbeat("Delay"),
            &quick,
            Duration::from_secs(20),
        ),
        &opts(tmp.path()),
    )
    .unwrap();
    assert_eq!(r.monitor().await, OcfCode::NotRunning);
    assert_eq!(r.start().await, OcfCode::Success);
    assert!(
        tmp.path().join("Delay_delay1").exists(),
        "pseudo resource in HA_RSCTMP"
    );
    assert_eq!(r.monitor().await, OcfCode::Success);
    assert_eq!(r.stop().await, OcfCode::Success);
    assert_eq!(r.monitor().await, OcfCode::NotRunning);
    let md = r.meta_data().await.unwrap().unwrap();
    assert_eq!(
        md.parameter_names(),
        ["startdelay", "stopdelay", "mondelay"]
    );
    assert!(md.has_action("monitor") && md.has_action("validate-all"));

    // A 30 s start delay against a 1.5 s start timeout.
    let mut s = spec(
        "delay2",
        heartbeat("Delay"),
        &[("startdelay", "30"), ("stopdelay", "0"), ("mondelay", "0")],
        Duration::from_secs(20),
    );
    s.start_timeout = Duration::from_millis(1500);
    let slow = agent_for(&s, &opts(tmp.path())).unwrap();
    let t0 = Instant::now();
    assert_eq!(
        execute(slow.as_ref(), ResourceOp::Start).await,
        OcfCode::Timeout
    );
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    // Clean up whatever the interrupted start left.
    assert_eq!(slow.stop().await, OcfCode::Success);
    assert_eq!(slow.monitor().await, OcfCode::NotRunning);
}
