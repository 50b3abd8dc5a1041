//! Running groups on this node: deciding stops and starts, issuing resource actions in order
//! (start left to right, stop right to left, roll back failed starts), monitors, standby.

use super::*;

impl Node {
    pub(super) fn on_action_done(
        &mut self,
        now: Timestamp,
        gi: usize,
        ri: usize,
        op: ResourceOp,
        code: OcfCode,
    ) {
        let nres = self.model.groups[gi].resources.len();
        let rid = self.model.groups[gi].resources[ri].clone();
        let severity = match op {
            ResourceOp::Monitor => match code {
                OcfCode::Success | OcfCode::RunningPromoted => Severity::Ok,
                c => c.severity(op).max(Severity::Soft),
            },
            _ => code.severity(op),
        };
        let gid = self.groups[gi].id.clone();
        if severity != Severity::Ok {
            warn!(node = %self.me, group = %gid, resource = %rid, %op, ?code, "resource operation failed");
            self.event(Event::GroupFailed {
                group: gid.clone(),
                resource: rid.clone(),
                op,
                code,
            });
        }
        self.dirty = true;
        self.hb_needed = true;
        let g = &mut self.groups[gi];
        match op {
            ResourceOp::Start => {
                if severity == Severity::Ok {
                    g.step = ri + 1;
                    if g.step >= nres {
                        g.state = GroupState::Running;
                        let interval: Vec<Option<Duration>> = self.model.groups[gi]
                            .resources
                            .iter()
                            .map(|r| self.model.resources.get(r).and_then(|s| s.monitor_interval))
                            .collect();
                        for (d, i) in g.monitor_due.iter_mut().zip(interval) {
                            *d = i.map(|i| now + i);
                        }
                        info!(node = %self.me, group = %gid, "group running");
                        self.event(Event::GroupRunning { group: gid });
                    }
                } else {
                    g.failures.push(now);
                    match severity {
                        Severity::Hard => g.banned = true,
                        Severity::Fatal => g.fatal = true,
                        // Pacemaker's start-failure-is-fatal: without a migration-threshold a
                        // failed start bans the node.
                        _ if self.model.policy.migration_threshold.is_none() => g.banned = true,
                        _ => {}
                    }
                    // Roll back: stop the failed member and those before it, right to left.
                    g.state = GroupState::Stopping;
                    g.step = ri + 1;
                    g.retry_at = Some(now + self.model.timing.keepalive);
                    self.event(Event::GroupStopping {
                        group: gid,
                        reason: StopReason::Rollback,
                    });
                }
            }
            ResourceOp::Stop => {
                if severity == Severity::Ok {
                    g.step = ri;
                    if g.step == 0 {
                        g.state = GroupState::Stopped;
                        info!(node = %self.me, group = %gid, "group stopped");
                        self.event(Event::GroupStopped { group: gid });
                    }
                } else {
                    // A failed stop leaves the group possibly active: keep it blocked here.
                    g.state = GroupState::Failed;
                    g.step = ri + 1;
                }
            }
            ResourceOp::Monitor => {
                if severity == Severity::Ok {
                    let i = self
                        .model
                        .resources
                        .get(&self.model.groups[gi].resources[ri])
                        .and_then(|s| s.monitor_interval);
                    g.monitor_due[ri] = i.map(|i| now + i);
                } else if g.state == GroupState::Running {
                    g.failures.push(now);
                    match severity {
                        Severity::Hard => g.banned = true,
                        Severity::Fatal => g.fatal = true,
                        _ => {}
                    }
                    g.restart = true;
                    g.state = GroupState::Stopping;
                    g.step = nres;
                    for d in &mut g.monitor_due {
                        *d = None;
                    }
                    self.event(Event::GroupStopping {
                        group: gid,
                        reason: StopReason::Restart,
                    });
                }
            }
        }
    }

    /// Mandatory order: every `first` of `gi` must run somewhere.
    pub(super) fn order_ok(&self, gi: usize) -> bool {
        let id = &self.groups[gi].id;
        self.model.constraints.iter().all(|c| match c {
            Constraint::Order {
                first,
                then,
                kind: OrderKind::Mandatory,
            } if then == id => match self.groups.iter().position(|g| &g.id == first) {
                Some(fi) => {
                    self.location(fi).is_some() && self.groups[fi].state != GroupState::Starting
                }
                None => true,
            },
            _ => true,
        })
    }

