//! Open a backing disk and its metadata the way `drbdadm attach` does: internal metadata at the
//! end of the disk, or external metadata on another file or device.

use crate::device::{DynDevice, FileDevice, SubDevice};
use crate::error::{Error, Result};
use crate::meta::{Layout, Metadata};
use std::path::Path;
use std::sync::Arc;

/// What to do with the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaMode {
    /// Load it; missing or invalid metadata is an error (the normal attach).
    Load,
    /// Write fresh metadata (`create-md`), discarding what was there.
    Create,
    /// Load it, or write fresh metadata when none is valid (first start of a new disk).
    LoadOrCreate,
}

/// Open `disk` (O_DIRECT if `direct`) with its metadata: internal when `external_md` is
/// `None`, otherwise on that file, created with the size the layout needs when `mode` may
/// create metadata and the file does not exist. Returns the data area and the metadata.
pub async fn open_backing(
    disk: &Path,
    external_md: Option<&Path>,
    al_extents: u32,
    direct: bool,
    mode: MetaMode,
) -> Result<(DynDevice, Metadata)> {
    let dev: DynDevice = Arc::new(FileDevice::open(disk, direct)?);
    let (data, md_dev, data_size): (DynDevice, DynDevice, u64) = match external_md {
        None => {
            let layout = Layout::internal(dev.size(), al_extents)?;
            let md_len = dev.size() - layout.data_size;
            let md_dev: DynDevice =
                Arc::new(SubDevice::new(dev.clone(), layout.data_size, md_len)?);
            let data: DynDevice = Arc::new(SubDevice::new(dev, 0, layout.data_size)?);
            (data, md_dev, layout.data_size)
        }
        Some(md_path) => {
            let size = dev.size() / 4096 * 4096;
            if mode != MetaMode::Load && !md_path.exists() {
                FileDevice::create(md_path, Layout::new(size, al_extents).md_size())?;
            }
            let md_dev: DynDevice = Arc::new(FileDevice::open(md_path, direct)?);
            (dev, md_dev, size)
        }
    };
    let md_place = external_md.unwrap_or(disk).display();
    let md = match mode {
        MetaMode::Create => Metadata::create(md_dev, data_size, al_extents).await?,
        MetaMode::Load => Metadata::load(md_dev).await.map_err(|e| {
            Error::Metadata(format!("{e} (on {md_place}; create-md initialises it)"))
        })?,
        MetaMode::LoadOrCreate => match Metadata::load(md_dev.clone()).await {
            Ok(md) => md,
            Err(e) => {
                tracing::warn!(disk = %disk.display(), error = %e, "no valid metadata: creating it");
                Metadata::create(md_dev, data_size, al_extents).await?
            }
        },
    };
    Ok((data, md))
}
