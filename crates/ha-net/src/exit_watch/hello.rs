//! The two messages that open an exit-watch connection.
//!
//! The watcher connects and sends a [`Challenge`] (a fresh nonce); the watched daemon answers
//! with a [`Hello`]: its node id and incarnation, signed over the nonce with the cluster key.
//! Only then does a close of the connection count as that instance's exit.
//!
//! ```text
//! Challenge: "HAXW" | version 1 | nonce (16)
//! Hello:     "HAXW" | version 1 | node u16 | incarnation u64 | key id u8 | tag len u8 | tag
//! signed:    "ha-toolkit exit-watch hello" | nonce | node | incarnation
//! ```

use bytes::{Buf, BufMut};

/// First bytes of both messages.
pub const MAGIC: &[u8; 4] = b"HAXW";
/// Wire version.
pub const VERSION: u8 = 1;
/// Length of a [`Challenge`].
pub const CHALLENGE_LEN: usize = 4 + 1 + 16;
/// Length of a [`Hello`] before its tag.
pub const HELLO_HEAD_LEN: usize = 4 + 1 + 2 + 8 + 1 + 1;
/// Longest tag accepted (HMAC-SHA512 would fit).
pub const MAX_TAG_LEN: usize = 64;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// Fewer bytes than the message needs.
    #[error("truncated: {0} bytes")]
    Truncated(usize),
    /// Not an exit-watch message.
    #[error("bad magic")]
    Magic,
    /// Another version.
    #[error("unsupported version {0}")]
    Version(u8),
    /// A tag longer than any known algorithm's.
    #[error("tag of {0} bytes is too long")]
    TagLen(u8),
}

/// The watcher's opening: a nonce the answer must be signed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// Fresh random bytes.
    pub nonce: [u8; 16],
}

impl Challenge {
    /// The wire form.
    pub fn encode(&self) -> [u8; CHALLENGE_LEN] {
        let mut out = [0u8; CHALLENGE_LEN];
        let mut b = &mut out[..];
        b.put_slice(MAGIC);
        b.put_u8(VERSION);
        b.put_slice(&self.nonce);
        out
    }

    /// Parse the wire form.
    pub fn decode(buf: &[u8]) -> Result<Challenge, HelloError> {
        if buf.len() < CHALLENGE_LEN {
            return Err(HelloError::Truncated(buf.len()));
        }
        let mut b = check_head(buf)?;
        let mut nonce = [0u8; 16];
        b.copy_to_slice(&mut nonce);
        Ok(Challenge { nonce })
    }
}

/// The watched daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Its node id.
    pub node: u16,
    /// Its incarnation.
    pub incarnation: u64,
    /// The key that signed it.
    pub key_id: u8,
    /// The signature over [`Hello::signed`] (empty without authentication).
    pub tag: Vec<u8>,
}

impl Hello {
    /// The bytes the tag covers.
    pub fn signed(nonce: &[u8; 16], node: u16, incarnation: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        v.put_slice(b"ha-toolkit exit-watch hello");
        v.put_slice(nonce);
        v.put_u16(node);
        v.put_u64(incarnation);
        v
    }

    /// The wire form (a tag longer than [`MAX_TAG_LEN`] is cut, and then fails to verify).
    pub fn encode(&self) -> Vec<u8> {
        let tag = &self.tag[..self.tag.len().min(MAX_TAG_LEN)];
        let mut v = Vec::with_capacity(HELLO_HEAD_LEN + tag.len());
        v.put_slice(MAGIC);
        v.put_u8(VERSION);
        v.put_u16(self.node);
        v.put_u64(self.incarnation);
        v.put_u8(self.key_id);
        v.put_u8(u8::try_from(tag.len()).unwrap_or(0));
        v.put_slice(tag);
        v
    }

    /// How many tag bytes follow a [`HELLO_HEAD_LEN`]-byte head.
    pub fn tag_len(head: &[u8]) -> Result<usize, HelloError> {
        if head.len() < HELLO_HEAD_LEN {
            return Err(HelloError::Truncated(head.len()));
        }
        check_head(head)?;
        let n = head[HELLO_HEAD_LEN - 1];
        if usize::from(n) > MAX_TAG_LEN {
            return Err(HelloError::TagLen(n));
        }
        Ok(usize::from(n))
    }

    /// Parse the wire form (head and tag, nothing after).
    pub fn decode(buf: &[u8]) -> Result<Hello, HelloError> {
        let tag_len = Self::tag_len(buf)?;
        if buf.len() < HELLO_HEAD_LEN + tag_len {
            return Err(HelloError::Truncated(buf.len()));
        }
        let mut b = &buf[5..];
        let node = b.get_u16();
        let incarnation = b.get_u64();
        let key_id = b.get_u8();
        b.advance(1);
        Ok(Hello {
            node,
            incarnation,
            key_id,
            tag: b[..tag_len].to_vec(),
        })
    }
}

/// Check magic and version; returns the bytes after them.
fn check_head(buf: &[u8]) -> Result<&[u8], HelloError> {
    if buf.len() < 5 {
        return Err(HelloError::Truncated(buf.len()));
    }
    if &buf[..4] != MAGIC {
        return Err(HelloError::Magic);
    }
    if buf[4] != VERSION {
        return Err(HelloError::Version(buf[4]));
    }
    Ok(&buf[5..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn challenge_round_trips(nonce in any::<[u8; 16]>()) {
            let c = Challenge { nonce };
            prop_assert_eq!(Challenge::decode(&c.encode()), Ok(c));
        }

        #[test]
        fn hello_round_trips(
            node in any::<u16>(),
            incarnation in any::<u64>(),
            key_id in any::<u8>(),
            tag in proptest::collection::vec(any::<u8>(), 0..=MAX_TAG_LEN),
        ) {
            let h = Hello { node, incarnation, key_id, tag };
            let wire = h.encode();
            prop_assert_eq!(Hello::tag_len(&wire[..HELLO_HEAD_LEN]), Ok(h.tag.len()));
            prop_assert_eq!(Hello::decode(&wire), Ok(h));
        }

        #[test]
        fn decoders_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = Challenge::decode(&buf);
            let _ = Hello::decode(&buf);
            let _ = Hello::tag_len(&buf);
        }
    }

    #[test]
    fn refuses_what_is_not_a_hello() {
        let h = Hello {
            node: 1,
            incarnation: 2,
            key_id: 3,
            tag: vec![9; 32],
        };
        let wire = h.encode();
        assert_eq!(Hello::decode(&wire[..10]), Err(HelloError::Truncated(10)));
        assert_eq!(
            Hello::decode(&wire[..HELLO_HEAD_LEN + 5]),
            Err(HelloError::Truncated(HELLO_HEAD_LEN + 5))
        );
        let mut bad = wire.clone();
        bad[0] = b'X';
        assert_eq!(Hello::decode(&bad), Err(HelloError::Magic));
        let mut bad = wire.clone();
        bad[4] = 2;
        assert_eq!(Hello::decode(&bad), Err(HelloError::Version(2)));
        let mut bad = wire;
        bad[HELLO_HEAD_LEN - 1] = 200;
        assert_eq!(Hello::decode(&bad), Err(HelloError::TagLen(200)));
    }
}
