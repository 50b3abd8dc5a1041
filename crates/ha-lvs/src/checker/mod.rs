//! Real-server health checking shared by every virtual service.
//!
//! One probe runs per distinct (endpoint, check) pair, however many virtual services use that
//! real server: N services over M servers cost M probes, not N x M. The policy ([`Monitor`]) is
//! a sans-IO state machine: probe results in, IPVS table edits out (quiesce to weight 0 or
//! remove on failure, restore on recovery, fallback server while every real server is down,
//! configuration reload as a minimal diff that keeps the state of unchanged probes). The
//! [`driver`] runs the probes on tokio from one task with a deadline heap ([`Schedule`]);
//! [`probe`] holds the probes, [`syn`] and [`synprobe`] the half-open `tcp_syn` check,
//! [`tls`] the TLS side of HTTPS and TLS banner checks, [`banner`] the banner / line-protocol
//! check, [`ftp`] the FTP download check, [`dns`] the DNS check and [`icmp`] and [`ping`]
//! the ICMP echo check.
//!
//! Check kinds ([`CheckKind`]): TCP connect, half-open SYN, HTTP GET, HTTPS GET (the HTTP
//! check with `tls: Some(`[`TlsCheck`]`)`; no certificate verification unless a CA file is
//! given), banner (connect, optionally send a request, expect a substring, then optional
//! further send/expect steps: ldirectord `simpletcp`, its smtp/nntp negotiate checks and
//! its ftp/pop/imap checks with their login dialogue), TLS banner (the banner check
//! with `tls: Some(..)`: ldirectord pops/imaps), FTP download (ldirectord ftp with a
//! `request`), DNS query (keepalived `DNS_CHECK`, ldirectord
//! dns), UDP datagram (keepalived `UDP_CHECK`, [`udp`]), MySQL login and query (ldirectord
//! mysql, [`mysql`]), ICMP echo (IPv4 and IPv6), external command, and the static
//! always-up/always-down.

pub mod banner;
mod checksum;
pub mod dns;
pub mod driver;
pub mod ftp;
pub mod icmp;
mod idhash;
mod monitor;
pub mod mysql;
pub mod ping;
pub mod probe;
pub mod reload;
mod schedule;
pub mod syn;
pub mod synprobe;
pub mod tls;
pub mod udp;

pub use monitor::{Monitor, ProbeId, ProbeOutcome, Reconfigured};
pub use schedule::Schedule;
pub use tls::{ClientIdentity, TlsCheck};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::{Destination, Service};

