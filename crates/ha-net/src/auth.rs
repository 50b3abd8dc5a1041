//! Frame authentication (heartbeat's authkeys) and replay protection.
//!
//! Every frame ends with a tag over all bytes before it, computed with the key whose id is in
//! the header. Several keys may be known at once so a key can be rotated without downtime: the
//! active key signs, every known key verifies. Frames that fail any check are counted in
//! [`Counters`] and dropped; nothing they say reaches the state machine.

use std::collections::BTreeMap;

use ha_core::model::{AuthAlgorithm, AuthSpec};
use hmac::{Hmac, Mac};
use serde::Serialize;

use crate::{Error, Result};

/// Key id written in frames sent without any authentication.
pub const NO_AUTH_KEY_ID: u8 = 0;

/// One usable key.
#[derive(Clone)]
struct Key {
    algorithm: AuthAlgorithm,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Key")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Length of the tag `algorithm` produces.
pub fn tag_len(algorithm: AuthAlgorithm) -> u8 {
    match algorithm {
        AuthAlgorithm::HmacSha256 => 32,
        AuthAlgorithm::HmacSha1 => 20,
        AuthAlgorithm::HmacMd5 => 16,
        AuthAlgorithm::Crc => 4,
    }
}

fn compute(algorithm: AuthAlgorithm, secret: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so new_from_slice cannot fail; an empty tag (which
    // never verifies) stands in rather than a panic if it ever did.
    macro_rules! hmac {
        ($d:ty) => {
            match <Hmac<$d> as Mac>::new_from_slice(secret) {
                Ok(mut m) => {
                    m.update(data);
                    m.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        };
    }
    match algorithm {
        AuthAlgorithm::HmacSha256 => hmac!(sha2::Sha256),
        AuthAlgorithm::HmacSha1 => hmac!(sha1::Sha1),
        AuthAlgorithm::HmacMd5 => hmac!(md5::Md5),
        AuthAlgorithm::Crc => crc32c::crc32c(data).to_be_bytes().to_vec(),
    }
}

/// Constant-time comparison, so timing does not reveal how much of a forged tag was right.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a frame's tag was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The key id is not among the known keys.
    #[error("unknown key id {0}")]
    UnknownKey(u8),
    /// The tag does not match.
    #[error("bad tag")]
    BadTag,
    /// An untagged frame while authentication is required.
    #[error("frame carries no authentication")]
    Unauthenticated,
}

/// The keys of a node: which one signs, which ones verify.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: BTreeMap<u8, Key>,
    active: Option<u8>,
    insecure_no_auth: bool,
}

impl Keyring {
    /// Build from the model's settings. Fails when no key is active unless
    /// `insecure_no_auth` opts in; warns loudly about `crc` keys and running without keys.
    pub fn from_spec(spec: &AuthSpec) -> Result<Self> {
        let mut keys = BTreeMap::new();
        for k in &spec.keys {
            if k.algorithm != AuthAlgorithm::Crc && k.secret.is_empty() {
                return Err(Error::Auth(format!(
                    "key {} has an empty secret; give it a secret (authkeys: `{} sha1 SECRET`)",
                    k.id, k.id
                )));
            }
            if keys
                .insert(
                    k.id,
                    Key {
                        algorithm: k.algorithm,
                        secret: k.secret.clone(),
                    },
                )
                .is_some()
            {
                return Err(Error::Auth(format!("key id {} is defined twice", k.id)));
            }
        }
        let active = match spec.active {
            Some(id) => {
                let Some(key) = keys.get(&id) else {
                    return Err(Error::Auth(format!(
                        "active key {id} (authkeys `auth {id}`) is not defined"
                    )));
                };
                if key.algorithm == AuthAlgorithm::Crc {
                    tracing::warn!(
                        key = id,
                        "AUTHENTICATION DISABLED: key {id} is `crc`, which only detects corruption; \
                         anyone on the heartbeat network can forge cluster messages. Use sha256 or sha1."
                    );
                }
                Some(id)
            }
            None if spec.insecure_no_auth => {
                tracing::warn!(
                    "AUTHENTICATION DISABLED (insecure_no_auth): cluster frames are neither signed nor \
                     verified; anyone on the heartbeat network can take over resources"
                );
                None
            }
            None => {
                return Err(Error::Auth(
                    "no active key: configure a key (authkeys `auth N` plus `N sha1 SECRET`) or set \
                     auth.insecure_no_auth to run unauthenticated"
                        .into(),
                ));
            }
        };
        Ok(Keyring {
            keys,
            active,
            insecure_no_auth: spec.insecure_no_auth,
        })
    }

    /// Key id and tag length used for outgoing frames.
    pub fn signing(&self) -> (u8, u8) {
        match self
            .active
            .and_then(|id| self.keys.get(&id).map(|k| (id, k)))
        {
            Some((id, k)) => (id, tag_len(k.algorithm)),
            None => (NO_AUTH_KEY_ID, 0),
        }
    }

    /// The tag for `data` (header and payload) with the active key; empty without one.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        match self.active.and_then(|id| self.keys.get(&id)) {
            Some(k) => compute(k.algorithm, &k.secret, data),
            None => Vec::new(),
        }
    }

