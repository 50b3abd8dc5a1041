//! The UDP check ([`super::CheckKind::Udp`], keepalived `UDP_CHECK`): send one datagram to
//! the real server from a connected UDP socket and watch what comes back.
//!
//! - An ICMP "destination unreachable" (port, host or network) is down: on a connected socket
//!   the kernel reports it as the socket's error (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH).
//! - Without a required reply, any datagram from the server is up at once, and silence until
//!   the timeout is up too (UDP has no handshake: no error is all a silent service gives).
//! - With [`UdpCheck::reply`], only a reply within the timeout is up, and only when its length
//!   is within bounds and its first bytes match the expected ones (hex nibbles may be
//!   wildcards); any other reply is down, naming what differed.
//!
//! keepalived's semantics, with two differences: without a `payload` we send an empty
//! datagram (keepalived sends a buffer of filler bytes, which a real service must then parse
//! and reject), and a wrong reply is reported as such rather than as a failed connection.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::ProbeOutcome;

/// A UDP check: what to send and what reply, if any, is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UdpCheck {
    /// Datagram to send (keepalived `payload`); empty by default.
    pub payload: Vec<u8>,
    /// Reply required for up (keepalived `require_reply`); `None`: no ICMP error is enough.
    pub reply: Option<UdpReply>,
}

/// The reply a [`UdpCheck`] requires.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UdpReply {
    /// Expected first bytes (keepalived `require_reply HEX`); empty: any content.
    pub expect: HexPattern,
    /// Shortest acceptable reply in bytes (keepalived `min_reply_length`, default 0).
    pub min_len: usize,
    /// Longest acceptable reply in bytes (keepalived `max_reply_length`, default 255).
    pub max_len: usize,
}

impl Default for UdpReply {
    fn default() -> Self {
        UdpReply {
            expect: HexPattern::default(),
            min_len: 0,
            max_len: 255,
        }
    }
}

impl UdpReply {
    /// Why `reply` is not acceptable, or `None` when it is. A reply shorter than the pattern
    /// is compared over its own length (keepalived does the same; `min_len` is the length
    /// check).
    pub fn mismatch(&self, reply: &[u8]) -> Option<String> {
        if reply.len() < self.min_len || reply.len() > self.max_len {
            return Some(format!(
                "reply of {} bytes, expected {}..={}",
                reply.len(),
                self.min_len,
                self.max_len
            ));
        }
        let at = self
            .expect
            .bytes
            .iter()
            .zip(&self.expect.wildcard)
            .zip(reply)
            .position(|((want, wild), got)| (want ^ got) & !wild != 0)?;
        Some(format!(
            "reply byte {at} is {:02x}, expected {}",
            reply[at],
            self.expect.show_byte(at)
        ))
    }
}

/// Bytes given in hex, each nibble possibly a wildcard (`x`), keepalived's `read_hex_str`
/// syntax: blanks separate groups, two hex digits make a byte, a lone digit before a blank
/// or the end makes a byte of its own (`1 23` = 01 23).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HexPattern {
    /// The bytes (wildcard nibbles are 0).
    pub bytes: Vec<u8>,
    /// Per byte, the bits that match anything (0x0f, 0xf0 or 0xff for wildcard nibbles).
    pub wildcard: Vec<u8>,
}

impl HexPattern {
    /// Parse `text`; `x`/`X` nibbles are accepted only with `wildcards`. Errors name the
    /// offending character.
    pub fn parse(text: &str, wildcards: bool) -> Result<HexPattern, String> {
        let mut p = HexPattern::default();
        for group in text.split([' ', '\t']).filter(|g| !g.is_empty()) {
            let nibbles = group
                .chars()
                .map(|c| match c.to_digit(16) {
                    Some(v) => Ok((v as u8, 0u8)),
                    None if wildcards && c.eq_ignore_ascii_case(&'x') => Ok((0, 0x0f)),
                    None => Err(format!(
                        "{c:?} in hex string {text:?}: expected hex digits{}",
                        if wildcards { " or x" } else { "" }
                    )),
                })
                .collect::<Result<Vec<_>, String>>()?;
            // A group of odd length ends with a lone nibble: a byte of its own.
            for pair in nibbles.chunks(2) {
                let (byte, wild) = match *pair {
                    [(hi, hw), (lo, lw)] => ((hi << 4) | lo, (hw << 4) | lw),
                    [(v, w)] => (v, w),
                    _ => continue,
                };
                p.bytes.push(byte);
                p.wildcard.push(wild);
            }
        }
        if p.bytes.is_empty() {
            return Err(format!("hex string {text:?} holds no bytes"));
        }
        Ok(p)
    }

