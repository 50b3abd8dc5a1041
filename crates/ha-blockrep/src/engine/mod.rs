//! The replicated device engine: states, the application I/O path, and connection control.
//!
//! Application I/O enters through [`Engine::read`], [`Engine::write`], [`Engine::flush`],
//! [`Engine::write_zeroes`] (the NBD server calls these). Only a Primary accepts them. A write:
//! 1. activates its activity-log extents (metadata transaction if they were cold);
//! 2. under the ordering lock, registers its range (see [`conflict`]) and either queues a
//!    `Data` packet to the peer or — when not connected — marks the bitmap;
//! 3. writes locally, then waits as the protocol says (A: nothing, B: `RecvAck`, C: `WriteAck`).
//!
//! Every replicated write stays in the link's transfer log until the peer's `WriteAck`; when
//! a connection dies, every entry still there is marked in the bitmap, so nothing the peer may
//! have missed is forgotten.

pub mod conflict;
mod conn;
mod link;
mod resync;

use crate::device::DynDevice;
use crate::error::{Error, Result};
use crate::meta::superblock::{
    MDF_CONSISTENT, MDF_CRASHED_PRIMARY, MDF_PEER_OUTDATED, MDF_PRIMARY_IND, MDF_WAS_UP_TO_DATE,
    UUID_JUST_CREATED,
};
use crate::meta::{Bitmap, Metadata, SharedBitmap};
use crate::repl::decide::SbPolicies;
use crate::repl::packet::Packet;
use crate::repl::rate::RateMode;
use crate::state::{ConnState, DiskState, Protocol, ReplState, Role, Status, SyncProgress};
use bytes::Bytes;
use conflict::Conflicts;
use link::Link;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Flag for [`crate::meta::Superblock`]: the bitmap generation began while Primary.
pub const MDF_BM_WHILE_PRIMARY: u32 = 1 << 7;

/// Fencing policy when a Primary loses its peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fencing {
    /// Do nothing.
    #[default]
    DontCare,
    /// Call the fence-peer handler; on success mark the peer Outdated.
    ResourceOnly,
}

/// User fence-peer handler: gets the peer's name, returns true if the peer is now outdated.
pub type FenceHandler = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Engine configuration (what a `resource` section of drbd.conf says).
#[derive(Clone)]
pub struct EngineConfig {
    /// Resource name.
    pub name: String,
    /// This node's name.
    pub node_name: String,
    /// Minor number (status display only).
    pub minor: u32,
    /// Replication protocol.
    pub protocol: Protocol,
    /// Shared secret for peer authentication (`None` = no authentication).
    pub secret: Option<Vec<u8>>,
    /// Split-brain recovery policies.
    pub after_sb: SbPolicies,
    /// Resync rate.
    pub rate: RateMode,
    /// Checksum-based resync (`csums-alg`): unchanged blocks are not sent.
    pub csums: bool,
    /// Keep-alive interval.
    pub ping_interval: Duration,
    /// Silence after which the peer is considered dead.
    pub ping_timeout: Duration,
    /// Delay between connection attempts.
    pub connect_retry: Duration,
    /// Fencing policy.
    pub fencing: Fencing,
    /// Fence-peer handler.
    pub fence_handler: Option<FenceHandler>,
    /// Test hook: delay before handling each received replicated write (slow receiver).
    pub recv_delay: Duration,
}

impl EngineConfig {
    /// Defaults for a resource `name` on node `node_name`.
    pub fn new(name: &str, node_name: &str) -> Self {
        EngineConfig {
            name: name.into(),
            node_name: node_name.into(),
            minor: 0,
            protocol: Protocol::C,
            secret: None,
            after_sb: SbPolicies::default(),
            rate: RateMode::default(),
            csums: false,
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(3),
            connect_retry: Duration::from_millis(200),
            fencing: Fencing::DontCare,
            fence_handler: None,
            recv_delay: Duration::ZERO,
        }
    }
}

/// Mutable state (behind a plain mutex, never held across `.await`).
struct St {
    role: Role,
    peer_role: Role,
    conn: ConnState,
    repl: ReplState,
    disk: DiskState,
    peer_disk: DiskState,
    link: Option<Arc<Link>>,
    /// A connection is being set up or running (only one at a time).
    busy: bool,
    want_connect: bool,
    discard_my_data: bool,
    last_error: Option<String>,
    sync: Option<SyncTrack>,
    tasks: Vec<tokio::task::AbortHandle>,
}

