//! The sans-IO health policy: probe outcomes in, IPVS requests out.

use std::collections::HashMap;

use super::idhash::IdMap;

use super::{CheckKind, FailureAction, MonitorConfig, MonitoredService, ProbeKey};
use crate::model::{Destination, VirtualService};
use crate::netlink::Request;
use crate::reconcile;

/// Identifier of a shared probe (never reused within a [`Monitor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeId(pub u64);

/// Result of one probe run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Healthy.
    Up,
    /// Healthy with this weight (misc_dynamic).
    UpWithWeight(u32),
    /// Failed, with the reason.
    Down(String),
}

#[derive(Debug, Clone)]
struct ProbeState {
    key: ProbeKey,
    up: bool,
    successes: u32,
    failures: u32,
    weight: Option<u32>,
    last_error: Option<String>,
}

/// What a configuration reload changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reconfigured {
    /// Table edits to apply.
    pub changes: Vec<Request>,
    /// New probes to schedule.
    pub added: Vec<(ProbeId, ProbeKey)>,
    /// Probes to stop.
    pub removed: Vec<ProbeId>,
}

/// Health policy over a set of monitored services.
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    probes: IdMap<ProbeId, ProbeState>,
    by_key: HashMap<ProbeKey, ProbeId>,
    /// Which services use a probe (indices into `config.services`).
    users: IdMap<ProbeId, Vec<usize>>,
    /// Probe of each real server of each service (None = unchecked).
    real_probe: Vec<Vec<Option<ProbeId>>>,
    desired: Vec<VirtualService>,
    next_id: u64,
}

fn static_up(kind: &CheckKind) -> Option<bool> {
    match kind {
        CheckKind::AlwaysUp => Some(true),
        CheckKind::AlwaysDown => Some(false),
        _ => None,
    }
}

impl Monitor {
    /// A monitor for `config`. Call [`Monitor::desired_table`] for the initial table and
    /// [`Monitor::probes`] for what to schedule.
    pub fn new(config: MonitorConfig) -> Self {
        let mut m = Monitor {
            config: MonitorConfig::default(),
            probes: IdMap::default(),
            by_key: HashMap::new(),
            users: IdMap::default(),
            real_probe: Vec::new(),
            desired: Vec::new(),
            next_id: 0,
        };
        m.reconfigure(config);
        m
    }

    /// The table the monitor wants now.
    pub fn desired_table(&self) -> Vec<VirtualService> {
        self.desired.clone()
    }

