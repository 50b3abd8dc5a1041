//! Valid TOML configurations load to the expected models.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests

use ha_core::config::{from_toml_str, load_file, to_toml_string};
use ha_core::model::*;
use ha_core::{GroupId, NodeId, ResourceId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn resource(id: &str, agent: AgentSpec, p: &[(&str, &str)]) -> ResourceSpec {
    ResourceSpec {
        id: ResourceId::from(id),
        agent,
        params: params(p),
        start_timeout: Duration::from_secs(20),
        stop_timeout: Duration::from_secs(20),
        monitor_interval: None,
        monitor_timeout: Duration::from_secs(20),
    }
}

fn builtin(kind: &str) -> AgentSpec {
    AgentSpec::Builtin { kind: kind.into() }
}

fn node(id: u16, name: &str) -> NodeSpec {
    NodeSpec {
        id: NodeId(id),
        name: name.into(),
        votes: 1,
    }
}

#[test]
fn the_commented_example_loads_to_the_expected_model() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/cluster.toml");
    let model = load_file(&path).unwrap();

    let mut vip = resource(
        "vip",
        builtin("IPaddr"),
        &[
            ("ip", "10.0.0.100"),
            ("cidr_netmask", "24"),
            ("nic", "eth0"),
        ],
    );
    vip.monitor_interval = Some(Duration::from_secs(10));
    let mut drbd = resource("drbd", builtin("drbddisk"), &[("resource", "r0")]);
    drbd.start_timeout = Duration::from_secs(60);
    let mut fs = resource(
        "fs",
        AgentSpec::Heartbeat {
            script: "Filesystem".into(),
            args: vec!["/dev/drbd0".into(), "/srv/nfs".into(), "ext4".into()],
        },
        &[],
    );
    fs.start_timeout = Duration::from_secs(120);
    let mut nfsd = resource(
        "nfsd",
        AgentSpec::Lsb {
            script: "nfs-kernel-server".into(),
        },
        &[],
    );
    nfsd.monitor_interval = Some(Duration::from_secs(30));
    nfsd.monitor_timeout = Duration::from_secs(10);
    let mut web = resource(
        "web",
        AgentSpec::Ocf {
            provider: "heartbeat".into(),
            r#type: "apache".into(),
        },
        &[("configfile", "/etc/apache2/apache2.conf")],
    );
    web.monitor_interval = Some(Duration::from_secs(15));

    let expected = ClusterModel {
        name: "nfs-prod".into(),
        nodes: vec![node(1, "alpha"), node(2, "beta")],
        links: vec![
            LinkSpec {
                name: "lan".into(),
                medium: Medium::Ucast {
                    interface: "eth0".into(),
                    peers: vec!["10.0.0.1:694".into(), "10.0.0.2:694".into()],
                    port: 694,
                },
            },
            LinkSpec {
                name: "backbone".into(),
                medium: Medium::Mcast {
                    interface: "eth1".into(),
                    group: "239.0.0.42".into(),
                    port: 694,
                    ttl: 1,
                    r#loop: false,
                },
            },
            LinkSpec {
                name: "null-modem".into(),
                medium: Medium::Serial {
                    device: "/dev/ttyS0".into(),
                    baud: 115_200,
                },
            },
        ],
        timing: Timing {
            keepalive: Duration::from_millis(500),
            warntime: Duration::from_secs(2),
            deadtime: Duration::from_secs(5),
            initdead: Duration::from_secs(20),
            detector: DetectorKind::Fixed,
        },
        policy: Policy {
            quorum: QuorumMode::TwoNode,
            no_quorum_policy: NoQuorumPolicy::Stop,
            auto_failback: false,
            stickiness: 100,
            migration_threshold: Some(3),
            failure_timeout: Some(Duration::from_secs(600)),
            fencing: false,
        },
        ping_nodes: vec!["10.0.0.254".into()],
        resources: [vip, drbd, fs, nfsd, web]
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect(),
        groups: vec![
            GroupSpec {
                id: GroupId::from("nfs"),
                resources: ["vip", "drbd", "fs", "nfsd"].map(ResourceId::from).to_vec(),
                preferred_node: Some(NodeId(1)),
            },
            GroupSpec {
                id: GroupId::from("www"),
                resources: vec![ResourceId::from("web")],
                preferred_node: Some(NodeId(2)),
            },
        ],
        constraints: vec![
            Constraint::Location {
                group: GroupId::from("www"),
                node: NodeId(1),
                score: -100,
            },
            Constraint::Colocation {
                group: GroupId::from("www"),
                with: GroupId::from("nfs"),
                score: -SCORE_INFINITY,
            },
            Constraint::Order {
                first: GroupId::from("nfs"),
                then: GroupId::from("www"),
                kind: OrderKind::Optional,
            },
        ],
        auth: AuthSpec {
            active: Some(1),
            keys: vec![AuthKey {
                id: 1,
                algorithm: AuthAlgorithm::HmacSha256,
                secret: b"change-me-to-32-random-bytes!!!".to_vec(),
            }],
            insecure_no_auth: false,
        },
    };
    assert_eq!(model, expected);
}

