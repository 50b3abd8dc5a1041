//! The floating IP resource (heartbeat's `IPaddr`, keepalived's virtual_ipaddress): add or
//! remove an address on an interface through rtnetlink, then announce it so neighbours update
//! their caches at once instead of waiting for their ARP/ND entries to expire.
//!
//! Announcements: a burst of gratuitous ARP requests (sender = target = the address, from the
//! interface's MAC; `garp_count`, default 5 like keepalived's `vrrp_garp_master_repeat`) sent on
//! a raw datalink socket, or for IPv6 unsolicited neighbour advertisements (override flag) to
//! all-nodes. The first announcement goes out before `start` returns; the rest of the burst and
//! the optional periodic refresh (`garp_refresh_ms`, like `garp_master_refresh`) run in the
//! background while the address is held. [`reannounce`] asks the holder for another burst
//! (the runtime calls it when a peer may have announced the same address, see
//! [`crate::reannounce`]).
//!
//! Parameters (`AgentSpec::Builtin { kind: "IPaddr" }`): `ip` (required), `cidr_netmask`
//! (prefix length or dotted mask; default 32 / 128), `nic` (required), `label` (IPv4 only;
//! `eth0:vip` or just `vip`), `garp_count`, `garp_interval_ms` (default 10), `garp_refresh_ms`
//! (default 0: off).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use ha_core::model::ResourceSpec;
use ha_core::resource::{OpTimeouts, Resource, ResourceRegistry};
use ha_core::{OcfCode, ResourceId, ResourceOp};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlag, AddressMessage};

use crate::{Error, Result};

/// Kind name under which [`register`] installs the resource.
pub const KIND: &str = "IPaddr";

/// Configuration of one floating address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIpConfig {
    /// The address.
    pub ip: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Interface.
    pub nic: String,
    /// IPv4 label (`nic:suffix`).
    pub label: Option<String>,
    /// Announcements per burst.
    pub garp_count: u32,
    /// Time between the announcements of a burst.
    pub garp_interval: Duration,
    /// Repeat a burst this often while held (`None`: never).
    pub garp_refresh: Option<Duration>,
}

fn param<'a>(spec: &'a ResourceSpec, name: &str) -> Option<&'a str> {
    spec.params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn parse_prefix(s: &str, v6: bool) -> Option<u8> {
    if let Ok(n) = s.parse::<u8>() {
        return (n <= if v6 { 128 } else { 32 }).then_some(n);
    }
    // A dotted IPv4 mask: contiguous ones only.
    let m = u32::from(s.parse::<Ipv4Addr>().ok()?);
    (!v6 && m.leading_ones() + m.trailing_zeros() == 32).then_some(m.leading_ones() as u8)
}

impl FloatingIpConfig {
    /// Read the resource's parameters.
    pub fn from_spec(spec: &ResourceSpec) -> Result<Self> {
        let bad = |m: String| Error::Config(format!("resource {}: {m}", spec.id));
        let ip: IpAddr = param(spec, "ip")
            .ok_or_else(|| bad("parameter `ip` is required".into()))?
            .parse()
            .map_err(|_| bad("`ip` is not an IPv4 or IPv6 address".into()))?;
        let v6 = ip.is_ipv6();
        let prefix = match param(spec, "cidr_netmask") {
            Some(p) => parse_prefix(p, v6)
                .ok_or_else(|| bad(format!("`cidr_netmask` {p} is not a prefix length or mask")))?,
            None => {
                if v6 {
                    128
                } else {
                    32
                }
            }
        };
        let nic = param(spec, "nic")
            .ok_or_else(|| bad("parameter `nic` (the interface) is required".into()))?
            .to_owned();
        let label = match param(spec, "label") {
            None => None,
            Some(_) if v6 => return Err(bad("`label` applies to IPv4 addresses only".into())),
            Some(l) => {
                let l = if l.starts_with(nic.as_str()) {
                    l.to_owned()
                } else {
                    format!("{nic}:{l}")
                };
                if l.len() > 15 {
                    return Err(bad(format!("label `{l}` exceeds 15 characters")));
                }
                Some(l)
            }
        };
        let num = |name: &str, default: u64| -> Result<u64> {
            param(spec, name).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| bad(format!("`{name}` must be a whole number, got `{v}`")))
            })
        };
        let refresh = num("garp_refresh_ms", 0)?;
        Ok(FloatingIpConfig {
            ip,
            prefix,
            nic,
            label,
            garp_count: u32::try_from(num("garp_count", 5)?).unwrap_or(u32::MAX),
            garp_interval: Duration::from_millis(num("garp_interval_ms", 10)?),
            garp_refresh: (refresh > 0).then(|| Duration::from_millis(refresh)),
        })
    }
}