#[derive(Clone, Debug)]
struct SyncTrack {
    total_bits: u64,
    started: Instant,
    verify: bool,
    verify_done_bits: u64,
}

#[derive(Default)]
struct Counters {
    ns: AtomicU64,
    nr: AtomicU64,
    dw: AtomicU64,
    dr: AtomicU64,
    rs_bytes: AtomicU64,
    last_app_io_ms: AtomicU64,
    /// Completed application writes that were not FUA (see [`Engine::flush`]).
    plain_writes: AtomicU64,
    /// `plain_writes` as read at the start of the last successful flush.
    flushed_writes: AtomicU64,
}

pub(crate) struct Inner {
    cfg: EngineConfig,
    /// Data area size (fixed at attach).
    size: u64,
    dev: DynDevice,
    md: tokio::sync::Mutex<Metadata>,
    bitmap: SharedBitmap,
    uuids: Arc<Mutex<crate::meta::Uuids>>,
    st: Mutex<St>,
    /// Fixes the order of range registration and sending (see module docs).
    order: Mutex<()>,
    conflicts: Conflicts,
    counters: Counters,
    epoch: Instant,
    seq: AtomicU64,
    /// Set by [`Engine::kill`]: nothing completes successfully any more (simulated crash).
    dead: std::sync::atomic::AtomicBool,
}

/// A replicated block device resource.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// How a replicated request ended on the peer.
#[derive(Debug)]
enum PeerOutcome {
    Done,
    Lost,
}

impl Engine {
    /// Attach `data` (the replicated area) with its loaded metadata.
    pub async fn attach(data: DynDevice, md: Metadata, cfg: EngineConfig) -> Result<Engine> {
        if data.size() < md.data_size() {
            return Err(Error::Metadata(format!(
                "data device has {} bytes but the metadata describes {}",
                data.size(),
                md.data_size()
            )));
        }
        let disk = if !md.consistent() {
            DiskState::Inconsistent
        } else if md.was_up_to_date() {
            DiskState::Consistent
        } else {
            DiskState::Outdated
        };
        let bitmap = md.shared_bitmap();
        let uuids = md.published_uuids();
        let inner = Inner {
            uuids,
            size: md.data_size(),
            cfg,
            dev: data,
            bitmap,
            md: tokio::sync::Mutex::new(md),
            st: Mutex::new(St {
                role: Role::Secondary,
                peer_role: Role::Unknown,
                conn: ConnState::StandAlone,
                repl: ReplState::Off,
                disk,
                peer_disk: DiskState::DUnknown,
                link: None,
                busy: false,
                want_connect: false,
                discard_my_data: false,
                last_error: None,
                sync: None,
                tasks: Vec::new(),
            }),
            order: Mutex::new(()),
            conflicts: Conflicts::default(),
            counters: Counters::default(),
            epoch: Instant::now(),
            seq: AtomicU64::new(1),
            dead: std::sync::atomic::AtomicBool::new(false),
        };
        tracing::info!(resource = %inner.cfg.name, disk = %disk, "attached");
        Ok(Engine {
            inner: Arc::new(inner),
        })
    }

