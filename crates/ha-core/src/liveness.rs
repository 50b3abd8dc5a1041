//! Peer liveness per node and per link, with heartbeat's semantics.
//!
//! * keepalive: how often peers send (used by the phi detector's floor and by the node).
//! * warntime: a heartbeat arriving later than this after the previous one on a link is
//!   reported as [`LivenessEvent::LateHeartbeat`].
//! * deadtime: a link unheard for this long is down; a peer is alive while any link is up.
//! * initdead: a peer never heard since boot is declared dead only after this long.
//! * incarnation: a heartbeat with a larger incarnation is a restarted peer (down + up).
//! * [`DetectorKind::PhiAccrual`]: the link is declared down when phi exceeds the threshold,
//!   never earlier than [`Timing::detection_floor`] and never later than deadtime.
//!
//! * unreachable: the transport learned that the peer's host has nothing listening for our
//!   heartbeats on a link (ICMP port unreachable): its process is gone while its kernel still
//!   answers. The link is then declared down once its next heartbeat is overdue: silent for
//!   longer than the longest of its last intervals (at least keepalive) plus keepalive / 8, not
//!   deadtime. A heartbeat on the link clears the report, so a
//!   forged or stale report costs nothing while the peer keeps sending; after [`MAX_REFUTED`]
//!   such refuted reports the link's reports are ignored until it goes down.
//!
//! The tracker also implements the time shift used by the self-stall guard: time the local node
//! spent not running does not count as peer silence ([`Liveness::shift`]).

use crate::error::{Error, Result};
use crate::ids::{LinkId, NodeId};
use crate::model::{DetectorKind, Timing};
use crate::time::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Intervals kept per link for the phi accrual detector.
const PHI_WINDOW: usize = 32;

impl Timing {
    /// Check the timing is usable: keepalive > 0, deadtime > 2 x keepalive (heartbeat's rule),
    /// warntime <= deadtime, initdead >= deadtime, a positive finite phi threshold.
    pub fn validate(&self) -> Result<()> {
        if self.keepalive.is_zero() {
            return Err(Error::Invalid("keepalive must be greater than zero".into()));
        }
        if self.deadtime <= self.keepalive * 2 {
            return Err(Error::Invalid(format!(
                "deadtime ({:?}) must exceed 2 x keepalive ({:?}); raise deadtime or lower keepalive",
                self.deadtime, self.keepalive
            )));
        }
        if self.warntime > self.deadtime {
            return Err(Error::Invalid(format!(
                "warntime ({:?}) must not exceed deadtime ({:?})",
                self.warntime, self.deadtime
            )));
        }
        if self.initdead < self.deadtime {
            return Err(Error::Invalid(format!(
                "initdead ({:?}) must be at least deadtime ({:?})",
                self.initdead, self.deadtime
            )));
        }
        if let DetectorKind::PhiAccrual { threshold } = self.detector
            && !(threshold.is_finite() && threshold > 0.0)
        {
            return Err(Error::Invalid(format!(
                "phi accrual threshold must be a positive number, got {threshold}"
            )));
        }
        Ok(())
    }

    /// The earliest a silent peer can be declared dead after it was last heard: deadtime for the
    /// fixed detector; for phi accrual max(3/4 x deadtime, 2 x keepalive). Leases are based on
    /// it, so it must stay well above 2 x keepalive for leases to be renewed in time.
    pub fn detection_floor(&self) -> Duration {
        match self.detector {
            DetectorKind::Fixed => self.deadtime,
            DetectorKind::PhiAccrual { .. } => (self.deadtime * 3 / 4).max(self.keepalive * 2),
        }
    }
}

/// Reports on a link that later heartbeats proved wrong before the reports are ignored until
/// the link goes down: a peer that is heard while its host keeps answering "port unreachable"
/// (a wrong peer address, forged ICMP) must not shorten its deadtime for good.
pub const MAX_REFUTED: u8 = 3;

