//! Wire format of the IPVS generic netlink family: commands and (nested) attributes, encoded
//! and decoded by hand. Numbers are those of `include/uapi/linux/ip_vs.h`.
//!
//! Decoding never panics: unknown attributes are skipped, malformed ones are errors.

use netlink_packet_generic::{GenlFamily, GenlHeader};
use netlink_packet_utils::nla::{NLA_TYPE_MASK, NlasIterator};
use netlink_packet_utils::{DecodeError, Emitable, ParseableParametrized};

/// Generic netlink family name.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// Family version.
pub const IPVS_GENL_VERSION: u8 = 1;

/// IPVS_CMD_* numbers.
pub mod cmd {
    /// Add a service.
    pub const NEW_SERVICE: u8 = 1;
    /// Modify a service.
    pub const SET_SERVICE: u8 = 2;
    /// Delete a service.
    pub const DEL_SERVICE: u8 = 3;
    /// Get one service / dump all.
    pub const GET_SERVICE: u8 = 4;
    /// Add a destination.
    pub const NEW_DEST: u8 = 5;
    /// Modify a destination.
    pub const SET_DEST: u8 = 6;
    /// Delete a destination.
    pub const DEL_DEST: u8 = 7;
    /// Dump the destinations of a service.
    pub const GET_DEST: u8 = 8;
    /// Start a sync daemon.
    pub const NEW_DAEMON: u8 = 9;
    /// Stop a sync daemon.
    pub const DEL_DAEMON: u8 = 10;
    /// Dump sync daemons.
    pub const GET_DAEMON: u8 = 11;
    /// Set timeouts.
    pub const SET_CONFIG: u8 = 12;
    /// Get timeouts.
    pub const GET_CONFIG: u8 = 13;
    /// Reply to GET_INFO.
    pub const SET_INFO: u8 = 14;
    /// Get version and connection table size.
    pub const GET_INFO: u8 = 15;
    /// Zero counters.
    pub const ZERO: u8 = 16;
    /// Delete every service.
    pub const FLUSH: u8 = 17;
}

/// IPVS_CMD_ATTR_* numbers.
pub mod cmd_attr {
    /// Nested service.
    pub const SERVICE: u16 = 1;
    /// Nested destination.
    pub const DEST: u16 = 2;
    /// Nested sync daemon.
    pub const DAEMON: u16 = 3;
    /// TCP timeout.
    pub const TIMEOUT_TCP: u16 = 4;
    /// TCP FIN timeout.
    pub const TIMEOUT_TCP_FIN: u16 = 5;
    /// UDP timeout.
    pub const TIMEOUT_UDP: u16 = 6;
}

/// IPVS_SVC_ATTR_* numbers.
pub mod svc_attr {
    /// u16 address family.
    pub const AF: u16 = 1;
    /// u16 protocol.
    pub const PROTOCOL: u16 = 2;
    /// 16-byte address.
    pub const ADDR: u16 = 3;
    /// u16 port, network order.
    pub const PORT: u16 = 4;
    /// u32 fwmark.
    pub const FWMARK: u16 = 5;
    /// String scheduler.
    pub const SCHED_NAME: u16 = 6;
    /// struct ip_vs_flags.
    pub const FLAGS: u16 = 7;
    /// u32 persistence timeout.
    pub const TIMEOUT: u16 = 8;
    /// u32 netmask.
    pub const NETMASK: u16 = 9;
    /// Nested 32-bit stats.
    pub const STATS: u16 = 10;
    /// String persistence engine.
    pub const PE_NAME: u16 = 11;
    /// Nested 64-bit stats.
    pub const STATS64: u16 = 12;
}

