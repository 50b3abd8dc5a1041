//! Fuzz the `ipvsadm -S` rule parser: no panic on any input, and a parsed table written back
//! (unsorted) parses to the same table.
#![no_main]

use ha_lvs::ipvsadm::{SaveOptions, parse_rules, write_rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(table) = parse_rules(text, "fuzz") {
        let opts = SaveOptions { thresholds: true, nosort: true };
        let written = write_rules(&table, opts);
        // Local/Bypass never come out of the parser, so the text is always re-parseable.
        let back = parse_rules(&written, "rewritten").expect("own output parses");
        assert_eq!(write_rules(&back, opts), written);
    }
});
