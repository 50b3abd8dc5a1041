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
        .modules([
            "ip_vs",
            "ip_vs_rr",
            "ip_vs_wrr",
            "ip_vs_lc",
            "ip_vs_wlc",
            "ip_vs_fo",
            "ip_vs_ovf",
            "ip_vs_lblc",
            "ip_vs_lblcr",
            "ip_vs_dh",
            "ip_vs_sh",
            "ip_vs_sed",
            "ip_vs_nq",
            "ip_vs_mh",
            "ip_vs_pe_sip",
        ])
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
