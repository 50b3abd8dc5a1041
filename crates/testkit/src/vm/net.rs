//! VM networking: unique MACs, NIC descriptions and VM-to-VM links over qemu's UDP netdev.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Error, Result};

static MAC_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A locally administered MAC unique to this process and NIC.
pub(super) fn unique_mac() -> String {
    let n = MAC_COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!(
        "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
        (pid >> 8) & 0xff,
        pid & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// One end of a point-to-point link between two VMs, carried by qemu's UDP socket netdev
/// (much faster than the TCP one). Make both ends with [`UdpLink::pair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEnd {
    /// UDP port on 127.0.0.1 this VM's qemu receives on.
    pub local_port: u16,
    /// UDP port on 127.0.0.1 the peer's qemu receives on.
    pub remote_port: u16,
}

/// Factory for VM-to-VM links.
#[derive(Debug)]
pub struct UdpLink;

impl UdpLink {
    /// Two matching ends on free loopback UDP ports.
    pub fn pair() -> Result<(LinkEnd, LinkEnd)> {
        let a = free_udp_port()?;
        let mut b = free_udp_port()?;
        while b == a {
            b = free_udp_port()?;
        }
        Ok((
            LinkEnd {
                local_port: a,
                remote_port: b,
            },
            LinkEnd {
                local_port: b,
                remote_port: a,
            },
        ))
    }
}

fn free_udp_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")
        .map_err(|e| Error::io("bind a UDP port on 127.0.0.1", e))?;
    let port = s
        .local_addr()
        .map_err(|e| Error::io("UDP local_addr", e))?
        .port();
    Ok(port)
}

/// How a NIC is connected on the host side.
#[derive(Debug, Clone)]
pub(super) enum NicKind {
    User,
    Udp(LinkEnd),
}

/// One virtio-net NIC of a VM.
#[derive(Debug, Clone)]
pub(super) struct Nic {
    pub(super) kind: NicKind,
    /// CIDR to configure on the guest interface (user net: fixed 10.0.2.15/24).
    pub(super) addr: Option<String>,
    pub(super) mac: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_unique_and_local() {
        let a = unique_mac();
        let b = unique_mac();
        assert_ne!(a, b);
        assert!(a.starts_with("52:54:"));
    }
}
