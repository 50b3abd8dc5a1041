//! IPVS table build/read timing against ipvsadm in the test VM (ignored: run with
//! `cargo test --release -p ha-lvs --test vm_bench -- --ignored --nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

fn vm(script: &str) -> String {
    let image = testkit::vm::image_or_skip("bench_ipvs").expect("VM image");
    let out = testkit::vm::Vm::builder()
        .image(image)
        .modules(["ip_vs", "ip_vs_wrr"])
        .memory_mb(1024)
        .binary(env!("CARGO_BIN_EXE_ha-lvs-bench"), "/bin/ha-lvs-bench")
        .command(script)
        .timeout(Duration::from_secs(400))
        .run()
        .expect("VM run");
    assert_eq!(out.exit_code, 0, "{}\n{}", out.stdout, out.stderr);
    out.stdout
}

#[test]
#[ignore]
fn bench_ipvs() {
    let n = std::env::var("BENCH_SERVICES").unwrap_or_else(|_| "10000".into());
    // Each measurement in a fresh VM: deleted destinations linger in the kernel's trash list.
    let ours = vm(&format!("/bin/ha-lvs-bench ipvs {n} 5"));
    let theirs = vm(&format!(
        r#"/bin/ha-lvs-bench rules {n} 5 > /tmp/rules
t0=$(date +%s%N); ipvsadm -R < /tmp/rules; t1=$(date +%s%N)
ipvsadm -S -n > /tmp/saved; t2=$(date +%s%N)
echo "ipvsadm: restore $(( (t1 - t0) / 1000000 )) ms; save $(( (t2 - t1) / 1000000 )) ms; $(wc -l < /tmp/saved) lines""#
    ));
    println!("{ours}{theirs}");
}