/// How long a link reported unreachable may stay silent: its next heartbeat is overdue once
/// the silence exceeds the longest of the link's recent intervals (at least one keepalive),
/// which already holds the jitter this link has shown, plus keepalive / 8. A report is only
/// wrong when forged or misdirected, and refuted ones stop counting ([`MAX_REFUTED`]).
fn unreachable_after(timing: &Timing, l: &LinkState) -> Duration {
    let longest = l.intervals.iter().max().copied().unwrap_or(0);
    Duration::from_nanos(longest).max(timing.keepalive) + timing.keepalive / 8
}

/// Liveness of a peer as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerState {
    /// Never heard since boot and initdead not yet over.
    Unknown,
    /// At least one link is up.
    Up,
    /// Every link is down (or never heard within initdead).
    Down,
}

/// A change reported by the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LivenessEvent {
    /// A link to a peer came up.
    LinkUp(NodeId, LinkId),
    /// A link to a peer went down.
    LinkDown(NodeId, LinkId),
    /// A peer became alive.
    PeerUp(NodeId),
    /// A peer was declared dead.
    PeerDown(NodeId),
    /// A peer restarted (new incarnation); it lost every resource.
    PeerRestarted {
        /// The peer.
        node: NodeId,
        /// Its previous incarnation.
        old: u64,
        /// Its new incarnation.
        new: u64,
    },
    /// A heartbeat arrived later than warntime after the previous one on a link.
    LateHeartbeat(NodeId, LinkId, Duration),
}

/// What a received heartbeat meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatVerdict {
    /// Older than one already seen, or from an old incarnation: ignore its content.
    Stale,
    /// The newest heartbeat from the peer: use its content.
    Fresh,
}

#[derive(Debug, Clone, Default)]
struct LinkState {
    last_heard: Option<Timestamp>,
    last_seq: u64,
    up: bool,
    intervals: VecDeque<u64>,
    /// The peer's host reported nothing listening on this link since the last heartbeat.
    unreachable: bool,
    /// Reports a later heartbeat proved wrong since the link came up.
    refuted: u8,
}

/// Liveness of one peer.
#[derive(Debug, Clone)]
pub struct PeerLiveness {
    /// The peer.
    pub node: NodeId,
    /// Its incarnation (0: never heard).
    pub incarnation: u64,
    /// Highest heartbeat seq received from this incarnation.
    pub last_seq: u64,
    /// Overall state.
    pub state: PeerState,
    /// When any link last delivered a fresh heartbeat.
    pub last_heard: Option<Timestamp>,
    /// The latest incarnation seen exiting ([`Liveness::mark_exited`]): it never speaks again.
    pub exited: u64,
    links: Vec<LinkState>,
}

impl PeerLiveness {
    /// Whether link `l` is up.
    pub fn link_up(&self, l: LinkId) -> bool {
        self.links.get(usize::from(l.0)).is_some_and(|s| s.up)
    }

    /// Per link: (link, up, last heard).
    pub fn links(&self) -> impl Iterator<Item = (LinkId, bool, Option<Timestamp>)> + '_ {
        self.links.iter().enumerate().map(|(i, s)| {
            (
                LinkId(u8::try_from(i).unwrap_or(u8::MAX)),
                s.up,
                s.last_heard,
            )
        })
    }
}

/// Liveness of every peer of the local node.
#[derive(Debug, Clone)]
pub struct Liveness {
    timing: Timing,
    boot: Timestamp,
    peers: BTreeMap<NodeId, PeerLiveness>,
}

impl Liveness {
    /// Track `peers` over `links` links, starting at `boot`. Fails if the timing is invalid.
    pub fn new(
        timing: Timing,
        peers: impl IntoIterator<Item = NodeId>,
        links: usize,
        boot: Timestamp,
    ) -> Result<Self> {
        timing.validate()?;
        let links = links.max(1);
        let peers = peers
            .into_iter()
            .map(|node| {
                (
                    node,
                    PeerLiveness {
                        node,
                        incarnation: 0,
                        last_seq: 0,
                        state: PeerState::Unknown,
                        last_heard: None,
                        exited: 0,
                        links: vec![LinkState::default(); links],
                    },
                )
            })
            .collect();
        Ok(Liveness {
            timing,
            boot,
            peers,
        })
    }

