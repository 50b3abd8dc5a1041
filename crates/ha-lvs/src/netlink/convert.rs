//! Conversion between the model and IPVS attribute sets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::codec::{DaemonAttrs, DestAttrs, StatsAttrs, SvcAttrs};
use crate::error::{Error, Result};
use crate::model::*;

fn addr_bytes(ip: &IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            a
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn ip_from(family: Family, a: &[u8; 16]) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(*a)),
    }
}

/// The identifying attributes of a service (for destination commands, delete, get).
pub fn svc_key_attrs(key: &ServiceKey) -> SvcAttrs {
    let mut s = SvcAttrs {
        af: Some(key.family().af()),
        ..Default::default()
    };
    match key {
        ServiceKey::Addr { protocol, addr } => {
            s.protocol = Some(protocol.number());
            s.addr = Some(addr_bytes(&addr.ip()));
            s.port = Some(addr.port());
        }
        ServiceKey::Fwmark { mark, .. } => s.fwmark = Some(*mark),
    }
    s
}

/// Check the parts the kernel would reject with a less helpful error.
pub fn validate_service(s: &Service) -> Result<()> {
    if s.scheduler.name().len() > 15 {
        return Err(Error::invalid(format!(
            "scheduler name of {} longer than 15 bytes",
            s.key
        )));
    }
    if let Some(pe) = &s.pe_name
        && (pe.is_empty() || pe.len() > 15)
    {
        return Err(Error::invalid(format!(
            "persistence engine name of {} must be 1-15 bytes",
            s.key
        )));
    }
    if let ServiceKey::Fwmark { mark: 0, .. } = s.key {
        return Err(Error::invalid("fwmark 0 is not a valid virtual service"));
    }
    if let Some(p) = &s.persistence {
        match (s.key.family(), p.netmask) {
            (Family::V4, Netmask::V4(_)) => {}
            (Family::V6, Netmask::V6(n)) if (1..=128).contains(&n) => {}
            _ => {
                return Err(Error::invalid(format!(
                    "persistence netmask of {} does not fit its family",
                    s.key
                )));
            }
        }
    }
    Ok(())
}

/// Every attribute of a service, as NEW_SERVICE / SET_SERVICE need them.
pub fn svc_full_attrs(s: &Service) -> SvcAttrs {
    let mut a = svc_key_attrs(&s.key);
    a.sched_name = Some(s.scheduler.name().to_string());
    a.flags = Some((s.flag_bits(), u32::MAX));
    let (timeout, netmask) = match &s.persistence {
        Some(p) => (p.timeout, p.netmask),
        None => (0, Netmask::host(s.key.family())),
    };
    a.timeout = Some(timeout);
    a.netmask = Some(netmask.to_raw());
    a.pe_name = s.pe_name.clone();
    a
}

/// The identifying attributes of a destination (for DEL_DEST).
pub fn dest_key_attrs(addr: &SocketAddr) -> DestAttrs {
    DestAttrs {
        addr_family: Some(Family::of(&addr.ip()).af()),
        addr: Some(addr_bytes(&addr.ip())),
        port: Some(addr.port()),
        ..Default::default()
    }
}

/// Every attribute of a destination, as NEW_DEST / SET_DEST need them.
pub fn dest_full_attrs(d: &Destination) -> DestAttrs {
    let mut a = dest_key_attrs(&d.addr);
    a.fwd_method = Some(d.forward.method());
    a.weight = Some(d.weight);
    a.u_thresh = Some(d.u_thresh);
    a.l_thresh = Some(d.l_thresh);
    if let Forward::Tunnel(t) = d.forward {
        a.tun_type = Some(t.kind.number());
        a.tun_port = Some(t.port);
        a.tun_flags = Some(t.csum.bits());
    }
    a
}