#[test]
fn web_and_mysql_seed_loads() {
    let model = load_file(fixture("web_mysql.toml")).unwrap();
    assert_eq!(model.name, "web-db");
    assert_eq!(model.nodes, vec![node(1, "alpha"), node(2, "beta")]);
    assert_eq!(
        model.links[1],
        LinkSpec {
            name: "link1".into(),
            medium: Medium::Bcast {
                interface: "eth1".into(),
                port: 695
            }
        }
    );
    // Defaults: heartbeat's timing, two_node for two nodes.
    assert_eq!(model.timing, Timing::default());
    assert_eq!(model.policy.quorum, QuorumMode::TwoNode);
    assert_eq!(model.policy.stickiness, SCORE_INFINITY);
    assert_eq!(model.policy.migration_threshold, None);
    assert!(model.policy.auto_failback);
    // secret_file is relative to the TOML file; its trailing newline is dropped.
    assert_eq!(model.auth.active, Some(2));
    assert_eq!(
        model.auth.keys[1],
        AuthKey {
            id: 2,
            algorithm: AuthAlgorithm::HmacSha256,
            secret: b"sha256-secret-for-the-web-db-cluster".to_vec(),
        }
    );
    assert_eq!(model.auth.keys[0].algorithm, AuthAlgorithm::HmacMd5);
    let groups: Vec<(&str, Vec<&str>, Option<NodeId>)> = model
        .groups
        .iter()
        .map(|g| {
            (
                g.id.as_str(),
                g.resources.iter().map(ResourceId::as_str).collect(),
                g.preferred_node,
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("web", vec!["web-ip", "apache"], Some(NodeId(1))),
            (
                "mysql",
                vec!["db-ip", "db-disk", "db-fs", "mysqld"],
                Some(NodeId(2))
            ),
        ]
    );
    assert_eq!(
        model.resources[&ResourceId::from("db-fs")].agent,
        AgentSpec::Ocf {
            provider: "heartbeat".into(),
            r#type: "Filesystem".into()
        }
    );
    assert_eq!(
        model.resources[&ResourceId::from("apache")].monitor_interval,
        Some(Duration::from_secs(20))
    );
}

#[test]
fn nfs_seed_loads() {
    let model = load_file(fixture("nfs.toml")).unwrap();
    assert_eq!(model.groups.len(), 1);
    assert_eq!(model.groups[0].resources.len(), 4);
    assert_eq!(model.timing.initdead, Duration::from_secs(1));
    assert_eq!(
        model.links[0].medium,
        Medium::Ucast {
            interface: "eth0".into(),
            peers: vec!["10.0.0.1:694".into(), "10.0.0.2:694".into()],
            port: 694
        }
    );
}

const MINIMAL: &str = r#"
[cluster]
name = "solo"
[[node]]
name = "only"
[auth]
insecure_no_auth = true
"#;

#[test]
fn minimal_single_node_gets_defaults() {
    let model = from_toml_str(MINIMAL, "min.toml").unwrap();
    assert_eq!(model.nodes, vec![node(1, "only")]);
    assert!(model.links.is_empty());
    assert_eq!(model.timing, Timing::default());
    assert_eq!(
        model.policy,
        Policy {
            quorum: QuorumMode::Majority,
            ..Policy::default()
        }
    );
    assert_eq!(
        model.auth,
        AuthSpec {
            active: None,
            keys: vec![],
            insecure_no_auth: true
        }
    );
}

#[test]
fn derived_timing_and_phi_detector() {
    let text = format!(
        "{MINIMAL}[timing]\nkeepalive = \"100ms\"\ndeadtime = \"1s\"\ndetector = \"phi_accrual\"\nphi_threshold = 10.5\n"
    );
    let t = from_toml_str(&text, "t.toml").unwrap().timing;
    assert_eq!(t.warntime, Duration::from_millis(500));
    assert_eq!(t.initdead, Duration::from_secs(2));
    assert_eq!(t.detector, DetectorKind::PhiAccrual { threshold: 10.5 });
}

#[test]
fn ungrouped_resource_gets_its_own_group_and_ids_default_to_position() {
    let text = r#"
[cluster]
name = "c"
[[node]]
name = "a"
[[node]]
name = "b"
[[node]]
name = "c"
id = 7
votes = 2
[[link]]
kind = "bcast"
interface = "eth0"
[auth]
[[auth.key]]
id = 3
secret = "0123456789abcdef"
[[resource]]
id = "lonely"
class = "heartbeat"
script = "lonely.sh"
args = ["x"]
monitor_interval = "0s"
"#;
    let model = from_toml_str(text, "c.toml").unwrap();
    let ids: Vec<(u16, u32)> = model.nodes.iter().map(|n| (n.id.0, n.votes)).collect();
    assert_eq!(ids, vec![(1, 1), (2, 1), (7, 2)]);
    assert_eq!(model.total_votes(), 4);
    assert_eq!(model.policy.quorum, QuorumMode::Majority);
    assert_eq!(model.auth.active, Some(3));
    assert_eq!(
        model.groups,
        vec![GroupSpec {
            id: GroupId::from("lonely"),
            resources: vec![ResourceId::from("lonely")],
            preferred_node: None
        }]
    );
    assert_eq!(
        model.resources[&ResourceId::from("lonely")].monitor_interval,
        None
    );
}

#[test]
fn models_round_trip_through_toml() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/cluster.toml");
    for path in [example, fixture("nfs.toml"), fixture("web_mysql.toml")] {
        let model = load_file(&path).unwrap();
        let text = to_toml_string(&model).unwrap();
        let again =
            from_toml_str(&text, "generated.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again, model, "{}", path.display());
    }
    let phi = from_toml_str(
        &format!("{MINIMAL}[timing]\ndetector = \"phi_accrual\"\nphi_threshold = 10.25\n"),
        "p.toml",
    )
    .unwrap();
    assert_eq!(
        from_toml_str(&to_toml_string(&phi).unwrap(), "g.toml").unwrap(),
        phi
    );
}
