//! The wire format: a versioned, compact, authenticated binary frame.
//!
//! ```text
//!  0      2    3    4         8    9    10   11       13     15            23     31      39     41
//!  +------+----+----+---------+----+----+----+--------+------+-------------+------+-------+------+---------+-----+
//!  |magic |ver |kind|cluster  |key |tag |link|sender  |dest  | incarnation | seq  |ctl_seq|paylen| payload | tag |
//!  | "HA" | 1  | u8 |u32      |id  |len |u8  |u16     |u16   | u64         | u64  |u64    |u16   |         |     |
//!  +------+----+----+---------+----+----+----+--------+------+-------------+------+-------+------+---------+-----+
//! ```
//!
//! All integers are big-endian. `cluster` is the CRC-32C of the cluster name, so two clusters
//! on one LAN ignore each other. `link` is the medium the frame was sent on: every medium gets
//! its own copy with its own `seq`, so the copies are distinct frames (each proves its own link
//! alive) and a frame replayed onto another link is refused. `dest` is a node id or `0xFFFF`
//! for every node. `seq` numbers every frame a sender incarnation emits (replay protection:
//! one sliding window per sender and link); `ctl_seq` is the sender's position
//! in its reliable control stream: a control frame carries its own number, any other frame the
//! last number assigned, so a receiver notices a lost control message from the next heartbeat.
//! The tag (HMAC, or CRC-32C for `crc` keys, or nothing without authentication) covers every byte
//! before it; its length is in the header so the frame parses before the key is looked up.

pub mod body;
pub mod codec;
pub mod message;

pub use body::{Body, WireMessage};
pub use codec::{Reader, Writer};

use bytes::{BufMut, BytesMut};
use ha_core::{LinkId, NodeId};

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"HA";
/// The format version this code speaks: ha-core's message schema version, which this frame
/// layout and the codec in [`message`] implement (a schema change is a format change).
pub const VERSION: u8 = ha_core::message::PROTOCOL_VERSION;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 41;
/// Largest frame: what one UDP datagram over IPv4 can carry.
pub const MAX_FRAME_LEN: usize = 65_507;
/// `dest` value meaning every node.
pub const BROADCAST: u16 = 0xFFFF;

/// The cluster's identity on the wire: CRC-32C of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ClusterId(pub u32);

impl ClusterId {
    /// The id of the cluster called `name`.
    pub fn from_name(name: &str) -> Self {
        ClusterId(crc32c::crc32c(name.as_bytes()))
    }
}

/// Fixed header fields of a frame (everything except payload and tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type (see [`Body`]).
    pub kind: u8,
    /// Cluster id.
    pub cluster: ClusterId,
    /// Id of the key whose tag follows.
    pub key_id: u8,
    /// The medium this copy was sent on.
    pub link: LinkId,
    /// Sending node.
    pub sender: NodeId,
    /// Addressee, `None` for every node.
    pub dest: Option<NodeId>,
    /// Sender incarnation: grows with every restart of the sender.
    pub incarnation: u64,
    /// Frame sequence number within the incarnation, from 1.
    pub seq: u64,
    /// Control stream position (see the module docs).
    pub ctl_seq: u64,
}

/// Why a frame could not be decoded. Decoders return these, never panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a field needs.
    #[error("truncated at {field}: need {needed} bytes, {available} left")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// Not one of our frames.
    #[error("bad magic")]
    BadMagic,
    /// A format version this code does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// Unknown message type.
    #[error("unknown message kind {0:#04x}")]
    UnknownKind(u8),
    /// A field holds a value outside its domain.
    #[error("invalid value {value} in {field}")]
    InvalidValue {
        /// Field.
        field: &'static str,
        /// Value read.
        value: u64,
    },
    /// A string is not UTF-8.
    #[error("{field} is not UTF-8")]
    InvalidUtf8 {
        /// Field.
        field: &'static str,
    },
    /// A sequence count exceeds the limit or what the remaining bytes can hold.
    #[error("{field}: count {count} impossible with {remaining} bytes left")]
    BadCount {
        /// Field.
        field: &'static str,
        /// Count read.
        count: usize,
        /// Bytes left.
        remaining: usize,
    },
    /// Bytes left after a complete payload.
    #[error("{extra} trailing bytes after {what}")]
    TrailingBytes {
        /// What was decoded.
        what: &'static str,
        /// Bytes left over.
        extra: usize,
    },
    /// The frame's length disagrees with its header.
    #[error("frame is {actual} bytes, header announces {declared}")]
    LengthMismatch {
        /// Length from the header.
        declared: usize,
        /// Received length.
        actual: usize,
    },
    /// Larger than any valid frame.
    #[error("frame of {0} bytes exceeds the maximum")]
    TooLarge(usize),
}

