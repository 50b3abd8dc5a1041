//! Import of ldirectord.cf into a [`MonitorConfig`].
//!
//! Supported: global `checktimeout`, `negotiatetimeout`, `connecttimeout`, `checkinterval`,
//! `failurecount`, `fallback`, `autoreload`, `quiescent`; `virtual = ADDR:PORT | FWMARK` blocks
//! (indented lines) with `real = ADDR[->ADDR][:PORT] gate|masq|ipip [WEIGHT] ["REQUEST" "RECEIVE"]`,
//! `fallback`, `scheduler`, `protocol`, `persistent`, `netmask`, `checktype`, `checkcommand`,
//! `checkport`, `service`, `request`, `receive`, `virtualhost`, `checkinterval`, `checktimeout`,
//! `negotiatetimeout`, `connecttimeout`, `failurecount`, `quiescent`, `login`, `passwd`.
//! Directives only about logging, mail or process handling are accepted and ignored (so are
//! `database` and `secret`, and `login`/`passwd` outside a virtual block); anything else is an
//! error with `file:line`.
//!
//! Negotiate checks by `service` (given, or guessed from the port like ldirectord does):
//! - `http`: HTTP GET of `request` (default `/`), Host = `virtualhost`, any 2xx status (what
//!   ldirectord's LWP calls success; LWP would also follow redirects, we do not) and `receive`
//!   as a substring of the body.
//! - `https`: the same over TLS, without certificate verification (ldirectord does not verify
//!   either); SNI = `virtualhost` when it is a DNS name.
//! - `ftp` with a `request` (ldirectord's real ftp check): a [`CheckKind::Ftp`] download:
//!   log in (`login`, default `anonymous`; `passwd`, default `ldirectord@HOSTNAME` as
//!   ldirectord sets it), `TYPE I`, `PASV` (`EPSV` for IPv6), `RETR /request` over the
//!   passive data connection, and `receive` must be in the file (an empty or absent
//!   `receive`: the download must complete). ldirectord also sends `CWD /` and ignores every
//!   error, judging only the content; here each step must succeed.
//! - `smtp`, `ftp`, `pop`, `imap`, `nntp` without `login` (ftp: and without `request`): a
//!   banner check expecting the greeting (`220`, `220`, `+OK`, `* OK`, `200`); `request` is
//!   sent first and `receive` replaces the expected text when given.
//! - `ftp`, `pop`, `imap` with a non-empty `login` (in the virtual block; `passwd` may be
//!   empty or absent) and, for ftp, no `request`: the greeting, then ldirectord's login
//!   dialogue as further banner steps ([`BannerStep`]), each reply read after its command,
//!   down naming the failed step with the password masked. pop: `USER`/`PASS`, each `+OK`,
//!   then `QUIT`. imap: `a1 LOGIN "login" "passwd"`, tagged `a1 OK`, then `a2 LOGOUT`. ftp:
//!   `USER` (331 or 230), `PASS` (230 or 202), then `QUIT`.
//!   The closing command is sent without waiting for its answer. Like ldirectord, `request`
//!   and `receive` are not used by pop and imap logins. A `login`, `passwd` or ftp
//!   `request` with a line break is an error.
//! - `pops`, `imaps`: the same banner check or login dialogue over TLS (`+OK`, `* OK`),
//!   without certificate verification; SNI = `virtualhost` when it is a DNS name.
//! - `dns`: a DNS query ([`CheckKind::Dns`]) for `request` (a leading `/` dropped, default
//!   `.`), type A, or PTR of the reverse name when `request` is an IP address (as Net::DNS
//!   does for ldirectord); `receive` must be contained in an answer (ldirectord wants it
//!   equal to an A address or PTR name; without `receive` ldirectord is always down, here
//!   a NOERROR answer is up). Over TCP when the service's protocol is tcp, as ldirectord;
//!   a virtual on port 53 without `protocol` is UDP (ldirectord's default).
//! - `simpletcp`: a banner check: `request` (optional, `\n`, `\r`, `\t` and `\\` unescaped
//!   as ldirectord does for `\n`) is sent, `receive` (required) must appear.
//!
//! `receive` is a Perl regular expression for ldirectord. The http and https checks match it
//! as one ([`BodyMatch::regex`]; a pattern the regex crate cannot compile is matched as plain
//! text, with a warning); the line protocols match it as a plain substring (a warning is
//! recorded when it contains regex metacharacters). `mysql` (port 3306) with a `login` logs in
//! ([`CheckKind::Mysql`]: `passwd`, `database`, `request` as a query that must return a
//! row). Other services (ldap, mysql without a login,
//! sip, ...) become TCP connect checks with a warning (UDP checks on udp services).
//!
//! `checktype=connect` on a udp service becomes a UDP check ([`CheckKind::Udp`]: an empty
//! datagram, down on an ICMP unreachable, silence up). ldirectord's own connect check of a
//! udp service sends nothing and cannot fail; a TCP connect would fail against a server that
//! only speaks UDP.
//!
//! `checktype=ping` becomes an ICMP echo check ([`CheckKind::Ping`]) with the connect timeout
//! (`checktimeout`, else `connecttimeout`, else 5 s).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::checker::banner::BannerStep;
use crate::checker::ftp::FtpCheck;
use crate::checker::mysql::MysqlCheck;
use crate::checker::udp::UdpCheck;
use crate::checker::{
    BodyMatch, CheckKind, CheckSpec, FailureAction, MonitorConfig, MonitoredReal, MonitoredService,
    StatusCodes, TlsCheck, banner, dns,
};
use crate::error::{Error, Result};
use crate::model::*;

/// An imported ldirectord configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdirectordConfig {
    /// What to monitor.
    pub monitor: MonitorConfig,
    /// `autoreload = yes`: reload the file when it changes.
    pub autoreload: bool,
    /// Things imported approximately (e.g. negotiate checks of protocols other than HTTP,
    /// which become TCP connect checks).
    pub warnings: Vec<String>,
}

const IGNORED: &[&str] = &[
    "logfile",
    "callback",
    "execute",
    "supervised",
    "emailalert",
    "emailalertfreq",
    "emailalertstatus",
    "emailalertfrom",
    "cleanstop",
    "smtp",
    "maintenancedir",
    "fork",
    "readdquiescent",
    "monitorfile",
    "httpmethod",
    "login",
    "passwd",
    "secret",
    "cleanstop",
];

#[derive(Debug, Clone, Default)]
struct Opts {
    checktimeout: Option<u64>,
    negotiatetimeout: Option<u64>,
    connecttimeout: Option<u64>,
    checkinterval: Option<u64>,
    failurecount: Option<u32>,
    quiescent: Option<bool>,
    fallback: Option<(String, usize)>,
}

