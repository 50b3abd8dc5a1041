//! ICMP and ICMPv6 echo messages for the `ping` check, as plain functions: encode an echo
//! request, decode what comes back (echo reply, or a destination-unreachable / time-exceeded
//! error quoting our request). No I/O here; [`super::ping`] does the sockets.
//!
//! Raw IPv4 sockets deliver the IPv4 header in front of the ICMP message
//! ([`ipv4_payload`] strips it); ICMP datagram sockets and raw ICMPv6 sockets deliver the
//! ICMP message alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// ICMPv4 echo reply.
pub const V4_ECHO_REPLY: u8 = 0;
/// ICMPv4 destination unreachable.
pub const V4_DEST_UNREACH: u8 = 3;
/// ICMPv4 echo request.
pub const V4_ECHO_REQUEST: u8 = 8;
/// ICMPv4 time exceeded.
pub const V4_TIME_EXCEEDED: u8 = 11;
/// ICMPv6 destination unreachable.
pub const V6_DEST_UNREACH: u8 = 1;
/// ICMPv6 time exceeded.
pub const V6_TIME_EXCEEDED: u8 = 3;
/// ICMPv6 echo request.
pub const V6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply.
pub const V6_ECHO_REPLY: u8 = 129;

/// Length of the ICMP header of echo and error messages.
const HEADER_LEN: usize = 8;
/// IP protocol numbers of ICMP and ICMPv6.
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
/// Length of the fixed IPv6 header.
const IPV6_HEADER_LEN: usize = 40;

/// Which ICMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// ICMP over IPv4.
    V4,
    /// ICMPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn echo_types(self) -> (u8, u8) {
        match self {
            Family::V4 => (V4_ECHO_REQUEST, V4_ECHO_REPLY),
            Family::V6 => (V6_ECHO_REQUEST, V6_ECHO_REPLY),
        }
    }
}

/// The contents of an echo request or reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    /// Identifier (on ICMP datagram sockets the kernel sets it to the socket's port).
    pub id: u16,
    /// Sequence number.
    pub seq: u16,
    /// Data, echoed back unchanged by the target.
    pub payload: Vec<u8>,
}

/// Which ICMP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Destination unreachable (ICMPv4 type 3, ICMPv6 type 1).
    Unreachable,
    /// Time exceeded (ICMPv4 type 11, ICMPv6 type 3): a routing loop or too many hops.
    TimeExceeded,
}

/// The echo request an ICMP error message quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    /// Destination of the quoted request.
    pub dst: IpAddr,
    /// Its identifier.
    pub id: u16,
    /// Its sequence number.
    pub seq: u16,
}

/// A decoded ICMP message, as far as the ping check cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Echo request.
    EchoRequest(Echo),
    /// Echo reply.
    EchoReply(Echo),
    /// An error about a packet; `quoted` is set when that packet was an echo request.
    Error {
        /// Unreachable or time exceeded.
        kind: ErrorKind,
        /// The ICMP code (e.g. 1 = host unreachable for ICMPv4, 3 = address unreachable
        /// for ICMPv6).
        code: u8,
        /// The echo request it is about, when the quote holds one.
        quoted: Option<Quoted>,
    },
    /// Any other type.
    Other {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
    },
}

/// RFC 1071 Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    super::checksum::internet_checksum(0, data)
}

