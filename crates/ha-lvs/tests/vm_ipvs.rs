//! The IPVS client against a real kernel (Debian cloud kernel under qemu): tables written by
//! our client read back identically by ipvsadm (`-S -n` and every `-L -n` format), tables
//! written by ipvsadm read back identically by our client, idempotent reconcile, typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ha_lvs::ipvsadm::parse_rules;
use ha_lvs::model::{Forward, Table};

/// Every scheduler, forwarding method (Local comes from a local address), tunnel type and
/// checksum mode, IPv6, fwmark (v4 and v6), persistence with netmasks, one-packet, SCTP, a
/// persistence engine.
const RULES: &str = "\
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 10.0.1.1:80 -m -w 1
-a -t 10.0.0.1:80 -r 10.0.1.2:8080 -m -w 3
-a -t 10.0.0.1:80 -r 127.0.0.1:80 -g -w 1
-A -t 10.0.0.2:80 -s wrr -p 300 -M 255.255.255.0
-a -t 10.0.0.2:80 -r 10.0.1.3:80 -g -w 2
-a -t 10.0.0.2:80 -r 10.0.1.30:80 -g -w 0
-A -t 10.0.0.3:443 -s lc
-a -t 10.0.0.3:443 -r 10.0.1.4:443 -i -w 1 --tun-type ipip
-a -t 10.0.0.3:443 -r 10.0.1.5:443 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum
-a -t 10.0.0.3:443 -r 10.0.1.6:443 -i -w 1 --tun-type gue --tun-port 6081 --tun-remcsum
-a -t 10.0.0.3:443 -r 10.0.1.7:443 -i -w 1 --tun-type gre --tun-nocsum
-a -t 10.0.0.3:443 -r 10.0.1.8:443 -i -w 1 --tun-type gre --tun-csum
-A -u 10.0.0.4:53 -s wlc -o
-a -u 10.0.0.4:53 -r 10.0.1.9:53 -m -w 7
-A -u 10.0.0.5:53 -s lblc
-A -t 10.0.0.6:80 -s lblcr
-A -t 10.0.0.7:80 -s dh
-A -t 10.0.0.8:80 -s sh -b sh-fallback,sh-port
-A -t 10.0.0.9:80 -s sed
-A -t 10.0.0.10:80 -s nq
-A -t 10.0.0.11:80 -s fo
-A -t 10.0.0.12:80 -s ovf
-A -t 10.0.0.13:80 -s mh -b mh-fallback,mh-port
-A -t 10.0.0.16:80 -s rr -b flag-3
-A -f 1 -s rr
-a -f 1 -r 10.0.1.10:0 -g -w 1
-A -f 2 -6 -s rr -p 60 -M 64
-a -f 2 -6 -r [2001:db8::20]:0 -g -w 1
-A -t [2001:db8::1]:80 -s wrr -p 120 -M 96
-a -t [2001:db8::1]:80 -r [2001:db8::10]:80 -m -w 4
-a -t [2001:db8::1]:80 -r [2001:db8::11]:8080 -i -w 2 --tun-type gue --tun-port 5555 --tun-nocsum
-A --sctp-service 10.0.0.14:9 -s rr
-a --sctp-service 10.0.0.14:9 -r 10.0.1.11:9 -m -w 1
-A -u 10.0.0.15:5060 -s rr -p 60 --pe sip
";

const SCRIPT: &str = r#"
set -e
M=/bin/ha-lvs-vmcheck
mkdir -p /out
$M apply /rules > /out/apply1
$M apply /rules > /out/apply2
ipvsadm -S -n > /out/ipvsadm_save
$M save > /out/our_save
ipvsadm -L -n > /out/ipvsadm_list
$M list > /out/our_list
for f in stats rate thresholds persistent-conn tun-info; do
  ipvsadm -L -n --$f > /out/ipvsadm_list_$f
  $M list $f > /out/our_list_$f
done
$M flush
test -z "$(ipvsadm -S -n)"
ipvsadm -R < /rules
$M save > /out/our_save_from_ipvsadm
$M apply /rules > /out/apply3
$M flush
$M errors > /out/errors
$M timeouts 900 120 300 > /out/our_timeouts
ipvsadm -L --timeout > /out/ipvsadm_timeouts
$M flush
ipvsadm -A -t 10.99.0.1:80 -s rr
$M agent /rules > /out/agent
ipvsadm -S -n > /out/after_agent
$M checker > /out/checker
ip link set lo multicast on
$M daemon lo > /out/daemon
ipvsadm --start-daemon backup --mcast-interface lo --syncid 9
$M daemons > /out/daemons
$M zero > /out/zero
"#;

