//! Plain data model of an IPVS table: virtual services, real servers (destinations), counters.
//!
//! The model holds what a user configures. Values the kernel fills in (connection counts,
//! statistics) live in [`ServiceEntry`] / [`DestEntry`], returned when a table is read back.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use crate::error::Error;

/// Transport protocol of an address-based virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
    /// SCTP (IP protocol 132).
    Sctp,
}

impl Protocol {
    /// IP protocol number as the kernel stores it.
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// Protocol from its IP protocol number.
    pub fn from_number(n: u16) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Upper-case name as `ipvsadm -L` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// Address family (for fwmark services, which carry no address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (AF_INET).
    V4,
    /// IPv6 (AF_INET6).
    V6,
}

impl Family {
    /// Kernel AF_* number.
    pub fn af(self) -> u16 {
        match self {
            Family::V4 => libc::AF_INET as u16,
            Family::V6 => libc::AF_INET6 as u16,
        }
    }

    /// Family from an AF_* number.
    pub fn from_af(af: u16) -> Option<Self> {
        if af == libc::AF_INET as u16 {
            Some(Family::V4)
        } else if af == libc::AF_INET6 as u16 {
            Some(Family::V6)
        } else {
            None
        }
    }

    /// Family of an IP address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// What identifies a virtual service: protocol + address + port, or a firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// `-t/-u/--sctp-service ADDR:PORT`.
    Addr {
        /// Transport protocol.
        protocol: Protocol,
        /// Virtual address and port.
        addr: SocketAddr,
    },
    /// `-f MARK [-6]`.
    Fwmark {
        /// Firewall mark (non-zero).
        mark: u32,
        /// Address family of the marked traffic.
        family: Family,
    },
}

impl ServiceKey {
    /// TCP service shorthand.
    pub fn tcp(addr: SocketAddr) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr,
        }
    }

    /// UDP service shorthand.
    pub fn udp(addr: SocketAddr) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr,
        }
    }

    /// Address family of the service.
    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Addr { addr, .. } => Family::of(&addr.ip()),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }

    /// Virtual port (0 for fwmark services).
    pub fn port(&self) -> u16 {
        match self {
            ServiceKey::Addr { addr, .. } => addr.port(),
            ServiceKey::Fwmark { .. } => 0,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr { protocol, addr } => write!(f, "{} {}", protocol.name(), addr),
            ServiceKey::Fwmark {
                mark,
                family: Family::V4,
            } => write!(f, "FWM {mark}"),
            ServiceKey::Fwmark {
                mark,
                family: Family::V6,
            } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

/// Scheduling algorithm of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheduler {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection (ipvsadm's default).
    Wlc,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
    /// Maglev hashing.
    Mh,
    /// Any other scheduler module name the kernel may know (e.g. `twos`).
    Other(String),
}

impl Scheduler {
    /// Every scheduler this crate names explicitly.
    pub const KNOWN: [Scheduler; 13] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Lblc,
        Scheduler::Lblcr,
        Scheduler::Dh,
        Scheduler::Sh,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Fo,
        Scheduler::Ovf,
        Scheduler::Mh,
    ];

    /// Kernel module name (`ip_vs_<name>`), as ipvsadm prints it.
    pub fn name(&self) -> &str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
            Scheduler::Dh => "dh",
            Scheduler::Sh => "sh",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Fo => "fo",
            Scheduler::Ovf => "ovf",
            Scheduler::Mh => "mh",
            Scheduler::Other(s) => s,
        }
    }
}

