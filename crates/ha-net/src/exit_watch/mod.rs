//! Learning at once that a peer's daemon exited: each node holds a TCP connection open to
//! every unicast peer, and the peer's host closes it (FIN, or RST) the moment the daemon dies,
//! however it dies (SIGKILL, a crash, the OOM killer). Idle, the connections cost nothing: no
//! data flows, only a TCP keepalive every few seconds finds connections to hosts that vanished.
//!
//! Per unicast medium, on the medium's address and port (TCP this time):
//! - a listener accepts connections from the medium's peer addresses; to each it answers the
//!   watcher's [`hello::Challenge`] with a [`hello::Hello`] signed with the cluster key, then
//!   holds the connection open for as long as the daemon lives;
//! - a watcher per peer address connects, checks the hello (a cluster node other than us, a
//!   valid signature over its fresh nonce) and waits. A close then is reported as
//!   [`PeerExit`] of that node's incarnation; anything else (refused, timed out, a bad hello)
//!   only means "try again in a while".
//!
//! An off-path attacker cannot close a connection it does not see (it would need the TCP
//! sequence numbers); anyone on the path can drop heartbeats anyway. Still, ha-core acts on an
//! exit only for the incarnation it currently sees alive, and not under majority quorum
//! ([`ha_core::Node::handle_peer_exit`]).

pub mod hello;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ha_core::{LinkId, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use self::hello::{CHALLENGE_LEN, Challenge, HELLO_HEAD_LEN, Hello};
use crate::auth::Keyring;

/// Pause before a watcher tries again (peer not up, connection lost, bad hello).
const RETRY: Duration = Duration::from_millis(500);
/// Longest wait for a connection or a hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections a listener holds at most (a watcher per peer address is all it needs).
const MAX_HELD: usize = 64;

/// A peer's daemon exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerExit {
    /// The medium whose connection closed.
    pub link: LinkId,
    /// The peer.
    pub node: NodeId,
    /// The instance that exited.
    pub incarnation: u64,
}

/// One unicast medium, as the exit watch needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchLink {
    /// Its link id.
    pub link: LinkId,
    /// Interface its sockets are bound to (empty: any).
    pub interface: String,
    /// The medium's local address and port: the listener's.
    pub local: SocketAddr,
    /// Peer addresses (their listeners use the same port as their heartbeats).
    pub peers: Vec<SocketAddr>,
}

/// Who we are and whom we trust.
#[derive(Debug, Clone)]
pub struct Identity {
    /// This node.
    pub me: NodeId,
    /// This instance.
    pub incarnation: u64,
    /// Every node of the cluster.
    pub nodes: Vec<NodeId>,
    /// Signs our hellos and checks the peers'.
    pub keyring: Keyring,
}

/// The running listeners and watchers; dropping it closes every connection.
#[derive(Debug, Default)]
pub struct ExitWatch {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ExitWatch {
    /// Start listening and watching on `links`; exits go to `exits`. Needs a tokio runtime. A
    /// listener that cannot bind is logged and skipped: peers then cannot watch us on that
    /// medium, and deadtime alone tells them we died.
    pub fn start(links: &[WatchLink], id: Identity, exits: mpsc::Sender<PeerExit>) -> ExitWatch {
        let id = Arc::new(id);
        let mut w = ExitWatch::default();
        for l in links {
            match listen(l) {
                Ok(listener) => {
                    let allowed: Vec<IpAddr> = l.peers.iter().map(SocketAddr::ip).collect();
                    w.tasks
                        .push(tokio::spawn(serve(listener, allowed, Arc::clone(&id))));
                }
                Err(e) => tracing::warn!(link = %l.link, local = %l.local, error = %e,
                    "exit watch: cannot listen; peers will detect our death by deadtime only"),
            }
            for &peer in &l.peers {
                w.tasks.push(tokio::spawn(watch(
                    l.clone(),
                    peer,
                    Arc::clone(&id),
                    exits.clone(),
                )));
            }
        }
        w
    }
}

fn listen(l: &WatchLink) -> std::io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(l.local),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    if l.local.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if !l.interface.is_empty() {
        s.bind_device(Some(l.interface.as_bytes()))?;
    }
    s.bind(&l.local.into())?;
    s.listen(16)?;
    s.set_nonblocking(true)?;
    TcpListener::from_std(s.into())
}

