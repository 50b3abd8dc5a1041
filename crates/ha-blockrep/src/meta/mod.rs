//! On-disk metadata: superblock, activity log and dirty bitmap.
//!
//! Layout of the metadata area (internal metadata sits at the end of the backing device,
//! external metadata is a separate device; both are just a [`DynDevice`]):
//!
//! | offset | content |
//! |---|---|
//! | 0, 4096 | superblock slots 0 and 1 (the valid one with the higher `seq` wins) |
//! | 8192 | activity log slots 0 and 1 (`al::slot_size` each, again newest valid wins) |
//! | after | dirty bitmap pages (4 KiB each, 32768 bits per page) |
//!
//! Every update writes the *other* slot and flushes, so a power cut at any point leaves the
//! previous version intact. Bitmap pages for extents leaving the activity log are written and
//! flushed before the log transaction that drops them.

pub mod al;
pub mod bitmap;
pub mod superblock;

pub use al::{AL_EXTENT_SIZE, ActivityLog, AlPlan, AlSnapshot, DEFAULT_AL_EXTENTS};
pub use bitmap::{BM_BLOCK_SIZE, Bitmap};
pub use superblock::{SB_SIZE, Superblock, Uuids};

use crate::device::DynDevice;
use std::sync::{Arc, Mutex, MutexGuard};

/// The bitmap behind a plain mutex: never held across an `.await`.
pub type SharedBitmap = Arc<Mutex<Bitmap>>;
use crate::error::{Error, Result};
use std::fmt::Write as _;
use superblock::{MDF_CONSISTENT, MDF_WAS_UP_TO_DATE, SbError};

/// Byte offsets inside the metadata area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Size of the data area the metadata describes.
    pub data_size: u64,
    /// Activity log capacity.
    pub al_extents: u32,
    /// Offset of activity log slot 0.
    pub al_offset: u64,
    /// Size of one activity log slot.
    pub al_slot: u64,
    /// Offset of bitmap page 0.
    pub bm_offset: u64,
    /// Number of bitmap pages.
    pub bm_pages: u64,
}

impl Layout {
    /// Layout for `data_size` bytes of data and `al_extents` log capacity.
    pub fn new(data_size: u64, al_extents: u32) -> Self {
        let al_slot = al::slot_size(al_extents);
        let al_offset = 2 * SB_SIZE as u64;
        let nbits = data_size.div_ceil(BM_BLOCK_SIZE);
        Layout {
            data_size,
            al_extents,
            al_offset,
            al_slot,
            bm_offset: al_offset + 2 * al_slot,
            bm_pages: Bitmap::pages_for(nbits),
        }
    }

    /// Total metadata area size.
    pub fn md_size(&self) -> u64 {
        self.bm_offset + self.bm_pages * 4096
    }

    /// Split a device of `total` bytes into (data size, layout) for internal metadata.
    /// The data size is rounded down to 4 KiB.
    pub fn internal(total: u64, al_extents: u32) -> Result<Self> {
        // The bitmap for `total` bytes is an upper bound for the bitmap of the data part.
        let md = Layout::new(total, al_extents).md_size();
        let data = total
            .checked_sub(md)
            .filter(|d| *d >= BM_BLOCK_SIZE)
            .ok_or_else(|| {
                Error::Metadata(format!(
                    "device of {total} bytes is too small for {md} bytes of internal metadata"
                ))
            })?;
        Ok(Layout::new(
            data / BM_BLOCK_SIZE * BM_BLOCK_SIZE,
            al_extents,
        ))
    }
}

/// Loaded metadata plus the device it lives on.
pub struct Metadata {
    dev: DynDevice,
    layout: Layout,
    /// The superblock as last written (or about to be written by [`Metadata::write_sb`]).
    pub sb: Superblock,
    /// The dirty bitmap, shared with the I/O path (which marks bits without awaiting).
    bitmap: SharedBitmap,
    al: ActivityLog,
    al_seq: u64,
    /// Copy of the last written UUIDs, readable without this struct's (async) lock.
    published: Arc<Mutex<Uuids>>,
}

