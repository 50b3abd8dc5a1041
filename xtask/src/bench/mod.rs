//! Benchmarks: each prints a table and ends with one `RESULT key=value ...` line.

use anyhow::bail;

mod blockrep;
mod failover;

/// Known benchmarks and what they measure.
const BENCHES: &[(&str, &str)] = &[
    (
        "failover",
        "failover time of ours vs keepalived (netns), false failovers under load, idle CPU",
    ),
    (
        "blockrep",
        "NBD export throughput/latency vs qemu-nbd (host), full and incremental resync",
    ),
    (
        "blockrep-vm",
        "two VMs: blockrepd + kernel NBD vs kernel DRBD 8.4, dd throughput and 4K latency",
    ),
];

/// Run the benchmark `name`.
pub fn run(name: &str, args: &[String]) -> anyhow::Result<()> {
    match name {
        "failover" => failover::run(args),
        "blockrep" => blockrep::run(args),
        "blockrep-vm" => blockrep::vm::run(args),
        "list" => {
            for (n, what) in BENCHES {
                println!("{n:12} {what}");
            }
            Ok(())
        }
        other => bail!("unknown benchmark `{other}`; `cargo xtask bench list` shows them"),
    }
}
