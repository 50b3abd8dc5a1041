//! The MySQL / MariaDB check ([`super::CheckKind::Mysql`], ldirectord `service = mysql`):
//! log in as a check user, optionally run a query that must return a row, and say goodbye
//! with `COM_QUIT`.
//!
//! Why a login and not a TCP connect: a server counts every connection that ends before the
//! handshake is done, and after `max_connect_errors` of them (100 by default) it blocks the
//! client's host. A connect check, or reading the greeting and hanging up, gets the director
//! itself blocked. A completed login resets the count.
//!
//! The protocol part is sans-IO ([`decode_greeting`], [`handshake_response`], [`decode_reply`],
//! [`native_password`], [`caching_sha2_fast`]); [`check`] drives it over TCP. Authentication:
//! `mysql_native_password` (MariaDB's and MySQL 5.7's default) and the fast path of
//! `caching_sha2_password` (MySQL 8's default, once the user has logged in since the server
//! started); its full authentication needs TLS or the server's RSA key, which this check
//! does not do: it reports that, naming the fix.

use std::net::SocketAddr;

use sha1::{Digest, Sha1};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ProbeOutcome;

/// What the check logs in as and asks.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MysqlCheck {
    /// User (ldirectord `login`).
    pub user: String,
    /// Password (ldirectord `passwd`); empty for none.
    pub password: String,
    /// Database to select (ldirectord `database`).
    pub database: Option<String>,
    /// Query that must return at least one row (ldirectord `request`); `None`: the login
    /// alone.
    pub query: Option<String>,
}

impl std::fmt::Debug for MysqlCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlCheck")
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("database", &self.database)
            .field("query", &self.query)
            .finish()
    }
}

/// A server message that is not what the protocol allows here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed MySQL message: {}", self.0)
    }
}

/// The parts of the server's initial handshake (protocol 10) the login needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Server version text.
    pub version: String,
    /// Capability flags.
    pub capabilities: u32,
    /// The 20-byte scramble (both parts, without the trailing NUL).
    pub scramble: Vec<u8>,
    /// The server's default authentication plugin.
    pub plugin: String,
}

/// Capability flags we use.
pub mod caps {
    /// Longer passwords (always set by clients).
    pub const LONG_PASSWORD: u32 = 1;
    /// A database name follows in the handshake response.
    pub const CONNECT_WITH_DB: u32 = 8;
    /// The 4.1 protocol.
    pub const PROTOCOL_41: u32 = 0x200;
    /// Length-prefixed authentication response.
    pub const SECURE_CONNECTION: u32 = 0x8000;
    /// Authentication plugins.
    pub const PLUGIN_AUTH: u32 = 0x8_0000;
}

/// Largest packet read: a greeting, an OK or a row of a health query are far smaller.
pub const MAX_PACKET: usize = 1 << 20;

fn nul_string<'a>(b: &'a [u8], what: &'static str) -> Result<(String, &'a [u8]), Malformed> {
    let end = b.iter().position(|&c| c == 0).ok_or(Malformed(what))?;
    Ok((
        String::from_utf8_lossy(&b[..end]).into_owned(),
        &b[end + 1..],
    ))
}

/// Decode the server's first packet: a greeting, or the error it sends instead (too many
/// connections, host blocked, host not allowed), returned as `Err(Ok((code, message)))`.
pub fn decode_greeting(p: &[u8]) -> Result<Greeting, Result<(u16, String), Malformed>> {
    if p.first() == Some(&0xff) {
        return Err(decode_err(p));
    }
    let bad = |w| Err(Err(Malformed(w)));
    match p.first() {
        Some(10) => {}
        Some(_) => return bad("not a protocol 10 greeting"),
        None => return bad("empty greeting"),
    }
    let (version, rest) = nul_string(&p[1..], "server version").map_err(Err)?;
    // Thread id (4), scramble part 1 (8), filler (1), capabilities low (2).
    if rest.len() < 15 {
        return bad("greeting too short");
    }
    let mut scramble = rest[4..12].to_vec();
    let mut capabilities = u32::from(u16::from_le_bytes([rest[13], rest[14]]));
    let rest = &rest[15..];
    let mut plugin = "mysql_native_password".to_string();
    // Charset (1), status (2), capabilities high (2), scramble length (1), reserved (10).
    if rest.len() >= 16 {
        capabilities |= u32::from(u16::from_le_bytes([rest[3], rest[4]])) << 16;
        let len = usize::from(rest[5]);
        let rest = &rest[16..];
        if capabilities & caps::SECURE_CONNECTION != 0 {
            let n = len.saturating_sub(8).max(13).min(rest.len());
            let part2 = &rest[..n];
            // The second part ends with a NUL that is not part of the scramble.
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            scramble.extend_from_slice(part2);
            if capabilities & caps::PLUGIN_AUTH != 0 {
                let tail = &rest[n..];
                let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
                plugin = String::from_utf8_lossy(&tail[..end]).into_owned();
            }
        }
    }
    Ok(Greeting {
        version,
        capabilities,
        scramble,
        plugin,
    })
}

