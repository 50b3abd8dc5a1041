//! Banner / line-protocol check (ldirectord `simpletcp`, its smtp and nntp negotiate checks
//! reduced to the greeting, and its ftp, pop and imap checks with their login dialogue; pops
//! and imaps the same over TLS).
//!
//! Connect, optionally send a request, then read until the expected text appears, the peer
//! closes, [`BANNER_READ_LIMIT`] bytes have arrived, or the check's timeout expires. Then each
//! further [`BannerStep`] of the dialogue in turn: send its line, read its reply the same way
//! (the limit counts per step; the timeout is the whole check's). The socket is closed with an
//! RST like the connect check, so nothing lingers in TIME_WAIT (the server may log an aborted
//! session, as it does for ldirectord's checks).
//!
//! The dialogue is a sans-IO state machine ([`Dialogue`], over the accumulator
//! [`BannerMatch`]) so it can be tested against any split of the stream into reads. Passwords
//! ([`BannerStep::secret`]) are masked in Debug output and in down reasons.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{ProbeOutcome, TlsCheck};

/// Most bytes read while waiting for the expected text (per step of a dialogue).
pub const BANNER_READ_LIMIT: usize = 16 * 1024;

/// What replaces a secret in messages and Debug output.
const MASK: &str = "***";

/// Default expected greeting of an ldirectord negotiate service whose check we reduce to its
/// banner: smtp and ftp `220`, pop and pops `+OK`, imap and imaps `* OK`, nntp `200`.
pub fn default_expect(service: &str) -> Option<&'static str> {
    match service {
        "smtp" | "ftp" => Some("220"),
        "pop" | "pops" => Some("+OK"),
        "imap" | "imaps" => Some("* OK"),
        "nntp" => Some("200"),
        _ => None,
    }
}

/// One exchange of a dialogue after the greeting: send a line, then wait for a reply
/// containing one of `expect` (e.g. `USER alice\r\n`, then `+OK`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BannerStep {
    /// Bytes to send (sent as is: include the line end, e.g. `\r\n`).
    pub send: String,
    /// Substrings any one of which completes the step when it appears in data received after
    /// `send` (FTP answers `USER` with `331` or `230`). Empty: do not wait for a reply (a
    /// closing `QUIT`).
    pub expect: Vec<String>,
    /// Text inside `send` never to show (a password): replaced by `***` in Debug output and
    /// in down reasons (in received text too, should a server echo it).
    pub secret: Option<String>,
}

impl BannerStep {
    /// A step sending `send` and waiting for any of `expect`.
    pub fn new(send: impl Into<String>, expect: &[&str]) -> Self {
        BannerStep {
            send: send.into(),
            expect: expect.iter().map(|s| s.to_string()).collect(),
            secret: None,
        }
    }

    /// The same step with `secret` (text inside `send`) masked; an empty secret masks
    /// nothing.
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        let s = secret.into();
        self.secret = (!s.is_empty()).then_some(s);
        self
    }

    /// `text` with the secret masked.
    pub fn mask(&self, text: &str) -> String {
        match &self.secret {
            Some(s) => text.replace(s.as_str(), MASK),
            None => text.to_string(),
        }
    }

    /// The sent line as shown in messages: secret masked, line end dropped, escaped.
    pub fn shown(&self) -> String {
        let line = self.mask(self.send.trim_end_matches(['\r', '\n']));
        line.escape_debug().collect()
    }
}

impl fmt::Debug for BannerStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BannerStep")
            .field("send", &self.mask(&self.send))
            .field("expect", &self.expect)
            .field("secret", &self.secret.as_ref().map(|_| MASK))
            .finish()
    }
}

/// Accumulates received bytes until one of the expected texts appears or the limit is
/// reached.
#[derive(Debug, Clone)]
pub struct BannerMatch {
    expect: Vec<Vec<u8>>,
    buf: Vec<u8>,
    limit: usize,
    found: bool,
}

impl BannerMatch {
    /// A matcher for `expect` reading at most `limit` bytes.
    pub fn new(expect: &str, limit: usize) -> Self {
        Self::any(&[expect], limit)
    }

    /// A matcher for any of `expect` (none: matched at once) reading at most `limit` bytes.
    pub fn any<S: AsRef<str>>(expect: &[S], limit: usize) -> Self {
        let expect: Vec<Vec<u8>> = expect
            .iter()
            .map(|e| e.as_ref().as_bytes().to_vec())
            .collect();
        let found = expect.is_empty() || expect.iter().any(Vec::is_empty);
        BannerMatch {
            expect,
            buf: Vec::new(),
            limit,
            found,
        }
    }

