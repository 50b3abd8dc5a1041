//! A star topology: N host namespaces, each with one veth leg (`eth0`) plugged into a bridge
//! that lives in its own namespace. Addresses are private and exist only inside these
//! namespaces, so test traffic never leaves them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::Netns;
use crate::{Error, Result, cmd};

/// Interface name of every host's leg, inside its namespace.
pub const HOST_IFACE: &str = "eth0";
const BRIDGE: &str = "br0";

/// Delay / loss settings for `tc qdisc ... netem` on a host's egress.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Netem {
    /// Added one-way delay.
    pub delay: Duration,
    /// Random variation around `delay`.
    pub jitter: Duration,
    /// Packet loss in percent (0.0 ..= 100.0).
    pub loss_percent: f64,
}

/// One host of a [`Topology`].
#[derive(Debug)]
pub struct Host {
    ns: Netns,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
}

impl Host {
    /// The host's namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Its IPv4 address on `eth0`.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// Its IPv6 address on `eth0`, when the topology has IPv6.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ipv6
    }

    /// Bring the host's own `eth0` up or down.
    pub fn set_iface_up(&self, up: bool) -> Result<()> {
        self.ns
            .ip(&["link", "set", HOST_IFACE, if up { "up" } else { "down" }])?;
        Ok(())
    }

    /// Ping `addr` once from this host with a `wait` deadline; true when a reply came back.
    pub fn ping(&self, addr: impl std::fmt::Display, wait: Duration) -> Result<bool> {
        let secs = wait.as_secs().max(1).to_string();
        let addr = addr.to_string();
        // iputils ping when installed (Debian iputils-ping), else busybox's applet.
        let out = if cmd::which("ping").is_some() {
            self.ns
                .exec("ping", &["-c", "1", "-W", &secs, "-q", &addr])?
        } else {
            self.ns
                .exec("busybox", &["ping", "-c", "1", "-W", &secs, "-q", &addr])?
        };
        Ok(out.status.success())
    }

    /// Set (or replace) netem delay/loss on this host's egress. Fails with
    /// [`Error::NetemUnavailable`] when the kernel has no sch_netem.
    pub fn set_netem(&self, netem: Netem) -> Result<()> {
        let delay = format!("{}us", netem.delay.as_micros());
        let jitter = format!("{}us", netem.jitter.as_micros());
        let loss = format!("{}%", netem.loss_percent);
        let mut args = vec![
            "qdisc", "replace", "dev", HOST_IFACE, "root", "netem", "delay", &delay,
        ];
        if !netem.jitter.is_zero() {
            args.push(&jitter);
        }
        if netem.loss_percent > 0.0 {
            args.extend(["loss", &loss]);
        }
        let out = self.ns.exec("tc", &args)?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if stderr.contains("qdisc kind is unknown") || stderr.contains("No such file") {
            Err(Error::NetemUnavailable { detail: stderr })
        } else {
            Err(cmd::failure("tc", &args, &out))
        }
    }

    /// Remove any netem qdisc from this host's egress.
    pub fn clear_netem(&self) -> Result<()> {
        // A failing `tc` here only means no qdisc was installed ("Cannot delete qdisc with
        // handle of zero"), which is the state we want: its status is deliberately ignored.
        self.ns
            .exec("tc", &["qdisc", "del", "dev", HOST_IFACE, "root"])?;
        Ok(())
    }
}

/// Builder for a [`Topology`].
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    hosts: usize,
    subnet: [u8; 3],
    ipv6: bool,
}

impl TopologyBuilder {
    /// Number of hosts (at least 1, at most 250).
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// First three octets of the /24 the hosts get addresses in (`.1`, `.2`, ...).
    /// Must be inside 10.0.0.0/8 or 192.168.0.0/16. Default 10.77.0.0/24.
    pub fn subnet_v4(mut self, prefix: [u8; 3]) -> Self {
        self.subnet = prefix;
        self
    }

    /// Also give each host an address in fd00:77::/64 (default on).
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }

    /// Create the namespaces, the bridge and the links. Everything built so far is removed
    /// again if a step fails.
    pub fn build(self) -> Result<Topology> {
        if self.hosts == 0 || self.hosts > 250 {
            return Err(Error::Invalid(format!(
                "topology needs 1..=250 hosts, got {}",
                self.hosts
            )));
        }
        let private = self.subnet[0] == 10 || (self.subnet[0] == 192 && self.subnet[1] == 168);
        if !private {
            return Err(Error::Invalid(format!(
                "subnet {:?} is not inside 10/8 or 192.168/16",
                self.subnet
            )));
        }
        // Best effort: namespaces of killed test runs would otherwise pile up.
        let _ = super::cleanup_stale();
        let bridge = Netns::new("br")?;
        bridge.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        bridge.ip(&["link", "set", BRIDGE, "up"])?;
        let mut topo = Topology {
            hosts: Vec::new(),
            bridge,
        };
        for i in 0..self.hosts {
            let ns = Netns::new(&format!("h{i}"))?;
            let port = port_name(i);
            ns.ip(&[
                "link",
                "add",
                HOST_IFACE,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                topo.bridge.name(),
            ])?;
            topo.bridge
                .ip(&["link", "set", &port, "master", BRIDGE, "up"])?;
            let host_octet =
                u8::try_from(i + 1).map_err(|_| Error::Invalid("too many hosts".into()))?;
            let [a, b, c] = self.subnet;
            let ipv4 = Ipv4Addr::new(a, b, c, host_octet);
            ns.ip(&["addr", "add", &format!("{ipv4}/24"), "dev", HOST_IFACE])?;
            let ipv6 = if self.ipv6 {
                let v6 = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, u16::from(host_octet));
                ns.ip(&[
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    HOST_IFACE,
                    "nodad",
                ])?;
                Some(v6)
            } else {
                None
            };
            ns.ip(&["link", "set", HOST_IFACE, "up"])?;
            topo.hosts.push(Host { ns, ipv4, ipv6 });
        }
        Ok(topo)
    }
}

fn port_name(i: usize) -> String {
    format!("p{i}")
}

/// N hosts on one bridge, each in its own namespace. Dropping it deletes every namespace
/// (and with them the veth pairs and the bridge).
#[derive(Debug)]
pub struct Topology {
    // Hosts first: their namespaces go before the bridge's.
    hosts: Vec<Host>,
    bridge: Netns,
}

impl Topology {
    /// A builder with defaults: 2 hosts, 10.77.0.0/24, IPv6 on.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder {
            hosts: 2,
            subnet: [10, 77, 0],
            ipv6: true,
        }
    }

    /// `n` hosts with default addressing.
    pub fn star(n: usize) -> Result<Topology> {
        Self::builder().hosts(n).build()
    }

    /// Host `i` (0-based). Panics when out of range (a test bug).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// All hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The namespace holding the bridge.
    pub fn bridge_ns(&self) -> &Netns {
        &self.bridge
    }

    /// Names of every namespace of this topology (for leak checks).
    pub fn namespace_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.hosts.iter().map(|h| h.ns.name().to_string()).collect();
        v.push(self.bridge.name().to_string());
        v
    }

    /// Plug (`up`) or pull (`!up`) host `i`'s cable: sets the bridge-side port, so the host
    /// sees its carrier go away like on a real switch.
    pub fn set_link(&self, i: usize, up: bool) -> Result<()> {
        if i >= self.hosts.len() {
            return Err(Error::Invalid(format!(
                "no host {i} in a {}-host topology",
                self.hosts.len()
            )));
        }
        self.bridge
            .ip(&["link", "set", &port_name(i), if up { "up" } else { "down" }])?;
        Ok(())
    }
}