impl Metadata {
    /// `create-md`: write fresh metadata for `data_size` bytes onto `dev`.
    ///
    /// Bitmap and log are written and flushed before the superblocks, so an interrupted
    /// create leaves no superblock (the device reads as "no metadata").
    pub async fn create(dev: DynDevice, data_size: u64, al_extents: u32) -> Result<Self> {
        let layout = Layout::new(data_size, al_extents);
        if dev.size() < layout.md_size() {
            return Err(Error::Metadata(format!(
                "metadata device of {} bytes is too small, {} needed",
                dev.size(),
                layout.md_size()
            )));
        }
        // Invalidate any old superblocks first: a half-finished create must not load old data.
        dev.write(0, &[0u8; 2 * SB_SIZE], false).await?;
        dev.flush().await?;
        let bitmap = Bitmap::for_size(data_size);
        dev.write(layout.bm_offset, &bitmap.to_bytes(), false)
            .await?;
        let empty = AlSnapshot {
            seq: 1,
            extents: vec![],
        };
        let slot = encode_al(&empty, al_extents)?;
        dev.write(layout.al_offset, &slot, false).await?;
        dev.write(
            layout.al_offset + layout.al_slot,
            &vec![0u8; slot.len()],
            false,
        )
        .await?;
        dev.flush().await?;
        let sb = Superblock {
            seq: 1,
            flags: 0,
            data_size,
            al_extents,
            uuids: Uuids {
                current: superblock::UUID_JUST_CREATED,
                ..Default::default()
            },
            device_uuid: rand::random::<u64>() | 1,
        };
        dev.write(0, &sb.encode(), true).await?;
        let mut bitmap = bitmap;
        bitmap.take_dirty_pages();
        let md = Metadata {
            dev,
            layout,
            bitmap: Arc::new(Mutex::new(bitmap)),
            al: ActivityLog::new(al_extents),
            al_seq: 1,
            published: Arc::new(Mutex::new(sb.uuids)),
            sb,
        };
        Ok(md)
    }

    /// Load metadata from `dev`. Extents left in the activity log (unclean shutdown) are
    /// marked dirty in the bitmap, which is then written back.
    pub async fn load(dev: DynDevice) -> Result<Self> {
        let raw = dev.read(0, 2 * SB_SIZE).await?;
        let slots = [
            Superblock::decode(&raw[..SB_SIZE]),
            Superblock::decode(&raw[SB_SIZE..]),
        ];
        let sb = match (&slots[0], &slots[1]) {
            (Ok(a), Ok(b)) => {
                if a.seq >= b.seq {
                    a.clone()
                } else {
                    b.clone()
                }
            }
            (Ok(a), Err(_)) => a.clone(),
            (Err(_), Ok(b)) => b.clone(),
            (Err(e), Err(_)) => {
                return Err(Error::Metadata(match e {
                    SbError::Magic | SbError::Short => "no metadata found (run create-md)".into(),
                    SbError::Version(v) => format!("unsupported metadata version {v}"),
                    SbError::Checksum => "both superblock copies are corrupt".into(),
                }));
            }
        };
        let layout = Layout::new(sb.data_size, sb.al_extents);
        if dev.size() < layout.md_size() {
            return Err(Error::Metadata(format!(
                "metadata claims {} bytes but the device has {}",
                layout.md_size(),
                dev.size()
            )));
        }
        let al_raw = dev
            .read(layout.al_offset, 2 * layout.al_slot as usize)
            .await?;
        let (a, b) = al_raw.split_at(layout.al_slot as usize);
        let snap = match (AlSnapshot::decode(a), AlSnapshot::decode(b)) {
            (Some(x), Some(y)) => Some(if x.seq >= y.seq { x } else { y }),
            (x, y) => x.or(y),
        }
        .ok_or_else(|| Error::Metadata("both activity log slots are corrupt".into()))?;
        let nbits = sb.data_size.div_ceil(BM_BLOCK_SIZE);
        let bm_raw = dev
            .read(layout.bm_offset, (layout.bm_pages * 4096) as usize)
            .await?;
        let mut bitmap = Bitmap::from_bytes(nbits, &bm_raw);
        bitmap.take_dirty_pages();
        let mut md = Metadata {
            dev,
            layout,
            published: Arc::new(Mutex::new(sb.uuids)),
            sb,
            bitmap: Arc::new(Mutex::new(bitmap)),
            al: ActivityLog::new(layout.al_extents),
            al_seq: snap.seq,
        };
        if !snap.extents.is_empty() {
            let per = AL_EXTENT_SIZE / BM_BLOCK_SIZE;
            for e in &snap.extents {
                let s = u64::from(*e) * per;
                md.bitmap().set_range(s, s + per, true);
            }
            tracing::info!(
                extents = snap.extents.len(),
                "unclean shutdown: activity log extents marked for resync"
            );
            md.write_bitmap().await?;
            md.commit_al(Vec::new()).await?;
        }
        Ok(md)
    }

