//! The service the client probes: one process per node, started by the bench in the node's
//! namespace as `xtask bench failover -- --responder NAME PORT`.
//!
//! It binds 0.0.0.0, so a probe to the floating address reaches it only on the node whose
//! interface holds that address and that the client's neighbour entry points to: moving
//! traffic takes a gratuitous ARP, as in production. It answers `NAME SEQ`. It belongs to
//! the node: the fault kills it together with the HA daemon (a daemon killed with SIGKILL
//! leaves the address configured, so a surviving responder would keep answering).

use std::net::UdpSocket;

use anyhow::Context;

use super::rig::{die_with_parent, realtime_thread};

/// Serve forever (until killed).
pub fn serve(name: &str, port: u16) -> anyhow::Result<()> {
    // The bench spawns responders from its main thread, which lives as long as the bench.
    die_with_parent();
    // Same priority as the client's threads: the harness must not be what is slow.
    realtime_thread(40);
    let sock = UdpSocket::bind(("0.0.0.0", port))
        .with_context(|| format!("responder {name}: binding UDP port {port}"))?;
    let mut buf = [0u8; 256];
    let mut reply = Vec::with_capacity(300);
    loop {
        let (n, from) = sock
            .recv_from(&mut buf)
            .with_context(|| format!("responder {name}: receiving"))?;
        reply.clear();
        reply.extend_from_slice(name.as_bytes());
        reply.push(b' ');
        reply.extend_from_slice(&buf[..n]);
        // A lost answer is just a lost probe.
        let _ = sock.send_to(&reply, from);
    }
}
