//! Fuzzes the drbd.conf / .res importer: any input gives a configuration or an error, never a
//! panic. Includes resolve under a directory that does not exist, so nothing is read.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let base = std::path::Path::new("/nonexistent/ha-fuzz");
        let _ = ha_blockrep::config::DrbdConf::parse(text, "fuzz.res", base);
    }
});
