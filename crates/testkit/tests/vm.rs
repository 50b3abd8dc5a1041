//! Self-tests of the qemu rig: a real Debian kernel boots and runs our commands.
//! Privileged class: they need the image (`cargo xtask vm-image`) and qemu.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use testkit::vm::{self, UdpLink, Vm};

fn image(test: &str) -> Option<vm::VmImage> {
    if !testkit::privileged(test) {
        return None;
    }
    vm::image_or_skip(test)
}

#[test]
fn ip_vs_module_loads() {
    let Some(img) = image("ip_vs_module_loads") else {
        return;
    };
    let out = Vm::builder()
        .image(img)
        .command("modprobe ip_vs && cat /proc/net/ip_vs && uname -r")
        .timeout(Duration::from_secs(30))
        .run()
        .unwrap();
    assert_eq!(out.exit_code, 0, "stderr: {}", out.stderr);
    assert!(
        out.stdout.starts_with("IP Virtual Server version"),
        "stdout: {}",
        out.stdout
    );
    assert!(out.stdout.contains(&vm::image::kernel_release()));
    eprintln!("ip_vs run took {:.2} s", out.elapsed.as_secs_f64());
}

#[test]
fn exit_status_and_files_come_back() {
    let Some(img) = image("exit_status_and_files_come_back") else {
        return;
    };
    let out = Vm::builder()
        .image(img)
        .file_bytes("/etc/greeting", "hello from the host\n", 0o644)
        .command("cat /etc/greeting; echo oops >&2; mkdir -p /out/sub; head -c 3000 /dev/urandom >/out/sub/rand; sha256sum /out/sub/rand | cut -d' ' -f1 >/out/sum; exit 42")
        .timeout(Duration::from_secs(30))
        .run()
        .unwrap();
    assert_eq!(out.exit_code, 42);
    assert_eq!(out.stdout, "hello from the host\n");
    assert_eq!(out.stderr, "oops\n");
    let rand = &out.files["sub/rand"];
    assert_eq!(rand.len(), 3000);
    // The guest's checksum of the file must match the bytes we decoded.
    let sum = String::from_utf8(out.files["sum"].clone()).unwrap();
    let host_sum = {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rand");
        std::fs::write(&p, rand).unwrap();
        let o = std::process::Command::new("sha256sum")
            .arg(&p)
            .output()
            .unwrap();
        String::from_utf8(o.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(sum.trim(), host_sum);
    assert!(out.clone().check().is_err());
}

#[test]
fn timeout_is_reported() {
    let Some(img) = image("timeout_is_reported") else {
        return;
    };
    let started = std::time::Instant::now();
    let err = Vm::builder()
        .image(img)
        .command("sleep 600")
        .timeout(Duration::from_secs(5))
        .run()
        .unwrap_err();
    assert!(matches!(err, testkit::Error::VmTimeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn setup_failure_is_reported() {
    let Some(img) = image("setup_failure_is_reported") else {
        return;
    };
    let err = Vm::builder()
        .image(img)
        .modules(["no_such_module_xyz"])
        .command("true")
        .timeout(Duration::from_secs(30))
        .run()
        .unwrap_err();
    assert!(matches!(err, testkit::Error::GuestSetup { .. }), "{err}");
}

#[test]
fn rust_binary_runs_in_guest() {
    let Some(img) = image("rust_binary_runs_in_guest") else {
        return;
    };
    let out = Vm::builder()
        .image(img)
        .binary(env!("CARGO_BIN_EXE_vm-probe"), "/usr/local/bin/vm-probe")
        .command(
            "vm-probe uname && vm-probe write /out/probe.txt written-by-probe && vm-probe exit 5",
        )
        .timeout(Duration::from_secs(30))
        .run()
        .unwrap();
    assert_eq!(out.exit_code, 5, "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        format!("Linux {}", vm::image::kernel_release())
    );
    assert_eq!(out.files["probe.txt"], b"written-by-probe");
}

#[test]
fn guest_reaches_host_tcp_server() {
    let Some(img) = image("guest_reaches_host_tcp_server") else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Echo one line back in upper case, for two connections (probe, then bash /dev/tcp).
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(s.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            s.write_all(line.to_uppercase().as_bytes()).unwrap();
            seen.push(line.trim().to_string());
        }
        seen
    });
    let host = vm::HOST_FROM_GUEST;
    let out = Vm::builder()
        .image(img)
        .user_net()
        .binary(env!("CARGO_BIN_EXE_vm-probe"), "/usr/local/bin/vm-probe")
        .command(format!(
            "vm-probe tcp {host}:{port} ping-from-probe\n\
             exec 3<>/dev/tcp/{host}/{port}; echo ping-from-bash >&3; read -r reply <&3; echo \"$reply\""
        ))
        .timeout(Duration::from_secs(30))
        .run()
        .unwrap();
    assert_eq!(out.exit_code, 0, "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "PING-FROM-PROBE\nPING-FROM-BASH\n");
    assert_eq!(
        server.join().unwrap(),
        ["ping-from-probe", "ping-from-bash"]
    );
}

#[test]
fn two_vms_ping_over_udp_link() {
    let Some(img) = image("two_vms_ping_over_udp_link") else {
        return;
    };
    let (a, b) = UdpLink::pair().unwrap();
    // Each pings the other until it answers (the peer may still be booting), then waits a
    // little so the peer's own pings get answered too.
    let script = |peer: &str| {
        format!(
            "for i in $(seq 1 40); do ping -c1 -W1 {peer} >/dev/null 2>&1 && break; done; \
             ping -c3 -i0.2 -W1 {peer} | tail -2; rc=${{PIPESTATUS[0]}}; sleep 2; exit $rc"
        )
    };
    let results = vm::run_all(vec![
        Vm::builder()
            .image(img.clone())
            .hostname("a")
            .link(a, Some("192.168.50.1/24"))
            .command(script("192.168.50.2"))
            .timeout(Duration::from_secs(60)),
        Vm::builder()
            .image(img)
            .hostname("b")
            .link(b, Some("192.168.50.2/24"))
            .command(script("192.168.50.1"))
            .timeout(Duration::from_secs(60)),
    ]);
    for r in results {
        let out = r.unwrap();
        assert_eq!(
            out.exit_code, 0,
            "stdout: {}\nstderr: {}",
            out.stdout, out.stderr
        );
        assert!(
            out.stdout.contains("3 packets received") || out.stdout.contains("3 received"),
            "{}",
            out.stdout
        );
    }
}

#[test]
fn disk_netem_and_netns_work_in_guest() {
    let Some(img) = image("disk_netem_and_netns_work_in_guest") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let out = Vm::builder()
        .image(img)
        .disk(&disk)
        .modules(["sch_netem"])
        .command(
            "set -e; mkfs.ext4 -q /dev/vda; mount /dev/vda /mnt; echo on-disk >/mnt/f; umount /mnt\n\
             tc qdisc add dev lo root netem delay 50ms\n\
             ping -c1 -W3 127.0.0.1 | grep -o 'time=[0-9.]*' | cut -d= -f2\n\
             ip netns add a; ip link add va type veth peer name vb netns a\n\
             ip addr add 10.9.0.1/24 dev va; ip link set va up\n\
             ip -n a addr add 10.9.0.2/24 dev vb; ip -n a link set vb up\n\
             ip netns exec a ping -c1 -W3 10.9.0.1 >/dev/null && echo netns-ok",
        )
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();
    assert_eq!(
        out.exit_code, 0,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    // The guest's mkfs reached the host file: ext4 superblock magic at 1024 + 0x38.
    let raw = std::fs::read(&disk).unwrap();
    assert_eq!(&raw[1080..1082], &[0x53, 0xef]);
    // netem on lo delays both the request and the reply.
    let mut lines = out.stdout.lines();
    let rtt_ms: f64 = lines.next().unwrap().parse().unwrap();
    // Network namespaces work inside the guest too (e.g. real servers behind an IPVS director).
    assert_eq!(lines.next(), Some("netns-ok"));
    assert!(
        rtt_ms >= 100.0,
        "rtt {rtt_ms} ms with 2 x 50 ms netem delay"
    );
}