/// `mysql_native_password`: SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))); an
/// empty password answers with nothing.
pub fn native_password(scramble: &[u8], password: &str) -> Vec<u8> {
    proof::<Sha1>(password, scramble, true)
}

/// `caching_sha2_password`, fast path: SHA256(password) XOR SHA256(SHA256(SHA256(password))
/// + scramble); an empty password answers with nothing.
pub fn caching_sha2_fast(scramble: &[u8], password: &str) -> Vec<u8> {
    proof::<Sha256>(password, scramble, false)
}

/// H(password) XOR H(scramble + H(H(password))), or with the scramble last: the two
/// plugins differ only in the hash and that order.
fn proof<H: Digest>(password: &str, scramble: &[u8], scramble_first: bool) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = H::digest(password.as_bytes());
    let h2 = H::digest(&h1);
    let mut h = H::new();
    if scramble_first {
        h.update(scramble);
        h.update(&h2);
    } else {
        h.update(&h2);
        h.update(scramble);
    }
    let h3 = h.finalize();
    h1.iter().zip(h3.iter()).map(|(a, b)| a ^ b).collect()
}

/// The answer to `plugin`'s challenge `scramble`, or `None` for a plugin we do not speak.
fn auth_response(plugin: &str, scramble: &[u8], password: &str) -> Option<Vec<u8>> {
    match plugin {
        "mysql_native_password" => Some(native_password(scramble, password)),
        "caching_sha2_password" => Some(caching_sha2_fast(scramble, password)),
        _ => None,
    }
}

/// The client's handshake response (protocol 4.1) to `g`, logging in as `c`. Answers the
/// server's default plugin when we speak it, else `mysql_native_password` (the server then
/// switches to the user's plugin).
pub fn handshake_response(g: &Greeting, c: &MysqlCheck) -> Vec<u8> {
    let (plugin, auth) = match auth_response(&g.plugin, &g.scramble, &c.password) {
        Some(a) => (g.plugin.as_str(), a),
        None => (
            "mysql_native_password",
            native_password(&g.scramble, &c.password),
        ),
    };
    let mut flags =
        caps::LONG_PASSWORD | caps::PROTOCOL_41 | caps::SECURE_CONNECTION | caps::PLUGIN_AUTH;
    if c.database.is_some() {
        flags |= caps::CONNECT_WITH_DB;
    }
    let mut p = Vec::with_capacity(64 + c.user.len());
    p.extend_from_slice(&flags.to_le_bytes());
    p.extend_from_slice(&(MAX_PACKET as u32).to_le_bytes());
    p.push(33); // utf8_general_ci
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(c.user.as_bytes());
    p.push(0);
    p.push(auth.len() as u8); // at most 32 bytes
    p.extend_from_slice(&auth);
    if let Some(db) = &c.database {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    p
}

/// A server reply during login or to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// OK.
    Ok,
    /// ERR with its code and message.
    Err {
        /// Server error code (1045 access denied, 1040 too many connections, ...).
        code: u16,
        /// Message text.
        message: String,
    },
    /// Switch to another authentication plugin with a new scramble.
    AuthSwitch {
        /// Plugin name.
        plugin: String,
        /// Its challenge data (trailing NUL removed).
        data: Vec<u8>,
    },
    /// More authentication data (caching_sha2_password: 3 = fast auth done, 4 = full
    /// authentication needed).
    AuthMore(Vec<u8>),
    /// A result set of this many columns.
    Columns(u64),
    /// An EOF packet (end of column definitions or of rows).
    Eof,
    /// A row of a result set.
    Row,
}

/// A length-encoded integer at the start of `b`.
fn lenenc(b: &[u8]) -> Option<u64> {
    let le = |n: usize| {
        b.get(1..=n).map(|s| {
            let mut v = [0u8; 8];
            v[..n].copy_from_slice(s);
            u64::from_le_bytes(v)
        })
    };
    match *b.first()? {
        x @ 0..=0xfa => Some(u64::from(x)),
        0xfc => le(2),
        0xfd => le(3),
        0xfe => le(8),
        _ => None,
    }
}

