//! Sans-IO codec of the half-open TCP check (`tcp_syn`): the IPv4+TCP SYN we send and the
//! replies we read from a raw socket (SYN-ACK = port open, RST = port closed), and the same
//! for IPv6 ([`Segment6`]), where raw sockets carry the TCP header alone.
//!
//! The probe's identity travels in the SYN's sequence number: every reply to a SYN acknowledges
//! `seq + 1`, so a reply is matched without any per-connection kernel state.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum::internet_checksum;

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Length of the segments we build: 20 bytes IPv4 + 20 bytes TCP, no options.
pub const SEGMENT_LEN: usize = 40;

/// A TCP segment without options or payload, with the addresses of family `A`: what the check
/// sends and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<A> {
    /// Source address.
    pub src: A,
    /// Destination address.
    pub dst: A,
    /// TCP source port.
    pub sport: u16,
    /// TCP destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flag bits ([`flags`]).
    pub flags: u8,
    /// Receive window.
    pub window: u16,
}

/// An IPv4 segment: encoded with its IPv4 header.
pub type Segment = TcpSegment<Ipv4Addr>;

/// An IPv6 segment. Raw IPv6 sockets send and deliver the TCP header alone: the addresses
/// travel beside it (bound source, `sockaddr_in6`).
pub type Segment6 = TcpSegment<Ipv6Addr>;

/// What a reply says about the probed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// SYN-ACK: something accepts connections.
    Open,
    /// RST: nothing listens.
    Closed,
}

impl<A> TcpSegment<A> {
    /// A SYN from `src:sport` to `dst:dport` carrying `seq`.
    pub fn syn(src: A, sport: u16, dst: A, dport: u16, seq: u32) -> Self {
        TcpSegment {
            src,
            dst,
            sport,
            dport,
            seq,
            ack: 0,
            flags: flags::SYN,
            window: 65535,
        }
    }

    /// If this is a reply to a SYN we sent with sequence number `seq - 1`... : the verdict and
    /// the acknowledged SYN's sequence number.
    pub fn reply_to_syn(&self) -> Option<(Verdict, u32)> {
        let syn_seq = self.ack.wrapping_sub(1);
        if self.flags & flags::ACK == 0 {
            return None;
        }
        if self.flags & flags::RST != 0 {
            Some((Verdict::Closed, syn_seq))
        } else if self.flags & flags::SYN != 0 {
            Some((Verdict::Open, syn_seq))
        } else {
            None
        }
    }

    /// Write the TCP header into the first [`TCP_HEADER_LEN`] bytes of `t` (checksum zero).
    fn write_tcp(&self, t: &mut [u8]) {
        t[0..2].copy_from_slice(&self.sport.to_be_bytes());
        t[2..4].copy_from_slice(&self.dport.to_be_bytes());
        t[4..8].copy_from_slice(&self.seq.to_be_bytes());
        t[8..12].copy_from_slice(&self.ack.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = self.flags;
        t[14..16].copy_from_slice(&self.window.to_be_bytes());
    }

    /// The segment whose TCP header starts `t` (options and payload skipped).
    fn read_tcp(src: A, dst: A, t: &[u8]) -> Option<Self> {
        let t = t.get(..TCP_HEADER_LEN)?;
        let u16at = |o: usize| u16::from_be_bytes([t[o], t[o + 1]]);
        let u32at = |o: usize| u32::from_be_bytes([t[o], t[o + 1], t[o + 2], t[o + 3]]);
        Some(TcpSegment {
            src,
            dst,
            sport: u16at(0),
            dport: u16at(2),
            seq: u32at(4),
            ack: u32at(8),
            flags: t[13],
            window: u16at(14),
        })
    }
}

impl Segment {
    /// Wire bytes (IP and TCP checksums filled in; the kernel recomputes the IP one anyway).
    pub fn encode(&self) -> [u8; SEGMENT_LEN] {
        let mut b = [0u8; SEGMENT_LEN];
        b[0] = 0x45;
        b[2..4].copy_from_slice(&(SEGMENT_LEN as u16).to_be_bytes());
        b[6] = 0x40; // don't fragment
        b[8] = 64; // TTL
        b[9] = libc::IPPROTO_TCP as u8;
        b[12..16].copy_from_slice(&self.src.octets());
        b[16..20].copy_from_slice(&self.dst.octets());
        let ipsum = internet_checksum(0, &b[..20]);
        b[10..12].copy_from_slice(&ipsum.to_be_bytes());
        let t = &mut b[20..];
        self.write_tcp(t);
        let sum = tcp_checksum(self.src, self.dst, t);
        t[16..18].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Parse an IPv4 packet holding a TCP header (options and payload are skipped). Checksums
    /// are not verified: packets looped back on `lo` carry unfinished (offloaded) ones.
    pub fn decode(pkt: &[u8]) -> Option<Segment> {
        let first = *pkt.first()?;
        if first >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(first & 0x0f) * 4;
        if ihl < 20 || pkt.get(9) != Some(&(libc::IPPROTO_TCP as u8)) {
            return None;
        }
        // Only the first fragment carries the TCP header.
        let frag = u16::from_be_bytes([*pkt.get(6)?, *pkt.get(7)?]) & 0x1fff;
        if frag != 0 {
            return None;
        }
        let ip4 = |o: usize| -> Option<Ipv4Addr> {
            let s: [u8; 4] = pkt.get(o..o + 4)?.try_into().ok()?;
            Some(Ipv4Addr::from(s))
        };
        Segment::read_tcp(ip4(12)?, ip4(16)?, pkt.get(ihl..)?)
    }
}

/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;

impl Segment6 {
    /// The TCP header, checksum over the IPv6 pseudo-header filled in.
    pub fn encode(&self) -> [u8; TCP_HEADER_LEN] {
        let mut t = [0u8; TCP_HEADER_LEN];
        self.write_tcp(&mut t);
        let sum = tcp6_checksum(self.src, self.dst, &t);
        t[16..18].copy_from_slice(&sum.to_be_bytes());
        t
    }

