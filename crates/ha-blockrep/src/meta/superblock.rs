//! The checksummed superblock and the generation UUIDs it carries.

use serde::{Deserialize, Serialize};

/// Superblock magic.
pub const SB_MAGIC: [u8; 8] = *b"HABLKMD1";
/// On-disk format version.
pub const SB_VERSION: u32 = 1;
/// Encoded superblock size.
pub const SB_SIZE: usize = 4096;

/// Data on this disk is consistent (not in the middle of a resync as target).
pub const MDF_CONSISTENT: u32 = 1 << 0;
/// Data was up to date when last known (cleared when the peer outdates us).
pub const MDF_WAS_UP_TO_DATE: u32 = 1 << 1;
/// This node was Primary.
pub const MDF_PRIMARY_IND: u32 = 1 << 2;
/// Primary that has not cleanly demoted: after a crash the activity log must be resynced.
pub const MDF_CRASHED_PRIMARY: u32 = 1 << 3;
/// We marked the peer Outdated (fencing): it must not be promoted.
pub const MDF_PEER_OUTDATED: u32 = 1 << 4;
/// A full sync is pending.
pub const MDF_FULL_SYNC: u32 = 1 << 5;
/// The activity log is clean (bitmap written out completely).
pub const MDF_AL_CLEAN: u32 = 1 << 6;

/// Generation UUIDs (DRBD's current / bitmap / history).
///
/// `current` identifies the data generation; a new one is made when a Primary starts writing
/// without its peer. `bitmap` is the generation at which dirty-bit tracking started (0 if the
/// bitmap is not in use); `history` keeps two older generations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uuids {
    /// Current data generation.
    pub current: u64,
    /// Generation when the bitmap started tracking changes (0 = none).
    pub bitmap: u64,
    /// Older generations, newest first.
    pub history: [u64; 2],
}

/// UUID of freshly created metadata (no data generation yet).
pub const UUID_JUST_CREATED: u64 = 4;

impl Uuids {
    /// Move `current` into the bitmap slot (or history) and start a new generation `new`.
    pub fn new_current(&mut self, new: u64) {
        if self.bitmap == 0 {
            self.bitmap = self.current;
        } else {
            self.push_history(self.current);
        }
        self.current = new;
    }

    /// Push a UUID onto the history (dropping the oldest).
    pub fn push_history(&mut self, u: u64) {
        if u != 0 && self.history[0] != u {
            self.history = [u, self.history[0]];
        }
    }

    /// Resync finished as source: the bitmap generation moves into the history.
    pub fn sync_finished_source(&mut self) {
        if self.bitmap != 0 {
            let b = self.bitmap;
            self.bitmap = 0;
            self.push_history(b);
        }
    }

    /// Resync finished as target: adopt the source's generations.
    pub fn sync_finished_target(&mut self, source: &Uuids) {
        self.current = source.current;
        self.bitmap = 0;
        self.history = source.history;
        if source.bitmap != 0 {
            self.push_history(source.bitmap);
        }
    }
}

/// The superblock as held in memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superblock {
    /// Monotonic write sequence (the newer of the two slots wins).
    pub seq: u64,
    /// `MDF_*` flags.
    pub flags: u32,
    /// Size of the replicated data area in bytes.
    pub data_size: u64,
    /// Activity log capacity in 4 MiB extents.
    pub al_extents: u32,
    /// Generation UUIDs.
    pub uuids: Uuids,
    /// Random identity of this metadata (created by create-md).
    pub device_uuid: u64,
}

/// Why a superblock failed to decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SbError {
    /// Buffer too short.
    Short,
    /// Wrong magic: no metadata here.
    Magic,
    /// Unsupported version.
    Version(u32),
    /// Checksum mismatch (torn or corrupt write).
    Checksum,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[o..o + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl Superblock {
    /// Whether a flag is set.
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    /// Set or clear a flag.
    pub fn set(&mut self, f: u32, on: bool) {
        if on {
            self.flags |= f;
        } else {
            self.flags &= !f;
        }
    }

    /// Encode into a 4 KiB block with a trailing crc32c.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SB_SIZE];
        b[0..8].copy_from_slice(&SB_MAGIC);
        b[8..12].copy_from_slice(&SB_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.data_size.to_le_bytes());
        b[32..36].copy_from_slice(&self.al_extents.to_le_bytes());
        b[36..40].copy_from_slice(&(super::BM_BLOCK_SIZE as u32).to_le_bytes());
        b[40..48].copy_from_slice(&self.uuids.current.to_le_bytes());
        b[48..56].copy_from_slice(&self.uuids.bitmap.to_le_bytes());
        b[56..64].copy_from_slice(&self.uuids.history[0].to_le_bytes());
        b[64..72].copy_from_slice(&self.uuids.history[1].to_le_bytes());
        b[72..80].copy_from_slice(&self.device_uuid.to_le_bytes());
        let crc = crc32c::crc32c(&b[..SB_SIZE - 4]);
        b[SB_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode and verify a block produced by [`Superblock::encode`].
    pub fn decode(b: &[u8]) -> Result<Self, SbError> {
        if b.len() < SB_SIZE {
            return Err(SbError::Short);
        }
        if b[0..8] != SB_MAGIC {
            return Err(SbError::Magic);
        }
        let version = u32_at(b, 8);
        if version != SB_VERSION {
            return Err(SbError::Version(version));
        }
        if crc32c::crc32c(&b[..SB_SIZE - 4]) != u32_at(b, SB_SIZE - 4) {
            return Err(SbError::Checksum);
        }
        Ok(Superblock {
            flags: u32_at(b, 12),
            seq: u64_at(b, 16),
            data_size: u64_at(b, 24),
            al_extents: u32_at(b, 32),
            uuids: Uuids {
                current: u64_at(b, 40),
                bitmap: u64_at(b, 48),
                history: [u64_at(b, 56), u64_at(b, 64)],
            },
            device_uuid: u64_at(b, 72),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(seq: u64, flags: u32, size: u64, al: u32, u: [u64; 5]) {
            let sb = Superblock { seq, flags, data_size: size, al_extents: al,
                uuids: Uuids { current: u[0], bitmap: u[1], history: [u[2], u[3]] }, device_uuid: u[4] };
            let enc = sb.encode();
            prop_assert_eq!(Superblock::decode(&enc), Ok(sb));
        }

        #[test]
        fn corruption_detected(pos in 0usize..SB_SIZE, bit in 0u8..8) {
            let sb = Superblock { seq: 7, flags: 3, data_size: 1 << 20, al_extents: 1237,
                uuids: Uuids::default(), device_uuid: 9 };
            let mut enc = sb.encode();
            enc[pos] ^= 1 << bit;
            prop_assert!(Superblock::decode(&enc).is_err());
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let _ = Superblock::decode(&data);
        }
    }

    #[test]
    fn uuid_generations() {
        let mut u = Uuids {
            current: 10,
            ..Default::default()
        };
        u.new_current(11);
        assert_eq!((u.current, u.bitmap), (11, 10));
        u.new_current(12);
        assert_eq!((u.current, u.bitmap, u.history[0]), (12, 10, 11));
        u.sync_finished_source();
        assert_eq!((u.bitmap, u.history), (0, [10, 11]));
        let mut t = Uuids {
            current: 10,
            ..Default::default()
        };
        t.sync_finished_target(&u);
        assert_eq!(t, u);
    }
}
