//! Replication wire format (sans-IO codec).
//!
//! Every packet: `magic u32 | command u16 | reserved u16 | payload length u32` (big endian),
//! then the payload. [`decode`] never panics on any input; it returns `Ok(None)` while a
//! packet is incomplete.

use crate::meta::Uuids;
use bytes::{BufMut, Bytes, BytesMut};

/// Packet magic ("HBRP").
pub const MAGIC: u32 = 0x4842_5250;
/// Header length.
pub const HEADER_LEN: usize = 12;
/// Largest payload accepted: the largest NBD request (32 MiB) plus headroom for fields.
pub const MAX_PAYLOAD: usize = (32 << 20) + 256;
/// Protocol versions this build speaks.
pub const VERSION_MIN: u32 = 1;
/// Highest protocol version this build speaks.
pub const VERSION_MAX: u32 = 1;

/// `Data` flag: force unit access.
pub const DF_FUA: u32 = 1;
/// `Params` flag: this node crashed while Primary.
pub const PF_CRASHED_PRIMARY: u32 = 1;
/// `Params` flag: the operator asked to discard this node's data.
pub const PF_DISCARD_MY_DATA: u32 = 2;
/// `Params` flag: the bitmap generation started while this node was Primary.
pub const PF_BM_WHILE_PRIMARY: u32 = 4;
/// `Params` flag: this node's metadata says its data is consistent.
pub const PF_CONSISTENT: u32 = 8;
/// `Params` flag: this node marked its peer Outdated.
pub const PF_PEER_OUTDATED: u32 = 16;

/// A replication packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// First packet each way: supported versions, auth nonce and node name.
    Hello {
        /// Lowest supported version.
        min_ver: u32,
        /// Highest supported version.
        max_ver: u32,
        /// Random challenge for the peer to sign.
        nonce: [u8; 32],
        /// Sender's node name.
        name: String,
    },
    /// HMAC over the peer's nonce (see `auth`).
    Auth {
        /// The MAC.
        mac: [u8; 32],
    },
    /// State exchanged after authentication.
    Params {
        /// Replication protocol code.
        protocol: u8,
        /// Data area size in bytes.
        data_size: u64,
        /// Role code (see [`role_code`]).
        role: u8,
        /// Disk state code (see [`disk_code`]).
        disk: u8,
        /// `PF_*` flags.
        flags: u32,
        /// Generation UUIDs.
        uuids: Uuids,
        /// Bits set in the sender's bitmap.
        bits_set: u64,
    },
    /// A chunk of the sender's bitmap, as little-endian 64-bit words starting at `word`.
    Bitmap {
        /// First word index.
        word: u64,
        /// Encoded words.
        data: Bytes,
    },
    /// End of the bitmap.
    BitmapDone,
    /// Application write.
    Data {
        /// Request sequence number.
        seq: u64,
        /// Byte offset.
        offset: u64,
        /// `DF_*` flags.
        flags: u32,
        /// Payload.
        data: Bytes,
    },
    /// Application discard or write-zeroes.
    Zero {
        /// Request sequence number.
        seq: u64,
        /// Byte offset.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Discard rather than write zeroes.
        discard: bool,
    },
    /// Flush everything received before this packet.
    Flush {
        /// Request sequence number.
        seq: u64,
    },
    /// Protocol B: the peer received request `seq`.
    RecvAck {
        /// Sequence.
        seq: u64,
    },
    /// The peer wrote request `seq`.
    WriteAck {
        /// Sequence.
        seq: u64,
    },
    /// The peer failed to write request `seq`.
    NegAck {
        /// Sequence.
        seq: u64,
    },
    /// The peer flushed everything up to `seq`.
    FlushAck {
        /// Sequence.
        seq: u64,
    },
    /// Resync data.
    RsData {
        /// Byte offset.
        offset: u64,
        /// Payload.
        data: Bytes,
    },
    /// Checksum-based resync: target compares this digest with its own block.
    RsChecksum {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u32,
        /// SHA-256 of the source's data.
        digest: [u8; 32],
    },
    /// Target asks for the data of a block whose checksum differed.
    RsDataRequest {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u32,
    },
    /// Target has the range (written or checksum equal).
    RsAck {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u32,
    },
    /// Resync starts: the target takes `uuid` as its current generation, so an interrupted
    /// resync resumes from the bitmap (the source's bitmap UUID is the same value).
    SyncUuid {
        /// The sync generation.
        uuid: u64,
    },
    /// Resync finished; the target adopts these generations.
    SyncDone {
        /// Source's UUIDs.
        uuids: Uuids,
    },
    /// Online verify request.
    OvRequest {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u32,
        /// Digest of the requester's data.
        digest: [u8; 32],
    },
    /// Online verify answer.
    OvReply {
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u32,
        /// Whether the digests matched.
        equal: bool,
    },
    /// Role or disk change of the sender.
    State {
        /// Role code.
        role: u8,
        /// Disk code.
        disk: u8,
    },
    /// Keep-alive.
    Ping,
    /// Keep-alive answer.
    PingAck,
    /// Orderly disconnect.
    Disconnect,
}

