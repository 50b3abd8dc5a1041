//! Fuzzes the FTP check's parsers: the control-connection reply reader (any bytes, fed in
//! two pieces) and the 227 / 229 reply parsers. Never a panic; a parsed passive reply has a
//! port other than 0.
#![no_main]

use ha_lvs::checker::ftp::{ReplyReader, parse_epsv, parse_pasv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut r = ReplyReader::new();
    r.feed(&data[..split]);
    r.feed(&data[split..]);
    // Bounded: every reply consumes at least one line.
    for _ in 0..=data.len() {
        match r.next_reply() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(a) = parse_pasv(&text) {
        assert_ne!(a.port(), 0);
    }
    if let Ok(p) = parse_epsv(&text) {
        assert_ne!(p, 0);
    }
});
