//! Real-server setup (VIP on lo, ARP sysctls) inside a throw-away network namespace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ha_lvs::realserver::{Sysctl, add_vip, del_vip, setup_real_server};

#[test]
fn vip_on_lo_and_arp_sysctls_in_a_netns() {
    if !testkit::privileged("vip_on_lo_and_arp_sysctls_in_a_netns") {
        return;
    }
    let ns = testkit::netns::Netns::new("rs").expect("netns");
    ns.run(|| {
        setup_real_server("10.77.0.1".parse().unwrap(), "lo").unwrap();
        // Idempotent.
        add_vip("10.77.0.1".parse().unwrap(), "lo").unwrap();
        add_vip("2001:db8:77::1".parse().unwrap(), "lo").unwrap();
        assert_eq!(Sysctl::default().arp_settings("lo").unwrap(), (1, 2));
        assert_eq!(Sysctl::default().arp_settings("all").unwrap(), (1, 2));
        assert!(add_vip("10.77.0.1".parse().unwrap(), "nosuchif0").is_err());
    });
    let out = String::from_utf8_lossy(&ns.ip(&["addr", "show", "dev", "lo"]).unwrap().stdout)
        .into_owned();
    assert!(out.contains("inet 10.77.0.1/32 scope host lo"), "{out}");
    assert!(out.contains("inet6 2001:db8:77::1/128"), "{out}");
    let sys = String::from_utf8_lossy(
        &ns.sh("cat /proc/sys/net/ipv4/conf/lo/arp_ignore /proc/sys/net/ipv4/conf/lo/arp_announce")
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert_eq!(sys.split_whitespace().collect::<Vec<_>>(), vec!["1", "2"]);
    ns.run(|| {
        del_vip("10.77.0.1".parse().unwrap(), "lo").unwrap();
        del_vip("10.77.0.1".parse().unwrap(), "lo").unwrap();
    });
    let out = String::from_utf8_lossy(&ns.ip(&["addr", "show", "dev", "lo"]).unwrap().stdout)
        .into_owned();
    assert!(!out.contains("10.77.0.1"), "{out}");
}