    /// Check `tag` over `data` with key `key_id`.
    pub fn verify(&self, key_id: u8, data: &[u8], tag: &[u8]) -> Result<(), AuthError> {
        if tag.is_empty() {
            return if self.insecure_no_auth {
                Ok(())
            } else {
                Err(AuthError::Unauthenticated)
            };
        }
        let key = self
            .keys
            .get(&key_id)
            .ok_or(AuthError::UnknownKey(key_id))?;
        if ct_eq(&compute(key.algorithm, &key.secret, data), tag) {
            Ok(())
        } else {
            Err(AuthError::BadTag)
        }
    }
}

/// Frames seen at or below `highest - REPLAY_WINDOW` are refused as too old.
pub const REPLAY_WINDOW: u64 = 128;

/// Why the replay check refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// From an older incarnation of the sender (a frame recorded before it restarted).
    #[error("stale incarnation")]
    StaleIncarnation,
    /// Already received.
    #[error("replayed frame")]
    Replay,
    /// Older than the window can tell.
    #[error("frame older than the replay window")]
    TooOld,
}

/// Sliding window over one sender's frame sequence numbers (as in IPsec): the highest seen plus
/// a bitmap of the [`REPLAY_WINDOW`] numbers below it.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    incarnation: u64,
    highest: u64,
    seen: u128,
}

impl ReplayWindow {
    /// The incarnation the window tracks.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Accept (and record) `(incarnation, seq)` or say why not. Call only after the tag
    /// verified, so forged frames cannot move the window.
    pub fn check(&mut self, incarnation: u64, seq: u64) -> Result<bool, ReplayError> {
        let mut restarted = false;
        if incarnation < self.incarnation {
            return Err(ReplayError::StaleIncarnation);
        }
        if incarnation > self.incarnation {
            // The sender restarted: its sequence numbers start again.
            *self = ReplayWindow {
                incarnation,
                highest: 0,
                seen: 0,
            };
            restarted = true;
        }
        if seq == 0 {
            return Err(ReplayError::TooOld);
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= 128 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
            return Ok(restarted);
        }
        let back = self.highest - seq;
        if back >= REPLAY_WINDOW {
            return Err(ReplayError::TooOld);
        }
        let bit = 1u128 << back;
        if self.seen & bit != 0 {
            return Err(ReplayError::Replay);
        }
        self.seen |= bit;
        Ok(restarted)
    }
}

/// What the transport saw, for the status snapshot. Every dropped frame lands in exactly one
/// drop counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Frames handed to the media.
    pub frames_sent: u64,
    /// Frames received (before any check).
    pub frames_received: u64,
    /// Frames accepted (authenticated, fresh, decoded).
    pub frames_accepted: u64,
    /// Dropped: not parseable (bad magic, lengths, version).
    pub malformed: u64,
    /// Dropped: another cluster's id.
    pub wrong_cluster: u64,
    /// Dropped: sender is not a configured node.
    pub unknown_node: u64,
    /// Dropped: key id not known.
    pub unknown_key: u64,
    /// Dropped: tag did not verify.
    pub bad_mac: u64,
    /// Dropped: untagged while authentication is required.
    pub unauthenticated: u64,
    /// Dropped: replayed frame.
    pub replayed: u64,
    /// Dropped: older than the replay window.
    pub too_old: u64,
    /// Dropped: from an earlier incarnation of the sender.
    pub stale_incarnation: u64,
    /// Dropped: authenticated but the payload did not decode.
    pub bad_payload: u64,
    /// Ignored: our own frames looped back (multicast loop, broadcast).
    pub own_frames: u64,
    /// Dropped: received on another link than the one in its header.
    pub wrong_link: u64,
    /// Control messages retransmitted (after a NACK or resend timer).
    pub retransmits: u64,
    /// NACKs sent.
    pub nacks_sent: u64,
    /// NACKs received.
    pub nacks_received: u64,
    /// Control messages given up (peer never acknowledged, or sender no longer held them).
    pub control_lost: u64,
    /// Duplicate control messages (already delivered) ignored.
    pub duplicates: u64,
    /// "Port unreachable" answers to our frames from a peer's host, handed to ha-core.
    pub unreachable_reports: u64,
    /// "Port unreachable" answers from an address no peer was heard from (ignored).
    pub unreachable_unknown: u64,
    /// Peer daemons seen exiting through the exit watch.
    pub peer_exits: u64,
}

impl Counters {
    /// Sum of all drop counters.
    pub fn dropped(&self) -> u64 {
        self.malformed
            + self.wrong_cluster
            + self.unknown_node
            + self.wrong_link
            + self.unknown_key
            + self.bad_mac
            + self.unauthenticated
            + self.replayed
            + self.too_old
            + self.stale_incarnation
            + self.bad_payload
    }
}