#[derive(Debug, Default)]
struct Virtual {
    line: usize,
    addr: String,
    reals: Vec<(usize, Vec<String>)>,
    opts: Opts,
    scheduler: Option<String>,
    protocol: Option<String>,
    persistent: Option<u32>,
    netmask: Option<String>,
    checktype: Option<String>,
    checkcommand: Option<String>,
    checkport: Option<u16>,
    service: Option<String>,
    request: Option<String>,
    receive: Option<String>,
    virtualhost: Option<String>,
    login: Option<String>,
    passwd: Option<Secret>,
    database: Option<String>,
}

/// A password: never shown by Debug.
#[derive(Clone, Default)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Split a value into words; double quotes group words and are removed.
fn words(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut has = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                has = true;
            }
            c if c.is_whitespace() && !quoted => {
                if has {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if has {
        out.push(cur);
    }
    Ok(out)
}

fn yes_no(v: &str) -> std::result::Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" | "1" => Ok(true),
        "no" | "off" | "false" | "0" => Ok(false),
        _ => Err(format!("expected yes or no, got {v:?}")),
    }
}

fn number<T: std::str::FromStr>(k: &str, v: &str) -> std::result::Result<T, String> {
    v.parse().map_err(|_| format!("{k}: invalid number {v:?}"))
}

fn split_host_port(s: &str) -> std::result::Result<(String, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("missing ']' in {s:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(number("port", p)?),
            None if after.is_empty() => None,
            None => return Err(format!("bad address {s:?}")),
        };
        return Ok((h.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h.to_string(), Some(number("port", p)?))),
        _ => Ok((s.to_string(), None)),
    }
}

fn ip(s: &str) -> std::result::Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("invalid address {s:?} (numeric addresses only)"))
}

fn apply_common(o: &mut Opts, k: &str, v: &str, line: usize) -> std::result::Result<bool, String> {
    match k {
        "checktimeout" => o.checktimeout = Some(number(k, v)?),
        "negotiatetimeout" => o.negotiatetimeout = Some(number(k, v)?),
        "connecttimeout" => o.connecttimeout = Some(number(k, v)?),
        "checkinterval" => o.checkinterval = Some(number(k, v)?),
        "failurecount" => o.failurecount = Some(number(k, v)?),
        "quiescent" => o.quiescent = Some(yes_no(v)?),
        "fallback" => o.fallback = Some((v.to_string(), line)),
        _ => return Ok(false),
    }
    Ok(true)
}

fn forward(method: &str) -> std::result::Result<Forward, String> {
    match method {
        "gate" => Ok(Forward::Route),
        "masq" => Ok(Forward::Masq),
        "ipip" => Ok(Forward::Tunnel(Tunnel::default())),
        m => Err(format!(
            "unknown forwarding method {m:?} (gate, masq or ipip)"
        )),
    }
}

/// Parse ldirectord.cf text; errors name `source_name:line`.
pub fn parse_ldirectord(text: &str, source_name: &str) -> Result<LdirectordConfig> {
    let perr = |line: usize, message: String| Error::Parse {
        source_name: source_name.to_string(),
        line,
        message,
    };
    let mut global = Opts::default();
    let mut autoreload = false;
    let mut virtuals: Vec<Virtual> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = match raw.find('#') {
            // '#' inside quotes is content (receive strings); only strip unquoted comments.
            Some(p) if raw[..p].matches('"').count() % 2 == 0 => &raw[..p],
            _ => raw,
        };
        if content.trim().is_empty() {
            continue;
        }
        let indented = content.starts_with(' ') || content.starts_with('\t');
        let (k, v) = content
            .trim()
            .split_once('=')
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .ok_or_else(|| {
                perr(
                    line,
                    format!("expected key = value, got {:?}", content.trim()),
                )
            })?;
        if k == "virtual" {
            virtuals.push(Virtual {
                line,
                addr: v,
                ..Default::default()
            });
            continue;
        }
        if indented && let Some(vs) = virtuals.last_mut() {
            let r = (|| -> std::result::Result<(), String> {
                if apply_common(&mut vs.opts, &k, &v, line)? {
                    return Ok(());
                }
                let one = || -> std::result::Result<String, String> {
                    let w = words(&v)?;
                    w.into_iter()
                        .next()
                        .ok_or_else(|| format!("{k} needs a value"))
                };
                match k.as_str() {
                    "real" => vs.reals.push((line, words(&v)?)),
                    "scheduler" => vs.scheduler = Some(v.clone()),
                    "protocol" => vs.protocol = Some(v.to_ascii_lowercase()),
                    "persistent" => vs.persistent = Some(number(&k, &v)?),
                    "netmask" => vs.netmask = Some(v.clone()),
                    "checktype" => vs.checktype = Some(v.to_ascii_lowercase()),
                    "checkcommand" => vs.checkcommand = Some(one()?),
                    "checkport" => vs.checkport = Some(number(&k, &v)?),
                    "service" => vs.service = Some(v.to_ascii_lowercase()),
                    "request" => vs.request = Some(one()?),
                    "receive" => vs.receive = Some(one()?),
                    "virtualhost" => vs.virtualhost = Some(one()?),
                    "login" => vs.login = Some(one()?),
                    "passwd" => vs.passwd = Some(Secret(one()?)),
                    "database" => vs.database = Some(one()?),
                    k if IGNORED.contains(&k) => {}
                    k => return Err(format!("unknown directive {k:?} in a virtual block")),
                }
                Ok(())
            })();
            r.map_err(|m| perr(line, m))?;
            continue;
        }
        let r = (|| -> std::result::Result<(), String> {
            if apply_common(&mut global, &k, &v, line)? {
                return Ok(());
            }
            match k.as_str() {
                "autoreload" => autoreload = yes_no(&v)?,
                k if IGNORED.contains(&k) => {}
                "real" => {
                    return Err("real outside a virtual block (indent it under virtual=)".into());
                }
                k => return Err(format!("unknown directive {k:?}")),
            }
            Ok(())
        })();
        r.map_err(|m| perr(line, m))?;
    }
    let mut warnings = Vec::new();
    let mut services = Vec::new();
    for vs in &virtuals {
        services.push(build_virtual(vs, &global, &mut warnings).map_err(|(l, m)| perr(l, m))?);
    }
    Ok(LdirectordConfig {
        monitor: MonitorConfig {
            services,
            start_down: false,
        },
        autoreload,
        warnings,
    })
}

fn service_for_port(port: u16) -> Option<&'static str> {
    match port {
        80 | 8080 => Some("http"),
        443 => Some("https"),
        21 => Some("ftp"),
        25 => Some("smtp"),
        53 => Some("dns"),
        110 => Some("pop"),
        119 => Some("nntp"),
        143 => Some("imap"),
        993 => Some("imaps"),
        995 => Some("pops"),
        3306 => Some("mysql"),
        _ => None,
    }
}

