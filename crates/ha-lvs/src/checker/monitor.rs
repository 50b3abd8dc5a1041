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

/// What [`Monitor::on_result`] reads and writes for every result, kept apart from the rest
/// so ten thousand of them fit in a few hundred kilobytes of cache.
#[derive(Debug, Clone)]
struct Hot {
    id: ProbeId,
    up: bool,
    successes: u32,
    failures: u32,
    rise: u32,
    fall: u32,
    weight: Option<u32>,
}

/// The rest of a probe's state.
#[derive(Debug, Clone)]
struct Cold {
    key: ProbeKey,
    last_error: Option<String>,
}

/// Probe states in dense slots. A [`ProbeId`] carries its slot in the low 32 bits and a
/// counter in the high ones, so a lookup is an index and a compare, not a hash; ids stay
/// unique although slots are reused.
#[derive(Debug, Default)]
struct ProbeTable {
    hot: Vec<Option<Hot>>,
    cold: Vec<Option<Cold>>,
    free: Vec<u32>,
    len: usize,
}

impl ProbeTable {
    fn slot(&self, id: ProbeId) -> Option<usize> {
        let slot = id.0 as u32 as usize;
        self.hot
            .get(slot)?
            .as_ref()
            .is_some_and(|h| h.id == id)
            .then_some(slot)
    }

    fn get(&self, id: ProbeId) -> Option<(&Hot, &Cold)> {
        let i = self.slot(id)?;
        Some((self.hot[i].as_ref()?, self.cold[i].as_ref()?))
    }

    fn contains(&self, id: ProbeId) -> bool {
        self.slot(id).is_some()
    }