    /// Probes that need running (static ones, always up/down, are not listed).
    pub fn probes(&self) -> Vec<(ProbeId, ProbeKey)> {
        let mut v: Vec<_> = self
            .probes
            .iter()
            .filter(|(_, p)| static_up(&p.key.spec.kind).is_none())
            .map(|(id, p)| (*id, p.key.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// The probe's key.
    pub fn probe_key(&self, id: ProbeId) -> Option<&ProbeKey> {
        self.probes.get(&id).map(|p| &p.key)
    }

    /// Whether the probe currently counts as up.
    pub fn is_up(&self, id: ProbeId) -> Option<bool> {
        self.probes.get(&id).map(|p| p.up)
    }

    /// Last failure reason of a probe.
    pub fn last_error(&self, id: ProbeId) -> Option<&str> {
        self.probes.get(&id).and_then(|p| p.last_error.as_deref())
    }

    /// Number of distinct probes.
    pub fn probe_count(&self) -> usize {
        self.probes.len()
    }

    fn compute_service(&self, i: usize) -> VirtualService {
        let ms: &MonitoredService = &self.config.services[i];
        let mut dests: Vec<Destination> = Vec::new();
        let mut any_up = false;
        for (r, pid) in ms.reals.iter().zip(&self.real_probe[i]) {
            let (up, weight) = match pid.and_then(|p| self.probes.get(&p)) {
                None => (true, r.dest.weight),
                Some(p) => (p.up, p.weight.unwrap_or(r.dest.weight)),
            };
            if up {
                any_up = true;
                dests.push(r.dest.with_weight(weight));
            } else if ms.on_failure == FailureAction::Quiesce {
                dests.push(r.dest.with_weight(0));
            }
        }
        if !any_up && let Some(fb) = ms.fallback {
            match dests.iter_mut().find(|d| d.addr == fb.addr) {
                Some(d) => *d = fb,
                None => dests.push(fb),
            }
        }
        VirtualService {
            service: ms.service.clone(),
            dests,
        }
    }

    /// Feed one probe result; returns the table edits it causes (often none).
    pub fn on_result(&mut self, id: ProbeId, outcome: ProbeOutcome) -> Vec<Request> {
        let Some(p) = self.probes.get_mut(&id) else {
            return Vec::new();
        };
        let (rise, fall) = (p.key.spec.rise.max(1), p.key.spec.fall.max(1));
        let before = (p.up, p.weight);
        match outcome {
            ProbeOutcome::Up | ProbeOutcome::UpWithWeight(_) => {
                p.failures = 0;
                p.successes = p.successes.saturating_add(1);
                if let ProbeOutcome::UpWithWeight(w) = outcome {
                    p.weight = Some(w);
                } else {
                    p.weight = None;
                }
                if !p.up && p.successes >= rise {
                    p.up = true;
                    p.last_error = None;
                    tracing::info!(target = %p.key.target, "real server up");
                }
            }
            ProbeOutcome::Down(reason) => {
                p.successes = 0;
                p.failures = p.failures.saturating_add(1);
                if p.up && p.failures >= fall {
                    p.up = false;
                    tracing::warn!(target = %p.key.target, %reason, "real server down");
                }
                p.last_error = Some(reason);
            }
        }
        if (p.up, p.weight) == before {
            return Vec::new();
        }
        let users = self.users.get(&id).cloned().unwrap_or_default();
        let old: Vec<VirtualService> = users.iter().map(|&i| self.desired[i].clone()).collect();
        let new: Vec<VirtualService> = users.iter().map(|&i| self.compute_service(i)).collect();
        for (&i, vs) in users.iter().zip(&new) {
            self.desired[i] = vs.clone();
        }
        reconcile::diff(&old, &new)
    }

    /// Replace the configuration. Probes whose (endpoint, check) is unchanged keep their state
    /// (no flapping on reload); the returned changes are the minimal table diff.
    pub fn reconfigure(&mut self, config: MonitorConfig) -> Reconfigured {
        let old_desired = std::mem::take(&mut self.desired);
        let mut keep: IdMap<ProbeId, ProbeState> = IdMap::default();
        let mut by_key: HashMap<ProbeKey, ProbeId> = HashMap::new();
        let mut users: IdMap<ProbeId, Vec<usize>> = IdMap::default();
        let mut real_probe = Vec::with_capacity(config.services.len());
        let mut added = Vec::new();
        for (i, ms) in config.services.iter().enumerate() {
            let mut rp = Vec::with_capacity(ms.reals.len());
            for r in &ms.reals {
                let Some(spec) = &r.check else {
                    rp.push(None);
                    continue;
                };
                let key = ProbeKey {
                    target: r.check_addr.unwrap_or(r.dest.addr),
                    spec: spec.clone(),
                };
                let id = match by_key.get(&key) {
                    Some(id) => *id,
                    None => {
                        let (id, state) = match self
                            .by_key
                            .get(&key)
                            .and_then(|id| self.probes.remove(id).map(|s| (*id, s)))
                        {
                            Some(found) => found,
                            None => {
                                self.next_id += 1;
                                let id = ProbeId(self.next_id);
                                let up = static_up(&spec.kind).unwrap_or(!config.start_down);
                                if static_up(&spec.kind).is_none() {
                                    added.push((id, key.clone()));
                                }
                                let st = ProbeState {
                                    key: key.clone(),
                                    up,
                                    successes: 0,
                                    failures: 0,
                                    weight: None,
                                    last_error: None,
                                };
                                (id, st)
                            }
                        };
                        keep.insert(id, state);
                        by_key.insert(key, id);
                        id
                    }
                };
                let u = users.entry(id).or_default();
                if u.last() != Some(&i) {
                    u.push(i);
                }
                rp.push(Some(id));
            }
            real_probe.push(rp);
        }
        let mut removed: Vec<ProbeId> = self
            .probes
            .iter()
            .filter(|(_, s)| static_up(&s.key.spec.kind).is_none())
            .map(|(id, _)| *id)
            .collect();
        removed.sort();
        self.probes = keep;
        self.by_key = by_key;
        self.users = users;
        self.real_probe = real_probe;
        self.config = config;
        self.desired = (0..self.config.services.len())
            .map(|i| self.compute_service(i))
            .collect();
        let changes = reconcile::diff(&old_desired, &self.desired);
        Reconfigured {
            changes,
            added,
            removed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CheckSpec, MonitoredReal};
    use super::*;
    use crate::model::*;
    use std::time::Duration;

    fn spec(fall: u32, rise: u32) -> CheckSpec {
        CheckSpec {
            kind: CheckKind::Connect,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise,
            fall,
        }
    }

    fn real(addr: &str, w: u32, check: Option<CheckSpec>) -> MonitoredReal {
        MonitoredReal {
            dest: Destination::new(addr.parse().unwrap(), Forward::Route).with_weight(w),
            check,
            check_addr: None,
        }
    }

    fn svc(
        vip: &str,
        reals: Vec<MonitoredReal>,
        fallback: Option<&str>,
        on_failure: FailureAction,
    ) -> MonitoredService {
        MonitoredService {
            service: Service::new(ServiceKey::tcp(vip.parse().unwrap()), Scheduler::Wrr),
            reals,
            fallback: fallback.map(|f| Destination::new(f.parse().unwrap(), Forward::Masq)),
            on_failure,
        }
    }

    fn config() -> MonitorConfig {
        let s = spec(2, 2);
        MonitorConfig {
            services: vec![
                svc(
                    "10.0.0.1:80",
                    vec![
                        real("10.0.1.1:80", 3, Some(s.clone())),
                        real("10.0.1.2:80", 1, Some(s.clone())),
                    ],
                    Some("127.0.0.1:80"),
                    FailureAction::Quiesce,
                ),
                svc(
                    "10.0.0.2:80",
                    vec![real("10.0.1.1:80", 5, Some(s.clone()))],
                    None,
                    FailureAction::Remove,
                ),
            ],
            start_down: false,
        }
    }

    fn id_of(m: &Monitor, addr: &str) -> ProbeId {
        m.probes()
            .into_iter()
            .find(|(_, k)| k.target == addr.parse().unwrap())
            .unwrap()
            .0
    }

    #[test]
    fn one_probe_per_endpoint_shared_by_services() {
        let m = Monitor::new(config());
        assert_eq!(
            m.probes().len(),
            2,
            "10.0.1.1 is used by two services but probed once"
        );
        let t = m.desired_table();
        assert_eq!(t[0].dests.len(), 2);
        assert_eq!(t[1].dests.len(), 1);
    }

    #[test]
    fn fall_rise_quiesce_remove_and_fallback() {
        let mut m = Monitor::new(config());
        let a = id_of(&m, "10.0.1.1:80");
        let b = id_of(&m, "10.0.1.2:80");
        let k1 = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        let k2 = ServiceKey::tcp("10.0.0.2:80".parse().unwrap());
        // One failure is below fall=2: nothing.
        assert!(
            m.on_result(a, ProbeOutcome::Down("refused".into()))
                .is_empty()
        );
        // Second failure: quiesced in service 1, removed from service 2 (one probe, both services).
        let ch = m.on_result(a, ProbeOutcome::Down("refused".into()));
        let d1 = Destination::new("10.0.1.1:80".parse().unwrap(), Forward::Route).with_weight(0);
        assert_eq!(
            ch,
            vec![
                Request::DelDest(k2, "10.0.1.1:80".parse().unwrap()),
                Request::SetDest(k1, d1)
            ]
        );
        assert_eq!(m.last_error(a), Some("refused"));
        // b down too: fallback enters service 1.
        m.on_result(b, ProbeOutcome::Down("timeout".into()));
        let ch = m.on_result(b, ProbeOutcome::Down("timeout".into()));
        let fb = Destination::new("127.0.0.1:80".parse().unwrap(), Forward::Masq);
        assert!(ch.contains(&Request::NewDest(k1, fb)), "{ch:?}");
        // a needs rise=2 successes to return; then the fallback leaves and weights come back.
        assert!(m.on_result(a, ProbeOutcome::Up).is_empty());
        let ch = m.on_result(a, ProbeOutcome::Up);
        let a3 = Destination::new("10.0.1.1:80".parse().unwrap(), Forward::Route).with_weight(3);
        let a5 = Destination::new("10.0.1.1:80".parse().unwrap(), Forward::Route).with_weight(5);
        assert!(ch.contains(&Request::DelDest(k1, fb.addr)), "{ch:?}");
        assert!(ch.contains(&Request::SetDest(k1, a3)), "{ch:?}");
        assert!(ch.contains(&Request::NewDest(k2, a5)), "{ch:?}");
    }

    #[test]
    fn dynamic_weight_applies_while_up() {
        let mut m = Monitor::new(config());
        let a = id_of(&m, "10.0.1.1:80");
        let ch = m.on_result(a, ProbeOutcome::UpWithWeight(7));
        assert_eq!(ch.len(), 2);
        assert!(
            ch.iter()
                .all(|r| matches!(r, Request::SetDest(_, d) if d.weight == 7))
        );
        assert!(m.on_result(a, ProbeOutcome::UpWithWeight(7)).is_empty());
    }

    #[test]
    fn reload_keeps_state_of_unchanged_probes() {
        let mut m = Monitor::new(config());
        let a = id_of(&m, "10.0.1.1:80");
        m.on_result(a, ProbeOutcome::Down("x".into()));
        m.on_result(a, ProbeOutcome::Down("x".into()));
        let mut cfg = config();
        // Drop service 2, add a real server to service 1.
        cfg.services.remove(1);
        cfg.services[0]
            .reals
            .push(real("10.0.1.3:80", 1, Some(spec(2, 2))));
        let r = m.reconfigure(cfg.clone());
        let k2 = ServiceKey::tcp("10.0.0.2:80".parse().unwrap());
        let k1 = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        assert!(
            r.changes.contains(&Request::DelService(k2)),
            "{:?}",
            r.changes
        );
        assert_eq!(r.changes.len(), 2, "{:?}", r.changes);
        assert!(
            matches!(&r.changes[1], Request::NewDest(k, d) if *k == k1 && d.addr.port() == 80 && d.weight == 1)
        );
        assert_eq!(r.added.len(), 1);
        assert!(r.removed.is_empty());
        // a is still down after the reload (no flap back to up).
        assert_eq!(m.is_up(a), Some(false));
        // Same config again: nothing.
        let r = m.reconfigure(cfg);
        assert!(r.changes.is_empty() && r.added.is_empty() && r.removed.is_empty());
    }
}
