//! Block devices: the trait the engine writes through and its backends.
//!
//! * [`FileDevice`]: a regular file or raw block device (optionally `O_DIRECT`).
//! * [`MemDevice`]: RAM-backed, with a power-cut mode that drops unflushed writes (crash tests)
//!   and an optional write delay (ack-semantics tests).
//! * [`SubDevice`]: a byte window of another device (internal metadata lives at the end).

mod file;
mod mem;
mod sub;

pub use file::FileDevice;
pub use mem::MemDevice;
pub use sub::SubDevice;

use crate::error::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

/// An asynchronous block device.
///
/// Offsets and lengths are in bytes. Writes are volatile until [`BlockDevice::flush`]
/// returns (or were submitted with `fua`).
#[async_trait]
pub trait BlockDevice: Send + Sync + 'static {
    /// Device size in bytes.
    fn size(&self) -> u64;
    /// Logical block size in bytes (requests should be multiples of it).
    fn logical_block_size(&self) -> u32 {
        512
    }
    /// Read `len` bytes at `offset`.
    async fn read(&self, offset: u64, len: usize) -> Result<Bytes>;
    /// Write `data` at `offset`; with `fua` the data is durable when this returns.
    async fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<()>;
    /// Write an owned buffer at `offset`. Same contract as [`BlockDevice::write`]; backends
    /// that hand writes to another thread override it to skip copying the data.
    async fn write_bytes(&self, offset: u64, data: Bytes, fua: bool) -> Result<()> {
        self.write(offset, &data, fua).await
    }
    /// [`BlockDevice::write_bytes`], then `done(ok)` as soon as the write has completed, on
    /// whichever thread completed it and before the awaiting task runs again: a replica can
    /// acknowledge the write without first waiting to be scheduled.
    async fn write_notify(
        &self,
        offset: u64,
        data: Bytes,
        fua: bool,
        done: WriteDone,
    ) -> Result<()> {
        let r = self.write_bytes(offset, data, fua).await;
        done(r.is_ok());
        r
    }
    /// Make every completed write durable.
    async fn flush(&self) -> Result<()>;
    /// Discard (trim) a range; afterwards it reads as zeroes.
    async fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len).await
    }
    /// Write zeroes over a range.
    async fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        check_range(offset, len, self.size())?;
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            self.write(offset + done, &zeros[..n as usize], false)
                .await?;
            done += n;
        }
        Ok(())
    }
}

/// Completion callback of [`BlockDevice::write_notify`] (`true`: the write succeeded).
pub type WriteDone = Box<dyn FnOnce(bool) + Send + 'static>;

/// Shared handle to a device.
pub type DynDevice = Arc<dyn BlockDevice>;

/// Fail with [`Error::OutOfRange`] unless `offset..offset+len` fits in `size`.
pub fn check_range(offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange { offset, len, size }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(dev: DynDevice) {
        dev.write(4096, &[0xab; 8192], false).await.unwrap();
        assert_eq!(&dev.read(4096, 8192).await.unwrap()[..], &[0xab; 8192][..]);
        dev.flush().await.unwrap();
        dev.write_zeroes(8192, 4096).await.unwrap();
        let r = dev.read(4096, 8192).await.unwrap();
        assert!(r[..4096].iter().all(|&b| b == 0xab));
        assert!(r[4096..].iter().all(|&b| b == 0));
        dev.write(0, &[1; 512], true).await.unwrap();
        dev.discard(0, 512).await.unwrap();
        assert!(dev.read(0, 512).await.unwrap().iter().all(|&b| b == 0));
        assert!(dev.read(dev.size() - 512, 1024).await.is_err());
        assert!(dev.write(u64::MAX - 1, &[0; 4], false).await.is_err());
    }

    #[tokio::test]
    async fn mem_device_basic() {
        exercise(Arc::new(MemDevice::new(1 << 20))).await;
    }

    #[tokio::test]
    async fn file_device_basic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let dev = FileDevice::create(&path, 1 << 20).unwrap();
        assert_eq!(dev.size(), 1 << 20);
        exercise(Arc::new(dev)).await;
        // O_DIRECT may be refused by tmpfs; only exercise it where it opens.
        if let Ok(d) = FileDevice::open(&path, true)
            && d.write(0, &vec![7u8; 4096], false).await.is_ok()
        {
            assert!(d.read(0, 4096).await.unwrap().iter().all(|&b| b == 7));
        }
    }

    #[tokio::test]
    async fn sub_device_window() {
        let base: DynDevice = Arc::new(MemDevice::new(1 << 20));
        let sub = SubDevice::new(base.clone(), 65536, 65536).unwrap();
        sub.write(0, &[9; 4096], false).await.unwrap();
        assert!(
            base.read(65536, 4096)
                .await
                .unwrap()
                .iter()
                .all(|&b| b == 9)
        );
        assert!(sub.write(65536 - 100, &[0; 200], false).await.is_err());
        assert!(SubDevice::new(base, 1 << 20, 1).is_err());
    }
}
