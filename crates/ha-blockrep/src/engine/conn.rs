//! Connection driver: handshake (versions, auth, UUIDs, bitmaps), the receive loop and
//! teardown. The decisions themselves live in `repl::decide` and `link`.

use super::link::{Link, RS_FLUSH_BATCH};
use super::{Engine, MDF_BM_WHILE_PRIMARY, new_uuid};
use crate::device::WriteDone;
use crate::error::{Error, Result};
use crate::meta::Bitmap;
use crate::meta::superblock::{
    MDF_CONSISTENT, MDF_CRASHED_PRIMARY, MDF_PEER_OUTDATED, MDF_WAS_UP_TO_DATE,
};
use crate::repl::decide::{Decision, Side, decide};
use crate::repl::packet::{Packet, decode_buf, encode_into, frame_len};
use crate::repl::{auth, packet::*};
use crate::sendbuf::SendBuf;
use crate::state::{ConnState, DiskState, Protocol, ReplState, Role};
use bytes::BytesMut;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// How a connection ended.
enum Exit {
    /// Try again later.
    Retry(String),
    /// Give up: go StandAlone (split brain, auth failure, unrelated data...).
    StandAlone(String),
}

/// Resync target: a pause in resync writes this long starts a flush of what was written.
const RS_FLUSH_QUIET: Duration = Duration::from_millis(2);

/// Smallest receive buffer space offered to the socket (many small packets per read).
const READ_CHUNK: usize = 64 << 10;
/// Most receive buffer space reserved ahead of a packet's bytes arriving.
const RESERVE_MAX: usize = 4 << 20;

struct FrameReader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    eng: Engine,
}

impl FrameReader {
    async fn next(&mut self) -> Result<Packet> {
        loop {
            match decode_buf(&mut self.buf) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => return Err(Error::Protocol(e.to_string())),
            }
            // Room for the whole packet at once: a 1 MiB payload is received straight into
            // its final place (and handed on without a copy) instead of growing step by step.
            // Capped, so a header alone cannot make us allocate the largest payload up front.
            let want = frame_len(&self.buf)
                .unwrap_or(0)
                .clamp(READ_CHUNK, RESERVE_MAX);
            self.buf.reserve(want.saturating_sub(self.buf.len()));
            let n = self
                .rd
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| Error::io("receive from peer", e))?;
            if n == 0 {
                return Err(Error::Disconnected("peer closed the connection".into()));
            }
            self.eng
                .inner
                .counters
                .nr
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    async fn next_timeout(&mut self, t: Duration) -> Result<Packet> {
        tokio::time::timeout(t, self.next())
            .await
            .map_err(|_| Error::Timeout("peer did not answer".into()))?
    }
}

async fn write_pkt(eng: &Engine, wr: &mut OwnedWriteHalf, p: &Packet) -> Result<()> {
    let mut b = BytesMut::new();
    encode_into(p, &mut b);
    eng.inner
        .counters
        .ns
        .fetch_add(b.len() as u64, Ordering::Relaxed);
    wr.write_all(&b)
        .await
        .map_err(|e| Error::io("send to peer", e))
}

impl Engine {
    pub(super) async fn run_connection(self, sock: TcpStream) {
        let _ = sock.set_nodelay(true);
        let peer = sock.peer_addr().ok();
        self.st().conn = ConnState::WFReportParams;
        let mut link_slot: Option<Arc<Link>> = None;
        let exit = match self.connection(sock, &mut link_slot).await {
            Ok(e) => e,
            Err(Error::Auth(m)) => {
                // Keep trying (the peer may get the right secret), but say why it fails.
                let msg = format!("authentication failed: {m}");
                tracing::warn!(resource = %self.inner.cfg.name, "{msg}");
                self.st().last_error = Some(msg.clone());
                Exit::Retry(msg)
            }
            Err(e) => Exit::Retry(e.to_string()),
        };
        self.teardown(link_slot, exit, peer).await;
    }