    /// Add received bytes (beyond the limit they are dropped). Returns true when reading can
    /// stop: the text was found or the limit is reached.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        if !self.found {
            let room = self.limit.saturating_sub(self.buf.len());
            let old = self.buf.len();
            self.buf.extend_from_slice(&data[..data.len().min(room)]);
            self.found = self.expect.iter().any(|e| {
                // Only the tail that could still complete a match needs rescanning.
                let from = old.saturating_sub(e.len().saturating_sub(1));
                super::contains(&self.buf[from..], e)
            });
        }
        self.done()
    }

    /// True when reading can stop.
    pub fn done(&self) -> bool {
        self.found || self.buf.len() >= self.limit
    }

    /// Whether the expected text was seen.
    pub fn found(&self) -> bool {
        self.found
    }

    /// What was received (up to the limit).
    pub fn received(&self) -> &[u8] {
        &self.buf
    }
}

/// Why a step of a dialogue failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepFailure {
    /// The peer closed the connection before the expected text.
    Closed,
    /// [`BANNER_READ_LIMIT`] bytes arrived without it.
    TooMuch,
    /// The check's timeout expired first.
    Timeout,
}

/// What the I/O driver of a [`Dialogue`] does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next<'a> {
    /// Send these bytes (then ask again).
    Send(&'a [u8]),
    /// Read and hand the data to [`Dialogue::feed`] (or call [`Dialogue::closed`]).
    Read,
    /// Every step got its reply: the check is up.
    Up,
    /// A step failed: the check is down ([`Dialogue::describe`] says why).
    Down(StepFailure),
}

/// The sans-IO dialogue of a banner check: step 0 is the optional request and the greeting,
/// step `i` is `steps[i - 1]`. Each step's text is looked for only in data fed after its send
/// (the rest of a read that completed the previous step is dropped).
#[derive(Debug, Clone)]
pub struct Dialogue<'a> {
    request: Option<&'a str>,
    greeting: &'a str,
    steps: &'a [BannerStep],
    step: usize,
    sent: bool,
    m: BannerMatch,
    limit: usize,
    end: Option<Option<StepFailure>>,
}

impl<'a> Dialogue<'a> {
    /// A dialogue sending `request` (if any), expecting `greeting`, then running `steps`,
    /// reading at most `limit` bytes per step.
    pub fn new(
        request: Option<&'a str>,
        greeting: &'a str,
        steps: &'a [BannerStep],
        limit: usize,
    ) -> Self {
        Dialogue {
            request,
            greeting,
            steps,
            step: 0,
            sent: false,
            m: BannerMatch::new(greeting, limit),
            limit,
            end: None,
        }
    }

    /// The next thing to do.
    pub fn next_action(&mut self) -> Next<'a> {
        loop {
            match self.end {
                Some(None) => return Next::Up,
                Some(Some(f)) => return Next::Down(f),
                None => {}
            }
            if !self.sent {
                self.sent = true;
                let send = match self.step {
                    0 => self.request,
                    i => self.steps.get(i - 1).map(|s| s.send.as_str()),
                };
                if let Some(s) = send {
                    return Next::Send(s.as_bytes());
                }
            }
            if self.m.found() {
                match self.steps.get(self.step) {
                    Some(s) => {
                        self.step += 1;
                        self.sent = false;
                        self.m = BannerMatch::any(&s.expect, self.limit);
                    }
                    None => self.end = Some(None),
                }
                continue;
            }
            if self.m.done() {
                self.end = Some(Some(StepFailure::TooMuch));
                continue;
            }
            return Next::Read;
        }
    }

    /// Data read from the peer.
    pub fn feed(&mut self, data: &[u8]) {
        if self.end.is_none() && self.sent {
            self.m.feed(data);
        }
    }

    /// The peer closed the connection.
    pub fn closed(&mut self) {
        self.fail(StepFailure::Closed);
    }

    /// The check's timeout expired.
    pub fn timed_out(&mut self) {
        self.fail(StepFailure::Timeout);
    }

    fn fail(&mut self, f: StepFailure) {
        if self.end.is_none() && !self.m.found() {
            self.end = Some(Some(f));
        }
    }

    /// The current step (0: request and greeting; the last one once up).
    pub fn step(&self) -> usize {
        self.step
    }

    /// True when the current step is a closing command sent without waiting for an answer
    /// (a `QUIT`): failing to send it does not fail the check.
    pub fn farewell(&self) -> bool {
        self.current().is_some_and(|s| s.expect.is_empty())
    }

    /// What the current step received so far.
    pub fn received(&self) -> &[u8] {
        self.m.received()
    }

    /// Why the current step failed, for a down reason: the step (its line, secret masked),
    /// what it waited for and what arrived (truncated, secrets masked). `timeout` is named
    /// for [`StepFailure::Timeout`].
    pub fn describe(&self, target: SocketAddr, why: StepFailure, timeout: Duration) -> String {
        let how = match why {
            StepFailure::Closed => "closed the connection".to_string(),
            StepFailure::TooMuch => "sent too much".to_string(),
            StepFailure::Timeout => format!("no answer within {} ms", timeout.as_millis()),
        };
        let expect: Vec<String> = match self.current() {
            None => vec![format!("{:?}", self.greeting)],
            Some(s) => s.expect.iter().map(|e| format!("{e:?}")).collect(),
        };
        format!(
            "{target}{}: {how} after {} bytes without {}: got \"{}\"",
            self.step_label(),
            self.received().len(),
            expect.join(" or "),
            excerpt(&self.mask_all(self.received()))
        )
    }

    /// The current step after the greeting, if any.
    fn current(&self) -> Option<&'a BannerStep> {
        self.step.checked_sub(1).and_then(|i| self.steps.get(i))
    }

    /// ` step N (LINE)` for a step after the greeting (secret masked), empty for step 0.
    pub fn step_label(&self) -> String {
        match self.current() {
            None => String::new(),
            Some(s) => format!(" step {} ({})", self.step, s.shown()),
        }
    }

    /// Received bytes as text with every step's secret masked.
    fn mask_all(&self, data: &[u8]) -> String {
        let text = String::from_utf8_lossy(data).into_owned();
        self.steps.iter().fold(text, |t, s| s.mask(&t))
    }
}