/// Decode failure (the connection must be dropped).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Wrong magic.
    #[error("bad magic 0x{0:08x}")]
    Magic(u32),
    /// Payload longer than [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes too large")]
    TooLarge(usize),
    /// Unknown command.
    #[error("unknown command {0}")]
    Command(u16),
    /// Payload malformed.
    #[error("malformed {0} packet")]
    Malformed(&'static str),
}

mod cmd {
    pub const HELLO: u16 = 1;
    pub const AUTH: u16 = 2;
    pub const PARAMS: u16 = 3;
    pub const BITMAP: u16 = 4;
    pub const BITMAP_DONE: u16 = 5;
    pub const DATA: u16 = 6;
    pub const ZERO: u16 = 7;
    pub const FLUSH: u16 = 8;
    pub const RECV_ACK: u16 = 9;
    pub const WRITE_ACK: u16 = 10;
    pub const NEG_ACK: u16 = 11;
    pub const FLUSH_ACK: u16 = 12;
    pub const RS_DATA: u16 = 13;
    pub const RS_CSUM: u16 = 14;
    pub const RS_REQ: u16 = 15;
    pub const RS_ACK: u16 = 16;
    pub const SYNC_DONE: u16 = 17;
    pub const OV_REQ: u16 = 18;
    pub const OV_REPLY: u16 = 19;
    pub const STATE: u16 = 20;
    pub const PING: u16 = 21;
    pub const PING_ACK: u16 = 22;
    pub const DISCONNECT: u16 = 23;
    pub const SYNC_UUID: u16 = 24;
}

fn put_uuids(b: &mut BytesMut, u: &Uuids) {
    b.put_u64(u.current);
    b.put_u64(u.bitmap);
    b.put_u64(u.history[0]);
    b.put_u64(u.history[1]);
}

/// Encode a packet with its header.
pub fn encode(p: &Packet) -> Bytes {
    let mut out = BytesMut::new();
    encode_into(p, &mut out);
    out.freeze()
}

/// Bulk payloads at least this large are not copied by [`encode_split`].
pub const SPLIT_MIN: usize = 16 << 10;

/// Like [`encode_into`], but a bulk payload (`Data`, `RsData`) of at least [`SPLIT_MIN`]
/// bytes is not copied: everything before it is appended to `out` and the payload is
/// returned, to be sent right after `out`'s bytes (the packet is the concatenation).
pub fn encode_split(p: &Packet, out: &mut BytesMut) -> Option<Bytes> {
    let (c, data) = match p {
        Packet::Data { data, .. } if data.len() >= SPLIT_MIN => (cmd::DATA, data),
        Packet::RsData { data, .. } if data.len() >= SPLIT_MIN => (cmd::RS_DATA, data),
        _ => {
            encode_into(p, out);
            return None;
        }
    };
    let fixed = match p {
        Packet::Data { .. } => 20,
        _ => 8,
    };
    out.reserve(HEADER_LEN + fixed);
    out.put_u32(MAGIC);
    out.put_u16(c);
    out.put_u16(0);
    out.put_u32((fixed + data.len()) as u32);
    match p {
        Packet::Data {
            seq, offset, flags, ..
        } => {
            out.put_u64(*seq);
            out.put_u64(*offset);
            out.put_u32(*flags);
        }
        Packet::RsData { offset, .. } => out.put_u64(*offset),
        _ => {}
    }
    Some(data.clone())
}

