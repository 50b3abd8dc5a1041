//! Fuzzes the heartbeat importer: the input is ha.cf, haresources and authkeys separated by NUL
//! bytes. Any input must give a model or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let ha_cf = parts.next().unwrap_or("");
    let haresources = parts.next().unwrap_or("");
    let authkeys = parts.next().unwrap_or("");
    if let Ok(model) = ha_core::config::import_heartbeat_str(ha_cf, haresources, authkeys) {
        // A model that imports must be internally consistent.
        for group in &model.groups {
            for id in &group.resources {
                assert!(model.resources.contains_key(id));
            }
            if let Some(node) = group.preferred_node {
                assert!(model.node(node).is_some());
            }
        }
        assert!(model.timing.deadtime > model.timing.keepalive.saturating_mul(2));
    }
});
