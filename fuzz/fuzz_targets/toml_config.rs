//! Fuzzes the TOML loader: any text must give a model or an error carrying a location, never
//! a panic; a model that loads must survive export and reload unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ha_core::config::from_toml_str(text, "fuzz.toml") {
        Ok(model) => {
            for group in &model.groups {
                for id in &group.resources {
                    assert!(model.resources.contains_key(id));
                }
            }
            // Whatever loads must write back as TOML that loads to the same model.
            let text = ha_core::config::to_toml_string(&model).expect("a loaded model exports");
            let again = ha_core::config::from_toml_str(&text, "again.toml")
                .unwrap_or_else(|e| panic!("exported model does not load: {e}\n{text}"));
            assert_eq!(again, model);
        }
        Err(ha_core::Error::Config { location, .. }) => {
            // Line 0 means "missing"; otherwise it must be a line of the input (or just past
            // its last newline, for an error at the very end).
            assert!(location.line <= text.lines().count() + 1);
        }
        // secret_file reads can fail; any other kind of error would be a bug.
        Err(e) => panic!("unexpected error kind: {e}"),
    }
});
