//! NBD wire format (fixed newstyle handshake, simple replies). Sans-IO; decoders never panic.

use bytes::{BufMut, Bytes, BytesMut};

/// "NBDMAGIC".
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT".
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Option reply magic.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Request magic.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Simple reply magic.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flag: fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: no 124 zero bytes after EXPORT_NAME.
pub const FLAG_NO_ZEROES: u16 = 2;
/// Client flag: fixed newstyle.
pub const CFLAG_FIXED_NEWSTYLE: u32 = 1;
/// Client flag: no zeroes.
pub const CFLAG_NO_ZEROES: u32 = 2;

/// Transmission flags.
pub mod tflag {
    /// Flags field is valid.
    pub const HAS_FLAGS: u16 = 1;
    /// Read-only export.
    pub const READ_ONLY: u16 = 2;
    /// FLUSH supported.
    pub const SEND_FLUSH: u16 = 4;
    /// FUA supported.
    pub const SEND_FUA: u16 = 8;
    /// TRIM supported.
    pub const SEND_TRIM: u16 = 32;
    /// WRITE_ZEROES supported.
    pub const SEND_WRITE_ZEROES: u16 = 64;
}

/// Options.
pub mod opt {
    /// Old-style export selection (no reply, straight to transmission).
    pub const EXPORT_NAME: u32 = 1;
    /// Abort the handshake.
    pub const ABORT: u32 = 2;
    /// List exports.
    pub const LIST: u32 = 3;
    /// Ask for export information.
    pub const INFO: u32 = 6;
    /// Select an export and start transmission.
    pub const GO: u32 = 7;
}

/// Option reply types.
pub mod rep {
    /// Done.
    pub const ACK: u32 = 1;
    /// One export (LIST).
    pub const SERVER: u32 = 2;
    /// Export information.
    pub const INFO: u32 = 3;
    /// Option not supported.
    pub const ERR_UNSUP: u32 = 0x8000_0001;
    /// Forbidden by server policy.
    pub const ERR_POLICY: u32 = 0x8000_0002;
    /// Malformed option.
    pub const ERR_INVALID: u32 = 0x8000_0003;
    /// Export not known.
    pub const ERR_UNKNOWN: u32 = 0x8000_0006;
}

/// Info types.
pub mod info {
    /// Size and flags.
    pub const EXPORT: u16 = 0;
    /// Block size constraints.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Command flag: force unit access.
pub const CMD_FLAG_FUA: u16 = 1;
/// Command flag: don't punch holes for WRITE_ZEROES.
pub const CMD_FLAG_NO_HOLE: u16 = 2;

/// Errno values used in replies.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: u32 = 1;
    /// I/O error.
    pub const EIO: u32 = 5;
    /// Invalid argument.
    pub const EINVAL: u32 = 22;
    /// No space (write past the end).
    pub const ENOSPC: u32 = 28;
    /// Not supported.
    pub const ENOTSUP: u32 = 95;
    /// Server shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// Largest request payload accepted (32 MiB, the usual client maximum).
pub const MAX_REQUEST: u32 = 32 << 20;

/// A transmission-phase command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// Read.
    Read,
    /// Write (payload follows).
    Write,
    /// Disconnect.
    Disc,
    /// Flush.
    Flush,
    /// Trim.
    Trim,
    /// Cache hint.
    Cache,
    /// Write zeroes.
    WriteZeroes,
    /// Block status.
    BlockStatus,
    /// Unknown type code.
    Other(u16),
}

impl Cmd {
    fn from_code(c: u16) -> Self {
        match c {
            0 => Cmd::Read,
            1 => Cmd::Write,
            2 => Cmd::Disc,
            3 => Cmd::Flush,
            4 => Cmd::Trim,
            5 => Cmd::Cache,
            6 => Cmd::WriteZeroes,
            7 => Cmd::BlockStatus,
            o => Cmd::Other(o),
        }
    }
    /// Wire code.
    pub fn code(self) -> u16 {
        match self {
            Cmd::Read => 0,
            Cmd::Write => 1,
            Cmd::Disc => 2,
            Cmd::Flush => 3,
            Cmd::Trim => 4,
            Cmd::Cache => 5,
            Cmd::WriteZeroes => 6,
            Cmd::BlockStatus => 7,
            Cmd::Other(o) => o,
        }
    }
}

