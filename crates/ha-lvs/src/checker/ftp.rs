//! FTP download check (ldirectord's `ftp` negotiate check with a `request`): log in, fetch
//! the file over a passive data connection and look for `receive` in its content.
//!
//! ldirectord's `check_ftp` uses Net::FTP: `login`, `cwd("/")`, `binary`, `pasv`,
//! `get(request)` into memory, `quit`, ignoring every error, then matches `receive` (a Perl
//! regex) against whatever was downloaded. Here: greeting `220`, `USER` (`331`, or `230`
//! when no password is needed), `PASS` (`230` or `202`), `TYPE I` (2xx), then `PASV` for an
//! IPv4 target (`EPSV` when `PASV` is refused) or `EPSV` for an IPv6 one (PASV cannot carry
//! an IPv6 address), open the data connection, `RETR request` (`150` or `125`), read the
//! data to EOF (at most [`FTP_READ_LIMIT`] bytes: reaching it ends the transfer and the
//! verdict uses what arrived), `226` or `250`, then `QUIT` without waiting for its answer.
//! Up when the content contains `receive` (plain text, not a regex), or for an empty or
//! absent `receive` when the transfer completed (ldirectord's empty pattern reuses Perl's
//! last successful match, which in practice is up whatever happened; a completed download is
//! the closest meaningful reading). Any failed step is down, naming the command (password
//! masked) and the server's reply. `CWD /` is not sent: the importer makes `request`
//! absolute.
//!
//! The data connection goes to the control connection's peer address with the port from
//! the `227` reply; the address inside the reply (h1-h4) is ignored, as modern clients do,
//! so a server behind NAT that announces its private address still works and a hostile
//! server cannot point the checker at a third host (FTP bounce).
//!
//! A separate check kind rather than further banner steps: FTP replies are coded and may
//! span several lines, the `227`/`229` reply must be parsed for the port, and a second
//! connection is involved, none of which the substring dialogue of [`super::banner`] models.
//! The protocol logic is a sans-IO state machine ([`FtpSession`]) with a reply reader
//! ([`ReplyReader`]) and the passive reply parsers ([`parse_pasv`], [`parse_epsv`]); the
//! driver ([`ftp`]) only moves bytes. Both connections are closed with an RST like the
//! connect check.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ProbeOutcome;
use super::banner::{BANNER_READ_LIMIT, excerpt};

/// Most bytes of the downloaded file kept for matching `receive`.
pub const FTP_READ_LIMIT: usize = 64 * 1024;

/// What replaces the password in messages and Debug output.
const MASK: &str = "***";

/// What an FTP download check logs in with, fetches and looks for.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FtpCheck {
    /// User name (`anonymous` for anonymous FTP).
    pub login: String,
    /// Password (masked in Debug output and down reasons; may be empty).
    pub passwd: String,
    /// Path of the file to download (`RETR`), e.g. `/pub/health.txt`.
    pub request: String,
    /// Text the file must contain; `None` or empty: a completed download is enough.
    pub receive: Option<String>,
}

impl fmt::Debug for FtpCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpCheck")
            .field("login", &self.login)
            .field("passwd", &MASK)
            .field("request", &self.request)
            .field("receive", &self.receive)
            .finish()
    }
}

/// Why bytes from the server were not a usable FTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReply(pub String);

impl fmt::Display for BadReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One (possibly multi-line) FTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// Every line of the reply, line ends dropped, joined with `\n`.
    pub text: String,
}

/// The three-digit code at the start of `line`, if any.
fn code_of(line: &[u8]) -> Option<u16> {
    let d = line.get(..3)?;
    if !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(d.iter().fold(0u16, |a, &b| a * 10 + u16::from(b - b'0')))
}

/// Splits the control connection's bytes into replies (RFC 959 section 4.2: a multi-line
/// reply starts with `ddd-` and ends with a line starting `ddd `).
#[derive(Debug, Clone, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
}