/// Encode an echo request (`reply` false) or reply. ICMPv4 messages carry their checksum;
/// the ICMPv6 checksum covers a pseudo-header with both addresses, so it is left 0 for the
/// kernel to fill in (it always does for ICMPv6 sockets).
pub fn encode_echo(family: Family, reply: bool, echo: &Echo) -> Vec<u8> {
    let (req, rep) = family.echo_types();
    let mut p = Vec::with_capacity(HEADER_LEN + echo.payload.len());
    p.extend_from_slice(&[if reply { rep } else { req }, 0, 0, 0]);
    p.extend_from_slice(&echo.id.to_be_bytes());
    p.extend_from_slice(&echo.seq.to_be_bytes());
    p.extend_from_slice(&echo.payload);
    if family == Family::V4 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Decode an ICMP message (without IP header). `None` when it is too short, or an ICMPv4
/// message with a wrong checksum (raw sockets see packets before the kernel checks them).
pub fn decode(family: Family, msg: &[u8]) -> Option<Message> {
    let header = msg.get(..HEADER_LEN)?;
    let (icmp_type, code) = (header[0], header[1]);
    if family == Family::V4 && checksum(msg) != 0 {
        return None;
    }
    let echo = || Echo {
        id: u16::from_be_bytes([header[4], header[5]]),
        seq: u16::from_be_bytes([header[6], header[7]]),
        payload: msg[HEADER_LEN..].to_vec(),
    };
    if let Some(kind) = error_kind(family, icmp_type) {
        return Some(Message::Error {
            kind,
            code,
            quoted: quoted(family, &msg[HEADER_LEN..]),
        });
    }
    Some(match (family, icmp_type) {
        (Family::V4, V4_ECHO_REQUEST) | (Family::V6, V6_ECHO_REQUEST) => {
            Message::EchoRequest(echo())
        }
        (Family::V4, V4_ECHO_REPLY) | (Family::V6, V6_ECHO_REPLY) => Message::EchoReply(echo()),
        _ => Message::Other { icmp_type, code },
    })
}

/// The error an ICMP type stands for, if it is one the ping check reports.
pub fn error_kind(family: Family, icmp_type: u8) -> Option<ErrorKind> {
    match (family, icmp_type) {
        (Family::V4, V4_DEST_UNREACH) | (Family::V6, V6_DEST_UNREACH) => {
            Some(ErrorKind::Unreachable)
        }
        (Family::V4, V4_TIME_EXCEEDED) | (Family::V6, V6_TIME_EXCEEDED) => {
            Some(ErrorKind::TimeExceeded)
        }
        _ => None,
    }
}

/// The echo request quoted by an ICMP error: the offending IP header and at least the first
/// 8 bytes of its payload. An IPv6 quote with extension headers is not looked into.
fn quoted(family: Family, q: &[u8]) -> Option<Quoted> {
    let (dst, icmp) = match family {
        Family::V4 => {
            let (_, dst, proto, icmp) = ipv4_split(q)?;
            if proto != PROTO_ICMP {
                return None;
            }
            (IpAddr::V4(dst), icmp)
        }
        Family::V6 => {
            let h = q.get(..IPV6_HEADER_LEN)?;
            if h[0] >> 4 != 6 || h[6] != PROTO_ICMPV6 {
                return None;
            }
            let dst: [u8; 16] = h[24..40].try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(dst)), &q[IPV6_HEADER_LEN..])
        }
    };
    let h = icmp.get(..HEADER_LEN)?;
    if h[0] != family.echo_types().0 {
        return None;
    }
    Some(Quoted {
        dst,
        id: u16::from_be_bytes([h[4], h[5]]),
        seq: u16::from_be_bytes([h[6], h[7]]),
    })
}

/// Source, destination, protocol and payload of an IPv4 packet (options skipped).
fn ipv4_split(p: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, &[u8])> {
    let first = *p.first()?;
    let ihl = usize::from(first & 0x0F) * 4;
    if first >> 4 != 4 || ihl < 20 {
        return None;
    }
    let h = p.get(..ihl)?;
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    Some((src, dst, h[9], &p[ihl..]))
}

/// Source address and ICMP message of a packet read from a raw IPv4 ICMP socket; `None` when
/// it is not a well-formed IPv4 header carrying ICMP.
pub fn ipv4_payload(packet: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let (src, _, proto, payload) = ipv4_split(packet)?;
    (proto == PROTO_ICMP).then_some((src, payload))
}

