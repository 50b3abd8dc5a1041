//! One established connection: the send queue and the transfer log of unacknowledged writes.

use super::PeerOutcome;
use crate::meta::{Bitmap, SharedBitmap};
use crate::repl::packet::Packet;
use crate::repl::packet::{encode_into, encode_split};
use crate::sendbuf::SendBuf;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Notify, Semaphore, oneshot};

/// Resync/verify window in 4 KiB blocks (64 MiB in flight). The target acknowledges only
/// after a flush, so the window must hold several flush batches ([`RS_FLUSH_BATCH`]): data
/// keeps flowing while one batch is being made durable.
pub(crate) const RS_WINDOW: usize = 16384;
/// Resync target: bytes written before a flush is started regardless of the stream.
pub(crate) const RS_FLUSH_BATCH: u64 = 16 << 20;

struct Entry {
    offset: u64,
    len: u64,
    recv: Option<oneshot::Sender<PeerOutcome>>,
    done: Option<oneshot::Sender<PeerOutcome>>,
}

#[derive(Default)]
struct Pending {
    closed: bool,
    writes: HashMap<u64, Entry>,
    flushes: HashMap<u64, oneshot::Sender<()>>,
}

/// Waiters of one replicated request.
pub(crate) struct Sent {
    recv: oneshot::Receiver<PeerOutcome>,
    done: oneshot::Receiver<PeerOutcome>,
}

impl Sent {
    /// Protocol B: until the peer received it.
    pub(crate) async fn received(self) -> PeerOutcome {
        self.recv.await.unwrap_or(PeerOutcome::Lost)
    }
    /// Protocol C: until the peer wrote it.
    pub(crate) async fn written(self) -> PeerOutcome {
        self.done.await.unwrap_or(PeerOutcome::Lost)
    }
}

/// An established connection as seen by the I/O path.
pub(crate) struct Link {
    /// Ordered sending to the peer.
    pub(crate) sendq: SendBuf,
    pending: Mutex<Pending>,
    bitmap: SharedBitmap,
    /// Peer's node name.
    pub(crate) peer_name: String,
    /// Signals the connection's reader loop to end.
    pub(crate) stop: Notify,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Resync / verify window.
    pub(crate) rs_window: Semaphore,
    /// Verify: blocks found different, and replies received.
    pub(crate) ov_oos: AtomicU64,
    /// Resync target: written blocks waiting for a flush before their `RsAck`.
    rs_unflushed: Mutex<Unflushed>,
    rs_flushing: std::sync::atomic::AtomicBool,
    /// Resync target: signalled whenever a resync write completes (wakes the flusher).
    pub(crate) rs_written: Notify,
}

/// Resync acks waiting for a flush, and how many bytes they cover.
#[derive(Default)]
struct Unflushed {
    acks: Vec<(u64, u32)>,
    bytes: u64,
}