impl ReplyReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add bytes received on the control connection.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet part of a complete reply.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// The next complete reply, `None` when more bytes are needed. An error for a line
    /// that is not a reply, or for more than [`BANNER_READ_LIMIT`] bytes without a
    /// complete one.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, BadReply> {
        let mut lines = Vec::new();
        let mut start = 0;
        let mut first: Option<u16> = None;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let raw = &self.buf[start..start + nl];
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            start += nl + 1;
            lines.push(String::from_utf8_lossy(line).into_owned());
            let code = code_of(line);
            let sep = line.get(3).copied();
            match first {
                None => {
                    let Some(c) = code.filter(|_| matches!(sep, None | Some(b' ' | b'-'))) else {
                        return Err(BadReply(format!(
                            "not an FTP reply: \"{}\"",
                            excerpt(&lines[0])
                        )));
                    };
                    if sep != Some(b'-') {
                        self.buf.drain(..start);
                        return Ok(Some(Reply {
                            code: c,
                            text: lines.join("\n"),
                        }));
                    }
                    first = Some(c);
                }
                Some(c) if code == Some(c) && sep != Some(b'-') => {
                    self.buf.drain(..start);
                    return Ok(Some(Reply {
                        code: c,
                        text: lines.join("\n"),
                    }));
                }
                Some(_) => {}
            }
        }
        if self.buf.len() > BANNER_READ_LIMIT {
            return Err(BadReply(format!(
                "more than {BANNER_READ_LIMIT} bytes without a complete reply"
            )));
        }
        Ok(None)
    }
}

/// The address of a `227` reply: six comma-separated numbers `h1,h2,h3,h4,p1,p2` (in
/// parentheses or not), port = p1 * 256 + p2. The driver uses only the port.
pub fn parse_pasv(reply: &str) -> Result<SocketAddrV4, BadReply> {
    let bad = || BadReply(format!("no h1,h2,h3,h4,p1,p2 in \"{}\"", excerpt(reply)));
    let b = reply.as_bytes();
    // Try each run of digits and commas after the code: the first with six numbers wins.
    let mut i = 3.min(b.len());
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let end = b[i..]
            .iter()
            .position(|c| !(c.is_ascii_digit() || *c == b','))
            .map_or(b.len(), |p| i + p);
        let nums: Vec<Option<u8>> = reply[i..end]
            .split(',')
            .take(7)
            .map(|n| n.parse::<u8>().ok())
            .collect();
        if nums.len() >= 6 && nums[..6].iter().all(Option::is_some) {
            let n: Vec<u8> = nums[..6].iter().flatten().copied().collect();
            let port = u16::from(n[4]) << 8 | u16::from(n[5]);
            if port == 0 {
                return Err(bad());
            }
            return Ok(SocketAddrV4::new(
                Ipv4Addr::new(n[0], n[1], n[2], n[3]),
                port,
            ));
        }
        i = end;
    }
    Err(bad())
}

/// The port of a `229` reply (RFC 2428): `(<d><d><d>port<d>)` where `<d>` is one
/// delimiter character (usually `|`).
pub fn parse_epsv(reply: &str) -> Result<u16, BadReply> {
    let bad = || BadReply(format!("no (|||port|) in \"{}\"", excerpt(reply)));
    let open = reply.find('(').ok_or_else(bad)?;
    let rest = &reply[open + 1..];
    let d = rest.chars().next().ok_or_else(bad)?;
    if !d.is_ascii_graphic() || d.is_ascii_digit() {
        return Err(bad());
    }
    let mut it = rest.split(d);
    // "", "", "", port, ")..."
    let parts: Vec<&str> = it.by_ref().take(5).collect();
    if parts.len() < 5 || !parts[..3].iter().all(|p| p.is_empty()) || !parts[4].starts_with(')') {
        return Err(bad());
    }
    match parts[3].parse::<u16>() {
        Ok(p) if p != 0 && parts[3].bytes().all(|c| c.is_ascii_digit()) => Ok(p),
        _ => Err(bad()),
    }
}

/// What the I/O driver of an [`FtpSession`] does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this line on the control connection.
    Send(String),
    /// Read the control connection ([`FtpSession::feed_control`] or
    /// [`FtpSession::control_closed`]).
    ReadControl,
    /// Connect the data connection to this port of the control connection's peer, then
    /// call [`FtpSession::data_opened`] (or [`FtpSession::data_failed`]).
    OpenData(u16),
    /// Read the data connection ([`FtpSession::feed_data`] or [`FtpSession::data_eof`]).
    ReadData,
    /// Send `QUIT` without waiting for the answer (failure to send does not matter).
    Quit,
    /// The file arrived and matched: up.
    Up,
    /// Down, with the reason (password masked).
    Down(String),
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Greeting,
    User,
    Pass,
    Type,
    Passive { epsv: bool },
    DataOpening,
    Retr,
    Transfer,
    Complete,
    Done,
}

