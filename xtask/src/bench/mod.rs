//! Benchmarks: each prints a table and ends with one `RESULT key=value ...` line.

use anyhow::bail;

mod blockrep;
mod checker;
mod failover;
mod ipvs;

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
    (
        "ipvs",
        "fresh VMs: 10,000 services x 5 real servers via our netlink client vs ipvsadm -R",
    ),
    (
        "checker",
        "host: CPU and missed checks of TCP health checks of 10,000 loopback endpoints at 1 s",
    ),
];

/// Run the benchmark `name`.
pub fn run(name: &str, args: &[String]) -> anyhow::Result<()> {
    match name {
        "failover" => failover::run(args),
        "blockrep" => blockrep::run(args),
        "blockrep-vm" => blockrep::vm::run(args),
        "ipvs" => ipvs::run(args),
        "checker" => checker::run(args),
        "list" => {
            for (n, what) in BENCHES {
                println!("{n:12} {what}");
            }
            Ok(())
        }
        other => bail!("unknown benchmark `{other}`; `cargo xtask bench list` shows them"),
    }
}