impl FromStr for Scheduler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if let Some(k) = Scheduler::KNOWN.iter().find(|k| k.name() == s) {
            return Ok(k.clone());
        }
        // The kernel limits names to IP_VS_SCHEDNAME_MAXLEN (16) including the NUL.
        if s.is_empty()
            || s.len() > 15
            || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(Error::invalid(format!(
                "invalid scheduler name {s:?} (expected one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh)"
            )));
        }
        Ok(Scheduler::Other(s.to_string()))
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Virtual service flag bits (IP_VS_SVC_F_*).
pub mod svc_flags {
    /// Persistent service.
    pub const PERSISTENT: u32 = 0x0001;
    /// Set by the kernel on hashed entries (read-only).
    pub const HASHED: u32 = 0x0002;
    /// One-packet scheduling.
    pub const ONEPACKET: u32 = 0x0004;
    /// Scheduler flag 1 (sh-fallback / mh-fallback).
    pub const SCHED1: u32 = 0x0008;
    /// Scheduler flag 2 (sh-port / mh-port).
    pub const SCHED2: u32 = 0x0010;
    /// Scheduler flag 3.
    pub const SCHED3: u32 = 0x0020;
    /// All scheduler flags.
    pub const SCHED_MASK: u32 = SCHED1 | SCHED2 | SCHED3;
}

/// Scheduler flags (`-b`), stored as the kernel's SCHED1..3 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct SchedFlags(pub u32);

impl SchedFlags {
    /// No flag.
    pub const NONE: SchedFlags = SchedFlags(0);

    /// Only the scheduler bits of `bits`.
    pub fn from_bits(bits: u32) -> Self {
        SchedFlags(bits & svc_flags::SCHED_MASK)
    }

    /// True when no flag is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parse ipvsadm's comma-separated `-b` list for scheduler `sched`.
    pub fn parse(sched: &Scheduler, list: &str) -> Result<Self, Error> {
        let mut bits = 0;
        for name in list.split(',') {
            bits |= match (name, sched) {
                ("sh-fallback", Scheduler::Sh) | ("mh-fallback", Scheduler::Mh) | ("flag-1", _) => {
                    svc_flags::SCHED1
                }
                ("sh-port", Scheduler::Sh) | ("mh-port", Scheduler::Mh) | ("flag-2", _) => {
                    svc_flags::SCHED2
                }
                ("flag-3", _) => svc_flags::SCHED3,
                _ => {
                    return Err(Error::invalid(format!(
                        "invalid scheduler flag {name:?} for scheduler {sched}"
                    )));
                }
            };
        }
        Ok(SchedFlags(bits))
    }

    /// Render like ipvsadm's `print_sched_flags` (names depend on the scheduler).
    pub fn render(self, sched: &Scheduler) -> String {
        let mut names: Vec<&str> = Vec::new();
        match sched {
            Scheduler::Sh | Scheduler::Mh => {
                let p = if *sched == Scheduler::Sh {
                    ["sh-fallback", "sh-port"]
                } else {
                    ["mh-fallback", "mh-port"]
                };
                if self.0 & svc_flags::SCHED1 != 0 {
                    names.push(p[0]);
                }
                if self.0 & svc_flags::SCHED2 != 0 {
                    names.push(p[1]);
                }
            }
            _ => {
                for (bit, n) in [
                    (svc_flags::SCHED1, "flag-1"),
                    (svc_flags::SCHED2, "flag-2"),
                    (svc_flags::SCHED3, "flag-3"),
                ] {
                    if self.0 & bit != 0 {
                        names.push(n);
                    }
                }
            }
        }
        names.join(",")
    }
}

/// Persistence granularity mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Netmask {
    /// IPv4 mask such as 255.255.255.0.
    V4(Ipv4Addr),
    /// IPv6 prefix length 1..=128.
    V6(u8),
}

impl Netmask {
    /// The default (host) granularity for a family: 255.255.255.255 or /128.
    pub fn host(family: Family) -> Self {
        match family {
            Family::V4 => Netmask::V4(Ipv4Addr::BROADCAST),
            Family::V6 => Netmask::V6(128),
        }
    }

    /// The value of IPVS_SVC_ATTR_NETMASK: the v4 mask in network byte order, or the v6 prefix.
    pub fn to_raw(self) -> u32 {
        match self {
            Netmask::V4(m) => u32::from_ne_bytes(m.octets()),
            Netmask::V6(p) => u32::from(p),
        }
    }