    fn st(&self) -> std::sync::MutexGuard<'_, St> {
        self.inner.st()
    }

    /// Size of the replicated data area.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// Resource name.
    pub fn name(&self) -> &str {
        &self.inner.cfg.name
    }

    /// Current status.
    pub fn status(&self) -> Status {
        let (oos_bits, uuids) = {
            let bm = self.inner.bitmap();
            let n = bm.count();
            drop(bm);
            let u = *self.inner.uuids.lock().unwrap_or_else(|e| e.into_inner());
            (n, u)
        };
        let st = self.st();
        let kib = |a: &AtomicU64| a.load(Ordering::Relaxed) / 1024;
        let c = &self.inner.counters;
        let sync = st.sync.as_ref().map(|t| {
            let left = if t.verify {
                t.total_bits.saturating_sub(t.verify_done_bits)
            } else {
                oos_bits.min(t.total_bits)
            };
            let done_kib = (t.total_bits - left) * 4;
            let secs = t.started.elapsed().as_secs_f64().max(0.001);
            let speed = (done_kib as f64 / secs) as u64;
            SyncProgress {
                total_kib: t.total_bits * 4,
                left_kib: left * 4,
                speed_kib_s: speed,
                eta_secs: (left * 4).checked_div(speed).unwrap_or(0),
            }
        });
        Status {
            name: self.inner.cfg.name.clone(),
            minor: self.inner.cfg.minor,
            role: st.role,
            peer_role: st.peer_role,
            conn: st.conn,
            repl: st.repl,
            disk: st.disk,
            peer_disk: st.peer_disk,
            protocol: self.inner.cfg.protocol,
            ns: kib(&c.ns),
            nr: kib(&c.nr),
            dw: kib(&c.dw),
            dr: kib(&c.dr),
            oos: oos_bits * 4,
            sync,
            uuids,
        }
    }

    /// Last error that stopped the connection (split brain, auth failure, ...).
    pub fn last_error(&self) -> Option<String> {
        self.st().last_error.clone()
    }

    /// Bytes of resync data sent so far (source side).
    pub fn resync_bytes_sent(&self) -> u64 {
        self.inner.counters.rs_bytes.load(Ordering::Relaxed)
    }

    /// Bytes sent to the peer so far (all packets, headers included).
    pub fn bytes_sent(&self) -> u64 {
        self.inner.counters.ns.load(Ordering::Relaxed)
    }

    /// Wait until `pred` holds for the status, or fail after `timeout`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Status) -> bool,
    ) -> Result<Status> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if pred(&s) {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "{what}: status is {}",
                    s.proc_text().trim()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Become Primary. Needs an UpToDate (or, disconnected, Consistent) disk unless `force`.
    pub async fn promote(&self, force: bool) -> Result<()> {
        let mut md = self.inner.md.lock().await;
        let (connected, disk, peer_role) = {
            let st = self.st();
            if st.role == Role::Primary {
                return Ok(());
            }
            (st.link.is_some(), st.disk, st.peer_role)
        };
        if peer_role == Role::Primary {
            return Err(Error::State(
                "the peer is Primary (dual-primary is not supported)".into(),
            ));
        }
        let ok = match disk {
            DiskState::UpToDate => true,
            DiskState::Consistent => !connected,
            _ => false,
        };
        if !ok && !force {
            return Err(Error::State(format!(
                "refusing to promote with a {disk} disk (use force)"
            )));
        }
        if connected && disk != DiskState::UpToDate {
            return Err(Error::State(format!(
                "cannot force a {disk} disk to Primary while connected: disconnect first"
            )));
        }
        if md.sb.uuids.current == UUID_JUST_CREATED || !connected {
            // A new data generation starts: record where this node diverges.
            let fresh = md.sb.uuids.current == UUID_JUST_CREATED;
            let had_bitmap = md.sb.uuids.bitmap != 0;
            md.sb.uuids.new_current(new_uuid());
            if fresh {
                md.sb.uuids.bitmap = 0;
            }
            if !had_bitmap {
                // Diverging now as a (newly promoted) Secondary: the "younger" Primary.
                md.sb.set(MDF_BM_WHILE_PRIMARY, false);
            }
        }
        md.sb.set(MDF_CONSISTENT | MDF_WAS_UP_TO_DATE, true);
        md.sb.set(MDF_PRIMARY_IND | MDF_CRASHED_PRIMARY, true);
        md.write_sb().await?;
        // Whatever this node wrote before (as Secondary) is covered by the next flush.
        self.inner
            .counters
            .plain_writes
            .fetch_add(1, Ordering::AcqRel);
        let link = {
            let mut st = self.st();
            st.role = Role::Primary;
            st.disk = DiskState::UpToDate;
            st.link.clone()
        };
        drop(md);
        if let Some(l) = link {
            l.send(Packet::State {
                role: crate::repl::packet::role_code(Role::Primary),
                disk: crate::repl::packet::disk_code(DiskState::UpToDate),
            });
        }
        tracing::info!(resource = %self.inner.cfg.name, force, "promoted to Primary");
        Ok(())
    }

    /// Become Secondary (clean: bitmap written, activity log emptied).
    pub async fn demote(&self) -> Result<()> {
        {
            let mut st = self.st();
            if st.role != Role::Primary {
                return Ok(());
            }
            st.role = Role::Secondary;
        }
        // Wait for in-flight application writes to drain.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut md = loop {
            let md = self.inner.md.lock().await;
            if !md.al().busy() {
                break md;
            }
            drop(md);
            if Instant::now() > deadline {
                return Err(Error::Timeout("demote: writes still in flight".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        md.close_clean().await?;
        md.sb.set(MDF_PRIMARY_IND | MDF_CRASHED_PRIMARY, false);
        md.write_sb().await?;
        let (link, disk) = {
            let st = self.st();
            (st.link.clone(), st.disk)
        };
        if let Some(l) = link {
            l.send(Packet::State {
                role: crate::repl::packet::role_code(Role::Secondary),
                disk: crate::repl::packet::disk_code(disk),
            });
        }
        tracing::info!(resource = %self.inner.cfg.name, "demoted to Secondary");
        Ok(())
    }

    /// Mark our own data Outdated (what a fencing handler asks of the peer node).
    pub async fn outdate(&self) -> Result<()> {
        {
            let st = self.st();
            if st.role == Role::Primary {
                return Err(Error::State("a Primary cannot be outdated".into()));
            }
            if st.link.is_some() {
                return Err(Error::State("connected: the peer resolves states".into()));
            }
        }
        let mut md = self.inner.md.lock().await;
        md.sb.set(MDF_WAS_UP_TO_DATE, false);
        md.write_sb().await?;
        let mut st = self.st();
        if matches!(st.disk, DiskState::UpToDate | DiskState::Consistent) {
            st.disk = DiskState::Outdated;
        }
        Ok(())
    }

    /// Whether the metadata says we outdated the peer (fencing).
    pub async fn peer_outdated(&self) -> bool {
        self.inner.md.lock().await.sb.has(MDF_PEER_OUTDATED)
    }

    /// Text metadata dump.
    pub async fn dump_md(&self) -> String {
        self.inner.md.lock().await.dump()
    }

    /// Discard this node's data at the next connection (manual split-brain recovery).
    pub fn set_discard_my_data(&self, on: bool) {
        self.st().discard_my_data = on;
    }

    // ----- application I/O -----

    fn require_primary(&self) -> Result<()> {
        if self.inner.dead.load(Ordering::SeqCst) {
            return Err(Error::State("engine was killed".into()));
        }
        let st = self.st();
        if st.role != Role::Primary {
            return Err(Error::State(format!(
                "resource {} is {}: only a Primary serves I/O",
                self.inner.cfg.name, st.role
            )));
        }
        Ok(())
    }

    fn note_app_io(&self) {
        let ms = self.inner.epoch.elapsed().as_millis() as u64;
        self.inner
            .counters
            .last_app_io_ms
            .store(ms, Ordering::Relaxed);
    }

    /// Whether this node may serve I/O now (`Err` says why not).
    pub fn check_serving(&self) -> Result<()> {
        self.require_primary()
    }

    /// Read from the local disk.
    pub async fn read(&self, offset: u64, len: usize) -> Result<Bytes> {
        self.require_primary()?;
        crate::device::check_range(offset, len as u64, self.size())?;
        let b = self.inner.dev.read(offset, len).await?;
        self.inner
            .counters
            .dr
            .fetch_add(len as u64, Ordering::Relaxed);
        Ok(b)
    }

    /// Replicated write.
    pub async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<()> {
        let len = data.len() as u64;
        let flags = if fua { crate::repl::packet::DF_FUA } else { 0 };
        self.replicated(offset, len, move |seq| Packet::Data {
            seq,
            offset,
            flags,
            data: data.clone(),
        })
        .await
    }

    /// Replicated write-zeroes (or discard).
    pub async fn write_zeroes(&self, offset: u64, len: u64, discard: bool) -> Result<()> {
        self.replicated(offset, len, move |seq| Packet::Zero {
            seq,
            offset,
            len,
            discard,
        })
        .await
    }

    async fn al_begin(&self, offset: u64, len: u64) -> Result<()> {
        loop {
            if self.inner.md.lock().await.al_begin(offset, len).await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn replicated(
        &self,
        offset: u64,
        len: u64,
        make: impl Fn(u64) -> Packet + Send,
    ) -> Result<()> {
        self.require_primary()?;
        crate::device::check_range(offset, len, self.size())?;
        if len == 0 {
            return Ok(());
        }
        self.note_app_io();
        self.al_begin(offset, len).await?;
        let r = self.replicated_inner(offset, len, make).await;
        self.inner.md.lock().await.al_end(offset, len);
        r
    }

    async fn replicated_inner(
        &self,
        offset: u64,
        len: u64,
        make: impl Fn(u64) -> Packet + Send,
    ) -> Result<()> {
        let protocol = self.inner.cfg.protocol;
        // Wait for earlier overlapping requests *before* queueing to the peer: then anything
        // overlapping (application writes, resync reads) reaches the peer in the order it
        // reaches the local disk.
        let (guard, waits) = self.inner.conflicts.register(offset, offset + len);
        waits.wait().await;
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let pkt = make(seq);
        let sent = {
            let _order = self.inner.order_lock();
            let link = self.st().link.clone();
            let sent = link.and_then(|l| l.send_request(seq, offset, len, pkt.clone()));
            if sent.is_none() {
                // Not replicated: the peer will need this block.
                self.inner.bitmap().mark_bytes(offset, len);
            }
            sent
        };
        let local = match &pkt {
            Packet::Data { data, flags, .. } => {
                self.inner
                    .dev
                    .write_bytes(
                        offset,
                        data.clone(),
                        flags & crate::repl::packet::DF_FUA != 0,
                    )
                    .await
            }
            Packet::Zero { discard: true, .. } => self.inner.dev.discard(offset, len).await,
            _ => self.inner.dev.write_zeroes(offset, len).await,
        };
        local?;
        self.inner.counters.dw.fetch_add(len, Ordering::Relaxed);
        let durable =
            matches!(&pkt, Packet::Data { flags, .. } if flags & crate::repl::packet::DF_FUA != 0);
        if let Some(w) = sent {
            let outcome = match protocol {
                Protocol::A => PeerOutcome::Done,
                Protocol::B => w.received().await,
                Protocol::C => w.written().await,
            };
            if let PeerOutcome::Lost = outcome {
                tracing::debug!(
                    offset,
                    len,
                    "peer lost during write; block marked for resync"
                );
            }
        }
        drop(guard);
        if !durable {
            // Counted once complete: a flush that starts later must cover it.
            self.inner
                .counters
                .plain_writes
                .fetch_add(1, Ordering::AcqRel);
        }
        // A crashed node acknowledges nothing, even what was in flight.
        if self.inner.dead.load(Ordering::SeqCst) {
            return Err(Error::State("engine was killed".into()));
        }
        Ok(())
    }

    /// Flush: local disk, and (protocols B and C) the peer's disk.
    ///
    /// Skipped when every write completed since the last flush began was FUA (already
    /// durable locally and, with protocols A and C, sent to the peer as FUA): a client in
    /// writethrough mode would otherwise pay two flushes per write.
    pub async fn flush(&self) -> Result<()> {
        self.require_primary()?;
        let c = &self.inner.counters;
        let seen = c.plain_writes.load(Ordering::Acquire);
        if self.inner.cfg.protocol != Protocol::B
            && seen == c.flushed_writes.load(Ordering::Acquire)
        {
            return Ok(());
        }
        let sent = {
            let _order = self.inner.order_lock();
            let link = self.st().link.clone();
            let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
            link.and_then(|l| l.send_flush(seq))
        };
        self.inner.dev.flush().await?;
        if let Some(rx) = sent
            && self.inner.cfg.protocol != Protocol::A
        {
            let _ = rx.await;
        }
        c.flushed_writes.fetch_max(seen, Ordering::AcqRel);
        Ok(())
    }

    // ----- connection control -----

    /// Listen for the peer on `addr` (returns the bound address).
    pub async fn listen(&self, addr: SocketAddr) -> Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("listen on {addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("local address", e))?;
        {
            let mut st = self.st();
            st.want_connect = true;
            if st.conn == ConnState::StandAlone {
                st.conn = ConnState::WFConnection;
            }
        }
        let me = self.clone();
        let h = tokio::spawn(async move {
            loop {
                let Ok((sock, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if !me.claim_connection() {
                    tracing::debug!(%peer, "already connected; refusing a second connection");
                    continue;
                }
                me.clone().run_connection(sock).await;
            }
        });
        self.st().tasks.push(h.abort_handle());
        Ok(local)
    }

    /// Keep connecting to the peer at `addr` (reconnects after failures).
    pub fn connect(&self, addr: SocketAddr) {
        {
            let mut st = self.st();
            st.want_connect = true;
            if st.conn == ConnState::StandAlone {
                st.conn = ConnState::WFConnection;
            }
        }
        let me = self.clone();
        let h = tokio::spawn(async move {
            loop {
                if !me.st().want_connect {
                    return;
                }
                if me.claim_connection() {
                    match tokio::net::TcpStream::connect(addr).await {
                        Ok(sock) => me.clone().run_connection(sock).await,
                        Err(e) => {
                            tracing::trace!(%addr, error = %e, "connect failed");
                            me.release_connection();
                        }
                    }
                }
                tokio::time::sleep(me.inner.cfg.connect_retry).await;
            }
        });
        self.st().tasks.push(h.abort_handle());
    }

    /// Accept connections again after StandAlone (`drbdadm connect`): listeners resume
    /// accepting; an active side must call [`Engine::connect`] again.
    pub fn reconnect(&self) {
        let mut st = self.st();
        st.want_connect = true;
        if st.conn == ConnState::StandAlone {
            st.conn = ConnState::WFConnection;
        }
    }

    fn claim_connection(&self) -> bool {
        let mut st = self.st();
        if st.busy || !st.want_connect {
            return false;
        }
        st.busy = true;
        true
    }

    fn release_connection(&self) {
        self.st().busy = false;
    }

    /// Drop the connection and stop reconnecting (StandAlone).
    pub async fn disconnect(&self) {
        let link = {
            let mut st = self.st();
            st.want_connect = false;
            st.link.clone()
        };
        if let Some(l) = link {
            l.send(Packet::Disconnect);
            // Give the writer a moment to put the Disconnect on the wire, then end the
            // reader loop so the normal teardown runs.
            tokio::time::sleep(Duration::from_millis(10)).await;
            l.shutdown();
        }
        for _ in 0..1000 {
            if !self.st().busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let tasks = {
            let mut st = self.st();
            st.busy = false;
            st.conn = ConnState::StandAlone;
            std::mem::take(&mut st.tasks)
        };
        for t in tasks {
            t.abort();
        }
    }

    /// Orderly shutdown (`drbdadm down`): disconnect, demote if Primary, write the bitmap out
    /// and empty the activity log so the next attach has nothing to resync.
    pub async fn down(&self) -> Result<()> {
        self.disconnect().await;
        self.demote().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut md = self.inner.md.lock().await;
            if !md.al().busy() {
                md.close_clean().await?;
                break;
            }
            drop(md);
            if Instant::now() > deadline {
                return Err(Error::Timeout("down: writes still in flight".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.inner.dead.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Simulated node crash for tests: stop every task without any clean-up.
    pub fn kill(&self) {
        self.inner.dead.store(true, Ordering::SeqCst);
        let (link, tasks) = {
            let mut st = self.st();
            st.want_connect = false;
            (st.link.take(), std::mem::take(&mut st.tasks))
        };
        for t in tasks {
            t.abort();
        }
        if let Some(l) = link {
            // No orderly teardown: a crashed node writes no metadata.
            l.abort_tasks();
        }
    }

    /// Pause a running resync (this node must be the sync source): PausedSyncS.
    pub fn pause_sync(&self) -> Result<()> {
        let mut st = self.st();
        match st.repl {
            ReplState::SyncSource => {
                st.repl = ReplState::PausedSyncS;
                Ok(())
            }
            ReplState::PausedSyncS => Ok(()),
            r => Err(Error::State(format!(
                "no resync to pause (replication is {r})"
            ))),
        }
    }

    /// Resume a paused resync.
    pub fn resume_sync(&self) {
        let mut st = self.st();
        if st.repl == ReplState::PausedSyncS {
            st.repl = ReplState::SyncSource;
        }
    }

    /// Start online verify (this node becomes VerifyS). Completes when the pass is done;
    /// returns the number of 4 KiB blocks found out of sync (also marked in the bitmap).
    pub async fn verify(&self) -> Result<u64> {
        resync::verify(self.clone()).await
    }
}

impl Inner {
    fn st(&self) -> std::sync::MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn bitmap(&self) -> std::sync::MutexGuard<'_, Bitmap> {
        self.bitmap.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn shared(&self) -> SharedBitmap {
        self.bitmap.clone()
    }
    fn order_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.order.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn app_io_recent(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        now.saturating_sub(self.counters.last_app_io_ms.load(Ordering::Relaxed)) < 100
    }
}

/// A fresh data-generation UUID (never 0 or the "just created" marker).
fn new_uuid() -> u64 {
    loop {
        let u: u64 = rand::random();
        if u > UUID_JUST_CREATED {
            return u;
        }
    }
}