/// Append a packet with its header to `out`: the payload is copied once, straight into
/// `out` (a send loop batches packets into one buffer without an intermediate copy).
pub fn encode_into(p: &Packet, out: &mut BytesMut) {
    let start = out.len();
    out.reserve(HEADER_LEN + 64);
    out.put_u32(MAGIC);
    out.put_u16(0); // command, patched below
    out.put_u16(0);
    out.put_u32(0); // payload length, patched below
    let b = &mut *out;
    let c = match p {
        Packet::Hello {
            min_ver,
            max_ver,
            nonce,
            name,
        } => {
            b.put_u32(*min_ver);
            b.put_u32(*max_ver);
            b.put_slice(nonce);
            let n = &name.as_bytes()[..name.len().min(255)];
            b.put_u8(n.len() as u8);
            b.put_slice(n);
            cmd::HELLO
        }
        Packet::Auth { mac } => {
            b.put_slice(mac);
            cmd::AUTH
        }
        Packet::Params {
            protocol,
            data_size,
            role,
            disk,
            flags,
            uuids,
            bits_set,
        } => {
            b.put_u8(*protocol);
            b.put_u64(*data_size);
            b.put_u8(*role);
            b.put_u8(*disk);
            b.put_u32(*flags);
            put_uuids(b, uuids);
            b.put_u64(*bits_set);
            cmd::PARAMS
        }
        Packet::Bitmap { word, data } => {
            b.put_u64(*word);
            b.put_slice(data);
            cmd::BITMAP
        }
        Packet::BitmapDone => cmd::BITMAP_DONE,
        Packet::Data {
            seq,
            offset,
            flags,
            data,
        } => {
            b.reserve(data.len() + 20);
            b.put_u64(*seq);
            b.put_u64(*offset);
            b.put_u32(*flags);
            b.put_slice(data);
            cmd::DATA
        }
        Packet::Zero {
            seq,
            offset,
            len,
            discard,
        } => {
            b.put_u64(*seq);
            b.put_u64(*offset);
            b.put_u64(*len);
            b.put_u8(u8::from(*discard));
            cmd::ZERO
        }
        Packet::Flush { seq } => {
            b.put_u64(*seq);
            cmd::FLUSH
        }
        Packet::RecvAck { seq } => {
            b.put_u64(*seq);
            cmd::RECV_ACK
        }
        Packet::WriteAck { seq } => {
            b.put_u64(*seq);
            cmd::WRITE_ACK
        }
        Packet::NegAck { seq } => {
            b.put_u64(*seq);
            cmd::NEG_ACK
        }
        Packet::FlushAck { seq } => {
            b.put_u64(*seq);
            cmd::FLUSH_ACK
        }
        Packet::RsData { offset, data } => {
            b.reserve(data.len() + 8);
            b.put_u64(*offset);
            b.put_slice(data);
            cmd::RS_DATA
        }
        Packet::RsChecksum {
            offset,
            len,
            digest,
        } => {
            b.put_u64(*offset);
            b.put_u32(*len);
            b.put_slice(digest);
            cmd::RS_CSUM
        }
        Packet::RsDataRequest { offset, len } => {
            b.put_u64(*offset);
            b.put_u32(*len);
            cmd::RS_REQ
        }
        Packet::RsAck { offset, len } => {
            b.put_u64(*offset);
            b.put_u32(*len);
            cmd::RS_ACK
        }
        Packet::SyncUuid { uuid } => {
            b.put_u64(*uuid);
            cmd::SYNC_UUID
        }
        Packet::SyncDone { uuids } => {
            put_uuids(b, uuids);
            cmd::SYNC_DONE
        }
        Packet::OvRequest {
            offset,
            len,
            digest,
        } => {
            b.put_u64(*offset);
            b.put_u32(*len);
            b.put_slice(digest);
            cmd::OV_REQ
        }
        Packet::OvReply { offset, len, equal } => {
            b.put_u64(*offset);
            b.put_u32(*len);
            b.put_u8(u8::from(*equal));
            cmd::OV_REPLY
        }
        Packet::State { role, disk } => {
            b.put_u8(*role);
            b.put_u8(*disk);
            cmd::STATE
        }
        Packet::Ping => cmd::PING,
        Packet::PingAck => cmd::PING_ACK,
        Packet::Disconnect => cmd::DISCONNECT,
    };
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 4..start + 6].copy_from_slice(&c.to_be_bytes());
    out[start + 8..start + 12].copy_from_slice(&len.to_be_bytes());
}

