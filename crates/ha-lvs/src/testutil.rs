//! Proptest strategies shared by the unit tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proptest::prelude::*;

use crate::model::*;

pub(crate) fn arb_service() -> impl Strategy<Value = Service> {
    let key = prop_oneof![
        (
            prop_oneof![
                Just(Protocol::Tcp),
                Just(Protocol::Udp),
                Just(Protocol::Sctp)
            ],
            any::<(IpAddr, u16)>().prop_map(|(i, p)| SocketAddr::new(i, p))
        )
            .prop_map(|(protocol, addr)| ServiceKey::Addr { protocol, addr }),
        (1u32.., any::<bool>()).prop_map(|(mark, v6)| ServiceKey::Fwmark {
            mark,
            family: if v6 { Family::V6 } else { Family::V4 }
        }),
    ];
    (
        key,
        0usize..13,
        0u32..8,
        proptest::option::of((any::<u32>(), any::<u32>(), 1u8..=128)),
        any::<bool>(),
        proptest::option::of("[a-z]{1,15}"),
    )
        .prop_map(|(key, si, fl, p, one_packet, pe_name)| {
            let scheduler = Scheduler::KNOWN[si].clone();
            let persistence = p.map(|(timeout, m4, m6)| Persistence {
                timeout,
                netmask: match key.family() {
                    Family::V4 => Netmask::V4(Ipv4Addr::from(m4)),
                    Family::V6 => Netmask::V6(m6),
                },
            });
            Service {
                key,
                scheduler,
                sched_flags: SchedFlags(fl << 3),
                persistence,
                one_packet,
                pe_name,
            }
        })
}

pub(crate) fn arb_dest() -> impl Strategy<Value = Destination> {
    let fwd = prop_oneof![
        Just(Forward::Masq),
        Just(Forward::Local),
        Just(Forward::Route),
        Just(Forward::Bypass),
        (0u8..3, any::<u16>(), 0u16..3).prop_map(|(k, port, c)| Forward::Tunnel(Tunnel {
            kind: TunnelType::from_number(k).unwrap_or_default(),
            port,
            csum: TunnelCsum::from_bits(c).unwrap_or_default(),
        })),
    ];
    (
        any::<(IpAddr, u16)>().prop_map(|(i, p)| SocketAddr::new(i, p)),
        fwd,
        0u32..=65535,
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(addr, forward, weight, u_thresh, l_thresh)| Destination {
            addr,
            forward,
            weight,
            u_thresh,
            l_thresh,
        })
}