/// Classify a reply during login (OK, ERR, plugin switch, more auth data).
pub fn decode_reply(p: &[u8]) -> Result<Reply, Malformed> {
    match p.first() {
        Some(0xfe) if p.len() >= 9 => {
            let (plugin, rest) = nul_string(&p[1..], "auth switch plugin")?;
            let data = rest.strip_suffix(&[0]).unwrap_or(rest).to_vec();
            Ok(Reply::AuthSwitch { plugin, data })
        }
        Some(0x01) => Ok(Reply::AuthMore(p[1..].to_vec())),
        _ => match decode_response(p, false)? {
            r @ (Reply::Ok | Reply::Err { .. }) => Ok(r),
            // A short 0xfe is an old-style switch to mysql_old_password: not spoken.
            Reply::Eof => Ok(Reply::AuthSwitch {
                plugin: "mysql_old_password".into(),
                data: Vec::new(),
            }),
            _ => Err(Malformed("unexpected packet during login")),
        },
    }
}

/// Classify a reply to a command: the first one (`in_rows` false: OK, ERR or a column count)
/// or one inside the rows of a result set (`in_rows` true: EOF, ERR or a row).
pub fn decode_response(p: &[u8], in_rows: bool) -> Result<Reply, Malformed> {
    match p.first() {
        None => Err(Malformed("empty packet")),
        Some(0xff) => decode_err(p).map(|(code, message)| Reply::Err { code, message }),
        // A row's first value can't start with 0xfe and be this short (8-byte length).
        Some(0xfe) if p.len() < 9 => Ok(Reply::Eof),
        _ if in_rows => Ok(Reply::Row),
        Some(0x00) if p.len() >= 7 => Ok(Reply::Ok),
        _ => match lenenc(p) {
            Some(n) if n > 0 => Ok(Reply::Columns(n)),
            _ => Err(Malformed("neither OK, ERR nor a column count")),
        },
    }
}

/// The code and message of an ERR packet.
fn decode_err(p: &[u8]) -> Result<(u16, String), Malformed> {
    let code = p
        .get(1..3)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .ok_or(Malformed("short error packet"))?;
    let mut msg = &p[3..];
    // Protocol 4.1: '#' and a five-character SQL state.
    if msg.first() == Some(&b'#') && msg.len() >= 6 {
        msg = &msg[6..];
    }
    Ok((code, String::from_utf8_lossy(msg).into_owned()))
}

/// One packet's framing: 3-byte little-endian length, sequence number.
pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

struct Conn {
    s: TcpStream,
    target: SocketAddr,
    seq: u8,
}

impl Conn {
    async fn read(&mut self) -> Result<Vec<u8>, String> {
        let mut h = [0u8; 4];
        self.s
            .read_exact(&mut h)
            .await
            .map_err(|e| format!("read from MySQL server {}: {e}", self.target))?;
        let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
        if len > MAX_PACKET {
            return Err(format!(
                "MySQL server {} sent a packet of {len} bytes",
                self.target
            ));
        }
        self.seq = h[3].wrapping_add(1);
        let mut p = vec![0u8; len];
        self.s
            .read_exact(&mut p)
            .await
            .map_err(|e| format!("read from MySQL server {}: {e}", self.target))?;
        Ok(p)
    }

    async fn write(&mut self, payload: &[u8]) -> Result<(), String> {
        let f = frame(self.seq, payload);
        self.seq = self.seq.wrapping_add(1);
        self.s
            .write_all(&f)
            .await
            .map_err(|e| format!("send to MySQL server {}: {e}", self.target))
    }

    /// Start a command: sequence numbers restart at 0.
    async fn command(&mut self, payload: &[u8]) -> Result<(), String> {
        self.seq = 0;
        self.write(payload).await
    }

    async fn reply(&mut self) -> Result<Reply, String> {
        let p = self.read().await?;
        decode_reply(&p).map_err(|e| format!("MySQL server {}: {e}", self.target))
    }

    async fn response(&mut self, in_rows: bool) -> Result<Reply, String> {
        let p = self.read().await?;
        decode_response(&p, in_rows).map_err(|e| format!("MySQL server {}: {e}", self.target))
    }
}

fn refused(target: SocketAddr, what: &str, code: u16, message: &str) -> String {
    format!("MySQL server {target} {what}: error {code}: {message}")
}

