//! Group start/stop order and rollback, with in-memory resources and with OCF scripts.

mod agents_common;

use agents_common::{spec, write_script};
use ha_core::model::AgentSpec;
use ha_core::resource::{
    AgentOptions, GroupFailure, Journal, MemoryResource, OpTimeouts, Resource, ResourceGroup,
    agent_for,
};
use ha_core::{OcfCode, ResourceOp};
use std::time::Duration;

use ResourceOp::{Start, Stop};

fn members(journal: &Journal, names: &[&str]) -> (Vec<MemoryResource>, ResourceGroup) {
    let handles: Vec<MemoryResource> = names
        .iter()
        .map(|n| MemoryResource::new(*n).with_journal(journal.clone()))
        .collect();
    let group = ResourceGroup::new(
        handles
            .iter()
            .map(|h| Box::new(h.clone()) as Box<dyn Resource>)
            .collect(),
    );
    (handles, group)
}

fn ops(list: &[(&str, ResourceOp)]) -> Vec<(String, ResourceOp)> {
    list.iter().map(|(n, o)| (n.to_string(), *o)).collect()
}

#[tokio::test]
async fn start_left_to_right_stop_right_to_left() {
    let j = Journal::new();
    let (h, g) = members(&j, &["disk", "fs", "ip", "app"]);
    g.start().await.unwrap();
    assert!(h.iter().all(MemoryResource::is_running));
    assert!(
        g.monitor()
            .await
            .iter()
            .all(|(_, c)| *c == OcfCode::Success)
    );
    g.stop().await.unwrap();
    assert!(h.iter().all(|r| !r.is_running()));
    assert_eq!(
        j.ops(),
        ops(&[
            ("disk", Start),
            ("fs", Start),
            ("ip", Start),
            ("app", Start),
            ("disk", ResourceOp::Monitor),
            ("fs", ResourceOp::Monitor),
            ("ip", ResourceOp::Monitor),
            ("app", ResourceOp::Monitor),
            ("app", Stop),
            ("ip", Stop),
            ("fs", Stop),
            ("disk", Stop),
        ])
    );
}

#[tokio::test]
async fn failed_start_rolls_back_in_reverse() {
    let j = Journal::new();
    let (h, g) = members(&j, &["disk", "fs", "ip", "app"]);
    h[2].fail_next(Start, OcfCode::ErrInstalled);
    let err: GroupFailure = g.start().await.unwrap_err();
    assert_eq!(err.index, 2);
    assert_eq!(err.resource.as_str(), "ip");
    assert_eq!(err.op, Start);
    assert_eq!(err.code, OcfCode::ErrInstalled);
    assert!(err.rolled_back_cleanly());
    let rolled: Vec<&str> = err.rollback.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(rolled, ["ip", "fs", "disk"]);
    assert!(h.iter().all(|r| !r.is_running()), "nothing left running");
    assert_eq!(
        h[3].calls(Start),
        0,
        "members after the failure are not touched"
    );
    assert_eq!(
        j.ops(),
        ops(&[
            ("disk", Start),
            ("fs", Start),
            ("ip", Start),
            ("ip", Stop),
            ("fs", Stop),
            ("disk", Stop),
        ])
    );
    assert!(err.to_string().contains("ip"), "{err}");

    // First member failing: only it is stopped again.
    j.clear();
    h[0].fail_next(Start, OcfCode::ErrGeneric);
    let err = g.start().await.unwrap_err();
    assert_eq!((err.index, err.rollback.len()), (0, 1));
    assert_eq!(j.ops(), ops(&[("disk", Start), ("disk", Stop)]));
}

#[tokio::test]
async fn rollback_reports_a_failed_stop() {
    let j = Journal::new();
    let (h, g) = members(&j, &["a", "b", "c"]);
    h[2].fail_next(Start, OcfCode::ErrGeneric);
    h[0].fail_next(Stop, OcfCode::ErrGeneric);
    let err = g.start().await.unwrap_err();
    assert!(!err.rolled_back_cleanly());
    assert_eq!(err.rollback.last().unwrap().1, OcfCode::ErrGeneric);
    assert!(h[0].is_running());
}

