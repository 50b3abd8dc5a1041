//! Fuzzes the control socket's command parser: any line gives a command or an error naming
//! the commands, never a panic; a parsed command prints back as the line's words.
#![no_main]

use ha_net::control::ControlCommand;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match ControlCommand::parse(line) {
        Ok(c) => assert_eq!(
            c.to_string(),
            line.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
        Err(e) => assert!(e.contains("standby, online, status")),
    }
});