fn stats_from(s: &StatsAttrs) -> Stats {
    let v = |i: usize| s.0[i].unwrap_or(0);
    Stats {
        conns: v(0),
        inpkts: v(1),
        outpkts: v(2),
        inbytes: v(3),
        outbytes: v(4),
        cps: v(5),
        inpps: v(6),
        outpps: v(7),
        inbps: v(8),
        outbps: v(9),
    }
}

fn pick_stats(s64: &Option<StatsAttrs>, s32: &Option<StatsAttrs>) -> Stats {
    s64.as_ref()
        .or(s32.as_ref())
        .map(stats_from)
        .unwrap_or_default()
}

fn missing(what: &str) -> Error {
    Error::Protocol(format!("kernel reply lacks {what}"))
}

/// A service as the kernel reported it.
pub fn service_from_attrs(a: &SvcAttrs) -> Result<(Service, Stats)> {
    let af = a.af.ok_or_else(|| missing("service address family"))?;
    let family = Family::from_af(af)
        .ok_or_else(|| Error::Protocol(format!("unknown service family {af}")))?;
    let key = match a.fwmark {
        Some(mark) if mark != 0 => ServiceKey::Fwmark { mark, family },
        _ => {
            let p = a.protocol.ok_or_else(|| missing("service protocol"))?;
            let protocol = Protocol::from_number(p)
                .ok_or_else(|| Error::Protocol(format!("unknown protocol {p}")))?;
            let addr = a.addr.ok_or_else(|| missing("service address"))?;
            let port = a.port.ok_or_else(|| missing("service port"))?;
            ServiceKey::Addr {
                protocol,
                addr: SocketAddr::new(ip_from(family, &addr), port),
            }
        }
    };
    let sched = a
        .sched_name
        .as_deref()
        .ok_or_else(|| missing("scheduler name"))?;
    let scheduler: Scheduler = sched.parse()?;
    let (flags, mask) = a.flags.ok_or_else(|| missing("service flags"))?;
    let flags = flags & mask;
    let persistence = if flags & svc_flags::PERSISTENT != 0 {
        Some(Persistence {
            timeout: a.timeout.unwrap_or(0),
            netmask: Netmask::from_raw(family, a.netmask.unwrap_or(Netmask::host(family).to_raw())),
        })
    } else {
        None
    };
    let service = Service {
        key,
        scheduler,
        sched_flags: SchedFlags::from_bits(flags),
        persistence,
        one_packet: flags & svc_flags::ONEPACKET != 0,
        pe_name: a.pe_name.clone().filter(|p| !p.is_empty()),
    };
    Ok((service, pick_stats(&a.stats64, &a.stats)))
}

/// A destination as the kernel reported it (`svc_family` is used when the reply has no family).
pub fn dest_from_attrs(a: &DestAttrs, svc_family: Family) -> Result<DestEntry> {
    let family = match a.addr_family {
        Some(af) => Family::from_af(af)
            .ok_or_else(|| Error::Protocol(format!("unknown destination family {af}")))?,
        None => svc_family,
    };
    let addr = a.addr.ok_or_else(|| missing("destination address"))?;
    let port = a.port.ok_or_else(|| missing("destination port"))?;
    let method = a.fwd_method.ok_or_else(|| missing("forwarding method"))? & 0x7;
    let forward = match method {
        0 => Forward::Masq,
        1 => Forward::Local,
        2 => Forward::Tunnel(Tunnel {
            kind: TunnelType::from_number(a.tun_type.unwrap_or(0))
                .ok_or_else(|| Error::Protocol(format!("unknown tunnel type {:?}", a.tun_type)))?,
            port: a.tun_port.unwrap_or(0),
            csum: TunnelCsum::from_bits(a.tun_flags.unwrap_or(0)).ok_or_else(|| {
                Error::Protocol(format!("unknown tunnel flags {:?}", a.tun_flags))
            })?,
        }),
        3 => Forward::Route,
        4 => Forward::Bypass,
        m => return Err(Error::Protocol(format!("unknown forwarding method {m}"))),
    };
    Ok(DestEntry {
        dest: Destination {
            addr: SocketAddr::new(ip_from(family, &addr), port),
            forward,
            weight: a.weight.ok_or_else(|| missing("weight"))?,
            u_thresh: a.u_thresh.unwrap_or(0),
            l_thresh: a.l_thresh.unwrap_or(0),
        },
        active_conns: a.active_conns.unwrap_or(0),
        inact_conns: a.inact_conns.unwrap_or(0),
        persist_conns: a.persist_conns.unwrap_or(0),
        stats: pick_stats(&a.stats64, &a.stats),
    })
}

