//! Fuzz the ICMP / ICMPv6 decoder of the ping check: no panic on any input (as a bare ICMP
//! message of either family and as a raw IPv4 packet), and a decoded echo encodes back to a
//! message that decodes the same.
#![no_main]

use ha_lvs::checker::icmp::{Family, Message, decode, encode_echo, ipv4_payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((_, icmp)) = ipv4_payload(data) {
        let _ = decode(Family::V4, icmp);
    }
    for family in [Family::V4, Family::V6] {
        let (reply, echo) = match decode(family, data) {
            Some(Message::EchoRequest(e)) => (false, e),
            Some(Message::EchoReply(e)) => (true, e),
            _ => continue,
        };
        let wire = encode_echo(family, reply, &echo);
        let back = decode(family, &wire).expect("own encoding decodes");
        let want = if reply {
            Message::EchoReply(echo)
        } else {
            Message::EchoRequest(echo)
        };
        assert_eq!(back, want);
    }
});
