//! A byte window onto another device.

use super::{BlockDevice, DynDevice, WriteDone, check_range};
use crate::error::Result;
use async_trait::async_trait;
use bytes::Bytes;

/// The range `start..start+len` of a parent device, addressed from 0.
pub struct SubDevice {
    parent: DynDevice,
    start: u64,
    len: u64,
}

impl SubDevice {
    /// Window of `len` bytes at `start` of `parent`; fails if it does not fit.
    pub fn new(parent: DynDevice, start: u64, len: u64) -> Result<Self> {
        check_range(start, len, parent.size())?;
        Ok(SubDevice { parent, start, len })
    }
}

#[async_trait]
impl BlockDevice for SubDevice {
    fn size(&self) -> u64 {
        self.len
    }
    fn logical_block_size(&self) -> u32 {
        self.parent.logical_block_size()
    }
    async fn read(&self, offset: u64, len: usize) -> Result<Bytes> {
        check_range(offset, len as u64, self.len)?;
        self.parent.read(self.start + offset, len).await
    }
    async fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        check_range(offset, data.len() as u64, self.len)?;
        self.parent.write(self.start + offset, data, fua).await
    }
    async fn write_bytes(&self, offset: u64, data: Bytes, fua: bool) -> Result<()> {
        check_range(offset, data.len() as u64, self.len)?;
        self.parent
            .write_bytes(self.start + offset, data, fua)
            .await
    }
    async fn write_notify(
        &self,
        offset: u64,
        data: Bytes,
        fua: bool,
        done: WriteDone,
    ) -> Result<()> {
        check_range(offset, data.len() as u64, self.len)?;
        self.parent
            .write_notify(self.start + offset, data, fua, done)
            .await
    }
    async fn flush(&self) -> Result<()> {
        self.parent.flush().await
    }
    async fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_range(offset, len, self.len)?;
        self.parent.discard(self.start + offset, len).await
    }
    async fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        check_range(offset, len, self.len)?;
        self.parent.write_zeroes(self.start + offset, len).await
    }
}