    pub(super) fn decide(&self, gi: usize, now: Timestamp) -> Want {
        let g = &self.groups[gi];
        let frozen =
            !self.quorum.quorate && self.model.policy.no_quorum_policy == NoQuorumPolicy::Freeze;
        match g.state {
            GroupState::Starting | GroupState::Running => {
                if frozen {
                    return Want::Nothing;
                }
                if self.standby {
                    Want::Stop(StopReason::Standby)
                } else if !self.quorum.quorate {
                    Want::Stop(StopReason::NoQuorum)
                } else if g.fatal
                    || g.banned
                    || self.targets[gi].is_none() && self.failcount(gi) > 0
                {
                    Want::Stop(StopReason::Failure)
                } else if !self.grants_ok(gi, now, true) {
                    // The leases behind our grants ran out: another node may get the group.
                    if self.model.policy.no_quorum_policy == NoQuorumPolicy::Freeze {
                        Want::Nothing
                    } else {
                        Want::Stop(StopReason::NoQuorum)
                    }
                } else if let Some(t) = self.targets[gi].filter(|&t| t != self.me) {
                    // Takeover handshake: hand over only once the new node asks for it.
                    let asks = self.peer_up(t)
                        && self
                            .peers
                            .get(&t)
                            .is_some_and(|p| p.reports[gi].claim.is_some());
                    if asks || g.last_request.is_some_and(|(n, _)| n == t) {
                        Want::Stop(StopReason::Moved)
                    } else {
                        Want::Nothing
                    }
                } else {
                    Want::Nothing
                }
            }
            GroupState::Stopped => {
                if self.want_run(gi)
                    && g.retry_at.is_none_or(|t| now >= t)
                    && self.grants_ok(gi, now, false)
                    && self.fencing_clear()
                    && self.order_ok(gi)
                {
                    Want::Start
                } else {
                    Want::Nothing
                }
            }
            GroupState::Stopping | GroupState::Failed => Want::Nothing,
        }
    }

    pub(super) fn drive_groups(&mut self, now: Timestamp) {
        // Continue transitions in progress, then begin stops (reverse order), then starts.
        for k in 0..self.order.len() {
            let gi = self.order[k];
            if self.groups[gi].pending.is_none() {
                self.continue_group(now, gi);
            }
        }
        let busy = self
            .groups
            .iter()
            .any(|g| matches!(g.state, GroupState::Starting | GroupState::Stopping));
        if !busy {
            for k in (0..self.order.len()).rev() {
                let gi = self.order[k];
                if self.groups[gi].pending.is_some() && self.groups[gi].state != GroupState::Running
                {
                    continue;
                }
                if let Want::Stop(reason) = self.decide(gi, now) {
                    if self.groups[gi].pending.is_some() {
                        continue; // a monitor is running; stop after it.
                    }
                    self.begin_stop(gi, reason);
                    return;
                }
            }
            for k in 0..self.order.len() {
                let gi = self.order[k];
                if self.groups[gi].pending.is_none()
                    && let Want::Start = self.decide(gi, now)
                {
                    self.begin_start(gi);
                    return;
                }
            }
        }
        self.run_monitors(now);
    }

    pub(super) fn begin_stop(&mut self, gi: usize, reason: StopReason) {
        let nres = self.model.groups[gi].resources.len();
        if reason == StopReason::Moved {
            // The claim in the new node's heartbeat may arrive before its TakeoverRequest: it
            // is the same request, report it once.
            let asker = self.targets[gi].and_then(|t| {
                let c = self.peers.get(&t)?.reports[gi].claim?;
                Some((t, c))
            });
            if let Some((t, c)) = asker
                && self.groups[gi].last_request != Some((t, c))
            {
                self.groups[gi].last_request = Some((t, c));
                let group = self.groups[gi].id.clone();
                self.event(Event::TakeoverRequested { group, from: t });
            }
        }
        let g = &mut self.groups[gi];
        g.step = if g.state == GroupState::Starting {
            g.step
        } else {
            nres
        };
        g.state = GroupState::Stopping;
        for d in &mut g.monitor_due {
            *d = None;
        }
        if reason != StopReason::Restart {
            g.restart = false;
        }
        let gid = g.id.clone();
        info!(node = %self.me, group = %gid, ?reason, "stopping group");
        self.event(Event::GroupStopping { group: gid, reason });
        self.hb_needed = true;
        self.continue_group(self.now, gi);
    }