fn file(out: &testkit::vm::VmOutput, name: &str) -> String {
    String::from_utf8_lossy(out.files.get(name).map(Vec::as_slice).unwrap_or_default()).into_owned()
}

/// Equal as configuration, allowing the kernel's conversion of any method to Local for local addresses.
fn same_table(a: &Table, b: &Table) -> bool {
    let norm = |t: &Table| {
        let mut t = t.clone();
        t.sort_by_key(|v| v.service.key);
        for v in &mut t {
            v.dests.sort_by_key(|d| d.addr);
            for d in &mut v.dests {
                if d.addr.ip().is_loopback() {
                    d.forward = Forward::Local;
                }
            }
        }
        t
    };
    norm(a) == norm(b)
}

#[test]
fn ipvs_client_against_real_kernel() {
    if !testkit::privileged("ipvs_client_against_real_kernel") {
        return;
    }
    let Some(image) = testkit::vm::image_or_skip("ipvs_client_against_real_kernel") else {
        return;
    };
    let out = testkit::vm::Vm::builder()
        .image(image)
        .modules(testkit::vm::image::IPVS_MODULES.iter().copied())
        .binary(env!("CARGO_BIN_EXE_ha-lvs-vmcheck"), "/bin/ha-lvs-vmcheck")
        .file_bytes("/rules", RULES.as_bytes().to_vec(), 0o644)
        .command(SCRIPT)
        .timeout(Duration::from_secs(240))
        .run()
        .expect("VM run");
    assert_eq!(
        out.exit_code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );

    let rules = parse_rules(RULES, "RULES").unwrap();
    // Our client built the table: applying twice changes nothing the second time.
    assert_eq!(
        file(&out, "apply1").trim(),
        format!(
            "changes={}",
            rules.len() + rules.iter().map(|v| v.dests.len()).sum::<usize>()
        )
    );
    assert_eq!(file(&out, "apply2").trim(), "changes=0");
    // ipvsadm reads back what we wrote, and our writers are byte-identical to ipvsadm's.
    let ipvsadm_save = file(&out, "ipvsadm_save");
    assert!(
        same_table(&parse_rules(&ipvsadm_save, "ipvsadm -S").unwrap(), &rules),
        "{ipvsadm_save}"
    );
    assert_eq!(file(&out, "our_save"), ipvsadm_save);
    assert_eq!(file(&out, "our_list"), file(&out, "ipvsadm_list"));
    for f in ["stats", "rate", "thresholds", "persistent-conn", "tun-info"] {
        let theirs = file(&out, &format!("ipvsadm_list_{f}"));
        assert!(theirs.contains("RemoteAddress"), "{f}: {theirs}");
        assert_eq!(file(&out, &format!("our_list_{f}")), theirs, "format {f}");
    }
    // ipvsadm built the table: we read it back equal, and reconcile finds nothing to do.
    assert_eq!(file(&out, "our_save_from_ipvsadm"), ipvsadm_save);
    assert_eq!(file(&out, "apply3").trim(), "changes=0");
    // Kernel errors come back typed.
    let errors = file(&out, "errors");
    for want in [
        "add_service=ok",
        "add_service_again=AlreadyExists errno=17",
        "add_dest=ok",
        "add_dest_again=AlreadyExists errno=17",
        "edit_missing_service=NoSuchService errno=3",
        "del_missing_service=NoSuchService errno=3",
        "add_dest_missing_service=ServiceNotDefined errno=3",
        "edit_missing_dest=NoSuchDestination errno=2",
        "del_missing_dest=NoSuchDestination errno=2",
        "unknown_scheduler=SchedulerOrPeNotFound errno=2",
        "del_service=ok",
        "get_missing_service=NoSuchService errno=3",
        "dests_of_missing_service=[]",
    ] {
        assert!(
            errors.lines().any(|l| l.starts_with(want)),
            "missing {want:?} in\n{errors}"
        );
    }
    assert!(
        errors.contains("add destination 10.9.1.1:80 of TCP 10.9.0.1:80: already exists"),
        "{errors}"
    );
    assert_eq!(file(&out, "our_timeouts"), file(&out, "ipvsadm_timeouts"));
    // The director resource: start installs, monitor sees it, start is idempotent, stop removes
    // only its own services.
    assert_eq!(
        file(&out, "agent"),
        "monitor=NotRunning\nstart=Success\nmonitor=Success\nstart=Success\nstop=Success\nmonitor=NotRunning\n"
    );
    assert_eq!(file(&out, "after_agent"), "-A -t 10.99.0.1:80 -s rr\n");
    // The health checker drives the kernel table: weight 5 while the server listens, 0 after.
    assert_eq!(
        file(&out, "checker"),
        "checker_up_weight=Some(5)\nchecker_down_weight=Some(0)\n"
    );
}