    async fn connection(&self, sock: TcpStream, slot: &mut Option<Arc<Link>>) -> Result<Exit> {
        let cfg = &self.inner.cfg;
        let hs_timeout = cfg.ping_timeout.max(Duration::from_secs(2));
        let (rd, mut wr) = sock.into_split();
        let mut rd = FrameReader {
            rd,
            buf: BytesMut::with_capacity(1 << 16),
            eng: self.clone(),
        };
        // 1. versions and authentication
        let my_nonce = auth::nonce();
        write_pkt(
            self,
            &mut wr,
            &Packet::Hello {
                min_ver: VERSION_MIN,
                max_ver: VERSION_MAX,
                nonce: my_nonce,
                name: cfg.node_name.clone(),
            },
        )
        .await?;
        let Packet::Hello {
            min_ver,
            max_ver,
            nonce,
            name: peer_name,
        } = rd.next_timeout(hs_timeout).await?
        else {
            return Err(Error::Protocol("expected Hello".into()));
        };
        if max_ver.min(VERSION_MAX) < min_ver.max(VERSION_MIN) {
            return Ok(Exit::StandAlone(format!(
                "no common protocol version: peer speaks {min_ver}-{max_ver}, we speak {VERSION_MIN}-{VERSION_MAX}"
            )));
        }
        if peer_name == cfg.node_name {
            return Ok(Exit::StandAlone(format!(
                "peer has our own node name {peer_name:?} (connected to ourselves?)"
            )));
        }
        if let Some(secret) = &cfg.secret {
            let mac = auth::response(secret, &nonce, &cfg.node_name);
            write_pkt(self, &mut wr, &Packet::Auth { mac }).await?;
            let Packet::Auth { mac: theirs } = rd.next_timeout(hs_timeout).await? else {
                return Err(Error::Auth(format!(
                    "peer {peer_name} sent no authenticator"
                )));
            };
            if !auth::verify(secret, &my_nonce, &peer_name, &theirs) {
                return Err(Error::Auth(format!(
                    "peer {peer_name} does not know the shared secret"
                )));
            }
        }
        // 2. state exchange
        let (me, my_params) = self.my_side().await;
        write_pkt(self, &mut wr, &my_params).await?;
        let Packet::Params {
            protocol,
            data_size,
            role,
            disk,
            flags,
            uuids,
            bits_set,
        } = rd.next_timeout(hs_timeout).await?
        else {
            return Err(Error::Protocol("expected Params".into()));
        };
        if Protocol::from_code(protocol) != Some(cfg.protocol) {
            return Ok(Exit::StandAlone(format!(
                "protocol mismatch: we use {}, peer {peer_name} uses code {protocol}",
                cfg.protocol
            )));
        }
        if data_size != self.inner.size {
            return Ok(Exit::StandAlone(format!(
                "size mismatch: our data area is {} bytes, peer {peer_name}'s is {data_size}",
                self.inner.size
            )));
        }
        let peer_role = role_from(role);
        let peer_disk = disk_from(disk);
        let them = Side {
            uuids,
            primary: peer_role == Role::Primary,
            crashed_primary: flags & PF_CRASHED_PRIMARY != 0,
            bm_while_primary: flags & PF_BM_WHILE_PRIMARY != 0,
            bits_set,
            discard_my_data: flags & PF_DISCARD_MY_DATA != 0,
        };
        let i_win = cfg.node_name < peer_name;
        let decision = decide(&me, &them, &cfg.after_sb, i_win);
        tracing::info!(resource = %cfg.name, peer = %peer_name, ?decision, "sync decision");
        match &decision {
            Decision::Disconnect(reason) => {
                let _ = write_pkt(self, &mut wr, &Packet::Disconnect).await;
                return Ok(Exit::StandAlone(reason.clone()));
            }
            Decision::Target { .. } if me.primary => {
                return Ok(Exit::StandAlone(
                    "this Primary would have to become sync target: demote it first".into(),
                ));
            }
            Decision::Source { .. } if them.primary => {
                return Ok(Exit::StandAlone(
                    "the peer is Primary but would have to become sync target".into(),
                ));
            }
            _ => {}
        }
        // 3. bitmaps
        match decision {
            Decision::Source { full: false } | Decision::Target { full: false } => {
                self.exchange_bitmaps(&mut rd, &mut wr).await?;
            }
            Decision::Source { full: true } | Decision::Target { full: true } => {
                self.inner.bitmap().set_all();
            }
            _ => {}
        }
        let is_target = matches!(decision, Decision::Target { .. });
        if is_target {
            let mut md = self.inner.md.lock().await;
            md.sb.set(MDF_CONSISTENT, false);
            md.write_sb().await?;
            self.st().disk = DiskState::Inconsistent;
        }
        if decision == Decision::NoSync {
            // Same generation: whatever is set in the bitmaps is stale.
            self.inner.bitmap().clear_all();
        }
        // 4. go live
        let eng = self.clone();
        let sendq = SendBuf::new(
            wr,
            Box::new(move |n| {
                eng.inner.counters.ns.fetch_add(n as u64, Ordering::Relaxed);
            }),
        );
        let link = Arc::new(Link::new(sendq, self.inner.shared(), peer_name.clone()));
        *slot = Some(link.clone());
        let writer = tokio::spawn(writer_loop(link.clone(), cfg.ping_interval));
        link.add_task(writer.abort_handle());
        let consistent = |d: DiskState, f: bool| {
            f && !matches!(d, DiskState::Inconsistent | DiskState::Diskless)
        };
        {
            let _order = self.inner.order_lock();
            let mut st = self.st();
            st.link = Some(link.clone());
            st.conn = ConnState::Connected;
            st.peer_role = peer_role;
            st.last_error = None;
            st.discard_my_data = false;
            st.busy = true;
            match decision {
                Decision::NoSync => {
                    st.repl = ReplState::Established;
                    if consistent(st.disk, me_consistent(&my_params)) {
                        st.disk = DiskState::UpToDate;
                    }
                    st.peer_disk = if consistent(peer_disk, flags & PF_CONSISTENT != 0) {
                        DiskState::UpToDate
                    } else {
                        peer_disk
                    };
                }
                Decision::Source { .. } => {
                    st.repl = ReplState::SyncSource;
                    st.disk = DiskState::UpToDate;
                    st.peer_disk = DiskState::Inconsistent;
                }
                Decision::Target { .. } => {
                    st.repl = ReplState::SyncTarget;
                    st.disk = DiskState::Inconsistent;
                    st.peer_disk = DiskState::UpToDate;
                }
                Decision::Disconnect(_) => {}
            }
            let total = self.inner.bitmap().count();
            if matches!(decision, Decision::Source { .. } | Decision::Target { .. }) {
                st.sync = Some(super::SyncTrack {
                    total_bits: total,
                    started: std::time::Instant::now(),
                    verify: false,
                    verify_done_bits: 0,
                });
            }
        }
        if matches!(decision, Decision::Source { .. }) {
            let h = tokio::spawn(super::resync::run_source(self.clone(), link.clone()));
            link.add_task(h.abort_handle());
        }
        // 5. receive loop
        let idle = cfg.ping_interval + cfg.ping_timeout;
        loop {
            let p = tokio::select! {
                p = rd.next_timeout(idle) => p,
                _ = link.stop.notified() => return Ok(Exit::Retry("local disconnect".into())),
            };
            let p = match p {
                Ok(p) => p,
                Err(Error::Timeout(_)) => {
                    self.st().conn = ConnState::Timeout;
                    return Ok(Exit::Retry("ping timeout".into()));
                }
                Err(e) => return Err(e),
            };
            if let Packet::Disconnect = p {
                return Ok(Exit::Retry(format!("peer {peer_name} disconnected")));
            }
            self.dispatch(&link, p).await?;
        }
    }

