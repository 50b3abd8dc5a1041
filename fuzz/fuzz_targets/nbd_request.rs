//! Fuzz the NBD decoders: request headers, option headers and GO/INFO option data.
#![no_main]

use ha_blockrep::nbd::proto::{decode_go, decode_option_header, decode_request, encode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode_request(data) {
        // Re-encoding a decoded header gives back the same 28 bytes.
        assert_eq!(&encode_request(&r)[..], &data[..28]);
    }
    let _ = decode_option_header(data);
    let _ = decode_go(data);
});