/// A frame split into its parts, before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The header.
    pub header: Header,
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Authentication tag.
    pub tag: &'a [u8],
    /// Every byte the tag covers (header and payload).
    pub signed: &'a [u8],
}

/// Split `buf` into header, payload and tag, checking every length.
pub fn parse(buf: &[u8]) -> Result<RawFrame<'_>, DecodeError> {
    if buf.len() > MAX_FRAME_LEN {
        return Err(DecodeError::TooLarge(buf.len()));
    }
    let mut r = Reader::new(buf);
    if r.take(2, "magic")? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let kind = r.u8("kind")?;
    let cluster = ClusterId(r.u32("cluster")?);
    let key_id = r.u8("key_id")?;
    let tag_len = usize::from(r.u8("tag_len")?);
    let link = LinkId(r.u8("link")?);
    let sender = r.u16("sender")?;
    if sender == BROADCAST {
        return Err(DecodeError::InvalidValue {
            field: "sender",
            value: u64::from(sender),
        });
    }
    let dest = r.u16("dest")?;
    let incarnation = r.u64("incarnation")?;
    let seq = r.u64("seq")?;
    let ctl_seq = r.u64("ctl_seq")?;
    let payload_len = usize::from(r.u16("payload_len")?);
    let declared = HEADER_LEN + payload_len + tag_len;
    if declared != buf.len() {
        return Err(DecodeError::LengthMismatch {
            declared,
            actual: buf.len(),
        });
    }
    let payload = r.take(payload_len, "payload")?;
    let tag = r.take(tag_len, "tag")?;
    Ok(RawFrame {
        header: Header {
            kind,
            cluster,
            key_id,
            link,
            sender: NodeId(sender),
            dest: (dest != BROADCAST).then_some(NodeId(dest)),
            incarnation,
            seq,
            ctl_seq,
        },
        payload,
        tag,
        signed: &buf[..HEADER_LEN + payload_len],
    })
}

/// Write header and payload, leaving room for nothing else: the caller appends a tag of
/// `tag_len` bytes computed over the returned buffer.
pub fn build_unsigned(
    header: &Header,
    payload: &[u8],
    tag_len: u8,
) -> Result<BytesMut, crate::Error> {
    let payload_len = u16::try_from(payload.len())
        .map_err(|_| crate::Error::Encode(format!("payload of {} bytes", payload.len())))?;
    let total = HEADER_LEN + payload.len() + usize::from(tag_len);
    if total > MAX_FRAME_LEN {
        return Err(crate::Error::Encode(format!("frame of {total} bytes")));
    }
    if header.sender.0 == BROADCAST || header.dest.is_some_and(|d| d.0 == BROADCAST) {
        return Err(crate::Error::Encode(format!(
            "node id {BROADCAST:#06x} is reserved"
        )));
    }
    let mut b = BytesMut::with_capacity(total);
    b.put_slice(&MAGIC);
    b.put_u8(VERSION);
    b.put_u8(header.kind);
    b.put_u32(header.cluster.0);
    b.put_u8(header.key_id);
    b.put_u8(tag_len);
    b.put_u8(header.link.0);
    b.put_u16(header.sender.0);
    b.put_u16(header.dest.map_or(BROADCAST, |d| d.0));
    b.put_u64(header.incarnation);
    b.put_u64(header.seq);
    b.put_u64(header.ctl_seq);
    b.put_u16(payload_len);
    b.put_slice(payload);
    Ok(b)
}