    /// The layout in use.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Size of the data area.
    pub fn data_size(&self) -> u64 {
        self.sb.data_size
    }

    /// The in-memory activity log.
    pub fn al(&self) -> &ActivityLog {
        &self.al
    }

    /// Persist `self.sb` (bumping its sequence) into the other slot, durably.
    pub async fn write_sb(&mut self) -> Result<()> {
        let mut next = self.sb.clone();
        next.seq += 1;
        let slot = next.seq % 2;
        self.dev
            .write(slot * SB_SIZE as u64, &next.encode(), true)
            .await?;
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = next.uuids;
        self.sb = next;
        Ok(())
    }

    /// Lock the bitmap (briefly: never across an `.await`).
    pub fn bitmap(&self) -> MutexGuard<'_, Bitmap> {
        // A poisoned lock means a panic elsewhere; the bits themselves are still valid.
        self.bitmap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The UUIDs as last written, shared (for status without the metadata lock).
    pub fn published_uuids(&self) -> Arc<Mutex<Uuids>> {
        self.published.clone()
    }

    /// A handle on the shared bitmap.
    pub fn shared_bitmap(&self) -> SharedBitmap {
        self.bitmap.clone()
    }

    /// Write changed bitmap pages and flush.
    pub async fn write_bitmap(&mut self) -> Result<()> {
        let pages = self.bitmap().take_dirty_pages();
        if pages.is_empty() {
            return Ok(());
        }
        for p in &pages {
            let off = self.layout.bm_offset + p * 4096;
            let bytes = self.bitmap().page_bytes(*p);
            if let Err(e) = self.dev.write(off, &bytes, false).await {
                self.remark(&pages);
                return Err(e);
            }
        }
        if let Err(e) = self.dev.flush().await {
            self.remark(&pages);
            return Err(e);
        }
        Ok(())
    }

    fn remark(&mut self, pages: &[u64]) {
        // The write-out failed: those pages are still not on disk.
        self.bitmap().mark_pages_dirty(pages);
    }

    async fn commit_al(&mut self, extents: Vec<u32>) -> Result<()> {
        let snap = AlSnapshot {
            seq: self.al_seq + 1,
            extents,
        };
        let slot = encode_al(&snap, self.layout.al_extents)?;
        let off = self.layout.al_offset + (snap.seq % 2) * self.layout.al_slot;
        self.dev.write(off, &slot, true).await?;
        self.al_seq = snap.seq;
        Ok(())
    }