    async fn my_side(&self) -> (Side, Packet) {
        let md = self.inner.md.lock().await;
        let (role, disk, discard) = {
            let st = self.st();
            (st.role, st.disk, st.discard_my_data)
        };
        let bits = self.inner.bitmap().count();
        let mut flags = 0;
        if md.sb.has(MDF_CRASHED_PRIMARY) && role != Role::Primary {
            flags |= PF_CRASHED_PRIMARY;
        }
        if discard {
            flags |= PF_DISCARD_MY_DATA;
        }
        if md.sb.has(MDF_BM_WHILE_PRIMARY) {
            flags |= PF_BM_WHILE_PRIMARY;
        }
        if md.sb.has(MDF_CONSISTENT) {
            flags |= PF_CONSISTENT;
        }
        if md.sb.has(MDF_PEER_OUTDATED) {
            flags |= PF_PEER_OUTDATED;
        }
        let side = Side {
            uuids: md.sb.uuids,
            primary: role == Role::Primary,
            crashed_primary: flags & PF_CRASHED_PRIMARY != 0,
            bm_while_primary: flags & PF_BM_WHILE_PRIMARY != 0,
            bits_set: bits,
            discard_my_data: discard,
        };
        let p = Packet::Params {
            protocol: self.inner.cfg.protocol.code(),
            data_size: self.inner.size,
            role: role_code(role),
            disk: disk_code(disk),
            flags,
            uuids: md.sb.uuids,
            bits_set: bits,
        };
        (side, p)
    }