/// Director = the VM itself; a client and two real servers in network namespaces, each on its
/// own veth pair. Real servers route back through the director (NAT needs the replies).
const NAT_SCRIPT: &str = r#"
set -e
M=/bin/ha-lvs-vmcheck
mkdir -p /out
ip link set lo up
sysctl -qw net.ipv4.ip_forward=1
ip netns add cl
ip link add vcl type veth peer name eth0 netns cl
ip addr add 10.50.0.1/24 dev vcl; ip link set vcl up
ip -n cl addr add 10.50.0.2/24 dev eth0; ip -n cl link set eth0 up; ip -n cl link set lo up
for i in 1 2; do
  ip netns add rs$i
  ip link add vrs$i type veth peer name eth0 netns rs$i
  ip addr add 10.6$i.0.1/24 dev vrs$i; ip link set vrs$i up
  ip -n rs$i addr add 10.6$i.0.2/24 dev eth0; ip -n rs$i link set eth0 up; ip -n rs$i link set lo up
  ip -n rs$i route add default via 10.6$i.0.1
  mkdir -p /www$i; echo "server$i" > /www$i/index.html
  ip netns exec rs$i busybox httpd -p 80 -h /www$i
done
$M apply /nat_rules > /out/apply
: > /out/answers
for n in 1 2 3 4 5 6 7 8 9 10; do
  printf 'GET /index.html HTTP/1.0\r\n\r\n' | ip netns exec cl busybox nc -w 5 10.50.0.1 80 | tail -n 1 >> /out/answers
done
# The kernel folds its per-CPU counters into the totals every 2 s (estimator): wait for it.
for i in $(seq 1 40); do
  ipvsadm -L -n --stats --exact | grep -Eq '^TCP +10.50.0.1:80 +10 ' && break
  sleep 0.25
done
ipvsadm -L -n --stats > /out/ipvsadm_stats
$M list stats > /out/our_stats
ipvsadm -L -n --stats --exact > /out/ipvsadm_stats_exact
"#;

const NAT_RULES: &str = "\
-A -t 10.50.0.1:80 -s rr
-a -t 10.50.0.1:80 -r 10.61.0.2:80 -m -w 1
-a -t 10.50.0.1:80 -r 10.62.0.2:80 -m -w 1
";

#[test]
fn nat_service_spreads_client_connections_round_robin() {
    if !testkit::privileged("nat_service_spreads_client_connections_round_robin") {
        return;
    }
    let Some(image) =
        testkit::vm::image_or_skip("nat_service_spreads_client_connections_round_robin")
    else {
        return;
    };
    let out = testkit::vm::Vm::builder()
        .image(image)
        .modules(["veth", "ip_vs", "ip_vs_rr"])
        .binary(env!("CARGO_BIN_EXE_ha-lvs-vmcheck"), "/bin/ha-lvs-vmcheck")
        .file_bytes("/nat_rules", NAT_RULES.as_bytes().to_vec(), 0o644)
        .command(NAT_SCRIPT)
        .timeout(Duration::from_secs(120))
        .run()
        .unwrap();
    assert_eq!(
        out.exit_code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(file(&out, "apply").trim(), "changes=3");
    let answers = file(&out, "answers");
    let count = |s: &str| answers.lines().filter(|l| *l == s).count();
    assert_eq!(
        (count("server1"), count("server2")),
        (5, 5),
        "rr over two real servers through the VIP:\n{answers}"
    );
    // Our statistics listing equals ipvsadm's, and the counters saw the 10 connections.
    let theirs = file(&out, "ipvsadm_stats");
    assert_eq!(file(&out, "our_stats"), theirs);
    let exact = file(&out, "ipvsadm_stats_exact");
    let conns: Vec<u64> = exact
        .lines()
        .filter(|l| l.trim_start().starts_with("->") || l.starts_with("TCP"))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect();
    assert_eq!(
        conns,
        vec![10, 5, 5],
        "service and per-server connections:\n{exact}"
    );
}