#[tokio::test]
async fn hung_start_times_out_and_rolls_back() {
    let j = Journal::new();
    let (h, _) = members(&j, &["a"]);
    let slow = MemoryResource::new("slow")
        .with_journal(j.clone())
        .with_timeouts(OpTimeouts {
            start: Duration::from_millis(200),
            ..OpTimeouts::default()
        });
    slow.hang(Start, true);
    let g = ResourceGroup::new(vec![Box::new(h[0].clone()), Box::new(slow.clone())]);
    let t0 = std::time::Instant::now();
    let err = g.start().await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!((err.index, err.code), (1, OcfCode::Timeout));
    assert_eq!(j.ops(), ops(&[("a", Start), ("slow", Stop), ("a", Stop)]));
}

#[tokio::test]
async fn failed_stop_halts_the_stop() {
    let j = Journal::new();
    let (h, g) = members(&j, &["disk", "fs", "app"]);
    g.start().await.unwrap();
    j.clear();
    h[1].fail_next(Stop, OcfCode::ErrGeneric);
    let err = g.stop().await.unwrap_err();
    assert_eq!(
        (err.index, err.op, err.code),
        (1, Stop, OcfCode::ErrGeneric)
    );
    assert!(err.rollback.is_empty());
    assert!(h[0].is_running(), "what fs depends on stays up");
    assert!(!h[2].is_running());
    assert_eq!(j.ops(), ops(&[("app", Stop), ("fs", Stop)]));
    // Stopping again finishes the job (idempotent stop of `app`).
    g.stop().await.unwrap();
    assert!(h.iter().all(|r| !r.is_running()));
}

/// An OCF agent of ours that logs every action and fails start when asked to.
const LOGGING_AGENT: &str = r#"
log="$OCF_RESKEY_dir/log"
state="$OCF_RESKEY_dir/$OCF_RESOURCE_INSTANCE.state"
echo "$OCF_RESOURCE_INSTANCE $1" >> "$log"
case "$1" in
start) [ "$OCF_RESKEY_fail" = yes ] && exit 1; touch "$state";;
stop) rm -f "$state";;
monitor) [ -f "$state" ] || exit 7;;
*) exit 3;;
esac
exit 0
"#;

#[tokio::test]
async fn script_group_order_and_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    write_script(&tmp.path().join("resource.d/test"), "Log", LOGGING_AGENT);
    let opts = AgentOptions {
        ocf_root: tmp.path().to_path_buf(),
        ..AgentOptions::default()
    };
    let dir = tmp.path().to_str().unwrap();
    let agent = AgentSpec::Ocf {
        provider: "test".into(),
        r#type: "Log".into(),
    };
    let t = Duration::from_secs(10);
    let build = |fail_b: &str| {
        ResourceGroup::new(
            [("a", "no"), ("b", fail_b), ("c", "no")]
                .iter()
                .map(|(id, fail)| {
                    agent_for(
                        &spec(id, agent.clone(), &[("dir", dir), ("fail", fail)], t),
                        &opts,
                    )
                    .unwrap()
                })
                .collect(),
        )
    };
    let log = tmp.path().join("log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let g = build("no");
    g.start().await.unwrap();
    g.stop().await.unwrap();
    assert_eq!(
        read_log(),
        "a start\nb start\nc start\nc stop\nb stop\na stop\n"
    );

    std::fs::remove_file(&log).unwrap();
    let g = build("yes");
    let err = g.start().await.unwrap_err();
    assert_eq!((err.index, err.code), (1, OcfCode::ErrGeneric));
    assert_eq!(read_log(), "a start\nb start\nb stop\na stop\n");
    let states: Vec<OcfCode> = g.monitor().await.into_iter().map(|(_, c)| c).collect();
    assert_eq!(states, [OcfCode::NotRunning; 3]);
}