    async fn exchange_bitmaps(&self, rd: &mut FrameReader, wr: &mut OwnedWriteHalf) -> Result<()> {
        // Our bitmap, in chunks of 64 KiB of words.
        let bytes = self.inner.bitmap().to_bytes();
        let nbits = self.inner.bitmap().len();
        let used = (nbits.div_ceil(64) * 8) as usize;
        for (i, chunk) in bytes[..used].chunks(65536).enumerate() {
            let p = Packet::Bitmap {
                word: (i * 65536 / 8) as u64,
                data: bytes::Bytes::copy_from_slice(chunk),
            };
            write_pkt(self, wr, &p).await?;
        }
        write_pkt(self, wr, &Packet::BitmapDone).await?;
        let mut theirs = vec![0u8; used];
        loop {
            match rd.next_timeout(Duration::from_secs(10)).await? {
                Packet::Bitmap { word, data } => {
                    let start = (word as usize).saturating_mul(8);
                    let end = start.saturating_add(data.len());
                    if end > theirs.len() {
                        return Err(Error::Protocol("bitmap chunk beyond the device".into()));
                    }
                    theirs[start..end].copy_from_slice(&data);
                }
                Packet::BitmapDone => break,
                other => {
                    return Err(Error::Protocol(format!("expected bitmap, got {other:?}")));
                }
            }
        }
        let peer_bm = Bitmap::from_bytes(nbits, &theirs);
        self.inner.bitmap().merge(&peer_bm);
        Ok(())
    }

