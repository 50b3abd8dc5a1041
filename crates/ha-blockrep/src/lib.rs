//! DRBD-class replicated block device engine with an NBD export.
//!
//! Layers, bottom up:
//! * [`device`]: the [`device::BlockDevice`] trait and backends (file/raw device, RAM with power cuts).
//! * [`meta`]: on-disk metadata — superblock with generation UUIDs, dirty bitmap, activity log.
//! * [`state`]: DRBD's role / connection / replication / disk states and status text.
//! * [`repl`]: the replication protocol (codec, auth, sync decision, rate control).
//! * [`engine`]: the replicated device (roles, I/O path, connections, resync, verify).
//! * [`nbd`]: the NBD export of an engine.
//! * [`config`]: drbd.conf import; [`attach`]: open a disk with its metadata; [`drbddisk`]: the
//!   ha-core resource that promotes/demotes.

//!
//! A two-node setup on one host, exported over NBD from the Primary:
//!
//! ```no_run
//! # async fn demo() -> ha_blockrep::Result<()> {
//! use ha_blockrep::device::{DynDevice, FileDevice, SubDevice};
//! use ha_blockrep::engine::{Engine, EngineConfig};
//! use ha_blockrep::meta::{Layout, Metadata, DEFAULT_AL_EXTENTS};
//! use ha_blockrep::nbd::{Export, NbdServer};
//! use std::sync::Arc;
//!
//! let disk: DynDevice = Arc::new(FileDevice::open("/dev/sdb1".as_ref(), false)?);
//! let layout = Layout::internal(disk.size(), DEFAULT_AL_EXTENTS)?;
//! let md_area: DynDevice = Arc::new(SubDevice::new(disk.clone(), layout.data_size, layout.md_size())?);
//! let data: DynDevice = Arc::new(SubDevice::new(disk, 0, layout.data_size)?);
//! let md = Metadata::create(md_area, layout.data_size, DEFAULT_AL_EXTENTS).await?; // or load()
//! let engine = Engine::attach(data, md, EngineConfig::new("r0", "alice")).await?;
//! engine.listen("0.0.0.0:7789".parse().unwrap()).await?;
//! engine.promote(true).await?; // first Primary of fresh metadata: forced
//! let nbd = NbdServer::new(vec![Arc::new(engine.clone()) as Arc<dyn Export>]);
//! nbd.spawn("127.0.0.1:10809".parse().unwrap()).await?;
//! println!("{}", engine.status().proc_text());
//! # Ok(()) }
//! ```

pub mod attach;
pub mod config;
pub mod device;
pub mod drbddisk;
pub mod engine;
pub mod error;
pub mod meta;
pub mod nbd;
pub mod repl;
mod sendbuf;
pub mod state;

pub use error::{Error, Result};