    pub(super) fn begin_start(&mut self, gi: usize) {
        let gid = self.groups[gi].id.clone();
        if let Some(from) = self.groups[gi].last_holder.filter(|&h| h != self.me)
            && !self.peer_up(from)
        {
            info!(node = %self.me, group = %gid, %from, "failover");
            self.event(Event::Failover {
                group: gid.clone(),
                from,
                to: self.me,
            });
        }
        let g = &mut self.groups[gi];
        g.state = GroupState::Starting;
        g.step = 0;
        g.restart = false;
        g.last_holder = Some(self.me);
        info!(node = %self.me, group = %gid, "starting group");
        self.event(Event::GroupStarting { group: gid });
        self.hb_needed = true;
        self.continue_group(self.now, gi);
    }

    /// Issue the next action of a transition in progress, or finish it.
    pub(super) fn continue_group(&mut self, now: Timestamp, gi: usize) {
        let nres = self.model.groups[gi].resources.len();
        match self.groups[gi].state {
            GroupState::Starting => {
                let step = self.groups[gi].step;
                if step >= nres {
                    self.groups[gi].state = GroupState::Running;
                    let gid = self.groups[gi].id.clone();
                    self.event(Event::GroupRunning { group: gid });
                } else if self.decide_abort_start(gi, now) {
                    // Lost the right to run while starting: roll back.
                    self.groups[gi].state = GroupState::Stopping;
                    let gid = self.groups[gi].id.clone();
                    self.event(Event::GroupStopping {
                        group: gid,
                        reason: StopReason::NoQuorum,
                    });
                    self.continue_group(now, gi);
                } else {
                    self.issue(gi, step, ResourceOp::Start);
                }
            }
            GroupState::Stopping => {
                let step = self.groups[gi].step;
                if step == 0 {
                    self.groups[gi].state = GroupState::Stopped;
                    let gid = self.groups[gi].id.clone();
                    info!(node = %self.me, group = %gid, "group stopped");
                    self.event(Event::GroupStopped { group: gid });
                    self.hb_needed = true;
                    self.dirty = true;
                } else {
                    self.issue(gi, step - 1, ResourceOp::Stop);
                }
            }
            _ => {}
        }
    }

    pub(super) fn decide_abort_start(&self, gi: usize, now: Timestamp) -> bool {
        matches!(self.decide(gi, now), Want::Stop(_))
    }

    pub(super) fn issue(&mut self, gi: usize, ri: usize, op: ResourceOp) {
        let rid = self.model.groups[gi].resources[ri].clone();
        let Some(spec) = self.model.resources.get(&rid) else {
            return;
        };
        let timeout = match op {
            ResourceOp::Start => spec.start_timeout,
            ResourceOp::Stop => spec.stop_timeout,
            ResourceOp::Monitor => spec.monitor_timeout,
        };
        let id = ActionId(self.next_action);
        self.next_action += 1;
        self.actions.insert(id, (gi, ri, op));
        self.groups[gi].pending = Some((id, op));
        debug!(node = %self.me, group = %self.groups[gi].id, resource = %rid, %op, "action");
        self.outputs.push_back(Output::Action(ResourceAction {
            id,
            group: self.groups[gi].id.clone(),
            resource: rid,
            op,
            timeout,
        }));
    }

    pub(super) fn run_monitors(&mut self, now: Timestamp) {
        for gi in 0..self.groups.len() {
            let g = &self.groups[gi];
            if g.state != GroupState::Running || g.pending.is_some() {
                continue;
            }
            if let Some(ri) = g
                .monitor_due
                .iter()
                .position(|d| d.is_some_and(|t| now >= t))
            {
                self.groups[gi].monitor_due[ri] = None;
                self.issue(gi, ri, ResourceOp::Monitor);
            }
        }
    }

    pub(super) fn check_standby(&mut self) {
        if !self.standby || self.standby_reported {
            return;
        }
        let idle = self
            .groups
            .iter()
            .all(|g| g.state == GroupState::Stopped && g.claim.is_none() && g.pending.is_none());
        if idle {
            self.standby_reported = true;
            info!(node = %self.me, "standby done");
            self.event(Event::StandbyDone);
        }
    }
}
