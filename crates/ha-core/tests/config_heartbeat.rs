//! Import of heartbeat's ha.cf, haresources and authkeys.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests

use ha_core::config::{
    ImportOptions, from_toml_str, import_heartbeat, import_heartbeat_str, import_heartbeat_with,
    load_file, to_toml_string,
};
use ha_core::error::{Error, Location};
use ha_core::model::*;
use ha_core::{GroupId, NodeId, ResourceId};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// Imports a fixture directory. Git does not keep mode 600, so the check is off here and
/// tested separately below.
fn import_dir(name: &str) -> ClusterModel {
    let dir = fixtures().join("heartbeat").join(name);
    import_heartbeat_with(
        &dir.join("ha.cf"),
        &dir.join("haresources"),
        &dir.join("authkeys"),
        &ImportOptions {
            check_authkeys_mode: false,
            ..ImportOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn nfs_seed_imports_to_the_same_model_as_its_toml() {
    let imported = import_dir("nfs");
    let written = load_file(fixtures().join("nfs.toml")).unwrap();
    assert_eq!(imported, written);
    // And a few facts spelled out, in case both sides drift together.
    assert_eq!(imported.policy.quorum, QuorumMode::TwoNode);
    assert!(!imported.policy.auto_failback);
    assert_eq!(imported.timing.keepalive, Duration::from_millis(100));
    assert_eq!(imported.timing.warntime, Duration::from_millis(200));
    assert_eq!(imported.groups[0].preferred_node, Some(NodeId(1)));
}

#[test]
fn web_mysql_seed_imports() {
    let m = import_dir("web_mysql");
    assert_eq!(m.name, "alpha-beta");
    assert_eq!(
        m.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["alpha", "beta"]
    );
    assert_eq!(
        m.links,
        vec![
            LinkSpec {
                name: "link0".into(),
                medium: Medium::Bcast {
                    interface: "eth0".into(),
                    port: 694
                }
            },
            LinkSpec {
                name: "link1".into(),
                medium: Medium::Bcast {
                    interface: "eth1".into(),
                    port: 694
                }
            },
            LinkSpec {
                name: "link2".into(),
                medium: Medium::Serial {
                    device: "/dev/ttyS0".into(),
                    baud: 38_400
                }
            },
        ]
    );
    assert_eq!(m.timing, Timing::default());
    assert_eq!(m.policy.quorum, QuorumMode::None);
    assert!(m.policy.auto_failback);
    assert!(m.ping_nodes.is_empty());

    let groups: Vec<(&str, Vec<&str>, Option<NodeId>)> = m
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
            (
                "group-IPaddr-10.0.0.80",
                vec!["IPaddr-10.0.0.80", "apache2"],
                Some(NodeId(1))
            ),
            (
                "group-IPaddr2-10.0.0.33-24-eth0-10.0.0.255",
                vec![
                    "IPaddr2-10.0.0.33-24-eth0-10.0.0.255",
                    "drbddisk-mysql",
                    "Filesystem-dev-drbd1-var-lib-mysql-ext4-noatime",
                    "mysql"
                ],
                Some(NodeId(2))
            ),
        ]
    );
    let vip = &m.resources[&ResourceId::from("IPaddr2-10.0.0.33-24-eth0-10.0.0.255")];
    assert_eq!(
        vip.agent,
        AgentSpec::Builtin {
            kind: "IPaddr".into()
        }
    );
    let p: Vec<(&str, &str)> = vip
        .params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        p,
        [
            ("broadcast", "10.0.0.255"),
            ("cidr_netmask", "24"),
            ("ip", "10.0.0.33"),
            ("nic", "eth0")
        ]
    );
    assert_eq!(
        m.resources[&ResourceId::from("drbddisk-mysql")].params["resource"],
        "mysql"
    );
    assert_eq!(
        m.resources[&ResourceId::from("Filesystem-dev-drbd1-var-lib-mysql-ext4-noatime")].agent,
        AgentSpec::Heartbeat {
            script: "Filesystem".into(),
            args: ["/dev/drbd1", "/var/lib/mysql", "ext4", "noatime"]
                .map(String::from)
                .to_vec()
        }
    );
    assert_eq!(
        m.resources[&ResourceId::from("apache2")].agent,
        AgentSpec::Heartbeat {
            script: "apache2".into(),
            args: vec![]
        }
    );
    assert_eq!(
        m.auth,
        AuthSpec {
            active: Some(2),
            keys: vec![
                AuthKey {
                    id: 1,
                    algorithm: AuthAlgorithm::HmacMd5,
                    secret: b"oldoldoldoldoldold".to_vec()
                },
                AuthKey {
                    id: 2,
                    algorithm: AuthAlgorithm::HmacSha1,
                    secret: b"new secret with spaces in it".to_vec()
                },
            ],
            insecure_no_auth: false,
        }
    );
}

