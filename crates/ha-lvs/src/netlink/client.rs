//! Blocking IPVS client over one generic netlink socket.
//!
//! The family id is resolved once per client. Change requests are pipelined: many requests are
//! packed into one datagram (the kernel processes them in order and acks each), then the acks
//! are collected and matched to requests by sequence number. ipvsadm opens a socket and resolves
//! the family for every single rule.

use std::net::SocketAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlMessage};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_GENERIC};
use tracing::debug;

use super::codec::{CmdAttrs, IpvsAttrs, IpvsMessage, cmd};
use super::convert::*;
use crate::error::{Error, KernelError, KernelErrorKind, Result};
use crate::model::*;

/// Requests per datagram: keeps the acks well inside the default receive buffer.
const BATCH: usize = 128;
/// Receive buffer. The kernel sizes dump datagrams after the reader's buffer (up to 32 KiB);
/// 16 KiB never truncates (acks are capped; replies and dump chunks are at most
/// NLMSG_GOODSIZE or the reader's size) and keeps the kernel's allocations small.
const RECV_BUF: usize = 16 * 1024;

/// One change to the IPVS table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// IPVS_CMD_NEW_SERVICE.
    NewService(Service),
    /// IPVS_CMD_SET_SERVICE.
    SetService(Service),
    /// IPVS_CMD_DEL_SERVICE.
    DelService(ServiceKey),
    /// IPVS_CMD_NEW_DEST.
    NewDest(ServiceKey, Destination),
    /// IPVS_CMD_SET_DEST.
    SetDest(ServiceKey, Destination),
    /// IPVS_CMD_DEL_DEST.
    DelDest(ServiceKey, SocketAddr),
    /// IPVS_CMD_FLUSH: delete every service.
    Flush,
    /// IPVS_CMD_ZERO: zero the counters of one service or of all.
    Zero(Option<ServiceKey>),
    /// IPVS_CMD_SET_CONFIG: connection timeouts (0 = unchanged).
    SetTimeouts(Timeouts),
    /// IPVS_CMD_NEW_DAEMON.
    NewDaemon(SyncDaemon),
    /// IPVS_CMD_DEL_DAEMON.
    DelDaemon(DaemonState),
}