/// IPVS_DEST_ATTR_* numbers.
pub mod dest_attr {
    /// 16-byte address.
    pub const ADDR: u16 = 1;
    /// u16 port, network order.
    pub const PORT: u16 = 2;
    /// u32 forwarding method.
    pub const FWD_METHOD: u16 = 3;
    /// u32 weight.
    pub const WEIGHT: u16 = 4;
    /// u32 upper threshold.
    pub const U_THRESH: u16 = 5;
    /// u32 lower threshold.
    pub const L_THRESH: u16 = 6;
    /// u32 active connections.
    pub const ACTIVE_CONNS: u16 = 7;
    /// u32 inactive connections.
    pub const INACT_CONNS: u16 = 8;
    /// u32 persistent connections.
    pub const PERSIST_CONNS: u16 = 9;
    /// Nested 32-bit stats.
    pub const STATS: u16 = 10;
    /// u16 address family.
    pub const ADDR_FAMILY: u16 = 11;
    /// Nested 64-bit stats.
    pub const STATS64: u16 = 12;
    /// u8 tunnel type.
    pub const TUN_TYPE: u16 = 13;
    /// u16 tunnel port, network order.
    pub const TUN_PORT: u16 = 14;
    /// u16 tunnel flags.
    pub const TUN_FLAGS: u16 = 15;
}

/// IPVS_DAEMON_ATTR_* numbers.
pub mod daemon_attr {
    /// u32 state.
    pub const STATE: u16 = 1;
    /// String interface.
    pub const MCAST_IFN: u16 = 2;
    /// u32 sync id.
    pub const SYNC_ID: u16 = 3;
    /// u16 max length.
    pub const SYNC_MAXLEN: u16 = 4;
    /// 4-byte IPv4 group.
    pub const MCAST_GROUP: u16 = 5;
    /// 16-byte IPv6 group.
    pub const MCAST_GROUP6: u16 = 6;
    /// u16 port.
    pub const MCAST_PORT: u16 = 7;
    /// u8 TTL.
    pub const MCAST_TTL: u16 = 8;
}

/// IPVS_STATS_ATTR_PAD (skipped when decoding).
pub const STATS_ATTR_PAD: u16 = 11;

/// IPVS_INFO_ATTR_* numbers (top level of a SET_INFO reply).
pub mod info_attr {
    /// u32 version.
    pub const VERSION: u16 = 1;
    /// u32 connection table size.
    pub const CONN_TAB_SIZE: u16 = 2;
}

/// Counters of a stats nest, indexed by IPVS_STATS_ATTR_* - 1 (conns, inpkts, outpkts,
/// inbytes, outbytes, cps, inpps, outpps, inbps, outbps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsAttrs(pub [Option<u64>; 10]);

/// Attributes of a service nest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SvcAttrs {
    /// AF.
    pub af: Option<u16>,
    /// PROTOCOL.
    pub protocol: Option<u16>,
    /// ADDR (always 16 bytes; IPv4 in the first 4).
    pub addr: Option<[u8; 16]>,
    /// PORT (host order value; network order on the wire).
    pub port: Option<u16>,
    /// FWMARK.
    pub fwmark: Option<u32>,
    /// SCHED_NAME.
    pub sched_name: Option<String>,
    /// FLAGS (flags, mask).
    pub flags: Option<(u32, u32)>,
    /// TIMEOUT.
    pub timeout: Option<u32>,
    /// NETMASK (raw: v4 mask bytes read natively, or v6 prefix length).
    pub netmask: Option<u32>,
    /// STATS.
    pub stats: Option<StatsAttrs>,
    /// PE_NAME.
    pub pe_name: Option<String>,
    /// STATS64.
    pub stats64: Option<StatsAttrs>,
}

/// Attributes of a destination nest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DestAttrs {
    /// ADDR.
    pub addr: Option<[u8; 16]>,
    /// PORT (host order value).
    pub port: Option<u16>,
    /// FWD_METHOD.
    pub fwd_method: Option<u32>,
    /// WEIGHT.
    pub weight: Option<u32>,
    /// U_THRESH.
    pub u_thresh: Option<u32>,
    /// L_THRESH.
    pub l_thresh: Option<u32>,
    /// ACTIVE_CONNS.
    pub active_conns: Option<u32>,
    /// INACT_CONNS.
    pub inact_conns: Option<u32>,
    /// PERSIST_CONNS.
    pub persist_conns: Option<u32>,
    /// STATS.
    pub stats: Option<StatsAttrs>,
    /// ADDR_FAMILY.
    pub addr_family: Option<u16>,
    /// STATS64.
    pub stats64: Option<StatsAttrs>,
    /// TUN_TYPE.
    pub tun_type: Option<u8>,
    /// TUN_PORT (host order value).
    pub tun_port: Option<u16>,
    /// TUN_FLAGS.
    pub tun_flags: Option<u16>,
}