/// The sans-IO FTP download: feed it replies and data, do what [`FtpSession::next_action`]
/// says.
#[derive(Debug, Clone)]
pub struct FtpSession<'a> {
    check: &'a FtpCheck,
    ipv6: bool,
    phase: Phase,
    reader: ReplyReader,
    /// Shown form of the last command sent (password masked), for messages.
    last: String,
    out: Option<Action>,
    verdict: Option<Action>,
    data: Vec<u8>,
    data_total: usize,
    truncated: bool,
    /// The final reply of RETR came before the data ended (some servers do that).
    final_seen: bool,
}

impl<'a> FtpSession<'a> {
    /// A session for `check` against a server reached over IPv6 (`EPSV`) or IPv4 (`PASV`).
    pub fn new(check: &'a FtpCheck, ipv6: bool) -> Self {
        FtpSession {
            check,
            ipv6,
            phase: Phase::Greeting,
            reader: ReplyReader::new(),
            last: "greeting".into(),
            out: None,
            verdict: None,
            data: Vec::new(),
            data_total: 0,
            truncated: false,
            final_seen: false,
        }
    }

    /// The next thing to do.
    pub fn next_action(&mut self) -> Action {
        loop {
            if let Some(a) = self.out.take() {
                return a;
            }
            if let Some(v) = &self.verdict {
                return v.clone();
            }
            match self.phase {
                Phase::Transfer => return Action::ReadData,
                Phase::DataOpening => {
                    // The driver ignored OpenData: nothing sensible is left.
                    self.fail("no data connection".into());
                }
                _ => match self.reader.next_reply() {
                    Ok(Some(r)) => self.on_reply(r),
                    Ok(None) => return Action::ReadControl,
                    Err(e) => self.fail(e.0),
                },
            }
        }
    }

    /// Bytes read from the control connection.
    pub fn feed_control(&mut self, data: &[u8]) {
        self.reader.feed(data);
    }

    /// The control connection was closed by the server.
    pub fn control_closed(&mut self) {
        let got = String::from_utf8_lossy(self.reader.pending()).into_owned();
        self.fail(format!(
            "closed the connection without a reply: got \"{}\"",
            excerpt(&got)
        ));
    }

    /// The data connection is open: send `RETR`.
    pub fn data_opened(&mut self) {
        if self.phase == Phase::DataOpening {
            self.send(format!("RETR {}", self.check.request));
            self.phase = Phase::Retr;
        }
    }

    /// The data connection could not be opened.
    pub fn data_failed(&mut self, why: &str) {
        self.fail(format!("data connection: {why}"));
    }

    /// Bytes of the file.
    pub fn feed_data(&mut self, data: &[u8]) {
        if self.phase != Phase::Transfer {
            return;
        }
        let room = FTP_READ_LIMIT.saturating_sub(self.data.len());
        self.data.extend_from_slice(&data[..data.len().min(room)]);
        self.data_total += data.len();
        if self.data_total >= FTP_READ_LIMIT {
            // Enough to judge: abandon the rest of the transfer.
            self.truncated = true;
            self.judge();
        }
    }

    /// The server closed the data connection: the file is complete.
    pub fn data_eof(&mut self) {
        if self.phase != Phase::Transfer {
            return;
        }
        if self.final_seen {
            self.judge();
        } else {
            self.phase = Phase::Complete;
        }
    }

    /// The check's timeout expired.
    pub fn timed_out(&mut self, timeout: Duration) {
        let ms = timeout.as_millis();
        let why = match self.phase {
            Phase::Transfer => format!(
                "the file's data did not end within {ms} ms ({} bytes so far)",
                self.data_total
            ),
            _ => format!("no answer within {ms} ms"),
        };
        self.fail(why);
    }

    /// The shown form of the command being answered (password masked).
    pub fn waiting_for(&self) -> &str {
        &self.last
    }

    /// The file content received so far (up to [`FTP_READ_LIMIT`] bytes).
    pub fn content(&self) -> &[u8] {
        &self.data
    }

    fn send(&mut self, line: String) {
        self.last = if line.starts_with("PASS ") {
            format!("PASS {MASK}")
        } else {
            line.clone()
        };
        self.out = Some(Action::Send(format!("{line}\r\n")));
    }

    fn mask(&self, s: &str) -> String {
        if self.check.passwd.is_empty() {
            s.to_string()
        } else {
            s.replace(self.check.passwd.as_str(), MASK)
        }
    }