/// A floating IP address.
#[derive(Debug)]
pub struct FloatingIp {
    id: ResourceId,
    cfg: FloatingIpConfig,
    timeouts: OpTimeouts,
    announcer: Mutex<Option<Sender<()>>>,
    /// Key of this instance's entry in [`HELD`].
    token: u64,
}

type HeldMap = BTreeMap<ResourceId, Vec<(u64, Sender<()>)>>;

/// Announcers of the addresses held in this process, by resource id: sending on one starts a
/// new burst. A map rather than a handle in the runtime because resources reach the runtime
/// as `dyn Resource`. (Nodes sharing a process, as in tests, share it: a request reaches
/// every holder of that id in the process, which only costs an extra burst.)
static HELD: LazyLock<Mutex<HeldMap>> = LazyLock::new(|| Mutex::new(BTreeMap::new()));

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Send another announcement burst for resource `id` if it is a floating IP held in this
/// process; returns how many holders were asked (0: not held here, nothing to do).
pub fn reannounce(id: &ResourceId) -> usize {
    let Ok(mut held) = HELD.lock() else {
        return 0;
    };
    let Some(list) = held.get_mut(id) else {
        return 0;
    };
    // A send fails only if the thread is gone; forget such entries.
    list.retain(|(_, tx)| tx.send(()).is_ok());
    let n = list.len();
    if n == 0 {
        held.remove(id);
    }
    if n > 0 {
        tracing::info!(resource = %id, "re-announcing floating ip");
    }
    n
}

fn held_insert(id: &ResourceId, token: u64, tx: Sender<()>) {
    if let Ok(mut held) = HELD.lock() {
        held.entry(id.clone()).or_default().push((token, tx));
    }
}

fn held_remove(id: &ResourceId, token: u64) {
    if let Ok(mut held) = HELD.lock()
        && let Some(list) = held.get_mut(id)
    {
        list.retain(|(t, _)| *t != token);
        if list.is_empty() {
            held.remove(id);
        }
    }
}

/// Register [`FloatingIp`] as built-in kind `IPaddr`.
pub fn register(registry: &mut ResourceRegistry) {
    registry.register(KIND, |spec: &ResourceSpec| {
        let r = FloatingIp::from_spec(spec).map_err(|e| ha_core::Error::Agent {
            agent: format!("{} ({KIND})", spec.id),
            message: e.to_string(),
        })?;
        Ok(Box::new(r) as Box<dyn Resource>)
    });
}

fn nl_err(context: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let context = context.into();
    move |e| Error::Netlink {
        context,
        message: e.to_string(),
    }
}