/// Attributes of a sync daemon nest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DaemonAttrs {
    /// STATE.
    pub state: Option<u32>,
    /// MCAST_IFN.
    pub mcast_ifn: Option<String>,
    /// SYNC_ID.
    pub sync_id: Option<u32>,
    /// SYNC_MAXLEN.
    pub sync_maxlen: Option<u16>,
    /// MCAST_GROUP.
    pub mcast_group: Option<[u8; 4]>,
    /// MCAST_GROUP6.
    pub mcast_group6: Option<[u8; 16]>,
    /// MCAST_PORT.
    pub mcast_port: Option<u16>,
    /// MCAST_TTL.
    pub mcast_ttl: Option<u8>,
}

/// Top-level attributes of every command but the SET_INFO reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdAttrs {
    /// SERVICE nest.
    pub service: Option<SvcAttrs>,
    /// DEST nest.
    pub dest: Option<DestAttrs>,
    /// DAEMON nest.
    pub daemon: Option<DaemonAttrs>,
    /// TIMEOUT_TCP.
    pub timeout_tcp: Option<u32>,
    /// TIMEOUT_TCP_FIN.
    pub timeout_tcp_fin: Option<u32>,
    /// TIMEOUT_UDP.
    pub timeout_udp: Option<u32>,
}

/// Top-level attributes of the SET_INFO reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InfoAttrs {
    /// VERSION.
    pub version: Option<u32>,
    /// CONN_TAB_SIZE.
    pub conn_tab_size: Option<u32>,
}

/// The attribute set of a message; which one depends on the command.
#[derive(Debug, Clone, PartialEq, Eq)]
// Messages are short-lived values decoded one at a time; boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
pub enum IpvsAttrs {
    /// Command attributes.
    Cmd(CmdAttrs),
    /// GET_INFO reply attributes.
    Info(InfoAttrs),
}

/// One IPVS generic netlink message (payload after the genl header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// IPVS_CMD_*.
    pub cmd: u8,
    /// Attributes.
    pub attrs: IpvsAttrs,
}

impl IpvsMessage {
    /// A message with command attributes.
    pub fn new(cmd: u8, attrs: CmdAttrs) -> Self {
        IpvsMessage {
            cmd,
            attrs: IpvsAttrs::Cmd(attrs),
        }
    }

    /// Encoded attribute bytes.
    pub fn encode_attrs(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match &self.attrs {
            IpvsAttrs::Info(i) => {
                w.u32(info_attr::VERSION, i.version);
                w.u32(info_attr::CONN_TAB_SIZE, i.conn_tab_size);
            }
            IpvsAttrs::Cmd(c) => {
                if let Some(s) = &c.service {
                    let n = w.nest_start(cmd_attr::SERVICE);
                    encode_svc(&mut w, s);
                    w.nest_end(n);
                }
                if let Some(d) = &c.dest {
                    let n = w.nest_start(cmd_attr::DEST);
                    encode_dest(&mut w, d);
                    w.nest_end(n);
                }
                if let Some(d) = &c.daemon {
                    let n = w.nest_start(cmd_attr::DAEMON);
                    encode_daemon(&mut w, d);
                    w.nest_end(n);
                }
                w.u32(cmd_attr::TIMEOUT_TCP, c.timeout_tcp);
                w.u32(cmd_attr::TIMEOUT_TCP_FIN, c.timeout_tcp_fin);
                w.u32(cmd_attr::TIMEOUT_UDP, c.timeout_udp);
            }
        }
        w.buf
    }