    /// Store a new probe under a fresh id made from `counter`.
    fn insert(&mut self, counter: u64, key: ProbeKey, up: bool) -> ProbeId {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.hot.push(None);
                self.cold.push(None);
                (self.hot.len() - 1) as u32
            }
        };
        let id = ProbeId((counter << 32) | u64::from(slot));
        self.hot[slot as usize] = Some(Hot {
            id,
            up,
            successes: 0,
            failures: 0,
            rise: key.spec.rise.max(1),
            fall: key.spec.fall.max(1),
            weight: None,
        });
        self.cold[slot as usize] = Some(Cold {
            key,
            last_error: None,
        });
        self.len += 1;
        id
    }

    fn remove(&mut self, id: ProbeId) {
        if let Some(i) = self.slot(id) {
            self.hot[i] = None;
            self.cold[i] = None;
            self.free.push(i as u32);
            self.len -= 1;
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&Hot, &Cold)> {
        self.hot
            .iter()
            .zip(&self.cold)
            .filter_map(|(h, c)| Some((h.as_ref()?, c.as_ref()?)))
    }
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
    probes: ProbeTable,
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
            probes: ProbeTable::default(),
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
            .filter(|(_, c)| static_up(&c.key.spec.kind).is_none())
            .map(|(h, c)| (h.id, c.key.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// The probe's key.
    pub fn probe_key(&self, id: ProbeId) -> Option<&ProbeKey> {
        self.probes.get(id).map(|(_, c)| &c.key)
    }

    /// Load the states of `ids` into the cache ahead of a [`Monitor::on_result`] for each, and
    /// count how many are up. The loads are independent, so their cache misses overlap, where
    /// the updates would wait for them one at a time (with ten thousand probes a state is
    /// rarely still cached from its previous result).
    pub fn warm(&self, ids: impl IntoIterator<Item = ProbeId>) -> usize {
        ids.into_iter()
            .filter(|id| {
                self.probes
                    .slot(*id)
                    .and_then(|i| self.probes.hot[i].as_ref())
                    .is_some_and(|h| h.up)
            })
            .count()
    }

    /// Whether the probe currently counts as up.
    pub fn is_up(&self, id: ProbeId) -> Option<bool> {
        self.probes.get(id).map(|(h, _)| h.up)
    }

    /// Last failure reason of a probe.
    pub fn last_error(&self, id: ProbeId) -> Option<&str> {
        self.probes
            .get(id)
            .and_then(|(_, c)| c.last_error.as_deref())
    }

    /// Number of distinct probes.
    pub fn probe_count(&self) -> usize {
        self.probes.len
    }

    fn compute_service(&self, i: usize) -> VirtualService {
        let ms: &MonitoredService = &self.config.services[i];
        let mut dests: Vec<Destination> = Vec::new();
        let mut any_up = false;
        for (r, pid) in ms.reals.iter().zip(&self.real_probe[i]) {
            let (up, weight) = match pid.and_then(|p| self.probes.get(p)) {
                None => (true, r.dest.weight),
                Some((h, _)) => (h.up, h.weight.unwrap_or(r.dest.weight)),
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
        let Some(slot) = self.probes.slot(id) else {
            return Vec::new();
        };
        let Some(p) = self.probes.hot[slot].as_mut() else {
            return Vec::new();
        };
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
                if !p.up && p.successes >= p.rise {
                    p.up = true;
                    if let Some(c) = self.probes.cold[slot].as_mut() {
                        c.last_error = None;
                        tracing::info!(target = %c.key.target, "real server up");
                    }
                }
            }
            ProbeOutcome::Down(reason) => {
                p.successes = 0;
                p.failures = p.failures.saturating_add(1);
                let went_down = p.up && p.failures >= p.fall;
                if went_down {
                    p.up = false;
                }
                if let Some(c) = self.probes.cold[slot].as_mut() {
                    if went_down {
                        tracing::warn!(target = %c.key.target, %reason, "real server down");
                    }
                    c.last_error = Some(reason);
                }
            }
        }
        let p = self.probes.hot[slot].as_ref().map(|p| (p.up, p.weight));
        if p == Some(before) {
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
        // Probes of the old configuration still used by the new one.
        let mut kept: IdMap<ProbeId, ()> = IdMap::default();
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
                        let id = match self
                            .by_key
                            .get(&key)
                            .copied()
                            .filter(|id| self.probes.contains(*id))
                        {
                            Some(found) => found,
                            None => {
                                self.next_id += 1;
                                let up = static_up(&spec.kind).unwrap_or(!config.start_down);
                                let id = self.probes.insert(self.next_id, key.clone(), up);
                                if static_up(&spec.kind).is_none() {
                                    added.push((id, key.clone()));
                                }
                                id
                            }
                        };
                        kept.insert(id, ());
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
        let mut removed: Vec<ProbeId> = Vec::new();
        let mut gone: Vec<ProbeId> = Vec::new();
        for (h, c) in self.probes.iter() {
            if !kept.contains_key(&h.id) {
                gone.push(h.id);
                if static_up(&c.key.spec.kind).is_none() {
                    removed.push(h.id);
                }
            }
        }
        for id in gone {
            self.probes.remove(id);
        }
        removed.sort();
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

    #[test]
    fn ids_stay_unique_when_slots_are_reused() {
        let mut m = Monitor::new(config());
        let a = id_of(&m, "10.0.1.2:80");
        let n = m.probe_count();
        m.on_result(a, ProbeOutcome::Down("gone".into()));
        // Replace the real server behind `a` by another: its slot is freed, then reused.
        let mut cfg = config();
        cfg.services[0].reals[1] = real("10.0.1.9:80", 3, Some(spec(2, 2)));
        let r = m.reconfigure(cfg.clone());
        assert_eq!(r.removed, vec![a]);
        let b = id_of(&m, "10.0.1.9:80");
        assert_ne!(a, b);
        assert_eq!(m.probe_count(), n);
        // The old id names nothing any more: no state, no edits.
        assert_eq!(m.is_up(a), None);
        assert_eq!(m.last_error(a), None);
        assert!(m.on_result(a, ProbeOutcome::Up).is_empty());
        assert_eq!(m.is_up(b), Some(true));
        // warm counts the known ids that are up.
        assert_eq!(m.warm([a, b, b]), 2);
        m.on_result(b, ProbeOutcome::Down("x".into()));
        m.on_result(b, ProbeOutcome::Down("x".into()));
        assert_eq!(m.warm([b]), 0);
        assert_eq!(m.last_error(b), Some("x"));
    }
}