    /// The pattern as text that [`HexPattern::parse`] reads back (with wildcards).
    pub fn to_hex(&self) -> String {
        (0..self.bytes.len())
            .map(|i| self.show_byte(i))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn show_byte(&self, i: usize) -> String {
        let (b, w) = (self.bytes[i], self.wildcard.get(i).copied().unwrap_or(0));
        let nib = |v: u8, wild: bool| {
            if wild {
                'x'
            } else {
                char::from_digit(u32::from(v), 16).unwrap_or('?')
            }
        };
        [nib(b >> 4, w & 0xf0 != 0), nib(b & 0x0f, w & 0x0f != 0)]
            .iter()
            .collect()
    }
}

/// Most bytes read of a reply: longer ones are cut here, and then fail any `max_len` below it.
const REPLY_READ_LIMIT: usize = 65_536;

/// Run the check against `target` within `timeout`.
pub async fn check(
    target: SocketAddr,
    check: &UdpCheck,
    timeout: Duration,
) -> Result<ProbeOutcome, String> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let err = |what: &str, e: std::io::Error| format!("{what} {target}: {}", describe(&e));
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| err("UDP socket for", e))?;
    sock.connect(target)
        .await
        .map_err(|e| err("UDP connect to", e))?;
    sock.send(&check.payload)
        .await
        .map_err(|e| err("UDP send to", e))?;
    let mut buf = vec![0u8; REPLY_READ_LIMIT];
    let reply = match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
        Ok(Ok(n)) => &buf[..n],
        Ok(Err(e)) => return Err(err("UDP datagram to", e)),
        Err(_) => {
            return match check.reply {
                Some(_) => Err(format!(
                    "no UDP reply from {target} within {} ms",
                    timeout.as_millis()
                )),
                // No error within the timeout: as up as a silent UDP service can be.
                None => Ok(ProbeOutcome::Up),
            };
        }
    };
    match check.reply.as_ref().and_then(|r| r.mismatch(reply)) {
        Some(why) => Err(format!("UDP reply from {target}: {why}")),
        None => Ok(ProbeOutcome::Up),
    }
}

/// The ICMP error behind a socket error, in the words an operator looks for.
fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "port unreachable (ICMP)".into(),
        Some(libc::EHOSTUNREACH) => "host unreachable".into(),
        Some(libc::ENETUNREACH) => "network unreachable".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex_follows_keepalived_syntax() {
        let p = HexPattern::parse("0a0B 1 ff", false).unwrap();
        assert_eq!(p.bytes, vec![0x0a, 0x0b, 0x01, 0xff]);
        assert_eq!(p.wildcard, vec![0; 4]);
        let p = HexPattern::parse("1x X2 xx", true).unwrap();
        assert_eq!(p.bytes, vec![0x10, 0x02, 0x00]);
        assert_eq!(p.wildcard, vec![0x0f, 0xf0, 0xff]);
        assert!(HexPattern::parse("1x", false).unwrap_err().contains("'x'"));
        assert!(HexPattern::parse("0g", true).is_err());
        assert!(HexPattern::parse("  ", true).is_err());
    }

    #[test]
    fn replies_are_matched_by_length_and_masked_prefix() {
        let r = UdpReply {
            expect: HexPattern::parse("de ax", true).unwrap(),
            min_len: 2,
            max_len: 4,
        };
        assert_eq!(r.mismatch(&[0xde, 0xa7]), None);
        assert_eq!(r.mismatch(&[0xde, 0xaf, 0, 0]), None);
        assert!(
            r.mismatch(&[0xde, 0xb7])
                .unwrap()
                .contains("byte 1 is b7, expected ax")
        );
        assert!(r.mismatch(&[0xde]).unwrap().contains("1 bytes"));
        assert!(
            r.mismatch(&[0xde, 0xa0, 0, 0, 0])
                .unwrap()
                .contains("5 bytes")
        );
        // Shorter than the pattern but long enough: compared over its own length.
        let short = UdpReply {
            min_len: 1,
            ..r.clone()
        };
        assert_eq!(short.mismatch(&[0xde]), None);
        // Any content when no bytes are expected.
        assert_eq!(UdpReply::default().mismatch(b"anything"), None);
    }

    proptest! {
        #[test]
        fn hex_round_trips(pairs in proptest::collection::vec((any::<u8>(), prop_oneof![Just(0u8), Just(0x0f), Just(0xf0), Just(0xff)]), 1..40)) {
            let p = HexPattern {
                bytes: pairs.iter().map(|(b, w)| b & !w).collect(),
                wildcard: pairs.iter().map(|(_, w)| *w).collect(),
            };
            prop_assert_eq!(HexPattern::parse(&p.to_hex(), true), Ok(p));
        }

        #[test]
        fn hex_parse_never_panics(s in "[0-9a-fA-FxX \t]{0,40}|\\PC{0,20}") {
            let _ = HexPattern::parse(&s, true);
            let _ = HexPattern::parse(&s, false);
        }

        #[test]
        fn matching_never_panics(expect in "[0-9a-fx ]{1,20}", reply in proptest::collection::vec(any::<u8>(), 0..40), min in 0usize..50, max in 0usize..300) {
            if let Ok(expect) = HexPattern::parse(&expect, true) {
                let _ = UdpReply { expect, min_len: min, max_len: max }.mismatch(&reply);
            }
        }
    }
}