/// Accept peers' watchers and answer their challenge; hold each connection until either end
/// closes it. The connections live in a [`JoinSet`] owned here: when this task is aborted
/// (the runtime stops), they close with it.
async fn serve(listener: TcpListener, allowed: Vec<IpAddr>, id: Arc<Identity>) {
    let mut conns = JoinSet::new();
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "exit watch: accept failed");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        // Reap closed connections: what is left in the set is what we hold.
        while conns.try_join_next().is_some() {}
        if !allowed.contains(&from.ip()) || conns.len() >= MAX_HELD {
            tracing::debug!(%from, "exit watch: connection refused (not a peer, or too many)");
            continue;
        }
        let id = Arc::clone(&id);
        conns.spawn(async move {
            if let Err(e) = answer(stream, &id).await {
                tracing::debug!(%from, error = %e, "exit watch: watcher left");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, id: &Identity) -> std::io::Result<()> {
    let mut buf = [0u8; CHALLENGE_LEN];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
    let challenge = Challenge::decode(&buf).map_err(invalid)?;
    let signed = Hello::signed(&challenge.nonce, id.me.0, id.incarnation);
    let hello = Hello {
        node: id.me.0,
        incarnation: id.incarnation,
        key_id: id.keyring.signing().0,
        tag: id.keyring.sign(&signed),
    };
    stream.write_all(&hello.encode()).await?;
    // Hold the connection: our exit closes it. Whatever the watcher sends is ignored.
    let mut sink = [0u8; 64];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

/// How one watch ended.
enum Ended {
    /// The peer's host closed the connection: the daemon exited.
    Exit(NodeId, u64),
    /// Not connected, or lost without a close (host gone, timeout): try again.
    Retry(std::io::Error),
}

/// Watch `peer` for as long as we run: connect, check its hello, report its close; again.
async fn watch(l: WatchLink, peer: SocketAddr, id: Arc<Identity>, exits: mpsc::Sender<PeerExit>) {
    loop {
        match watch_once(&l, peer, &id).await {
            Ended::Exit(node, incarnation) => {
                tracing::info!(%peer, %node, incarnation, "exit watch: the peer's daemon exited");
                let exit = PeerExit {
                    link: l.link,
                    node,
                    incarnation,
                };
                if exits.send(exit).await.is_err() {
                    return;
                }
            }
            Ended::Retry(e) => tracing::trace!(%peer, error = %e, "exit watch: not watching"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn watch_once(l: &WatchLink, peer: SocketAddr, id: &Identity) -> Ended {
    let mut stream = match connect(l, peer).await {
        Ok(s) => s,
        Err(e) => return Ended::Retry(e),
    };
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut stream, id)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Ended::Retry(e),
        Err(_) => return Ended::Retry(std::io::ErrorKind::TimedOut.into()),
    };
    // A host that vanishes never closes: keepalive probes find out, and we connect again.
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(2))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&ka) {
        return Ended::Retry(e);
    }
    let node = NodeId(hello.node);
    let mut sink = [0u8; 64];
    loop {
        match stream.read(&mut sink).await {
            Ok(0) => return Ended::Exit(node, hello.incarnation),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ended::Exit(node, hello.incarnation);
            }
            Err(e) => return Ended::Retry(e),
        }
    }
}

async fn connect(l: &WatchLink, peer: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(peer),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if !l.interface.is_empty() {
        s.bind_device(Some(l.interface.as_bytes()))?;
    }
    if !l.local.ip().is_unspecified() {
        // From the medium's own address, which the peer's listener accepts.
        s.bind(&SocketAddr::new(l.local.ip(), 0).into())?;
    }
    s.set_nonblocking(true)?;
    let socket = tokio::net::TcpSocket::from_std_stream(s.into());
    tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.connect(peer))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Send a fresh challenge and check the peer's signed answer.
async fn handshake(stream: &mut TcpStream, id: &Identity) -> std::io::Result<Hello> {
    let challenge = Challenge { nonce: nonce()? };
    stream.write_all(&challenge.encode()).await?;
    let mut head = [0u8; HELLO_HEAD_LEN];
    stream.read_exact(&mut head).await?;
    let tag_len = Hello::tag_len(&head).map_err(invalid)?;
    let mut wire = head.to_vec();
    wire.resize(HELLO_HEAD_LEN + tag_len, 0);
    stream.read_exact(&mut wire[HELLO_HEAD_LEN..]).await?;
    let hello = Hello::decode(&wire).map_err(invalid)?;
    let node = NodeId(hello.node);
    if node == id.me || !id.nodes.contains(&node) {
        return Err(invalid(format!("hello from {node}, not a peer")));
    }
    let signed = Hello::signed(&challenge.nonce, hello.node, hello.incarnation);
    id.keyring
        .verify(hello.key_id, &signed, &hello.tag)
        .map_err(invalid)?;
    Ok(hello)
}

fn nonce() -> std::io::Result<[u8; 16]> {
    let mut n = [0u8; 16];
    // SAFETY: writes at most 16 bytes into `n`.
    let got = unsafe { libc::getrandom(n.as_mut_ptr().cast(), n.len(), 0) };
    if usize::try_from(got).ok() != Some(n.len()) {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}
