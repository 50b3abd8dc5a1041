//! Fuzz the replication packet decoders (copying and zero-copy) and the split encoder.
#![no_main]

use bytes::BytesMut;
use ha_blockrep::repl::packet::{decode, decode_buf, encode, encode_split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let copied = decode(data);
    // The zero-copy decoder agrees with the copying one on every input.
    let mut buf = BytesMut::from(data);
    let shared = decode_buf(&mut buf);
    match (&copied, &shared) {
        (Ok(Some((p, used))), Ok(Some(q))) => {
            assert_eq!(p, q);
            assert_eq!(buf.len(), data.len() - used);
        }
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        _ => panic!("decoders disagree: {copied:?} vs {shared:?}"),
    }
    if let Ok(Some((p, used))) = copied {
        assert!(used <= data.len());
        // Whatever decodes must re-encode and decode to the same packet, also when split.
        let again = encode(&p);
        let back = decode(&again).ok().flatten().map(|(q, _)| q);
        assert_eq!(back.as_ref(), Some(&p));
        let mut head = BytesMut::new();
        let tail = encode_split(&p, &mut head);
        if let Some(t) = tail {
            head.extend_from_slice(&t);
        }
        assert_eq!(&head[..], &again[..]);
    }
});