/// A request header (28 bytes on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// Command.
    pub cmd: Cmd,
    /// Opaque handle echoed in the reply.
    pub handle: u64,
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
}

/// Request header length.
pub const REQUEST_LEN: usize = 28;

/// Why a request header was rejected (the connection must close).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NbdError {
    /// Too few bytes.
    #[error("short NBD message")]
    Short,
    /// Bad magic.
    #[error("bad NBD request magic 0x{0:08x}")]
    Magic(u32),
    /// Malformed option data.
    #[error("malformed NBD option data")]
    Option,
}

fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}
fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn be64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_be_bytes(a)
}

/// Decode a request header.
pub fn decode_request(b: &[u8]) -> Result<Request, NbdError> {
    if b.len() < REQUEST_LEN {
        return Err(NbdError::Short);
    }
    let magic = be32(b, 0);
    if magic != REQUEST_MAGIC {
        return Err(NbdError::Magic(magic));
    }
    Ok(Request {
        flags: be16(b, 4),
        cmd: Cmd::from_code(be16(b, 6)),
        handle: be64(b, 8),
        offset: be64(b, 16),
        len: be32(b, 24),
    })
}

/// Encode a request header (used by tests and clients).
pub fn encode_request(r: &Request) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&r.flags.to_be_bytes());
    b[6..8].copy_from_slice(&r.cmd.code().to_be_bytes());
    b[8..16].copy_from_slice(&r.handle.to_be_bytes());
    b[16..24].copy_from_slice(&r.offset.to_be_bytes());
    b[24..28].copy_from_slice(&r.len.to_be_bytes());
    b
}

/// Option header (after `IHAVEOPT`): option code and data length.
pub fn decode_option_header(b: &[u8]) -> Result<(u64, u32, u32), NbdError> {
    if b.len() < 16 {
        return Err(NbdError::Short);
    }
    Ok((be64(b, 0), be32(b, 8), be32(b, 12)))
}

/// NBD_OPT_INFO / NBD_OPT_GO data: export name and requested info types.
pub fn decode_go(data: &[u8]) -> Result<(String, Vec<u16>), NbdError> {
    if data.len() < 4 {
        return Err(NbdError::Option);
    }
    let n = be32(data, 0) as usize;
    let rest = &data[4..];
    if rest.len() < n.saturating_add(2) {
        return Err(NbdError::Option);
    }
    let name = String::from_utf8(rest[..n].to_vec()).map_err(|_| NbdError::Option)?;
    let rest = &rest[n..];
    let count = be16(rest, 0) as usize;
    let rest = &rest[2..];
    if rest.len() != count * 2 {
        return Err(NbdError::Option);
    }
    let infos = (0..count).map(|i| be16(rest, 2 * i)).collect();
    Ok((name, infos))
}

/// Encode GO/INFO option data (for tests and clients).
pub fn encode_go(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend((name.len() as u32).to_be_bytes());
    b.extend(name.as_bytes());
    b.extend((infos.len() as u16).to_be_bytes());
    for i in infos {
        b.extend(i.to_be_bytes());
    }
    b
}

/// An option reply.
pub fn option_reply(option: u32, kind: u32, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(20 + data.len());
    b.put_u64(REPLY_MAGIC);
    b.put_u32(option);
    b.put_u32(kind);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b.freeze()
}

/// Simple reply header.
pub fn simple_reply(error: u32, handle: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn request_roundtrip(flags: u16, cmd in 0u16..10, handle: u64, offset: u64, len: u32) {
            let r = Request { flags, cmd: Cmd::from_code(cmd), handle, offset, len };
            prop_assert_eq!(decode_request(&encode_request(&r)), Ok(r));
        }

        #[test]
        fn go_roundtrip(name in "[a-zA-Z0-9/_-]{0,64}", infos in proptest::collection::vec(any::<u16>(), 0..8)) {
            prop_assert_eq!(decode_go(&encode_go(&name, &infos)), Ok((name, infos)));
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_request(&data);
            let _ = decode_go(&data);
            let _ = decode_option_header(&data);
        }
    }
}