/// How a real server is probed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// TCP connect (ldirectord `connect`, keepalived TCP_CHECK). The socket is closed with an
    /// RST (SO_LINGER 0) so no connection lingers in TIME_WAIT.
    Connect,
    /// Half-open TCP check: send a SYN from a raw socket, SYN-ACK = up, RST or silence = down;
    /// the kernel resets the half-open connection. Same question as [`CheckKind::Connect`]
    /// (does the port accept connections?) at a fraction of the cost; needs CAP_NET_RAW.
    /// IPv4 and IPv6 (the checker sends a tick's SYNs in batches). Servers may log the reset
    /// handshakes.
    TcpSyn,
    /// HTTP GET (ldirectord `negotiate` for http, keepalived HTTP_GET), or HTTPS GET with
    /// `tls: Some(..)` (ldirectord `negotiate` for https, keepalived SSL_GET).
    Http {
        /// Request path, e.g. `/health`.
        path: String,
        /// Host header (default: the endpoint address).
        host: Option<String>,
        /// Status codes accepted (e.g. 200, or 200-299 as keepalived's default).
        expect_status: StatusCodes,
        /// What the response body must hold (ldirectord `receive`, keepalived `regex`),
        /// searched in its first 64 KiB.
        expect_body: Option<BodyMatch>,
        /// MD5 of the whole response body (keepalived `digest`, as `genhash` prints it). The
        /// body is hashed as it arrives, so it may be longer than what is kept for matching.
        expect_md5: Option<[u8; 16]>,
        /// Speak TLS (HTTPS). [`TlsCheck::default()`] does not verify the certificate (like
        /// ldirectord and keepalived) and sends the Host name as SNI; see [`TlsCheck`].
        tls: Option<TlsCheck>,
    },
    /// Banner / line check (ldirectord `simpletcp`, its smtp and nntp negotiate checks
    /// reduced to the greeting, its ftp, pop and imap checks with their login as `steps`;
    /// pops and imaps with `tls`): connect, do the TLS handshake when `tls` is set, send
    /// `send` if any, read until `expect` appears (up to [`banner::BANNER_READ_LIMIT`]
    /// bytes), then each step in turn (send its line, read until its reply). The peer
    /// closing, too much data or the timeout before any expected text is down, the reason
    /// naming the step (passwords masked). Closed with an RST like [`CheckKind::Connect`].
    Banner {
        /// Bytes to send after connecting (sent as is: include the line end, e.g. `\r\n`).
        send: Option<String>,
        /// Substring the received data must contain, e.g. `220` for SMTP.
        expect: String,
        /// Further exchanges after `expect` was seen (a login dialogue); empty for a plain
        /// banner check. Part of the check (not a new kind) because a dialogue is a banner
        /// check with more lines: same connection, TLS, limits, timeout and probe sharing.
        steps: Vec<banner::BannerStep>,
        /// Speak TLS first (POP3S, IMAPS, SMTPS). [`TlsCheck::default()`] does not verify
        /// the certificate and sends no SNI; set [`TlsCheck::server_name`] for SNI (the
        /// ldirectord importer uses `virtualhost`).
        tls: Option<TlsCheck>,
    },
    /// FTP download (ldirectord's ftp check with a `request`): log in, `TYPE I`, `PASV`
    /// (IPv4) or `EPSV` (IPv6, or when PASV is refused), `RETR` the file over the passive
    /// data connection (opened to the control connection's peer address), read it to EOF
    /// (at most [`ftp::FTP_READ_LIMIT`] bytes), `226`, `QUIT`. Up when the content contains
    /// `receive` (any completed download when it is empty or absent); a failed step is down
    /// naming the command and the reply, the password masked. A kind of its own, not
    /// banner steps: coded multi-line replies, a parsed passive reply and a second
    /// connection. Closed with RSTs like [`CheckKind::Connect`]. See [`ftp`].
    Ftp(ftp::FtpCheck),
    /// DNS query (keepalived `DNS_CHECK`, ldirectord `service = dns`) to the endpoint (port
    /// 53 in the usual configurations): one query with a random id and RD set, over UDP
    /// unless `tcp`; a truncated UDP answer is asked again once over TCP. Up = the answer to
    /// our question with RCODE NOERROR and, with `expect`, an answer record whose data
    /// contains that text; any other RCODE (NXDOMAIN too, as keepalived) or a mismatch is
    /// down; datagrams that are not the answer are ignored until the timeout. See [`dns`].
    Dns {
        /// Name to query (`.` = the root, keepalived's default).
        name: String,
        /// Query type (keepalived's default: SOA).
        qtype: dns::DnsType,
        /// Text an answer record must contain (ldirectord `receive`): A/AAAA address,
        /// CNAME/NS/PTR/MX target name (case-insensitive, final dot optional), TXT text.
        expect: Option<String>,
        /// Ask over TCP only (ldirectord's dns check of a `protocol = tcp` service).
        tcp: bool,
    },
    /// UDP datagram (keepalived `UDP_CHECK`; what ldirectord's `connect` check of a UDP
    /// service becomes): an ICMP unreachable is down; without a required reply, silence or
    /// any datagram is up; with one, only a reply of the right length and first bytes within
    /// the timeout. See [`udp`].
    Udp(udp::UdpCheck),
    /// MySQL / MariaDB login (ldirectord `service = mysql`): log in as the check user,
    /// optionally run a query that must return a row, then `COM_QUIT`. A login, not a
    /// connect, because servers block hosts whose connections end before the handshake. See
    /// [`mysql`].
    Mysql(mysql::MysqlCheck),
    /// ICMP echo reachability of the real server's address (ldirectord `ping`, keepalived
    /// PING_CHECK), IPv4 or IPv6; the port is ignored. Up = an echo reply to our request
    /// within the timeout; an ICMP error or silence = down. Uses an unprivileged ICMP
    /// datagram socket when `net.ipv4.ping_group_range` allows it, a raw socket
    /// (CAP_NET_RAW) otherwise; with neither the probe is down saying so. See [`ping`].
    Ping,
    /// External program (keepalived MISC_CHECK, ldirectord `external`): exit 0 = up, 1 = down;
    /// with `dynamic`, 2-255 = up with weight exit-2 (misc_dynamic). The endpoint is passed as
    /// arguments appended after `args` (host, port) and as HA_LVS_HOST / HA_LVS_PORT.
    Command {
        /// Program to run.
        program: PathBuf,
        /// Arguments before host and port.
        args: Vec<String>,
        /// misc_dynamic semantics.
        dynamic: bool,
    },
    /// Never probed, always up (ldirectord `on`).
    AlwaysUp,
    /// Never probed, always down (ldirectord `off`).
    AlwaysDown,
}

/// What an HTTP response body must hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BodyMatch {
    /// A plain substring.
    Contains(String),
    /// A regular expression found anywhere in the body.
    Regex(BodyRegex),
}