/// Attributes to start a sync daemon.
pub fn daemon_attrs(d: &SyncDaemon) -> DaemonAttrs {
    let mut a = DaemonAttrs {
        state: Some(d.state.bits()),
        mcast_ifn: Some(d.mcast_ifn.clone()),
        sync_id: Some(d.sync_id),
        ..Default::default()
    };
    if d.sync_maxlen != 0 {
        a.sync_maxlen = Some(d.sync_maxlen);
    }
    if d.mcast_port != 0 {
        a.mcast_port = Some(d.mcast_port);
    }
    if d.mcast_ttl != 0 {
        a.mcast_ttl = Some(d.mcast_ttl);
    }
    match d.mcast_group {
        Some(IpAddr::V4(g)) => a.mcast_group = Some(g.octets()),
        Some(IpAddr::V6(g)) => a.mcast_group6 = Some(g.octets()),
        None => {}
    }
    a
}

/// A sync daemon as reported by GET_DAEMON.
pub fn daemon_from_attrs(a: &DaemonAttrs) -> Result<SyncDaemon> {
    let state = match a.state.ok_or_else(|| missing("daemon state"))? {
        s if s & 1 != 0 => DaemonState::Master,
        s if s & 2 != 0 => DaemonState::Backup,
        s => return Err(Error::Protocol(format!("unknown daemon state {s}"))),
    };
    let mcast_group = match (a.mcast_group, a.mcast_group6) {
        (Some(g), _) => Some(IpAddr::V4(Ipv4Addr::from(g))),
        (None, Some(g)) => Some(IpAddr::V6(Ipv6Addr::from(g))),
        _ => None,
    };
    Ok(SyncDaemon {
        state,
        mcast_ifn: a.mcast_ifn.clone().unwrap_or_default(),
        sync_id: a.sync_id.unwrap_or(0),
        sync_maxlen: a.sync_maxlen.unwrap_or(0),
        mcast_group,
        mcast_port: a.mcast_port.unwrap_or(0),
        mcast_ttl: a.mcast_ttl.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::codec::{CmdAttrs, IpvsAttrs, IpvsMessage, cmd};
    use crate::testutil::{arb_dest, arb_service};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn service_through_the_wire(s in arb_service()) {
            let m = IpvsMessage::new(cmd::NEW_SERVICE, CmdAttrs { service: Some(svc_full_attrs(&s)), ..Default::default() });
            let back = IpvsMessage::decode(cmd::NEW_SERVICE, &m.encode_attrs()).unwrap();
            let IpvsAttrs::Cmd(c) = back.attrs else { panic!("cmd attrs expected") };
            let (s2, _) = service_from_attrs(c.service.as_ref().unwrap()).unwrap();
            prop_assert_eq!(s2, s);
        }

        #[test]
        fn dest_through_the_wire(d in arb_dest()) {
            let m = IpvsMessage::new(cmd::NEW_DEST, CmdAttrs { dest: Some(dest_full_attrs(&d)), ..Default::default() });
            let back = IpvsMessage::decode(cmd::NEW_DEST, &m.encode_attrs()).unwrap();
            let IpvsAttrs::Cmd(c) = back.attrs else { panic!("cmd attrs expected") };
            let mut a = c.dest.unwrap();
            a.active_conns = Some(0);
            let e = dest_from_attrs(&a, Family::V4).unwrap();
            prop_assert_eq!(e.dest, d);
        }
    }
}