/// The start of `text` as printable text for an error message.
pub(crate) fn excerpt(text: &str) -> String {
    const MAX: usize = 80;
    let mut s: String = text
        .chars()
        .take(MAX)
        .collect::<String>()
        .escape_debug()
        .collect();
    if text.chars().count() > MAX {
        s.push_str("...");
    }
    s
}

/// Run the banner check against `target` within `timeout`, over TLS when `tls` is set
/// (handshake first, SNI only from [`TlsCheck::server_name`]): send `send`, wait for
/// `expect`, then run `steps`.
pub async fn banner(
    target: SocketAddr,
    send: Option<&str>,
    expect: &str,
    steps: &[BannerStep],
    tls: Option<&TlsCheck>,
    timeout: Duration,
) -> Result<ProbeOutcome, String> {
    let deadline = Instant::now() + timeout;
    let late = || format!("no answer within {} ms", timeout.as_millis());
    let s = tokio::time::timeout_at(deadline, super::probe::connect_rst(target))
        .await
        .map_err(|_| format!("connect {target}: {}", late()))??;
    let d = Dialogue::new(send, expect, steps, BANNER_READ_LIMIT);
    match tls {
        None => exchange(target, s, d, deadline, timeout).await,
        Some(t) => {
            let s = tokio::time::timeout_at(deadline, super::tls::handshake(s, target, t, None))
                .await
                .map_err(|_| format!("TLS handshake with {target}: {}", late()))??;
            exchange(target, s, d, deadline, timeout).await
        }
    }
}

