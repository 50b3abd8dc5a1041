//! Claims and grants: who may run which group (see [`crate::message`] for the protocol), and
//! fencing of lost peers.

use super::*;

impl Node {
    /// With fencing, the coordinator of a quorate partition fences every lost peer.
    pub(super) fn fence_lost_peers(&mut self, now: Timestamp) {
        if !self.model.policy.fencing || !self.quorum.quorate {
            return;
        }
        // Lost peers, and live peers whose stop failed (a group may still be active there:
        // Pacemaker fences such a node too). The fencer is the lowest-id member of our view
        // other than the target, so every quorate partition picks exactly one.
        let targets: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(n, p)| {
                let down = self
                    .liveness
                    .peer(**n)
                    .is_some_and(|l| l.state == PeerState::Down);
                let stop_failed = !down
                    && self.peer_up(**n)
                    && p.reports.iter().any(|r| r.state == GroupState::Failed);
                let fencer = self.view.members.iter().find(|&&m| m != **n).copied();
                (down || stop_failed)
                    && fencer == Some(self.me)
                    && !p.clean
                    && !p.fence_pending
                    && p.fence_retry_at.is_none_or(|t| now >= t)
            })
            .map(|(n, _)| *n)
            .collect();
        for n in targets {
            if let Some(p) = self.peers.get_mut(&n) {
                p.fence_pending = true;
                p.fence_retry_at = None;
            }
            warn!(node = %self.me, target = %n, "fencing peer");
            self.event(Event::FenceRequested { node: n });
            self.outputs.push_back(Output::Fence { node: n });
        }
    }

    /// Release grants that are no longer needed and issue new ones.
    pub(super) fn manage_grants(&mut self, now: Timestamp) {
        let fencing = self.model.policy.fencing;
        let blackout_over = now.saturating_since(self.boot) >= self.model.timing.detection_floor();
        for gi in 0..self.groups.len() {
            // Release.
            if let Some(rec) = self.groups[gi].grant {
                let to = rec.grant.node;
                let release = if to == self.me {
                    let g = &self.groups[gi];
                    rec.grant.incarnation != self.incarnation
                        || (g.claim != Some(rec.grant.claim) && g.state == GroupState::Stopped)
                } else {
                    match (self.peers.get(&to), self.liveness.peer(to)) {
                        (Some(p), Some(l)) => {
                            let r = &p.reports[gi];
                            let acked = l.incarnation == rec.grant.incarnation
                                && p.acked_me >= rec.seq
                                && r.claim != Some(rec.grant.claim)
                                && r.state == GroupState::Stopped;
                            let restarted = l.incarnation != rec.grant.incarnation;
                            let dead = l.state != PeerState::Up && (!fencing || p.clean);
                            acked || restarted || dead || p.clean
                        }
                        _ => true,
                    }
                };
                if release {
                    debug!(node = %self.me, group = %self.groups[gi].id, to = %to, "grant released");
                    self.groups[gi].grant = None;
                    self.hb_needed = true;
                }
            }
            // Issue.
            if self.groups[gi].grant.is_some() || !blackout_over {
                continue;
            }
            let Some(t) = self.targets[gi] else { continue };
            let grant = if t == self.me {
                self.groups[gi].claim.map(|c| Grant {
                    node: t,
                    incarnation: self.incarnation,
                    claim: c,
                })
            } else {
                let (Some(p), true) = (self.peers.get(&t), self.peer_up(t)) else {
                    continue;
                };
                p.reports[gi].claim.map(|c| Grant {
                    node: t,
                    incarnation: p.incarnation,
                    claim: c,
                })
            };
            let Some(grant) = grant else { continue };
            let seq = self.seq + 1;
            self.groups[gi].grant = Some(GrantRec { grant, seq });
            self.hb_needed = true;
            let gid = self.groups[gi].id.clone();
            info!(node = %self.me, group = %gid, to = %t, "group granted");
            self.event(Event::GroupGranted {
                group: gid.clone(),
                to: t,
            });
            if t != self.me {
                self.outputs.push_back(Output::Send {
                    to: Some(t),
                    link: None,
                    msg: Message::TakeoverResponse(TakeoverResponse {
                        group: gid,
                        incarnation: self.incarnation,
                        claim: grant.claim,
                        granted: true,
                        grant_seq: seq,
                    }),
                });
            }
        }
    }

    /// Start or withdraw a claim on a group.
    pub(super) fn manage_claim(&mut self, gi: usize) {
        let want = self.want_run(gi);
        let g = &mut self.groups[gi];
        if want && g.claim.is_none() && !g.fatal {
            let c = self.next_claim;
            self.next_claim += 1;
            g.claim = Some(c);
            g.claim_sent_at = None;
            g.responses.clear();
            g.granted_by.clear();
            self.hb_needed = true;
            let gid = g.id.clone();
            info!(node = %self.me, group = %gid, claim = c, "claiming group");
            self.event(Event::GroupClaimed { group: gid });
        } else if !want
            && g.claim.is_some()
            && g.state == GroupState::Stopped
            && g.pending.is_none()
        {
            g.claim = None;
            g.responses.clear();
            self.hb_needed = true;
        }
    }

    pub(super) fn want_run(&self, gi: usize) -> bool {
        self.targets[gi] == Some(self.me)
            && self.quorum.quorate
            && !self.standby
            && !self.liveness.any_unknown()
            && !self.groups[gi].fatal
            // A restarted node may still be bound by grants of its previous life for a while.
            && self.now.saturating_since(self.boot) >= self.model.timing.detection_floor()
    }

    /// Peers whose grant for our current claim on `gi` we hold.
    pub(super) fn granters(&self, gi: usize) -> Vec<NodeId> {
        let g = &self.groups[gi];
        let Some(c) = g.claim else { return Vec::new() };
        let mine = Grant {
            node: self.me,
            incarnation: self.incarnation,
            claim: c,
        };
        let mut out = Vec::new();
        if g.grant.map(|r| r.grant) == Some(mine) {
            out.push(self.me);
        }
        for (&n, p) in &self.peers {
            let via_hb = p.reports[gi].grant == Some(mine);
            let via_resp = g.responses.get(&n).is_some_and(|&s| s > p.hb_seq);
            if via_hb || via_resp {
                out.push(n);
            }
        }
        out
    }

    /// Do we hold enough grants to run `gi`?
    /// `holding`: keeping a running group rather than starting one. Without majority grants a
    /// holder needs only its own grant: a peer that just (re)joined has not granted yet and
    /// grants to the holder later (its placement keeps the group where it runs), so requiring
    /// every live peer's grant here would stop a running group for nothing (auto_failback off
    /// would then not hold). Safe because nobody else can start the group meanwhile: a start
    /// needs the grant of every live peer, and the holder's one grant is to itself.
    pub(super) fn grants_ok(&self, gi: usize, now: Timestamp, holding: bool) -> bool {
        let granters = self.granters(gi);
        if !granters.contains(&self.me) {
            return false;
        }
        if self.majority_grants() {
            let valid: Vec<NodeId> = granters
                .into_iter()
                .filter(|&n| {
                    n == self.me
                        || (self.peer_up(n)
                            && self
                                .peers
                                .get(&n)
                                .and_then(|p| p.lease_until)
                                .is_some_and(|u| now < u))
                })
                .collect();
            quorum::is_majority(quorum::votes(&self.model, &valid), self.model.total_votes())
        } else {
            holding || self.liveness.up_peers().all(|n| granters.contains(&n))
        }
    }

    /// With fencing: every lost peer must be fenced before we start anything.
    pub(super) fn fencing_clear(&self) -> bool {
        !self.model.policy.fencing || self.peers.iter().all(|(n, p)| self.peer_up(*n) || p.clean)
    }

    /// Re-send TakeoverRequests every keepalive for claims not yet fully granted.
    pub(super) fn resend_requests(&mut self, now: Timestamp) {
        let ka = self.model.timing.keepalive;
        for gi in 0..self.groups.len() {
            let g = &self.groups[gi];
            let Some(c) = g.claim else { continue };
            if g.state != GroupState::Stopped
                || g.claim_sent_at
                    .is_some_and(|t| now.saturating_since(t) < ka)
            {
                continue;
            }
            let granters = self.granters(gi);
            let ask: Vec<NodeId> = self
                .liveness
                .up_peers()
                .filter(|n| !granters.contains(n))
                .collect();
            if ask.is_empty() {
                continue;
            }
            let gid = g.id.clone();
            self.groups[gi].claim_sent_at = Some(now);
            for n in ask {
                self.outputs.push_back(Output::Send {
                    to: Some(n),
                    link: None,
                    msg: Message::TakeoverRequest(TakeoverRequest {
                        group: gid.clone(),
                        incarnation: self.incarnation,
                        claim: c,
                    }),
                });
            }
        }
    }
}