/// What a received packet means for the echo request `(id, seq)` sent to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The target answered our request.
    Reply,
    /// An ICMP error about our request (from `from`).
    Failed {
        /// Unreachable or time exceeded.
        kind: ErrorKind,
        /// ICMP code.
        code: u8,
        /// Who sent the error (a router, or our own host).
        from: IpAddr,
    },
}

/// Match a decoded message from `from` against our request: an echo reply needs the
/// target as source, our id, sequence and payload; an error needs to quote our request.
/// `check_id` is false on datagram sockets, where the kernel has already matched the id.
pub fn verdict(
    msg: &Message,
    from: IpAddr,
    target: IpAddr,
    sent: &Echo,
    check_id: bool,
) -> Option<Verdict> {
    match msg {
        Message::EchoReply(e)
            if from == target
                && e.seq == sent.seq
                && (!check_id || e.id == sent.id)
                && e.payload == sent.payload =>
        {
            Some(Verdict::Reply)
        }
        Message::Error {
            kind,
            code,
            quoted: Some(q),
        } if q.dst == target && q.seq == sent.seq && (!check_id || q.id == sent.id) => {
            Some(Verdict::Failed {
                kind: *kind,
                code: *code,
                from,
            })
        }
        _ => None,
    }
}

/// A readable reason for an ICMP error.
pub fn describe_error(family: Family, kind: ErrorKind, code: u8) -> String {
    let what = match (family, kind, code) {
        (_, ErrorKind::TimeExceeded, _) => "time exceeded in transit",
        (Family::V4, ErrorKind::Unreachable, 0) => "network unreachable",
        (Family::V4, ErrorKind::Unreachable, 1) => "host unreachable",
        (Family::V4, ErrorKind::Unreachable, 9 | 10 | 13) => "administratively prohibited",
        (Family::V6, ErrorKind::Unreachable, 0) => "no route to destination",
        (Family::V6, ErrorKind::Unreachable, 1 | 5 | 6) => "administratively prohibited",
        (Family::V6, ErrorKind::Unreachable, 3) => "address unreachable",
        (_, ErrorKind::Unreachable, _) => "destination unreachable",
    };
    format!("{what} (ICMP code {code})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fam() -> impl Strategy<Value = Family> {
        prop_oneof![Just(Family::V4), Just(Family::V6)]
    }

    fn echo() -> impl Strategy<Value = Echo> {
        (
            any::<u16>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(id, seq, payload)| Echo { id, seq, payload })
    }

    /// An IPv4 header (no options) of `len` total bytes with a valid checksum.
    fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    /// An ICMP error of `icmp_type`/`code` quoting `request` sent to `dst`.
    fn error_v4(icmp_type: u8, code: u8, dst: Ipv4Addr, request: &[u8]) -> Vec<u8> {
        let mut m = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
        let src = Ipv4Addr::new(10, 0, 0, 1);
        m.extend(ipv4_header(src, dst, PROTO_ICMP, 20 + request.len()));
        m.extend_from_slice(&request[..8]);
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        m
    }

    fn error_v6(icmp_type: u8, code: u8, dst: Ipv6Addr, request: &[u8]) -> Vec<u8> {
        let mut m = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(request.len() as u16).to_be_bytes());
        h.extend_from_slice(&[PROTO_ICMPV6, 64]);
        h.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        h.extend_from_slice(&dst.octets());
        m.extend(h);
        m.extend_from_slice(request);
        m
    }

    proptest! {
        #[test]
        fn echo_round_trips(f in fam(), e in echo(), reply in any::<bool>()) {
            let wire = encode_echo(f, reply, &e);
            let want = if reply { Message::EchoReply(e) } else { Message::EchoRequest(e) };
            prop_assert_eq!(decode(f, &wire), Some(want));
        }

        #[test]
        fn decode_never_panics(f in fam(), b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(f, &b);
            let _ = ipv4_payload(&b);
        }

        #[test]
        fn corrupted_v4_messages_are_rejected(e in echo(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut wire = encode_echo(Family::V4, true, &e);
            let i = at.index(wire.len());
            wire[i] ^= 1 << bit;
            prop_assert_eq!(decode(Family::V4, &wire), None);
        }

        #[test]
        fn errors_quote_the_request_v4(e in echo(), code in any::<u8>(), dst in any::<[u8; 4]>()) {
            let dst = Ipv4Addr::from(dst);
            let req = encode_echo(Family::V4, false, &e);
            let m = decode(Family::V4, &error_v4(V4_DEST_UNREACH, code, dst, &req));
            let quoted = Some(Quoted { dst: dst.into(), id: e.id, seq: e.seq });
            prop_assert_eq!(m, Some(Message::Error { kind: ErrorKind::Unreachable, code, quoted }));
        }

        #[test]
        fn errors_quote_the_request_v6(e in echo(), code in any::<u8>(), dst in any::<[u8; 16]>()) {
            let dst = Ipv6Addr::from(dst);
            let req = encode_echo(Family::V6, false, &e);
            let m = decode(Family::V6, &error_v6(V6_TIME_EXCEEDED, code, dst, &req));
            let quoted = Some(Quoted { dst: dst.into(), id: e.id, seq: e.seq });
            prop_assert_eq!(m, Some(Message::Error { kind: ErrorKind::TimeExceeded, code, quoted }));
        }
    }

    #[test]
    fn raw_ipv4_packets_are_unwrapped() {
        let e = Echo {
            id: 7,
            seq: 9,
            payload: b"x".to_vec(),
        };
        let icmp = encode_echo(Family::V4, true, &e);
        let src = Ipv4Addr::new(192, 0, 2, 5);
        let mut pkt = ipv4_header(src, Ipv4Addr::LOCALHOST, PROTO_ICMP, 20 + icmp.len());
        pkt.extend_from_slice(&icmp);
        let (from, msg) = ipv4_payload(&pkt).unwrap();
        assert_eq!(from, src);
        assert_eq!(decode(Family::V4, msg), Some(Message::EchoReply(e)));
        pkt[9] = 6; // TCP
        assert_eq!(ipv4_payload(&pkt), None);
    }

    #[test]
    fn verdict_needs_our_id_seq_payload_and_target() {
        let sent = Echo {
            id: 1,
            seq: 2,
            payload: b"abc".to_vec(),
        };
        let t: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let reply = |id, seq, p: &[u8]| {
            Message::EchoReply(Echo {
                id,
                seq,
                payload: p.to_vec(),
            })
        };
        assert_eq!(
            verdict(&reply(1, 2, b"abc"), t, t, &sent, true),
            Some(Verdict::Reply)
        );
        assert_eq!(verdict(&reply(1, 2, b"abc"), other, t, &sent, true), None);
        assert_eq!(verdict(&reply(5, 2, b"abc"), t, t, &sent, true), None);
        assert_eq!(
            verdict(&reply(5, 2, b"abc"), t, t, &sent, false),
            Some(Verdict::Reply)
        );
        assert_eq!(verdict(&reply(1, 3, b"abc"), t, t, &sent, true), None);
        assert_eq!(verdict(&reply(1, 2, b"abd"), t, t, &sent, true), None);
        let err = |dst| Message::Error {
            kind: ErrorKind::Unreachable,
            code: 1,
            quoted: Some(Quoted { dst, id: 1, seq: 2 }),
        };
        assert_eq!(
            verdict(&err(t), other, t, &sent, true),
            Some(Verdict::Failed {
                kind: ErrorKind::Unreachable,
                code: 1,
                from: other
            })
        );
        assert_eq!(verdict(&err(other), other, t, &sent, true), None);
        assert_eq!(
            describe_error(Family::V4, ErrorKind::Unreachable, 1),
            "host unreachable (ICMP code 1)"
        );
    }
}
