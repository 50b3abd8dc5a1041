//! Import of keepalived.conf `virtual_server` blocks into a [`MonitorConfig`].
//!
//! keepalived users can point our checker at their existing configuration. Only the LVS part
//! is imported (`virtual_server`, `virtual_server_group` and the checkers' global `SSL`
//! block): `global_defs`, `vrrp_instance`, `vrrp_script`, `static_ipaddress` and every other
//! top-level block are skipped whole (a debug log, not an error).
//!
//! Syntax (keepalived's `lib/parser.c`): words separated by blanks; `{` and `}` outside
//! double quotes are tokens of their own, on the keyword's line or the next one; comments
//! start at an unquoted `#` or `!` anywhere (`\#`, `\!` escape them); double quotes group
//! words. Conditional lines `@ID ...` are dropped and `@^ID ...` kept (keepalived without a
//! matching config id). `include PATTERN` needs a resolver: [`parse_keepalived`] rejects it
//! with `file:line`, [`parse_keepalived_file`] reads from disk (relative to the including
//! file, `*` and `?` wildcards in the file name), [`parse_keepalived_with`] takes a caller's
//! resolver. `$NAME=` parameter definitions and `~SEQ` are rejected with `file:line`.
//!
//! Supported in `virtual_server IP PORT | fwmark N | group NAME` (with
//! `virtual_server_group` blocks of `IP PORT`, `IP-LAST PORT` ranges and `fwmark N`):
//! `delay_loop` (check interval, default 60 s), `lb_algo`/`lvs_sched` (default `wlc`),
//! scheduler flag keywords (`sh-port`, `flag-1`, ...), `lb_kind`/`lvs_method` NAT, DR or
//! TUN (default NAT; per real server too), `protocol` TCP, UDP, SCTP (default TCP),
//! `persistence_timeout [N]` (default 360 s when given without a value),
//! `persistence_granularity` (alone it implies the 360 s timeout), `persistence_engine`,
//! `weight` (default weight of the real servers), `ops`, `sorry_server IP [PORT]` with
//! `sorry_server_lvs_method`, `inhibit_on_failure` (quiesce to weight 0; keepalived's
//! default is REMOVAL, unlike ldirectord's quiescent), `alpha` (probes start down),
//! `virtualhost`, and the inherited checker settings `retry`, `delay_before_retry`,
//! `connect_timeout`. `real_server IP PORT`: `weight` (default 1), `inhibit_on_failure`,
//! `uthreshold`, `lthreshold`, `lvs_method`, the inherited settings, and checkers.
//!
//! Checkers (timeout `connect_timeout`, default 5 s; `fall` = `retry` + 1, `retry`
//! defaulting to 1, 0 for MISC_CHECK,
//! 3 for DNS_CHECK; keepalived runs the retries `delay_before_retry` apart, we run them at
//! the check interval):
//! - `TCP_CHECK` → [`CheckKind::Connect`].
//! - `HTTP_GET` / `SSL_GET` → [`CheckKind::Http`] (SSL: unverified TLS, see `SSL` below) with
//!   the first `url`
//!   block's `path`, `status_code` (codes and ranges, e.g. `200-299 301`; default any 2xx,
//!   as keepalived), `virtualhost`, `digest` (MD5 of the whole body, as `genhash` prints it),
//!   `regex` (a regular expression, [`BodyMatch::regex`]; one that does not compile is an
//!   error).
//! - `MISC_CHECK` → [`CheckKind::Command`] (`misc_path` split like a shell word list,
//!   `misc_timeout` default `delay_loop`, `misc_dynamic`). Our command check appends the
//!   real server's host and port as two extra arguments (warning).
//! - `PING_CHECK` → [`CheckKind::Ping`]; `SMTP_CHECK` → [`CheckKind::Banner`] expecting the
//!   `220` greeting (no HELO exchange; default port 25); `DNS_CHECK` → [`CheckKind::Dns`]
//!   (`type` default SOA, `name` default `.`).
//! - `UDP_CHECK` → [`CheckKind::Udp`] with `payload HEX`, `require_reply [HEX]` (`x`
//!   nibbles are wildcards), `min_reply_length` (default 0) and `max_reply_length` (default
//!   255); a bad hex string or a minimum above the maximum is an error naming `file:line`.
//!   Without `payload` we send an empty datagram (keepalived: filler bytes).
//! - `BFD_CHECK`, `FILE_CHECK` are ignored with a warning.
//!
//! A real server carries one check here; keepalived requires all of its checkers to pass, so
//! with several only the first supported one is kept (warning). `connect_ip` /
//! `connect_port` become [`MonitoredReal::check_addr`]. Not supported, with a warning:
//! `quorum`, `hysteresis`, `omega`, `notify_*`, `sorry_server_inhibit`, `bindto`.
//! Unknown keywords inside a virtual server are warnings (keepalived logs and goes on); bad
//! values are errors naming `file:line`.
//!
//! The top-level `SSL { certificate FILE key FILE ca FILE password PW }` block configures the
//! one TLS context of every `SSL_GET`, wherever it appears in the file (keepalived builds the
//! context after parsing; a second block replaces the first, with a warning). What keepalived's
//! `check/check_ssl.c` does with it, and the import:
//! - `certificate` (a chain file, leaf first) and `key` (PEM): the client certificate shown to
//!   servers that ask for one → [`TlsCheck::client_cert`] of every `SSL_GET`. Only one of the
//!   two: OpenSSL then sends no client certificate, so none is imported (warning).
//! - `ca`: loaded, but keepalived never turns peer verification on (no `SSL_CTX_set_verify`,
//!   so OpenSSL's client default `SSL_VERIFY_NONE` applies): server certificates stay
//!   unverified. The import does the same and ignores `ca` (warning saying so).
//! - `password`: decrypts an encrypted `key`. rustls cannot decrypt PEM keys, so this is a
//!   warning telling to decrypt the key (`openssl pkey`); a probe with an encrypted key is down
//!   with that advice. An unencrypted key works either way.
//!
//! keepalived refuses to start its checkers when a file of the block cannot be loaded; here
//! the files are read at every probe (a renewed certificate needs no reload), and a missing,
//! unreadable or mismatched file makes the probe down with a reason naming the file.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checker::dns::DnsType;
use crate::checker::tls::ClientIdentity;
use crate::checker::udp::{HexPattern, UdpCheck, UdpReply};
use crate::checker::{
    BodyMatch, CheckKind, CheckSpec, FailureAction, MonitorConfig, MonitoredReal, MonitoredService,
    StatusCodes, TlsCheck,
};
use crate::error::{Error, Result};
use crate::model::*;

/// An imported keepalived configuration (its LVS part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepalivedConfig {
    /// What to monitor.
    pub monitor: MonitorConfig,
    /// Things imported approximately or ignored, each naming `file:line`.
    pub warnings: Vec<String>,
}

/// Resolves `include PATTERN` written in file `from`: the name and text of every matching
/// file (none is a warning, as keepalived only logs it), or a message saying why not.
pub type IncludeResolver<'a> =
    dyn FnMut(&str, &str) -> std::result::Result<Vec<(String, String)>, String> + 'a;

/// Nesting limits: keep hostile input from exhausting the stack.
const MAX_INCLUDE_DEPTH: usize = 8;
const MAX_BLOCK_DEPTH: usize = 32;
/// Largest virtual_server_group address range we expand.
const MAX_RANGE: u32 = 1024;

/// Parse keepalived.conf text; `include` is an error (use [`parse_keepalived_file`] or
/// [`parse_keepalived_with`]). Errors name `source_name:line`.
pub fn parse_keepalived(text: &str, source_name: &str) -> Result<KeepalivedConfig> {
    parse_keepalived_with(text, source_name, &mut |pattern, _| {
        Err(format!(
            "include {pattern:?} needs files: import with parse_keepalived_file (reads from disk) or inline the included file"
        ))
    })
}

/// Read and parse a keepalived.conf, following `include` on disk: relative patterns are
/// relative to the including file's directory; `*` and `?` may appear in the file name.
pub fn parse_keepalived_file(path: &Path) -> Result<KeepalivedConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    parse_keepalived_with(&text, &path.display().to_string(), &mut disk_include)
}

/// Parse keepalived.conf text, resolving `include` with `resolver`.
pub fn parse_keepalived_with(
    text: &str,
    source_name: &str,
    resolver: &mut IncludeResolver<'_>,
) -> Result<KeepalivedConfig> {
    let mut lx = Lexer {
        files: vec![source_name.to_string()],
        toks: Vec::new(),
        warnings: Vec::new(),
        resolver,
    };
    lx.lex(text, 0, 0)?;
    let Lexer {
        files,
        toks,
        warnings,
        ..
    } = lx;
    let mut pos = 0;
    let tree = parse_block(&toks, &mut pos, 0, &files)?;
    let mut b = Builder {
        files: &files,
        warnings,
        groups: HashMap::new(),
        alpha_any: false,
        alpha_all: true,
        misc_warned: false,
        retry_delay_warned: false,
        ssl: None,
        extra: Default::default(),
    };
    b.build(&tree)
}

/// Reload on change, like keepalived's SIGHUP: poll `path` every `poll` and hand a changed,
/// valid configuration to the checker (see [`crate::checker::reload::watch_file`]). Only the
/// main file is watched, not its includes. Returns when the checker has stopped.
pub async fn watch_and_reload(
    path: PathBuf,
    checker: &crate::checker::driver::Checker,
    poll: Duration,
) {
    crate::checker::reload::watch_file(path, checker, poll, |p| {
        parse_keepalived_file(p).map(|c| (c.monitor, c.warnings))
    })
    .await
}