impl Link {
    pub(crate) fn new(sendq: SendBuf, bitmap: SharedBitmap, peer_name: String) -> Self {
        Link {
            sendq,
            pending: Mutex::new(Pending::default()),
            bitmap,
            peer_name,
            stop: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            rs_window: Semaphore::new(RS_WINDOW),
            ov_oos: AtomicU64::new(0),
            rs_unflushed: Mutex::new(Unflushed::default()),
            rs_flushing: std::sync::atomic::AtomicBool::new(false),
            rs_written: Notify::new(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bitmap(&self) -> std::sync::MutexGuard<'_, Bitmap> {
        self.bitmap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a packet that needs no tracking.
    pub(crate) fn send(&self, p: Packet) -> bool {
        self.sendq.send_split(|b| encode_split(&p, b))
    }

    /// Queue a replicated write; `None` if the link is closed (caller marks the bitmap).
    pub(crate) fn send_request(&self, seq: u64, offset: u64, len: u64, p: Packet) -> Option<Sent> {
        let mut g = self.pending();
        if g.closed {
            return None;
        }
        let (rtx, rrx) = oneshot::channel();
        let (dtx, drx) = oneshot::channel();
        if !self.sendq.send_split(|b| encode_split(&p, b)) {
            return None;
        }
        g.writes.insert(
            seq,
            Entry {
                offset,
                len,
                recv: Some(rtx),
                done: Some(dtx),
            },
        );
        Some(Sent {
            recv: rrx,
            done: drx,
        })
    }

    /// Queue a flush; the receiver fires on the peer's `FlushAck` (or is dropped on loss).
    pub(crate) fn send_flush(&self, seq: u64) -> Option<oneshot::Receiver<()>> {
        let mut g = self.pending();
        if g.closed || !self.sendq.send(|b| encode_into(&Packet::Flush { seq }, b)) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        g.flushes.insert(seq, tx);
        Some(rx)
    }

    /// Peer received `seq` (protocol B).
    pub(crate) fn recv_ack(&self, seq: u64) {
        if let Some(e) = self.pending().writes.get_mut(&seq)
            && let Some(t) = e.recv.take()
        {
            let _ = t.send(PeerOutcome::Done);
        }
    }

    /// Peer wrote `seq` (`ok`) or failed to (`!ok`: the block stays out of sync).
    pub(crate) fn write_ack(&self, seq: u64, ok: bool) {
        let e = self.pending().writes.remove(&seq);
        if let Some(mut e) = e {
            let outcome = || {
                if ok {
                    PeerOutcome::Done
                } else {
                    PeerOutcome::Lost
                }
            };
            if !ok {
                self.bitmap().mark_bytes(e.offset, e.len);
            }
            if let Some(t) = e.recv.take() {
                let _ = t.send(outcome());
            }
            if let Some(t) = e.done.take() {
                let _ = t.send(outcome());
            }
        }
    }

    /// Peer flushed.
    pub(crate) fn flush_ack(&self, seq: u64) {
        if let Some(t) = self.pending().flushes.remove(&seq) {
            let _ = t.send(());
        }
    }

    /// Connection lost: every write the peer has not confirmed is marked out of sync and its
    /// waiters are released. Returns how many writes were swept.
    pub(crate) fn close(&self) -> usize {
        let (writes, flushes) = {
            let mut g = self.pending();
            g.closed = true;
            (
                std::mem::take(&mut g.writes),
                std::mem::take(&mut g.flushes),
            )
        };
        {
            let mut bm = self.bitmap();
            for e in writes.values() {
                bm.mark_bytes(e.offset, e.len);
            }
        }
        let n = writes.len();
        for (_, mut e) in writes {
            if let Some(t) = e.recv.take() {
                let _ = t.send(PeerOutcome::Lost);
            }
            if let Some(t) = e.done.take() {
                let _ = t.send(PeerOutcome::Lost);
            }
        }
        drop(flushes);
        self.rs_window.close();
        n
    }

    /// Register a task belonging to this connection (aborted by [`Link::kill`]).
    pub(crate) fn add_task(&self, h: tokio::task::AbortHandle) {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    /// Ask the reader loop to end (orderly).
    pub(crate) fn shutdown(&self) {
        self.stop.notify_one();
    }

    /// Abort every task of this connection and end its reader loop.
    pub(crate) fn kill(&self) {
        self.abort_tasks();
        self.stop.notify_one();
    }

    /// Abort every task of this connection and stop sending (nothing else: used for
    /// simulated crashes).
    pub(crate) fn abort_tasks(&self) {
        self.sendq.close();
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }

    fn unflushed(&self) -> std::sync::MutexGuard<'_, Unflushed> {
        self.rs_unflushed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a resync ack until the next flush.
    pub(crate) fn rs_unflushed_push(&self, offset: u64, len: u32) {
        let mut u = self.unflushed();
        u.acks.push((offset, len));
        u.bytes += u64::from(len);
    }

    /// Bytes written by the resync and not yet flushed.
    pub(crate) fn rs_unflushed_bytes(&self) -> u64 {
        self.unflushed().bytes
    }

    /// Take the queued resync acks.
    pub(crate) fn rs_unflushed_take(&self) -> Vec<(u64, u32)> {
        let mut u = self.unflushed();
        u.bytes = 0;
        std::mem::take(&mut u.acks)
    }

    /// Become the flusher; false if one is already running.
    pub(crate) fn rs_flush_begin(&self) -> bool {
        !self.rs_flushing.swap(true, Ordering::AcqRel)
    }

    /// Stop being the flusher; false if more acks arrived meanwhile and we are flusher again.
    pub(crate) fn rs_flush_end(&self) -> bool {
        self.rs_flushing.store(false, Ordering::Release);
        if self.unflushed().acks.is_empty() {
            return true;
        }
        // Something was queued after our last take: carry on if nobody else took over.
        !self.rs_flush_begin()
    }

    /// Number of verify mismatches so far.
    pub(crate) fn ov_oos(&self) -> u64 {
        self.ov_oos.load(Ordering::Relaxed)
    }
}
