//! Resync (source side) and online verify.
//!
//! The source walks its bitmap (already merged with the target's), coalesces runs of dirty
//! 4 KiB blocks into requests of up to 1 MiB (128 KiB with checksums), paces them with the rate controller and keeps
//! a bounded window in flight. Each block is read after earlier overlapping application
//! writes finished and is queued before later ones are (see `conflict`), so the target ends
//! up with exactly the source's data. Bits clear as `RsAck`s come back; when the bitmap is
//! empty the source sends `SyncDone` with its UUIDs.

use super::Engine;
use super::link::Link;
use crate::error::{Error, Result};
use crate::meta::BM_BLOCK_SIZE;
use crate::meta::superblock::MDF_CRASHED_PRIMARY;
use crate::repl::packet::Packet;
use crate::repl::rate::{RateMode, ResyncPacer};
use crate::state::{DiskState, ReplState, Role};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Largest checksum / verify request, in bitmap bits (128 KiB): the unit a digest covers.
const MAX_RUN_BITS: u64 = 32;
/// Largest plain resync request, in bitmap bits (1 MiB): fewer, larger reads, packets and
/// writes (per-request costs dominated full resyncs at 128 KiB).
const MAX_DATA_RUN_BITS: u64 = 256;

/// Digest used by checksum resync and online verify.
pub(crate) fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Resync reads in flight at once on the source: the next request is read while the
/// previous ones are being sent.
const RS_READS: usize = 4;

/// Read a range (ordered against application writes) and send it as resync data.
pub(crate) async fn send_rs_data(eng: &Engine, link: &Link, offset: u64, len: u64) {
    let (guard, waits) = eng.inner.conflicts.register(offset, offset + len);
    send_rs_data_registered(eng, link, offset, len, guard, waits).await;
}

/// [`send_rs_data`] for a range already registered (the registration fixes the order).
async fn send_rs_data_registered(
    eng: &Engine,
    link: &Link,
    offset: u64,
    len: u64,
    guard: super::conflict::ConflictGuard,
    waits: super::conflict::Waits,
) {
    waits.wait().await;
    match eng.inner.dev.read(offset, len as usize).await {
        Ok(data) => {
            eng.inner
                .counters
                .rs_bytes
                .fetch_add(len, Ordering::Relaxed);
            eng.inner.counters.dr.fetch_add(len, Ordering::Relaxed);
            link.send(Packet::RsData { offset, data });
        }
        Err(e) => {
            tracing::error!(error = %e, offset, "resync read failed");
            link.kill();
        }
    }
    drop(guard);
}

fn now(eng: &Engine) -> Duration {
    eng.inner.epoch.elapsed()
}

async fn acquire(link: &Link, n: u64) -> Result<()> {
    link.rs_window
        .acquire_many(n as u32)
        .await
        .map_err(|_| Error::Disconnected("connection lost during resync".into()))?
        .forget();
    Ok(())
}

async fn drain_window(link: &Link) -> Result<()> {
    let all = super::link::RS_WINDOW as u32;
    let p = link
        .rs_window
        .acquire_many(all)
        .await
        .map_err(|_| Error::Disconnected("connection lost during resync".into()))?;
    drop(p);
    Ok(())
}

/// Source side of a resync; ends with `SyncDone` (or when the connection dies).
pub(crate) async fn run_source(eng: Engine, link: Arc<Link>) {
    match source(&eng, &link).await {
        Ok(()) => {}
        Err(e) => tracing::info!(error = %e, "resync interrupted"),
    }
}