fn disk_include(pattern: &str, from: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let base = Path::new(from).parent().unwrap_or(Path::new("."));
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = full.parent().unwrap_or(Path::new(".")).to_path_buf();
    if dir.to_string_lossy().contains(['*', '?', '[', '{']) || name.contains(['[', '{']) {
        return Err(format!(
            "include {pattern:?}: only * and ? in the file name are supported; list the files one include each"
        ));
    }
    let mut paths = Vec::new();
    if name.contains(['*', '?']) {
        let rd = std::fs::read_dir(&dir).map_err(|e| format!("include {pattern:?}: {e}"))?;
        for ent in rd.flatten() {
            let n = ent.file_name().to_string_lossy().into_owned();
            if wildcard_match(name.as_bytes(), n.as_bytes()) && ent.path().is_file() {
                paths.push(ent.path());
            }
        }
        paths.sort();
    } else if full.is_file() {
        paths.push(full);
    }
    paths
        .into_iter()
        .map(|p| {
            std::fs::read_to_string(&p)
                .map(|t| (p.display().to_string(), t))
                .map_err(|e| format!("include {}: {e}", p.display()))
        })
        .collect()
}

/// Shell-style `*` / `?` matching (no `/` in names here); iterative, linear enough.
fn wildcard_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i, mut star, mut mark) = (0, 0, None, 0);
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

// ---------------------------------------------------------------------------------------
// Lexer and block tree.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    file: usize,
    line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Eol,
}

fn perr(files: &[String], at: Loc, message: impl Into<String>) -> Error {
    Error::Parse {
        source_name: files.get(at.file).cloned().unwrap_or_default(),
        line: at.line,
        message: message.into(),
    }
}

fn where_(files: &[String], at: Loc) -> String {
    format!(
        "{}:{}",
        files.get(at.file).map(String::as_str).unwrap_or(""),
        at.line
    )
}

struct Lexer<'r, 'a> {
    files: Vec<String>,
    toks: Vec<(Tok, Loc)>,
    warnings: Vec<String>,
    resolver: &'r mut IncludeResolver<'a>,
}

impl Lexer<'_, '_> {
    fn lex(&mut self, text: &str, file: usize, depth: usize) -> Result<()> {
        for (i, raw) in text.lines().enumerate() {
            let at = Loc { file, line: i + 1 };
            let mut s = raw.trim();
            // Conditional configuration: without a config id, `@ID` lines are dropped and
            // `@^ID` lines kept, as keepalived does when no id matches.
            if let Some(rest) = s.strip_prefix('@') {
                let (neg, rest) = match rest.strip_prefix('^') {
                    Some(r) => (true, r),
                    None => (false, rest),
                };
                match rest.split_once([' ', '\t']) {
                    Some((_, body)) if neg => s = body.trim_start(),
                    _ => continue,
                }
            }
            if s.starts_with('$') && s.contains('=') {
                return Err(perr(
                    &self.files,
                    at,
                    "parameter definitions ($NAME=...) are not supported: substitute the values in the file",
                ));
            }
            if s.starts_with("~SEQ") {
                return Err(perr(
                    &self.files,
                    at,
                    "~SEQ is not supported: write the generated lines out",
                ));
            }
            let start = self.toks.len();
            self.line(s, at)?;
            let words: Vec<&str> = self.toks[start..]
                .iter()
                .filter_map(|(t, _)| match t {
                    Tok::Word(w) => Some(w.as_str()),
                    _ => None,
                })
                .collect();
            let is_include = matches!(
                words.first(),
                Some(&("include" | "includer" | "includem" | "includew" | "includeb" | "includea"))
            ) && words.len() == 2
                && self.toks.len() == start + 3;
            if is_include {
                let pattern = words[1].to_string();
                self.toks.truncate(start);
                self.include(&pattern, at, depth)?;
            }
        }
        Ok(())
    }

    fn include(&mut self, pattern: &str, at: Loc, depth: usize) -> Result<()> {
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(perr(
                &self.files,
                at,
                format!(
                    "include {pattern:?}: includes nested more than {MAX_INCLUDE_DEPTH} deep (an include loop?)"
                ),
            ));
        }
        let from = self.files.get(at.file).cloned().unwrap_or_default();
        let found = (self.resolver)(pattern, &from).map_err(|m| perr(&self.files, at, m))?;
        if found.is_empty() {
            self.warnings.push(format!(
                "{}: include {pattern:?} matched no file",
                where_(&self.files, at)
            ));
        }
        for (name, text) in found {
            self.files.push(name);
            let idx = self.files.len() - 1;
            self.lex(&text, idx, depth + 1)?;
        }
        Ok(())
    }

    /// Tokens of one line: words, braces, then an end of line.
    fn line(&mut self, s: &str, at: Loc) -> Result<()> {
        let mut cur = String::new();
        let mut has = false;
        let mut quoted = false;
        let mut it = s.chars().peekable();
        let flush = |toks: &mut Vec<(Tok, Loc)>, cur: &mut String, has: &mut bool| {
            if *has {
                toks.push((Tok::Word(std::mem::take(cur)), at));
                *has = false;
            }
        };
        while let Some(c) = it.next() {
            if quoted {
                if c == '"' {
                    quoted = false;
                } else {
                    cur.push(c);
                }
                continue;
            }
            match c {
                '"' => {
                    quoted = true;
                    has = true;
                }
                '#' | '!' => break,
                '\\' if matches!(it.peek(), Some('#' | '!')) => {
                    if let Some(n) = it.next() {
                        cur.push(n);
                        has = true;
                    }
                }
                '{' | '}' => {
                    flush(&mut self.toks, &mut cur, &mut has);
                    let t = if c == '{' { Tok::Open } else { Tok::Close };
                    self.toks.push((t, at));
                }
                c if c.is_whitespace() => flush(&mut self.toks, &mut cur, &mut has),
                c => {
                    cur.push(c);
                    has = true;
                }
            }
        }
        if quoted {
            return Err(perr(
                &self.files,
                at,
                "unterminated double quote: close the string with \"",
            ));
        }
        flush(&mut self.toks, &mut cur, &mut has);
        self.toks.push((Tok::Eol, at));
        Ok(())
    }
}

/// One keyword line with its arguments and, if it opens one, its block.
#[derive(Debug, Clone)]
struct Stmt {
    words: Vec<String>,
    at: Loc,
    block: Option<Vec<Stmt>>,
}

impl Stmt {
    fn kw(&self) -> &str {
        self.words.first().map(String::as_str).unwrap_or("")
    }
}