/// Drive the dialogue over plain TCP or TLS until its verdict or the deadline.
async fn exchange<S>(
    target: SocketAddr,
    mut s: S,
    mut d: Dialogue<'_>,
    deadline: Instant,
    timeout: Duration,
) -> Result<ProbeOutcome, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut chunk = [0u8; 4096];
    loop {
        match d.next_action() {
            Next::Up => return Ok(ProbeOutcome::Up),
            Next::Down(why) => return Err(d.describe(target, why, timeout)),
            Next::Send(bytes) => {
                let what = match d.step() {
                    0 => " request".to_string(),
                    _ => d.step_label(),
                };
                let sent = tokio::time::timeout_at(deadline, async {
                    s.write_all(bytes).await?;
                    // TLS buffers writes until flushed.
                    s.flush().await
                })
                .await;
                match sent {
                    Ok(Ok(())) => {}
                    // The server may already have gone after the last answer.
                    Ok(Err(_)) if d.farewell() => {}
                    Ok(Err(e)) => return Err(format!("send{what} to {target}: {e}")),
                    Err(_) => d.timed_out(),
                }
            }
            Next::Read => match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                Ok(Ok(0)) => d.closed(),
                Ok(Ok(n)) => d.feed(&chunk[..n]),
                // A TLS peer closing without close_notify: closed all the same.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => d.closed(),
                Ok(Err(e)) => {
                    return Err(format!("read from {target}{}: {e}", d.step_label()));
                }
                Err(_) => d.timed_out(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn matcher_basics() {
        let mut m = BannerMatch::new("220", 100);
        assert!(!m.feed(b"2"));
        assert!(!m.feed(b"2"));
        assert!(m.feed(b"0 mail.example ESMTP\r\n"));
        assert!(m.found());
        let mut m = BannerMatch::new("+OK", 8);
        assert!(m.feed(b"-ERR go away\r\n"));
        assert!(!m.found());
        assert_eq!(m.received(), b"-ERR go ");
        assert!(BannerMatch::new("", 8).found());
        let mut m = BannerMatch::any(&["331", "230"], 100);
        assert!(!m.feed(b"530 no\r\n2"));
        assert!(m.feed(b"30 in\r\n"));
        assert!(BannerMatch::any::<&str>(&[], 8).found());
        assert_eq!(default_expect("imap"), Some("* OK"));
        assert_eq!(default_expect("ldap"), None);
        assert_eq!(excerpt("a\r\n"), "a\\r\\n");
    }

    fn pop_steps() -> Vec<BannerStep> {
        vec![
            BannerStep::new("USER alice\r\n", &["+OK"]),
            BannerStep::new("PASS hunter2\r\n", &["+OK"]).with_secret("hunter2"),
            BannerStep::new("QUIT\r\n", &[]),
        ]
    }

    #[test]
    fn login_dialogue_in_order_and_password_masked() {
        let steps = pop_steps();
        let mut d = Dialogue::new(None, "+OK", &steps, 100);
        assert_eq!(d.next_action(), Next::Read);
        // The rest of a read that completes a step is not carried over to the next one.
        d.feed(b"+OK ready\r\n+OK");
        assert_eq!(d.next_action(), Next::Send(b"USER alice\r\n"));
        assert_eq!(d.next_action(), Next::Read);
        d.feed(b"+OK send the password\r\n");
        assert_eq!(d.next_action(), Next::Send(b"PASS hunter2\r\n"));
        assert_eq!(d.next_action(), Next::Read);
        d.feed(b"-ERR [AUTH] bad password hunter2\r\n");
        d.closed();
        assert_eq!(d.next_action(), Next::Down(StepFailure::Closed));
        assert_eq!(d.step(), 2);
        let target: SocketAddr = "192.0.2.1:110".parse().unwrap();
        let why = d.describe(target, StepFailure::Closed, Duration::from_secs(1));
        assert_eq!(
            why,
            "192.0.2.1:110 step 2 (PASS ***): closed the connection after 34 bytes without \
             \"+OK\": got \"-ERR [AUTH] bad password ***\\r\\n\""
        );
        let dbg = format!("{steps:?}");
        assert!(
            !dbg.contains("hunter2") && dbg.contains("PASS ***"),
            "{dbg}"
        );

        // Accepted: the QUIT goes out without waiting for its answer.
        let mut d = Dialogue::new(None, "+OK", &steps, 100);
        for (reply, next) in [
            (&b"+OK hi\r\n"[..], &b"USER alice\r\n"[..]),
            (b"+OK\r\n", b"PASS hunter2\r\n"),
            (b"+OK 2 messages\r\n", b"QUIT\r\n"),
        ] {
            assert_eq!(d.next_action(), Next::Read);
            d.feed(reply);
            assert_eq!(d.next_action(), Next::Send(next));
        }
        assert!(d.farewell());
        assert_eq!(d.next_action(), Next::Up);
    }

    #[test]
    fn timeout_and_overflow_name_the_step() {
        let steps = [BannerStep::new("a1 LOGIN \"u\" \"p\"\r\n", &["a1 OK"]).with_secret("p")];
        let mut d = Dialogue::new(Some("x\r\n"), "* OK", &steps, 4);
        assert_eq!(d.next_action(), Next::Send(b"x\r\n"));
        assert_eq!(d.next_action(), Next::Read);
        d.feed(b"* OK");
        assert!(matches!(d.next_action(), Next::Send(_)));
        d.timed_out();
        assert_eq!(d.next_action(), Next::Down(StepFailure::Timeout));
        let r = d.describe(
            "[::1]:143".parse().unwrap(),
            StepFailure::Timeout,
            Duration::from_millis(250),
        );
        assert!(
            r.starts_with(
                "[::1]:143 step 1 (a1 LOGIN \\\"u\\\" \\\"***\\\"): no answer within 250 ms"
            ),
            "{r}"
        );
        let mut d = Dialogue::new(None, "* OK", &steps, 4);
        assert_eq!(d.next_action(), Next::Read);
        d.feed(b"* NO go away");
        assert_eq!(d.next_action(), Next::Down(StepFailure::TooMuch));
        assert_eq!(d.received(), b"* NO");
    }

    /// The verdict of a dialogue whose server answers step `i` with `replies[i]` and then
    /// closes: the first step whose (limited) reply lacks every expected text, or up.
    fn model(
        greeting: &str,
        steps: &[BannerStep],
        replies: &[Vec<u8>],
        limit: usize,
    ) -> (Next<'static>, usize) {
        for (i, reply) in replies.iter().enumerate() {
            let expect: Vec<&str> = match i {
                0 => vec![greeting],
                i => steps[i - 1].expect.iter().map(String::as_str).collect(),
            };
            let seen = &reply[..reply.len().min(limit)];
            let found = expect.is_empty()
                || expect
                    .iter()
                    .any(|e| e.is_empty() || seen.windows(e.len()).any(|w| w == e.as_bytes()));
            if !found {
                let why = if reply.len() >= limit {
                    StepFailure::TooMuch
                } else {
                    StepFailure::Closed
                };
                return (Next::Down(why), i);
            }
        }
        (Next::Up, steps.len())
    }

    proptest! {
        /// Any split of the stream into reads gives the answer of a search over the whole
        /// (limited) stream.
        #[test]
        fn chunking_does_not_matter(
            data in proptest::collection::vec(prop_oneof![Just(b'2'), Just(b'0'), any::<u8>()], 0..200),
            expect in "[20]{1,4}",
            cuts in proptest::collection::vec(0usize..200, 0..10),
            limit in 1usize..150,
        ) {
            let mut m = BannerMatch::new(&expect, limit);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut prev = 0;
            for c in cuts.into_iter().chain(std::iter::once(data.len())) {
                if m.done() { break; }
                m.feed(&data[prev..c]);
                prev = c;
            }
            let seen = &data[..data.len().min(limit)];
            let expected = seen.windows(expect.len()).any(|w| w == expect.as_bytes());
            prop_assert_eq!(m.found(), expected);
            prop_assert_eq!(m.received().len() <= limit, true);
        }

        /// A whole dialogue: any split of each step's reply into reads gives the model's
        /// verdict at the model's step, after sending exactly the lines up to that step.
        #[test]
        fn dialogue_chunking_does_not_matter(
            greeting in "[+OK]{1,3}",
            step_expects in proptest::collection::vec(
                proptest::collection::vec("[+OK]{1,3}", 0..3), 0..4),
            replies in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(b'+'), Just(b'O'), Just(b'K'), any::<u8>()], 0..40),
                5),
            cuts in proptest::collection::vec(proptest::collection::vec(0usize..40, 0..6), 5),
            limit in 1usize..50,
        ) {
            let steps: Vec<BannerStep> = step_expects
                .iter()
                .enumerate()
                .map(|(i, e)| BannerStep {
                    send: format!("S{i}\r\n"),
                    expect: e.clone(),
                    secret: None,
                })
                .collect();
            let replies = &replies[..=steps.len()];
            let (want, want_step) = model(&greeting, &steps, replies, limit);
            let mut d = Dialogue::new(None, &greeting, &steps, limit);
            let mut sent = Vec::new();
            let mut queue: VecDeque<Vec<u8>> = VecDeque::new();
            let mut delivering = usize::MAX;
            let verdict = loop {
                match d.next_action() {
                    Next::Send(b) => sent.push(String::from_utf8_lossy(b).into_owned()),
                    Next::Read => {
                        if d.step() != delivering {
                            // The server answers the step just sent; what is left of the
                            // previous answer was never read.
                            delivering = d.step();
                            let r = &replies[delivering];
                            let mut c: Vec<usize> =
                                cuts[delivering].iter().map(|&c| c.min(r.len())).collect();
                            c.sort_unstable();
                            let mut prev = 0;
                            queue = c
                                .into_iter()
                                .chain(std::iter::once(r.len()))
                                .map(|c| { let part = r[prev..c].to_vec(); prev = c; part })
                                .collect();
                        }
                        match queue.pop_front() {
                            Some(part) => d.feed(&part),
                            None => d.closed(),
                        }
                    }
                    other => break other,
                }
            };
            prop_assert_eq!(verdict, want);
            prop_assert_eq!(d.step(), want_step);
            let want_sent: Vec<String> = steps[..want_step].iter().map(|s| s.send.clone()).collect();
            prop_assert_eq!(sent, want_sent);
        }
    }
}
