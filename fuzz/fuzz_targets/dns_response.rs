//! Fuzz the DNS decoder of the DNS check: no panic on any input, the check's verdict on it
//! never panics, and a decoded message encodes back to bytes that decode the same (when
//! its names can be written as text again).
#![no_main]

use ha_lvs::checker::dns::{DnsType, Query, decode, encode_with};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let q = Query::new(0x1234, "www.example.com", DnsType::A).expect("valid query");
    let _ = q.judge(data, Some("192.0.2.1"), true);
    let _ = q.judge(data, None, false);
    let Ok(m) = decode(data) else {
        return;
    };
    for compress in [false, true] {
        // Names with escaped bytes (\DDD) are not accepted back as text: skip those.
        let Ok(wire) = encode_with(&m, compress) else {
            continue;
        };
        let mut back = decode(&wire).expect("own encoding decodes");
        // Counts of sections we do not carry are written as 0.
        back.header.nscount = m.header.nscount;
        back.header.arcount = m.header.arcount;
        assert_eq!(back, m);
    }
});
