//! The probes themselves: TCP connect, half-open SYN, HTTP(S) GET, banner and login dialogue
//! (plain or TLS), FTP download, DNS query, UDP datagram, ICMP echo, external command.
//! Each is one async call bounded by the check's timeout.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::syn::Verdict;
use super::synprobe::SynProber;
use super::{CheckKind, ProbeKey, ProbeOutcome};

/// Shared resources of probes: the raw-socket SYN prober of `tcp_syn` checks.
#[derive(Clone, Default)]
pub struct ProbeContext {
    syn: Option<Arc<SynProber>>,
    syn_error: Option<String>,
}

impl ProbeContext {
    /// A context whose `tcp_syn` checks use `prober`.
    pub fn with_syn(prober: Arc<SynProber>) -> Self {
        ProbeContext {
            syn: Some(prober),
            syn_error: None,
        }
    }

    /// The SYN prober, when open.
    pub fn syn(&self) -> Option<&Arc<SynProber>> {
        self.syn.as_ref()
    }

    /// Open the SYN prober when a check needs it and it is not open yet (call inside a tokio
    /// runtime). A failure (no CAP_NET_RAW) is kept: `tcp_syn` probes then report it as down.
    pub fn ensure_syn(
        &mut self,
        results: Option<tokio::sync::mpsc::UnboundedSender<super::synprobe::BatchResult>>,
    ) {
        if self.syn.is_some() {
            return;
        }
        let p = match results {
            Some(r) => SynProber::with_results(r),
            None => SynProber::new(),
        };
        self.keep_syn(p);
    }

    /// Like [`ProbeContext::ensure_syn`], opening a [`SynProber::polled`] prober: the
    /// caller reads its replies with [`SynProber::receive_now`].
    pub fn ensure_syn_polled(&mut self) {
        if self.syn.is_none() {
            self.keep_syn(SynProber::polled());
        }
    }

    fn keep_syn(&mut self, p: std::io::Result<SynProber>) {
        match p {
            Ok(p) => {
                self.syn = Some(Arc::new(p));
                self.syn_error = None;
            }
            Err(e) => {
                tracing::error!(%e, "tcp_syn checks need raw sockets (CAP_NET_RAW)");
                self.syn_error = Some(format!("tcp_syn check unavailable: raw socket: {e}"));
            }
        }
    }
}

/// Most bytes of an HTTP response read for matching.
const HTTP_READ_LIMIT: usize = 64 * 1024;

/// Run one probe to completion (never longer than its timeout), without shared resources
/// (`tcp_syn` checks fall back to a connect).
pub async fn run_probe(key: &ProbeKey) -> ProbeOutcome {
    run_probe_in(key, &ProbeContext::default()).await
}

/// Run one probe with the shared resources of `ctx`.
pub async fn run_probe_in(key: &ProbeKey, ctx: &ProbeContext) -> ProbeOutcome {
    let t = key.spec.timeout;
    let target = key.target;
    let fut = async {
        match &key.spec.kind {
            CheckKind::Connect => connect_check(target).await.map(|_| ProbeOutcome::Up),
            CheckKind::TcpSyn => match (&ctx.syn, &ctx.syn_error) {
                (Some(p), _) => {
                    let verdict = match target {
                        SocketAddr::V4(t4) => p.probe(t4).await,
                        SocketAddr::V6(t6) => p.probe6(t6).await,
                    };
                    match verdict {
                        Ok(Verdict::Open) => Ok(ProbeOutcome::Up),
                        Ok(Verdict::Closed) => {
                            Err(format!("connect {target}: connection refused (RST to SYN)"))
                        }
                        Err(e) => Err(format!("send SYN to {target}: {e}")),
                    }
                }
                (None, Some(err)) => Err(err.clone()),
                (None, None) => connect_check(target).await.map(|_| ProbeOutcome::Up),
            },
            CheckKind::Http {
                path,
                host,
                expect_status,
                expect_body,
                expect_md5,
                tls,
            } => {
                let req = HttpRequest {
                    path,
                    host: host.as_deref(),
                    expect_status,
                    expect: expect_body.as_ref(),
                    md5: expect_md5.as_ref(),
                };
                let tcp = connect(target).await?;
                match tls {
                    None => http(target, tcp, &req).await,
                    Some(tls) => {
                        let s = super::tls::handshake(tcp, target, tls, req.host).await?;
                        http(target, s, &req).await
                    }
                }
            }
            CheckKind::Banner {
                send,
                expect,
                steps,
                tls,
            } => {
                super::banner::banner(target, send.as_deref(), expect, steps, tls.as_ref(), t).await
            }
            CheckKind::Ftp(check) => super::ftp::ftp(target, check, t).await,
            CheckKind::Dns {
                name,
                qtype,
                expect,
                tcp,
            } => {
                let req = super::dns::DnsRequest {
                    name,
                    qtype: *qtype,
                    expect: expect.as_deref(),
                    tcp: *tcp,
                };
                super::dns::check(target, req, t).await
            }
            CheckKind::Udp(check) => super::udp::check(target, check, t).await,
            CheckKind::Mysql(check) => super::mysql::check(target, check).await,
            CheckKind::Ping => super::ping::echo(target).await.map(|_| ProbeOutcome::Up),
            CheckKind::Command {
                program,
                args,
                dynamic,
            } => command(target, program, args, *dynamic, t).await,
            CheckKind::AlwaysUp => Ok(ProbeOutcome::Up),
            CheckKind::AlwaysDown => Err("check type off".to_string()),
        }
    };
    // The DNS, banner, FTP and UDP checks keep their own deadline (their message says what
    // they ignored or which step was waiting; a UDP check may be up when it passes); this one
    // is only a backstop for them.
    let limit = match key.spec.kind {
        CheckKind::Dns { .. }
        | CheckKind::Banner { .. }
        | CheckKind::Ftp(_)
        | CheckKind::Udp(_) => t + Duration::from_millis(100),
        _ => t,
    };
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(o)) => o,
        Ok(Err(reason)) => ProbeOutcome::Down(reason),
        Err(_) if key.spec.kind == CheckKind::Ping => ProbeOutcome::Down(format!(
            "no echo reply from {} within {}",
            target.ip(),
            fmt_dur(t)
        )),
        Err(_) => ProbeOutcome::Down(format!("no answer within {}", fmt_dur(t))),
    }
}

