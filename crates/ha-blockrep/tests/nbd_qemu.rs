//! NBD export tested with the real qemu-io / qemu-img clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use ha_blockrep::nbd::{Export, NbdServer};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_io_write_read_on_primary_refused_on_secondary() {
    assert!(have_qemu(), "qemu-io missing: apt-get install qemu-utils");
    let dir = tempfile::tempdir().unwrap();
    let (eng, img) = file_node(cfg("alpha"), dir.path(), 16 * MIB).await;
    let srv = NbdServer::new(vec![Arc::new(eng.clone()) as Arc<dyn Export>]);
    let (addr, task) = srv.spawn(any_port()).await.unwrap();
    let url = format!("nbd://{addr}/r0");

    // Secondary: the client is told why.
    let (ok, out) = qemu_io(&url, &["read 0 4k"]).await;
    assert!(!ok, "a Secondary must refuse: {out}");
    assert!(
        out.contains("Secondary"),
        "error should name the role: {out}"
    );

    eng.promote(true).await.unwrap();
    let (ok, out) = qemu_io(
        &url,
        &[
            "write -P 0xab 0 1M",
            "write -P 0xcd 1M 64k",
            "write -z 2M 128k",
            "discard 3M 64k",
            "flush",
            "read -P 0xab 0 1M",
            "read -P 0xcd 1M 64k",
            "read -P 0 2M 128k",
            "write -f -P 0x11 5M 4k",
            "aio_write -P 0x22 6M 4k",
            "aio_write -P 0x33 7M 4k",
            "aio_flush",
            "read -P 0x22 6M 4k",
            "read -P 0x33 7M 4k",
        ],
    )
    .await;
    assert!(ok, "{out}");
    // Out of range.
    let (ok, out) = qemu_io(&url, &["read 16M 4k"]).await;
    assert!(!ok, "read past the end must fail: {out}");
    // The backing file has the data where qemu put it.
    let raw = std::fs::read(&img).unwrap();
    assert!(raw[..1 << 20].iter().all(|&b| b == 0xab));
    assert!(raw[5 << 20..(5 << 20) + 4096].iter().all(|&b| b == 0x11));
    // Many requests in flight at once (qemu-img convert uses parallel requests).
    let src = dir.path().join("src.img");
    let pattern: Vec<u8> = (0..(8 << 20))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &pattern).unwrap();
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-n", "-W", "-m", "16", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(&url)
        .status()
        .unwrap();
    assert!(st.success());
    let raw = std::fs::read(&img).unwrap();
    assert_eq!(&raw[..8 << 20], &pattern[..]);

    // Demoted: new clients are refused again.
    eng.demote().await.unwrap();
    let (ok, out) = qemu_io(&url, &["read 0 4k"]).await;
    assert!(!ok && out.contains("Secondary"), "{out}");
    task.abort();
}
