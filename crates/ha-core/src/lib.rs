//! Sans-IO state machines for high availability.
//!
//! `ha-core` holds the cluster logic of ha-toolkit: peer liveness, membership and quorum,
//! resources and groups, the placement policy, and the configuration model. Nothing in here
//! opens a socket or reads a clock: the embedding runtime (for example `ha-net`) feeds time and
//! messages in and carries actions out. The same code therefore runs unchanged under the
//! deterministic simulator in [`sim`], with virtual time and injected faults.

pub mod config;
pub mod error;
pub mod ids;
pub mod liveness;
pub mod membership;
pub mod message;
pub mod model;
pub mod node;
pub mod outcome;
pub mod placement;
pub mod quorum;
pub mod resource;
pub mod sim;
pub mod time;

pub use error::{Error, Result};
pub use ids::{GroupId, LinkId, NodeId, ResourceId};
pub use message::Message;
pub use node::{ActionId, Event, Node, NodeStatus, Output, ResourceAction};
pub use outcome::{OcfCode, ResourceOp, Severity};
pub use time::Timestamp;