    /// Parse the TCP header `tcp` (options and payload skipped) of a segment from `src` to
    /// `dst`. The checksum is not verified (looped-back segments carry unfinished ones).
    pub fn decode(src: Ipv6Addr, dst: Ipv6Addr, tcp: &[u8]) -> Option<Segment6> {
        Segment6::read_tcp(src, dst, tcp)
    }
}

fn tcp6_checksum(src: Ipv6Addr, dst: Ipv6Addr, tcp: &[u8]) -> u16 {
    // RFC 8200 8.1: source, destination, upper-layer length (32 bits), 3 zero bytes, next
    // header.
    let mut pseudo = [0u8; 40];
    pseudo[0..16].copy_from_slice(&src.octets());
    pseudo[16..32].copy_from_slice(&dst.octets());
    pseudo[32..36].copy_from_slice(&(tcp.len() as u32).to_be_bytes());
    pseudo[39] = libc::IPPROTO_TCP as u8;
    let partial = !internet_checksum(0, &pseudo);
    internet_checksum(u32::from(partial), tcp)
}

fn tcp_checksum(src: Ipv4Addr, dst: Ipv4Addr, tcp: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = libc::IPPROTO_TCP as u8;
    pseudo[10..12].copy_from_slice(&(tcp.len() as u16).to_be_bytes());
    let partial = !internet_checksum(0, &pseudo);
    internet_checksum(u32::from(partial), tcp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg() -> impl Strategy<Value = Segment> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u16>(),
        )
            .prop_map(|(s, d, sp, dp, seq, ack, flags, window)| Segment {
                src: Ipv4Addr::from(s),
                dst: Ipv4Addr::from(d),
                sport: sp,
                dport: dp,
                seq,
                ack,
                flags,
                window,
            })
    }

    proptest! {
        #[test]
        fn roundtrip(s in seg()) {
            let b = s.encode();
            prop_assert_eq!(Segment::decode(&b), Some(s));
            // A correct checksum sums to zero over pseudo header + segment.
            prop_assert_eq!(tcp_checksum(s.src, s.dst, &b[20..]), 0);
            prop_assert_eq!(internet_checksum(0, &b[..20]), 0);
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Segment::decode(&b);
            let _ = Segment6::decode(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, &b);
        }

        #[test]
        fn roundtrip6(s in seg(), src in any::<[u8; 16]>(), dst in any::<[u8; 16]>()) {
            let s6 = Segment6 {
                src: Ipv6Addr::from(src),
                dst: Ipv6Addr::from(dst),
                sport: s.sport,
                dport: s.dport,
                seq: s.seq,
                ack: s.ack,
                flags: s.flags,
                window: s.window,
            };
            let b = s6.encode();
            prop_assert_eq!(Segment6::decode(s6.src, s6.dst, &b), Some(s6));
            prop_assert_eq!(tcp6_checksum(s6.src, s6.dst, &b), 0);
            prop_assert_eq!(s6.reply_to_syn(), s.reply_to_syn());
        }
    }

    #[test]
    fn known_checksum_and_reply_matching() {
        // SYN 10.0.0.1:1234 -> 10.0.0.2:80 seq 1, checksum computed independently (RFC 1071 sum in Python).
        let s = Segment::syn(
            Ipv4Addr::new(10, 0, 0, 1),
            1234,
            Ipv4Addr::new(10, 0, 0, 2),
            80,
            1,
        );
        let b = s.encode();
        assert_eq!(u16::from_be_bytes([b[36], b[37]]), 0x96bd);
        let mut reply = s;
        reply.flags = flags::SYN | flags::ACK;
        reply.ack = 0;
        assert_eq!(reply.reply_to_syn(), Some((Verdict::Open, u32::MAX)));
        reply.flags = flags::RST | flags::ACK;
        reply.ack = 7;
        assert_eq!(reply.reply_to_syn(), Some((Verdict::Closed, 6)));
        reply.flags = flags::SYN;
        assert_eq!(reply.reply_to_syn(), None);
        // Options are skipped: a 24-byte IP header still parses.
        let mut long = vec![0x46u8];
        long.extend_from_slice(&b[1..20]);
        long.extend_from_slice(&[0, 0, 0, 0]);
        long.extend_from_slice(&b[20..]);
        assert_eq!(Segment::decode(&long).map(|x| x.dport), Some(80));
    }

    #[test]
    fn known_checksum6() {
        // SYN [2001:db8::1]:1234 -> [2001:db8::2]:80 seq 1; checksum computed independently
        // (RFC 1071 sum over the RFC 8200 pseudo-header in Python).
        let a = |last: u16| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last);
        let t = Segment6::syn(a(1), 1234, a(2), 80, 1).encode();
        assert_eq!(u16::from_be_bytes([t[16], t[17]]), 0x4f4b);
    }
}