    fn fail(&mut self, why: String) {
        if self.verdict.is_none() {
            let m = self.mask(&format!("{}: {why}", self.last));
            self.verdict = Some(Action::Down(m));
            self.phase = Phase::Done;
        }
    }

    /// A reply the current phase did not want.
    fn unexpected(&mut self, r: &Reply, wanted: &str) {
        let text = excerpt(&r.text);
        self.fail(format!("{text} (wanted {wanted})"));
        // The control connection still works: say goodbye.
        self.out = Some(Action::Quit);
    }

    fn type_done(&mut self) {
        self.send("TYPE I".into());
        self.phase = Phase::Type;
    }

    fn passive(&mut self, epsv: bool) {
        self.send(if epsv { "EPSV" } else { "PASV" }.into());
        self.phase = Phase::Passive { epsv };
    }

    fn on_reply(&mut self, r: Reply) {
        let c = r.code;
        // Preliminary replies (120 "ready in n minutes", 110 restart marker) announce a
        // later one, except 1xx to RETR which opens the transfer.
        if (100..200).contains(&c) && self.phase != Phase::Retr {
            return;
        }
        match self.phase {
            Phase::Greeting if c == 220 => {
                self.send(format!("USER {}", self.check.login));
                self.phase = Phase::User;
            }
            Phase::Greeting => self.unexpected(&r, "220"),
            Phase::User if c == 331 => {
                self.send(format!("PASS {}", self.check.passwd));
                self.phase = Phase::Pass;
            }
            Phase::User if c == 230 => self.type_done(),
            Phase::User => self.unexpected(&r, "331 or 230"),
            Phase::Pass if c == 230 || c == 202 => self.type_done(),
            Phase::Pass => self.unexpected(&r, "230 or 202"),
            Phase::Type if (200..300).contains(&c) => self.passive(self.ipv6),
            Phase::Type => self.unexpected(&r, "200"),
            Phase::Passive { epsv: false } if c == 227 => match parse_pasv(&r.text) {
                Ok(a) => {
                    self.out = Some(Action::OpenData(a.port()));
                    self.phase = Phase::DataOpening;
                }
                Err(e) => self.fail(e.0),
            },
            // Some servers disable PASV in favour of EPSV.
            Phase::Passive { epsv: false } if (500..600).contains(&c) => self.passive(true),
            Phase::Passive { epsv: false } => self.unexpected(&r, "227"),
            Phase::Passive { epsv: true } if c == 229 => match parse_epsv(&r.text) {
                Ok(p) => {
                    self.out = Some(Action::OpenData(p));
                    self.phase = Phase::DataOpening;
                }
                Err(e) => self.fail(e.0),
            },
            Phase::Passive { epsv: true } => self.unexpected(&r, "229"),
            Phase::Retr if c == 150 || c == 125 => self.phase = Phase::Transfer,
            Phase::Retr if c == 226 || c == 250 => {
                self.final_seen = true;
                self.phase = Phase::Transfer;
            }
            Phase::Retr => self.unexpected(&r, "150 or 125"),
            // A reply during the transfer: the final one arriving before the data's end.
            Phase::Transfer if c == 226 || c == 250 => self.final_seen = true,
            Phase::Transfer | Phase::Complete if c >= 400 => {
                self.unexpected(&r, "226 or 250");
            }
            Phase::Complete if c == 226 || c == 250 => self.judge(),
            Phase::Transfer | Phase::Complete => self.unexpected(&r, "226 or 250"),
            Phase::DataOpening | Phase::Done => {}
        }
    }

    /// The transfer is over (complete or enough of it): match `receive`.
    fn judge(&mut self) {
        let want = self.check.receive.as_deref().unwrap_or("");
        let found = super::contains(&self.data, want.as_bytes());
        self.phase = Phase::Done;
        if found {
            self.verdict = Some(Action::Up);
        } else {
            let size = if self.truncated {
                format!("first {} bytes", self.data.len())
            } else {
                format!("{} bytes", self.data.len())
            };
            let got = String::from_utf8_lossy(&self.data).into_owned();
            let m = format!(
                "{}: file ({size}) lacks {want:?}: got \"{}\"",
                self.last,
                excerpt(&got)
            );
            self.verdict = Some(Action::Down(self.mask(&m)));
        }
        self.out = Some(Action::Quit);
    }
}

