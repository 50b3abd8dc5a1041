//! ha-demo: a two-node NFS cluster (heartbeat's classic topology), printed as a timeline.
//!
//! alpha is the preferred node of group `nfs` = vip + drbd disk + filesystem + nfs-server.
//! The story: both nodes boot, alpha starts the group left to right, alpha crashes, beta
//! declares it dead after deadtime and takes over, alpha reboots and rejoins, and the group
//! fails back through the takeover handshake (beta stops right to left, then alpha starts).
//!
//! * `cargo run -p ha-examples --bin ha-demo [-- --seed N]`: under the deterministic simulator,
//!   in virtual milliseconds.
//! * `cargo run -p ha-examples --bin ha-demo -- --real`: two real `ha_net` node runtimes in this
//!   process, talking authenticated UDP (HMAC-SHA256) over loopback, with in-memory resources;
//!   wall-clock milliseconds.
//!
//! No root, no setup.

mod describe;
mod real;
mod sim;

use anyhow::Result;
use clap::Parser;
use ha_core::model::{ClusterModel, QuorumMode};
use ha_core::sim::model_builder;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Two-node NFS failover demo: simulated, or real runtimes over loopback UDP")]
struct Args {
    /// Seed of the simulation (message delays, action durations).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run two real node runtimes over loopback UDP instead of the simulator.
    #[arg(long)]
    real: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.real {
        real::run()
    } else {
        sim::run(args.seed)
    }
}

/// The demo cluster: alpha (id 1) and beta (id 2), two-node quorum, auto_failback on.
fn demo_model() -> ClusterModel {
    model_builder(2)
        .names(&["alpha", "beta"])
        .quorum(QuorumMode::TwoNode)
        .auto_failback(true)
        .group(
            "nfs",
            &["vip", "drbd-disk", "filesystem", "nfs-server"],
            Some(1),
        )
        .build()
}