fn build_virtual(
    vs: &Virtual,
    g: &Opts,
    warnings: &mut Vec<String>,
) -> std::result::Result<MonitoredService, (usize, String)> {
    let at = |m: String| (vs.line, m);
    let o = |f: fn(&Opts) -> Option<u64>| f(&vs.opts).or(f(g));
    let is_mark = vs.addr.bytes().all(|b| b.is_ascii_digit());
    // ldirectord's default protocol: fwm for a mark, udp for port 53, tcp otherwise.
    let default_proto = if is_mark {
        "fwm"
    } else if split_host_port(&vs.addr).is_ok_and(|(_, p)| p == Some(53)) {
        "udp"
    } else {
        "tcp"
    };
    let proto_name = vs.protocol.as_deref().unwrap_or(default_proto);
    let protocol = match proto_name {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        "fwm" => Protocol::Tcp,
        p => return Err(at(format!("unknown protocol {p:?} (tcp, udp, sctp, fwm)"))),
    };
    let key = if is_mark {
        let mark: u32 = number("virtual", &vs.addr).map_err(at)?;
        ServiceKey::Fwmark {
            mark,
            family: Family::V4,
        }
    } else {
        let (h, p) = split_host_port(&vs.addr).map_err(at)?;
        let addr = SocketAddr::new(ip(&h).map_err(at)?, p.unwrap_or(0));
        ServiceKey::Addr { protocol, addr }
    };
    let scheduler: Scheduler = vs
        .scheduler
        .as_deref()
        .unwrap_or("wrr")
        .parse()
        .map_err(|e: Error| at(e.to_string()))?;
    let mut service = Service::new(key, scheduler);
    if let Some(t) = vs.persistent {
        let netmask = match (&vs.netmask, key.family()) {
            (None, f) => Netmask::host(f),
            (Some(m), Family::V4) => Netmask::V4(
                m.parse::<Ipv4Addr>()
                    .map_err(|_| at(format!("invalid netmask {m:?}")))?,
            ),
            (Some(m), Family::V6) => Netmask::V6(number("netmask", m).map_err(at)?),
        };
        service.persistence = Some(Persistence {
            timeout: t,
            netmask,
        });
    }
    let svc_port = key.port();
    let svc_name = vs
        .service
        .clone()
        .or_else(|| service_for_port(svc_port).map(str::to_string));
    let checktype = vs.checktype.clone().unwrap_or_else(|| "negotiate".into());
    let interval = Duration::from_secs(o(|x| x.checkinterval).unwrap_or(10));
    let fall = vs.opts.failurecount.or(g.failurecount).unwrap_or(1);
    let connect_timeout = o(|x| x.checktimeout)
        .or(o(|x| x.connecttimeout))
        .unwrap_or(5);
    let negotiate_timeout = o(|x| x.checktimeout)
        .or(o(|x| x.negotiatetimeout))
        .unwrap_or(30);
    let on_failure = if vs.opts.quiescent.or(g.quiescent).unwrap_or(true) {
        FailureAction::Quiesce
    } else {
        FailureAction::Remove
    };
    // ldirectord matches `receive` as a Perl regular expression; the regex crate reads the
    // common ones the same. One it cannot compile (backreferences, lookaround) is matched as
    // plain text, with a warning.
    let body_match = |r: &str, warnings: &mut Vec<String>| match BodyMatch::regex(r) {
        Ok(m) => m,
        Err(e) => {
            warnings.push(format!(
                "virtual {} (line {}): {e}; matched as plain text",
                vs.addr, vs.line
            ));
            BodyMatch::from(r)
        }
    };
    let http = |request: Option<&str>,
                receive: Option<&str>,
                tls: Option<TlsCheck>,
                warnings: &mut Vec<String>| {
        let mut path = request.or(vs.request.as_deref()).unwrap_or("/").to_string();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        CheckKind::Http {
            path,
            host: vs.virtualhost.clone(),
            // ldirectord's LWP check takes any 2xx as success.
            expect_status: StatusCodes::success(),
            expect_body: receive
                .or(vs.receive.as_deref())
                .map(|r| body_match(r, warnings)),
            expect_md5: None,
            tls,
        }
    };
    // ldirectord's connect check opens a socket of the service's protocol. For udp that
    // sends nothing and never fails; a UDP check (down on an ICMP unreachable, silence up)
    // asks the nearest question that can fail. A TCP connect would fail against a UDP-only
    // server.
    let connect_kind = || match protocol {
        Protocol::Udp => (CheckKind::Udp(UdpCheck::default()), "UDP"),
        _ => (CheckKind::Connect, "TCP connect"),
    };
    // The check ldirectord's `negotiate` does for the service, with its timeout.
    let negotiate = |request: Option<&str>,
                     receive: Option<&str>,
                     warnings: &mut Vec<String>|
     -> std::result::Result<(CheckKind, u64), String> {
        let request = request.or(vs.request.as_deref());
        let receive = receive.or(vs.receive.as_deref());
        // ldirectord compares a dns receive with `eq`, not as a regular expression; http and
        // https take it as one.
        if let Some(r) = receive
            && !matches!(svc_name.as_deref(), Some("dns" | "http" | "https"))
            && r.contains(|c| "^$.*+?()[]{}|\\".contains(c))
        {
            warnings.push(format!(
                "virtual {} (line {}): receive {r:?} is matched as plain text, not as a regular expression",
                vs.addr, vs.line
            ));
        }
        // pops / imaps: the greeting over TLS, SNI from virtualhost like https.
        let tls = matches!(svc_name.as_deref(), Some("pops" | "imaps")).then(|| TlsCheck {
            server_name: vs
                .virtualhost
                .as_deref()
                .map(|h| crate::checker::tls::host_without_port(h).to_string()),
            ca_file: None,
            client_cert: None,
        });
        let banner_check = |expect: &str| {
            let kind = CheckKind::Banner {
                send: request.map(unescape),
                expect: expect.to_string(),
                steps: Vec::new(),
                tls: tls.clone(),
            };
            (kind, negotiate_timeout)
        };
        // ldirectord logs in only with a non-empty login.
        let login = vs.login.as_deref().filter(|l| !l.is_empty());
        let greeting = svc_name.as_deref().and_then(banner::default_expect);
        Ok(match (svc_name.as_deref(), greeting, login) {
            (Some("dns"), _, _) => (
                dns_check(request, receive, proto_name == "tcp")?,
                negotiate_timeout,
            ),
            (Some("http"), _, _) => (http(request, receive, None, warnings), negotiate_timeout),
            (Some("https"), _, _) => (
                http(request, receive, Some(TlsCheck::insecure()), warnings),
                negotiate_timeout,
            ),
            // ldirectord's mysql check logs in through DBI and runs `request`.
            (Some("mysql"), _, Some(user)) => (
                CheckKind::Mysql(MysqlCheck {
                    user: user.to_string(),
                    password: vs.passwd.as_ref().map_or(String::new(), |p| p.0.clone()),
                    database: vs.database.clone().filter(|d| !d.is_empty()),
                    query: request.filter(|q| !q.is_empty()).map(str::to_string),
                }),
                negotiate_timeout,
            ),
            (Some("simpletcp"), _, _) => banner_check(receive.ok_or_else(|| {
                format!(
                    "service simpletcp (virtual at line {}) needs receive= (in the virtual block or as the 5th word of real=)",
                    vs.line
                )
            })?),
            (Some("ftp"), _, _) if request.is_some_and(|r| !r.is_empty()) => {
                let file = request.unwrap_or_default();
                let slash = if file.starts_with('/') { "" } else { "/" };
                let check = FtpCheck {
                    login: login.unwrap_or("anonymous").to_string(),
                    passwd: ftp_passwd(vs.passwd.as_ref()),
                    request: format!("{slash}{file}"),
                    receive: receive.filter(|r| !r.is_empty()).map(str::to_string),
                };
                for (what, v) in [("login", &check.login), ("passwd", &check.passwd), ("request", &check.request)] {
                    if v.contains(['\r', '\n', '\0']) {
                        return Err(format!(
                            "virtual at line {}: {what} contains a line break or NUL, which an ftp command cannot carry",
                            vs.line
                        ));
                    }
                }
                (CheckKind::Ftp(check), negotiate_timeout)
            }
            (Some(svc @ ("ftp" | "pop" | "pops" | "imap" | "imaps")), Some(greeting), Some(user)) => {
                let pass = match svc {
                    "ftp" => ftp_passwd(vs.passwd.as_ref()),
                    _ => vs.passwd.as_ref().map_or("", |p| p.0.as_str()).to_string(),
                };
                let steps = login_steps(svc, user, &pass)
                    .map_err(|e| format!("virtual at line {}: {e}", vs.line))?;
                let kind = CheckKind::Banner {
                    send: None,
                    expect: greeting.to_string(),
                    steps,
                    tls: tls.clone(),
                };
                (kind, negotiate_timeout)
            }
            (_, Some(greeting), _) => banner_check(receive.unwrap_or(greeting)),
            (other, None, _) => {
                let (kind, what) = connect_kind();
                warnings.push(format!(
                    "virtual {} (line {}): negotiate check for service {:?} imported as a {what} check",
                    vs.addr, vs.line, other.unwrap_or("unknown")
                ));
                (kind, connect_timeout)
            }
        })
    };
    let spec_for = |request: Option<&str>,
                    receive: Option<&str>,
                    warnings: &mut Vec<String>|
     -> std::result::Result<Option<CheckSpec>, String> {
        let (kind, timeout) = match checktype.as_str() {
            "connect" => (connect_kind().0, connect_timeout),
            "negotiate" => negotiate(request, receive, warnings)?,
            "external" | "external-perl" => {
                let program = vs
                    .checkcommand
                    .clone()
                    .ok_or("checktype external needs checkcommand")?;
                (
                    CheckKind::Command {
                        program: program.into(),
                        args: Vec::new(),
                        dynamic: false,
                    },
                    negotiate_timeout,
                )
            }
            "on" => (CheckKind::AlwaysUp, connect_timeout),
            "off" => (CheckKind::AlwaysDown, connect_timeout),
            "ping" => (CheckKind::Ping, connect_timeout),
            // ldirectord: connect checks with a negotiate every Nth time; we always negotiate
            // protocols we speak (a stronger check) and connect otherwise.
            n if n.bytes().all(|b| b.is_ascii_digit()) => {
                let spoken = svc_name.as_deref().is_some_and(|s| {
                    matches!(s, "http" | "https" | "simpletcp" | "dns")
                        || banner::default_expect(s).is_some()
                });
                if spoken {
                    negotiate(request, receive, warnings)?
                } else {
                    (connect_kind().0, connect_timeout)
                }
            }
            t => return Err(format!("unknown checktype {t:?}")),
        };
        Ok(Some(CheckSpec {
            kind,
            interval,
            timeout: Duration::from_secs(timeout),
            rise: 1,
            fall,
        }))
    };
    let mut reals = Vec::new();
    for (line, w) in &vs.reals {
        let rerr = |m: String| (*line, m);
        let spec_addr = w
            .first()
            .ok_or_else(|| rerr("real needs an address".into()))?;
        let method = w.get(1).map(String::as_str).unwrap_or("gate");
        let fwd = forward(method).map_err(rerr)?;
        let weight: u32 = match w.get(2) {
            Some(x) => number("weight", x).map_err(rerr)?,
            None => 1,
        };
        let (request, receive) = (w.get(3).map(String::as_str), w.get(4).map(String::as_str));
        let (hosts, port) = match spec_addr.split_once("->") {
            Some((a, b)) => {
                let (b, port) = split_host_port(b).map_err(rerr)?;
                let (a, b) = (ip(a).map_err(rerr)?, ip(&b).map_err(rerr)?);
                let (IpAddr::V4(a), IpAddr::V4(b)) = (a, b) else {
                    return Err(rerr("address ranges are IPv4 only".into()));
                };
                let (a, b) = (u32::from(a), u32::from(b));
                if b < a || b - a > 1024 {
                    return Err(rerr(
                        "bad address range (end before start or more than 1024 addresses)".into(),
                    ));
                }
                (
                    (a..=b)
                        .map(|x| IpAddr::V4(Ipv4Addr::from(x)))
                        .collect::<Vec<_>>(),
                    port,
                )
            }
            None => {
                let (h, port) = split_host_port(spec_addr).map_err(rerr)?;
                (vec![ip(&h).map_err(rerr)?], port)
            }
        };
        let port = port.unwrap_or(svc_port);
        let check = spec_for(request, receive, warnings).map_err(rerr)?;
        for h in hosts {
            let dest = Destination {
                addr: SocketAddr::new(h, port),
                forward: fwd,
                weight,
                u_thresh: 0,
                l_thresh: 0,
            };
            let check_port = vs.checkport.unwrap_or(port);
            reals.push(MonitoredReal {
                dest,
                check: check.clone(),
                check_addr: (check_port != port).then(|| SocketAddr::new(h, check_port)),
            });
        }
    }
    let fallback = match vs.opts.fallback.as_ref().or(g.fallback.as_ref()) {
        None => None,
        Some((f, line)) => {
            let ferr = |m: String| (*line, m);
            let w = words(f).map_err(ferr)?;
            let (h, p) = split_host_port(
                w.first()
                    .ok_or_else(|| ferr("fallback needs an address".into()))?,
            )
            .map_err(ferr)?;
            let fwd = forward(w.get(1).map(String::as_str).unwrap_or("gate")).map_err(ferr)?;
            Some(Destination::new(
                SocketAddr::new(ip(&h).map_err(ferr)?, p.unwrap_or(svc_port)),
                fwd,
            ))
        }
    };
    Ok(MonitoredService {
        service,
        reals,
        fallback,
        on_failure,
    })
}