fn fmt_dur(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// Connect check: non-blocking connect, closed with RST (SO_LINGER 0: no FIN exchange, no
/// TIME_WAIT). On loopback and fast links the handshake is often done when connect() returns,
/// so a zero-timeout poll settles it without registering the socket with the reactor.
async fn connect_check(target: SocketAddr) -> Result<(), String> {
    let err = |e: std::io::Error| format!("connect {target}: {e}");
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(target),
        socket2::Type::STREAM.nonblocking().cloexec(),
        Some(socket2::Protocol::TCP),
    )
    .map_err(err)?;
    sock.set_linger(Some(Duration::ZERO)).map_err(err)?;
    match sock.connect(&target.into()) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(err(e)),
    }
    if poll_now(&sock) {
        return settled(&sock).map_err(err);
    }
    // SAFETY: the Socket owns its descriptor, which stays open as long as the AsyncFd.
    let fd = unsafe { AsyncFd::register_with_interest(sock, tokio::io::Interest::WRITABLE) }
        .map_err(|e| err(e.into()))?;
    let _ready = fd.writable().await.map_err(err)?;
    settled(fd.get_ref()).map_err(err)
}

/// True when a connecting socket has finished (connected or failed), without blocking.
fn poll_now(sock: &socket2::Socket) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0
}

/// Outcome of a finished non-blocking connect.
fn settled(sock: &socket2::Socket) -> std::io::Result<()> {
    match sock.take_error()? {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A TCP connection to `target`; the error names it.
pub(super) async fn connect(target: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))
}

/// [`connect`], then RST on close (SO_LINGER 0) like the connect check: no FIN handshake and
/// no TIME_WAIT left behind by the line-protocol checks (banner, DNS over TCP, FTP).
pub(super) async fn connect_rst(target: SocketAddr) -> Result<TcpStream, String> {
    let s = connect(target).await?;
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .map_err(|e| format!("connect {target}: set SO_LINGER: {e}"))?;
    Ok(s)
}

