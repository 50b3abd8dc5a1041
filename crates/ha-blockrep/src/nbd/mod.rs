//! NBD server (fixed newstyle handshake, simple replies, many requests in flight).
//!
//! Exports implement [`Export`]; the [`crate::engine::Engine`] does, serving only while it is
//! Primary. A Secondary refuses `NBD_OPT_GO`/`INFO` with `NBD_REP_ERR_POLICY` and a message.

pub mod proto;
mod server;

pub use server::NbdServer;

use crate::error::Result;
use async_trait::async_trait;
use bytes::Bytes;

/// Something the NBD server can export.
#[async_trait]
pub trait Export: Send + Sync + 'static {
    /// Export name clients ask for.
    fn name(&self) -> &str;
    /// Size in bytes.
    fn size(&self) -> u64;
    /// `Err` with a human-readable reason if the export must not be served now.
    fn check_serving(&self) -> Result<()>;
    /// Read.
    async fn read(&self, offset: u64, len: usize) -> Result<Bytes>;
    /// Write (`fua`: durable on return).
    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<()>;
    /// Flush completed writes.
    async fn flush(&self) -> Result<()>;
    /// Discard.
    async fn trim(&self, offset: u64, len: u64) -> Result<()>;
    /// Write zeroes (`may_trim`: holes allowed).
    async fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> Result<()>;
}

#[async_trait]
impl Export for crate::engine::Engine {
    fn name(&self) -> &str {
        crate::engine::Engine::name(self)
    }
    fn size(&self) -> u64 {
        crate::engine::Engine::size(self)
    }
    fn check_serving(&self) -> Result<()> {
        crate::engine::Engine::check_serving(self)
    }
    async fn read(&self, offset: u64, len: usize) -> Result<Bytes> {
        crate::engine::Engine::read(self, offset, len).await
    }
    async fn write(&self, offset: u64, data: Bytes, fua: bool) -> Result<()> {
        crate::engine::Engine::write(self, offset, data, fua).await
    }
    async fn flush(&self) -> Result<()> {
        crate::engine::Engine::flush(self).await
    }
    async fn trim(&self, offset: u64, len: u64) -> Result<()> {
        crate::engine::Engine::write_zeroes(self, offset, len, true).await
    }
    async fn write_zeroes(&self, offset: u64, len: u64, may_trim: bool) -> Result<()> {
        crate::engine::Engine::write_zeroes(self, offset, len, may_trim).await
    }
}