/// Run the check against `target`. The caller bounds it with the check's timeout.
pub async fn check(target: SocketAddr, c: &MysqlCheck) -> Result<ProbeOutcome, String> {
    let s = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))?;
    let _ = s.set_nodelay(true);
    let mut conn = Conn { s, target, seq: 0 };
    let first = conn.read().await?;
    let greeting = match decode_greeting(&first) {
        Ok(g) => g,
        Err(Ok((code, msg))) => return Err(refused(target, "refused the connection", code, &msg)),
        Err(Err(e)) => return Err(format!("MySQL server {target}: {e}")),
    };
    if greeting.capabilities & caps::PROTOCOL_41 == 0 {
        return Err(format!(
            "MySQL server {target} ({}) does not speak protocol 4.1",
            greeting.version
        ));
    }
    conn.write(&handshake_response(&greeting, c)).await?;
    login(&mut conn, c).await?;
    let outcome = match &c.query {
        Some(q) => query(&mut conn, q).await,
        None => Ok(ProbeOutcome::Up),
    };
    // Say goodbye so the server logs no aborted connection; then close.
    if conn.command(&[0x01]).await.is_ok() {
        let _ = conn.s.shutdown().await;
    }
    outcome
}

/// Follow the server through authentication until OK.
async fn login(conn: &mut Conn, c: &MysqlCheck) -> Result<(), String> {
    let target = conn.target;
    // A server switches plugins at most once; a few rounds cover fast auth too.
    for _ in 0..4 {
        match conn.reply().await? {
            Reply::Ok => return Ok(()),
            Reply::Err { code, message } => {
                return Err(refused(
                    target,
                    &format!("refused login as {:?}", c.user),
                    code,
                    &message,
                ));
            }
            Reply::AuthSwitch { plugin, data } => {
                let Some(auth) = auth_response(&plugin, &data, &c.password) else {
                    return Err(format!(
                        "MySQL server {target} wants authentication plugin {plugin}, which the check does not speak (use mysql_native_password for the check user)"
                    ));
                };
                conn.write(&auth).await?;
            }
            // caching_sha2_password: 3 = the fast path succeeded, an OK follows.
            Reply::AuthMore(d) if d.first() == Some(&3) => {}
            Reply::AuthMore(d) if d.first() == Some(&4) => {
                return Err(format!(
                    "MySQL server {target} needs caching_sha2_password full authentication for {:?} (TLS or RSA), which the check does not do: log the user in once with a client, or use mysql_native_password",
                    c.user
                ));
            }
            other => {
                return Err(format!(
                    "MySQL server {target}: unexpected {other:?} during login"
                ));
            }
        }
    }
    Err(format!("MySQL server {target}: login did not finish"))
}