async fn source(eng: &Engine, link: &Arc<Link>) -> Result<()> {
    // A fresh sync generation (DRBD's sync UUID): our bitmap UUID and the target's current
    // UUID both become it, so if this resync is interrupted the next handshake finds
    // "my bitmap == peer's current" and resumes from the bitmap instead of starting over.
    let sync_uuid = {
        let mut md = eng.inner.md.lock().await;
        let old = md.sb.uuids.bitmap;
        let u = if old != 0 && old != crate::meta::superblock::UUID_JUST_CREATED {
            old.wrapping_add(1 << 48)
        } else {
            super::new_uuid()
        };
        md.sb.uuids.bitmap = u;
        md.write_sb().await?;
        u
    };
    link.send(Packet::SyncUuid { uuid: sync_uuid });
    let mut pacer = ResyncPacer::new(eng.inner.cfg.rate, now(eng));
    let size = eng.inner.size;
    let reads = Arc::new(tokio::sync::Semaphore::new(RS_READS));
    loop {
        let mut pos = 0;
        loop {
            // Large runs only at high fixed rates: a slow, paused or yielding (dynamic)
            // resync keeps small requests so its pace stays smooth, a pause stops it
            // promptly and application writes wait less behind it.
            let max_run = match eng.inner.cfg.rate {
                RateMode::Fixed(r) if !eng.inner.cfg.csums => {
                    (r / 64 / BM_BLOCK_SIZE).clamp(MAX_RUN_BITS, MAX_DATA_RUN_BITS)
                }
                _ => MAX_RUN_BITS,
            };
            let run = {
                let bm = eng.inner.bitmap();
                bm.next_set(pos).map(|s| {
                    let mut e = s + 1;
                    while e < s + max_run && bm.get(e) {
                        e += 1;
                    }
                    (s, e)
                })
            };
            let Some((s, e)) = run else { break };
            pos = e;
            while eng.st().repl == ReplState::PausedSyncS {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let offset = s * BM_BLOCK_SIZE;
            let len = (e * BM_BLOCK_SIZE).min(size) - offset;
            let wait = pacer.admit(len, now(eng), eng.inner.app_io_recent());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            acquire(link, e - s).await?;
            if eng.inner.cfg.csums {
                let (guard, waits) = eng.inner.conflicts.register(offset, offset + len);
                waits.wait().await;
                let data = eng.inner.dev.read(offset, len as usize).await?;
                link.send(Packet::RsChecksum {
                    offset,
                    len: len as u32,
                    digest: digest(&data),
                });
                drop(guard);
            } else {
                // Registered here, in walk order; read and sent by a task of its own so a
                // few reads overlap with sending (a dead link just drops what they send).
                let (guard, waits) = eng.inner.conflicts.register(offset, offset + len);
                let permit = reads
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Disconnected("resync reader closed".into()))?;
                let (eng, link) = (eng.clone(), link.clone());
                tokio::spawn(async move {
                    send_rs_data_registered(&eng, &link, offset, len, guard, waits).await;
                    drop(permit);
                });
            }
        }
        drain_window(link).await?;
        if eng.inner.bitmap().count() == 0 {
            break;
        }
    }
    let uuids = {
        let mut md = eng.inner.md.lock().await;
        md.sb.uuids.sync_finished_source();
        md.sb.set(super::MDF_BM_WHILE_PRIMARY, false);
        if eng.st().role != Role::Primary {
            md.sb.set(MDF_CRASHED_PRIMARY, false);
        }
        md.write_bitmap().await?;
        md.write_sb().await?;
        md.sb.uuids
    };
    link.send(Packet::SyncDone { uuids });
    let mut st = eng.st();
    st.repl = ReplState::Established;
    st.peer_disk = DiskState::UpToDate;
    st.sync = None;
    tracing::info!(
        resource = %eng.inner.cfg.name,
        bytes = eng.inner.counters.rs_bytes.load(Ordering::Relaxed),
        "resync finished (source)"
    );
    Ok(())
}

/// Online verify of the whole device against the peer.
pub(crate) async fn verify(eng: Engine) -> Result<u64> {
    let link = {
        let mut st = eng.st();
        if st.repl != ReplState::Established {
            return Err(Error::State(format!(
                "verify needs an established connection (replication is {})",
                st.repl
            )));
        }
        let Some(l) = st.link.clone() else {
            return Err(Error::State("not connected".into()));
        };
        st.repl = ReplState::VerifyS;
        let bits = eng.inner.bitmap().len();
        st.sync = Some(super::SyncTrack {
            total_bits: bits,
            started: std::time::Instant::now(),
            verify: true,
            verify_done_bits: 0,
        });
        l
    };
    let r = verify_pass(&eng, &link).await;
    {
        let mut st = eng.st();
        if st.repl == ReplState::VerifyS {
            st.repl = ReplState::Established;
        }
        st.sync = None;
    }
    r?;
    Ok(link.ov_oos())
}

async fn verify_pass(eng: &Engine, link: &Arc<Link>) -> Result<()> {
    let size = eng.inner.size;
    let step = MAX_RUN_BITS * BM_BLOCK_SIZE;
    let mut pacer = ResyncPacer::new(eng.inner.cfg.rate, now(eng));
    let mut offset = 0;
    while offset < size {
        let len = step.min(size - offset);
        let bits = len.div_ceil(BM_BLOCK_SIZE);
        let wait = pacer.admit(len, now(eng), eng.inner.app_io_recent());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        acquire(link, bits).await?;
        let (guard, waits) = eng.inner.conflicts.register(offset, offset + len);
        waits.wait().await;
        let data = eng.inner.dev.read(offset, len as usize).await?;
        link.send(Packet::OvRequest {
            offset,
            len: len as u32,
            digest: digest(&data),
        });
        drop(guard);
        offset += len;
    }
    drain_window(link).await
}
