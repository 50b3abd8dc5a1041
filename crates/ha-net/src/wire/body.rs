//! Frame bodies: application messages plus the transport's own control kinds.

use std::fmt::Debug;

use super::DecodeError;
use super::codec::{EncodeTooLong, Reader, Writer};

/// Kind code of [`Body::Ack`].
pub const KIND_ACK: u8 = 0xF0;
/// Kind code of [`Body::Nack`].
pub const KIND_NACK: u8 = 0xF1;
/// Kind code of [`Body::Skip`].
pub const KIND_SKIP: u8 = 0xF2;
/// Kind codes at or above this belong to the transport; application kinds stay below.
pub const FIRST_TRANSPORT_KIND: u8 = 0xF0;
/// Most sequence numbers one NACK may ask for.
pub const MAX_NACK: usize = 64;

/// A message type the transport can carry: `ha_core::message::Message` in production, anything
/// in tests. The codec is written by hand so the format is explicit and stable.
pub trait WireMessage: Sized + Clone + Debug + Send + 'static {
    /// Kind code, below [`FIRST_TRANSPORT_KIND`].
    fn kind(&self) -> u8;
    /// Whether the message goes through the reliable control stream (acked, retransmitted).
    /// Heartbeats are not: the next one supersedes a lost one.
    fn reliable(&self) -> bool;
    /// Append the payload.
    fn encode(&self, w: &mut Writer) -> Result<(), EncodeTooLong>;
    /// Decode the payload of a frame of `kind`. Must consume exactly the payload or fail.
    fn decode(kind: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// What a frame carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<M> {
    /// An application (ha-core) message.
    App(M),
    /// Cumulative acknowledgement of the addressee's control stream up to `upto`.
    Ack {
        /// Highest control sequence number received in order.
        upto: u64,
    },
    /// Retransmit request: the sender misses these control messages of the addressee.
    Nack {
        /// Missing control sequence numbers (at most [`MAX_NACK`]).
        missing: Vec<u64>,
    },
    /// Answer to a NACK for messages no longer held: stop waiting for anything up to `upto`.
    Skip {
        /// Control sequence numbers up to this one are given up.
        upto: u64,
    },
}

impl<M: WireMessage> Body<M> {
    /// Kind code.
    pub fn kind(&self) -> u8 {
        match self {
            Body::App(m) => m.kind(),
            Body::Ack { .. } => KIND_ACK,
            Body::Nack { .. } => KIND_NACK,
            Body::Skip { .. } => KIND_SKIP,
        }
    }

    /// Encode the payload.
    pub fn encode(&self) -> Result<Vec<u8>, crate::Error> {
        let mut w = Writer::new();
        let r = match self {
            Body::App(m) => {
                if m.kind() >= FIRST_TRANSPORT_KIND {
                    return Err(crate::Error::Encode(format!(
                        "application kind {:#04x} collides with transport kinds",
                        m.kind()
                    )));
                }
                m.encode(&mut w)
            }
            Body::Ack { upto } | Body::Skip { upto } => {
                w.u64(*upto);
                Ok(())
            }
            Body::Nack { missing } => {
                let n = missing.len().min(MAX_NACK);
                w.count(n).map(|()| {
                    for s in &missing[..n] {
                        w.u64(*s);
                    }
                })
            }
        };
        r.map_err(|e| crate::Error::Encode(e.to_string()))?;
        Ok(w.into_inner().to_vec())
    }

    /// Decode a payload of `kind`.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let body = match kind {
            KIND_ACK => Body::Ack {
                upto: r.u64("ack.upto")?,
            },
            KIND_SKIP => Body::Skip {
                upto: r.u64("skip.upto")?,
            },
            KIND_NACK => {
                let n = r.count("nack.missing", 8)?;
                if n > MAX_NACK {
                    return Err(DecodeError::BadCount {
                        field: "nack.missing",
                        count: n,
                        remaining: r.remaining(),
                    });
                }
                let mut missing = Vec::with_capacity(n);
                for _ in 0..n {
                    missing.push(r.u64("nack.seq")?);
                }
                Body::Nack { missing }
            }
            k if k >= FIRST_TRANSPORT_KIND => return Err(DecodeError::UnknownKind(k)),
            k => Body::App(M::decode(k, &mut r)?),
        };
        r.finish("payload")?;
        Ok(body)
    }
}