/// Status code from an HTTP status line.
pub fn parse_status(response: &[u8]) -> Option<u16> {
    let line_end = response
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(response.len());
    let line = std::str::from_utf8(response.get(..line_end)?).ok()?;
    let mut parts = line.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Where the body of `response` starts: after the blank line ending the header.
fn body_start(response: &[u8]) -> Option<usize> {
    response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

fn body(response: &[u8]) -> &[u8] {
    body_start(response).map_or(&[], |b| &response[b..])
}

/// What an HTTP(S) check asks and expects.
struct HttpRequest<'a> {
    path: &'a str,
    host: Option<&'a str>,
    expect_status: &'a super::StatusCodes,
    expect: Option<&'a super::BodyMatch>,
    md5: Option<&'a [u8; 16]>,
}

/// One HTTP/1.0 exchange over `s` (plain TCP or TLS).
async fn http<S>(target: SocketAddr, mut s: S, r: &HttpRequest<'_>) -> Result<ProbeOutcome, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (path, expect_status, expect) = (r.path, r.expect_status, r.expect);
    let host = r.host.map(str::to_string).unwrap_or_else(|| match target {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    });
    // HTTP/1.0 so the body is never chunked and the server closes when done.
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: ha-lvs-checker\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("send request to {target}: {e}"))?;
    // TLS buffers writes until flushed.
    s.flush()
        .await
        .map_err(|e| format!("send request to {target}: {e}"))?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    // With a digest to check, the whole body goes through MD5 as it arrives; `buf` keeps
    // at most HTTP_READ_LIMIT bytes for the status line and the substring.
    let mut md5 = r.md5.map(|_| BodyMd5::default());
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            // Many HTTPS servers close without a TLS close_notify; what arrived still counts.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => 0,
            Err(e) => return Err(format!("read from {target}: {e}")),
        };
        if n == 0 {
            break;
        }
        let kept = n.min(HTTP_READ_LIMIT.saturating_sub(buf.len()));
        buf.extend_from_slice(&chunk[..kept]);
        if let Some(h) = md5.as_mut() {
            h.update(&buf, &chunk[..n]);
        }
        let status = parse_status(&buf);
        // The status line rules the response out: nothing more to read.
        if status.is_some_and(|c| !expect_status.contains(c)) {
            break;
        }
        // Without a digest, stop at the read limit or once the text was found.
        if md5.is_none()
            && (buf.len() >= HTTP_READ_LIMIT
                || status.is_some() && expect.is_some_and(|e| e.is_match(body(&buf))))
        {
            break;
        }
    }
    match parse_status(&buf) {
        None => Err(format!("no HTTP status line from {target}")),
        Some(code) if !expect_status.contains(code) => Err(format!(
            "HTTP status {code} from {target}, expected {expect_status}"
        )),
        Some(_) => match (expect, r.md5, md5.map(BodyMd5::finish)) {
            (Some(e), _, _) if !e.is_match(body(&buf)) => {
                Err(format!("response of {target} lacks {e}"))
            }
            (_, Some(want), Some(got)) if got != *want => Err(format!(
                "body of {target} has MD5 {}, expected {}",
                hex(&got),
                hex(want)
            )),
            _ => Ok(ProbeOutcome::Up),
        },
    }
}

/// MD5 of an HTTP response body fed in reads: bytes before the end of the header are
/// skipped (the header is found in the kept prefix of the response).
#[derive(Default)]
struct BodyMd5 {
    hasher: md5::Md5,
    /// Response bytes seen so far, and whether the body has started.
    seen: usize,
    in_body: bool,
}

impl BodyMd5 {
    /// Add the read `chunk`, `kept` being the response prefix kept so far (chunk included,
    /// as far as it fit).
    fn update(&mut self, kept: &[u8], chunk: &[u8]) {
        use md5::Digest;
        let start = self.seen;
        self.seen += chunk.len();
        if self.in_body {
            self.hasher.update(chunk);
            return;
        }
        // A header longer than the kept prefix never ends: no body, and the status check
        // fails first (no status line) or the digest mismatches.
        if let Some(b) = body_start(kept) {
            self.in_body = true;
            let body_from = b.saturating_sub(start);
            self.hasher.update(chunk.get(body_from..).unwrap_or(&[]));
        }
    }

    fn finish(self) -> [u8; 16] {
        use md5::Digest;
        self.hasher.finalize().into()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// keepalived MISC_CHECK exit status semantics.
pub fn exit_status_outcome(code: Option<i32>, dynamic: bool) -> ProbeOutcome {
    match code {
        Some(0) => ProbeOutcome::Up,
        Some(c) if dynamic && (2..=255).contains(&c) => ProbeOutcome::UpWithWeight((c - 2) as u32),
        Some(c) => ProbeOutcome::Down(format!("check command exited with {c}")),
        None => ProbeOutcome::Down("check command killed by a signal".into()),
    }
}

async fn command(
    target: SocketAddr,
    program: &std::path::Path,
    args: &[String],
    dynamic: bool,
    timeout: Duration,
) -> Result<ProbeOutcome, String> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .arg(target.ip().to_string())
        .arg(target.port().to_string())
        .env("HA_LVS_HOST", target.ip().to_string())
        .env("HA_LVS_PORT", target.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("run {}: {e}", program.display()))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) => Ok(exit_status_outcome(st.code(), dynamic)),
        Ok(Err(e)) => Err(format!("wait for {}: {e}", program.display())),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!(
                "{} did not finish within {}",
                program.display(),
                fmt_dur(timeout)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_exit_codes() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n\r\nhi"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Busy\r\n"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0\r\n"), None);
        assert_eq!(parse_status(b""), None);
        assert_eq!(exit_status_outcome(Some(0), false), ProbeOutcome::Up);
        assert!(matches!(
            exit_status_outcome(Some(1), true),
            ProbeOutcome::Down(_)
        ));
        assert!(matches!(
            exit_status_outcome(Some(5), false),
            ProbeOutcome::Down(_)
        ));
        assert_eq!(
            exit_status_outcome(Some(5), true),
            ProbeOutcome::UpWithWeight(3)
        );
        assert_eq!(
            exit_status_outcome(Some(2), true),
            ProbeOutcome::UpWithWeight(0)
        );
        assert!(matches!(
            exit_status_outcome(None, true),
            ProbeOutcome::Down(_)
        ));
    }
}
