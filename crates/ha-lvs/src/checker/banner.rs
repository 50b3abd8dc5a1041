//! Banner / line-protocol check (ldirectord `simpletcp`, and its negotiate checks of smtp, ftp,
//! pop, imap and nntp reduced to their greeting; pops and imaps the same over TLS).
//!
//! Connect, optionally send a request, then read until the expected text appears, the peer
//! closes, [`BANNER_READ_LIMIT`] bytes have arrived, or the check's timeout expires. The
//! socket is closed with an RST like the connect check, so nothing lingers in TIME_WAIT (the
//! server may log an aborted session, as it does for ldirectord's checks).
//!
//! The matching is a sans-IO accumulator ([`BannerMatch`]) so it can be tested against any
//! split of the stream into reads.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ProbeOutcome, TlsCheck};

/// Most bytes read while waiting for the expected text.
pub const BANNER_READ_LIMIT: usize = 16 * 1024;

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

/// Accumulates received bytes until `expect` appears or the limit is reached.
#[derive(Debug, Clone)]
pub struct BannerMatch {
    expect: Vec<u8>,
    buf: Vec<u8>,
    limit: usize,
    found: bool,
}

impl BannerMatch {
    /// A matcher for `expect` reading at most `limit` bytes.
    pub fn new(expect: &str, limit: usize) -> Self {
        BannerMatch {
            expect: expect.as_bytes().to_vec(),
            buf: Vec::new(),
            limit,
            found: expect.is_empty(),
        }
    }

    /// Add received bytes (beyond the limit they are dropped). Returns true when reading can
    /// stop: the text was found or the limit is reached.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        if !self.found {
            let room = self.limit.saturating_sub(self.buf.len());
            // Only the tail that could still complete a match needs rescanning.
            let from = self
                .buf
                .len()
                .saturating_sub(self.expect.len().saturating_sub(1));
            self.buf.extend_from_slice(&data[..data.len().min(room)]);
            self.found = self.buf[from..]
                .windows(self.expect.len())
                .any(|w| w == self.expect.as_slice());
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

/// The start of `data` as printable text for an error message.
fn excerpt(data: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(&data[..data.len().min(MAX)]);
    let mut s: String = text.escape_debug().collect();
    if data.len() > MAX {
        s.push_str("...");
    }
    s
}

/// Run the banner check against `target` (the caller bounds it with the check's timeout),
/// over TLS when `tls` is set (handshake first, SNI only from [`TlsCheck::server_name`]).
pub async fn banner(
    target: SocketAddr,
    send: Option<&str>,
    expect: &str,
    tls: Option<&TlsCheck>,
) -> Result<ProbeOutcome, String> {
    let s = super::probe::connect(target).await?;
    // RST on close (SO_LINGER 0), like the connect check: no FIN handshake, no TIME_WAIT.
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .map_err(|e| format!("connect {target}: set SO_LINGER: {e}"))?;
    match tls {
        None => exchange(target, s, send, expect).await,
        Some(t) => {
            let s = super::tls::handshake(s, target, t, None).await?;
            exchange(target, s, send, expect).await
        }
    }
}

/// Send the request, read until the expected text (plain TCP or TLS).
async fn exchange<S>(
    target: SocketAddr,
    mut s: S,
    send: Option<&str>,
    expect: &str,
) -> Result<ProbeOutcome, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(req) = send {
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send request to {target}: {e}"))?;
        // TLS buffers writes until flushed.
        s.flush()
            .await
            .map_err(|e| format!("send request to {target}: {e}"))?;
    }
    let mut m = BannerMatch::new(expect, BANNER_READ_LIMIT);
    let mut chunk = [0u8; 4096];
    let mut closed = false;
    while !m.done() {
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer closing without close_notify: closed all the same.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(format!("read from {target}: {e}")),
        };
        if n == 0 {
            closed = true;
            break;
        }
        m.feed(&chunk[..n]);
    }
    if m.found() {
        return Ok(ProbeOutcome::Up);
    }
    let how = if closed {
        "closed the connection"
    } else {
        "sent too much"
    };
    Err(format!(
        "{target} {how} after {} bytes without {expect:?}: got \"{}\"",
        m.received().len(),
        excerpt(m.received())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert_eq!(default_expect("imap"), Some("* OK"));
        assert_eq!(default_expect("ldap"), None);
        assert_eq!(excerpt(b"a\r\n"), "a\\r\\n");
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
    }
}