impl BodyMatch {
    /// A regular expression (the `regex` crate's syntax: POSIX extended and Perl patterns
    /// without backreferences or lookaround read the same); one without metacharacters is
    /// the plain substring it stands for. The error says why it does not compile.
    pub fn regex(pattern: &str) -> Result<BodyMatch, String> {
        if regex::escape(pattern) == pattern {
            return Ok(BodyMatch::from(pattern));
        }
        regex::bytes::Regex::new(pattern)
            .map(|re| BodyMatch::Regex(BodyRegex(re)))
            .map_err(|e| format!("regular expression {pattern:?}: {e}"))
    }

    /// Whether `body` holds it.
    pub fn is_match(&self, body: &[u8]) -> bool {
        match self {
            BodyMatch::Contains(s) => contains(body, s.as_bytes()),
            BodyMatch::Regex(re) => re.0.is_match(body),
        }
    }
}

impl From<&str> for BodyMatch {
    fn from(s: &str) -> Self {
        BodyMatch::Contains(s.to_string())
    }
}

impl std::fmt::Display for BodyMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyMatch::Contains(s) => write!(f, "{s:?}"),
            BodyMatch::Regex(re) => write!(f, "a match for /{}/", re.0.as_str()),
        }
    }
}

/// Whether `hay` holds `needle` (an empty needle is always found): the text matching of the
/// HTTP, banner and FTP checks.
pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// A compiled regular expression, compared and hashed by its source (so checks using the same
/// pattern share one probe).
#[derive(Debug, Clone)]
pub struct BodyRegex(regex::bytes::Regex);

impl PartialEq for BodyRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for BodyRegex {}

impl std::hash::Hash for BodyRegex {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

/// HTTP status codes a check accepts: a list of inclusive ranges (keepalived
/// `status_code 200-299 301 503`). A single code converts from `u16`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusCodes(pub Vec<(u16, u16)>);

impl StatusCodes {
    /// Every 2xx (keepalived's default; what ldirectord's LWP calls success).
    pub fn success() -> StatusCodes {
        StatusCodes(vec![(200, 299)])
    }

    /// Whether `code` is accepted.
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&code))
    }

    /// Parse keepalived's words: codes and `LOW-HIGH` ranges of 100..=999.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<StatusCodes, String> {
        let code = |w: &str| {
            w.parse::<u16>()
                .ok()
                .filter(|c| (100..=999).contains(c))
                .ok_or_else(|| format!("{w:?} is not an HTTP status such as 200"))
        };
        let mut out = Vec::new();
        for w in words {
            let (lo, hi) = match w.split_once('-') {
                Some((a, b)) => (code(a)?, code(b)?),
                None => (code(w)?, code(w)?),
            };
            if lo > hi {
                return Err(format!("range {w:?} runs backwards"));
            }
            out.push((lo, hi));
        }
        if out.is_empty() {
            return Err("no status code".into());
        }
        Ok(StatusCodes(out))
    }
}

impl From<u16> for StatusCodes {
    fn from(code: u16) -> Self {
        StatusCodes(vec![(code, code)])
    }
}

impl std::fmt::Display for StatusCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            let sep = if i > 0 { " " } else { "" };
            if lo == hi {
                write!(f, "{sep}{lo}")?;
            } else {
                write!(f, "{sep}{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// A check with its timing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckSpec {
    /// What to do.
    pub kind: CheckKind,
    /// Time between probe starts.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Consecutive successes to come back up.
    pub rise: u32,
    /// Consecutive failures to go down (ldirectord failurecount).
    pub fall: u32,
}

impl CheckSpec {
    /// A check with ldirectord-like defaults: 10 s interval, 5 s timeout, rise 1, fall 1.
    pub fn new(kind: CheckKind) -> Self {
        CheckSpec {
            kind,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            rise: 1,
            fall: 1,
        }
    }
}

/// The identity of a shared probe: where and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    /// Endpoint probed.
    pub target: SocketAddr,
    /// Check.
    pub spec: CheckSpec,
}

/// What happens to a failed real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureAction {
    /// Keep it with weight 0: no new connections, existing ones continue (ldirectord default).
    #[default]
    Quiesce,
    /// Remove it from the service.
    Remove,
}

/// A real server under monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoredReal {
    /// The destination with its healthy weight.
    pub dest: Destination,
    /// Check; `None` means not checked (always up).
    pub check: Option<CheckSpec>,
    /// Where to probe (default: the destination address; needed for fwmark services whose
    /// real servers have port 0).
    pub check_addr: Option<SocketAddr>,
}

/// A virtual service under monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoredService {
    /// The service.
    pub service: Service,
    /// Its real servers.
    pub reals: Vec<MonitoredReal>,
    /// Sorry server, present only while every real server is down.
    pub fallback: Option<Destination>,
    /// Quiesce or remove failed real servers.
    pub on_failure: FailureAction,
}

/// Everything the monitor watches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MonitorConfig {
    /// Services.
    pub services: Vec<MonitoredService>,
    /// Whether a new probe starts as up (keepalived's default) or down (`alpha` mode).
    pub start_down: bool,
}