async fn netlink() -> Result<rtnetlink::Handle> {
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| Error::io("open rtnetlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

fn ifindex(nic: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(nic)
        .map_err(|e| Error::io(format!("interface `{nic}`"), e.into()))
}

impl FloatingIp {
    /// From a resource spec (see the module docs for the parameters).
    pub fn from_spec(spec: &ResourceSpec) -> Result<Self> {
        Ok(Self::new(
            spec.id.clone(),
            FloatingIpConfig::from_spec(spec)?,
            OpTimeouts::from_spec(spec),
        ))
    }

    /// From a configuration.
    pub fn new(id: ResourceId, cfg: FloatingIpConfig, timeouts: OpTimeouts) -> Self {
        FloatingIp {
            id,
            cfg,
            timeouts,
            announcer: Mutex::new(None),
            token: NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FloatingIpConfig {
        &self.cfg
    }

    /// Our address as installed on the interface, if present.
    async fn find(&self, h: &rtnetlink::Handle, index: u32) -> Result<Vec<AddressMessage>> {
        let mut s = h
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(self.cfg.ip)
            .execute();
        let mut found = Vec::new();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(nl_err(format!("list addresses of {}", self.cfg.nic)))?
        {
            found.push(m);
        }
        Ok(found)
    }

    /// Whether the address is on the interface.
    pub async fn is_present(&self) -> Result<bool> {
        let h = netlink().await?;
        let index = ifindex(&self.cfg.nic)?;
        Ok(!self.find(&h, index).await?.is_empty())
    }

    /// Add the address (idempotent).
    pub async fn add(&self) -> Result<()> {
        let h = netlink().await?;
        let index = ifindex(&self.cfg.nic)?;
        if !self.find(&h, index).await?.is_empty() {
            return Ok(());
        }
        let mut req = h.address().add(index, self.cfg.ip, self.cfg.prefix);
        if let Some(l) = &self.cfg.label {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Label(l.clone()));
        }
        if self.cfg.ip.is_ipv6() {
            // Usable at once: no duplicate address detection delay (the cluster guarantees
            // a single holder).
            req.message_mut()
                .header
                .flags
                .push(AddressHeaderFlag::Nodad);
        }
        req.execute().await.map_err(nl_err(format!(
            "add {}/{} to {}",
            self.cfg.ip, self.cfg.prefix, self.cfg.nic
        )))
    }

    /// Remove the address (idempotent).
    pub async fn remove(&self) -> Result<()> {
        let h = netlink().await?;
        let index = ifindex(&self.cfg.nic)?;
        for m in self.find(&h, index).await? {
            match h.address().del(m).execute().await {
                Ok(()) => {}
                // Gone in the meantime: fine.
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.code.map(|c| c.get()) == Some(-libc::EADDRNOTAVAIL) => {}
                Err(e) => {
                    return Err(nl_err(format!(
                        "remove {} from {}",
                        self.cfg.ip, self.cfg.nic
                    ))(e));
                }
            }
        }
        Ok(())
    }

    fn stop_announcer(&self) {
        held_remove(&self.id, self.token);
        if let Ok(mut a) = self.announcer.lock() {
            // Dropping the last sender wakes the announcer thread, which exits.
            a.take();
        }
    }

    /// Announce once now, then hand the open socket to a thread that sends the rest of the
    /// burst and the periodic refreshes until [`Self::stop_announcer`].
    ///
    /// The socket is open only during a burst: a packet socket receives a copy of every frame
    /// on the interface (pnet opens it for all protocols), which a busy VIP holder must not pay
    /// for between announcements.
    fn announce_and_spawn(&self) {
        let cfg = self.cfg.clone();
        let mut sender = match Announcer::open(&cfg) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(ip = %cfg.ip, nic = %cfg.nic, error = %e, "cannot announce the address");
                return;
            }
        };
        sender.send_logged(&cfg);
        let mut sender = Some(sender);
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("ha-garp".into())
            // Small stack: under mlockall(MCL_FUTURE) every stack page is faulted in at once.
            .stack_size(128 * 1024)
            .spawn(move || {
                // The rest of the first burst, then idle until a refresh is due or
                // [`reannounce`] asks; a request during a burst restarts it.
                let mut left = cfg.garp_count.saturating_sub(1);
                loop {
                    if left == 0 {
                        // Burst over. Closing waits for an RCU grace period (10-15 ms
                        // measured): fine here, off the runtime.
                        sender = None;
                    }
                    let timeout = if left > 0 {
                        cfg.garp_interval
                    } else {
                        // No refresh: sleep until asked or released.
                        cfg.garp_refresh.unwrap_or(Duration::from_secs(3600))
                    };
                    match stop_rx.recv_timeout(timeout) {
                        // Asked again: a full burst, starting now.
                        Ok(()) => left = cfg.garp_count.saturating_sub(1),
                        Err(RecvTimeoutError::Timeout) if left > 0 => left -= 1,
                        // Refresh due: a full burst.
                        Err(RecvTimeoutError::Timeout) if cfg.garp_refresh.is_some() => {
                            left = cfg.garp_count.saturating_sub(1)
                        }
                        Err(RecvTimeoutError::Timeout) => continue,
                        // Released.
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    if sender.is_none() {
                        match Announcer::open(&cfg) {
                            Ok(s) => sender = Some(s),
                            Err(e) => {
                                tracing::warn!(ip = %cfg.ip, nic = %cfg.nic, error = %e,
                                    "cannot announce the address");
                                continue;
                            }
                        }
                    }
                    if let Some(s) = sender.as_mut() {
                        s.send_logged(&cfg);
                    }
                }
            });
        match spawned {
            Ok(_) => {
                held_insert(&self.id, self.token, stop_tx.clone());
                if let Ok(mut a) = self.announcer.lock() {
                    *a = Some(stop_tx);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot spawn the announcer thread"),
        }
    }
}

/// An open socket for announcing one address.
enum Announcer {
    /// Raw datalink sender and the gratuitous ARP frame.
    V4(Box<dyn pnet_datalink::DataLinkSender>, Vec<u8>),
    /// Raw ICMPv6 socket and the neighbour advertisement.
    V6(socket2::Socket, Vec<u8>),
}

impl Announcer {
    /// Open the socket for `cfg` (needs CAP_NET_RAW).
    fn open(cfg: &FloatingIpConfig) -> Result<Announcer> {
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == cfg.nic)
            .ok_or_else(|| Error::Config(format!("interface `{}` not found", cfg.nic)))?;
        let mac = iface
            .mac
            .map(|m| m.octets())
            .ok_or_else(|| Error::Config(format!("interface `{}` has no MAC address", cfg.nic)))?;
        match cfg.ip {
            IpAddr::V4(ip) => {
                let config = pnet_datalink::Config {
                    promiscuous: false,
                    ..Default::default()
                };
                let ch = pnet_datalink::channel(&iface, config)
                    .map_err(|e| Error::io(format!("raw socket on {}", cfg.nic), e))?;
                let pnet_datalink::Channel::Ethernet(tx, rx) = ch else {
                    return Err(Error::Config(format!(
                        "`{}` is not an Ethernet interface",
                        cfg.nic
                    )));
                };
                // The receive half shares the socket; nothing reads it.
                drop(rx);
                Ok(Announcer::V4(tx, garp_frame(mac, ip)))
            }
            IpAddr::V6(ip) => {
                use socket2::{Domain, Protocol, Socket, Type};
                let ctx = |w: &str| format!("neighbour advertisement on {}: {w}", cfg.nic);
                let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
                    .map_err(|e| Error::io(ctx("socket"), e))?;
                s.bind_device(Some(cfg.nic.as_bytes()))
                    .map_err(|e| Error::io(ctx("bind device"), e))?;
                // Receivers drop neighbour discovery with a hop limit other than 255.
                s.set_multicast_hops_v6(255)
                    .map_err(|e| Error::io(ctx("hop limit"), e))?;
                s.set_multicast_if_v6(iface.index)
                    .map_err(|e| Error::io(ctx("multicast interface"), e))?;
                Ok(Announcer::V6(s, unsolicited_na(mac, ip)))
            }
        }
    }

    /// Send one announcement.
    fn send(&mut self) -> Result<()> {
        match self {
            Announcer::V4(tx, frame) => match tx.send_to(frame, None) {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(Error::io("send gratuitous ARP", e)),
                None => Err(Error::Config("datalink sender refused the frame".into())),
            },
            Announcer::V6(s, pkt) => {
                let all_nodes: std::net::SocketAddr =
                    (Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0).into();
                s.send_to(pkt, &all_nodes.into())
                    .map(|_| ())
                    .map_err(|e| Error::io("send neighbour advertisement", e))
            }
        }
    }

    fn send_logged(&mut self, cfg: &FloatingIpConfig) {
        if let Err(e) = self.send() {
            tracing::warn!(ip = %cfg.ip, nic = %cfg.nic, error = %e, "announcement failed");
        }
    }
}

/// A gratuitous ARP request for `ip` from `mac`, padded to the Ethernet minimum.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xFF; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0x00; 6]);
    f.extend_from_slice(&ip.octets());
    f.resize(60, 0);
    f
}

/// An unsolicited neighbour advertisement for `ip` (ICMPv6 body; the kernel adds the checksum).
pub fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let mut p = vec![136, 0, 0, 0, 0x20, 0, 0, 0]; // type NA, flags: Override
    p.extend_from_slice(&ip.octets());
    p.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    p.extend_from_slice(&mac);
    p
}

/// Send one announcement of `cfg.ip` on `cfg.nic` (needs CAP_NET_RAW). Closing the packet
/// socket afterwards takes an RCU grace period; the resource itself keeps its socket open.
pub fn announce(cfg: &FloatingIpConfig) -> Result<()> {
    Announcer::open(cfg)?.send()
}

fn code(op: ResourceOp, r: Result<()>, id: &ResourceId) -> OcfCode {
    match r {
        Ok(()) => OcfCode::Success,
        Err(e) => {
            tracing::error!(resource = %id, %op, error = %e, "floating ip operation failed");
            match e {
                Error::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    OcfCode::ErrInstalled
                }
                Error::Io { ref source, .. } if source.raw_os_error() == Some(libc::ENODEV) => {
                    // No such interface on this node: it cannot run here.
                    OcfCode::ErrInstalled
                }
                Error::Io { ref source, .. }
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    OcfCode::ErrPerm
                }
                Error::Config(_) => OcfCode::ErrConfigured,
                _ => OcfCode::ErrGeneric,
            }
        }
    }
}