/// Run `q`: up when it returns at least one row (or is a statement without a result set).
async fn query(conn: &mut Conn, q: &str) -> Result<ProbeOutcome, String> {
    let target = conn.target;
    let failed =
        |code, message: &str| refused(target, &format!("failed query {q:?}"), code, message);
    let mut cmd = vec![0x03];
    cmd.extend_from_slice(q.as_bytes());
    conn.command(&cmd).await?;
    let columns = match conn.response(false).await? {
        Reply::Ok => return Ok(ProbeOutcome::Up),
        Reply::Err { code, message } => return Err(failed(code, &message)),
        Reply::Columns(n) => n,
        other => {
            return Err(format!(
                "MySQL server {target}: unexpected {other:?} after query"
            ));
        }
    };
    // Column definitions, then EOF.
    for _ in 0..columns {
        conn.read().await?;
    }
    if conn.response(true).await? != Reply::Eof {
        return Err(format!(
            "MySQL server {target}: no EOF after the column definitions"
        ));
    }
    let mut rows = 0u64;
    loop {
        match conn.response(true).await? {
            Reply::Eof => break,
            Reply::Err { code, message } => return Err(failed(code, &message)),
            _ => rows += 1,
        }
    }
    if rows == 0 {
        return Err(format!(
            "query {q:?} on MySQL server {target} returned no rows"
        ));
    }
    Ok(ProbeOutcome::Up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A MySQL 8 style greeting with `scramble` and `plugin`.
    pub fn greeting(scramble: &[u8; 20], plugin: &str) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"8.0.36\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(&scramble[..8]);
        p.push(0);
        let capabilities: u32 = 0xffff_f7ff;
        p.extend_from_slice(&(capabilities as u16).to_le_bytes());
        p.push(255);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((capabilities >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(&scramble[8..]);
        p.push(0);
        p.extend_from_slice(plugin.as_bytes());
        p.push(0);
        p
    }

    #[test]
    fn greetings_errors_and_replies_decode() {
        let s: [u8; 20] = std::array::from_fn(|i| i as u8 + 1);
        let g = decode_greeting(&greeting(&s, "caching_sha2_password")).unwrap();
        assert_eq!(g.version, "8.0.36");
        assert_eq!(g.scramble, s.to_vec());
        assert_eq!(g.plugin, "caching_sha2_password");
        assert!(g.capabilities & caps::PROTOCOL_41 != 0);
        // The error a busy server sends instead of a greeting.
        let mut e = vec![0xff];
        e.extend_from_slice(&1040u16.to_le_bytes());
        e.extend_from_slice(b"Too many connections");
        assert_eq!(
            decode_greeting(&e),
            Err(Ok((1040, "Too many connections".into())))
        );
        let mut e41 = vec![0xff];
        e41.extend_from_slice(&1045u16.to_le_bytes());
        e41.extend_from_slice(b"#28000Access denied");
        assert_eq!(
            decode_reply(&e41),
            Ok(Reply::Err {
                code: 1045,
                message: "Access denied".into()
            })
        );
        assert_eq!(decode_reply(&[0, 0, 0, 2, 0, 0, 0]), Ok(Reply::Ok));
        assert_eq!(
            decode_response(&[0, 0, 0, 2, 0, 0, 0], false),
            Ok(Reply::Ok)
        );
        assert_eq!(decode_response(&[0xfe, 0, 0, 2, 0], true), Ok(Reply::Eof));
        // One column; a row whose only value is "1" (which would read as auth data).
        assert_eq!(decode_response(&[1], false), Ok(Reply::Columns(1)));
        assert_eq!(decode_response(&[1, b'1'], true), Ok(Reply::Row));
        // A row whose first value is empty is not an OK.
        assert_eq!(
            decode_response(&[0, 1, b'x', 0, 0, 0, 0], true),
            Ok(Reply::Row)
        );
        assert_eq!(
            decode_reply(b"\xfemysql_native_password\0abc\0"),
            Ok(Reply::AuthSwitch {
                plugin: "mysql_native_password".into(),
                data: b"abc".to_vec()
            })
        );
        assert_eq!(decode_reply(&[1, 3]), Ok(Reply::AuthMore(vec![3])));
        assert!(decode_greeting(&[9, b'x', 0]).is_err());
        assert!(decode_greeting(&[]).is_err());
    }

    #[test]
    fn handshake_response_carries_user_auth_db_and_plugin() {
        let s = [7u8; 20];
        let g = decode_greeting(&greeting(&s, "mysql_native_password")).unwrap();
        let c = MysqlCheck {
            user: "lvs".into(),
            password: "pw".into(),
            database: Some("health".into()),
            query: None,
        };
        let p = handshake_response(&g, &c);
        let flags = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
        assert!(flags & caps::CONNECT_WITH_DB != 0 && flags & caps::PLUGIN_AUTH != 0);
        let rest = &p[32..];
        assert_eq!(&rest[..4], b"lvs\0");
        assert_eq!(rest[4], 20);
        assert_eq!(&rest[5..25], native_password(&s, "pw").as_slice());
        assert_eq!(&rest[25..], b"health\0mysql_native_password\0");
        // An empty password sends no auth data; an unknown plugin gets native_password.
        let g = decode_greeting(&greeting(&s, "auth_gssapi_client")).unwrap();
        let p = handshake_response(
            &g,
            &MysqlCheck {
                password: String::new(),
                database: None,
                ..c
            },
        );
        assert_eq!(&p[32..], b"lvs\0\0mysql_native_password\0");
        assert!(
            format!(
                "{:?}",
                MysqlCheck {
                    user: "u".into(),
                    password: "secret".into(),
                    database: None,
                    query: None
                }
            )
            .contains("***")
        );
    }

    proptest! {
        #[test]
        fn greeting_round_trips(s in proptest::array::uniform20(1u8..=255), plugin in "[a-z_]{1,24}") {
            let g = decode_greeting(&greeting(&s, &plugin)).unwrap();
            prop_assert_eq!(g.scramble, s.to_vec());
            prop_assert_eq!(g.plugin, plugin);
        }

        #[test]
        fn decoders_never_panic(p in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_greeting(&p);
            let _ = decode_reply(&p);
            let _ = decode_response(&p, false);
            let _ = decode_response(&p, true);
        }

        #[test]
        fn frames_round_trip(seq in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let f = frame(seq, &payload);
            prop_assert_eq!(u32::from_le_bytes([f[0], f[1], f[2], 0]) as usize, payload.len());
            prop_assert_eq!(f[3], seq);
            prop_assert_eq!(&f[4..], payload.as_slice());
        }
    }
}
