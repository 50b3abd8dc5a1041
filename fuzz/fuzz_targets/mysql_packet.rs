//! Fuzz the MySQL check's decoders: a server's greeting, login replies and command replies
//! never panic, and a decoded greeting's handshake response can always be built.
#![no_main]

use ha_lvs::checker::mysql::{
    MysqlCheck, decode_greeting, decode_reply, decode_response, handshake_response,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_reply(data);
    let _ = decode_response(data, false);
    let _ = decode_response(data, true);
    if let Ok(g) = decode_greeting(data) {
        let c = MysqlCheck {
            user: "lvs".into(),
            password: "pw".into(),
            database: Some("db".into()),
            query: None,
        };
        let _ = handshake_response(&g, &c);
    }
});