impl Request {
    /// Operation name used in errors.
    pub fn op(&self) -> &'static str {
        match self {
            Request::NewService(_) => "add service",
            Request::SetService(_) => "edit service",
            Request::DelService(_) => "delete service",
            Request::NewDest(..) => "add destination",
            Request::SetDest(..) => "edit destination",
            Request::DelDest(..) => "delete destination",
            Request::Flush => "flush",
            Request::Zero(_) => "zero counters of",
            Request::SetTimeouts(_) => "set timeouts",
            Request::NewDaemon(_) => "start sync daemon",
            Request::DelDaemon(_) => "stop sync daemon",
        }
    }

    /// The object the request concerns, for errors.
    pub fn object(&self) -> String {
        match self {
            Request::NewService(s) | Request::SetService(s) => s.key.to_string(),
            Request::DelService(k) => k.to_string(),
            Request::NewDest(k, d) | Request::SetDest(k, d) => format!("{} of {k}", d.addr),
            Request::DelDest(k, a) => format!("{a} of {k}"),
            Request::Flush => "all services".into(),
            Request::Zero(Some(k)) => k.to_string(),
            Request::Zero(None) => "all services".into(),
            Request::SetTimeouts(t) => format!("tcp {} tcpfin {} udp {}", t.tcp, t.tcp_fin, t.udp),
            Request::NewDaemon(d) => {
                format!("{:?} on {} (syncid {})", d.state, d.mcast_ifn, d.sync_id)
            }
            Request::DelDaemon(s) => format!("{s:?}"),
        }
    }

    fn validate(&self) -> Result<()> {
        match self {
            Request::NewService(s) | Request::SetService(s) => validate_service(s),
            Request::NewDest(k, d) | Request::SetDest(k, d) => {
                if d.weight > i32::MAX as u32 {
                    return Err(Error::invalid(format!(
                        "weight of {} of {k} exceeds {}",
                        d.addr,
                        i32::MAX
                    )));
                }
                Ok(())
            }
            Request::NewDaemon(d) if d.mcast_ifn.is_empty() || d.mcast_ifn.len() > 15 => {
                Err(Error::invalid(format!(
                    "sync daemon interface name {:?} must be 1-15 bytes",
                    d.mcast_ifn
                )))
            }
            _ => Ok(()),
        }
    }

    /// The IPVS message for this request.
    pub fn message(&self) -> IpvsMessage {
        let mut a = CmdAttrs::default();
        let c = match self {
            Request::NewService(s) => {
                a.service = Some(svc_full_attrs(s));
                cmd::NEW_SERVICE
            }
            Request::SetService(s) => {
                a.service = Some(svc_full_attrs(s));
                cmd::SET_SERVICE
            }
            Request::DelService(k) => {
                a.service = Some(svc_key_attrs(k));
                cmd::DEL_SERVICE
            }
            Request::NewDest(k, d) => {
                a.service = Some(svc_key_attrs(k));
                a.dest = Some(dest_full_attrs(d));
                cmd::NEW_DEST
            }
            Request::SetDest(k, d) => {
                a.service = Some(svc_key_attrs(k));
                a.dest = Some(dest_full_attrs(d));
                cmd::SET_DEST
            }
            Request::DelDest(k, addr) => {
                a.service = Some(svc_key_attrs(k));
                a.dest = Some(dest_key_attrs(addr));
                cmd::DEL_DEST
            }
            Request::Flush => cmd::FLUSH,
            Request::Zero(k) => {
                a.service = k.as_ref().map(svc_key_attrs);
                cmd::ZERO
            }
            Request::SetTimeouts(t) => {
                a.timeout_tcp = Some(t.tcp);
                a.timeout_tcp_fin = Some(t.tcp_fin);
                a.timeout_udp = Some(t.udp);
                cmd::SET_CONFIG
            }
            Request::NewDaemon(d) => {
                a.daemon = Some(daemon_attrs(d));
                cmd::NEW_DAEMON
            }
            Request::DelDaemon(s) => {
                a.daemon = Some(super::codec::DaemonAttrs {
                    state: Some(s.bits()),
                    ..Default::default()
                });
                cmd::DEL_DAEMON
            }
        };
        IpvsMessage::new(c, a)
    }

    /// Classify a kernel errno for this request the way ipvsadm explains it.
    pub fn classify(&self, errno: i32) -> KernelErrorKind {
        use KernelErrorKind::*;
        let is_dest = matches!(
            self,
            Request::NewDest(..) | Request::SetDest(..) | Request::DelDest(..)
        );
        let is_svc_write = matches!(self, Request::NewService(_) | Request::SetService(_));
        match errno {
            libc::EEXIST => AlreadyExists,
            libc::ESRCH if is_dest => ServiceNotDefined,
            libc::ESRCH if matches!(self, Request::DelDaemon(_)) => NoDaemon,
            libc::ESRCH => NoSuchService,
            libc::ENOENT if is_dest => NoSuchDestination,
            libc::ENOENT if is_svc_write => SchedulerOrPeNotFound,
            libc::EINVAL => Invalid,
            libc::EPERM => PermissionDenied,
            _ => Other,
        }
    }

    fn kernel_error(&self, errno: i32) -> KernelError {
        KernelError {
            op: self.op(),
            object: self.object(),
            errno,
            kind: self.classify(errno),
        }
    }
}

/// What came back for one request.
enum Reply {
    Ack,
    Err(i32),
}

