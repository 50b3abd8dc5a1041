//! Fuzz the replication packet decoder.
#![no_main]

use ha_blockrep::repl::packet::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((p, used))) = decode(data) {
        assert!(used <= data.len());
        // Whatever decodes must re-encode and decode to the same packet.
        let again = encode(&p);
        let back = decode(&again).ok().flatten().map(|(q, _)| q);
        assert_eq!(back, Some(p));
    }
});
