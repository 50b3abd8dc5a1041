//! Fuzzes the exit watch's handshake decoders: any bytes give a message or an error, never a
//! panic; a decoded message encodes back to the bytes it was read from.
#![no_main]

use ha_net::exit_watch::hello::{CHALLENGE_LEN, Challenge, HELLO_HEAD_LEN, Hello};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Challenge::decode(data) {
        assert_eq!(&c.encode()[..], &data[..CHALLENGE_LEN]);
    }
    if let Ok(h) = Hello::decode(data) {
        let wire = h.encode();
        assert_eq!(&wire[..], &data[..HELLO_HEAD_LEN + h.tag.len()]);
    }
});
