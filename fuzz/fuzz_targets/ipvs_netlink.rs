//! Fuzz the IPVS generic netlink decoders: attribute sets of every command, whole netlink
//! messages, and the conversion of decoded attributes into the model. Nothing may panic, and
//! whatever decodes must re-encode and decode to the same value.
#![no_main]

use ha_lvs::model::Family;
use ha_lvs::netlink::codec::{IpvsAttrs, IpvsMessage};
use ha_lvs::netlink::convert::{daemon_from_attrs, dest_from_attrs, service_from_attrs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cmd, rest)) = data.split_first() else { return };
    if let Ok(m) = IpvsMessage::decode(cmd, rest) {
        let again = IpvsMessage::decode(cmd, &m.encode_attrs()).expect("re-decode of own encoding");
        assert_eq!(again, m);
        if let IpvsAttrs::Cmd(c) = &m.attrs {
            if let Some(s) = &c.service {
                let _ = service_from_attrs(s);
            }
            if let Some(d) = &c.dest {
                let _ = dest_from_attrs(d, Family::V4);
                let _ = dest_from_attrs(d, Family::V6);
            }
            if let Some(d) = &c.daemon {
                let _ = daemon_from_attrs(d);
            }
        }
    }
});