/// ldirectord's ftp password: the configured one, or `ldirectord@HOSTNAME` when empty or
/// absent (what ldirectord sets for `service = ftp`).
fn ftp_passwd(passwd: Option<&Secret>) -> String {
    match passwd.map(|p| p.0.as_str()).filter(|p| !p.is_empty()) {
        Some(p) => p.to_string(),
        None => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("ldirectord@{host}")
        }
    }
}

/// The dialogue after the greeting of ldirectord's `service` check with `login` and no
/// file to fetch (Net::FTP, Mail::POP3Client, Net::IMAP::Simple), ended politely without
/// waiting for the answer. FTP: `USER` (331, or 230 when no password is needed), `PASS`
/// (230, or 202 when it was superfluous), `QUIT` (with a `request` the check is a
/// [`CheckKind::Ftp`] download instead). POP3: `USER`, `PASS`, each `+OK`, `QUIT`. IMAP:
/// `a1 LOGIN "user" "pass"` (quoted strings), tagged `a1 OK`, `a2 LOGOUT`.
fn login_steps(
    service: &str,
    user: &str,
    pass: &str,
) -> std::result::Result<Vec<BannerStep>, String> {
    for (what, v) in [("login", user), ("passwd", pass)] {
        if v.contains(['\r', '\n', '\0']) {
            return Err(format!(
                "{what} contains a line break or NUL, which a {service} command cannot carry"
            ));
        }
    }
    Ok(match service {
        "ftp" => vec![
            BannerStep::new(format!("USER {user}\r\n"), &["331", "230"]),
            BannerStep::new(format!("PASS {pass}\r\n"), &["230", "202"]).with_secret(pass),
            BannerStep::new("QUIT\r\n", &[]),
        ],
        "imap" | "imaps" => {
            let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let p = quote(pass);
            vec![
                BannerStep::new(
                    format!("a1 LOGIN \"{}\" \"{p}\"\r\n", quote(user)),
                    &["a1 OK"],
                )
                .with_secret(p),
                BannerStep::new("a2 LOGOUT\r\n", &[]),
            ]
        }
        _ => vec![
            BannerStep::new(format!("USER {user}\r\n"), &["+OK"]),
            BannerStep::new(format!("PASS {pass}\r\n"), &["+OK"]).with_secret(pass),
            BannerStep::new("QUIT\r\n", &[]),
        ],
    })
}