    /// The timing in use.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// One peer.
    pub fn peer(&self, node: NodeId) -> Option<&PeerLiveness> {
        self.peers.get(&node)
    }

    /// All peers, by id.
    pub fn peers(&self) -> impl Iterator<Item = &PeerLiveness> {
        self.peers.values()
    }

    /// Peers currently up.
    pub fn up_peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers
            .values()
            .filter(|p| p.state == PeerState::Up)
            .map(|p| p.node)
    }

    /// True while some peer is still [`PeerState::Unknown`] (boot: waiting up to initdead).
    pub fn any_unknown(&self) -> bool {
        self.peers.values().any(|p| p.state == PeerState::Unknown)
    }

    /// Record a heartbeat from `from` on `link`.
    pub fn on_heartbeat(
        &mut self,
        now: Timestamp,
        from: NodeId,
        link: LinkId,
        incarnation: u64,
        seq: u64,
        events: &mut Vec<LivenessEvent>,
    ) -> HeartbeatVerdict {
        let warntime = self.timing.warntime;
        let Some(p) = self.peers.get_mut(&from) else {
            return HeartbeatVerdict::Stale;
        };
        let li = usize::from(link.0);
        if li >= p.links.len() {
            return HeartbeatVerdict::Stale;
        }
        if incarnation < p.incarnation || (incarnation <= p.exited && p.exited != 0) {
            // Older, or an instance that exited: a frame it sent before dying may still arrive.
            return HeartbeatVerdict::Stale;
        }
        if incarnation > p.incarnation {
            if p.incarnation != 0 {
                events.push(LivenessEvent::PeerRestarted {
                    node: from,
                    old: p.incarnation,
                    new: incarnation,
                });
                if p.state == PeerState::Up {
                    // A restarted peer is a new instance: down, then up again below.
                    events.push(LivenessEvent::PeerDown(from));
                    p.state = PeerState::Down;
                }
            }
            p.incarnation = incarnation;
            p.last_seq = 0;
            for l in &mut p.links {
                l.last_seq = 0;
                l.intervals.clear();
            }
        }
        let ls = &mut p.links[li];
        if seq <= ls.last_seq {
            return HeartbeatVerdict::Stale;
        }
        ls.last_seq = seq;
        if let Some(prev) = ls.last_heard {
            let gap = now.saturating_since(prev);
            if ls.up {
                if gap > warntime {
                    events.push(LivenessEvent::LateHeartbeat(from, link, gap));
                }
                ls.intervals
                    .push_back(u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX));
                if ls.intervals.len() > PHI_WINDOW {
                    ls.intervals.pop_front();
                }
            }
        }
        ls.last_heard = Some(now);
        if ls.unreachable {
            ls.unreachable = false;
            ls.refuted = ls.refuted.saturating_add(1);
        }
        if !ls.up {
            ls.up = true;
            events.push(LivenessEvent::LinkUp(from, link));
        }
        if p.state != PeerState::Up {
            p.state = PeerState::Up;
            events.push(LivenessEvent::PeerUp(from));
        }
        if seq > p.last_seq {
            p.last_seq = seq;
            p.last_heard = Some(now);
            HeartbeatVerdict::Fresh
        } else {
            HeartbeatVerdict::Stale
        }
    }

    /// How long link `l` may stay silent before it is declared down.
    fn detect_after(timing: &Timing, l: &LinkState) -> Duration {
        match timing.detector {
            DetectorKind::Fixed => timing.deadtime,
            DetectorKind::PhiAccrual { threshold } => {
                if l.intervals.len() < 2 {
                    return timing.deadtime;
                }
                let n = l.intervals.len() as f64;
                let mean = l.intervals.iter().map(|&x| x as f64).sum::<f64>() / n;
                // Exponential inter-arrival model: phi(t) = t / (mean * ln 10).
                let t = threshold * mean * std::f64::consts::LN_10;
                let d = Duration::from_nanos(t.clamp(0.0, u64::MAX as f64) as u64);
                d.clamp(timing.detection_floor(), timing.deadtime)
            }
        }
    }

    /// When link `l` is declared down if nothing more is heard (None: it is down).
    fn link_deadline(timing: &Timing, l: &LinkState) -> Option<Timestamp> {
        let (true, Some(h)) = (l.up, l.last_heard) else {
            return None;
        };
        let silent = Self::detect_after(timing, l);
        Some(if l.unreachable {
            h + silent.min(unreachable_after(timing, l))
        } else {
            h + silent
        })
    }

    /// The peer's host reported nothing listening for our heartbeats on `link` (ICMP port
    /// unreachable). Returns true when this brought the link's deadline forward.
    pub fn on_unreachable(&mut self, from: NodeId, link: LinkId) -> bool {
        let Some(l) = self
            .peers
            .get_mut(&from)
            .and_then(|p| p.links.get_mut(usize::from(link.0)))
        else {
            return false;
        };
        if !l.up || l.refuted >= MAX_REFUTED {
            return false;
        }
        let first = !l.unreachable;
        l.unreachable = true;
        first
    }

    /// True when the reports on `link` about `from` are ignored: heartbeats kept arriving
    /// after [`MAX_REFUTED`] of them.
    pub fn unreachable_refuted(&self, from: NodeId, link: LinkId) -> bool {
        self.peers
            .get(&from)
            .and_then(|p| p.links.get(usize::from(link.0)))
            .is_some_and(|l| l.refuted >= MAX_REFUTED)
    }

    /// Declare links and peers dead whose time is up.
    pub fn check(&mut self, now: Timestamp, events: &mut Vec<LivenessEvent>) {
        let timing = self.timing;
        let initdead_over = now.saturating_since(self.boot) >= timing.initdead;
        for p in self.peers.values_mut() {
            for (i, l) in p.links.iter_mut().enumerate() {
                if Self::link_deadline(&timing, l).is_some_and(|d| now >= d) {
                    l.up = false;
                    l.unreachable = false;
                    l.refuted = 0;
                    l.intervals.clear();
                    let link = LinkId(u8::try_from(i).unwrap_or(u8::MAX));
                    events.push(LivenessEvent::LinkDown(p.node, link));
                }
            }
            let any_up = p.links.iter().any(|l| l.up);
            match p.state {
                PeerState::Up if !any_up => {
                    p.state = PeerState::Down;
                    events.push(LivenessEvent::PeerDown(p.node));
                }
                PeerState::Unknown if initdead_over => {
                    p.state = PeerState::Down;
                    events.push(LivenessEvent::PeerDown(p.node));
                }
                _ => {}
            }
        }
    }

    /// The next instant [`Liveness::check`] may change something.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut consider = |t: Timestamp| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        for p in self.peers.values() {
            if p.state == PeerState::Unknown {
                consider(self.boot + self.timing.initdead);
            }
            for l in &p.links {
                if let Some(d) = Self::link_deadline(&self.timing, l) {
                    consider(d);
                }
            }
        }
        next
    }

    /// Self-stall guard: the local node did not run for `delay` (up to `now`); do not count that
    /// time as peer silence. Shifts every "last heard" forward by `delay`, capped at `now`.
    pub fn shift(&mut self, now: Timestamp, delay: Duration) {
        for p in self.peers.values_mut() {
            if let Some(h) = p.last_heard {
                p.last_heard = Some((h + delay).min(now));
            }
            for l in &mut p.links {
                if let Some(h) = l.last_heard {
                    l.last_heard = Some((h + delay).min(now));
                }
            }
        }
        // initdead is counted from boot: a stall during boot delays it too.
        if self.peers.values().any(|p| p.state == PeerState::Unknown) {
            self.boot = (self.boot + delay).min(now);
        }
    }

    /// The peer's instance `incarnation` exited: down now, and its late frames are ignored
    /// (only a new incarnation brings the peer back).
    pub fn mark_exited(&mut self, node: NodeId, incarnation: u64, events: &mut Vec<LivenessEvent>) {
        if let Some(p) = self.peers.get_mut(&node) {
            p.exited = p.exited.max(incarnation);
        }
        self.mark_down(node, events);
    }

    /// Forget a peer's links (it was fenced): it stays down until heard again.
    pub fn mark_down(&mut self, node: NodeId, events: &mut Vec<LivenessEvent>) {
        if let Some(p) = self.peers.get_mut(&node) {
            for (i, l) in p.links.iter_mut().enumerate() {
                l.unreachable = false;
                l.refuted = 0;
                if l.up {
                    l.up = false;
                    events.push(LivenessEvent::LinkDown(
                        node,
                        LinkId(u8::try_from(i).unwrap_or(u8::MAX)),
                    ));
                }
            }
            if p.state != PeerState::Down {
                p.state = PeerState::Down;
                events.push(LivenessEvent::PeerDown(node));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }
    fn t(x: u64) -> Timestamp {
        Timestamp::from_millis(x)
    }
    fn timing() -> Timing {
        Timing {
            keepalive: ms(100),
            warntime: ms(300),
            deadtime: ms(500),
            initdead: ms(1000),
            detector: DetectorKind::Fixed,
        }
    }

    #[test]
    fn validation_rejects_short_deadtime() {
        let mut tm = timing();
        tm.deadtime = ms(200);
        assert!(matches!(tm.validate(), Err(Error::Invalid(_))));
        tm.deadtime = ms(201);
        tm.warntime = ms(100);
        assert!(tm.validate().is_ok());
        tm.keepalive = Duration::ZERO;
        assert!(tm.validate().is_err());
        let mut tm = timing();
        tm.initdead = ms(100);
        assert!(tm.validate().is_err());
        assert!(
            Liveness::new(
                Timing {
                    deadtime: ms(150),
                    ..timing()
                },
                [NodeId(2)],
                1,
                t(0)
            )
            .is_err()
        );
    }

    #[test]
    fn deadtime_and_links() {
        let mut lv = Liveness::new(timing(), [NodeId(2)], 2, t(0)).unwrap();
        let mut ev = vec![];
        assert_eq!(
            lv.on_heartbeat(t(10), NodeId(2), LinkId(0), 1, 1, &mut ev),
            HeartbeatVerdict::Fresh
        );
        assert_eq!(
            ev,
            vec![
                LivenessEvent::LinkUp(NodeId(2), LinkId(0)),
                LivenessEvent::PeerUp(NodeId(2))
            ]
        );
        ev.clear();
        // Same seq on the second link: link comes up, content is stale.
        assert_eq!(
            lv.on_heartbeat(t(11), NodeId(2), LinkId(1), 1, 1, &mut ev),
            HeartbeatVerdict::Stale
        );
        assert_eq!(ev, vec![LivenessEvent::LinkUp(NodeId(2), LinkId(1))]);
        ev.clear();
        // Link 1 keeps going, link 0 silent: link 0 down at 510, peer stays up.
        for i in 2..8u64 {
            lv.on_heartbeat(t(i * 100), NodeId(2), LinkId(1), 1, i, &mut ev);
        }
        ev.clear();
        lv.check(t(509), &mut ev);
        assert!(ev.is_empty());
        lv.check(t(510), &mut ev);
        assert_eq!(ev, vec![LivenessEvent::LinkDown(NodeId(2), LinkId(0))]);
        assert_eq!(lv.peer(NodeId(2)).unwrap().state, PeerState::Up);
        ev.clear();
        // Link 1 last heard at 700: dead at 1200.
        assert_eq!(lv.next_deadline(), Some(t(1200)));
        lv.check(t(1200), &mut ev);
        assert_eq!(
            ev,
            vec![
                LivenessEvent::LinkDown(NodeId(2), LinkId(1)),
                LivenessEvent::PeerDown(NodeId(2))
            ]
        );
    }

    #[test]
    fn unreachable_link_goes_down_once_the_next_heartbeat_is_overdue() {
        // keepalive 100, no intervals seen yet: an unreachable link is down 112.5 after it was
        // last heard.
        let mut lv = Liveness::new(timing(), [NodeId(2)], 2, t(0)).unwrap();
        let mut ev = vec![];
        lv.on_heartbeat(t(100), NodeId(2), LinkId(0), 1, 1, &mut ev);
        lv.on_heartbeat(t(100), NodeId(2), LinkId(1), 1, 1, &mut ev);
        assert!(!lv.on_unreachable(NodeId(9), LinkId(0)), "unknown peer");
        assert!(!lv.on_unreachable(NodeId(2), LinkId(7)), "unknown link");
        assert!(lv.on_unreachable(NodeId(2), LinkId(0)));
        assert!(!lv.on_unreachable(NodeId(2), LinkId(0)), "already reported");
        let overdue = t(100) + Duration::from_micros(112_500);
        assert_eq!(lv.next_deadline(), Some(overdue));
        ev.clear();
        lv.check(t(212), &mut ev);
        assert!(ev.is_empty());
        lv.check(overdue, &mut ev);
        // Only the reported link: the other one still waits for deadtime.
        assert_eq!(ev, vec![LivenessEvent::LinkDown(NodeId(2), LinkId(0))]);
        assert_eq!(lv.peer(NodeId(2)).unwrap().state, PeerState::Up);
        assert_eq!(lv.next_deadline(), Some(t(600)));
        // Both links reported: the peer is down when the last one's heartbeat is overdue. Link
        // 1 has shown a 200 ms interval: it gets that long, plus 12.5.
        lv.on_heartbeat(t(300), NodeId(2), LinkId(0), 1, 2, &mut ev);
        lv.on_heartbeat(t(300), NodeId(2), LinkId(1), 1, 2, &mut ev);
        assert!(lv.on_unreachable(NodeId(2), LinkId(0)));
        assert!(lv.on_unreachable(NodeId(2), LinkId(1)));
        ev.clear();
        lv.check(t(300) + Duration::from_micros(112_500), &mut ev);
        assert_eq!(ev, vec![LivenessEvent::LinkDown(NodeId(2), LinkId(0))]);
        ev.clear();
        lv.check(t(512), &mut ev);
        assert!(ev.is_empty());
        lv.check(t(300) + Duration::from_micros(212_500), &mut ev);
        assert_eq!(
            ev,
            vec![
                LivenessEvent::LinkDown(NodeId(2), LinkId(1)),
                LivenessEvent::PeerDown(NodeId(2))
            ]
        );
        // A down link cannot be reported; a heartbeat brings it back without the mark.
        assert!(!lv.on_unreachable(NodeId(2), LinkId(0)));
        lv.on_heartbeat(t(500), NodeId(2), LinkId(0), 1, 3, &mut ev);
        assert_eq!(lv.next_deadline(), Some(t(1000)));
    }

    #[test]
    fn a_heartbeat_clears_an_unreachable_report() {
        let mut lv = Liveness::new(timing(), [NodeId(2)], 1, t(0)).unwrap();
        let mut ev = vec![];
        lv.on_heartbeat(t(100), NodeId(2), LinkId(0), 1, 1, &mut ev);
        assert!(lv.on_unreachable(NodeId(2), LinkId(0)));
        lv.on_heartbeat(t(200), NodeId(2), LinkId(0), 1, 2, &mut ev);
        assert_eq!(lv.next_deadline(), Some(t(700)));
        ev.clear();
        lv.check(t(650), &mut ev);
        assert!(ev.is_empty(), "the report was cleared: {ev:?}");
    }

    #[test]
    fn reports_refuted_by_heartbeats_are_ignored_until_the_link_goes_down() {
        let mut lv = Liveness::new(timing(), [NodeId(2)], 1, t(0)).unwrap();
        let mut ev = vec![];
        let mut seq = 0;
        let mut beat = |lv: &mut Liveness, at: u64, ev: &mut Vec<LivenessEvent>| {
            seq += 1;
            lv.on_heartbeat(t(at), NodeId(2), LinkId(0), 1, seq, ev);
        };
        beat(&mut lv, 0, &mut ev);
        for i in 1..=u64::from(MAX_REFUTED) {
            assert!(lv.on_unreachable(NodeId(2), LinkId(0)), "report {i}");
            beat(&mut lv, i * 100, &mut ev);
        }
        assert!(lv.unreachable_refuted(NodeId(2), LinkId(0)));
        assert!(!lv.on_unreachable(NodeId(2), LinkId(0)), "ignored now");
        let last = u64::from(MAX_REFUTED) * 100;
        assert_eq!(lv.next_deadline(), Some(t(last + 500)), "deadtime rules");
        // The link goes down: reports count again once it is back.
        ev.clear();
        lv.check(t(last + 500), &mut ev);
        assert!(ev.contains(&LivenessEvent::PeerDown(NodeId(2))));
        beat(&mut lv, last + 600, &mut ev);
        assert!(!lv.unreachable_refuted(NodeId(2), LinkId(0)));
        assert!(lv.on_unreachable(NodeId(2), LinkId(0)));
    }

    #[test]
    fn an_exited_instance_stays_down_until_a_new_one_speaks() {
        let mut lv = Liveness::new(timing(), [NodeId(2)], 1, t(0)).unwrap();
        let mut ev = vec![];
        lv.on_heartbeat(t(100), NodeId(2), LinkId(0), 7, 1, &mut ev);
        ev.clear();
        lv.mark_exited(NodeId(2), 7, &mut ev);
        assert_eq!(
            ev,
            vec![
                LivenessEvent::LinkDown(NodeId(2), LinkId(0)),
                LivenessEvent::PeerDown(NodeId(2))
            ]
        );
        ev.clear();
        // A frame it sent before dying arrives late: ignored.
        assert_eq!(
            lv.on_heartbeat(t(101), NodeId(2), LinkId(0), 7, 2, &mut ev),
            HeartbeatVerdict::Stale
        );
        assert!(ev.is_empty());
        assert_eq!(lv.peer(NodeId(2)).unwrap().state, PeerState::Down);
        // The restarted daemon is a new incarnation.
        assert_eq!(
            lv.on_heartbeat(t(300), NodeId(2), LinkId(0), 8, 1, &mut ev),
            HeartbeatVerdict::Fresh
        );
        assert_eq!(lv.peer(NodeId(2)).unwrap().state, PeerState::Up);
    }

    #[test]
    fn warntime_reports_late_heartbeat() {
        let mut lv = Liveness::new(timing(), [NodeId(2)], 1, t(0)).unwrap();
        let mut ev = vec![];
        lv.on_heartbeat(t(0), NodeId(2), LinkId(0), 1, 1, &mut ev);
        lv.on_heartbeat(t(100), NodeId(2), LinkId(0), 1, 2, &mut ev);
        ev.clear();
        lv.on_heartbeat(t(450), NodeId(2), LinkId(0), 1, 3, &mut ev);
        assert_eq!(
            ev,
            vec![LivenessEvent::LateHeartbeat(NodeId(2), LinkId(0), ms(350))]
        );
    }

    #[test]
    fn initdead_for_never_heard_peer() {
        let mut lv = Liveness::new(timing(), [NodeId(2)], 1, t(0)).unwrap();
        let mut ev = vec![];
        assert!(lv.any_unknown());
        assert_eq!(lv.next_deadline(), Some(t(1000)));
        lv.check(t(999), &mut ev);
        assert!(ev.is_empty());
        lv.check(t(1000), &mut ev);
        assert_eq!(ev, vec![LivenessEvent::PeerDown(NodeId(2))]);
        assert!(!lv.any_unknown());
    }

    #[test]
    fn incarnation_restart_and_stale() {
        let mut lv = Liveness::new(timing(), [NodeId(2)], 1, t(0)).unwrap();
        let mut ev = vec![];
        lv.on_heartbeat(t(0), NodeId(2), LinkId(0), 5, 10, &mut ev);
        ev.clear();
        // Old incarnation and old seq are stale.
        assert_eq!(
            lv.on_heartbeat(t(50), NodeId(2), LinkId(0), 4, 11, &mut ev),
            HeartbeatVerdict::Stale
        );
        assert_eq!(
            lv.on_heartbeat(t(50), NodeId(2), LinkId(0), 5, 9, &mut ev),
            HeartbeatVerdict::Stale
        );
        assert!(ev.is_empty());
        assert_eq!(
            lv.on_heartbeat(t(100), NodeId(2), LinkId(0), 6, 1, &mut ev),
            HeartbeatVerdict::Fresh
        );
        assert_eq!(
            ev,
            vec![
                LivenessEvent::PeerRestarted {
                    node: NodeId(2),
                    old: 5,
                    new: 6
                },
                LivenessEvent::PeerDown(NodeId(2)),
                LivenessEvent::PeerUp(NodeId(2)),
            ]
        );
    }

    #[test]
    fn shift_hides_local_stall() {
        let mut lv = Liveness::new(timing(), [NodeId(2)], 1, t(0)).unwrap();
        let mut ev = vec![];
        lv.on_heartbeat(t(0), NodeId(2), LinkId(0), 1, 1, &mut ev);
        ev.clear();
        lv.shift(t(1000), ms(1000));
        lv.check(t(1000), &mut ev);
        assert!(ev.is_empty(), "stall must not count as silence: {ev:?}");
        lv.check(t(1500), &mut ev);
        assert_eq!(ev.len(), 2);
    }

    #[test]
    fn phi_detects_between_floor_and_deadtime() {
        let tm = Timing {
            detector: DetectorKind::PhiAccrual { threshold: 1.0 },
            ..timing()
        };
        let mut lv = Liveness::new(tm, [NodeId(2)], 1, t(0)).unwrap();
        let mut ev = vec![];
        for i in 0..10u64 {
            lv.on_heartbeat(t(i * 100), NodeId(2), LinkId(0), 1, i + 1, &mut ev);
        }
        // mean 100 ms, phi 1 => 230 ms, clamped up to the floor of 375 ms.
        assert_eq!(lv.next_deadline(), Some(t(900 + 375)));
        let tm = Timing {
            detector: DetectorKind::PhiAccrual { threshold: 1.8 },
            ..timing()
        };
        let mut lv = Liveness::new(tm, [NodeId(2)], 1, t(0)).unwrap();
        for i in 0..10u64 {
            lv.on_heartbeat(t(i * 100), NodeId(2), LinkId(0), 1, i + 1, &mut ev);
        }
        // phi 1.8 => 414 ms: between floor and deadtime.
        let d = lv.next_deadline().unwrap().as_millis() - 900;
        assert!((410..=420).contains(&d), "{d}");
        let tm = Timing {
            detector: DetectorKind::PhiAccrual { threshold: 12.0 },
            ..timing()
        };
        let mut lv = Liveness::new(tm, [NodeId(2)], 1, t(0)).unwrap();
        for i in 0..10u64 {
            lv.on_heartbeat(t(i * 100), NodeId(2), LinkId(0), 1, i + 1, &mut ev);
        }
        assert_eq!(
            lv.next_deadline(),
            Some(t(900 + 500)),
            "deadtime is the upper bound"
        );
    }
}