/// Run the FTP download check against `target` within `timeout`.
pub async fn ftp(
    target: SocketAddr,
    check: &FtpCheck,
    timeout: Duration,
) -> Result<ProbeOutcome, String> {
    let deadline = Instant::now() + timeout;
    let ms = timeout.as_millis();
    let mut ctrl = tokio::time::timeout_at(deadline, super::probe::connect_rst(target))
        .await
        .map_err(|_| format!("connect {target}: no answer within {ms} ms"))??;
    let mut s = FtpSession::new(check, target.is_ipv6());
    let mut data: Option<TcpStream> = None;
    let mut chunk = vec![0u8; 8192];
    loop {
        match s.next_action() {
            Action::Up => return Ok(ProbeOutcome::Up),
            Action::Down(why) => return Err(format!("{target} {why}")),
            Action::Send(line) => {
                match tokio::time::timeout_at(deadline, ctrl.write_all(line.as_bytes())).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        return Err(format!("{target} {}: send: {e}", s.waiting_for()));
                    }
                    Err(_) => s.timed_out(timeout),
                }
            }
            Action::Quit => {
                // Best effort: the verdict does not depend on it.
                let _ = tokio::time::timeout_at(deadline, ctrl.write_all(b"QUIT\r\n")).await;
                data = None;
            }
            Action::ReadControl => {
                match tokio::time::timeout_at(deadline, ctrl.read(&mut chunk)).await {
                    Ok(Ok(0)) => s.control_closed(),
                    Ok(Ok(n)) => s.feed_control(&chunk[..n]),
                    Ok(Err(e)) => {
                        return Err(format!("{target} {}: read: {e}", s.waiting_for()));
                    }
                    Err(_) => s.timed_out(timeout),
                }
            }
            Action::OpenData(port) => {
                // The control connection's peer, not the address in the reply (see the
                // module docs).
                let to = SocketAddr::new(target.ip(), port);
                match tokio::time::timeout_at(deadline, super::probe::connect_rst(to)).await {
                    Ok(Ok(d)) => {
                        data = Some(d);
                        s.data_opened();
                    }
                    Ok(Err(e)) => s.data_failed(&e),
                    Err(_) => s.timed_out(timeout),
                }
            }
            Action::ReadData => {
                let Some(d) = data.as_mut() else {
                    s.data_failed("not open");
                    continue;
                };
                match tokio::time::timeout_at(deadline, d.read(&mut chunk)).await {
                    Ok(Ok(0)) => {
                        data = None;
                        s.data_eof();
                    }
                    Ok(Ok(n)) => s.feed_data(&chunk[..n]),
                    Ok(Err(e)) => s.data_failed(&format!("read: {e}")),
                    Err(_) => s.timed_out(timeout),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(receive: Option<&str>) -> FtpCheck {
        FtpCheck {
            login: "anonymous".into(),
            passwd: "pw@x".into(),
            request: "/pub/f.txt".into(),
            receive: receive.map(str::to_string),
        }
    }

    #[test]
    fn replies_single_and_multi_line() {
        let mut r = ReplyReader::new();
        r.feed(b"220-Welcome\r\n220-to\r\n 220 not the end\r\n");
        assert_eq!(r.next_reply(), Ok(None));
        r.feed(b"220 ready\r\n331 pw");
        let first = r.next_reply().unwrap().unwrap();
        assert_eq!(first.code, 220);
        assert_eq!(
            first.text,
            "220-Welcome\n220-to\n 220 not the end\n220 ready"
        );
        assert_eq!(r.next_reply(), Ok(None));
        r.feed(b"\n");
        assert_eq!(r.next_reply().unwrap().unwrap().code, 331);
        let mut r = ReplyReader::new();
        r.feed(b"SSH-2.0-OpenSSH\r\n");
        assert!(r.next_reply().is_err());
    }

    #[test]
    fn passive_replies() {
        assert_eq!(
            parse_pasv("227 Entering Passive Mode (192,0,2,7,19,137).").unwrap(),
            "192.0.2.7:5001".parse().unwrap()
        );
        assert_eq!(parse_pasv("227 =10,0,0,1,0,21").unwrap().port(), 21);
        assert!(parse_pasv("227 Entering Passive Mode (1,2,3,4,5)").is_err());
        assert!(parse_pasv("227 (1,2,3,400,5,6)").is_err());
        assert!(parse_pasv("227 (1,2,3,4,0,0)").is_err());
        assert_eq!(
            parse_epsv("229 Entering Extended Passive Mode (|||6446|)"),
            Ok(6446)
        );
        assert_eq!(parse_epsv("229 ok (!!!21!)"), Ok(21));
        assert!(parse_epsv("229 (|||0|)").is_err());
        assert!(parse_epsv("229 (||1|2|)").is_err());
        assert!(parse_epsv("229 (|||+5|)").is_err());
        assert!(parse_epsv("229 (|||70000|)").is_err());
    }

    /// Runs a session against a scripted server: `replies` answers each control read in
    /// turn, `file` is the data. Returns the lines sent and the verdict.
    fn run(c: &FtpCheck, ipv6: bool, replies: &[&str], file: &[u8]) -> (Vec<String>, Action) {
        let mut s = FtpSession::new(c, ipv6);
        let mut replies = replies.iter();
        let mut sent = Vec::new();
        let mut data_left = Some(file);
        loop {
            match s.next_action() {
                Action::Send(l) => sent.push(l.trim_end().to_string()),
                Action::ReadControl => match replies.next() {
                    Some(r) => s.feed_control(r.as_bytes()),
                    None => s.control_closed(),
                },
                Action::OpenData(p) => {
                    assert_eq!(p, 5001);
                    s.data_opened();
                }
                Action::ReadData => match data_left.take() {
                    Some(d) if !d.is_empty() => s.feed_data(d),
                    _ => s.data_eof(),
                },
                Action::Quit => sent.push("QUIT".into()),
                v => return (sent, v),
            }
        }
    }

    const OK: &[&str] = &[
        "220 hi\r\n",
        "331 pw?\r\n",
        "230 in\r\n",
        "200 binary\r\n",
        "227 Entering Passive Mode (10,9,8,7,19,137)\r\n",
        "150 here it comes\r\n",
        "226 done\r\n",
    ];

    #[test]
    fn download_up_down_and_masked() {
        let (sent, v) = run(&check(Some("OK")), false, OK, b"status OK\n");
        assert_eq!(v, Action::Up);
        assert_eq!(
            sent,
            [
                "USER anonymous",
                "PASS pw@x",
                "TYPE I",
                "PASV",
                "RETR /pub/f.txt",
                "QUIT"
            ]
        );
        let (_, v) = run(&check(Some("OK")), false, OK, b"status BAD\n");
        assert_eq!(
            v,
            Action::Down(
                "RETR /pub/f.txt: file (11 bytes) lacks \"OK\": got \"status BAD\\n\"".into()
            )
        );
        // Empty receive: a completed download (even of an empty file) is enough.
        assert_eq!(run(&check(Some("")), false, OK, b"").1, Action::Up);
        assert_eq!(run(&check(None), false, OK, b"").1, Action::Up);
        // A missing file.
        let mut r = OK.to_vec();
        r[5] = "550 Failed to open file pw@x.\r\n";
        let (_, v) = run(&check(None), false, &r, b"");
        assert_eq!(
            v,
            Action::Down(
                "RETR /pub/f.txt: 550 Failed to open file ***. (wanted 150 or 125)".into()
            )
        );
        // A refused password is masked.
        let mut r = OK.to_vec();
        r[2] = "530 Login incorrect.\r\n";
        let (sent, v) = run(&check(None), false, &r, b"");
        assert_eq!(
            v,
            Action::Down("PASS ***: 530 Login incorrect. (wanted 230 or 202)".into())
        );
        assert_eq!(sent.last().map(String::as_str), Some("QUIT"));
        // The final reply before the end of the data, and 230 straight after USER.
        let r = [
            "220 hi\r\n",
            "230 no password needed\r\n",
            "200 ok\r\n",
            "227 (1,2,3,4,19,137)\r\n",
            "150 go\r\n226 done\r\n",
        ];
        let (sent, v) = run(&check(Some("x")), false, &r, b"x");
        assert_eq!(v, Action::Up);
        assert!(!sent.iter().any(|l| l.starts_with("PASS")), "{sent:?}");
    }

    #[test]
    fn epsv_for_ipv6_and_after_a_refused_pasv() {
        let mut r = OK.to_vec();
        r[4] = "229 Entering Extended Passive Mode (|||5001|)\r\n";
        let (sent, v) = run(&check(None), true, &r, b"data");
        assert_eq!(v, Action::Up);
        assert_eq!(sent[3], "EPSV");
        let mut r = OK.to_vec();
        r[4] = "502 PASV not implemented\r\n";
        r.insert(5, "229 (|||5001|)\r\n");
        let (sent, v) = run(&check(None), false, &r, b"data");
        assert_eq!(v, Action::Up);
        assert_eq!(&sent[3..5], ["PASV", "EPSV"]);
    }

    /// Drive `s` through the successful replies up to the download.
    fn to_data(s: &mut FtpSession<'_>) {
        let mut replies = OK[..6].iter();
        loop {
            match s.next_action() {
                Action::ReadControl => s.feed_control(replies.next().unwrap().as_bytes()),
                Action::OpenData(_) => s.data_opened(),
                Action::Send(_) => {}
                Action::ReadData => break,
                o => panic!("{o:?}"),
            }
        }
    }

    #[test]
    fn a_large_file_is_judged_on_its_start_and_debug_masks() {
        let c = check(Some("needle"));
        let mut s = FtpSession::new(&c, false);
        to_data(&mut s);
        s.feed_data(&vec![b'a'; FTP_READ_LIMIT + 10]);
        assert_eq!(s.next_action(), Action::Quit);
        match s.next_action() {
            Action::Down(m) => assert!(m.contains("first 65536 bytes"), "{m}"),
            o => panic!("{o:?}"),
        }
        assert_eq!(s.content().len(), FTP_READ_LIMIT);
        let d = format!("{c:?}");
        assert!(!d.contains("pw@x") && d.contains("***"), "{d}");
    }

    #[test]
    fn timeouts_say_what_was_awaited() {
        let c = check(None);
        let mut s = FtpSession::new(&c, false);
        assert_eq!(s.next_action(), Action::ReadControl);
        s.timed_out(Duration::from_millis(300));
        assert_eq!(
            s.next_action(),
            Action::Down("greeting: no answer within 300 ms".into())
        );
        let mut s = FtpSession::new(&c, false);
        to_data(&mut s);
        s.feed_data(b"abc");
        s.timed_out(Duration::from_secs(1));
        assert_eq!(
            s.next_action(),
            Action::Down(
                "RETR /pub/f.txt: the file's data did not end within 1000 ms (3 bytes so far)"
                    .into()
            )
        );
    }

    proptest! {
        /// A formatted 227 reply gives back its address; EPSV likewise its port.
        #[test]
        fn pasv_epsv_round_trip(a in any::<[u8; 4]>(), port in 1u16.., text in "[ -~]{0,20}", paren in any::<bool>()) {
            let ip = Ipv4Addr::from(a);
            let six = format!("{},{},{},{},{},{}", a[0], a[1], a[2], a[3], port >> 8, port & 0xff);
            let reply = if paren {
                format!("227 Entering Passive Mode ({six}).")
            } else {
                format!("227 {six}")
            };
            prop_assert_eq!(parse_pasv(&reply).unwrap(), SocketAddrV4::new(ip, port));
            let e = format!("229 {} (|||{port}|)", text.replace(['(', '|'], ""));
            prop_assert_eq!(parse_epsv(&e).unwrap(), port);
        }

        /// The parsers and the reply reader never panic, whatever arrives.
        #[test]
        fn never_panics(s in "\\PC{0,80}", bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_pasv(&s);
            let _ = parse_epsv(&s);
            let mut r = ReplyReader::new();
            r.feed(&bytes);
            while let Ok(Some(_)) = r.next_reply() {}
        }

        /// Any split of the control stream into reads gives the same replies.
        #[test]
        fn reply_chunking_does_not_matter(cuts in proptest::collection::vec(0usize..120, 0..8)) {
            let stream = b"220-a\r\n220 b\r\n331 c\n230-x\r\n230-y\r\n230 z\r\n226 done\r\n";
            let whole = {
                let mut r = ReplyReader::new();
                r.feed(stream);
                let mut v = Vec::new();
                while let Ok(Some(x)) = r.next_reply() { v.push(x); }
                v
            };
            prop_assert_eq!(whole.len(), 4);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut r = ReplyReader::new();
            let mut got = Vec::new();
            let mut prev = 0;
            for c in cuts.into_iter().chain(std::iter::once(stream.len())) {
                r.feed(&stream[prev..c]);
                prev = c;
                while let Ok(Some(x)) = r.next_reply() { got.push(x); }
            }
            prop_assert_eq!(got, whole);
        }
    }
}