/// Bounds-checked big-endian reader.
struct Rd<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PacketError> {
        if self.b.len() < n {
            return Err(PacketError::Malformed(self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, PacketError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, PacketError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, PacketError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
    fn arr32(&mut self) -> Result<[u8; 32], PacketError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    fn uuids(&mut self) -> Result<Uuids, PacketError> {
        Ok(Uuids {
            current: self.u64()?,
            bitmap: self.u64()?,
            history: [self.u64()?, self.u64()?],
        })
    }
    fn bool(&mut self) -> Result<bool, PacketError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(PacketError::Malformed(self.what)),
        }
    }
    fn end(self) -> Result<(), PacketError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(PacketError::Malformed(self.what))
        }
    }
}

/// Decode one packet from the front of `buf`: `Ok(Some((packet, consumed)))`, `Ok(None)` if
/// more bytes are needed.
pub fn decode(buf: &[u8]) -> Result<Option<(Packet, usize)>, PacketError> {
    let Some((c, len)) = decode_header(buf)? else {
        return Ok(None);
    };
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let payload = &buf[HEADER_LEN..HEADER_LEN + len];
    Ok(Some((decode_payload(c, payload)?, HEADER_LEN + len)))
}

/// Total length (header and payload) of the packet starting at the front of `buf`, once its
/// header is there: lets a reader reserve room for a whole large packet at once.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    Some(HEADER_LEN + len.min(MAX_PAYLOAD))
}

/// Like [`decode`], but takes a complete packet off the front of `buf` and lets bulk
/// payloads (`Data`, `RsData`, `Bitmap`) share `buf`'s memory instead of copying them.
pub fn decode_buf(buf: &mut BytesMut) -> Result<Option<Packet>, PacketError> {
    let Some((c, len)) = (match decode_header(buf)? {
        Some(h) if buf.len() >= HEADER_LEN + h.1 => Some(h),
        _ => None,
    }) else {
        return Ok(None);
    };
    let frame = buf.split_to(HEADER_LEN + len).freeze();
    let payload = frame.slice(HEADER_LEN..);
    decode_payload_from(c, &payload, Some(&payload)).map(Some)
}

/// Command and payload length from a header; `Ok(None)` if the header is incomplete.
fn decode_header(buf: &[u8]) -> Result<Option<(u16, usize)>, PacketError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let magic = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if magic != MAGIC {
        return Err(PacketError::Magic(magic));
    }
    let c = u16::from_be_bytes([buf[4], buf[5]]);
    let len = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(PacketError::TooLarge(len));
    }
    Ok(Some((c, len)))
}

/// Decode a payload for command `c` (header already parsed).
pub fn decode_payload(c: u16, payload: &[u8]) -> Result<Packet, PacketError> {
    decode_payload_from(c, payload, None)
}

