//! Heartbeat media: the redundant links frames travel on.
//!
//! Every medium sends every frame (redundancy: one surviving link keeps the cluster whole) and
//! reports each received frame with its [`LinkId`], so ha-core tracks liveness per link.
//! Link ids are the positions of the media in the model's `links`.

pub mod stream;
pub mod udp;
pub mod unreachable;

use std::net::{IpAddr, SocketAddr};

use bytes::{Bytes, BytesMut};
use ha_core::LinkId;
use ha_core::model::{LinkSpec, Medium};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Error, Result};
pub use stream::FdStream;
pub use udp::{DEFAULT_PORT, Received, RecvBatch, UdpConfig, UdpLink, UdpMode};
pub use unreachable::UnreachableWatch;

/// A frame as received, with the link it came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The medium.
    pub link: LinkId,
    /// The frame bytes (not yet authenticated).
    pub frame: Bytes,
    /// The address it came from (UDP media).
    pub source: Option<std::net::SocketAddr>,
}

#[derive(Debug)]
enum LinkTx {
    Udp(UdpLink),
    /// Drained by [`Media::poll_receive`] instead of a receive task.
    PolledUdp(UdpLink),
    Stream(mpsc::Sender<Bytes>),
}

/// The open media of a node.
#[derive(Debug, Default)]
pub struct Media {
    links: Vec<(String, LinkTx)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Media {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Translate a model medium into a UDP configuration (`None` for serial media).
pub fn udp_config(medium: &Medium) -> Result<Option<UdpConfig>> {
    Ok(Some(match medium {
        Medium::Ucast {
            interface,
            peers,
            port,
        } => UdpConfig {
            interface: interface.clone(),
            port: *port,
            bind: None,
            mode: UdpMode::Unicast {
                peers: peers
                    .iter()
                    .map(|p| udp::parse_peer(p, *port))
                    .collect::<Result<_>>()?,
            },
        },
        Medium::Mcast {
            interface,
            group,
            port,
            ttl,
            r#loop,
        } => UdpConfig {
            interface: interface.clone(),
            port: *port,
            bind: None,
            mode: UdpMode::Multicast {
                group: group.parse::<IpAddr>().map_err(|_| {
                    Error::Config(format!("multicast group `{group}` is not an IP address"))
                })?,
                ttl: *ttl,
                r#loop: *r#loop,
            },
        },
        Medium::Bcast { interface, port } => UdpConfig {
            interface: interface.clone(),
            port: *port,
            bind: None,
            mode: UdpMode::Broadcast,
        },
        Medium::Serial { .. } => return Ok(None),
    }))
}

impl Media {
    /// No media yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Open every medium of the model in order (link ids follow the order). Needs a tokio
    /// runtime; received frames go to `inbound`.
    pub fn open(links: &[LinkSpec], inbound: &mpsc::Sender<Inbound>) -> Result<Media> {
        Self::open_with(links, inbound, false)
    }

    /// Like [`Media::open`]; with `poll_udp` the UDP media get no receive task: the owner
    /// drains them with [`Media::poll_receive`] (a node with a short keepalive then wakes
    /// once per tick instead of once per received frame as well).
    pub fn open_with(
        links: &[LinkSpec],
        inbound: &mpsc::Sender<Inbound>,
        poll_udp: bool,
    ) -> Result<Media> {
        let mut m = Media::new();
        for l in links {
            match &l.medium {
                Medium::Serial { device, baud } => {
                    let s = FdStream::open_serial(device, *baud)?;
                    m.add_stream(&l.name, s, inbound.clone())?;
                }
                other => {
                    let Some(cfg) = udp_config(other)? else {
                        continue;
                    };
                    if poll_udp {
                        m.add_udp_polled(&l.name, &cfg)?;
                    } else {
                        m.add_udp(&l.name, &cfg, inbound.clone())?;
                    }
                }
            }
        }
        Ok(m)
    }

    fn next_id(&self) -> Result<LinkId> {
        u8::try_from(self.links.len())
            .map(LinkId)
            .map_err(|_| Error::Config("more than 256 heartbeat media".into()))
    }

    /// Add a UDP medium.
    pub fn add_udp(
        &mut self,
        name: &str,
        cfg: &UdpConfig,
        inbound: mpsc::Sender<Inbound>,
    ) -> Result<LinkId> {
        let id = self.next_id()?;
        let link = UdpLink::open(cfg)?;
        let socket = link.tokio_socket()?;
        let label = name.to_owned();
        self.tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        let frame = Bytes::copy_from_slice(&buf[..n]);
                        let source = Some(from);
                        if inbound
                            .send(Inbound {
                                link: id,
                                frame,
                                source,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        // ICMP errors (port unreachable) surface here too; their details wait
                        // in the error queue for `poll_unreachable`.
                        tracing::debug!(link = %label, error = %e, "udp receive error");
                    }
                }
            }
        }));
        tracing::info!(link = %name, %id, interface = %cfg.interface, port = cfg.port, mode = ?cfg.mode, "udp medium open");
        self.links.push((name.to_owned(), LinkTx::Udp(link)));
        Ok(id)
    }

    /// Add a UDP medium without a receive task: frames wait in the socket until
    /// [`Media::poll_receive`].
    pub fn add_udp_polled(&mut self, name: &str, cfg: &UdpConfig) -> Result<LinkId> {
        let id = self.next_id()?;
        let link = UdpLink::open(cfg)?;
        // The frames are read up to a tick late: their kernel arrival stamps keep liveness exact.
        link.enable_rx_timestamps()?;
        tracing::info!(link = %name, %id, interface = %cfg.interface, port = cfg.port, mode = ?cfg.mode, "udp medium open (polled)");
        self.links.push((name.to_owned(), LinkTx::PolledUdp(link)));
        Ok(id)
    }

    /// True when some medium is drained by [`Media::poll_receive`].
    pub fn has_polled(&self) -> bool {
        self.links
            .iter()
            .any(|(_, l)| matches!(l, LinkTx::PolledUdp(_)))
    }

    /// Hand every frame waiting in a polled medium to `deliver` with its kernel arrival stamp
    /// and source, using `batch` as scratch. Returns the number of frames.
    pub fn poll_receive(
        &self,
        batch: &mut RecvBatch,
        mut deliver: impl FnMut(LinkId, Received<'_>),
    ) -> usize {
        // Bounded per call so a flood cannot keep the node from its timers.
        const MAX_CALLS_PER_LINK: usize = 32;
        let mut n = 0;
        for (i, (name, l)) in self.links.iter().enumerate() {
            let LinkTx::PolledUdp(u) = l else { continue };
            let id = LinkId(u8::try_from(i).unwrap_or(u8::MAX));
            for _ in 0..MAX_CALLS_PER_LINK {
                match u.try_recv_batch(batch) {
                    Ok(got) => {
                        n += got;
                        for r in batch.frames() {
                            deliver(id, r);
                        }
                        if got < RecvBatch::SLOTS {
                            // Short batch: the queue is empty, no need for an EAGAIN call.
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // ICMP errors (port unreachable) surface here too; their details wait
                        // in the error queue for `poll_unreachable`.
                        tracing::debug!(link = %name, error = %e, "udp receive error");
                    }
                }
            }
        }
        n
    }

    /// Hand every "port unreachable" queued on a unicast medium to `report` with the
    /// destination it was about; other ICMP errors are dropped. Returns how many were reported.
    pub fn poll_unreachable(&self, mut report: impl FnMut(LinkId, SocketAddr)) -> usize {
        // Bounded per call like `poll_receive`: the error queue holds at most a socket buffer.
        const MAX_PER_LINK: usize = 64;
        let mut n = 0;
        for (id, name, u) in self.unicast() {
            for _ in 0..MAX_PER_LINK {
                match u.try_recv_unreachable() {
                    Ok(Some(dest)) => {
                        n += 1;
                        report(id, dest);
                    }
                    Ok(None) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        tracing::debug!(link = %name, error = %e, "udp error queue unreadable");
                        break;
                    }
                }
            }
        }
        n
    }

    /// The unicast UDP media (the ones that know their peers' addresses), with link id and
    /// name.
    fn unicast(&self) -> impl Iterator<Item = (LinkId, &str, &UdpLink)> {
        self.links
            .iter()
            .enumerate()
            .filter_map(|(i, (name, l))| match l {
                LinkTx::Udp(u) | LinkTx::PolledUdp(u) if u.reports_unreachable() => {
                    Some((LinkId(u8::try_from(i).unwrap_or(u8::MAX)), name.as_str(), u))
                }
                _ => None,
            })
    }

    /// The unicast media as the exit watch needs them ([`crate::exit_watch`]).
    pub fn watch_links(&self) -> Vec<crate::exit_watch::WatchLink> {
        self.unicast()
            .filter_map(|(link, _, u)| {
                Some(crate::exit_watch::WatchLink {
                    link,
                    interface: u.interface.clone(),
                    local: u.local_addr().ok()?,
                    peers: u.dests.clone(),
                })
            })
            .collect()
    }

    /// A watch that wakes when a unicast medium has an ICMP error queued (`None` without
    /// unicast media). Received frames do not wake it: polled media stay polled.
    pub fn unreachable_watch(&self) -> Result<Option<UnreachableWatch>> {
        let sockets: Vec<&std::net::UdpSocket> =
            self.unicast().map(|(_, _, u)| u.socket.as_ref()).collect();
        if sockets.is_empty() {
            return Ok(None);
        }
        UnreachableWatch::new(sockets).map(Some)
    }

    /// Add a stream medium over any byte stream (serial line, pty, pipe pair, TCP).
    pub fn add_stream<S>(
        &mut self,
        name: &str,
        io: S,
        inbound: mpsc::Sender<Inbound>,
    ) -> Result<LinkId>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let id = self.next_id()?;
        let (mut rd, mut wr) = tokio::io::split(io);
        let (tx, mut rx) = mpsc::channel::<Bytes>(64);
        let label = name.to_owned();
        self.tasks.push(tokio::spawn(async move {
            let mut out = BytesMut::new();
            while let Some(frame) = rx.recv().await {
                out.clear();
                if stream::encode(&frame, &mut out).is_err() {
                    continue;
                }
                if let Err(e) = wr.write_all(&out).await {
                    tracing::warn!(link = %label, error = %e, "stream medium write failed");
                    return;
                }
                let _ = wr.flush().await;
            }
        }));
        let label = name.to_owned();
        self.tasks.push(tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(4096);
            loop {
                while let Some(frame) = stream::extract(&mut buf) {
                    let source = None;
                    if inbound
                        .send(Inbound {
                            link: id,
                            frame,
                            source,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) => {
                        tracing::warn!(link = %label, "stream medium closed");
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(link = %label, error = %e, "stream medium read failed");
                        return;
                    }
                }
            }
        }));
        tracing::info!(link = %name, %id, "stream medium open");
        self.links.push((name.to_owned(), LinkTx::Stream(tx)));
        Ok(id)
    }

    /// Number of media.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// True without media.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Send `frame` on `link`, or on every link when `None`. Never blocks: a congested medium
    /// drops the frame as a lossy link would.
    pub fn send(&self, link: Option<LinkId>, frame: &Bytes) {
        for (i, (name, tx)) in self.links.iter().enumerate() {
            if link.is_some_and(|l| usize::from(l.0) != i) {
                continue;
            }
            match tx {
                LinkTx::Udp(u) | LinkTx::PolledUdp(u) => {
                    u.send(frame);
                }
                LinkTx::Stream(s) => {
                    if s.try_send(frame.clone()).is_err() {
                        tracing::trace!(link = %name, "stream medium congested; frame dropped");
                    }
                }
            }
        }
    }
}