    /// Activate the extents of a write. Returns `Ok(false)` if the log is full of in-flight
    /// extents (retry later). On `Ok(true)` the caller must call [`Metadata::al_end`].
    pub async fn al_begin(&mut self, offset: u64, len: u64) -> Result<bool> {
        let ext = al::extents_for(offset, len);
        let Some(plan) = self.al.plan(ext.clone()) else {
            return Ok(false);
        };
        if plan.needs_commit() {
            if !plan.evicted.is_empty() {
                // Evicted extents are no longer covered by the log: their dirty bits must
                // be on disk before the log stops listing them.
                self.write_bitmap().await?;
            }
            self.commit_al(self.al.extents_after(&plan)).await?;
        }
        self.al.apply_and_ref(&plan, ext);
        Ok(true)
    }

    /// Release the extents of a finished write.
    pub fn al_end(&mut self, offset: u64, len: u64) {
        self.al.unref(al::extents_for(offset, len));
    }

    /// Clean close: bitmap written out, activity log emptied (nothing to resync after reload).
    pub async fn close_clean(&mut self) -> Result<()> {
        self.write_bitmap().await?;
        if self.al.busy() {
            return Err(Error::State("writes still in flight".into()));
        }
        if !self.al.extents().is_empty() {
            self.commit_al(Vec::new()).await?;
            self.al.clear_idle();
        }
        Ok(())
    }

    /// Text dump in the spirit of `drbdmeta dump-md`.
    pub fn dump(&self) -> String {
        let sb = &self.sb;
        let mut s = String::new();
        let _ = writeln!(s, "version \"ha-blockrep-md-1\";");
        let _ = writeln!(s, "seq {};", sb.seq);
        let _ = writeln!(s, "device-uuid 0x{:016X};", sb.device_uuid);
        let _ = writeln!(
            s,
            "la-size-sect {}; # {} bytes",
            sb.data_size / 512,
            sb.data_size
        );
        let u = &sb.uuids;
        let _ = writeln!(
            s,
            "uuid {{ current 0x{:016X}; bitmap 0x{:016X}; history 0x{:016X} 0x{:016X}; }}",
            u.current, u.bitmap, u.history[0], u.history[1]
        );
        let names = [
            (superblock::MDF_CONSISTENT, "consistent"),
            (superblock::MDF_WAS_UP_TO_DATE, "was-up-to-date"),
            (superblock::MDF_PRIMARY_IND, "primary"),
            (superblock::MDF_CRASHED_PRIMARY, "crashed-primary"),
            (superblock::MDF_PEER_OUTDATED, "peer-outdated"),
            (superblock::MDF_FULL_SYNC, "full-sync"),
        ];
        let flags: Vec<&str> = names
            .iter()
            .filter(|(f, _)| sb.has(*f))
            .map(|(_, n)| *n)
            .collect();
        let _ = writeln!(s, "flags 0x{:08X}; # {}", sb.flags, flags.join(" "));
        let _ = writeln!(
            s,
            "al-extents {}; # active: {:?}",
            sb.al_extents,
            self.al.extents()
        );
        let bm = self.bitmap();
        let _ = writeln!(
            s,
            "bm {{ # {} bits, {} set ({} KiB out of sync)",
            bm.len(),
            bm.count(),
            bm.count() * BM_BLOCK_SIZE / 1024
        );
        let mut i = 0;
        while let Some(b) = bm.next_set(i) {
            let mut e = b;
            while bm.get(e) {
                e += 1;
            }
            let _ = writeln!(s, "   {b}..{e};");
            i = e;
        }
        let _ = writeln!(s, "}}");
        s
    }

    /// Whether the data on this disk is consistent.
    pub fn consistent(&self) -> bool {
        self.sb.has(MDF_CONSISTENT)
    }

    /// Whether the data was up to date when last known.
    pub fn was_up_to_date(&self) -> bool {
        self.sb.has(MDF_WAS_UP_TO_DATE)
    }
}

fn encode_al(snap: &AlSnapshot, cap: u32) -> Result<Vec<u8>> {
    snap.encode(cap)
        .ok_or_else(|| Error::Metadata("activity log transaction larger than the log".into()))
}

#[cfg(test)]
mod tests;