#[cfg(unix)]
#[test]
fn authkeys_must_be_mode_600() {
    use std::os::unix::fs::PermissionsExt;
    let src = fixtures().join("heartbeat/nfs");
    let dir = tempfile::tempdir().unwrap();
    for f in ["ha.cf", "haresources", "authkeys"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let keys = dir.path().join("authkeys");
    let run = || {
        import_heartbeat(
            &dir.path().join("ha.cf"),
            &dir.path().join("haresources"),
            &keys,
        )
    };
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = run().unwrap_err();
    let Error::Config { location, message } = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        location,
        Location {
            file: keys.clone(),
            line: 0,
            field: "mode".into()
        }
    );
    assert!(
        message.contains("mode 0644") && message.contains("chmod 600"),
        "{message}"
    );
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(run().unwrap(), import_dir("nfs"));
}

const HA_CF: &str = "keepalive 1\ndeadtime 10\nbcast eth0\nnode a b\n";
const HARESOURCES: &str = "a 10.0.0.1 httpd\n";
const AUTHKEYS: &str = "auth 1\n1 sha1 0123456789abcdef\n";

#[track_caller]
fn expect(
    result: ha_core::Result<ClusterModel>,
    file: &str,
    line: usize,
    field: &str,
    needle: &str,
) {
    let err = result.expect_err("must be rejected");
    let Error::Config { location, message } = &err else {
        panic!("not a config error: {err:?}")
    };
    assert_eq!(
        location,
        &Location {
            file: PathBuf::from(file),
            line,
            field: field.into()
        },
        "{message}"
    );
    assert!(message.contains(needle), "`{needle}` not in `{message}`");
}

fn cf(extra: &str) -> ha_core::Result<ClusterModel> {
    import_heartbeat_str(&format!("{HA_CF}{extra}"), HARESOURCES, AUTHKEYS)
}

fn res(text: &str) -> ha_core::Result<ClusterModel> {
    import_heartbeat_str(HA_CF, text, AUTHKEYS)
}

fn keys(text: &str) -> ha_core::Result<ClusterModel> {
    import_heartbeat_str(HA_CF, HARESOURCES, text)
}

#[test]
fn base_strings_import() {
    let m = import_heartbeat_str(HA_CF, HARESOURCES, AUTHKEYS).unwrap();
    assert_eq!(m.timing.warntime, Duration::from_secs(5));
    assert_eq!(m.timing.initdead, Duration::from_secs(20));
    assert_eq!(
        m.groups,
        vec![GroupSpec {
            id: GroupId::from("group-IPaddr-10.0.0.1"),
            resources: vec![
                ResourceId::from("IPaddr-10.0.0.1"),
                ResourceId::from("httpd")
            ],
            preferred_node: Some(NodeId(1)),
        }]
    );
    assert_eq!(
        m.resources[&ResourceId::from("httpd")].start_timeout,
        Duration::from_secs(60)
    );
}

