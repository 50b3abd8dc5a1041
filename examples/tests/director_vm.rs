//! `ha-director` in the test rig's VM (real kernel IPVS): the node starts its group, which puts
//! the VIP on eth0 and installs the ldirectord.cf table through netlink; the health checker
//! finds both real servers down, quiesces them and puts the fallback server in; SIGTERM stops
//! the group and removes the services and the VIP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

const CLUSTER: &str = r#"
[cluster]
name = "vm-director"
[[node]]
name = "director1"
[[link]]
name = "lan"
kind = "ucast"
interface = "eth0"
peers = ["192.168.6.10"]
[timing]
keepalive = "100ms"
deadtime = "500ms"
[auth]
active = 1
[[auth.key]]
id = 1
secret = "vm-director-test-secret"
[[resource]]
id = "vip"
class = "builtin"
kind = "IPaddr"
params = { ip = "192.168.6.240", cidr_netmask = 24, nic = "eth0", garp_count = 1 }
[[resource]]
id = "lvs"
class = "builtin"
kind = "ldirectord"
params = { config = "ldirectord.cf" }
monitor_interval = "1s"
[[group]]
id = "director"
resources = ["vip", "lvs"]
"#;

// Real servers on a link with nobody behind it: every check fails.
const LDIRECTORD: &str = "\
checktimeout=1
checkinterval=1
quiescent=yes
virtual=192.168.6.240:80
\treal=192.168.6.2:80 gate 2
\treal=192.168.6.3:80 gate 1
\tfallback=127.0.0.1:80 gate
\tscheduler=wrr
\tprotocol=tcp
\tchecktype=connect
";

const SCRIPT: &str = r#"
mkdir -p /out
ip link add eth0 type veth peer name eth0p
ip addr add 192.168.6.10/24 dev eth0
ip link set eth0 up; ip link set eth0p up; ip link set lo up
/bin/ha-director --cluster /etc/ha/director.toml --node director1 2>/out/log &
PID=$!
wait_for() { # pattern, seconds
  i=0
  while [ $i -lt $(($2 * 10)) ]; do
    ipvsadm -S -n > /out/table 2>&1
    grep -q -- "$1" /out/table && return 0
    sleep 0.1; i=$((i + 1))
  done
  return 1
}
wait_for "192.168.6.240:80" 30 && cp /out/table /out/installed
ip -o addr show dev eth0 > /out/addr_running
wait_for "127.0.0.1:80" 30 && cp /out/table /out/fallback
kill -TERM $PID
wait $PID; echo $? > /out/exit
ipvsadm -S -n > /out/stopped
ip -o addr show dev eth0 > /out/addr_stopped
"#;

#[test]
fn director_pair_node_installs_checks_and_removes_the_table() {
    if !testkit::privileged("director_pair_node_installs_checks_and_removes_the_table") {
        return;
    }
    let Some(image) =
        testkit::vm::image_or_skip("director_pair_node_installs_checks_and_removes_the_table")
    else {
        return;
    };
    let out = testkit::vm::Vm::builder()
        .image(image)
        .modules(["veth", "ip_vs", "ip_vs_wrr"])
        .binary(env!("CARGO_BIN_EXE_ha-director"), "/bin/ha-director")
        .file_bytes("/etc/ha/director.toml", CLUSTER.as_bytes().to_vec(), 0o644)
        .file_bytes(
            "/etc/ha/ldirectord.cf",
            LDIRECTORD.as_bytes().to_vec(),
            0o644,
        )
        .command(SCRIPT)
        .timeout(Duration::from_secs(180))
        .run()
        .unwrap();
    let file = |name: &str| {
        String::from_utf8_lossy(out.files.get(name).map_or(&[][..], |v| v)).into_owned()
    };
    let log = file("log");
    let installed = file("installed");
    assert!(
        installed.contains("-A -t 192.168.6.240:80 -s wrr"),
        "table not installed:\n{}\nlog:\n{log}\nconsole:\n{}",
        file("table"),
        out.console
    );
    assert!(
        file("addr_running").contains("inet 192.168.6.240/24"),
        "VIP missing: {}\nlog:\n{log}",
        file("addr_running")
    );
    // Both real servers fail their checks: quiesced (weight 0), fallback in.
    let fallback = file("fallback");
    assert!(
        fallback.contains("-a -t 192.168.6.240:80 -r 127.0.0.1:80 -g -w 1"),
        "no fallback:\n{}\nlog:\n{log}",
        file("table")
    );
    for rs in ["192.168.6.2:80", "192.168.6.3:80"] {
        assert!(
            fallback.contains(&format!("-r {rs} -g -w 0")),
            "{rs} not quiesced:\n{fallback}"
        );
    }
    assert_eq!(file("exit").trim(), "0", "log:\n{log}");
    assert!(
        !file("stopped").contains("192.168.6.240"),
        "services left behind after stop:\n{}",
        file("stopped")
    );
    assert!(
        !file("addr_stopped").contains("192.168.6.240"),
        "VIP left behind: {}",
        file("addr_stopped")
    );
}

#[test]
fn example_director_config_checks_and_prints_its_table() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/director.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ha-director"))
        .args(["--cluster", cfg, "--node", "director2", "--check"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("-A -t 192.168.6.240:80 -s wrr"), "{text}");
    assert!(
        text.contains("-A -t 192.168.6.240:443 -s lc -p 300"),
        "{text}"
    );
    assert!(
        text.contains("-a -t 192.168.6.240:80 -r 192.168.6.2:80 -g -w 2"),
        "{text}"
    );
    assert!(text.contains("this is node n2"), "{text}");
}

/// The same director pair from keepalived.conf (`format = "keepalived"`) installs the same
/// IPVS table as from ldirectord.cf.
#[test]
fn keepalived_conf_gives_the_same_table_as_ldirectord_cf() {
    let table = |cluster: &str| {
        let cfg = format!("{}/config/{cluster}", env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ha-director"))
            .args(["--cluster", &cfg, "--node", "director1", "--check"])
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .filter(|l| l.starts_with("-A") || l.starts_with("-a"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let ldirectord = table("director.toml");
    assert_eq!(ldirectord.len(), 6, "{ldirectord:?}");
    assert_eq!(table("director-keepalived.toml"), ldirectord);
}
