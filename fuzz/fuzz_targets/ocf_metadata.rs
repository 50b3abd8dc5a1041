//! Fuzzes the OCF meta-data XML parser: any input gives meta-data or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ha_core::resource::MetaData::parse(text);
    }
});
