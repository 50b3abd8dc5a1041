//! The sans-IO transport endpoint: turns messages into authenticated frames and frames back
//! into messages, with replay protection and a reliable control stream.
//!
//! Heartbeats are sent once: the next one supersedes a lost one. Control messages (takeover
//! requests and answers, ...) get a control sequence number and are kept until every peer that
//! has been heard acknowledges them (cumulative [`Body::Ack`]). A receiver that sees a gap in a
//! sender's control stream -- from a later control frame, or from the stream position every
//! heartbeat carries -- asks for the missing ones with a [`Body::Nack`]; unacknowledged messages
//! are also resent periodically. Delivery to the application is in order per sender.
//!
//! Every frame goes out once per medium, each copy with its own frame sequence number and its
//! link id in the header: a receiver keeps one replay window per (sender, link), so each link's
//! copies prove that link alive to ha-core, while a copy replayed onto another link is refused.
//! A frame with a lower incarnation than the sender's known one is refused as stale; a higher
//! incarnation (the sender restarted) resets the sender's state.
//!
//! Like ha-core's state machines this never does I/O or reads a clock: the driver feeds received
//! bytes and time in, and takes frames to transmit and messages to deliver out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use ha_core::{LinkId, NodeId, Timestamp};

use crate::Result;
use crate::auth::{AuthError, Counters, Keyring, ReplayError, ReplayWindow};
use crate::wire::body::MAX_NACK;
use crate::wire::{self, Body, ClusterId, DecodeError, Header, WireMessage};

/// Tuning of a [`Session`].
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Cluster id written in and expected from every frame.
    pub cluster: ClusterId,
    /// This node.
    pub me: NodeId,
    /// This node's incarnation; must grow across restarts (the runtime uses wall-clock ns).
    pub incarnation: u64,
    /// The other cluster members; frames from anyone else are dropped.
    pub peers: Vec<NodeId>,
    /// Number of media (link ids 0..links); every frame goes out once per link.
    pub links: u8,
    /// Resend an unacknowledged control message this often.
    pub resend_interval: Duration,
    /// Give a control message up after this many resends.
    pub max_resends: u32,
    /// Repeat a NACK for the same gap at most this often.
    pub nack_interval: Duration,
    /// Most unacknowledged control messages kept; the oldest is given up beyond.
    pub max_pending: usize,
    /// Most out-of-order control messages buffered per sender.
    pub max_reorder: usize,
}

impl SessionConfig {
    /// Defaults for a cluster with heartbeat interval `keepalive`.
    pub fn new(cluster: ClusterId, me: NodeId, incarnation: u64, peers: Vec<NodeId>) -> Self {
        SessionConfig {
            cluster,
            me,
            incarnation,
            peers,
            links: 1,
            resend_interval: Duration::from_millis(200),
            max_resends: 25,
            nack_interval: Duration::from_millis(20),
            max_pending: 256,
            max_reorder: 256,
        }
    }
}

/// A message that passed every check, ready for `Node::handle_message`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered<M> {
    /// Sender.
    pub from: NodeId,
    /// The medium it arrived on.
    pub link: LinkId,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The message.
    pub message: M,
}

/// Why a received frame was dropped (already counted in [`Counters`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// Not parseable.
    #[error("malformed: {0}")]
    Malformed(DecodeError),
    /// Another cluster.
    #[error("wrong cluster {0:#010x}")]
    WrongCluster(u32),
    /// Our own frame looped back.
    #[error("own frame")]
    Own,
    /// Arrived on another link than the one it was sent on (replayed across links, or the
    /// nodes number their media differently).
    #[error("sent on {sent}, received on {received}")]
    WrongLink {
        /// Link in the header.
        sent: LinkId,
        /// Link it arrived on.
        received: LinkId,
    },
    /// Not a configured node.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),
    /// Authentication failed.
    #[error("authentication: {0}")]
    Auth(AuthError),
    /// Replay protection refused it.
    #[error("replay protection: {0}")]
    Replay(ReplayError),
    /// Authenticated but undecodable payload.
    #[error("bad payload: {0}")]
    BadPayload(DecodeError),
}

struct Pending<M> {
    dest: Option<NodeId>,
    message: M,
    next_resend: Timestamp,
    resends: u32,
}