    /// Decode IPVS_SVC_ATTR_NETMASK for a family.
    pub fn from_raw(family: Family, raw: u32) -> Self {
        match family {
            Family::V4 => Netmask::V4(Ipv4Addr::from(raw.to_ne_bytes())),
            Family::V6 => Netmask::V6(raw.min(128) as u8),
        }
    }
}

/// Persistence settings (`-p TIMEOUT [-M NETMASK]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Persistence {
    /// Timeout in seconds (ipvsadm's default is 300).
    pub timeout: u32,
    /// Granularity mask.
    pub netmask: Netmask,
}

/// A virtual service as configured (without its real servers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    /// Identity.
    pub key: ServiceKey,
    /// Scheduler.
    pub scheduler: Scheduler,
    /// Scheduler flags.
    pub sched_flags: SchedFlags,
    /// Persistence, if any.
    pub persistence: Option<Persistence>,
    /// One-packet scheduling (`-o`, UDP).
    pub one_packet: bool,
    /// Persistence engine name (`--pe sip`).
    pub pe_name: Option<String>,
}

impl Service {
    /// A service with the given key and scheduler and no options.
    pub fn new(key: ServiceKey, scheduler: Scheduler) -> Self {
        Service {
            key,
            scheduler,
            sched_flags: SchedFlags::NONE,
            persistence: None,
            one_packet: false,
            pe_name: None,
        }
    }

    /// IP_VS_SVC_F_* bits for this service (without HASHED).
    pub fn flag_bits(&self) -> u32 {
        let mut f = self.sched_flags.0 & svc_flags::SCHED_MASK;
        if self.persistence.is_some() {
            f |= svc_flags::PERSISTENT;
        }
        if self.one_packet {
            f |= svc_flags::ONEPACKET;
        }
        f
    }
}

/// Tunnel encapsulation type for the tunnel forwarding method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum TunnelType {
    /// IP-in-IP (default).
    #[default]
    Ipip,
    /// Generic UDP encapsulation (needs a port).
    Gue,
    /// GRE.
    Gre,
}

impl TunnelType {
    /// Kernel number.
    pub fn number(self) -> u8 {
        match self {
            TunnelType::Ipip => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
        }
    }

    /// From the kernel number.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            0 => Some(TunnelType::Ipip),
            1 => Some(TunnelType::Gue),
            2 => Some(TunnelType::Gre),
            _ => None,
        }
    }

    /// ipvsadm name.
    pub fn name(self) -> &'static str {
        match self {
            TunnelType::Ipip => "ipip",
            TunnelType::Gue => "gue",
            TunnelType::Gre => "gre",
        }
    }
}

/// Tunnel checksum mode (IP_VS_TUNNEL_ENCAP_FLAG_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum TunnelCsum {
    /// No checksum (0).
    #[default]
    NoCsum,
    /// Checksum (1).
    Csum,
    /// Remote checksum offload (2).
    RemCsum,
}

impl TunnelCsum {
    /// Kernel flag value.
    pub fn bits(self) -> u16 {
        match self {
            TunnelCsum::NoCsum => 0,
            TunnelCsum::Csum => 1,
            TunnelCsum::RemCsum => 2,
        }
    }

    /// From the kernel flag value.
    pub fn from_bits(b: u16) -> Option<Self> {
        match b {
            0 => Some(TunnelCsum::NoCsum),
            1 => Some(TunnelCsum::Csum),
            2 => Some(TunnelCsum::RemCsum),
            _ => None,
        }
    }
}

/// Tunnel parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Tunnel {
    /// Encapsulation.
    pub kind: TunnelType,
    /// Destination UDP port (GUE only; 0 otherwise).
    pub port: u16,
    /// Checksum mode (GUE, GRE).
    pub csum: TunnelCsum,
}

/// Packet forwarding method of a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Forward {
    /// NAT (`-m`).
    Masq,
    /// Local node (the kernel picks this for local addresses given `-g`).
    Local,
    /// IP tunnelling (`-i`).
    Tunnel(Tunnel),
    /// Direct routing / gatewaying (`-g`, the default).
    Route,
    /// Cache bypass.
    Bypass,
}