#[async_trait]
impl Resource for FloatingIp {
    fn id(&self) -> &ResourceId {
        &self.id
    }

    async fn start(&self) -> OcfCode {
        let r = self.add().await;
        if r.is_ok() {
            tracing::info!(resource = %self.id, ip = %self.cfg.ip, nic = %self.cfg.nic, "floating ip added");
            if self.cfg.garp_count > 0 {
                self.announce_and_spawn();
            }
        }
        code(ResourceOp::Start, r, &self.id)
    }

    async fn stop(&self) -> OcfCode {
        self.stop_announcer();
        let r = self.remove().await;
        if r.is_ok() {
            tracing::info!(resource = %self.id, ip = %self.cfg.ip, nic = %self.cfg.nic, "floating ip removed");
        }
        code(ResourceOp::Stop, r, &self.id)
    }

    async fn monitor(&self) -> OcfCode {
        match self.is_present().await {
            Ok(true) => OcfCode::Success,
            Ok(false) => {
                tracing::debug!(resource = %self.id, ip = %self.cfg.ip, "floating ip not present");
                OcfCode::NotRunning
            }
            Err(e) => code(ResourceOp::Monitor, Err(e), &self.id),
        }
    }

    fn timeout(&self, op: ResourceOp) -> Duration {
        self.timeouts.for_op(op)
    }
}

impl Drop for FloatingIp {
    fn drop(&mut self) {
        self.stop_announcer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reannounce_reaches_held_announcers_only() {
        let id = ResourceId::from("reannounce-unit-vip");
        assert_eq!(reannounce(&id), 0, "nothing held yet");
        let (tx, rx) = std::sync::mpsc::channel();
        held_insert(&id, 7, tx);
        assert_eq!(reannounce(&id), 1);
        assert!(
            rx.try_recv().is_ok(),
            "the announcer thread was asked for a burst"
        );
        held_remove(&id, 7);
        assert_eq!(reannounce(&id), 0, "released: no longer announced");
        assert!(rx.try_recv().is_err());
        // An announcer whose thread died is forgotten.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        held_insert(&id, 8, tx);
        drop(rx);
        assert_eq!(reannounce(&id), 0);
    }
}
