//! I/O around ha-core: authenticated heartbeat transport, tokio node runtime, floating IP,
//! ping nodes.
//!
//! All cluster logic (liveness, membership, quorum, placement, grants) lives in ha-core's
//! sans-IO `Node`; this crate only moves bytes, time and action outcomes in and out of it.
//!
//! Layers, bottom up:
//! - [`wire`]: the versioned binary frame and the hand-written codec of ha-core's messages;
//!   decoders check every length and return typed errors;
//! - [`auth`]: HMAC keys (heartbeat's authkeys, rotation), replay windows, drop counters;
//! - [`session`]: sans-IO endpoint combining both, with a reliable control stream (sequence
//!   numbers, NACKs, resend until acknowledged) and unreliable heartbeats;
//! - [`media`]: UDP unicast/multicast/broadcast bound to interfaces, and byte streams (serial);
//! - [`runtime`]: the tokio node driving `ha_core::node::Node`, with events, status and
//!   graceful handover;
//! - [`alarm`]: exact (timerfd) wake-ups for the node loop's timers;
//! - [`floating_ip`]: the `IPaddr` resource (rtnetlink + gratuitous ARP / unsolicited NA);
//! - [`ping`]: ICMP reachability of ping nodes;
//! - [`control`]: the operator's Unix socket (`standby`, `online`, `move`, `ban`, `clear`,
//!   `status`); [`operator_state`] keeps those requests across restarts.
//!
//! The `ha-net-node` binary runs one node as a process (used by the namespace tests).

pub mod alarm;
pub mod auth;
pub mod control;
pub mod error;
pub mod exit_watch;
pub mod floating_ip;
pub mod media;
pub mod operator_state;
pub mod ping;
pub mod reannounce;
pub mod runtime;
pub mod session;
pub mod wire;

pub use error::{Error, Result};