impl Forward {
    /// IPVS_DEST_ATTR_FWD_METHOD value.
    pub fn method(self) -> u32 {
        match self {
            Forward::Masq => 0,
            Forward::Local => 1,
            Forward::Tunnel(_) => 2,
            Forward::Route => 3,
            Forward::Bypass => 4,
        }
    }
}

/// A real server of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Real address and port.
    pub addr: SocketAddr,
    /// Forwarding method.
    pub forward: Forward,
    /// Weight (0 = quiesced: no new connections).
    pub weight: u32,
    /// Upper connection threshold (0 = none).
    pub u_thresh: u32,
    /// Lower connection threshold (0 = none).
    pub l_thresh: u32,
}

impl Destination {
    /// A destination with weight 1 and no thresholds.
    pub fn new(addr: SocketAddr, forward: Forward) -> Self {
        Destination {
            addr,
            forward,
            weight: 1,
            u_thresh: 0,
            l_thresh: 0,
        }
    }

    /// Same destination with another weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

/// A virtual service with its real servers: the unit of a desired table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    /// The service.
    pub service: Service,
    /// Its real servers (order is not significant).
    pub dests: Vec<Destination>,
}

/// A whole desired IPVS table.
pub type Table = Vec<VirtualService>;

/// Traffic counters and rates (the kernel's `ip_vs_stats64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub inpkts: u64,
    /// Outgoing packets.
    pub outpkts: u64,
    /// Incoming bytes.
    pub inbytes: u64,
    /// Outgoing bytes.
    pub outbytes: u64,
    /// Connections per second.
    pub cps: u64,
    /// Incoming packets per second.
    pub inpps: u64,
    /// Outgoing packets per second.
    pub outpps: u64,
    /// Incoming bytes per second.
    pub inbps: u64,
    /// Outgoing bytes per second.
    pub outbps: u64,
}

/// A real server as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestEntry {
    /// Configuration.
    pub dest: Destination,
    /// Active connections.
    pub active_conns: u32,
    /// Inactive connections.
    pub inact_conns: u32,
    /// Persistent connection templates.
    pub persist_conns: u32,
    /// Counters.
    pub stats: Stats,
}

/// A virtual service as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Configuration.
    pub service: Service,
    /// Counters.
    pub stats: Stats,
    /// Real servers.
    pub dests: Vec<DestEntry>,
}

impl ServiceEntry {
    /// Drop counters: the configuration part.
    pub fn to_virtual(&self) -> VirtualService {
        VirtualService {
            service: self.service.clone(),
            dests: self.dests.iter().map(|d| d.dest).collect(),
        }
    }
}

/// General IPVS information (IPVS_CMD_GET_INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// Version code, e.g. 0x010201 for 1.2.1.
    pub version: u32,
    /// Size of the connection hash table.
    pub conn_tab_size: u32,
}

/// Connection timeouts in seconds (0 = leave unchanged when setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    /// Established TCP.
    pub tcp: u32,
    /// TCP after FIN.
    pub tcp_fin: u32,
    /// UDP.
    pub udp: u32,
}

/// Sync daemon role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DaemonState {
    /// Sends connection state.
    Master,
    /// Receives connection state.
    Backup,
}

impl DaemonState {
    /// IP_VS_STATE_* value.
    pub fn bits(self) -> u32 {
        match self {
            DaemonState::Master => 1,
            DaemonState::Backup => 2,
        }
    }
}

/// Connection synchronisation daemon settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncDaemon {
    /// Role.
    pub state: DaemonState,
    /// Multicast interface name.
    pub mcast_ifn: String,
    /// Sync id (0-255).
    pub sync_id: u32,
    /// Maximum sync message length (0 = kernel default).
    pub sync_maxlen: u16,
    /// Multicast group (None = kernel default 224.0.0.81).
    pub mcast_group: Option<IpAddr>,
    /// UDP port (0 = default 8848).
    pub mcast_port: u16,
    /// TTL (0 = default 1).
    pub mcast_ttl: u8,
}