    /// Handle one packet of an established connection.
    async fn dispatch(&self, link: &Arc<Link>, p: Packet) -> Result<()> {
        let c = &self.inner.counters;
        match p {
            Packet::Data {
                seq,
                offset,
                flags,
                data,
            } => {
                if !self.inner.cfg.recv_delay.is_zero() {
                    tokio::time::sleep(self.inner.cfg.recv_delay).await;
                }
                self.check_peer_write(offset, data.len() as u64)?;
                if self.inner.cfg.protocol == Protocol::B {
                    link.send(Packet::RecvAck { seq });
                }
                let len = data.len() as u64;
                let (guard, waits) = self.inner.conflicts.register(offset, offset + len);
                let (eng, link) = (self.clone(), link.clone());
                tokio::spawn(async move {
                    waits.wait().await;
                    if eng.inner.dead.load(Ordering::SeqCst) {
                        return; // simulated crash: a dead node writes nothing more
                    }
                    // The Secondary keeps an activity log too: if it crashes with these
                    // writes in a volatile cache, the extents are resynced afterwards.
                    // The ack leaves from wherever the write completes (for a file: the
                    // I/O thread, right after its fdatasync), not after this task has been
                    // scheduled again: one wake-up less on every protocol C write.
                    let acker = link.clone();
                    let ack: WriteDone = Box::new(move |ok| {
                        if ok {
                            acker.send(Packet::WriteAck { seq });
                        }
                    });
                    let r = match eng.al_begin(offset, len).await {
                        Ok(()) => {
                            let r = eng
                                .inner
                                .dev
                                .write_notify(offset, data, flags & DF_FUA != 0, ack)
                                .await;
                            eng.inner.md.lock().await.al_end(offset, len);
                            r
                        }
                        Err(e) => Err(e),
                    };
                    drop(guard);
                    if let Err(e) = r {
                        eng.peer_write_done(&link, seq, offset, len, Err(e));
                    }
                });
                c.dw.fetch_add(len, Ordering::Relaxed);
            }
            Packet::Zero {
                seq,
                offset,
                len,
                discard,
            } => {
                self.check_peer_write(offset, len)?;
                if self.inner.cfg.protocol == Protocol::B {
                    link.send(Packet::RecvAck { seq });
                }
                let (guard, waits) = self.inner.conflicts.register(offset, offset + len);
                let (eng, link) = (self.clone(), link.clone());
                tokio::spawn(async move {
                    waits.wait().await;
                    if eng.inner.dead.load(Ordering::SeqCst) {
                        return; // simulated crash: a dead node writes nothing more
                    }
                    let r = match eng.al_begin(offset, len).await {
                        Ok(()) => {
                            let r = if discard {
                                eng.inner.dev.discard(offset, len).await
                            } else {
                                eng.inner.dev.write_zeroes(offset, len).await
                            };
                            eng.inner.md.lock().await.al_end(offset, len);
                            r
                        }
                        Err(e) => Err(e),
                    };
                    drop(guard);
                    eng.peer_write_done(&link, seq, offset, len, r);
                });
            }
            Packet::Flush { seq } => {
                // A barrier: waits for every write received before it.
                let (guard, waits) = self.inner.conflicts.register(0, u64::MAX);
                let (eng, link) = (self.clone(), link.clone());
                tokio::spawn(async move {
                    waits.wait().await;
                    if eng.inner.dead.load(Ordering::SeqCst) {
                        return; // simulated crash: a dead node writes nothing more
                    }
                    if let Err(e) = eng.inner.dev.flush().await {
                        tracing::error!(error = %e, "flush for the peer failed");
                    }
                    drop(guard);
                    link.send(Packet::FlushAck { seq });
                });
            }
            Packet::RecvAck { seq } => link.recv_ack(seq),
            Packet::WriteAck { seq } => link.write_ack(seq, true),
            Packet::NegAck { seq } => link.write_ack(seq, false),
            Packet::FlushAck { seq } => link.flush_ack(seq),
            Packet::RsData { offset, data } => {
                self.check_peer_write(offset, data.len() as u64)?;
                let len = data.len() as u64;
                let (guard, waits) = self.inner.conflicts.register(offset, offset + len);
                let (eng, link) = (self.clone(), link.clone());
                tokio::spawn(async move {
                    waits.wait().await;
                    if eng.inner.dead.load(Ordering::SeqCst) {
                        return; // simulated crash: a dead node writes nothing more
                    }
                    match eng.inner.dev.write_bytes(offset, data, false).await {
                        Ok(()) => {
                            let (s, e) = Bitmap::bits_for_bytes(offset, len);
                            eng.inner.bitmap().set_range(s, e, false);
                            eng.ack_resync_durably(&link, offset, len as u32);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, offset, "resync write failed");
                            link.kill();
                        }
                    }
                    drop(guard);
                });
                c.dw.fetch_add(len, Ordering::Relaxed);
            }
            Packet::RsChecksum {
                offset,
                len,
                digest,
            } => {
                self.check_peer_write(offset, u64::from(len))?;
                let link = link.clone();
                self.spawn_digest_compare(offset, len, digest, move |eng, same| {
                    if same {
                        let (s, e) = Bitmap::bits_for_bytes(offset, u64::from(len));
                        eng.inner.bitmap().set_range(s, e, false);
                        eng.ack_resync_durably(&link, offset, len);
                    } else {
                        link.send(Packet::RsDataRequest { offset, len });
                    }
                });
            }
            Packet::RsDataRequest { offset, len } => {
                crate::device::check_range(offset, u64::from(len), self.inner.size)
                    .map_err(|e| Error::Protocol(e.to_string()))?;
                let (eng, link) = (self.clone(), link.clone());
                tokio::spawn(async move {
                    super::resync::send_rs_data(&eng, &link, offset, u64::from(len)).await;
                });
            }
            Packet::RsAck { offset, len } => {
                let (s, e) = Bitmap::bits_for_bytes(offset, u64::from(len));
                self.inner.bitmap().set_range(s, e, false);
                link.rs_window.add_permits((e - s) as usize);
            }
            Packet::SyncUuid { uuid } => {
                let mut md = self.inner.md.lock().await;
                md.sb.uuids.current = uuid;
                md.sb.uuids.bitmap = 0;
                md.write_sb().await?;
            }
            Packet::SyncDone { uuids } => {
                // Every resync write is already durable (acks wait for a flush); flush once
                // more so nothing written by the peer since is left in a cache either.
                self.inner.dev.flush().await?;
                let mut md = self.inner.md.lock().await;
                md.sb.uuids.sync_finished_target(&uuids);
                md.sb.set(MDF_CONSISTENT | MDF_WAS_UP_TO_DATE, true);
                md.sb.set(MDF_BM_WHILE_PRIMARY | MDF_CRASHED_PRIMARY, false);
                md.bitmap().clear_all();
                md.write_bitmap().await?;
                md.write_sb().await?;
                drop(md);
                let mut st = self.st();
                st.disk = DiskState::UpToDate;
                st.repl = ReplState::Established;
                st.sync = None;
                tracing::info!(resource = %self.inner.cfg.name, "resync finished (target)");
            }
            Packet::OvRequest {
                offset,
                len,
                digest,
            } => {
                crate::device::check_range(offset, u64::from(len), self.inner.size)
                    .map_err(|e| Error::Protocol(e.to_string()))?;
                let link = link.clone();
                self.spawn_digest_compare(offset, len, digest, move |_, equal| {
                    link.send(Packet::OvReply { offset, len, equal });
                });
            }
            Packet::OvReply { offset, len, equal } => {
                let (s, e) = Bitmap::bits_for_bytes(offset, u64::from(len));
                if !equal {
                    let n = self.inner.bitmap().set_range(s, e, true);
                    link.ov_oos.fetch_add(n, Ordering::Relaxed);
                }
                if let Some(t) = self.st().sync.as_mut() {
                    t.verify_done_bits += e - s;
                }
                link.rs_window.add_permits((e - s) as usize);
            }
            Packet::State { role, disk } => {
                let mut st = self.st();
                st.peer_role = role_from(role);
                let d = disk_from(disk);
                if st.repl == ReplState::Established || d != DiskState::UpToDate {
                    st.peer_disk = d;
                }
            }
            Packet::Ping => {
                link.send(Packet::PingAck);
            }
            Packet::PingAck => {}
            other @ (Packet::Hello { .. }
            | Packet::Auth { .. }
            | Packet::Params { .. }
            | Packet::Bitmap { .. }
            | Packet::BitmapDone
            | Packet::Disconnect) => {
                return Err(Error::Protocol(format!(
                    "unexpected packet on an established connection: {other:?}"
                )));
            }
        }
        Ok(())
    }

    /// Compare the local block range with the peer's `digest` (checksum resync and online
    /// verify), ordered after the writes received before the request like everything else, then
    /// call `then` with the verdict once the range is released. A read error counts as "differs";
    /// a (simulated) dead node does nothing.
    fn spawn_digest_compare(
        &self,
        offset: u64,
        len: u32,
        digest: [u8; 32],
        then: impl FnOnce(&Engine, bool) + Send + 'static,
    ) {
        let (guard, waits) = self
            .inner
            .conflicts
            .register(offset, offset + u64::from(len));
        let eng = self.clone();
        tokio::spawn(async move {
            waits.wait().await;
            if eng.inner.dead.load(Ordering::SeqCst) {
                return; // simulated crash: a dead node writes nothing more
            }
            let same = match eng.inner.dev.read(offset, len as usize).await {
                Ok(d) => super::resync::digest(&d) == digest,
                Err(_) => false,
            };
            drop(guard);
            then(&eng, same);
        });
    }

    /// Resync target: acknowledge a block only once it is durable, so the source never
    /// clears a bit for data a power cut could still take away. One flush covers a batch:
    /// it starts once [`RS_FLUSH_BATCH`] bytes wait or the stream of resync writes pauses
    /// (the source is then waiting for these acks, or done), never once per request.
    fn ack_resync_durably(&self, link: &Arc<Link>, offset: u64, len: u32) {
        link.rs_unflushed_push(offset, len);
        link.rs_written.notify_one();
        if !link.rs_flush_begin() {
            return; // the running flusher picks this one up
        }
        let (eng, link) = (self.clone(), link.clone());
        tokio::spawn(async move {
            loop {
                while link.rs_unflushed_bytes() < RS_FLUSH_BATCH {
                    let more = tokio::time::timeout(RS_FLUSH_QUIET, link.rs_written.notified());
                    if more.await.is_err() {
                        break; // the stream paused
                    }
                }
                let batch = link.rs_unflushed_take();
                if batch.is_empty() {
                    if link.rs_flush_end() {
                        return;
                    }
                    continue;
                }
                if let Err(e) = eng.inner.dev.flush().await {
                    tracing::error!(error = %e, "flush of resync data failed");
                    link.kill();
                    return;
                }
                for (offset, len) in batch {
                    link.send(Packet::RsAck { offset, len });
                }
            }
        });
    }

    fn check_peer_write(&self, offset: u64, len: u64) -> Result<()> {
        crate::device::check_range(offset, len, self.inner.size)
            .map_err(|e| Error::Protocol(format!("peer write: {e}")))?;
        if self.st().role == Role::Primary {
            return Err(Error::Protocol(
                "peer sent a write to a Primary (dual-primary is not supported)".into(),
            ));
        }
        Ok(())
    }

    fn peer_write_done(&self, link: &Link, seq: u64, offset: u64, len: u64, r: Result<()>) {
        match r {
            Ok(()) => {
                link.send(Packet::WriteAck { seq });
            }
            Err(e) => {
                tracing::error!(error = %e, offset, len, "replicated write failed");
                self.inner.bitmap().mark_bytes(offset, len);
                link.send(Packet::NegAck { seq });
            }
        }
    }

    async fn teardown(
        &self,
        link: Option<Arc<Link>>,
        exit: Exit,
        peer: Option<std::net::SocketAddr>,
    ) {
        if self.inner.dead.load(Ordering::SeqCst) {
            // Simulated crash: the node is gone, it updates nothing.
            return;
        }
        let was_established = link.is_some();
        let swept = link.as_ref().map(|l| l.close()).unwrap_or(0);
        if let Some(l) = &link {
            l.kill();
        }
        let (role, peer_name) = {
            let _order = self.inner.order_lock();
            let mut st = self.st();
            st.link = None;
            st.repl = ReplState::Off;
            st.peer_role = Role::Unknown;
            st.peer_disk = DiskState::DUnknown;
            st.sync = None;
            match &exit {
                Exit::StandAlone(reason) => {
                    tracing::error!(resource = %self.inner.cfg.name, ?peer, "going StandAlone: {reason}");
                    st.want_connect = false;
                    st.conn = ConnState::StandAlone;
                    st.last_error = Some(reason.clone());
                }
                Exit::Retry(reason) => {
                    tracing::info!(resource = %self.inner.cfg.name, ?peer, swept, "connection lost: {reason}");
                    if was_established {
                        st.last_error = Some(format!("connection lost: {reason}"));
                    }
                    st.conn = if st.want_connect {
                        ConnState::WFConnection
                    } else {
                        ConnState::StandAlone
                    };
                }
            }
            (st.role, link.as_ref().map(|l| l.peer_name.clone()))
        };
        if was_established {
            let mut md = self.inner.md.lock().await;
            if self.inner.dead.load(Ordering::SeqCst) {
                return;
            }
            if role == Role::Primary {
                // The peer falls behind from here: start a new generation so the UUIDs
                // tell who is ahead at the next handshake.
                if md.sb.uuids.bitmap == 0 {
                    md.sb.uuids.new_current(new_uuid());
                    md.sb.set(MDF_BM_WHILE_PRIMARY, true);
                }
            }
            if let Err(e) = md.write_bitmap().await {
                tracing::error!(error = %e, "bitmap write-out after disconnect failed");
            }
            if let Err(e) = md.write_sb().await {
                tracing::error!(error = %e, "superblock write after disconnect failed");
            }
            drop(md);
            // Fencing runs without the metadata lock: I/O continues meanwhile (resource-only
            // does not freeze I/O).
            if role == Role::Primary
                && self.inner.cfg.fencing == super::Fencing::ResourceOnly
                && let (Some(h), Some(name)) = (self.inner.cfg.fence_handler.clone(), peer_name)
            {
                let ok = tokio::task::spawn_blocking(move || h(&name))
                    .await
                    .unwrap_or(false);
                tracing::info!(outdated = ok, "fence-peer handler ran");
                let mut md = self.inner.md.lock().await;
                md.sb.set(MDF_PEER_OUTDATED, ok);
                if let Err(e) = md.write_sb().await {
                    tracing::error!(error = %e, "superblock write after fencing failed");
                }
            }
        }
        self.st().busy = false;
    }
}

fn me_consistent(p: &Packet) -> bool {
    matches!(p, Packet::Params { flags, .. } if flags & PF_CONSISTENT != 0)
}

/// Sends queued packets; pings every `interval` (the peer's keep-alive).
async fn writer_loop(link: Arc<Link>, interval: Duration) {
    let pings = async {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !link.send(Packet::Ping) {
                return;
            }
        }
    };
    tokio::select! {
        _ = link.sendq.drain() => {}
        _ = pings => {}
    }
}