    /// Decode the attributes of command `cmd`.
    pub fn decode(cmd: u8, buf: &[u8]) -> Result<Self, DecodeError> {
        let attrs = if cmd == cmd::SET_INFO {
            let mut i = InfoAttrs::default();
            for (kind, v) in iter(buf)? {
                match kind {
                    info_attr::VERSION => i.version = Some(get_u32(v, "info version")?),
                    info_attr::CONN_TAB_SIZE => {
                        i.conn_tab_size = Some(get_u32(v, "conn tab size")?)
                    }
                    _ => {}
                }
            }
            IpvsAttrs::Info(i)
        } else {
            let mut c = CmdAttrs::default();
            for (kind, v) in iter(buf)? {
                match kind {
                    cmd_attr::SERVICE => c.service = Some(decode_svc(v)?),
                    cmd_attr::DEST => c.dest = Some(decode_dest(v)?),
                    cmd_attr::DAEMON => c.daemon = Some(decode_daemon(v)?),
                    cmd_attr::TIMEOUT_TCP => c.timeout_tcp = Some(get_u32(v, "tcp timeout")?),
                    cmd_attr::TIMEOUT_TCP_FIN => {
                        c.timeout_tcp_fin = Some(get_u32(v, "tcpfin timeout")?)
                    }
                    cmd_attr::TIMEOUT_UDP => c.timeout_udp = Some(get_u32(v, "udp timeout")?),
                    _ => {}
                }
            }
            IpvsAttrs::Cmd(c)
        };
        Ok(IpvsMessage { cmd, attrs })
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.encode_attrs().len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        let bytes = self.encode_attrs();
        let n = bytes.len().min(buffer.len());
        buffer[..n].copy_from_slice(&bytes[..n]);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        IpvsMessage::decode(header.cmd, buf)
    }
}