/// Decode a payload; bulk data is sliced out of `shared` (which holds `payload`) if given.
fn decode_payload_from(
    c: u16,
    payload: &[u8],
    shared: Option<&Bytes>,
) -> Result<Packet, PacketError> {
    let bulk = |rest: &[u8]| match shared {
        Some(b) => b.slice_ref(rest),
        None => Bytes::copy_from_slice(rest),
    };
    let name: &'static str = match c {
        cmd::HELLO => "Hello",
        cmd::PARAMS => "Params",
        cmd::DATA => "Data",
        cmd::BITMAP => "Bitmap",
        _ => "control",
    };
    let mut r = Rd {
        b: payload,
        what: name,
    };
    let p = match c {
        cmd::HELLO => {
            let min_ver = r.u32()?;
            let max_ver = r.u32()?;
            let nonce = r.arr32()?;
            let n = r.u8()? as usize;
            let name = String::from_utf8(r.take(n)?.to_vec())
                .map_err(|_| PacketError::Malformed("Hello"))?;
            Packet::Hello {
                min_ver,
                max_ver,
                nonce,
                name,
            }
        }
        cmd::AUTH => Packet::Auth { mac: r.arr32()? },
        cmd::PARAMS => Packet::Params {
            protocol: r.u8()?,
            data_size: r.u64()?,
            role: r.u8()?,
            disk: r.u8()?,
            flags: r.u32()?,
            uuids: r.uuids()?,
            bits_set: r.u64()?,
        },
        cmd::BITMAP => {
            let word = r.u64()?;
            let rest = r.take(r.b.len())?;
            if rest.len() % 8 != 0 {
                return Err(PacketError::Malformed("Bitmap"));
            }
            Packet::Bitmap {
                word,
                data: bulk(rest),
            }
        }
        cmd::BITMAP_DONE => Packet::BitmapDone,
        cmd::DATA => {
            let seq = r.u64()?;
            let offset = r.u64()?;
            let flags = r.u32()?;
            let rest = r.take(r.b.len())?;
            Packet::Data {
                seq,
                offset,
                flags,
                data: bulk(rest),
            }
        }
        cmd::ZERO => Packet::Zero {
            seq: r.u64()?,
            offset: r.u64()?,
            len: r.u64()?,
            discard: r.bool()?,
        },
        cmd::FLUSH => Packet::Flush { seq: r.u64()? },
        cmd::RECV_ACK => Packet::RecvAck { seq: r.u64()? },
        cmd::WRITE_ACK => Packet::WriteAck { seq: r.u64()? },
        cmd::NEG_ACK => Packet::NegAck { seq: r.u64()? },
        cmd::FLUSH_ACK => Packet::FlushAck { seq: r.u64()? },
        cmd::RS_DATA => {
            let offset = r.u64()?;
            let rest = r.take(r.b.len())?;
            Packet::RsData {
                offset,
                data: bulk(rest),
            }
        }
        cmd::RS_CSUM => Packet::RsChecksum {
            offset: r.u64()?,
            len: r.u32()?,
            digest: r.arr32()?,
        },
        cmd::RS_REQ => Packet::RsDataRequest {
            offset: r.u64()?,
            len: r.u32()?,
        },
        cmd::RS_ACK => Packet::RsAck {
            offset: r.u64()?,
            len: r.u32()?,
        },
        cmd::SYNC_UUID => Packet::SyncUuid { uuid: r.u64()? },
        cmd::SYNC_DONE => Packet::SyncDone { uuids: r.uuids()? },
        cmd::OV_REQ => Packet::OvRequest {
            offset: r.u64()?,
            len: r.u32()?,
            digest: r.arr32()?,
        },
        cmd::OV_REPLY => Packet::OvReply {
            offset: r.u64()?,
            len: r.u32()?,
            equal: r.bool()?,
        },
        cmd::STATE => Packet::State {
            role: r.u8()?,
            disk: r.u8()?,
        },
        cmd::PING => Packet::Ping,
        cmd::PING_ACK => Packet::PingAck,
        cmd::DISCONNECT => Packet::Disconnect,
        other => return Err(PacketError::Command(other)),
    };
    r.end()?;
    Ok(p)
}

/// Wire code of a role.
pub fn role_code(r: crate::state::Role) -> u8 {
    use crate::state::Role::*;
    match r {
        Primary => 1,
        Secondary => 2,
        Unknown => 0,
    }
}