/// ldirectord's dns check: `request` names what to look up (an address: its PTR record),
/// `receive` what an answer must contain.
fn dns_check(
    request: Option<&str>,
    receive: Option<&str>,
    tcp: bool,
) -> std::result::Result<CheckKind, String> {
    // ldirectord strips one leading slash (a leftover of the HTTP default request).
    let req = request
        .map(|r| r.strip_prefix('/').unwrap_or(r))
        .unwrap_or("");
    let (name, qtype) = match req.parse::<IpAddr>() {
        Ok(ip) => (dns::reverse_name(ip), dns::DnsType::Ptr),
        Err(_) if req.is_empty() => (".".to_string(), dns::DnsType::A),
        Err(_) => (req.to_string(), dns::DnsType::A),
    };
    dns::name_labels(&name).map_err(|e| format!("service dns: request: {e}"))?;
    Ok(CheckKind::Dns {
        name,
        qtype,
        expect: receive.filter(|r| !r.is_empty()).map(str::to_string),
        tcp,
    })
}

/// ldirectord's request escapes (it turns `\n` into a newline); `\r`, `\t` and `\\` as
/// well, since line protocols want CRLF. Other backslashes stay.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// ldirectord's `autoreload`: poll `path` every `poll` and hand a changed, valid configuration
/// to the checker (see [`crate::checker::reload::watch_file`]). Returns when the checker has
/// stopped.
pub async fn watch_and_reload(
    path: std::path::PathBuf,
    checker: &crate::checker::driver::Checker,
    poll: Duration,
) {
    crate::checker::reload::watch_file(path, checker, poll, |p| {
        let text = std::fs::read_to_string(p)
            .map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
        parse_ldirectord(&text, &p.display().to_string()).map(|c| (c.monitor, c.warnings))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const CF: &str = r#"
# Global Directives
checktimeout=3
checkinterval=1
autoreload=yes
logfile="/var/log/ldirectord.log"
quiescent=yes
fallback=127.0.0.1:80

virtual=192.168.6.240:80
	real=192.168.6.2:80 gate
	real=192.168.6.3:80 masq 5
	real=192.168.6.4->192.168.6.5:8080 ipip 2
	service=http
	request="index.html"
	receive="Test Page"
	virtualhost=some.domain.com.au
	scheduler=rr
	persistent=600
	netmask=255.255.255.0
	protocol=tcp
	checktype=negotiate

virtual=1
	real=10.0.0.5 gate
	checktype=connect
	checkport=22
	quiescent=no
	fallback=10.0.0.99:80 masq
"#;

    #[test]
    fn imports_a_typical_file() {
        let c = parse_ldirectord(CF, "ldirectord.cf").unwrap();
        assert!(c.autoreload);
        let s = &c.monitor.services;
        assert_eq!(s.len(), 2);
        let a = &s[0];
        assert_eq!(a.service.scheduler, Scheduler::Rr);
        assert_eq!(a.service.persistence.unwrap().timeout, 600);
        assert_eq!(a.reals.len(), 4);
        assert_eq!(a.reals[1].dest.forward, Forward::Masq);
        assert_eq!(a.reals[1].dest.weight, 5);
        assert_eq!(a.reals[3].dest.addr, "192.168.6.5:8080".parse().unwrap());
        let spec = a.reals[0].check.as_ref().unwrap();
        assert_eq!(spec.interval, Duration::from_secs(1));
        assert_eq!(spec.timeout, Duration::from_secs(3));
        assert_eq!(
            spec.kind,
            CheckKind::Http {
                path: "/index.html".into(),
                host: Some("some.domain.com.au".into()),
                expect_status: StatusCodes::success(),
                expect_body: Some("Test Page".into()),
                expect_md5: None,
                tls: None,
            }
        );
        assert_eq!(a.fallback.unwrap().addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(a.on_failure, FailureAction::Quiesce);
        let b = &s[1];
        assert_eq!(
            b.service.key,
            ServiceKey::Fwmark {
                mark: 1,
                family: Family::V4
            }
        );
        assert_eq!(b.on_failure, FailureAction::Remove);
        assert_eq!(b.reals[0].check_addr, Some("10.0.0.5:22".parse().unwrap()));
        assert_eq!(b.fallback.unwrap().forward, Forward::Masq);
    }

    #[test]
    fn errors_carry_file_and_line() {
        let e = parse_ldirectord("virtual=10.0.0.1:80\n\treal=10.0.0.2:80 bridge\n", "x.cf")
            .unwrap_err();
        assert!(e.to_string().starts_with("x.cf:2: "), "{e}");
        let e = parse_ldirectord("checkinterval=1\nbogus=3\n", "x.cf").unwrap_err();
        assert!(
            e.to_string().starts_with("x.cf:2: unknown directive"),
            "{e}"
        );
        let e = parse_ldirectord(
            "virtual=10.0.0.1:80\n\tchecktype=bogus\n\treal=10.0.0.2\n",
            "y.cf",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("y.cf:3: "), "{e}");
        let e = parse_ldirectord("virtual=host.example:80\n", "z.cf").unwrap_err();
        assert!(e.to_string().starts_with("z.cf:1: "), "{e}");
    }

    fn kind_of(cf: &str) -> CheckKind {
        let c = parse_ldirectord(cf, "t.cf").unwrap();
        c.monitor.services[0].reals[0]
            .check
            .as_ref()
            .unwrap()
            .kind
            .clone()
    }

    #[test]
    fn https_negotiate_is_an_unverified_tls_http_check() {
        let cf = "virtual=10.0.0.1:443\n\treal=10.0.0.2:443 masq\n\tservice=https\n\trequest=\"health\"\n\treceive=\"up\"\n\tvirtualhost=www.example.com\n";
        let c = parse_ldirectord(cf, "t.cf").unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let spec = c.monitor.services[0].reals[0].check.clone().unwrap();
        assert_eq!(spec.timeout, Duration::from_secs(30));
        assert_eq!(
            spec.kind,
            CheckKind::Http {
                path: "/health".into(),
                host: Some("www.example.com".into()),
                expect_status: StatusCodes::success(),
                expect_body: Some("up".into()),
                expect_md5: None,
                tls: Some(TlsCheck::insecure()),
            }
        );
        // Port 443 implies https; per-real request/receive override the block's.
        let k = kind_of(
            "virtual=10.0.0.1:443\n\treal=10.0.0.2:443 gate 1 \"/a\" \"b\"\n\treceive=zzz\n",
        );
        assert_eq!(
            k,
            CheckKind::Http {
                path: "/a".into(),
                host: None,
                expect_status: StatusCodes::success(),
                expect_body: Some("b".into()),
                expect_md5: None,
                tls: Some(TlsCheck::default()),
            }
        );
        // Combined checktype=N negotiates https too.
        let k = kind_of("virtual=10.0.0.1:443\n\treal=10.0.0.2:443\n\tchecktype=3\n");
        assert!(matches!(k, CheckKind::Http { tls: Some(_), .. }), "{k:?}");
    }

    #[test]
    fn line_protocols_become_banner_checks() {
        let banner = |send: Option<&str>, expect: &str| CheckKind::Banner {
            send: send.map(str::to_string),
            expect: expect.into(),
            steps: Vec::new(),
            tls: None,
        };
        for (svc, expect) in [
            ("smtp", "220"),
            ("ftp", "220"),
            ("pop", "+OK"),
            ("imap", "* OK"),
            ("nntp", "200"),
        ] {
            let cf = format!("virtual=10.0.0.1:9000\n\treal=10.0.0.2\n\tservice={svc}\n");
            let c = parse_ldirectord(&cf, "t.cf").unwrap();
            assert!(c.warnings.is_empty(), "{svc}: {:?}", c.warnings);
            assert_eq!(
                c.monitor.services[0].reals[0].check.as_ref().unwrap().kind,
                banner(None, expect),
                "{svc}"
            );
        }
        // Guessed from the port.
        assert_eq!(
            kind_of("virtual=10.0.0.1:25\n\treal=10.0.0.2\n"),
            banner(None, "220")
        );
        assert_eq!(
            kind_of("virtual=10.0.0.1:143\n\treal=10.0.0.2\n"),
            banner(None, "* OK")
        );
        // request / receive override the defaults.
        assert_eq!(
            kind_of(
                "virtual=10.0.0.1:110\n\treal=10.0.0.2\n\trequest=\"CAPA\\r\\n\"\n\treceive=\"SASL\"\n"
            ),
            banner(Some("CAPA\r\n"), "SASL")
        );
        // simpletcp: request unescaped, receive required.
        assert_eq!(
            kind_of(
                "virtual=10.0.0.1:7000\n\treal=10.0.0.2\n\tservice=simpletcp\n\trequest=\"PING\\n\"\n\treceive=\"PONG\"\n"
            ),
            banner(Some("PING\n"), "PONG")
        );
        assert_eq!(
            kind_of(
                "virtual=10.0.0.1:7000\n\treal=10.0.0.2 gate 1 \"\" \"hello\"\n\tservice=simpletcp\n"
            ),
            banner(Some(""), "hello")
        );
        let e = parse_ldirectord(
            "virtual=10.0.0.1:7000\n\tservice=simpletcp\n\trequest=\"PING\"\n\treal=10.0.0.2\n",
            "s.cf",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("s.cf:4: "), "{e}");
        assert!(e.contains("simpletcp") && e.contains("receive"), "{e}");
    }

    #[test]
    fn other_services_fall_back_to_connect_with_a_warning() {
        let c = parse_ldirectord(
            "virtual=10.0.0.1:389\n\treal=10.0.0.2\n\tservice=ldap\n",
            "t.cf",
        )
        .unwrap();
        assert_eq!(
            c.monitor.services[0].reals[0].check.as_ref().unwrap().kind,
            CheckKind::Connect
        );
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("ldap"), "{:?}", c.warnings);
        // http matches receive as a regular expression, warning only when it cannot compile.
        let body = |receive: &str| {
            let c = parse_ldirectord(
                &format!("virtual=10.0.0.1:80\n\treal=10.0.0.2\n\treceive=\"{receive}\"\n"),
                "t.cf",
            )
            .unwrap();
            match c.monitor.services[0].reals[0].check.clone().unwrap().kind {
                CheckKind::Http { expect_body, .. } => (expect_body.unwrap(), c.warnings),
                k => panic!("{k:?}"),
            }
        };
        let (m, w) = body("^OK.*");
        assert!(w.is_empty(), "{w:?}");
        assert!(m.is_match(b"OK, fine") && !m.is_match(b"NOT OK"));
        assert_eq!(body("all ok").0, BodyMatch::from("all ok"));
        let (m, w) = body("(a)\\1");
        assert_eq!(m, BodyMatch::from("(a)\\1"));
        assert!(
            w.iter().any(|w| w.contains("matched as plain text")),
            "{w:?}"
        );
        // Line protocols still match it as text, and say so.
        let c = parse_ldirectord(
            "virtual=10.0.0.1:25\n\treal=10.0.0.2\n\tservice=smtp\n\treceive=\"^220.*\"\n",
            "t.cf",
        )
        .unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("regular expression")));
    }

    #[test]
    fn mysql_service_logs_in_and_queries() {
        let c = parse_ldirectord(
            "virtual=10.0.0.1:3306\n\treal=10.0.0.2\n\tlogin=\"lvs\"\n\tpasswd=\"s3cret\"\n\tdatabase=\"health\"\n\trequest=\"SELECT 1\"\n",
            "m.cf",
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            c.monitor.services[0].reals[0].check.clone().unwrap().kind,
            CheckKind::Mysql(MysqlCheck {
                user: "lvs".into(),
                password: "s3cret".into(),
                database: Some("health".into()),
                query: Some("SELECT 1".into()),
            })
        );
        // Without a login (ldirectord could not log in either): a TCP connect, with a warning.
        let c = parse_ldirectord("virtual=10.0.0.1:3306\n\treal=10.0.0.2\n", "m.cf").unwrap();
        assert_eq!(
            c.monitor.services[0].reals[0].check.clone().unwrap().kind,
            CheckKind::Connect
        );
        assert!(
            c.warnings.iter().any(|w| w.contains("mysql")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn connect_checks_of_udp_services_are_udp_checks() {
        let kind = |cf: &str| {
            let c = parse_ldirectord(cf, "u.cf").unwrap();
            (
                c.monitor.services[0].reals[0].check.clone().unwrap().kind,
                c.warnings,
            )
        };
        let udp = CheckKind::Udp(UdpCheck::default());
        for cf in [
            "virtual=10.0.0.1:1812\n\treal=10.0.0.2\n\tprotocol=udp\n\tchecktype=connect\n",
            // Port 53 defaults to udp.
            "virtual=10.0.0.1:53\n\treal=10.0.0.2\n\tchecktype=connect\n",
            // A connect check every time but every 3rd, for a service we do not speak.
            "virtual=10.0.0.1:1812\n\treal=10.0.0.2\n\tprotocol=udp\n\tchecktype=3\n\tservice=radius\n",
        ] {
            assert_eq!(kind(cf).0, udp, "{cf}");
        }
        let (k, w) = kind(
            "virtual=10.0.0.1:1812\n\treal=10.0.0.2\n\tprotocol=udp\n\tchecktype=negotiate\n\tservice=radius\n",
        );
        assert_eq!(k, udp);
        assert!(
            w.iter().any(|w| w.contains("imported as a UDP check")),
            "{w:?}"
        );
        // TCP services keep the TCP connect.
        let (k, _) = kind("virtual=10.0.0.1:80\n\treal=10.0.0.2\n\tchecktype=connect\n");
        assert_eq!(k, CheckKind::Connect);
    }

    #[test]
    fn ping_checktype_imports_as_an_icmp_echo_check() {
        let c = parse_ldirectord(
            "checktimeout=4\nvirtual=10.0.0.1:80\n\treal=10.0.0.2\n\treal=10.0.0.3 masq\n\tchecktype=ping\n\tconnecttimeout=2\n\tcheckinterval=3\n\tfailurecount=2\n",
            "p.cf",
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let reals = &c.monitor.services[0].reals;
        assert_eq!(reals.len(), 2);
        for r in reals {
            let spec = r.check.as_ref().unwrap();
            assert_eq!(spec.kind, CheckKind::Ping);
            // checktimeout wins over connecttimeout, as for connect checks.
            assert_eq!(spec.timeout, Duration::from_secs(4));
            assert_eq!(spec.interval, Duration::from_secs(3));
            assert_eq!(spec.fall, 2);
        }
        let c = parse_ldirectord(
            "virtual=10.0.0.1:80\n\treal=10.0.0.2\n\tchecktype=ping\n\tconnecttimeout=2\n",
            "p.cf",
        )
        .unwrap();
        let spec = c.monitor.services[0].reals[0].check.clone().unwrap();
        assert_eq!(
            (spec.kind, spec.timeout),
            (CheckKind::Ping, Duration::from_secs(2))
        );
    }

    #[test]
    fn tls_greetings_for_pops_and_imaps() {
        for (port, svc, expect) in [(995, "pops", "+OK"), (993, "imaps", "* OK")] {
            // Guessed from the port, no virtualhost: no SNI.
            let cf = format!("virtual=10.0.0.1:{port}\n\treal=10.0.0.2\n");
            let c = parse_ldirectord(&cf, "t.cf").unwrap();
            assert!(c.warnings.is_empty(), "{svc}: {:?}", c.warnings);
            assert_eq!(
                c.monitor.services[0].reals[0].check.as_ref().unwrap().kind,
                CheckKind::Banner {
                    send: None,
                    expect: expect.into(),
                    steps: Vec::new(),
                    tls: Some(TlsCheck::insecure()),
                },
                "{svc}"
            );
            // Named, with a virtualhost (its port dropped) for SNI and a receive override.
            let cf = format!(
                "virtual=10.0.0.1:7000\n\treal=10.0.0.2\n\tservice={svc}\n\tvirtualhost=mail.example.com:{port}\n\treceive=\"ready\"\n"
            );
            assert_eq!(
                kind_of(&cf),
                CheckKind::Banner {
                    send: None,
                    expect: "ready".into(),
                    steps: Vec::new(),
                    tls: Some(TlsCheck {
                        server_name: Some("mail.example.com".into()),
                        ca_file: None,
                        client_cert: None,
                    }),
                },
                "{svc}"
            );
        }
        // Plain pop stays plain.
        assert!(matches!(
            kind_of("virtual=10.0.0.1:110\n\treal=10.0.0.2\n"),
            CheckKind::Banner { tls: None, .. }
        ));
    }

    fn steps_of(cf: &str) -> (CheckKind, Vec<String>) {
        let c = parse_ldirectord(cf, "l.cf").unwrap();
        let k = c.monitor.services[0].reals[0].check.clone().unwrap().kind;
        (k, c.warnings)
    }

    #[test]
    fn login_dialogues_per_service() {
        let step = |send: &str, expect: &[&str]| BannerStep::new(send, expect);
        // pop: USER / PASS, each +OK, then QUIT without waiting.
        let (k, w) = steps_of(
            "virtual=10.0.0.1:110\n\treal=10.0.0.2\n\tlogin=\"alice\"\n\tpasswd=\"s3cret\"\n",
        );
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            k,
            CheckKind::Banner {
                send: None,
                expect: "+OK".into(),
                steps: vec![
                    step("USER alice\r\n", &["+OK"]),
                    step("PASS s3cret\r\n", &["+OK"]).with_secret("s3cret"),
                    step("QUIT\r\n", &[]),
                ],
                tls: None,
            }
        );
        // The password never shows in Debug output.
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("s3cret") && dbg.contains("PASS ***"), "{dbg}");

        // pops: the same over TLS; request/receive unused (as in ldirectord).
        let (k, _) = steps_of(
            "virtual=10.0.0.1:995\n\treal=10.0.0.2\n\tlogin=\"alice\"\n\tpasswd=\"\"\n\treceive=\"x\"\n",
        );
        let CheckKind::Banner {
            expect, steps, tls, ..
        } = k
        else {
            panic!("{k:?}")
        };
        assert_eq!((expect.as_str(), tls), ("+OK", Some(TlsCheck::insecure())));
        assert_eq!(steps[1], step("PASS \r\n", &["+OK"]), "empty passwd");

        // imap and imaps: quoted LOGIN, tagged OK, LOGOUT; quotes and backslashes escaped.
        for (port, tls) in [(143, None), (993, Some(TlsCheck::insecure()))] {
            let (k, _) = steps_of(&format!(
                "virtual=10.0.0.1:{port}\n\treal=10.0.0.2\n\tlogin=\"bob\"\n\tpasswd=pa\\s'x\n"
            ));
            assert_eq!(
                k,
                CheckKind::Banner {
                    send: None,
                    expect: "* OK".into(),
                    steps: vec![
                        step("a1 LOGIN \"bob\" \"pa\\\\s'x\"\r\n", &["a1 OK"])
                            .with_secret("pa\\\\s'x"),
                        step("a2 LOGOUT\r\n", &[]),
                    ],
                    tls,
                },
                "{port}"
            );
        }

        // ftp with a request: the download check, receive matched on the file.
        let (k, w) = steps_of(
            "virtual=10.0.0.1:21\n\treal=10.0.0.2\n\tlogin=\"anonymous\"\n\tpasswd=\"ld@example\"\n\trequest=\"pub/ok.txt\"\n\treceive=\"OK\"\n",
        );
        assert_eq!(
            k,
            CheckKind::Ftp(FtpCheck {
                login: "anonymous".into(),
                passwd: "ld@example".into(),
                request: "/pub/ok.txt".into(),
                receive: Some("OK".into()),
            })
        );
        assert!(w.is_empty(), "{w:?}");
        // Without login and passwd: ldirectord's defaults; the real's request wins.
        let (k, _) = steps_of(
            "virtual=10.0.0.1:21\n\treal=10.0.0.2:21 gate 1 \"/r.txt\" \"\"\n\trequest=\"v.txt\"\n",
        );
        let CheckKind::Ftp(f) = k else {
            panic!("{k:?}")
        };
        assert_eq!(
            (f.login.as_str(), f.request.as_str(), f.receive),
            ("anonymous", "/r.txt", None)
        );
        assert!(f.passwd.starts_with("ldirectord@"), "{}", f.passwd);
        let (k, _) = steps_of("virtual=10.0.0.1:21\n\treal=10.0.0.2\n\tlogin=u\n");
        assert!(
            matches!(&k, CheckKind::Banner { steps, .. } if steps.len() == 3),
            "no request: login and QUIT only: {k:?}"
        );

        // Empty login: greeting only (ldirectord does not log in either); smtp ignores login.
        for cf in [
            "virtual=10.0.0.1:110\n\treal=10.0.0.2\n\tlogin=\"\"\n",
            "virtual=10.0.0.1:25\n\treal=10.0.0.2\n\tlogin=\"u\"\n",
        ] {
            let (k, _) = steps_of(cf);
            assert!(
                matches!(&k, CheckKind::Banner { steps, .. } if steps.is_empty()),
                "{k:?}"
            );
        }
        // Global login lines are ignored as before.
        let (k, _) = steps_of("login=u\nvirtual=10.0.0.1:110\n\treal=10.0.0.2\n");
        assert!(matches!(&k, CheckKind::Banner { steps, .. } if steps.is_empty()));
    }

    #[test]
    fn dns_service_imports_as_a_dns_check() {
        // Port 53: service dns and protocol udp (ldirectord's defaults), queries over UDP.
        let c = parse_ldirectord(
            "virtual=10.0.0.1:53\n\treal=10.0.0.2\n\trequest=\"www.example.com\"\n\treceive=\"192.0.2.7\"\n",
            "d.cf",
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let s = &c.monitor.services[0];
        assert!(
            matches!(
                s.service.key,
                ServiceKey::Addr {
                    protocol: Protocol::Udp,
                    ..
                }
            ),
            "{:?}",
            s.service.key
        );
        let spec = s.reals[0].check.as_ref().unwrap();
        assert_eq!(spec.timeout, Duration::from_secs(30));
        assert_eq!(
            spec.kind,
            CheckKind::Dns {
                name: "www.example.com".into(),
                qtype: dns::DnsType::A,
                expect: Some("192.0.2.7".into()),
                tcp: false,
            }
        );
        // protocol=tcp: over TCP; an address asks for its PTR record; a leading / dropped.
        assert_eq!(
            kind_of(
                "virtual=10.0.0.1:53\n\treal=10.0.0.2\n\tprotocol=tcp\n\trequest=\"/192.0.2.7\"\n\treceive=\"host.example.com\"\n"
            ),
            CheckKind::Dns {
                name: "7.2.0.192.in-addr.arpa".into(),
                qtype: dns::DnsType::Ptr,
                expect: Some("host.example.com".into()),
                tcp: true,
            }
        );
        // Named service on another port (tcp by default there); no request: the root.
        assert_eq!(
            kind_of("virtual=10.0.0.1:5353\n\treal=10.0.0.2\n\tservice=dns\n"),
            CheckKind::Dns {
                name: ".".into(),
                qtype: dns::DnsType::A,
                expect: None,
                tcp: true,
            }
        );
        // Combined checktype=N negotiates dns too.
        assert!(matches!(
            kind_of("virtual=10.0.0.1:53\n\treal=10.0.0.2\n\tchecktype=5\n"),
            CheckKind::Dns { tcp: false, .. }
        ));
        // A name that cannot be sent is an error with file:line.
        let e = parse_ldirectord(
            "virtual=10.0.0.1:53\n\trequest=\"bad..name\"\n\treal=10.0.0.2\n",
            "e.cf",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("e.cf:3: ") && e.contains("bad..name"), "{e}");
    }

    #[test]
    fn request_escapes() {
        assert_eq!(unescape(r"A\r\nB\tC\\D\x"), "A\r\nB\tC\\D\\x");
        assert_eq!(unescape("tail\\"), "tail\\");
    }
}