/// A refused GET/dump as a typed kernel error (ESRCH: the service asked about does not exist).
fn query_error(what: &str, errno: i32) -> Error {
    let kind = match errno {
        libc::ESRCH => KernelErrorKind::NoSuchService,
        libc::EINVAL => KernelErrorKind::Invalid,
        libc::EPERM => KernelErrorKind::PermissionDenied,
        _ => KernelErrorKind::Other,
    };
    Error::Kernel(KernelError {
        op: "query",
        object: what.to_string(),
        errno,
        kind,
    })
}

/// Give up on a reply after this long instead of blocking forever.
const RECV_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn set_recv_timeout(sock: &Socket, t: std::time::Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: valid fd owned by `sock`, pointer and length describe a live timeval.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A connection to the kernel's IPVS generic netlink family.
pub struct IpvsClient {
    sock: Socket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
}

fn io(context: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(context, e)
}

impl IpvsClient {
    /// Open a socket and resolve the IPVS family. [`Error::FamilyNotFound`] when ip_vs is not loaded.
    pub fn connect() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_GENERIC).map_err(io("open generic netlink socket"))?;
        sock.bind_auto()
            .map_err(io("bind generic netlink socket"))?;
        sock.connect(&NlAddr::new(0, 0))
            .map_err(io("connect generic netlink socket"))?;
        // Acks then carry only the request header, not the whole request.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        set_recv_timeout(&sock, RECV_TIMEOUT).map_err(io("set netlink receive timeout"))?;
        let mut c = IpvsClient {
            sock,
            family: 0,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        };
        c.family = c.resolve_family()?;
        debug!(family = c.family, "resolved IPVS generic netlink family");
        Ok(c)
    }

    /// The resolved family id.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn resolve_family(&mut self) -> Result<u16> {
        let mut genl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(
                IpvsMessage::family_name().to_string(),
            )],
        });
        genl.finalize();
        let seq = self.next_seq();
        let mut msg = NetlinkMessage::from(genl);
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        self.sock.send(&out, 0).map_err(io("send family lookup"))?;
        let mut family = None;
        loop {
            for raw in self.recv_datagram()? {
                let m = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(&raw)
                    .map_err(|e| Error::Protocol(format!("family lookup reply: {e}")))?;
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(g) => {
                        for a in g.payload.nlas {
                            if let GenlCtrlAttrs::FamilyId(id) = a {
                                family = Some(id);
                            }
                        }
                    }
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => family.ok_or(Error::FamilyNotFound),
                            Some(c) if -c.get() == libc::ENOENT => Err(Error::FamilyNotFound),
                            Some(c) => Err(Error::io(
                                "family lookup",
                                std::io::Error::from_raw_os_error(-c.get()),
                            )),
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    /// Receive one datagram and split it into netlink messages.
    fn recv_datagram(&mut self) -> Result<Vec<Vec<u8>>> {
        self.buf.clear();
        let n = self
            .sock
            .recv(&mut self.buf, libc::MSG_TRUNC)
            .map_err(io("receive from netlink"))?;
        if n > self.buf.len() {
            return Err(Error::Protocol(format!(
                "netlink datagram of {n} bytes truncated to {}",
                self.buf.len()
            )));
        }
        let data = &self.buf[..n];
        let mut out = Vec::new();
        let mut off = 0;
        while off + 16 <= data.len() {
            let nb = NetlinkBuffer::new_checked(&data[off..])
                .map_err(|e| Error::Protocol(format!("bad netlink header: {e}")))?;
            let len = nb.length() as usize;
            if len < 16 || off + len > data.len() {
                return Err(Error::Protocol(format!(
                    "netlink message length {len} out of bounds"
                )));
            }
            out.push(data[off..off + len].to_vec());
            off += (len + 3) & !3;
        }
        Ok(out)
    }

    fn encode(&mut self, m: IpvsMessage, flags: u16) -> (u32, Vec<u8>) {
        let seq = self.next_seq();
        let genl = GenlMessage::new(
            netlink_packet_generic::GenlHeader {
                cmd: m.cmd,
                version: 1,
            },
            m,
            self.family,
        );
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        (seq, out)
    }

    fn parse(raw: &[u8]) -> Result<NetlinkMessage<GenlMessage<IpvsMessage>>> {
        NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(raw)
            .map_err(|e| Error::Protocol(format!("undecodable IPVS message: {e}")))
    }

    /// Send requests pipelined; one outcome per request, in order. `Err` only for I/O or
    /// protocol failures; kernel refusals are the inner `Err`s.
    pub fn execute(
        &mut self,
        reqs: &[Request],
    ) -> Result<Vec<std::result::Result<(), KernelError>>> {
        for r in reqs {
            r.validate()?;
        }
        let mut results = Vec::with_capacity(reqs.len());
        for chunk in reqs.chunks(BATCH) {
            let mut seqs = Vec::with_capacity(chunk.len());
            let mut datagram = Vec::new();
            for r in chunk {
                let (seq, bytes) = self.encode(r.message(), NLM_F_ACK);
                seqs.push(seq);
                datagram.extend_from_slice(&bytes);
            }
            self.sock
                .send(&datagram, 0)
                .map_err(io("send IPVS requests"))?;
            let first = seqs[0];
            let mut replies: Vec<Option<Reply>> = (0..chunk.len()).map(|_| None).collect();
            let mut pending = chunk.len();
            while pending > 0 {
                for raw in self.recv_datagram()? {
                    let m = Self::parse(&raw)?;
                    let idx = m.header.sequence_number.wrapping_sub(first) as usize;
                    if idx >= replies.len() {
                        continue;
                    }
                    if let NetlinkPayload::Error(e) = m.payload {
                        if replies[idx].is_none() {
                            pending -= 1;
                        }
                        replies[idx] = Some(match e.code {
                            None => Reply::Ack,
                            Some(c) => Reply::Err(-c.get()),
                        });
                    }
                }
            }
            for (r, rep) in chunk.iter().zip(replies) {
                results.push(match rep {
                    Some(Reply::Err(errno)) => Err(r.kernel_error(errno)),
                    _ => Ok(()),
                });
            }
        }
        Ok(results)
    }

    /// Send requests pipelined and fail with the first kernel refusal (all requests are still
    /// sent; the kernel keeps processing after a refused one).
    pub fn apply(&mut self, reqs: &[Request]) -> Result<()> {
        for r in self.execute(reqs)? {
            r.map_err(Error::Kernel)?;
        }
        Ok(())
    }

    /// Send one request.
    pub fn request(&mut self, req: Request) -> Result<()> {
        self.apply(std::slice::from_ref(&req))
    }

    /// A GET or dump; returns the data messages.
    fn query(&mut self, m: IpvsMessage, dump: bool, what: &str) -> Result<Vec<IpvsMessage>> {
        let flags = if dump { NLM_F_DUMP } else { NLM_F_ACK };
        let (seq, bytes) = self.encode(m, flags);
        self.sock.send(&bytes, 0).map_err(io("send IPVS query"))?;
        let mut out = Vec::new();
        loop {
            for raw in self.recv_datagram()? {
                let msg = Self::parse(&raw)?;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(g) => out.push(g.payload),
                    NetlinkPayload::Done(d) => {
                        if d.code < 0 {
                            return Err(query_error(what, -d.code));
                        }
                        return Ok(out);
                    }
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(c) => Err(query_error(what, -c.get())),
                        };
                    }
                    _ => {}
                }
            }
        }
    }

    /// IPVS version and connection table size.
    pub fn info(&mut self) -> Result<Info> {
        let replies = self.query(
            IpvsMessage::new(cmd::GET_INFO, CmdAttrs::default()),
            false,
            "get IPVS info",
        )?;
        for r in replies {
            if let IpvsAttrs::Info(i) = r.attrs {
                return Ok(Info {
                    version: i.version.unwrap_or(0),
                    conn_tab_size: i.conn_tab_size.unwrap_or(0),
                });
            }
        }
        Err(Error::Protocol("GET_INFO reply missing".into()))
    }

    /// Every service (without destinations).
    pub fn services(&mut self) -> Result<Vec<(Service, Stats)>> {
        let replies = self.query(
            IpvsMessage::new(cmd::GET_SERVICE, CmdAttrs::default()),
            true,
            "list services",
        )?;
        let mut out = Vec::with_capacity(replies.len());
        for r in replies {
            if let IpvsAttrs::Cmd(CmdAttrs {
                service: Some(s), ..
            }) = &r.attrs
            {
                out.push(service_from_attrs(s)?);
            }
        }
        Ok(out)
    }

    /// One service (IPVS_CMD_GET_SERVICE without dump); a missing service is a
    /// [`KernelErrorKind::NoSuchService`] error.
    pub fn service(&mut self, key: &ServiceKey) -> Result<(Service, Stats)> {
        let m = IpvsMessage::new(
            cmd::GET_SERVICE,
            CmdAttrs {
                service: Some(svc_key_attrs(key)),
                ..Default::default()
            },
        );
        for r in self.query(m, false, &format!("service {key}"))? {
            if let IpvsAttrs::Cmd(CmdAttrs {
                service: Some(s), ..
            }) = &r.attrs
            {
                return service_from_attrs(s);
            }
        }
        Err(Error::Protocol(format!(
            "GET_SERVICE reply for {key} missing"
        )))
    }

    /// The destinations of one service (empty for a missing service: the kernel's dump does
    /// not report it; use [`IpvsClient::service`] to tell).
    pub fn dests(&mut self, key: &ServiceKey) -> Result<Vec<DestEntry>> {
        let m = IpvsMessage::new(
            cmd::GET_DEST,
            CmdAttrs {
                service: Some(svc_key_attrs(key)),
                ..Default::default()
            },
        );
        let replies = self.query(m, true, &format!("list destinations of {key}"))?;
        let mut out = Vec::with_capacity(replies.len());
        for r in replies {
            if let IpvsAttrs::Cmd(CmdAttrs { dest: Some(d), .. }) = &r.attrs {
                out.push(dest_from_attrs(d, key.family())?);
            }
        }
        Ok(out)
    }

    /// The whole table with counters.
    pub fn table(&mut self) -> Result<Vec<ServiceEntry>> {
        let svcs = self.services()?;
        let mut out = Vec::with_capacity(svcs.len());
        for (service, stats) in svcs {
            let dests = self.dests(&service.key)?;
            out.push(ServiceEntry {
                service,
                stats,
                dests,
            });
        }
        Ok(out)
    }

    /// The whole table as configuration (no counters).
    pub fn current(&mut self) -> Result<Table> {
        Ok(self.table()?.iter().map(ServiceEntry::to_virtual).collect())
    }

    /// Connection timeouts.
    pub fn timeouts(&mut self) -> Result<Timeouts> {
        let replies = self.query(
            IpvsMessage::new(cmd::GET_CONFIG, CmdAttrs::default()),
            false,
            "get timeouts",
        )?;
        let mut t = Timeouts::default();
        for r in replies {
            if let IpvsAttrs::Cmd(c) = r.attrs {
                t.tcp = c.timeout_tcp.unwrap_or(t.tcp);
                t.tcp_fin = c.timeout_tcp_fin.unwrap_or(t.tcp_fin);
                t.udp = c.timeout_udp.unwrap_or(t.udp);
            }
        }
        Ok(t)
    }

    /// Running sync daemons.
    pub fn daemons(&mut self) -> Result<Vec<SyncDaemon>> {
        let replies = self.query(
            IpvsMessage::new(cmd::GET_DAEMON, CmdAttrs::default()),
            true,
            "list sync daemons",
        )?;
        let mut out = Vec::new();
        for r in replies {
            if let IpvsAttrs::Cmd(CmdAttrs {
                daemon: Some(d), ..
            }) = &r.attrs
            {
                out.push(daemon_from_attrs(d)?);
            }
        }
        Ok(out)
    }
}