// ---------------------------------------------------------------- encoding

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn put(&mut self, kind: u16, value: &[u8]) {
        // Values come from bounded model fields; clamp anyway so the length always fits.
        let value = &value[..value.len().min(u16::MAX as usize - 8)];
        let len = (4 + value.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
    }
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
    fn u8(&mut self, kind: u16, v: Option<u8>) {
        if let Some(v) = v {
            self.put(kind, &[v]);
        }
    }
    fn u16(&mut self, kind: u16, v: Option<u16>) {
        if let Some(v) = v {
            self.put(kind, &v.to_ne_bytes());
        }
    }
    fn be16(&mut self, kind: u16, v: Option<u16>) {
        if let Some(v) = v {
            self.put(kind, &v.to_be_bytes());
        }
    }
    fn u32(&mut self, kind: u16, v: Option<u32>) {
        if let Some(v) = v {
            self.put(kind, &v.to_ne_bytes());
        }
    }
    fn u64(&mut self, kind: u16, v: Option<u64>) {
        if let Some(v) = v {
            self.put(kind, &v.to_ne_bytes());
        }
    }
    fn string(&mut self, kind: u16, v: &Option<String>) {
        if let Some(s) = v {
            let mut b = s.as_bytes().to_vec();
            b.push(0);
            self.put(kind, &b);
        }
    }
    fn nest_start(&mut self, kind: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        at
    }
    fn nest_end(&mut self, at: usize) {
        let len = (self.buf.len() - at).min(u16::MAX as usize) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

fn encode_stats(w: &mut Writer, kind: u16, s: &Option<StatsAttrs>, wide: bool) {
    if let Some(s) = s {
        let n = w.nest_start(kind);
        for (i, v) in s.0.iter().enumerate() {
            let a = i as u16 + 1;
            // In the 32-bit nest only the byte counters are u64 (larger values, which the
            // kernel never sends there, are kept wide so decode/encode stays lossless).
            if wide || i == 3 || i == 4 || v.is_some_and(|x| x > u64::from(u32::MAX)) {
                w.u64(a, *v);
            } else {
                w.u32(a, v.map(|x| x as u32));
            }
        }
        w.nest_end(n);
    }
}

fn encode_svc(w: &mut Writer, s: &SvcAttrs) {
    use svc_attr::*;
    w.u16(AF, s.af);
    w.u16(PROTOCOL, s.protocol);
    if let Some(a) = &s.addr {
        w.put(ADDR, a);
    }
    w.be16(PORT, s.port);
    w.u32(FWMARK, s.fwmark);
    w.string(SCHED_NAME, &s.sched_name);
    if let Some((f, m)) = s.flags {
        let mut b = f.to_ne_bytes().to_vec();
        b.extend_from_slice(&m.to_ne_bytes());
        w.put(FLAGS, &b);
    }
    w.u32(TIMEOUT, s.timeout);
    w.u32(NETMASK, s.netmask);
    encode_stats(w, STATS, &s.stats, false);
    w.string(PE_NAME, &s.pe_name);
    encode_stats(w, STATS64, &s.stats64, true);
}

fn encode_dest(w: &mut Writer, d: &DestAttrs) {
    use dest_attr::*;
    if let Some(a) = &d.addr {
        w.put(ADDR, a);
    }
    w.be16(PORT, d.port);
    w.u32(FWD_METHOD, d.fwd_method);
    w.u32(WEIGHT, d.weight);
    w.u32(U_THRESH, d.u_thresh);
    w.u32(L_THRESH, d.l_thresh);
    w.u32(ACTIVE_CONNS, d.active_conns);
    w.u32(INACT_CONNS, d.inact_conns);
    w.u32(PERSIST_CONNS, d.persist_conns);
    encode_stats(w, STATS, &d.stats, false);
    w.u16(ADDR_FAMILY, d.addr_family);
    encode_stats(w, STATS64, &d.stats64, true);
    w.u8(TUN_TYPE, d.tun_type);
    w.be16(TUN_PORT, d.tun_port);
    w.u16(TUN_FLAGS, d.tun_flags);
}

fn encode_daemon(w: &mut Writer, d: &DaemonAttrs) {
    use daemon_attr::*;
    w.u32(STATE, d.state);
    w.string(MCAST_IFN, &d.mcast_ifn);
    w.u32(SYNC_ID, d.sync_id);
    w.u16(SYNC_MAXLEN, d.sync_maxlen);
    if let Some(g) = &d.mcast_group {
        w.put(MCAST_GROUP, g);
    }
    if let Some(g) = &d.mcast_group6 {
        w.put(MCAST_GROUP6, g);
    }
    w.u16(MCAST_PORT, d.mcast_port);
    w.u8(MCAST_TTL, d.mcast_ttl);
}

// ---------------------------------------------------------------- decoding

fn iter(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    for nla in NlasIterator::new(buf) {
        let nla = nla?;
        let kind = nla.kind() & NLA_TYPE_MASK;
        let inner = nla.into_inner();
        // new_checked guaranteed 4 <= length <= inner.len().
        let len = u16::from_ne_bytes([inner[0], inner[1]]) as usize;
        out.push((kind, &inner[4..len]));
    }
    Ok(out)
}

fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], DecodeError> {
    v.get(..N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or_else(|| DecodeError::from(format!("{what}: expected {N} bytes, got {}", v.len())))
}

fn get_u8(v: &[u8], what: &str) -> Result<u8, DecodeError> {
    Ok(fixed::<1>(v, what)?[0])
}
fn get_u16(v: &[u8], what: &str) -> Result<u16, DecodeError> {
    Ok(u16::from_ne_bytes(fixed(v, what)?))
}
fn get_be16(v: &[u8], what: &str) -> Result<u16, DecodeError> {
    Ok(u16::from_be_bytes(fixed(v, what)?))
}
fn get_u32(v: &[u8], what: &str) -> Result<u32, DecodeError> {
    Ok(u32::from_ne_bytes(fixed(v, what)?))
}
fn get_num(v: &[u8], what: &str) -> Result<u64, DecodeError> {
    match v.len() {
        4 => Ok(u64::from(get_u32(v, what)?)),
        8 => Ok(u64::from_ne_bytes(fixed(v, what)?)),
        n => Err(format!("{what}: expected 4 or 8 bytes, got {n}").into()),
    }
}
fn get_addr(v: &[u8], what: &str) -> Result<[u8; 16], DecodeError> {
    match v.len() {
        4 => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(v);
            Ok(a)
        }
        n if n >= 16 => fixed(v, what),
        n => Err(format!("{what}: expected 4 or 16 bytes, got {n}").into()),
    }
}
fn get_string(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn decode_stats(buf: &[u8]) -> Result<StatsAttrs, DecodeError> {
    let mut s = StatsAttrs::default();
    for (kind, v) in iter(buf)? {
        if (1..=10).contains(&kind) {
            s.0[usize::from(kind) - 1] = Some(get_num(v, "stats counter")?);
        }
    }
    Ok(s)
}

fn decode_svc(buf: &[u8]) -> Result<SvcAttrs, DecodeError> {
    use svc_attr::*;
    let mut s = SvcAttrs::default();
    for (kind, v) in iter(buf)? {
        match kind {
            AF => s.af = Some(get_u16(v, "service af")?),
            PROTOCOL => s.protocol = Some(get_u16(v, "service protocol")?),
            ADDR => s.addr = Some(get_addr(v, "service address")?),
            PORT => s.port = Some(get_be16(v, "service port")?),
            FWMARK => s.fwmark = Some(get_u32(v, "service fwmark")?),
            SCHED_NAME => s.sched_name = Some(get_string(v)),
            FLAGS => {
                let b = fixed::<8>(v, "service flags")?;
                s.flags = Some((
                    u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                    u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                ));
            }
            TIMEOUT => s.timeout = Some(get_u32(v, "service timeout")?),
            NETMASK => s.netmask = Some(get_u32(v, "service netmask")?),
            STATS => s.stats = Some(decode_stats(v)?),
            PE_NAME => s.pe_name = Some(get_string(v)),
            STATS64 => s.stats64 = Some(decode_stats(v)?),
            _ => {}
        }
    }
    Ok(s)
}

fn decode_dest(buf: &[u8]) -> Result<DestAttrs, DecodeError> {
    use dest_attr::*;
    let mut d = DestAttrs::default();
    for (kind, v) in iter(buf)? {
        match kind {
            ADDR => d.addr = Some(get_addr(v, "destination address")?),
            PORT => d.port = Some(get_be16(v, "destination port")?),
            FWD_METHOD => d.fwd_method = Some(get_u32(v, "forwarding method")?),
            WEIGHT => d.weight = Some(get_u32(v, "weight")?),
            U_THRESH => d.u_thresh = Some(get_u32(v, "upper threshold")?),
            L_THRESH => d.l_thresh = Some(get_u32(v, "lower threshold")?),
            ACTIVE_CONNS => d.active_conns = Some(get_u32(v, "active conns")?),
            INACT_CONNS => d.inact_conns = Some(get_u32(v, "inactive conns")?),
            PERSIST_CONNS => d.persist_conns = Some(get_u32(v, "persistent conns")?),
            STATS => d.stats = Some(decode_stats(v)?),
            ADDR_FAMILY => d.addr_family = Some(get_u16(v, "destination af")?),
            STATS64 => d.stats64 = Some(decode_stats(v)?),
            TUN_TYPE => d.tun_type = Some(get_u8(v, "tunnel type")?),
            TUN_PORT => d.tun_port = Some(get_be16(v, "tunnel port")?),
            TUN_FLAGS => d.tun_flags = Some(get_u16(v, "tunnel flags")?),
            _ => {}
        }
    }
    Ok(d)
}

fn decode_daemon(buf: &[u8]) -> Result<DaemonAttrs, DecodeError> {
    use daemon_attr::*;
    let mut d = DaemonAttrs::default();
    for (kind, v) in iter(buf)? {
        match kind {
            STATE => d.state = Some(get_u32(v, "daemon state")?),
            MCAST_IFN => d.mcast_ifn = Some(get_string(v)),
            SYNC_ID => d.sync_id = Some(get_u32(v, "sync id")?),
            SYNC_MAXLEN => d.sync_maxlen = Some(get_u16(v, "sync maxlen")?),
            MCAST_GROUP => d.mcast_group = Some(fixed::<4>(v, "mcast group")?),
            MCAST_GROUP6 => d.mcast_group6 = Some(fixed::<16>(v, "mcast group6")?),
            MCAST_PORT => d.mcast_port = Some(get_u16(v, "mcast port")?),
            MCAST_TTL => d.mcast_ttl = Some(get_u8(v, "mcast ttl")?),
            _ => {}
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-z0-9_]{0,15}")
    }

    fn stats(wide: bool) -> impl Strategy<Value = Option<StatsAttrs>> {
        proptest::option::of(proptest::array::uniform10(proptest::option::of(
            any::<u64>(),
        )))
        .prop_map(move |o| {
            o.map(|mut a| {
                if !wide {
                    for (i, v) in a.iter_mut().enumerate() {
                        if i != 3 && i != 4 {
                            *v = v.map(|x| x & 0xffff_ffff);
                        }
                    }
                }
                StatsAttrs(a)
            })
        })
    }

    prop_compose! {
        fn svc()(af in any::<Option<u16>>(), protocol in any::<Option<u16>>(), addr in any::<Option<[u8; 16]>>(),
                 port in any::<Option<u16>>(), fwmark in any::<Option<u32>>(), sched_name in name(),
                 flags in any::<Option<(u32, u32)>>(), timeout in any::<Option<u32>>(), netmask in any::<Option<u32>>(),
                 stats in stats(false), pe_name in name(), stats64 in stats(true)) -> SvcAttrs {
            SvcAttrs { af, protocol, addr, port, fwmark, sched_name, flags, timeout, netmask, stats, pe_name, stats64 }
        }
    }

    prop_compose! {
        fn dest()(addr in any::<Option<[u8; 16]>>(), port in any::<Option<u16>>(),
                  n in proptest::array::uniform7(any::<Option<u32>>()), stats in stats(false),
                  addr_family in any::<Option<u16>>(), stats64 in stats(true), tun_type in any::<Option<u8>>(),
                  tun_port in any::<Option<u16>>(), tun_flags in any::<Option<u16>>()) -> DestAttrs {
            DestAttrs { addr, port, fwd_method: n[0], weight: n[1], u_thresh: n[2], l_thresh: n[3],
                active_conns: n[4], inact_conns: n[5], persist_conns: n[6], stats, addr_family, stats64,
                tun_type, tun_port, tun_flags }
        }
    }

    prop_compose! {
        fn daemon()(state in any::<Option<u32>>(), mcast_ifn in name(), sync_id in any::<Option<u32>>(),
                    sync_maxlen in any::<Option<u16>>(), mcast_group in any::<Option<[u8; 4]>>(),
                    mcast_group6 in any::<Option<[u8; 16]>>(), mcast_port in any::<Option<u16>>(),
                    mcast_ttl in any::<Option<u8>>()) -> DaemonAttrs {
            DaemonAttrs { state, mcast_ifn, sync_id, sync_maxlen, mcast_group, mcast_group6, mcast_port, mcast_ttl }
        }
    }

    fn message() -> BoxedStrategy<IpvsMessage> {
        let cmd_msg = (
            (1u8..=17).prop_filter("not SET_INFO", |c| *c != cmd::SET_INFO),
            proptest::option::of(svc().boxed()).boxed(),
            proptest::option::of(dest().boxed()).boxed(),
            proptest::option::of(daemon().boxed()).boxed(),
            any::<(Option<u32>, Option<u32>, Option<u32>)>(),
        )
            .prop_map(|(c, service, dest, daemon, (a, b, d))| {
                IpvsMessage::new(
                    c,
                    CmdAttrs {
                        service,
                        dest,
                        daemon,
                        timeout_tcp: a,
                        timeout_tcp_fin: b,
                        timeout_udp: d,
                    },
                )
            })
            .boxed();
        let info =
            any::<(Option<u32>, Option<u32>)>().prop_map(|(version, conn_tab_size)| IpvsMessage {
                cmd: cmd::SET_INFO,
                attrs: IpvsAttrs::Info(InfoAttrs {
                    version,
                    conn_tab_size,
                }),
            });
        prop_oneof![cmd_msg, info.boxed()].boxed()
    }

    proptest! {
        #[test]
        fn roundtrip(m in message()) {
            let bytes = m.encode_attrs();
            prop_assert_eq!(bytes.len() % 4, 0);
            let back = IpvsMessage::decode(m.cmd, &bytes).unwrap();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn decode_never_panics(cmd in any::<u8>(), bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = IpvsMessage::decode(cmd, &bytes);
        }
    }

    #[test]
    fn port_is_network_order_and_numbers_match_the_header() {
        let m = IpvsMessage::new(
            cmd::NEW_SERVICE,
            CmdAttrs {
                service: Some(SvcAttrs {
                    port: Some(80),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let b = m.encode_attrs();
        // nest header (len 12, type 1), then attr header (len 6, type 4), value 0x00 0x50.
        assert_eq!(&b[2..4], &1u16.to_ne_bytes());
        assert_eq!(&b[6..8], &4u16.to_ne_bytes());
        assert_eq!(&b[8..10], &[0x00, 0x50]);
    }
}