#[test]
fn ha_cf_errors() {
    expect(
        cf("# comment\nbogus 1\n"),
        "ha.cf",
        6,
        "bogus",
        "unknown directive `bogus`",
    );
    expect(
        cf("deadtime 2\n"),
        "ha.cf",
        5,
        "deadtime",
        "must exceed 2 x keepalive",
    );
    expect(
        cf("warntime 11\n"),
        "ha.cf",
        5,
        "warntime",
        "exceeds deadtime",
    );
    expect(
        cf("initdead 5\n"),
        "ha.cf",
        5,
        "initdead",
        "at least 2 x deadtime",
    );
    expect(
        cf("keepalive 10parsecs\n"),
        "ha.cf",
        5,
        "keepalive",
        "unknown unit `parsecs`",
    );
    expect(
        cf("keepalive\n"),
        "ha.cf",
        5,
        "keepalive",
        "expected 1 argument",
    );
    expect(
        cf("mcast eth0 239.0.0.1 694 1\n"),
        "ha.cf",
        5,
        "mcast",
        "mcast eth0 239.0.0.1 694 1 0",
    );
    expect(
        cf("mcast eth0 10.0.0.1 694 1 0\n"),
        "ha.cf",
        5,
        "mcast",
        "not a multicast address",
    );
    expect(
        cf("auto_failback maybe\n"),
        "ha.cf",
        5,
        "auto_failback",
        "not on, off or legacy",
    );
    expect(
        cf("crm on\n"),
        "ha.cf",
        5,
        "crm",
        "write a TOML configuration",
    );
    expect(
        cf("node a\n"),
        "ha.cf",
        5,
        "node",
        "already listed on line 4",
    );
    expect(
        cf("baud 12345\n"),
        "ha.cf",
        5,
        "baud",
        "unsupported baud rate",
    );
    expect(
        cf("ucast eth0 not_a_host\n"),
        "ha.cf",
        5,
        "ucast",
        "neither an IP address nor a host name",
    );
    expect(
        import_heartbeat_str("bcast eth0\n", HARESOURCES, AUTHKEYS),
        "ha.cf",
        0,
        "node",
        "add `node NAME`",
    );
    expect(
        import_heartbeat_str("node a b\n", HARESOURCES, AUTHKEYS),
        "ha.cf",
        0,
        "bcast",
        "no heartbeat medium",
    );
}

#[test]
fn ha_cf_details() {
    let m = cf("udpport 700\nucast eth1 10.0.0.1\nucast eth1 10.0.0.2 10.0.0.1\nmcast eth2 239.1.1.1 695 3 1\nlogfacility local0\nrespawn hacluster /usr/lib/heartbeat/ipfail\nping 10.0.0.254\nping_group grp 10.0.1.1 10.0.1.2\nauto_failback legacy\ndeadtime 2500ms\n").unwrap();
    assert_eq!(m.timing.deadtime, Duration::from_millis(2500));
    assert_eq!(
        m.links[1].medium,
        Medium::Ucast {
            interface: "eth1".into(),
            peers: vec!["10.0.0.1:700".into(), "10.0.0.2:700".into()],
            port: 700
        }
    );
    assert_eq!(
        m.links[2].medium,
        Medium::Mcast {
            interface: "eth2".into(),
            group: "239.1.1.1".into(),
            port: 695,
            ttl: 3,
            r#loop: true
        }
    );
    // bcast takes udpport even though it came first.
    assert_eq!(
        m.links[0].medium,
        Medium::Bcast {
            interface: "eth0".into(),
            port: 700
        }
    );
    assert_eq!(m.ping_nodes, ["10.0.0.254", "10.0.1.1", "10.0.1.2"]);
    assert_eq!(m.policy.quorum, QuorumMode::TwoNode);
    assert!(m.policy.auto_failback);
    let m = cf("nice_failback on\n").unwrap();
    assert!(!m.policy.auto_failback);
}

