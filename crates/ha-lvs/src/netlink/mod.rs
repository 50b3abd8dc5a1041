//! The kernel's IPVS generic netlink family: hand-written attribute codec ([`codec`]), model
//! conversion ([`convert`]) and a blocking, pipelining client ([`IpvsClient`]).

mod client;
pub mod codec;
pub mod convert;

pub use client::{IpvsClient, Request};