/// Role from its wire code (unknown codes map to `Unknown`).
pub fn role_from(c: u8) -> crate::state::Role {
    use crate::state::Role::*;
    match c {
        1 => Primary,
        2 => Secondary,
        _ => Unknown,
    }
}

/// Wire code of a disk state.
pub fn disk_code(d: crate::state::DiskState) -> u8 {
    use crate::state::DiskState::*;
    match d {
        Diskless => 0,
        Attaching => 1,
        Failed => 2,
        Inconsistent => 3,
        Outdated => 4,
        DUnknown => 5,
        Consistent => 6,
        UpToDate => 7,
    }
}

/// Disk state from its wire code (unknown codes map to `DUnknown`).
pub fn disk_from(c: u8) -> crate::state::DiskState {
    use crate::state::DiskState::*;
    match c {
        0 => Diskless,
        1 => Attaching,
        2 => Failed,
        3 => Inconsistent,
        4 => Outdated,
        6 => Consistent,
        7 => UpToDate,
        _ => DUnknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_uuids() -> impl Strategy<Value = Uuids> {
        any::<[u64; 4]>().prop_map(|u| Uuids {
            current: u[0],
            bitmap: u[1],
            history: [u[2], u[3]],
        })
    }

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Bytes::from)
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        prop_oneof![
            (
                any::<u32>(),
                any::<u32>(),
                any::<[u8; 32]>(),
                "[a-z0-9.-]{0,40}"
            )
                .prop_map(|(min_ver, max_ver, nonce, name)| Packet::Hello {
                    min_ver,
                    max_ver,
                    nonce,
                    name
                }),
            any::<[u8; 32]>().prop_map(|mac| Packet::Auth { mac }),
            (
                any::<u8>(),
                any::<u64>(),
                any::<u8>(),
                any::<u8>(),
                any::<u32>(),
                arb_uuids(),
                any::<u64>()
            )
                .prop_map(
                    |(protocol, data_size, role, disk, flags, uuids, bits_set)| Packet::Params {
                        protocol,
                        data_size,
                        role,
                        disk,
                        flags,
                        uuids,
                        bits_set
                    }
                ),
            (any::<u64>(), proptest::collection::vec(any::<u64>(), 0..20)).prop_map(|(word, w)| {
                Packet::Bitmap {
                    word,
                    data: w
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect::<Vec<u8>>()
                        .into(),
                }
            }),
            Just(Packet::BitmapDone),
            (any::<u64>(), any::<u64>(), any::<u32>(), arb_bytes()).prop_map(
                |(seq, offset, flags, data)| Packet::Data {
                    seq,
                    offset,
                    flags,
                    data
                }
            ),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>()).prop_map(
                |(seq, offset, len, discard)| Packet::Zero {
                    seq,
                    offset,
                    len,
                    discard
                }
            ),
            any::<u64>().prop_map(|seq| Packet::Flush { seq }),
            any::<u64>().prop_map(|seq| Packet::RecvAck { seq }),
            any::<u64>().prop_map(|seq| Packet::WriteAck { seq }),
            any::<u64>().prop_map(|seq| Packet::NegAck { seq }),
            any::<u64>().prop_map(|seq| Packet::FlushAck { seq }),
            (any::<u64>(), arb_bytes()).prop_map(|(offset, data)| Packet::RsData { offset, data }),
            (any::<u64>(), any::<u32>(), any::<[u8; 32]>()).prop_map(|(offset, len, digest)| {
                Packet::RsChecksum {
                    offset,
                    len,
                    digest,
                }
            }),
            (any::<u64>(), any::<u32>())
                .prop_map(|(offset, len)| Packet::RsDataRequest { offset, len }),
            (any::<u64>(), any::<u32>()).prop_map(|(offset, len)| Packet::RsAck { offset, len }),
            arb_uuids().prop_map(|uuids| Packet::SyncDone { uuids }),
            any::<u64>().prop_map(|uuid| Packet::SyncUuid { uuid }),
            (any::<u64>(), any::<u32>(), any::<[u8; 32]>()).prop_map(|(offset, len, digest)| {
                Packet::OvRequest {
                    offset,
                    len,
                    digest,
                }
            }),
            (any::<u64>(), any::<u32>(), any::<bool>())
                .prop_map(|(offset, len, equal)| Packet::OvReply { offset, len, equal }),
            (any::<u8>(), any::<u8>()).prop_map(|(role, disk)| Packet::State { role, disk }),
            Just(Packet::Ping),
            Just(Packet::PingAck),
            Just(Packet::Disconnect),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(p in arb_packet(), extra in proptest::collection::vec(any::<u8>(), 0..16)) {
            let enc = encode(&p);
            let mut buf = enc.to_vec();
            buf.extend(&extra);
            let (back, used) = decode(&buf).unwrap().unwrap();
            prop_assert_eq!(back, p);
            prop_assert_eq!(used, enc.len());
            // Every strict prefix is "incomplete", never an error or a wrong packet.
            for cut in [0, 1, HEADER_LEN - 1, enc.len() - 1] {
                if cut < enc.len() {
                    prop_assert_eq!(decode(&enc[..cut]), Ok(None));
                }
            }
        }

        #[test]
        fn roundtrip_shared_buffer(
            p in arb_packet(),
            q in arb_packet(),
            extra in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            // Two packets batched into one buffer, as the send loop does, then taken apart
            // again by the zero-copy decoder; a trailing partial packet stays in the buffer.
            let mut buf = BytesMut::new();
            encode_into(&p, &mut buf);
            encode_into(&q, &mut buf);
            prop_assert_eq!(frame_len(&buf), Some(encode(&p).len()));
            buf.extend_from_slice(&extra);
            prop_assert_eq!(decode_buf(&mut buf).unwrap(), Some(p));
            prop_assert_eq!(decode_buf(&mut buf).unwrap(), Some(q));
            prop_assert_eq!(&buf[..], &extra[..]);
            if extra.len() < HEADER_LEN {
                prop_assert_eq!(decode_buf(&mut buf), Ok(None));
            }
        }

        #[test]
        fn split_encoding_is_the_same_packet(
            seq in any::<u64>(),
            offset in any::<u64>(),
            flags in any::<u32>(),
            len in 0usize..(3 * SPLIT_MIN),
            rs in any::<bool>(),
        ) {
            let data = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>());
            let p = if rs {
                Packet::RsData { offset, data }
            } else {
                Packet::Data { seq, offset, flags, data }
            };
            let mut head = BytesMut::new();
            let tail = encode_split(&p, &mut head);
            prop_assert_eq!(tail.is_some(), len >= SPLIT_MIN);
            let mut whole = head.to_vec();
            whole.extend_from_slice(&tail.unwrap_or_default());
            prop_assert_eq!(&whole[..], &encode(&p)[..]);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&data);
        }

        #[test]
        fn zero_copy_decoder_agrees_with_the_copying_one(
            p in arb_packet(),
            cut in any::<proptest::sample::Index>(),
            flip in any::<Option<(proptest::sample::Index, u8)>>(),
        ) {
            // Valid, truncated and corrupted frames alike.
            let mut data = encode(&p).to_vec();
            if let Some((i, x)) = flip {
                let i = i.index(data.len());
                data[i] ^= x;
            }
            data.truncate(cut.index(data.len() + 1));
            let mut buf = BytesMut::from(&data[..]);
            match (decode(&data), decode_buf(&mut buf)) {
                (Ok(Some((a, used))), Ok(Some(b))) => {
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(buf.len(), data.len() - used);
                }
                (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "decoders disagree: {:?} vs {:?}", a, b),
            }
        }

        #[test]
        fn payload_never_panics(c in 0u16..30, data in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = decode_payload(c, &data);
        }
    }

    #[test]
    fn rejects_oversize_and_magic() {
        let mut h = encode(&Packet::Ping).to_vec();
        h[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        assert!(matches!(decode(&h), Err(PacketError::TooLarge(_))));
        h[0] = 0;
        assert!(matches!(decode(&h), Err(PacketError::Magic(_))));
    }
}
