//! Two engines on loopback: replication, resync, crash and split-brain behaviour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use bytes::Bytes;
use common::*;
use ha_blockrep::engine::Engine;
use ha_blockrep::nbd::{Export, NbdServer};
use ha_blockrep::repl::decide::{AfterSb0, SbPolicies};
use ha_blockrep::state::{ConnState, DiskState, Protocol, ReplState, Role};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn data_of(mem: &ha_blockrep::device::MemDevice, e: &Engine) -> Vec<u8> {
    mem.snapshot()[..e.size() as usize].to_vec()
}

fn block(seq: u64) -> Bytes {
    let mut b = vec![0u8; 4096];
    for (i, c) in b.chunks_exact_mut(8).enumerate() {
        c.copy_from_slice(&(seq ^ (i as u64) << 48).to_le_bytes());
    }
    Bytes::from(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbd_writes_replicate_and_backing_files_compare() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_img) = file_node(cfg("alpha"), dir.path(), 16 * MIB).await;
    let (b, b_img) = file_node(cfg("beta"), dir.path(), 16 * MIB).await;
    a.promote(true).await.unwrap();
    link(&a, &b).await;
    // Initial full sync from the forced Primary.
    let st = b.status();
    assert_eq!(
        (st.disk, st.peer_role),
        (DiskState::UpToDate, Role::Primary)
    );
    assert!(a.resync_bytes_sent() >= 16 * MIB);

    let srv = NbdServer::new(vec![Arc::new(a.clone()) as Arc<dyn Export>]);
    let (addr, task) = srv.spawn(any_port()).await.unwrap();
    let url = format!("nbd://{addr}/r0");
    let (ok, out) = qemu_io(
        &url,
        &[
            "write -P 0xab 0 1M",
            "aio_write -P 0x5a 3M 256k",
            "aio_write -P 0x77 9M 64k",
            "aio_flush",
            "write -z 4M 1M",
            "discard 9M 4k",
            "write -f -P 0x99 15M 4k",
            "write -P 0x42 10M 4M",
            "read -P 0x42 10M 4M",
        ],
    )
    .await;
    assert!(ok, "{out}");
    // Secondary's NBD export refuses.
    let srv_b = NbdServer::new(vec![Arc::new(b.clone()) as Arc<dyn Export>]);
    let (addr_b, task_b) = srv_b.spawn(any_port()).await.unwrap();
    let (ok, out) = qemu_io(&format!("nbd://{addr_b}/r0"), &["read 0 4k"]).await;
    assert!(!ok && out.contains("Secondary"), "{out}");
    // Protocol C: every acknowledged write is on both disks.
    let cmp = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&a_img)
        .arg(&b_img)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "images differ: {}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    let text = a.status().proc_text();
    assert!(
        text.contains("cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C"),
        "{text}"
    );
    task.abort();
    task_b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_resyncs_only_dirty_blocks() {
    let (a, am) = mem_node(cfg("alpha"), 32 * MIB).await;
    let (b, bm) = mem_node(cfg("beta"), 32 * MIB).await;
    a.promote(true).await.unwrap();
    let addr = link(&a, &b).await;
    for i in 0..64u64 {
        a.write(i * 4096, block(i), false).await.unwrap();
    }
    b.disconnect().await;
    a.wait_for("peer gone", Duration::from_secs(5), |s| {
        s.conn == ConnState::WFConnection
    })
    .await
    .unwrap();
    // 10 scattered blocks (one written twice) while disconnected.
    let dirty: Vec<u64> = (0..10).map(|i| i * 97 + 5).collect();
    for (n, blk) in dirty.iter().enumerate() {
        a.write(blk * 4096, block(1000 + n as u64), false)
            .await
            .unwrap();
    }
    a.write(dirty[0] * 4096, block(7), false).await.unwrap();
    assert_eq!(a.status().oos, 40, "10 blocks out of sync, in KiB");
    let (rs0, sent0) = (a.resync_bytes_sent(), a.bytes_sent());
    b.connect(addr);
    wait_established(&a, &b).await;
    let rs = a.resync_bytes_sent() - rs0;
    let wire = a.bytes_sent() - sent0;
    assert_eq!(rs, 10 * 4096, "only the dirty blocks move");
    assert!(wire < 10 * 4096 + 16 * 1024, "bytes on the wire: {wire}");
    assert_eq!(a.status().oos, 0);
    assert_eq!(b.status().disk, DiskState::UpToDate);
    assert_eq!(data_of(&am, &a), data_of(&bm, &b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_primary_under_protocol_c_keeps_every_acked_write() {
    let (a, am) = mem_node(cfg("alpha"), 32 * MIB).await;
    let (b, bm) = mem_node(cfg("beta"), 32 * MIB).await;
    a.promote(true).await.unwrap();
    link(&a, &b).await;
    let nblocks = a.size() / 4096;
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for w in 0..16u64 {
        let (a, acked) = (a.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                // Each block belongs to one writer and carries its own sequence number.
                let blk = w + 16 * (i % (nblocks / 16));
                let seq = w << 32 | i;
                if a.write(blk * 4096, block(seq), false).await.is_err() {
                    return;
                }
                acked.lock().unwrap().push((blk, seq));
                if i > 2000 {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        a.status().conn,
        ConnState::Connected,
        "{:?}",
        a.last_error()
    );
    // Crash: no clean-up, unflushed local writes lost.
    a.kill();
    am.power_cut();
    let acked = acked.lock().unwrap().clone();
    for w in writers {
        w.abort();
    }
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    b.wait_for("primary lost", Duration::from_secs(5), |s| {
        s.conn == ConnState::WFConnection || s.conn == ConnState::StandAlone
    })
    .await
    .ok();
    let data = data_of(&bm, &b);
    // Writers wrap around the device, so a block may hold a later write of the same writer
    // (acknowledged or still in flight at the crash); it must never hold an older one.
    let mut newest_acked = std::collections::BTreeMap::new();
    for (blk, seq) in &acked {
        let e = newest_acked.entry(*blk).or_insert(*seq);
        *e = (*e).max(*seq);
    }
    for (blk, seq) in &newest_acked {
        let o = (*blk * 4096) as usize;
        let held = u64::from_le_bytes(data[o..o + 8].try_into().unwrap());
        assert!(
            data[o..o + 4096] == block(held)[..] && held >> 32 == seq >> 32 && held >= *seq,
            "acked write {seq:x} to block {blk} lost (block holds {held:x})"
        );
    }
    // Fail over: the survivor takes over, writes on; the old Primary comes back as target.
    b.promote(false).await.unwrap();
    b.write(0, block(0xfeed), false).await.unwrap();
    let a2 = mem_reattach(cfg("alpha"), am.clone()).await;
    assert_eq!(a2.status().disk, DiskState::Consistent);
    let addr = b.listen(any_port()).await.unwrap();
    a2.connect(addr);
    wait_established(&a2, &b).await;
    assert_eq!(a2.status().role, Role::Secondary);
    assert_eq!(data_of(&am, &a2), data_of(&bm, &b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_detected_then_resolved_by_discarding_the_victim() {
    let (a, am) = mem_node(cfg("alpha"), 16 * MIB).await;
    let (b, bm) = mem_node(cfg("beta"), 16 * MIB).await;
    a.promote(true).await.unwrap();
    let addr = link(&a, &b).await;
    b.disconnect().await;
    // Both become Primary and write.
    b.promote(false).await.unwrap();
    a.write(0, block(1), false).await.unwrap();
    b.write(4096, block(2), false).await.unwrap();
    b.write(8192, block(3), false).await.unwrap();
    b.connect(addr);
    b.wait_for("split brain", Duration::from_secs(5), |s| {
        s.conn == ConnState::StandAlone
    })
    .await
    .unwrap();
    let err = b.last_error().unwrap();
    assert!(err.contains("split brain"), "{err}");
    // Manual recovery: beta's changes are discarded.
    b.demote().await.unwrap();
    b.set_discard_my_data(true);
    a.reconnect();
    b.connect(addr);
    wait_established(&a, &b).await;
    assert_eq!(data_of(&am, &a), data_of(&bm, &b));
    assert_eq!(&data_of(&bm, &b)[0..4096], &block(1)[..]);
    assert_eq!(&data_of(&bm, &b)[4096..8192], &vec![0u8; 4096][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_auto_discard_least_changes() {
    let mut ca = cfg("alpha");
    let mut cb = cfg("beta");
    let pol = SbPolicies {
        zero: AfterSb0::DiscardLeastChanges,
        ..Default::default()
    };
    ca.after_sb = pol;
    cb.after_sb = pol;
    let (a, am) = mem_node(ca, 16 * MIB).await;
    let (b, bm) = mem_node(cb, 16 * MIB).await;
    a.promote(true).await.unwrap();
    let addr = link(&a, &b).await;
    b.disconnect().await;
    b.promote(false).await.unwrap();
    for i in 0..5 {
        a.write(i * 8192, block(100 + i), false).await.unwrap();
    }
    b.write(4096, block(9), false).await.unwrap();
    a.demote().await.unwrap();
    b.demote().await.unwrap();
    b.connect(addr);
    wait_established(&a, &b).await;
    // beta changed less: its change is gone, alpha's five writes won.
    assert_eq!(data_of(&am, &a), data_of(&bm, &b));
    assert_eq!(&data_of(&bm, &b)[4096..8192], &vec![0u8; 4096][..]);
}

async fn write_latency(protocol: Protocol, slow_disk: bool, slow_recv: bool) -> Duration {
    let mut ca = cfg("alpha");
    let mut cb = cfg("beta");
    ca.protocol = protocol;
    cb.protocol = protocol;
    if slow_recv {
        cb.recv_delay = Duration::from_millis(200);
    }
    let (a, _am) = mem_node(ca, 16 * MIB).await;
    let (b, bm) = mem_node(cb, 16 * MIB).await;
    a.promote(true).await.unwrap();
    link(&a, &b).await;
    a.write(0, block(1), false).await.unwrap(); // warm the activity log
    if slow_disk {
        bm.set_write_delay(Duration::from_millis(200));
    }
    let t = Instant::now();
    a.write(0, block(2), false).await.unwrap();
    let el = t.elapsed();
    a.kill();
    b.kill();
    el
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocols_a_b_c_ack_semantics() {
    let slow = Duration::from_millis(190);
    let fast = Duration::from_millis(150);
    // Peer disk slow: only C waits for it.
    assert!(write_latency(Protocol::C, true, false).await >= slow);
    assert!(write_latency(Protocol::B, true, false).await < fast);
    assert!(write_latency(Protocol::A, true, false).await < fast);
    // Peer slow to receive: B and C wait, A does not.
    assert!(write_latency(Protocol::B, false, true).await >= slow);
    assert!(write_latency(Protocol::C, false, true).await >= slow);
    assert!(write_latency(Protocol::A, false, true).await < fast);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_secret_authentication() {
    let mut ca = cfg("alpha");
    let mut cb = cfg("beta");
    ca.secret = Some(b"right".to_vec());
    cb.secret = Some(b"wrong".to_vec());
    let (a, _) = mem_node(ca.clone(), 16 * MIB).await;
    let (b, _) = mem_node(cb, 16 * MIB).await;
    let addr = a.listen(any_port()).await.unwrap();
    b.connect(addr);
    let t = Instant::now();
    while !b.last_error().is_some_and(|e| e.contains("authentication")) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no authentication error"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(b.status().conn, ConnState::Connected);
    assert!(a.last_error().unwrap().contains("authentication"));
    b.kill();
    let mut cb2 = cfg("beta");
    cb2.secret = Some(b"right".to_vec());
    let (b2, _) = mem_node(cb2, 16 * MIB).await;
    b2.connect(addr);
    a.wait_for("connected", Duration::from_secs(5), |s| {
        s.repl == ReplState::Established
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_verify_finds_divergent_blocks() {
    use ha_blockrep::device::BlockDevice;
    let (a, _am) = mem_node(cfg("alpha"), 16 * MIB).await;
    let (b, bm) = mem_node(cfg("beta"), 16 * MIB).await;
    a.promote(true).await.unwrap();
    link(&a, &b).await;
    assert_eq!(a.verify().await.unwrap(), 0);
    // Corrupt two blocks behind the engine's back.
    bm.write(40960, &[0xee; 4096], false).await.unwrap();
    bm.write(5 << 20, &[0xee; 100], false).await.unwrap();
    let oos = a.verify().await.unwrap();
    assert!(oos >= 2, "verify found {oos}");
    assert!(a.status().oos > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksum_resync_skips_identical_blocks() {
    let mut ca = cfg("alpha");
    let mut cb = cfg("beta");
    ca.csums = true;
    cb.csums = true;
    let (a, am) = mem_node(ca, 16 * MIB).await;
    let (b, bm) = mem_node(cb, 16 * MIB).await;
    a.promote(true).await.unwrap();
    a.write(0, block(5), false).await.unwrap();
    let addr = link(&a, &b).await;
    // Full sync of a 16 MiB device that is zero except one block: one 128 KiB run differs.
    let full = a.resync_bytes_sent();
    assert_eq!(
        full,
        128 * 1024,
        "checksum full sync sent {full} bytes of data"
    );
    b.disconnect().await;
    // Dirty but identical: block 0 rewritten with the same data, zeroes written over zeroes.
    a.write(0, block(5), false).await.unwrap();
    a.write(1 << 20, Bytes::from(vec![0u8; 8192]), false)
        .await
        .unwrap();
    // One real change.
    a.write(2 << 20, block(6), false).await.unwrap();
    assert_eq!(a.status().oos, 16);
    let before = a.resync_bytes_sent();
    b.connect(addr);
    wait_established(&a, &b).await;
    assert_eq!(data_of(&am, &a), data_of(&bm, &b));
    assert_eq!(
        a.resync_bytes_sent() - before,
        4096,
        "only the changed block is sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_is_rate_limited_pausable_and_reports_progress() {
    use ha_blockrep::repl::rate::RateMode;
    let mut ca = cfg("alpha");
    ca.rate = RateMode::Fixed(8 << 20);
    let (a, am) = mem_node(ca, 8 * MIB).await;
    let (b, bm) = mem_node(cfg("beta"), 8 * MIB).await;
    a.promote(true).await.unwrap();
    let t = Instant::now();
    let addr = a.listen(any_port()).await.unwrap();
    b.connect(addr);
    let st = a
        .wait_for("syncing", Duration::from_secs(5), |s| {
            s.repl == ReplState::SyncSource
                && s.sync.as_ref().is_some_and(|p| p.left_kib < p.total_kib)
        })
        .await
        .unwrap();
    assert!(st.proc_text().contains("sync'ed:"), "{}", st.proc_text());
    assert_eq!(b.status().repl, ReplState::SyncTarget);
    assert_eq!(b.status().disk, DiskState::Inconsistent);
    a.pause_sync().unwrap();
    let paused_at = a.status().oos;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = a.status();
    assert_eq!(st.repl, ReplState::PausedSyncS);
    assert!(st.oos + 256 >= paused_at, "little progress while paused");
    a.resume_sync();
    wait_established(&a, &b).await;
    // ~8 MiB at 8 MiB/s, plus the 300 ms pause.
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "resync took {:?}",
        t.elapsed()
    );
    assert_eq!(data_of(&am, &a), data_of(&bm, &b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_and_fua_reach_the_peer_disk() {
    let (a, _am) = mem_node(cfg("alpha"), 16 * MIB).await;
    let (b, bm) = mem_node(cfg("beta"), 16 * MIB).await;
    a.promote(true).await.unwrap();
    link(&a, &b).await;
    // FUA write: durable on the peer when acknowledged.
    a.write(0, block(1), true).await.unwrap();
    // Plain write + flush: durable on the peer after the flush.
    a.write(4096, block(2), false).await.unwrap();
    a.flush().await.unwrap();
    // Plain write, no flush: may be lost by a peer power cut (our RAM disk drops it).
    a.write(8192, block(3), false).await.unwrap();
    bm.power_cut();
    let d = bm.snapshot();
    assert!(
        d[..4096] == block(1)[..],
        "FUA write not durable on the peer"
    );
    assert!(
        d[4096..8192] == block(2)[..],
        "flushed write not durable on the peer"
    );
    assert!(
        d[8192..12288] != block(3)[..],
        "unflushed write should be lost by the power cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_concurrent_writes_land_in_the_same_order_on_both_nodes() {
    // Protocol A: the Primary does not wait for the peer, so the peer's own ordering matters.
    let mut ca = cfg("alpha");
    let mut cb = cfg("beta");
    ca.protocol = Protocol::A;
    cb.protocol = Protocol::A;
    let (a, am) = mem_node(ca, 16 * MIB).await;
    let (b, bm) = mem_node(cb, 16 * MIB).await;
    a.promote(true).await.unwrap();
    link(&a, &b).await;
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50u64 {
                // 8 KiB writes at 4 KiB steps over 8 blocks: lots of partial overlap.
                let off = ((t * 7 + i * 3) % 7) * 4096;
                let mut d = block(t << 16 | i).to_vec();
                d.extend_from_slice(&block(!(t << 16 | i)));
                a.write(off, Bytes::from(d), false).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    a.flush().await.unwrap();
    // Protocol A's flush does not wait for the peer; a verify round-trip does.
    assert_eq!(a.verify().await.unwrap(), 0, "verify found differences");
    assert!(
        data_of(&am, &a)[..65536] == data_of(&bm, &b)[..65536],
        "nodes diverged"
    );
}

async fn timed_full_sync(with_app_io: bool) -> Duration {
    use ha_blockrep::repl::rate::RateMode;
    let mut ca = cfg("alpha");
    ca.rate = RateMode::Dynamic {
        min: 2 << 20,
        max: 1 << 30,
    };
    let (a, _) = mem_node(ca, 4 * MIB).await;
    let (b, _) = mem_node(cfg("beta"), 4 * MIB).await;
    a.promote(true).await.unwrap();
    let app = if with_app_io {
        let a = a.clone();
        Some(tokio::spawn(async move {
            for i in 0u64.. {
                let _ = a.write((i % 16) * 4096, block(i), false).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }))
    } else {
        None
    };
    let t = Instant::now();
    let addr = a.listen(any_port()).await.unwrap();
    b.connect(addr);
    wait_established(&a, &b).await;
    let el = t.elapsed();
    if let Some(h) = app {
        h.abort();
    }
    a.kill();
    b.kill();
    el
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_resync_rate_yields_to_application_io() {
    let idle = timed_full_sync(false).await;
    let busy = timed_full_sync(true).await;
    // ~4 MiB at c-min-rate 2 MiB/s while the application writes; much faster when idle.
    assert!(
        busy >= Duration::from_millis(1400),
        "busy resync took {busy:?}"
    );
    assert!(idle < busy / 2, "idle {idle:?} vs busy {busy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_target_power_cut_loses_nothing_acknowledged() {
    use ha_blockrep::repl::rate::RateMode;
    let mut ca = cfg("alpha");
    ca.rate = RateMode::Fixed(8 << 20);
    let (a, am) = mem_node(ca, 8 * MIB).await;
    let (b, bm) = mem_node(cfg("beta"), 8 * MIB).await;
    a.promote(true).await.unwrap();
    let addr = link(&a, &b).await;
    b.disconnect().await;
    bm.power_cut(); // nothing of the initial sync may be left in a volatile cache either
    let b = mem_reattach(cfg("beta"), bm.clone()).await;
    for i in 0..512u64 {
        a.write(i * 8192, block(i), false).await.unwrap();
    }
    b.connect(addr);
    // Cut the target's power in the middle of the bitmap-based resync.
    b.wait_for("syncing", Duration::from_secs(5), |s| {
        s.repl == ReplState::SyncTarget && s.oos < 3 * 512
    })
    .await
    .unwrap();
    b.kill();
    bm.power_cut();
    let b2 = mem_reattach(cfg("beta"), bm.clone()).await;
    assert_eq!(b2.status().disk, DiskState::Inconsistent);
    a.wait_for("peer gone", Duration::from_secs(5), |s| {
        s.conn == ConnState::WFConnection
    })
    .await
    .unwrap();
    b2.connect(addr);
    wait_established(&a, &b2).await;
    assert!(
        data_of(&am, &a) == data_of(&bm, &b2),
        "target lost resync data"
    );
    assert_eq!(b2.status().disk, DiskState::UpToDate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secondary_power_cut_is_repaired_from_its_activity_log() {
    let (a, am) = mem_node(cfg("alpha"), 16 * MIB).await;
    let (b, bm) = mem_node(cfg("beta"), 16 * MIB).await;
    a.promote(true).await.unwrap();
    let addr = link(&a, &b).await;
    bm.power_cut(); // initial sync durable from here on
    for i in 0..64u64 {
        a.write(i * 65536, block(i), false).await.unwrap();
    }
    // Acknowledged (protocol C) but still in the Secondary's volatile cache: power cut.
    b.kill();
    bm.power_cut();
    let b2 = mem_reattach(cfg("beta"), bm.clone()).await;
    assert!(
        b2.status().oos > 0,
        "activity log extents must be marked out of sync"
    );
    a.wait_for("peer gone", Duration::from_secs(5), |s| {
        s.conn == ConnState::WFConnection
    })
    .await
    .unwrap();
    b2.connect(addr);
    wait_established(&a, &b2).await;
    assert!(
        data_of(&am, &a) == data_of(&bm, &b2),
        "secondary lost acknowledged writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_down_leaves_nothing_to_resync() {
    let (a, am) = mem_node(cfg("alpha"), 16 * MIB).await;
    a.promote(true).await.unwrap();
    a.write(0, block(1), false).await.unwrap();
    a.down().await.unwrap();
    am.power_cut();
    let a2 = mem_reattach(cfg("alpha"), am.clone()).await;
    let st = a2.status();
    assert_eq!((st.role, st.disk), (Role::Secondary, DiskState::Consistent));
    // The one write made without a peer is still marked for the peer, nothing more.
    assert_eq!(st.oos, 4);
    assert!(a2.dump_md().await.contains("active: []"));
    assert!(!a2.dump_md().await.contains("crashed-primary"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_of_a_secondary_while_both_are_secondary() {
    let (a, am) = mem_node(cfg("alpha"), 16 * MIB).await;
    let (b, bm) = mem_node(cfg("beta"), 16 * MIB).await;
    a.promote(true).await.unwrap();
    let addr = link(&a, &b).await;
    bm.power_cut();
    for i in 0..32u64 {
        a.write(i * 131072, block(i), false).await.unwrap();
    }
    a.demote().await.unwrap(); // clean on alpha; beta still has the writes in its cache
    b.kill();
    bm.power_cut();
    let b2 = mem_reattach(cfg("beta"), bm.clone()).await;
    a.wait_for("peer gone", Duration::from_secs(5), |s| {
        s.conn == ConnState::WFConnection
    })
    .await
    .unwrap();
    b2.connect(addr);
    wait_established(&a, &b2).await;
    assert!(
        data_of(&am, &a) == data_of(&bm, &b2),
        "crashed secondary not repaired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_full_sync_resumes_from_the_bitmap() {
    use ha_blockrep::repl::rate::RateMode;
    let mut ca = cfg("alpha");
    ca.rate = RateMode::Fixed(8 << 20);
    let (a, am) = mem_node(ca, 8 * MIB).await;
    let (b, bm) = mem_node(cfg("beta"), 8 * MIB).await;
    a.promote(true).await.unwrap();
    let addr = a.listen(any_port()).await.unwrap();
    b.connect(addr);
    b.wait_for("half synced", Duration::from_secs(5), |s| {
        s.sync
            .as_ref()
            .is_some_and(|p| p.left_kib < p.total_kib / 2)
    })
    .await
    .unwrap();
    b.kill();
    let first = a.resync_bytes_sent();
    let b2 = mem_reattach(cfg("beta"), bm.clone()).await;
    assert_eq!(b2.status().disk, DiskState::Inconsistent);
    a.wait_for("peer gone", Duration::from_secs(5), |s| {
        s.conn == ConnState::WFConnection
    })
    .await
    .unwrap();
    b2.connect(addr);
    wait_established(&a, &b2).await;
    let second = a.resync_bytes_sent() - first;
    assert!(
        second < a.size() * 3 / 4,
        "resync restarted from scratch: {second} bytes"
    );
    assert!(data_of(&am, &a) == data_of(&bm, &b2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_after_only_fua_writes_is_skipped() {
    let (a, am) = mem_node(cfg("alpha"), 16 * MIB).await;
    a.promote(true).await.unwrap();
    // The first flush after promotion always reaches the disk.
    let f0 = am.flush_count();
    a.flush().await.unwrap();
    assert!(am.flush_count() > f0, "first flush after promote skipped");
    // FUA writes are durable already: a flush behind them has nothing to do.
    a.write(0, block(1), true).await.unwrap();
    let f1 = am.flush_count();
    a.flush().await.unwrap();
    assert_eq!(
        am.flush_count(),
        f1,
        "flush after FUA-only writes hit the disk"
    );
    // A plain write must be flushed.
    a.write(4096, block(2), false).await.unwrap();
    a.flush().await.unwrap();
    assert!(am.flush_count() > f1, "flush after a plain write skipped");
    am.power_cut();
    assert!(am.snapshot()[4096..8192] == block(2)[..]);
}
