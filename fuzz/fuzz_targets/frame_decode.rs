//! Fuzz ha-net's frame parser, authentication and message decoder: none may panic, and a frame
//! that opens must re-encode to the same body.
#![no_main]

use ha_core::message::Message;
use ha_core::model::{AuthAlgorithm, AuthKey, AuthSpec};
use ha_net::auth::Keyring;
use ha_net::session;
use ha_net::wire::{self, Body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wire::parse(data);
    if let Some((&kind, payload)) = data.split_first() {
        if let Ok(body) = Body::<Message>::decode(kind, payload) {
            let again = body.encode().expect("a decoded body re-encodes");
            assert_eq!(Body::<Message>::decode(kind, &again).ok(), Some(body));
        }
    }
    // Unsigned frames go through the whole path when authentication is off.
    let none = Keyring::from_spec(&AuthSpec {
        active: None,
        keys: vec![AuthKey {
            id: 1,
            algorithm: AuthAlgorithm::HmacSha256,
            secret: b"fuzz".to_vec(),
        }],
        insecure_no_auth: true,
    })
    .expect("static keyring");
    let _ = session::open::<Message>(&none, data);
});