#[test]
fn haresources_errors() {
    expect(
        res("c 10.0.0.1\n"),
        "haresources",
        1,
        "c",
        "not a node of ha.cf; use one of [a, b]",
    );
    expect(
        res("# web\na 10.0.0.1 \\\n  IPaddr::10.0.0.300/24 httpd\n"),
        "haresources",
        3,
        "IPaddr::10.0.0.300/24",
        "not an IPv4 address",
    );
    expect(
        res("a 10.0.0.1/40\n"),
        "haresources",
        1,
        "10.0.0.1/40",
        "prefix length",
    );
    expect(
        res("a 10.0.0.1 httpd\nb httpd\n"),
        "haresources",
        2,
        "httpd",
        "already used on line 1",
    );
    expect(res("a\n"), "haresources", 1, "a", "no resources");
    expect(
        res("a drbddisk::r0::r1\n"),
        "haresources",
        1,
        "drbddisk::r0::r1",
        "drbddisk::r0",
    );
    expect(
        res("a Filesystem::/dev/sda1\n"),
        "haresources",
        1,
        "Filesystem::/dev/sda1",
        "2 to 4 arguments",
    );
    expect(
        res("a httpd::\n"),
        "haresources",
        1,
        "httpd::",
        "empty argument",
    );
    expect(
        res("a ../../bin/sh\n"),
        "haresources",
        1,
        "../../bin/sh",
        "not a valid resource script name",
    );
}

#[test]
fn haresources_ids_stay_unique() {
    let m = res("a foo/1 httpd \\\n\n b foo-1\n").err();
    // `foo/1` is not an address: it is a script name with a slash, rejected.
    assert!(m.is_some());
    let m = res("a drbddisk\nb drbddisk::all IPaddr::10.0.0.2\n").unwrap();
    assert_eq!(
        m.resources
            .keys()
            .map(ResourceId::as_str)
            .collect::<Vec<_>>(),
        ["IPaddr-10.0.0.2", "drbddisk", "drbddisk-all"]
    );
    assert_eq!(
        m.resources[&ResourceId::from("drbddisk")].params["resource"],
        "all"
    );
    assert_eq!(m.groups[1].preferred_node, Some(NodeId(2)));
}

#[test]
fn authkeys_errors_and_crc() {
    expect(
        keys("auth 1\n1 sha256 0123456789abcdef\n"),
        "authkeys",
        2,
        "sha256",
        "use sha1",
    );
    expect(
        keys("1 sha1 0123456789abcdef\n"),
        "authkeys",
        0,
        "auth",
        "no `auth N` line",
    );
    expect(
        keys("auth 2\n1 sha1 0123456789abcdef\n"),
        "authkeys",
        1,
        "auth",
        "`auth 2` names an undefined key",
    );
    expect(
        keys("auth 1\n1 sha1 a\n1 md5 b\n"),
        "authkeys",
        3,
        "key",
        "already defined on line 2",
    );
    expect(
        keys("auth 1\n1 md5\n"),
        "authkeys",
        2,
        "md5",
        "needs a secret",
    );
    expect(keys("auth x\n"), "authkeys", 1, "auth", "not a key number");
    expect(
        keys("auth 1\nauth 1\n1 crc\n"),
        "authkeys",
        2,
        "auth",
        "already given on line 1",
    );
    let m = keys("# test\nauth 3\n3 crc\n").unwrap();
    assert_eq!(
        m.auth,
        AuthSpec {
            active: Some(3),
            keys: vec![AuthKey {
                id: 3,
                algorithm: AuthAlgorithm::Crc,
                secret: vec![]
            }],
            insecure_no_auth: true
        }
    );
}

#[test]
fn imports_migrate_to_toml_unchanged() {
    for dir in ["nfs", "web_mysql"] {
        let model = import_dir(dir);
        let text = to_toml_string(&model).unwrap();
        assert_eq!(
            from_toml_str(&text, "migrated.toml").unwrap(),
            model,
            "{text}"
        );
    }
}
