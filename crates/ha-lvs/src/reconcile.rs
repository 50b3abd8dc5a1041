//! Declarative reconcile: the minimal list of requests turning one table into another.
//!
//! Edits stay edits: a weight, threshold or forwarding change is one `SetDest` (established
//! connections keep their real server), a scheduler or persistence change is one `SetService`.
//! Only what differs is touched, so applying the same table twice changes nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::error::{Error, Result};
use crate::model::{Destination, Forward, ServiceKey, Table, VirtualService};
use crate::netlink::{IpvsClient, Request};

fn index(
    t: &[VirtualService],
) -> BTreeMap<ServiceKey, (&VirtualService, BTreeMap<SocketAddr, &Destination>)> {
    t.iter()
        .map(|vs| {
            (
                vs.service.key,
                (vs, vs.dests.iter().map(|d| (d.addr, d)).collect()),
            )
        })
        .collect()
}

/// Whether the kernel's `current` destination already is `desired`. The kernel turns any
/// forwarding method into Local for an address of the director itself, so a current Local
/// matches any desired method.
fn dest_matches(current: &Destination, desired: &Destination) -> bool {
    if current.forward == Forward::Local {
        current.weight == desired.weight
            && current.u_thresh == desired.u_thresh
            && current.l_thresh == desired.l_thresh
    } else {
        current == desired
    }
}

/// Check a desired table: no service twice, no real server twice in a service.
pub fn validate(table: &[VirtualService]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for vs in table {
        if !seen.insert(vs.service.key) {
            return Err(Error::invalid(format!(
                "service {} appears twice in the table",
                vs.service.key
            )));
        }
        let mut ds = std::collections::HashSet::new();
        for d in &vs.dests {
            if !ds.insert(d.addr) {
                return Err(Error::invalid(format!(
                    "real server {} appears twice in {}",
                    d.addr, vs.service.key
                )));
            }
        }
    }
    Ok(())
}

/// Requests that turn `current` into `desired`, in an order the kernel accepts: destination
/// deletions, service deletions, service edits, service additions, destination additions and
/// edits. Deterministic (sorted by service, then real server).
pub fn diff(current: &[VirtualService], desired: &[VirtualService]) -> Vec<Request> {
    let cur = index(current);
    let want = index(desired);
    let (mut del_dest, mut del_svc, mut set_svc, mut new_svc, mut new_dest, mut set_dest) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (key, (vs, _)) in &cur {
        if !want.contains_key(key) {
            del_svc.push(Request::DelService(vs.service.key));
        }
    }
    for (key, (vs, wdests)) in &want {
        match cur.get(key) {
            None => {
                new_svc.push(Request::NewService(vs.service.clone()));
                for d in wdests.values() {
                    new_dest.push(Request::NewDest(*key, **d));
                }
            }
            Some((cvs, cdests)) => {
                if cvs.service != vs.service {
                    set_svc.push(Request::SetService(vs.service.clone()));
                }
                for (addr, _) in cdests.iter().filter(|(a, _)| !wdests.contains_key(*a)) {
                    del_dest.push(Request::DelDest(*key, *addr));
                }
                for (addr, d) in wdests {
                    match cdests.get(addr) {
                        None => new_dest.push(Request::NewDest(*key, **d)),
                        Some(c) if !dest_matches(c, d) => {
                            set_dest.push(Request::SetDest(*key, **d))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }
    let mut out = del_dest;
    out.extend(del_svc);
    out.extend(set_svc);
    out.extend(new_svc);
    out.extend(new_dest);
    out.extend(set_dest);
    out
}

/// Read the kernel's table, compute the changes to `desired`, apply them (pipelined) and return
/// what was applied.
pub fn apply(client: &mut IpvsClient, desired: &Table) -> Result<Vec<Request>> {
    validate(desired)?;
    let current = client.current()?;
    let changes = diff(&current, desired);
    client.apply(&changes)?;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn table() -> Table {
        let k1 = ServiceKey::tcp("10.0.0.1:80".parse().unwrap());
        let k2 = ServiceKey::Fwmark {
            mark: 3,
            family: Family::V4,
        };
        vec![
            VirtualService {
                service: Service::new(k1, Scheduler::Wrr),
                dests: vec![
                    Destination::new("10.0.1.1:80".parse().unwrap(), Forward::Route),
                    Destination::new("10.0.1.2:80".parse().unwrap(), Forward::Masq).with_weight(5),
                ],
            },
            VirtualService {
                service: Service::new(k2, Scheduler::Rr),
                dests: vec![Destination::new(
                    "10.0.2.1:0".parse().unwrap(),
                    Forward::Route,
                )],
            },
        ]
    }

    #[test]
    fn same_table_changes_nothing() {
        let t = table();
        assert!(diff(&t, &t).is_empty());
        let mut shuffled = t.clone();
        shuffled.reverse();
        shuffled[1].dests.reverse();
        assert!(diff(&t, &shuffled).is_empty());
    }

    #[test]
    fn from_empty_adds_services_then_dests() {
        let t = table();
        let ch = diff(&[], &t);
        assert_eq!(ch.len(), 5);
        assert!(matches!(ch[0], Request::NewService(_)));
        assert!(matches!(ch[1], Request::NewService(_)));
        assert!(ch[2..].iter().all(|r| matches!(r, Request::NewDest(..))));
        // And applying the result of the diff to the empty table yields no further change.
        assert!(diff(&t, &t).is_empty());
    }

    #[test]
    fn weight_change_is_one_edit() {
        let t = table();
        let mut t2 = t.clone();
        t2[0].dests[1].weight = 0;
        let ch = diff(&t, &t2);
        assert_eq!(ch, vec![Request::SetDest(t[0].service.key, t2[0].dests[1])]);
    }

    #[test]
    fn scheduler_change_is_set_service() {
        let t = table();
        let mut t2 = t.clone();
        t2[1].service.scheduler = Scheduler::Sh;
        t2[1].service.sched_flags = SchedFlags(svc_flags::SCHED1);
        let ch = diff(&t, &t2);
        assert_eq!(ch, vec![Request::SetService(t2[1].service.clone())]);
    }

    #[test]
    fn removals_and_additions() {
        let t = table();
        let mut t2 = t.clone();
        t2.remove(1);
        t2[0].dests.remove(0);
        t2[0].dests.push(Destination::new(
            "10.0.1.9:80".parse().unwrap(),
            Forward::Route,
        ));
        let ch = diff(&t, &t2);
        assert_eq!(
            ch,
            vec![
                Request::DelDest(t[0].service.key, "10.0.1.1:80".parse().unwrap()),
                Request::DelService(t[1].service.key),
                Request::NewDest(t[0].service.key, t2[0].dests[1]),
            ]
        );
    }

    #[test]
    fn kernel_local_conversion_is_not_a_change() {
        let t = table();
        let mut cur = t.clone();
        cur[0].dests[0].forward = Forward::Local;
        assert!(diff(&cur, &t).is_empty());
        cur[0].dests[0].weight = 9;
        assert_eq!(diff(&cur, &t).len(), 1);
    }

    #[test]
    fn validate_rejects_duplicates() {
        let mut t = table();
        t.push(t[0].clone());
        assert!(validate(&t).is_err());
    }
}