struct PeerRx<M> {
    /// The sender incarnation these fields describe.
    incarnation: u64,
    /// One replay window per link: every link carries its own copy of each frame.
    windows: BTreeMap<LinkId, ReplayWindow>,
    /// Highest control sequence number delivered (or skipped) in order.
    delivered: u64,
    /// Highest control sequence number the sender is known to have assigned.
    known_high: u64,
    reorder: BTreeMap<u64, (Option<NodeId>, M, LinkId)>,
    next_nack: Timestamp,
}

/// The transport endpoint of one node. See the module docs.
pub struct Session<M> {
    cfg: SessionConfig,
    keyring: Keyring,
    peers: BTreeSet<NodeId>,
    counters: Counters,
    next_seq: u64,
    ctl_last: u64,
    pending: BTreeMap<u64, Pending<M>>,
    acked: BTreeMap<NodeId, u64>,
    rx: BTreeMap<NodeId, PeerRx<M>>,
    transmit: VecDeque<(LinkId, Bytes)>,
    delivered: VecDeque<Delivered<M>>,
}

impl<M> std::fmt::Debug for Session<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("me", &self.cfg.me)
            .field("incarnation", &self.cfg.incarnation)
            .field("ctl_last", &self.ctl_last)
            .field("pending", &self.pending.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Build one authenticated frame (also useful to tests and tools that craft frames).
pub fn seal<M: WireMessage>(keyring: &Keyring, header: &Header, body: &Body<M>) -> Result<Bytes> {
    let payload = body.encode()?;
    let (key_id, tag_len) = keyring.signing();
    let header = Header {
        kind: body.kind(),
        key_id,
        ..*header
    };
    let mut b = wire::build_unsigned(&header, &payload, tag_len)?;
    let tag = keyring.sign(&b);
    b.extend_from_slice(&tag);
    Ok(b.freeze())
}

/// Parse, authenticate and decode one frame without any session state (no replay check).
pub fn open<M: WireMessage>(keyring: &Keyring, buf: &[u8]) -> Result<(Header, Body<M>), Dropped> {
    let raw = wire::parse(buf).map_err(Dropped::Malformed)?;
    keyring
        .verify(raw.header.key_id, raw.signed, raw.tag)
        .map_err(Dropped::Auth)?;
    let body = Body::decode(raw.header.kind, raw.payload).map_err(Dropped::BadPayload)?;
    Ok((raw.header, body))
}

impl<M: WireMessage> Session<M> {
    /// A session for `cfg`, signing and verifying with `keyring`.
    pub fn new(cfg: SessionConfig, keyring: Keyring) -> Self {
        let peers = cfg.peers.iter().copied().filter(|p| *p != cfg.me).collect();
        Session {
            cfg,
            keyring,
            peers,
            counters: Counters::default(),
            next_seq: 0,
            ctl_last: 0,
            pending: BTreeMap::new(),
            acked: BTreeMap::new(),
            rx: BTreeMap::new(),
            transmit: VecDeque::new(),
            delivered: VecDeque::new(),
        }
    }

    /// Transport counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.cfg.incarnation
    }

    /// Control messages not yet acknowledged by every heard peer.
    pub fn pending_control(&self) -> usize {
        self.pending.len()
    }

    /// Queue `message` for `dest` (`None`: every node) on `link` (`None`: every link;
    /// retransmissions of control messages always use every link).
    pub fn send(
        &mut self,
        now: Timestamp,
        dest: Option<NodeId>,
        link: Option<LinkId>,
        message: M,
    ) -> Result<()> {
        if !message.reliable() {
            return self.emit_on(dest, link, self.ctl_last, &Body::App(message));
        }
        self.ctl_last += 1;
        let seq = self.ctl_last;
        self.emit_on(dest, link, seq, &Body::App(message.clone()))?;
        if self.waiting_peers(seq).next().is_some() {
            self.pending.insert(
                seq,
                Pending {
                    dest,
                    message,
                    next_resend: now + self.cfg.resend_interval,
                    resends: 0,
                },
            );
            while self.pending.len() > self.cfg.max_pending {
                if let Some((s, _)) = self.pending.pop_first() {
                    tracing::warn!(
                        ctl_seq = s,
                        "control message given up: too many unacknowledged"
                    );
                    self.counters.control_lost += 1;
                }
            }
        }
        Ok(())
    }

    /// Peers heard from that have not acknowledged control message `seq`.
    fn waiting_peers(&self, seq: u64) -> impl Iterator<Item = NodeId> + '_ {
        self.rx
            .keys()
            .copied()
            .filter(move |p| self.acked.get(p).copied().unwrap_or(0) < seq)
    }

    fn emit(&mut self, dest: Option<NodeId>, ctl_seq: u64, body: &Body<M>) -> Result<()> {
        self.emit_on(dest, None, ctl_seq, body)
    }

    /// One copy per link (or on `link` only), each with its own frame sequence number.
    fn emit_on(
        &mut self,
        dest: Option<NodeId>,
        link: Option<LinkId>,
        ctl_seq: u64,
        body: &Body<M>,
    ) -> Result<()> {
        let links: Vec<LinkId> = match link {
            Some(l) => vec![l],
            None => (0..self.cfg.links.max(1)).map(LinkId).collect(),
        };
        for l in links {
            self.next_seq += 1;
            let header = Header {
                kind: 0,
                cluster: self.cfg.cluster,
                key_id: 0,
                link: l,
                sender: self.cfg.me,
                dest,
                incarnation: self.cfg.incarnation,
                seq: self.next_seq,
                ctl_seq,
            };
            let frame = seal(&self.keyring, &header, body)?;
            self.counters.frames_sent += 1;
            self.transmit.push_back((l, frame));
        }
        Ok(())
    }

    /// Next frame to transmit, with the medium it must go out on.
    pub fn poll_transmit(&mut self) -> Option<(LinkId, Bytes)> {
        self.transmit.pop_front()
    }

    /// Next message for the state machine.
    pub fn poll_delivered(&mut self) -> Option<Delivered<M>> {
        self.delivered.pop_front()
    }

    /// When [`Session::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let resend = self.pending.values().map(|p| p.next_resend).min();
        let nack = self
            .rx
            .values()
            .filter(|r| r.known_high > r.delivered)
            .map(|r| r.next_nack)
            .min();
        match (resend, nack) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Resend what is due, repeat NACKs for gaps still open.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.next_resend <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            let Some(p) = self.pending.get_mut(&seq) else {
                continue;
            };
            if p.resends >= self.cfg.max_resends {
                self.pending.remove(&seq);
                tracing::warn!(
                    ctl_seq = seq,
                    "control message given up: never acknowledged"
                );
                self.counters.control_lost += 1;
                continue;
            }
            p.resends += 1;
            p.next_resend = now + self.cfg.resend_interval;
            let (dest, msg) = (p.dest, p.message.clone());
            self.counters.retransmits += 1;
            if let Err(e) = self.emit(dest, seq, &Body::App(msg)) {
                tracing::error!(error = %e, "cannot resend control message");
            }
        }
        let peers: Vec<NodeId> = self.rx.keys().copied().collect();
        for p in peers {
            self.maybe_nack(now, p);
        }
    }

    /// Count a "port unreachable" answer: `attributed` when it was about a known peer.
    pub fn note_unreachable(&mut self, attributed: bool) {
        if attributed {
            self.counters.unreachable_reports += 1;
        } else {
            self.counters.unreachable_unknown += 1;
        }
    }

    /// Count a peer daemon's exit seen by the exit watch.
    pub fn note_exit(&mut self) {
        self.counters.peer_exits += 1;
    }

    /// Process one received frame. Returns its authenticated sender, or why it was dropped
    /// (already counted).
    pub fn receive(&mut self, now: Timestamp, link: LinkId, buf: &[u8]) -> Result<NodeId, Dropped> {
        self.counters.frames_received += 1;
        let r = self.receive_inner(now, link, buf);
        if let Err(d) = &r {
            let c = &mut self.counters;
            match d {
                Dropped::Malformed(_) => c.malformed += 1,
                Dropped::WrongCluster(_) => c.wrong_cluster += 1,
                Dropped::Own => c.own_frames += 1,
                Dropped::WrongLink { .. } => c.wrong_link += 1,
                Dropped::UnknownNode(_) => c.unknown_node += 1,
                Dropped::Auth(AuthError::UnknownKey(_)) => c.unknown_key += 1,
                Dropped::Auth(AuthError::BadTag) => c.bad_mac += 1,
                Dropped::Auth(AuthError::Unauthenticated) => c.unauthenticated += 1,
                Dropped::Replay(ReplayError::Replay) => c.replayed += 1,
                Dropped::Replay(ReplayError::TooOld) => c.too_old += 1,
                Dropped::Replay(ReplayError::StaleIncarnation) => c.stale_incarnation += 1,
                Dropped::BadPayload(_) => c.bad_payload += 1,
            }
            if !matches!(d, Dropped::Own) {
                tracing::debug!(%link, reason = %d, "frame dropped");
            }
        } else {
            self.counters.frames_accepted += 1;
        }
        r
    }

    fn receive_inner(
        &mut self,
        now: Timestamp,
        link: LinkId,
        buf: &[u8],
    ) -> Result<NodeId, Dropped> {
        let raw = wire::parse(buf).map_err(Dropped::Malformed)?;
        let h = raw.header;
        if h.cluster != self.cfg.cluster {
            return Err(Dropped::WrongCluster(h.cluster.0));
        }
        if h.sender == self.cfg.me {
            return Err(Dropped::Own);
        }
        if !self.peers.contains(&h.sender) {
            return Err(Dropped::UnknownNode(h.sender));
        }
        if h.link != link {
            return Err(Dropped::WrongLink {
                sent: h.link,
                received: link,
            });
        }
        self.keyring
            .verify(h.key_id, raw.signed, raw.tag)
            .map_err(Dropped::Auth)?;
        let body = Body::<M>::decode(h.kind, raw.payload).map_err(Dropped::BadPayload)?;
        // Only authenticated frames may move the replay window.
        let fresh_peer = !self.rx.contains_key(&h.sender);
        let rx = self.rx.entry(h.sender).or_insert_with(|| PeerRx {
            incarnation: 0,
            windows: BTreeMap::new(),
            delivered: 0,
            known_high: 0,
            reorder: BTreeMap::new(),
            next_nack: Timestamp::ZERO,
        });
        if h.incarnation < rx.incarnation {
            return Err(Dropped::Replay(ReplayError::StaleIncarnation));
        }
        let restarted = h.incarnation > rx.incarnation;
        let mut window = if restarted {
            ReplayWindow::default()
        } else {
            rx.windows.get(&link).cloned().unwrap_or_default()
        };
        window
            .check(h.incarnation, h.seq)
            .map_err(Dropped::Replay)?;
        if restarted {
            rx.incarnation = h.incarnation;
            rx.windows.clear();
        }
        rx.windows.insert(link, window);
        if restarted {
            // A new sender incarnation (or the first frame ever): its control stream starts
            // where this frame says; messages sent before we could hear them are not wanted.
            let reliable = matches!(&body, Body::App(m) if m.reliable());
            let start = if reliable {
                h.ctl_seq.saturating_sub(1)
            } else {
                h.ctl_seq
            };
            rx.delivered = start;
            rx.known_high = start;
            rx.reorder.clear();
            // It knows nothing of our earlier control messages either.
            self.acked.insert(h.sender, self.ctl_last);
            if !fresh_peer {
                tracing::info!(peer = %h.sender, incarnation = h.incarnation, "peer restarted");
            }
            self.prune_pending();
        }
        let for_me = h.dest.is_none_or(|d| d == self.cfg.me);
        match body {
            Body::App(m) if m.reliable() => {
                self.receive_control(now, link, &h, m);
            }
            Body::App(m) => {
                if for_me {
                    self.delivered.push_back(Delivered {
                        from: h.sender,
                        link,
                        incarnation: h.incarnation,
                        message: m,
                    });
                }
                if let Some(rx) = self.rx.get_mut(&h.sender) {
                    rx.known_high = rx.known_high.max(h.ctl_seq);
                }
                self.maybe_nack(now, h.sender);
            }
            Body::Ack { upto } if for_me => {
                let a = self.acked.entry(h.sender).or_insert(0);
                *a = (*a).max(upto.min(self.ctl_last));
                self.prune_pending();
            }
            Body::Nack { missing } if for_me => {
                self.counters.nacks_received += 1;
                self.answer_nack(now, h.sender, &missing);
            }
            Body::Skip { upto } if for_me => self.skip(h.sender, h.incarnation, upto),
            Body::Ack { .. } | Body::Nack { .. } | Body::Skip { .. } => {}
        }
        Ok(h.sender)
    }

    fn receive_control(&mut self, now: Timestamp, link: LinkId, h: &Header, m: M) {
        let Some(rx) = self.rx.get_mut(&h.sender) else {
            return;
        };
        let c = h.ctl_seq;
        rx.known_high = rx.known_high.max(c);
        if c <= rx.delivered || rx.reorder.contains_key(&c) {
            self.counters.duplicates += 1;
        } else if c == rx.delivered + 1 {
            rx.delivered = c;
            if h.dest.is_none_or(|d| d == self.cfg.me) {
                self.delivered.push_back(Delivered {
                    from: h.sender,
                    link,
                    incarnation: h.incarnation,
                    message: m,
                });
            }
            self.drain_reorder(h.sender, h.incarnation);
        } else if rx.reorder.len() < self.cfg.max_reorder {
            rx.reorder.insert(c, (h.dest, m, link));
        }
        let upto = self.rx.get(&h.sender).map_or(0, |r| r.delivered);
        if let Err(e) = self.emit(Some(h.sender), self.ctl_last, &Body::Ack { upto }) {
            tracing::error!(error = %e, "cannot send ack");
        }
        self.maybe_nack(now, h.sender);
    }

    /// Deliver buffered control messages that are now in order.
    fn drain_reorder(&mut self, from: NodeId, incarnation: u64) {
        let me = self.cfg.me;
        let Some(rx) = self.rx.get_mut(&from) else {
            return;
        };
        while let Some((dest, m, link)) = rx.reorder.remove(&(rx.delivered + 1)) {
            rx.delivered += 1;
            if dest.is_none_or(|d| d == me) {
                self.delivered.push_back(Delivered {
                    from,
                    link,
                    incarnation,
                    message: m,
                });
            }
        }
    }

    fn skip(&mut self, from: NodeId, incarnation: u64, upto: u64) {
        let me = self.cfg.me;
        let Some(rx) = self.rx.get_mut(&from) else {
            return;
        };
        if upto <= rx.delivered {
            return;
        }
        // Deliver what we hold below `upto` in order, count the holes as lost.
        let mut next = rx.delivered + 1;
        while next <= upto {
            match rx.reorder.remove(&next) {
                Some((dest, m, link)) => {
                    if dest.is_none_or(|d| d == me) {
                        self.delivered.push_back(Delivered {
                            from,
                            link,
                            incarnation,
                            message: m,
                        });
                    }
                }
                None => self.counters.control_lost += 1,
            }
            next += 1;
        }
        rx.delivered = upto;
        rx.known_high = rx.known_high.max(upto);
        tracing::warn!(peer = %from, upto, "peer no longer holds lost control messages; skipped");
        self.drain_reorder(from, incarnation);
    }

    /// Send a NACK to `peer` if its control stream has a gap and none was sent recently.
    fn maybe_nack(&mut self, now: Timestamp, peer: NodeId) {
        let Some(rx) = self.rx.get_mut(&peer) else {
            return;
        };
        if rx.known_high <= rx.delivered || now < rx.next_nack {
            return;
        }
        let missing: Vec<u64> = (rx.delivered + 1..=rx.known_high)
            .filter(|s| !rx.reorder.contains_key(s))
            .take(MAX_NACK)
            .collect();
        if missing.is_empty() {
            return;
        }
        rx.next_nack = now + self.cfg.nack_interval;
        self.counters.nacks_sent += 1;
        tracing::debug!(%peer, ?missing, "requesting retransmission");
        if let Err(e) = self.emit(Some(peer), self.ctl_last, &Body::Nack { missing }) {
            tracing::error!(error = %e, "cannot send nack");
        }
    }

    fn answer_nack(&mut self, now: Timestamp, peer: NodeId, missing: &[u64]) {
        let mut skip_upto = 0;
        for &s in missing {
            if s == 0 || s > self.ctl_last {
                continue;
            }
            match self.pending.get_mut(&s) {
                Some(p) => {
                    p.next_resend = now + self.cfg.resend_interval;
                    let (dest, msg) = (p.dest, p.message.clone());
                    self.counters.retransmits += 1;
                    if let Err(e) = self.emit(dest, s, &Body::App(msg)) {
                        tracing::error!(error = %e, "cannot retransmit");
                    }
                }
                None => skip_upto = skip_upto.max(s),
            }
        }
        if skip_upto > 0
            && let Err(e) = self.emit(Some(peer), self.ctl_last, &Body::Skip { upto: skip_upto })
        {
            tracing::error!(error = %e, "cannot send skip");
        }
    }

    /// Forget control messages every heard peer has acknowledged.
    fn prune_pending(&mut self) {
        let done: Vec<u64> = self
            .pending
            .keys()
            .copied()
            .filter(|s| self.waiting_peers(*s).next().is_none())
            .collect();
        for s in done {
            self.pending.remove(&s);
        }
    }
}