fn parse_block(
    toks: &[(Tok, Loc)],
    pos: &mut usize,
    depth: usize,
    files: &[String],
) -> Result<Vec<Stmt>> {
    let mut out = Vec::new();
    let opened_at = pos.checked_sub(1).and_then(|p| toks.get(p)).map(|t| t.1);
    loop {
        let Some((tok, at)) = toks.get(*pos) else {
            return match (depth, opened_at) {
                (0, _) => Ok(out),
                (_, Some(o)) => Err(perr(
                    files,
                    o,
                    "block opened here is never closed: add the missing '}'",
                )),
                (_, None) => Ok(out),
            };
        };
        let at = *at;
        match tok {
            Tok::Eol => *pos += 1,
            Tok::Close if depth > 0 => {
                *pos += 1;
                return Ok(out);
            }
            Tok::Close => {
                return Err(perr(
                    files,
                    at,
                    "'}' without a matching '{': remove it or add the opening brace",
                ));
            }
            Tok::Open => {
                return Err(perr(
                    files,
                    at,
                    "'{' without a keyword before it: put the block's keyword (e.g. real_server IP PORT) before '{'",
                ));
            }
            Tok::Word(_) => {
                let mut words = Vec::new();
                while let Some((Tok::Word(w), _)) = toks.get(*pos) {
                    words.push(w.clone());
                    *pos += 1;
                }
                // A block may open on the keyword's line or on a following line.
                let mut look = *pos;
                while let Some((Tok::Eol, _)) = toks.get(look) {
                    look += 1;
                }
                let block = if let Some((Tok::Open, oat)) = toks.get(look) {
                    if depth + 1 >= MAX_BLOCK_DEPTH {
                        return Err(perr(
                            files,
                            *oat,
                            format!("blocks nested more than {MAX_BLOCK_DEPTH} deep"),
                        ));
                    }
                    *pos = look + 1;
                    Some(parse_block(toks, pos, depth + 1, files)?)
                } else {
                    None
                };
                out.push(Stmt { words, at, block });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// From the block tree to the monitor model.

/// Settings inherited virtual_server → real_server → checker.
#[derive(Debug, Clone, Default)]
struct Inherit {
    delay_loop: Option<Duration>,
    retry: Option<u32>,
    connect_timeout: Option<Duration>,
    virtualhost: Option<String>,
    inhibit: Option<bool>,
    alpha: Option<bool>,
    forward: Option<Forward>,
    /// virtual_server `weight`: default weight of its real servers (keepalived: 1).
    weight: Option<u32>,
}

struct Builder<'f> {
    files: &'f [String],
    warnings: Vec<String>,
    groups: HashMap<String, (Loc, Vec<Stmt>)>,
    alpha_any: bool,
    alpha_all: bool,
    misc_warned: bool,
    retry_delay_warned: bool,
    /// The client certificate of the global `SSL` block, for every SSL_GET.
    ssl: Option<ClientIdentity>,
    /// Warnings found by the value readers (which only borrow the builder).
    extra: std::cell::RefCell<Vec<String>>,
}

type R<T> = std::result::Result<T, Error>;

fn yes_no(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" => Some(true),
        "no" | "off" | "false" => Some(false),
        _ => None,
    }
}

/// An MD5 given as 32 hex digits (either case).
fn md5_hex(v: &str) -> Option<[u8; 16]> {
    let b = v.as_bytes();
    if b.len() != 32 || !b.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(b.chunks(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Split a command line like a shell word list (single and double quotes, backslash).
fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut q: Option<char> = None;
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match (q, c) {
            (Some(qc), c) if c == qc => q = None,
            (Some('"'), '\\') => cur.push(it.next()?),
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                q = Some(c);
                has = true;
            }
            (None, '\\') => {
                cur.push(it.next()?);
                has = true;
            }
            (None, c) if c.is_whitespace() => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            (None, c) => {
                cur.push(c);
                has = true;
            }
        }
    }
    if q.is_some() {
        return None;
    }
    if has {
        out.push(cur);
    }
    Some(out)
}

impl Builder<'_> {
    fn err(&self, at: Loc, m: impl Into<String>) -> Error {
        perr(self.files, at, m)
    }

    fn warn(&mut self, at: Loc, m: impl AsRef<str>) {
        let w = format!("{}: {}", where_(self.files, at), m.as_ref());
        self.warnings.push(w);
    }

    fn arg<'s>(&self, st: &'s Stmt, i: usize, example: &str) -> R<&'s str> {
        st.words.get(i).map(String::as_str).ok_or_else(|| {
            self.err(
                st.at,
                format!("{} needs a value, e.g. `{example}`", st.kw()),
            )
        })
    }

    /// Words after a one-value keyword: keepalived ignores them, which hides mistakes such
    /// as two keywords on one line (`connect_port 80 connect_timeout 3`).
    fn extra_words(&self, st: &Stmt) {
        if st.words.len() > 2 {
            let w = format!(
                "{}: extra words after `{} {}` ignored ({}): one keyword per line",
                where_(self.files, st.at),
                st.kw(),
                st.words[1],
                st.words[2..].join(" ")
            );
            self.extra.borrow_mut().push(w);
        }
    }

    fn num<T: std::str::FromStr>(&self, st: &Stmt, i: usize, example: &str) -> R<T> {
        if i == 1 {
            self.extra_words(st);
        }
        let v = self.arg(st, i, example)?;
        v.parse().map_err(|_| {
            self.err(
                st.at,
                format!("{}: invalid number {v:?}, e.g. `{example}`", st.kw()),
            )
        })
    }

    /// keepalived timers: seconds, fractions allowed.
    fn timer(&self, st: &Stmt, example: &str) -> R<Duration> {
        self.extra_words(st);
        let v = self.arg(st, 1, example)?;
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0 && *x <= 1e9)
            .and_then(|x| Duration::try_from_secs_f64(x).ok())
            .ok_or_else(|| {
                self.err(
                    st.at,
                    format!(
                        "{}: invalid time {v:?} (seconds, e.g. `{example}`)",
                        st.kw()
                    ),
                )
            })
    }

    /// A flag keyword with an optional on/off value.
    fn flag(&self, st: &Stmt) -> R<bool> {
        match st.words.get(1) {
            None => Ok(true),
            Some(v) => yes_no(v).ok_or_else(|| {
                self.err(
                    st.at,
                    format!("{}: expected on|off|yes|no|true|false, got {v:?}", st.kw()),
                )
            }),
        }
    }

    fn ip(&self, st: &Stmt, v: &str) -> R<IpAddr> {
        v.parse().map_err(|_| {
            self.err(
                st.at,
                format!(
                    "{}: invalid address {v:?} (numeric IPv4 or IPv6 addresses only)",
                    st.kw()
                ),
            )
        })
    }

    fn port(&self, st: &Stmt, i: usize) -> R<Option<u16>> {
        if i == 1 {
            self.extra_words(st);
        }
        match st.words.get(i) {
            None => Ok(None),
            Some(p) => p
                .parse()
                .map(Some)
                .map_err(|_| self.err(st.at, format!("{}: invalid port {p:?} (0-65535)", st.kw()))),
        }
    }

    fn forward(&self, st: &Stmt) -> R<Forward> {
        let m = self.arg(st, 1, "lb_kind DR")?;
        let bad = |s: &Self, w: &str| {
            s.err(
                st.at,
                format!(
                    "{}: unknown {w:?} (NAT, DR or TUN [type ipip|gue|gre] [port N] [nocsum|csum|remcsum])",
                    st.kw()
                ),
            )
        };
        match m.to_ascii_uppercase().as_str() {
            "NAT" => Ok(Forward::Masq),
            "DR" => Ok(Forward::Route),
            "TUN" => {
                let mut t = Tunnel::default();
                let mut i = 2;
                while let Some(w) = st.words.get(i) {
                    match w.as_str() {
                        "type" => {
                            t.kind = match st.words.get(i + 1).map(String::as_str) {
                                Some("ipip") => TunnelType::Ipip,
                                Some("gue") => TunnelType::Gue,
                                Some("gre") => TunnelType::Gre,
                                o => return Err(bad(self, o.unwrap_or("type"))),
                            };
                            i += 1;
                        }
                        "port" => {
                            t.port = self.num(st, i + 1, "lvs_method TUN type gue port 6080")?;
                            i += 1;
                        }
                        "nocsum" => t.csum = TunnelCsum::NoCsum,
                        "csum" => t.csum = TunnelCsum::Csum,
                        "remcsum" => t.csum = TunnelCsum::RemCsum,
                        o => return Err(bad(self, o)),
                    }
                    i += 1;
                }
                Ok(Forward::Tunnel(t))
            }
            _ => Err(bad(self, m)),
        }
    }

    /// Settings every level accepts; true when `st` was one.
    fn inherit(&mut self, inh: &mut Inherit, st: &Stmt) -> R<bool> {
        match st.kw() {
            "delay_loop" => inh.delay_loop = Some(self.timer(st, "delay_loop 6")?),
            "retry" | "nb_get_retry" => inh.retry = Some(self.num(st, 1, "retry 3")?),
            "delay_before_retry" => {
                self.timer(st, "delay_before_retry 3")?;
                if !self.retry_delay_warned {
                    self.retry_delay_warned = true;
                    self.warn(
                        st.at,
                        "delay_before_retry is not modelled: retries run at the check interval (delay_loop)",
                    );
                }
            }
            "connect_timeout" => {
                // keepalived turns 0 into 1 s.
                let t = self.timer(st, "connect_timeout 3")?;
                inh.connect_timeout = Some(if t.is_zero() {
                    Duration::from_secs(1)
                } else {
                    t
                });
            }
            "virtualhost" => {
                inh.virtualhost = Some(self.arg(st, 1, "virtualhost www.example.com")?.into())
            }
            "inhibit_on_failure" => inh.inhibit = Some(self.flag(st)?),
            "alpha" => inh.alpha = Some(self.flag(st)?),
            "lb_kind" | "lvs_method" => inh.forward = Some(self.forward(st)?),
            "warmup" | "smtp_alert" | "log_all_failures" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn build(&mut self, tree: &[Stmt]) -> Result<KeepalivedConfig> {
        // Groups and the SSL context first: they apply wherever they appear in the file.
        let mut ssl_at: Option<Loc> = None;
        for st in tree {
            match st.kw() {
                "virtual_server_group" => {
                    let name = self.arg(st, 1, "virtual_server_group NAME {")?.to_string();
                    let block = st.block.clone().unwrap_or_default();
                    self.groups.insert(name, (st.at, block));
                }
                "SSL" => {
                    if let Some(first) = ssl_at {
                        let m = format!(
                            "SSL block given again: it replaces the one at {} (as in keepalived)",
                            where_(self.files, first)
                        );
                        self.warn(st.at, m);
                    }
                    ssl_at = Some(st.at);
                    self.ssl = self.ssl_block(st)?;
                }
                _ => {}
            }
        }
        let mut services = Vec::new();
        for st in tree {
            match st.kw() {
                "virtual_server" => services.extend(self.virtual_server(st)?),
                "virtual_server_group" | "SSL" => {}
                k => {
                    let at = where_(self.files, st.at);
                    tracing::debug!(keyword = k, %at, "keepalived: skipping a non-LVS block");
                }
            }
        }
        if self.alpha_any && !self.alpha_all {
            self.warnings.push(
                "alpha is set on some virtual or real servers only: every probe starts down (our alpha mode is global)".into(),
            );
        }
        Ok(KeepalivedConfig {
            monitor: MonitorConfig {
                services,
                start_down: self.alpha_any,
            },
            warnings: {
                let mut w = std::mem::take(&mut self.warnings);
                w.append(&mut self.extra.borrow_mut());
                w
            },
        })
    }

    /// The global `SSL` block: the client identity it gives SSL_GET (see the module docs for
    /// keepalived's semantics of each field).
    fn ssl_block(&mut self, st: &Stmt) -> R<Option<ClientIdentity>> {
        const EXAMPLE: &str =
            "SSL { certificate /etc/keepalived/client.crt key /etc/keepalived/client.key }";
        let body = st.block.as_deref().ok_or_else(|| {
            self.err(
                st.at,
                format!("SSL without a {{ ... }} block, e.g. `{EXAMPLE}`"),
            )
        })?;
        if st.words.len() > 1 {
            let m = format!("words after SSL ignored ({})", st.words[1..].join(" "));
            self.warn(st.at, m);
        }
        let mut cert: Option<(PathBuf, Loc)> = None;
        let mut key: Option<(PathBuf, Loc)> = None;
        for s in body {
            let (slot, example) = match s.kw() {
                "certificate" => (&mut cert, "certificate /etc/keepalived/client.crt"),
                "key" => (&mut key, "key /etc/keepalived/client.key"),
                "ca" => {
                    self.arg(s, 1, "ca /etc/keepalived/ca.crt")?;
                    self.extra_words(s);
                    self.warn(
                        s.at,
                        "SSL ca ignored: keepalived loads it but never verifies server certificates (SSL_GET accepts any), and neither does the import",
                    );
                    continue;
                }
                "password" => {
                    self.arg(s, 1, "password secret")?;
                    self.warn(
                        s.at,
                        "SSL password: encrypted private keys are not supported (rustls cannot decrypt them); decrypt the key (openssl pkey -in KEY -out KEY.plain), point `key` at the plain copy (readable by the checker only) and drop `password`; probes with an encrypted key are down",
                    );
                    continue;
                }
                k => {
                    self.warn(s.at, format!("unknown keyword {k:?} in SSL ignored"));
                    continue;
                }
            };
            let file = PathBuf::from(self.arg(s, 1, example)?);
            self.extra_words(s);
            if slot.is_some() {
                let m = format!("SSL {} given twice: the last one counts", s.kw());
                self.warn(s.at, m);
            }
            *slot = Some((file, s.at));
        }
        match (cert, key) {
            (Some((cert, _)), Some((key, _))) => Ok(Some(ClientIdentity::new(cert, key))),
            (Some((_, at)), None) => {
                self.warn(
                    at,
                    "SSL certificate without key: keepalived (OpenSSL) then sends no client certificate, so none is imported; add `key FILE`",
                );
                Ok(None)
            }
            (None, Some((_, at))) => {
                self.warn(
                    at,
                    "SSL key without certificate: keepalived (OpenSSL) then sends no client certificate, so none is imported; add `certificate FILE`",
                );
                Ok(None)
            }
            (None, None) => Ok(None),
        }
    }

    /// Keys of a group's entries.
    fn group_keys(
        &self,
        st: &Stmt,
        protocol: Protocol,
        family: Option<Family>,
    ) -> R<Vec<ServiceKey>> {
        let name = self.arg(st, 2, "virtual_server group NAME {")?;
        let (_, entries) = self.groups.get(name).ok_or_else(|| {
            self.err(
                st.at,
                format!(
                    "virtual_server group {name:?}: no virtual_server_group {name} block defines it"
                ),
            )
        })?;
        let mut keys = Vec::new();
        for e in entries {
            if e.kw() == "fwmark" {
                keys.push(ServiceKey::Fwmark {
                    mark: self.num(e, 1, "fwmark 1")?,
                    family: family.unwrap_or(Family::V4),
                });
                continue;
            }
            let a = e.kw();
            let port = self.port(e, 1)?.unwrap_or(0);
            let (first, last) = match a.split_once('-') {
                None => (self.ip(e, a)?, None),
                Some((f, l)) => (self.ip(e, f)?, Some(l)),
            };
            let addrs: Vec<IpAddr> = match (first, last) {
                (ip, None) => vec![ip],
                (IpAddr::V4(v4), Some(l)) => {
                    let o = v4.octets();
                    let end: u8 = l.parse().map_err(|_| {
                        self.err(
                            e.at,
                            format!("bad range end {l:?}: the last octet, e.g. 10.0.0.1-20"),
                        )
                    })?;
                    if end < o[3] {
                        return Err(self.err(e.at, "range end before its start"));
                    }
                    (o[3]..=end)
                        .map(|x| IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], x)))
                        .collect()
                }
                (IpAddr::V6(v6), Some(l)) => {
                    let seg = v6.segments();
                    let end = u16::from_str_radix(l, 16).map_err(|_| {
                        self.err(
                            e.at,
                            format!(
                                "bad range end {l:?}: the last group in hex, e.g. 2001:db8::1-1f"
                            ),
                        )
                    })?;
                    if end < seg[7] || u32::from(end - seg[7]) >= MAX_RANGE {
                        return Err(self.err(
                            e.at,
                            format!(
                                "range end before its start or more than {MAX_RANGE} addresses"
                            ),
                        ));
                    }
                    (seg[7]..=end)
                        .map(|x| {
                            let mut s = seg;
                            s[7] = x;
                            IpAddr::V6(Ipv6Addr::from(s))
                        })
                        .collect()
                }
            };
            keys.extend(addrs.into_iter().map(|ip| ServiceKey::Addr {
                protocol,
                addr: SocketAddr::new(ip, port),
            }));
        }
        if keys.is_empty() {
            return Err(self.err(st.at, format!("virtual_server_group {name} is empty")));
        }
        Ok(keys)
    }

    fn virtual_server(&mut self, st: &Stmt) -> R<Vec<MonitoredService>> {
        let a = self.arg(st, 1, "virtual_server 10.0.0.1 80 {")?.to_string();
        let body = st
            .block
            .as_deref()
            .ok_or_else(|| self.err(st.at, "virtual_server without a { ... } block"))?;
        let mut inh = Inherit::default();
        let mut scheduler = Scheduler::Wlc; // keepalived's (and ipvsadm's) default
        let mut sched_flags = 0u32;
        let mut protocol = Protocol::Tcp;
        let mut persistence_timeout: Option<u32> = None;
        let mut granularity: Option<(String, Loc)> = None;
        let mut pe_name = None;
        let mut ops = false;
        let mut family: Option<Family> = None;
        let mut sorry: Option<&Stmt> = None;
        let mut sorry_fwd: Option<Forward> = None;
        let mut reals: Vec<&Stmt> = Vec::new();
        for s in body {
            if self.inherit(&mut inh, s)? {
                continue;
            }
            match s.kw() {
                "lb_algo" | "lvs_sched" => {
                    let v = self.arg(s, 1, "lb_algo rr")?;
                    scheduler = v.parse().map_err(|e: Error| self.err(s.at, e.to_string()))?;
                }
                "flag-1" | "sh-fallback" | "mh-fallback" => sched_flags |= svc_flags::SCHED1,
                "flag-2" | "sh-port" | "mh-port" => sched_flags |= svc_flags::SCHED2,
                "flag-3" => sched_flags |= svc_flags::SCHED3,
                "protocol" => {
                    protocol = match self.arg(s, 1, "protocol TCP")?.to_ascii_uppercase().as_str() {
                        "TCP" => Protocol::Tcp,
                        "UDP" => Protocol::Udp,
                        "SCTP" => Protocol::Sctp,
                        p => {
                            let m = format!("unknown protocol {p:?} (TCP, UDP or SCTP)");
                            return Err(self.err(s.at, m));
                        }
                    }
                }
                // keepalived's default when the keyword has no value.
                "persistence_timeout" => {
                    persistence_timeout = Some(if s.words.len() > 1 {
                        self.num(s, 1, "persistence_timeout 300")?
                    } else {
                        360
                    })
                }
                "persistence_granularity" => {
                    let g = self.arg(s, 1, "persistence_granularity 255.255.255.0")?;
                    granularity = Some((g.to_string(), s.at));
                }
                "persistence_engine" => pe_name = Some(self.arg(s, 1, "persistence_engine sip")?.to_string()),
                "ops" => ops = self.flag(s)?,
                "ip_family" => {
                    family = match self.arg(s, 1, "ip_family inet6")? {
                        "inet" => Some(Family::V4),
                        "inet6" => Some(Family::V6),
                        f => return Err(self.err(s.at, format!("ip_family {f:?}: inet or inet6"))),
                    }
                }
                "sorry_server" => sorry = Some(s),
                "sorry_server_lvs_method" => sorry_fwd = Some(self.forward(s)?),
                "sorry_server_inhibit" => self.warn(
                    s.at,
                    "sorry_server_inhibit ignored: the sorry server is added only while every real server is down",
                ),
                "real_server" => reals.push(s),
                "quorum" | "hysteresis" if s.words.get(1).is_some_and(|v| v == "1" || v == "0") => {}
                k @ ("quorum" | "hysteresis" | "quorum_up" | "quorum_down" | "omega") => self.warn(
                    s.at,
                    format!("{k} is not supported and ignored: healthy real servers always stay in"),
                ),
                // The default weight of its real servers.
                "weight" => inh.weight = Some(self.num(s, 1, "weight 2")?),
                "nat_mask" | "ha_suspend" | "hashed" => {}
                k => self.warn(s.at, format!("unknown keyword {k:?} in virtual_server ignored")),
            }
        }
        // The family of a fwmark service follows its real servers (as keepalived does).
        let real_family = reals
            .iter()
            .find_map(|r| r.words.get(1).and_then(|a| a.parse::<IpAddr>().ok()))
            .map(|ip| Family::of(&ip));
        let keys: Vec<ServiceKey> = match a.as_str() {
            "fwmark" => vec![ServiceKey::Fwmark {
                mark: self.num(st, 2, "virtual_server fwmark 1 {")?,
                family: family.or(real_family).unwrap_or(Family::V4),
            }],
            "group" => self.group_keys(st, protocol, family.or(real_family))?,
            ip => {
                let ip = self.ip(st, ip)?;
                // keepalived >= 2.0.7 accepts a missing port: port 0 (every port).
                let port = self.port(st, 2)?.unwrap_or(0);
                vec![ServiceKey::Addr {
                    protocol,
                    addr: SocketAddr::new(ip, port),
                }]
            }
        };
        // persistence_granularity alone turns persistence on with keepalived's default
        // timeout (IPVS_SVC_PERSISTENT_TIMEOUT, 360 s).
        let persistence_timeout = persistence_timeout.or(granularity.as_ref().map(|_| 360));
        let vs_alpha = inh.alpha.unwrap_or(false);
        let default_fwd = inh.forward.unwrap_or(Forward::Masq); // keepalived's default: NAT
        let mut built = Vec::new();
        let mut any_inhibit = inh.inhibit.unwrap_or(false);
        let mut all_inhibit = true;
        for r in &reals {
            let (mr, inhibit, alpha) = self.real_server(r, &inh, default_fwd)?;
            any_inhibit |= inhibit;
            all_inhibit &= inhibit;
            self.alpha_any |= alpha;
            self.alpha_all &= alpha;
            built.push(mr);
        }
        if reals.is_empty() {
            self.alpha_any |= vs_alpha;
            self.alpha_all &= vs_alpha;
        }
        if any_inhibit && !all_inhibit {
            self.warn(
                st.at,
                "inhibit_on_failure is set on some real servers only: every failed real server of this virtual server is quiesced (weight 0)",
            );
        }
        let on_failure = if any_inhibit {
            FailureAction::Quiesce
        } else {
            FailureAction::Remove
        };
        let mut out = Vec::new();
        for key in keys {
            let mut service = Service::new(key, scheduler.clone());
            service.sched_flags = SchedFlags::from_bits(sched_flags);
            service.pe_name = pe_name.clone();
            if ops {
                if matches!(
                    key,
                    ServiceKey::Addr {
                        protocol: Protocol::Udp,
                        ..
                    }
                ) {
                    service.one_packet = true;
                } else {
                    self.warn(
                        st.at,
                        "ops ignored: one-packet scheduling applies to UDP services only",
                    );
                }
            }
            if let Some(timeout) = persistence_timeout {
                let netmask = self.netmask(granularity.as_ref(), key.family())?;
                service.persistence = Some(Persistence { timeout, netmask });
            }
            let fallback = match sorry {
                None => None,
                Some(s) => {
                    let ip = self.ip(s, self.arg(s, 1, "sorry_server 10.0.0.99 80")?)?;
                    let port = self.port(s, 2)?.unwrap_or(key.port());
                    Some(Destination::new(
                        SocketAddr::new(ip, port),
                        sorry_fwd.unwrap_or(default_fwd),
                    ))
                }
            };
            out.push(MonitoredService {
                service,
                reals: built.clone(),
                fallback,
                on_failure,
            });
        }
        Ok(out)
    }

    /// persistence_granularity: an IPv4 netmask or an IPv6 prefix length.
    fn netmask(&self, g: Option<&(String, Loc)>, family: Family) -> R<Netmask> {
        let Some((m, at)) = g else {
            return Ok(Netmask::host(family));
        };
        match family {
            Family::V4 => m.parse::<Ipv4Addr>().map(Netmask::V4).map_err(|_| {
                self.err(
                    *at,
                    format!("persistence_granularity {m:?}: an IPv4 netmask such as 255.255.255.0"),
                )
            }),
            Family::V6 => m
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=128).contains(p))
                .map(Netmask::V6)
                .ok_or_else(|| {
                    self.err(
                        *at,
                        format!("persistence_granularity {m:?}: an IPv6 prefix length 1-128"),
                    )
                }),
        }
    }

    /// A real server: the monitored destination, whether it inhibits on failure, alpha.
    fn real_server(
        &mut self,
        st: &Stmt,
        vs: &Inherit,
        default_fwd: Forward,
    ) -> R<(MonitoredReal, bool, bool)> {
        let ip = self.ip(st, self.arg(st, 1, "real_server 10.0.0.2 80 {")?)?;
        let port = self.port(st, 2)?.unwrap_or(0);
        let mut inh = vs.clone();
        inh.forward = None;
        let mut dest = Destination::new(SocketAddr::new(ip, port), default_fwd)
            .with_weight(vs.weight.unwrap_or(1));
        let mut checkers: Vec<&Stmt> = Vec::new();
        for s in st.block.as_deref().unwrap_or(&[]) {
            if self.inherit(&mut inh, s)? {
                continue;
            }
            match s.kw() {
                "weight" => dest.weight = self.num(s, 1, "weight 2")?,
                "uthreshold" => dest.u_thresh = self.num(s, 1, "uthreshold 1000")?,
                "lthreshold" => dest.l_thresh = self.num(s, 1, "lthreshold 100")?,
                k @ ("notify_up" | "notify_down") => self.warn(
                    s.at,
                    format!("{k} ignored: watch the checker's logs or events instead"),
                ),
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "PING_CHECK"
                | "SMTP_CHECK" | "DNS_CHECK" | "UDP_CHECK" | "BFD_CHECK" | "FILE_CHECK"
                | "track_bfd" => checkers.push(s),
                k => self.warn(
                    s.at,
                    format!("unknown keyword {k:?} in real_server ignored"),
                ),
            }
        }
        if let Some(f) = inh.forward {
            dest.forward = f;
        }
        let mut check = None;
        let mut check_addr = None;
        for c in checkers {
            let got = self.checker(c, &inh, dest.addr)?;
            match (got, &check) {
                (None, _) => {}
                (Some((spec, addr)), None) => {
                    check = Some(spec);
                    check_addr = addr;
                }
                (Some(_), Some(_)) => self.warn(
                    c.at,
                    format!(
                        "{} ignored: a real server has one check here (keepalived requires all of them to pass); the first one is kept",
                        c.kw()
                    ),
                ),
            }
        }
        let mr = MonitoredReal {
            dest,
            check,
            check_addr,
        };
        Ok((mr, inh.inhibit.unwrap_or(false), inh.alpha.unwrap_or(false)))
    }

    /// One checker block: its spec and where to probe (when not the real server itself).
    fn checker(
        &mut self,
        st: &Stmt,
        rs: &Inherit,
        dest: SocketAddr,
    ) -> R<Option<(CheckSpec, Option<SocketAddr>)>> {
        let kind_name = st.kw().to_string();
        if matches!(kind_name.as_str(), "BFD_CHECK" | "FILE_CHECK" | "track_bfd") {
            self.warn(st.at, format!("{kind_name} is not supported and ignored"));
            return Ok(None);
        }
        let mut inh = rs.clone();
        let mut connect_ip = None;
        let mut connect_port = None;
        let mut urls: Vec<&Stmt> = Vec::new();
        let mut misc_path = None;
        let mut misc_timeout = None;
        let mut misc_dynamic = false;
        let mut dns_type = DnsType::Soa;
        let mut dns_name = ".".to_string();
        let mut udp = UdpCheck::default();
        let mut udp_reply: Option<UdpReply> = None;
        let (mut min_reply, mut max_reply) = (None, None);
        let mut hosts = 0usize;
        let body = st.block.as_deref().unwrap_or(&[]).to_vec();
        // Old SMTP_CHECK syntax: `host { connect_ip ... }` sub-blocks; the first one counts.
        let mut items: Vec<Stmt> = Vec::new();
        for s in body {
            if s.kw() == "host" {
                hosts += 1;
                if hosts == 1 {
                    items.extend(s.block.clone().unwrap_or_default());
                } else {
                    self.warn(s.at, "only the first host block of SMTP_CHECK is checked");
                }
            } else {
                items.push(s);
            }
        }
        for s in &items {
            if self.inherit(&mut inh, s)? {
                continue;
            }
            match s.kw() {
                "connect_ip" => {
                    connect_ip = Some(self.ip(s, self.arg(s, 1, "connect_ip 10.0.0.2")?)?)
                }
                "connect_port" => connect_port = self.port(s, 1)?,
                "bindto" | "bind_port" | "bind_if" => self.warn(
                    s.at,
                    format!("{} ignored: probes use the system's source address", s.kw()),
                ),
                "fwmark" | "enable_sni" | "tls_compliant" | "protocol" | "fast_recovery"
                | "helo_name" => {}
                "url" => urls.push(s),
                "misc_path" => {
                    misc_path = Some((
                        self.arg(s, 1, "misc_path \"/usr/local/bin/check web1\"")?
                            .to_string(),
                        s.at,
                    ))
                }
                "misc_timeout" => misc_timeout = Some(self.timer(s, "misc_timeout 10")?),
                "misc_dynamic" => misc_dynamic = self.flag(s)?,
                "user" => self.warn(s.at, "user ignored: the script runs as the checker's user"),
                "type" => {
                    let v = self.arg(s, 1, "type A")?;
                    dns_type = v.parse().map_err(|e: String| self.err(s.at, e))?;
                }
                "name" => dns_name = self.arg(s, 1, "name www.example.com")?.to_string(),
                "payload" => {
                    self.arg(s, 1, "payload 0a0b0c")?;
                    udp.payload = HexPattern::parse(&s.words[1..].join(" "), false)
                        .map_err(|e| self.err(s.at, format!("payload: {e}")))?
                        .bytes;
                }
                "require_reply" => {
                    let expect = if s.words.len() > 1 {
                        HexPattern::parse(&s.words[1..].join(" "), true)
                            .map_err(|e| self.err(s.at, format!("require_reply: {e}")))?
                    } else {
                        HexPattern::default()
                    };
                    udp_reply = Some(UdpReply {
                        expect,
                        ..UdpReply::default()
                    });
                }
                "min_reply_length" | "max_reply_length" => {
                    let v = self.arg(s, 1, "max_reply_length 512")?;
                    let n: u16 = v.parse().map_err(|_| {
                        self.err(
                            s.at,
                            format!("{} {v:?}: a length of 0 to 65535 bytes", s.kw()),
                        )
                    })?;
                    if s.kw() == "min_reply_length" {
                        min_reply = Some((usize::from(n), s.at));
                    } else {
                        max_reply = Some(usize::from(n));
                    }
                }
                k => self.warn(
                    s.at,
                    format!("unknown keyword {k:?} in {kind_name} ignored"),
                ),
            }
        }
        let interval = inh.delay_loop.unwrap_or(Duration::from_secs(60)); // keepalived default
        let timeout = inh.connect_timeout.unwrap_or(Duration::from_secs(5));
        // keepalived's defaults: 1 retry, none for MISC_CHECK, DNS_CHECK its own (3).
        let default_retry = match kind_name.as_str() {
            "MISC_CHECK" => 0,
            "DNS_CHECK" => 3,
            _ => 1,
        };
        let fall = inh.retry.unwrap_or(default_retry).saturating_add(1);
        let mut default_port = dest.port();
        let (kind, timeout) = match kind_name.as_str() {
            "TCP_CHECK" => (CheckKind::Connect, timeout),
            "PING_CHECK" => (CheckKind::Ping, timeout),
            "UDP_CHECK" => {
                if let Some(r) = udp_reply.as_mut() {
                    r.min_len = min_reply.map_or(r.min_len, |(n, _)| n);
                    r.max_len = max_reply.unwrap_or(r.max_len);
                    if r.min_len > r.max_len {
                        let at = min_reply.map_or(st.at, |(_, at)| at);
                        return Err(self.err(
                            at,
                            format!(
                                "min_reply_length {} > max_reply_length {}: every reply would fail",
                                r.min_len, r.max_len
                            ),
                        ));
                    }
                } else if min_reply.is_some() || max_reply.is_some() {
                    self.warn(st.at, "min/max_reply_length ignored without require_reply");
                }
                udp.reply = udp_reply;
                (CheckKind::Udp(udp), timeout)
            }
            "SMTP_CHECK" => {
                // keepalived's SMTP_CHECK connects to port 25 unless told otherwise.
                default_port = 25;
                (
                    CheckKind::Banner {
                        send: None,
                        expect: "220".into(),
                        steps: Vec::new(),
                        tls: None,
                    },
                    timeout,
                )
            }
            "DNS_CHECK" => (
                CheckKind::Dns {
                    name: dns_name,
                    qtype: dns_type,
                    expect: None,
                    tcp: false,
                },
                timeout,
            ),
            "MISC_CHECK" => {
                let (cmd, at) = misc_path.ok_or_else(|| {
                    self.err(st.at, "MISC_CHECK needs misc_path, e.g. `misc_path \"/usr/local/bin/check web1\"`")
                })?;
                let mut w = shell_words(&cmd).filter(|w| !w.is_empty()).ok_or_else(|| {
                    self.err(at, format!("misc_path {cmd:?}: empty or unbalanced quotes"))
                })?;
                let program = PathBuf::from(w.remove(0));
                if !self.misc_warned {
                    self.misc_warned = true;
                    self.warn(
                        at,
                        "MISC_CHECK scripts get the real server's host and port as two extra arguments (and HA_LVS_HOST / HA_LVS_PORT)",
                    );
                }
                (
                    CheckKind::Command {
                        program,
                        args: w,
                        dynamic: misc_dynamic,
                    },
                    misc_timeout.unwrap_or(interval),
                )
            }
            "HTTP_GET" | "SSL_GET" => {
                let url = urls.first().ok_or_else(|| {
                    self.err(st.at, format!("{kind_name} needs a url block, e.g. `url {{ path /health status_code 200 }}`"))
                })?;
                for extra in urls.iter().skip(1) {
                    self.warn(
                        extra.at,
                        "only the first url block is checked (keepalived checks every one)",
                    );
                }
                let mut path = None;
                // keepalived's default: any 2xx.
                let mut status = StatusCodes::success();
                let mut host = inh.virtualhost.clone();
                let mut substring = None;
                let mut digest = None;
                for u in url.block.as_deref().unwrap_or(&[]) {
                    match u.kw() {
                        "path" => path = Some(self.arg(u, 1, "path /health")?.to_string()),
                        "status_code" => {
                            self.arg(u, 1, "status_code 200-299 301")?;
                            status = StatusCodes::parse(u.words[1..].iter().map(String::as_str))
                                .map_err(|e| self.err(u.at, format!("status_code: {e}")))?;
                        }
                        "virtualhost" => {
                            host = Some(self.arg(u, 1, "virtualhost www.example.com")?.to_string())
                        }
                        "digest" => {
                            let v = self.arg(u, 1, "digest 9b3a0c85a887a256d6939da88aabd8cd")?;
                            digest = Some(md5_hex(v).ok_or_else(|| {
                                self.err(
                                    u.at,
                                    format!(
                                        "digest {v:?}: 32 hex digits (an MD5, as genhash prints it)"
                                    ),
                                )
                            })?);
                        }
                        "regex" => {
                            let r = self.arg(u, 1, "regex \"OK\"")?;
                            let m = BodyMatch::regex(r).map_err(|e| self.err(u.at, e))?;
                            substring = Some(m);
                        }
                        k => self.warn(u.at, format!("unknown keyword {k:?} in url ignored")),
                    }
                }
                let mut path = path
                    .ok_or_else(|| self.err(url.at, "url block without path: add e.g. `path /`"))?;
                if !path.starts_with('/') {
                    path.insert(0, '/');
                }
                (
                    CheckKind::Http {
                        path,
                        host,
                        expect_status: status,
                        expect_body: substring,
                        expect_md5: digest,
                        // keepalived's SSL_GET never verifies the server (see `SSL`).
                        tls: (kind_name == "SSL_GET").then(|| TlsCheck {
                            client_cert: self.ssl.clone(),
                            ..TlsCheck::insecure()
                        }),
                    },
                    timeout,
                )
            }
            other => {
                return Err(self.err(st.at, format!("unsupported checker {other}")));
            }
        };
        let target = SocketAddr::new(
            connect_ip.unwrap_or(dest.ip()),
            connect_port.unwrap_or(default_port),
        );
        if target.port() == 0 && !matches!(kind, CheckKind::Ping | CheckKind::Command { .. }) {
            self.warn(
                st.at,
                format!("{kind_name} has no port to probe (real server port 0): add connect_port"),
            );
        }
        let spec = CheckSpec {
            kind,
            interval,
            timeout,
            rise: 1,
            fall,
        };
        Ok(Some((spec, (target != dest).then_some(target))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CONF: &str = r#"
! Configuration File for keepalived
global_defs {
   notification_email {
     admin@example.com
   }
   router_id LVS_DEVEL
}

vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        192.168.200.16
    }
}

vrrp_script chk { script "/bin/true # not a comment" }

# NAT with HTTP_GET
virtual_server 192.168.200.100 80 {
    delay_loop 6
    lb_algo rr
    lb_kind NAT
    persistence_timeout 50
    persistence_granularity 255.255.255.0
    protocol TCP
    virtualhost www.example.com
    sorry_server 192.168.200.200 8080

    real_server 192.168.201.100 80 {
        weight 3
        inhibit_on_failure
        HTTP_GET {
            url {
              path /testurl/test.jsp
              digest 640205b7b0fc66c1ea91c463fac6334d
              status_code 200
            }
            url {
              path /testurl2/test.jsp
            }
            connect_timeout 3
            retry 3
            delay_before_retry 3
        }
    }
    real_server 192.168.201.101 80
    {
        weight 1
        inhibit_on_failure
        SSL_GET { url { path health } connect_port 443 }
    }
}

virtual_server 10.10.10.2 1358 {   # DR with TCP_CHECK
    delay_loop 3
    lb_algo wlc
    lb_kind DR
    protocol UDP
    quorum 2
    real_server 10.10.10.3 1358 {
        weight 2
        TCP_CHECK {
            connect_port 1359
            connect_timeout 2
        }
    }
    real_server 10.10.10.4 1358 {
        uthreshold 100
        MISC_CHECK {
            misc_path "/usr/local/bin/check.sh 'two words' x"
            misc_dynamic
        }
        PING_CHECK { }
    }
}

virtual_server fwmark 7 {
    lb_algo sh
    sh-port
    lvs_method TUN type gue port 6080
    real_server 2001:db8::10 0 { PING_CHECK { retry 0 } }
}

virtual_server 2001:db8::1 443 {
    lb_algo mh
    lb_kind DR
    persistence_timeout
    persistence_granularity 64
    real_server 2001:db8::2 443 { SMTP_CHECK { connect_timeout 4 helo_name lb } lvs_method NAT }
    real_server 2001:db8::3 443 { DNS_CHECK {
        type A
        name example.com
    } }
}
"#;

    fn parse(s: &str) -> KeepalivedConfig {
        parse_keepalived(s, "k.conf").unwrap()
    }

    #[test]
    fn imports_a_realistic_file() {
        let c = parse(CONF);
        let s = &c.monitor.services;
        assert_eq!(s.len(), 4);
        assert!(!c.monitor.start_down);

        let nat = &s[0];
        assert_eq!(nat.service.scheduler, Scheduler::Rr);
        assert_eq!(
            nat.service.persistence,
            Some(Persistence {
                timeout: 50,
                netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0))
            })
        );
        assert_eq!(nat.on_failure, FailureAction::Quiesce);
        let fb = nat.fallback.unwrap();
        assert_eq!(fb.addr, "192.168.200.200:8080".parse().unwrap());
        assert_eq!(fb.forward, Forward::Masq);
        assert_eq!(nat.reals.len(), 2);
        let r0 = &nat.reals[0];
        assert_eq!(r0.dest.weight, 3);
        assert_eq!(r0.dest.forward, Forward::Masq);
        let spec = r0.check.as_ref().unwrap();
        assert_eq!(spec.interval, Duration::from_secs(6));
        assert_eq!(spec.timeout, Duration::from_secs(3));
        assert_eq!(spec.fall, 4);
        assert_eq!(
            spec.kind,
            CheckKind::Http {
                path: "/testurl/test.jsp".into(),
                host: Some("www.example.com".into()),
                expect_status: 200.into(),
                expect_body: None,
                expect_md5: md5_hex("640205b7b0fc66c1ea91c463fac6334d"),
                tls: None,
            }
        );
        assert_eq!(r0.check_addr, None);
        let r1 = &nat.reals[1];
        assert_eq!(r1.check_addr, Some("192.168.201.101:443".parse().unwrap()));
        assert!(matches!(
            &r1.check.as_ref().unwrap().kind,
            CheckKind::Http { path, tls: Some(_), .. } if path == "/health"
        ));
        assert_eq!(r1.check.as_ref().unwrap().fall, 2, "retry defaults to 1");

        let dr = &s[1];
        assert_eq!(
            dr.service.key,
            ServiceKey::udp("10.10.10.2:1358".parse().unwrap())
        );
        assert_eq!(dr.service.scheduler, Scheduler::Wlc);
        assert_eq!(
            dr.on_failure,
            FailureAction::Remove,
            "keepalived removes by default"
        );
        assert_eq!(dr.fallback, None);
        let t = &dr.reals[0];
        assert_eq!((t.dest.weight, t.dest.forward), (2, Forward::Route));
        let ts = t.check.as_ref().unwrap();
        assert_eq!(ts.kind, CheckKind::Connect);
        assert_eq!(
            (ts.interval, ts.timeout),
            (Duration::from_secs(3), Duration::from_secs(2))
        );
        assert_eq!(t.check_addr, Some("10.10.10.3:1359".parse().unwrap()));
        let m = &dr.reals[1];
        assert_eq!(m.dest.u_thresh, 100);
        let ms = m.check.as_ref().unwrap();
        assert_eq!(
            ms.kind,
            CheckKind::Command {
                program: "/usr/local/bin/check.sh".into(),
                args: vec!["two words".into(), "x".into()],
                dynamic: true,
            }
        );
        assert_eq!(
            ms.timeout,
            Duration::from_secs(3),
            "misc_timeout defaults to delay_loop"
        );
        assert_eq!(ms.fall, 1, "MISC_CHECK retry defaults to 0");

        let fw = &s[2];
        assert_eq!(
            fw.service.key,
            ServiceKey::Fwmark {
                mark: 7,
                family: Family::V6
            }
        );
        assert_eq!(fw.service.sched_flags, SchedFlags(svc_flags::SCHED2));
        let fr = &fw.reals[0];
        assert_eq!(
            fr.dest.forward,
            Forward::Tunnel(Tunnel {
                kind: TunnelType::Gue,
                port: 6080,
                csum: TunnelCsum::NoCsum
            })
        );
        let fs = fr.check.as_ref().unwrap();
        assert_eq!(
            (fs.kind.clone(), fs.fall, fs.interval),
            (CheckKind::Ping, 1, Duration::from_secs(60))
        );

        let v6 = &s[3];
        assert_eq!(
            v6.service.key,
            ServiceKey::tcp("[2001:db8::1]:443".parse().unwrap())
        );
        assert_eq!(
            v6.service.persistence,
            Some(Persistence {
                timeout: 360,
                netmask: Netmask::V6(64)
            })
        );
        let sm = &v6.reals[0];
        assert_eq!(sm.dest.forward, Forward::Masq, "per-real lvs_method wins");
        assert_eq!(sm.check_addr, Some("[2001:db8::2]:25".parse().unwrap()));
        assert_eq!(
            sm.check.as_ref().unwrap().kind,
            CheckKind::Banner {
                send: None,
                expect: "220".into(),
                steps: Vec::new(),
                tls: None
            }
        );
        assert_eq!(v6.reals[1].dest.forward, Forward::Route);
        assert_eq!(
            v6.reals[1].check.as_ref().unwrap().fall,
            4,
            "DNS_CHECK retries 3 times"
        );
        assert_eq!(
            v6.reals[1].check.as_ref().unwrap().kind,
            CheckKind::Dns {
                name: "example.com".into(),
                qtype: DnsType::A,
                expect: None,
                tcp: false
            }
        );

        let w = c.warnings.join("\n");
        assert!(!w.contains("digest"), "digest is checked now: {w}");
        for needle in [
            "first url",
            "quorum",
            "PING_CHECK ignored",
            "delay_before_retry",
            "extra arguments",
        ] {
            assert!(w.contains(needle), "no warning about {needle}: {w}");
        }
        assert!(c.warnings.iter().all(|w| w.starts_with("k.conf:")), "{w}");
    }

    #[test]
    fn http_status_code_sets_and_default() {
        let kind = |url: &str| {
            let c = parse(&format!(
                "virtual_server 10.0.0.1 80 {{\n real_server 10.0.0.2 80 {{\n  HTTP_GET {{\n   url {{\n    path /\n{url}   }}\n  }}\n }}\n}}\n"
            ));
            match c.monitor.services[0].reals[0].check.clone().unwrap().kind {
                CheckKind::Http { expect_status, .. } => expect_status,
                k => panic!("{k:?}"),
            }
        };
        assert_eq!(
            kind(""),
            StatusCodes(vec![(200, 299)]),
            "keepalived's default"
        );
        let set = kind("    status_code 200-299 301 503\n");
        assert_eq!(set, StatusCodes(vec![(200, 299), (301, 301), (503, 503)]));
        assert!(set.contains(204) && set.contains(503) && !set.contains(302));
        assert_eq!(set.to_string(), "200-299 301 503");
        // regex is a regular expression (a plain word stays a substring).
        let c = parse(
            "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n   url {\n    path /\n    regex \"^status: (green|yellow)\"\n   }\n  }\n }\n}\n",
        );
        let Some(CheckKind::Http {
            expect_body: Some(m),
            ..
        }) = c.monitor.services[0].reals[0].check.clone().map(|c| c.kind)
        else {
            panic!("{:?}", c.monitor);
        };
        assert!(matches!(m, BodyMatch::Regex(_)), "{m:?}");
        assert!(m.is_match(b"status: yellow\n") && !m.is_match(b"status: red\n"));
    }

    #[test]
    fn udp_check_with_payload_and_required_reply() {
        let c = parse(
            "virtual_server 10.0.0.1 53 {\n protocol UDP\n real_server 10.0.0.2 53 {\n  UDP_CHECK {\n   payload 00 01 ff\n   require_reply 12 3x\n   min_reply_length 2\n   max_reply_length 512\n   connect_timeout 2\n  }\n }\n real_server 10.0.0.3 53 {\n  UDP_CHECK {\n   min_reply_length 2\n  }\n }\n}\n",
        );
        let reals = &c.monitor.services[0].reals;
        let spec = reals[0].check.clone().unwrap();
        assert_eq!(spec.timeout, Duration::from_secs(2));
        let CheckKind::Udp(udp) = spec.kind else {
            panic!("{spec:?}");
        };
        assert_eq!(udp.payload, vec![0x00, 0x01, 0xff]);
        let reply = udp.reply.unwrap();
        assert_eq!((reply.min_len, reply.max_len), (2, 512));
        assert_eq!(reply.expect.bytes, vec![0x12, 0x30]);
        assert_eq!(reply.expect.wildcard, vec![0x00, 0x0f]);
        // No payload and no required reply: an empty datagram, silence is up.
        let spec = reals[1].check.clone().unwrap();
        assert_eq!(spec.kind, CheckKind::Udp(UdpCheck::default()));
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("ignored without require_reply")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn groups_alpha_and_inherited_settings() {
        let c = parse(
            "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  TCP_CHECK { connect_port 81 connect_timeout 2 }\n }\n}\n",
        );
        let spec = c.monitor.services[0].reals[0].check.clone().unwrap();
        assert_eq!(
            spec.timeout,
            Duration::from_secs(5),
            "keepalived reads one keyword per line"
        );
        assert!(
            c.warnings
                .iter()
                .any(|w| w.starts_with("k.conf:3: extra words after `connect_port 81`")),
            "{:?}",
            c.warnings
        );
        let c = parse(
            "virtual_server_group G {\n 10.0.0.1-3 80\n fwmark 9\n}\nvirtual_server group G {\n weight 7\n persistence_granularity 255.255.0.0\n alpha\n inhibit_on_failure\n retry 2\n connect_timeout 0\n real_server 10.1.0.1 80 { TCP_CHECK {} }\n}\n",
        );
        let s = &c.monitor.services;
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[2].service.key,
            ServiceKey::tcp("10.0.0.3:80".parse().unwrap())
        );
        assert!(matches!(
            s[3].service.key,
            ServiceKey::Fwmark { mark: 9, .. }
        ));
        assert!(c.monitor.start_down);
        let spec = s[0].reals[0].check.as_ref().unwrap();
        assert_eq!((spec.fall, spec.timeout), (3, Duration::from_secs(1)));
        assert!(s.iter().all(|x| x.on_failure == FailureAction::Quiesce));
        assert_eq!(
            s[0].reals[0].dest.weight, 7,
            "virtual_server weight is the default"
        );
        assert_eq!(
            s[0].service.persistence,
            Some(Persistence {
                timeout: 360,
                netmask: Netmask::V4(Ipv4Addr::new(255, 255, 0, 0))
            })
        );
    }

    #[test]
    fn lexer_details() {
        // Braces attached or alone, escaped comment chars, quotes, conditional lines.
        let c = parse(
            "virtual_server 10.0.0.1 80{real_server 10.0.0.2 80{weight 4}}\n@other virtual_server 10.0.0.9 80 { }\n@^other virtual_server 10.0.0.3 80\n{\n real_server 10.0.0.4 80 { MISC_CHECK { misc_path \"/bin/a\\#b # c\" } }\n}\n",
        );
        let s = &c.monitor.services;
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].reals[0].dest.weight, 4);
        assert!(matches!(
            &s[1].reals[0].check.as_ref().unwrap().kind,
            CheckKind::Command { program, args, .. } if program == Path::new("/bin/a#b") && args == &["#", "c"]
        ));
    }

    fn err(s: &str) -> String {
        parse_keepalived(s, "e.conf").unwrap_err().to_string()
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, line, needle) in [
            ("virtual_server 10.0.0.1 80 {\n", 1, "never closed"),
            ("}\n", 1, "without a matching"),
            ("{\n", 1, "without a keyword"),
            ("\ninclude /etc/keepalived/lvs.conf\n", 2, "include"),
            (
                "virtual_server 10.0.0.1 80 {\n lb_kind BRIDGE\n}\n",
                2,
                "BRIDGE",
            ),
            ("virtual_server host.example 80 {\n}\n", 1, "numeric"),
            ("virtual_server 10.0.0.1 http {\n}\n", 1, "invalid port"),
            (
                "virtual_server 10.0.0.1 80 {\n protocol ICMP\n}\n",
                2,
                "TCP, UDP or SCTP",
            ),
            (
                "virtual_server 10.0.0.1 80 {\n delay_loop -1\n}\n",
                2,
                "invalid time",
            ),
            (
                "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  weight x\n }\n}\n",
                3,
                "invalid number",
            ),
            (
                "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n  }\n }\n}\n",
                3,
                "url",
            ),
            (
                "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n   url { status_code 200 }\n  }\n }\n}\n",
                4,
                "path",
            ),
            (
                "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  MISC_CHECK {\n  }\n }\n}\n",
                3,
                "misc_path",
            ),
            (
                "virtual_server 10.0.0.1 80 {\n persistence_timeout 5\n persistence_granularity 64\n}\n",
                3,
                "netmask",
            ),
            ("virtual_server group NOPE {\n}\n", 1, "NOPE"),
            (
                "virtual_server 10.0.0.1 80 {\n lb_algo \"bad name\"\n}\n",
                2,
                "scheduler",
            ),
            ("$X=1\n", 1, "parameter"),
            ("a \"b\n", 1, "quote"),
            (
                "virtual_server_group G {\n 10.0.0.9-3 80\n}\nvirtual_server group G {\n}\n",
                2,
                "range",
            ),
            ("\nSSL\n", 2, "SSL without a { ... } block"),
            (
                "SSL {\n ca /etc/ca.pem\n certificate\n}\n",
                3,
                "certificate needs a value",
            ),
            ("SSL {\n key\n}\n", 2, "key needs a value"),
            ("SSL {\n password\n}\n", 2, "password needs a value"),
            ("SSL {\n ca\n}\n", 2, "ca needs a value"),
            (
                "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n   url {\n    path /\n    regex \"(unclosed\"\n   }\n  }\n }\n}\n",
                6,
                "regular expression \"(unclosed\"",
            ),
            (
                "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n   url {\n    path /\n    status_code 299-200\n   }\n  }\n }\n}\n",
                6,
                "runs backwards",
            ),
            (
                "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n   url {\n    path /\n    status_code 200 ok\n   }\n  }\n }\n}\n",
                6,
                "\"ok\" is not an HTTP status",
            ),
            (
                "virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n  HTTP_GET {\n   url {\n    path /\n    digest +40205b7b0fc66c1ea91c463fac6334d\n   }\n  }\n }\n}\n",
                6,
                "32 hex digits",
            ),
            (
                "virtual_server 10.0.0.1 53 {\n real_server 10.0.0.2 53 {\n  UDP_CHECK {\n   payload 0g\n  }\n }\n}\n",
                4,
                "payload: 'g'",
            ),
            (
                "virtual_server 10.0.0.1 53 {\n real_server 10.0.0.2 53 {\n  UDP_CHECK {\n   payload 1x\n  }\n }\n}\n",
                4,
                "'x' in hex string \"1x\": expected hex digits",
            ),
            (
                "virtual_server 10.0.0.1 53 {\n real_server 10.0.0.2 53 {\n  UDP_CHECK {\n   require_reply\n   min_reply_length 9\n   max_reply_length 8\n  }\n }\n}\n",
                5,
                "every reply would fail",
            ),
            (
                "virtual_server 10.0.0.1 53 {\n real_server 10.0.0.2 53 {\n  UDP_CHECK {\n   max_reply_length 70000\n  }\n }\n}\n",
                4,
                "0 to 65535",
            ),
        ] {
            let e = err(text);
            assert!(e.starts_with(&format!("e.conf:{line}: ")), "{text:?}: {e}");
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn global_ssl_block_gives_ssl_get_a_client_certificate() {
        const VS: &str = "virtual_server 10.0.0.1 443 {
  real_server 10.0.0.2 443 {
    SSL_GET { url { path / } }
  }
  real_server 10.0.0.3 80 {
    HTTP_GET { url { path / } }
  }
}
";
        let tls_of = |c: &KeepalivedConfig, i: usize| match &c.monitor.services[0].reals[i]
            .check
            .as_ref()
            .unwrap()
            .kind
        {
            CheckKind::Http { tls, .. } => tls.clone(),
            k => panic!("not an HTTP check: {k:?}"),
        };
        // After the virtual servers: it applies all the same (keepalived builds the SSL
        // context once the whole file is read).
        let text = format!(
            "{VS}SSL {{\n  password \"s3cret\"\n  ca /etc/keepalived/ca.pem\n  certificate /etc/keepalived/lb.crt\n  key /etc/keepalived/lb.key\n  cipher HIGH\n}}\n"
        );
        let c = parse(&text);
        assert_eq!(
            tls_of(&c, 0),
            Some(TlsCheck {
                server_name: None,
                ca_file: None, // keepalived never verifies: `ca` is not imported
                client_cert: Some(ClientIdentity::new(
                    "/etc/keepalived/lb.crt",
                    "/etc/keepalived/lb.key"
                )),
            })
        );
        assert_eq!(tls_of(&c, 1), None, "HTTP_GET is plain");
        let w = c.warnings.join("\n");
        assert!(
            w.contains("k.conf:10: SSL password") && w.contains("openssl pkey"),
            "{w}"
        );
        assert!(
            !w.contains("s3cret"),
            "the password stays out of warnings: {w}"
        );
        assert!(
            w.contains("k.conf:11: SSL ca ignored") && w.contains("never verifies"),
            "{w}"
        );
        assert!(
            w.contains("k.conf:14: unknown keyword \"cipher\" in SSL"),
            "{w}"
        );

        // No SSL block: SSL_GET without a client certificate, as before.
        assert_eq!(tls_of(&parse(VS), 0), Some(TlsCheck::insecure()));

        // Only one of certificate / key: OpenSSL sends no certificate; nothing imported.
        for (block, line, needle) in [
            (
                "SSL {\n certificate /c.pem\n}\n",
                2,
                "certificate without key",
            ),
            ("SSL {\n\n key /k.pem\n}\n", 3, "key without certificate"),
        ] {
            let c = parse(&format!("{block}{VS}"));
            assert_eq!(tls_of(&c, 0), Some(TlsCheck::insecure()), "{block}");
            assert!(
                c.warnings
                    .iter()
                    .any(|w| w.starts_with(&format!("k.conf:{line}: SSL {needle}"))),
                "{block}: {:?}",
                c.warnings
            );
        }

        // A second block replaces the first; a repeated keyword's last value counts.
        let c = parse(&format!(
            "SSL {{ certificate /a.crt\n key /a.key }}\n{VS}SSL {{\n certificate /b.crt\n key /x.key\n key /b.key\n}}\n"
        ));
        assert_eq!(
            tls_of(&c, 0).unwrap().client_cert,
            Some(ClientIdentity::new("/b.crt", "/b.key"))
        );
        let w = c.warnings.join("\n");
        assert!(
            w.contains("k.conf:11: SSL block given again") && w.contains("k.conf:1"),
            "{w}"
        );
        assert!(w.contains("k.conf:14: SSL key given twice"), "{w}");
    }

    #[test]
    fn includes_resolve_through_the_resolver_and_from_disk() {
        let mut seen = Vec::new();
        let c = parse_keepalived_with(
            "include lvs/*.conf\ninclude none\n",
            "main.conf",
            &mut |p, from| {
                seen.push((p.to_string(), from.to_string()));
                Ok(if p == "none" {
                    vec![]
                } else {
                    vec![(
                        "lvs/a.conf".into(),
                        "virtual_server 10.0.0.1 80 {\n lb_kind FOO\n}\n".into(),
                    )]
                })
            },
        )
        .unwrap_err()
        .to_string();
        assert!(c.starts_with("lvs/a.conf:2: "), "{c}");
        assert_eq!(seen[0], ("lvs/*.conf".into(), "main.conf".into()));

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(
            dir.path().join("d/1.conf"),
            "virtual_server 10.0.0.1 80 { }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("d/2.conf"),
            "virtual_server 10.0.0.2 80 { }\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("d/x.txt"), "garbage {\n").unwrap();
        let main = dir.path().join("keepalived.conf");
        std::fs::write(&main, "include d/*.conf\ninclude missing.conf\n").unwrap();
        let c = parse_keepalived_file(&main).unwrap();
        assert_eq!(c.monitor.services.len(), 2);
        assert!(
            c.warnings.iter().any(|w| w.contains("matched no file")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"*.conf", b"a.conf"));
        assert!(wildcard_match(b"a?c*", b"abcdef"));
        assert!(!wildcard_match(b"*.conf", b"a.cfg"));
        assert!(wildcard_match(b"*", b""));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_and_reload_applies_a_changed_file() {
        use crate::checker::Monitor;
        use crate::checker::driver::{Checker, MemoryTable};
        use crate::netlink::Request;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keepalived.conf");
        let v1 = "virtual_server 10.0.0.9 80 {\n lb_algo rr\n real_server 10.0.9.1 80 { }\n}\n";
        std::fs::write(&path, v1).unwrap();
        let cfg = parse_keepalived_file(&path).unwrap();
        let mem = MemoryTable::default();
        let checker = Arc::new(Checker::spawn(Monitor::new(cfg.monitor), mem.clone()).unwrap());
        let has = |mem: &MemoryTable, addr: &str| {
            mem.snapshot()
                .iter()
                .flat_map(|v| v.dests.iter())
                .any(|d| d.addr == addr.parse::<SocketAddr>().unwrap())
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !has(&mem, "10.0.9.1:80") {
            assert!(tokio::time::Instant::now() < deadline, "initial table");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (c2, p2) = (checker.clone(), path.clone());
        let watcher =
            tokio::spawn(async move { watch_and_reload(p2, &c2, Duration::from_millis(30)).await });
        let log_len = mem.log.lock().unwrap().len();
        let write_atomic = |text: &str| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        // A broken file changes nothing.
        write_atomic("virtual_server 10.0.0.9 80 {\n lb_kind BRIDGE\n");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(mem.log.lock().unwrap().len(), log_len);
        // One more real server: exactly one edit.
        write_atomic(&v1.replace("}\n}", "}\n real_server 10.0.9.2 80 {\n  weight 3\n }\n}"));
        while !has(&mem, "10.0.9.2:80") {
            assert!(
                tokio::time::Instant::now() < deadline + Duration::from_secs(5),
                "reload"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = mem.log.lock().unwrap()[log_len..].to_vec();
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(matches!(&log[0], Request::NewDest(_, d) if d.weight == 3));
        watcher.abort();
    }

    proptest! {
        #[test]
        fn status_codes_round_trip(ranges in proptest::collection::vec((100u16..=999, 0u16..50), 1..6)) {
            let set = StatusCodes(ranges.iter().map(|&(lo, n)| (lo, (lo + n).min(999))).collect());
            let text = set.to_string();
            prop_assert_eq!(StatusCodes::parse(text.split(' ')), Ok(set));
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = parse_keepalived(&s, "p.conf");
        }

        #[test]
        fn token_soup_never_panics(toks in proptest::collection::vec(prop_oneof![
            Just("virtual_server"), Just("real_server"), Just("virtual_server_group"),
            Just("group"), Just("fwmark"), Just("{"), Just("}"), Just("\n"),
            Just("10.0.0.1"), Just("2001:db8::1"), Just("80"), Just("0"), Just("-1"),
            Just("10.0.0.1-300"), Just("TCP_CHECK"), Just("HTTP_GET"), Just("SSL_GET"),
            Just("MISC_CHECK"), Just("SMTP_CHECK"), Just("DNS_CHECK"), Just("PING_CHECK"),
            Just("url"), Just("path"), Just("status_code"), Just("misc_path"), Just("\""),
            Just("lb_kind"), Just("TUN"), Just("type"), Just("port"), Just("delay_loop"),
            Just("1e300"), Just("retry"), Just("4294967295"), Just("persistence_timeout"),
            Just("persistence_granularity"), Just("sorry_server"), Just("host"), Just("#"),
            Just("@^x"), Just("include"), Just("alpha"), Just("inhibit_on_failure"),
            Just("SSL"), Just("certificate"), Just("key"), Just("ca"), Just("password"),
            Just("UDP_CHECK"), Just("payload"), Just("require_reply"), Just("1x"), Just("0a"),
            Just("min_reply_length"), Just("max_reply_length"), Just("digest"), Just("regex"),
            Just("200-299"), Just("(a|"), Just("9b3a0c85a887a256d6939da88aabd8cd"),
        ], 0..120)) {
            let text = toks.join(" ");
            let _ = parse_keepalived(&text, "p.conf");
        }
    }
}
