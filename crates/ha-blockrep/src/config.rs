//! Import of `drbd.conf` / `*.res` files (DRBD 8.3/8.4 syntax), with `file:line` errors.
//!
//! Understood: `include`, `global`, `common`, `resource NAME { ... }` with `protocol`, `net`
//! (`shared-secret`, `cram-hmac-alg`, `after-sb-0pri/1pri/2pri`, `ping-int`, `ping-timeout`,
//! `csums-alg`, `verify-alg`, `protocol`), `disk` (`fencing`, `resync-rate`, `c-min-rate`,
//! `c-max-rate`, `al-extents`), `syncer` (`rate`, `al-extents`, `csums-alg`, `verify-alg`),
//! `handlers` (`fence-peer`), and `on HOST { device; disk; address; meta-disk; }`.
//! Options of other DRBD features are accepted and ignored. Settings in `common` apply to every
//! resource unless the resource overrides them.

use crate::engine::{EngineConfig, Fencing};
use crate::error::{Error, Result};
use crate::repl::decide::{AfterSb0, AfterSb1, AfterSb2, SbPolicies};
use crate::repl::rate::RateMode;
use crate::state::Protocol;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where metadata lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaDisk {
    /// At the end of the backing disk.
    Internal,
    /// On another device (`meta-disk DEV [INDEX]`).
    External(PathBuf),
}

/// One `on HOST { }` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConf {
    /// Host (node) name.
    pub name: String,
    /// `device` path (e.g. /dev/drbd0), if given.
    pub device: Option<String>,
    /// Minor number (from `device minor N` or the /dev/drbdN name).
    pub minor: u32,
    /// Backing disk.
    pub disk: PathBuf,
    /// Replication address.
    pub address: SocketAddr,
    /// Metadata location.
    pub meta_disk: MetaDisk,
}

/// One resource.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceConf {
    /// Resource name.
    pub name: String,
    /// Replication protocol.
    pub protocol: Protocol,
    /// Shared secret.
    pub secret: Option<String>,
    /// Split-brain policies.
    pub after_sb: SbPolicies,
    /// Keep-alive interval.
    pub ping_int: Duration,
    /// Keep-alive timeout.
    pub ping_timeout: Duration,
    /// Checksum-based resync.
    pub csums: bool,
    /// Online verify configured.
    pub verify: bool,
    /// Fencing policy.
    pub fencing: Fencing,
    /// fence-peer handler command.
    pub fence_peer: Option<String>,
    /// Resync rate.
    pub rate: RateMode,
    /// Activity log size.
    pub al_extents: u32,
    /// The hosts.
    pub hosts: Vec<HostConf>,
    /// Line of the `resource` keyword.
    pub line: usize,
}

impl ResourceConf {
    /// The `on` section for `node`.
    pub fn host(&self, node: &str) -> Option<&HostConf> {
        self.hosts.iter().find(|h| h.name == node)
    }

    /// The other host (two-node resources).
    pub fn peer_of(&self, node: &str) -> Option<&HostConf> {
        self.hosts.iter().find(|h| h.name != node)
    }

    /// Engine configuration for this resource on `node`.
    pub fn engine_config(&self, node: &str) -> Result<EngineConfig> {
        let host = self.host(node).ok_or_else(|| {
            Error::State(format!(
                "resource {} has no `on {node}` section (hosts: {})",
                self.name,
                self.hosts
                    .iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let mut c = EngineConfig::new(&self.name, node);
        c.minor = host.minor;
        c.protocol = self.protocol;
        c.secret = self.secret.as_ref().map(|s| s.as_bytes().to_vec());
        c.after_sb = self.after_sb;
        c.ping_interval = self.ping_int;
        c.ping_timeout = self.ping_timeout;
        c.csums = self.csums;
        c.fencing = self.fencing;
        c.rate = self.rate;
        Ok(c)
    }
}

/// A parsed configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DrbdConf {
    /// Resources in file order.
    pub resources: Vec<ResourceConf>,
}

impl DrbdConf {
    /// Resource by name.
    pub fn resource(&self, name: &str) -> Option<&ResourceConf> {
        self.resources.iter().find(|r| r.name == name)
    }

    /// Parse a file (following `include`s).
    pub fn load(path: &Path) -> Result<Self> {
        let stmts = read_file(path, 0)?;
        build(&stmts)
    }

    /// Parse text; `file` names it in errors; includes are resolved relative to `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Self> {
        let stmts = parse_stmts(text, file, base, 0)?;
        build(&stmts)
    }
}

// ---------- syntax ----------

#[derive(Clone, Debug)]
struct Stmt {
    file: String,
    line: usize,
    words: Vec<String>,
    block: Option<Vec<Stmt>>,
}

impl Stmt {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Config {
            file: self.file.clone(),
            line: self.line,
            msg: msg.into(),
        }
    }
    fn key(&self) -> &str {
        self.words.first().map(String::as_str).unwrap_or("")
    }
    fn arg(&self, i: usize) -> Result<&str> {
        self.words
            .get(i)
            .map(String::as_str)
            .ok_or_else(|| self.err(format!("`{}` needs a value", self.key())))
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Semi,
}

fn tokenize(text: &str, file: &str) -> Result<Vec<(Tok, usize)>> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '{' => out.push((Tok::Open, line)),
            '}' => out.push((Tok::Close, line)),
            ';' => out.push((Tok::Semi, line)),
            '"' => {
                let start = line;
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(Error::Config {
                                file: file.into(),
                                line: start,
                                msg: "unterminated string".into(),
                            });
                        }
                        Some('"') => break,
                        Some('\\') => {
                            if let Some(n) = chars.next() {
                                s.push(n);
                            }
                        }
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            s.push(c);
                        }
                    }
                }
                out.push((Tok::Word(s), start));
            }
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"' | '#') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push((Tok::Word(s), line));
            }
        }
    }
    Ok(out)
}

fn parse_stmts(text: &str, file: &str, base: &Path, depth: usize) -> Result<Vec<Stmt>> {
    let toks = tokenize(text, file)?;
    let mut pos = 0;
    let stmts = parse_block(&toks, &mut pos, file, false)?;
    expand_includes(stmts, base, depth)
}

fn parse_block(
    toks: &[(Tok, usize)],
    pos: &mut usize,
    file: &str,
    nested: bool,
) -> Result<Vec<Stmt>> {
    let mut out = Vec::new();
    let err = |line: usize, msg: &str| Error::Config {
        file: file.into(),
        line,
        msg: msg.into(),
    };
    loop {
        let Some((tok, line)) = toks.get(*pos) else {
            if nested {
                let l = toks.last().map(|t| t.1).unwrap_or(1);
                return Err(err(l, "missing `}` at end of file"));
            }
            return Ok(out);
        };
        match tok {
            Tok::Close if nested => {
                *pos += 1;
                return Ok(out);
            }
            Tok::Close => return Err(err(*line, "unexpected `}`")),
            Tok::Semi => {
                *pos += 1; // empty statement
            }
            Tok::Open => return Err(err(*line, "`{` without a keyword")),
            Tok::Word(_) => {
                let line = *line;
                let mut words = Vec::new();
                loop {
                    match toks.get(*pos) {
                        Some((Tok::Word(w), _)) => {
                            words.push(w.clone());
                            *pos += 1;
                        }
                        Some((Tok::Semi, _)) => {
                            *pos += 1;
                            out.push(Stmt {
                                file: file.into(),
                                line,
                                words,
                                block: None,
                            });
                            break;
                        }
                        Some((Tok::Open, _)) => {
                            *pos += 1;
                            let block = parse_block(toks, pos, file, true)?;
                            out.push(Stmt {
                                file: file.into(),
                                line,
                                words,
                                block: Some(block),
                            });
                            break;
                        }
                        Some((Tok::Close, l)) => {
                            return Err(err(
                                *l,
                                &format!("missing `;` after `{}`", words.join(" ")),
                            ));
                        }
                        None => {
                            return Err(err(
                                line,
                                &format!("missing `;` after `{}`", words.join(" ")),
                            ));
                        }
                    }
                }
            }
        }
    }
}

fn read_file(path: &Path, depth: usize) -> Result<Vec<Stmt>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_stmts(&text, &path.display().to_string(), base, depth)
}

fn expand_includes(stmts: Vec<Stmt>, base: &Path, depth: usize) -> Result<Vec<Stmt>> {
    let mut out = Vec::new();
    for s in stmts {
        if s.key() == "include" && s.block.is_none() {
            if depth > 8 {
                return Err(s.err("includes nested too deeply"));
            }
            let pat = s.arg(1)?;
            for p in glob(base, pat).map_err(|e| s.err(e))? {
                out.extend(read_file(&p, depth + 1)?);
            }
        } else {
            out.push(s);
        }
    }
    Ok(out)
}

/// Minimal glob: `*` and `?` in the last path component only.
fn glob(base: &Path, pat: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let full = if Path::new(pat).is_absolute() {
        PathBuf::from(pat)
    } else {
        base.join(pat)
    };
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(vec![full]);
    }
    let dir = full.parent().unwrap_or(Path::new("."));
    let rd = std::fs::read_dir(dir).map_err(|e| format!("include {}: {e}", dir.display()))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    v.sort();
    Ok(v)
}

fn wildcard(p: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (p.chars().collect(), s.chars().collect());
    fn m(p: &[char], s: &[char]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some('*'), _) => m(&p[1..], s) || (!s.is_empty() && m(p, &s[1..])),
            (Some('?'), Some(_)) => m(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &s[1..]),
            _ => false,
        }
    }
    m(&p, &s)
}

// ---------- semantics ----------

/// Settings that `common` can provide and resources override.
#[derive(Clone, Debug, Default)]
struct Opts {
    protocol: Option<Protocol>,
    secret: Option<String>,
    sb0: Option<AfterSb0>,
    sb1: Option<AfterSb1>,
    sb2: Option<AfterSb2>,
    ping_int: Option<Duration>,
    ping_timeout: Option<Duration>,
    csums: Option<bool>,
    verify: Option<bool>,
    fencing: Option<Fencing>,
    fence_peer: Option<String>,
    rate: Option<u64>,
    c_min: Option<u64>,
    c_max: Option<u64>,
    dynamic: Option<bool>,
    al_extents: Option<u32>,
}

impl Opts {
    fn overlay(&self, o: &Opts) -> Opts {
        macro_rules! pick { ($($f:ident),*) => { Opts { $($f: o.$f.clone().or(self.$f.clone())),* } } }
        pick!(
            protocol,
            secret,
            sb0,
            sb1,
            sb2,
            ping_int,
            ping_timeout,
            csums,
            verify,
            fencing,
            fence_peer,
            rate,
            c_min,
            c_max,
            dynamic,
            al_extents
        )
    }
}

/// Sizes like `10M`, `250k`, `100M`, plain numbers in KiB (DRBD's unit for rates).
fn parse_rate(s: &Stmt, v: &str) -> Result<u64> {
    let (num, mult) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_lowercase() {
                'k' => 1u64 << 10,
                'm' => 1 << 20,
                'g' => 1 << 30,
                _ => return Err(s.err(format!("bad unit in `{v}` (use k, M or G)"))),
            };
            (&v[..i], m)
        }
        _ => (v, 1 << 10),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| s.err(format!("`{v}` is not a size")))
}

fn parse_u32(s: &Stmt, v: &str) -> Result<u32> {
    v.parse()
        .map_err(|_| s.err(format!("`{v}` is not a number")))
}

fn parse_protocol(s: &Stmt, v: &str) -> Result<Protocol> {
    match v {
        "A" | "a" => Ok(Protocol::A),
        "B" | "b" => Ok(Protocol::B),
        "C" | "c" => Ok(Protocol::C),
        _ => Err(s.err(format!("unknown protocol `{v}` (A, B or C)"))),
    }
}

fn apply_opt(o: &mut Opts, s: &Stmt) -> Result<()> {
    let v = || s.arg(1);
    match s.key() {
        "protocol" => o.protocol = Some(parse_protocol(s, v()?)?),
        "shared-secret" => o.secret = Some(v()?.to_owned()),
        "cram-hmac-alg" => {
            v()?;
        }
        "after-sb-0pri" => {
            o.sb0 = Some(match v()? {
                "disconnect" => AfterSb0::Disconnect,
                "discard-younger-primary" => AfterSb0::DiscardYoungerPrimary,
                "discard-older-primary" => AfterSb0::DiscardOlderPrimary,
                "discard-zero-changes" => AfterSb0::DiscardZeroChanges,
                "discard-least-changes" => AfterSb0::DiscardLeastChanges,
                x => return Err(s.err(format!("unsupported after-sb-0pri policy `{x}`"))),
            })
        }
        "after-sb-1pri" => {
            o.sb1 = Some(match v()? {
                "disconnect" => AfterSb1::Disconnect,
                "consensus" => AfterSb1::Consensus,
                "discard-secondary" => AfterSb1::DiscardSecondary,
                x => return Err(s.err(format!("unsupported after-sb-1pri policy `{x}`"))),
            })
        }
        "after-sb-2pri" => {
            o.sb2 = Some(match v()? {
                "disconnect" => AfterSb2::Disconnect,
                x => return Err(s.err(format!("unsupported after-sb-2pri policy `{x}`"))),
            })
        }
        // DRBD: ping-int in seconds, ping-timeout in tenths of a second.
        "ping-int" => o.ping_int = Some(Duration::from_secs(u64::from(parse_u32(s, v()?)?))),
        "ping-timeout" => {
            o.ping_timeout = Some(Duration::from_millis(100 * u64::from(parse_u32(s, v()?)?)))
        }
        "csums-alg" => o.csums = Some(!v()?.is_empty()),
        "verify-alg" => o.verify = Some(!v()?.is_empty()),
        "fencing" => {
            o.fencing = Some(match v()? {
                "dont-care" => Fencing::DontCare,
                "resource-only" => Fencing::ResourceOnly,
                x => return Err(s.err(format!("unsupported fencing policy `{x}`"))),
            })
        }
        "fence-peer" => o.fence_peer = Some(v()?.to_owned()),
        "rate" | "resync-rate" => o.rate = Some(parse_rate(s, v()?)?),
        "c-min-rate" => o.c_min = Some(parse_rate(s, v()?)?),
        "c-max-rate" => o.c_max = Some(parse_rate(s, v()?)?),
        "c-plan-ahead" => o.dynamic = Some(parse_u32(s, v()?)? > 0),
        "al-extents" => o.al_extents = Some(parse_u32(s, v()?)?),
        _ => {
            tracing::debug!(file = %s.file, line = s.line, key = s.key(), "ignoring option");
        }
    }
    Ok(())
}

fn opts_of(block: &[Stmt]) -> Result<Opts> {
    let mut o = Opts::default();
    for s in block {
        match (s.key(), &s.block) {
            ("net" | "disk" | "syncer" | "handlers" | "startup" | "options", Some(b)) => {
                for inner in b {
                    apply_opt(&mut o, inner)?;
                }
            }
            (_, None) => apply_opt(&mut o, s)?,
            _ => {}
        }
    }
    Ok(o)
}

fn host_of(s: &Stmt, block: &[Stmt]) -> Result<HostConf> {
    let name = s.arg(1)?.to_owned();
    let (mut device, mut minor, mut disk, mut address, mut meta) = (None, None, None, None, None);
    for st in block {
        match st.key() {
            "device" => {
                if st.arg(1)? == "minor" {
                    minor = Some(parse_u32(st, st.arg(2)?)?);
                } else {
                    let d = st.arg(1)?.to_owned();
                    if st.words.get(2).map(String::as_str) == Some("minor") {
                        minor = Some(parse_u32(st, st.arg(3)?)?);
                    } else if let Some(n) = d.strip_prefix("/dev/drbd") {
                        minor = n.parse().ok();
                    }
                    device = Some(d);
                }
            }
            "disk" => disk = Some(PathBuf::from(st.arg(1)?)),
            "address" => {
                // `address [ipv4|ipv6] ADDR:PORT`
                let a = if matches!(st.arg(1)?, "ipv4" | "ipv6") {
                    st.arg(2)?
                } else {
                    st.arg(1)?
                };
                address = Some(
                    a.parse::<SocketAddr>()
                        .map_err(|_| st.err(format!("`{a}` is not an address:port")))?,
                );
            }
            "meta-disk" | "flexible-meta-disk" => {
                let v = st.arg(1)?;
                meta = Some(if v == "internal" {
                    MetaDisk::Internal
                } else {
                    MetaDisk::External(PathBuf::from(v.split('[').next().unwrap_or(v)))
                });
            }
            _ => {}
        }
    }
    Ok(HostConf {
        device,
        minor: minor.unwrap_or(0),
        disk: disk.ok_or_else(|| s.err(format!("`on {name}` has no `disk`")))?,
        address: address.ok_or_else(|| s.err(format!("`on {name}` has no `address`")))?,
        meta_disk: meta.unwrap_or(MetaDisk::Internal),
        name,
    })
}

fn build(stmts: &[Stmt]) -> Result<DrbdConf> {
    let mut common = Opts::default();
    let mut conf = DrbdConf::default();
    for s in stmts {
        match (s.key(), &s.block) {
            ("global", Some(_)) | ("skip", _) => {}
            ("common", Some(b)) => common = common.overlay(&opts_of(b)?),
            ("resource", Some(b)) => {
                let name = s.arg(1)?.to_owned();
                if conf.resource(&name).is_some() {
                    return Err(s.err(format!("resource {name} defined twice")));
                }
                let o = common.overlay(&opts_of(b)?);
                let mut hosts = Vec::new();
                for st in b {
                    if let ("on", Some(hb)) = (st.key(), &st.block) {
                        hosts.push(host_of(st, hb)?);
                    }
                }
                if hosts.len() != 2 {
                    return Err(s.err(format!(
                        "resource {name} needs exactly two `on` sections, found {}",
                        hosts.len()
                    )));
                }
                let rate = match (o.dynamic, o.rate) {
                    (Some(true), _) | (None, None) => RateMode::Dynamic {
                        min: o.c_min.unwrap_or(250 << 10),
                        max: o.c_max.unwrap_or(100 << 20),
                    },
                    (_, Some(r)) => RateMode::Fixed(r),
                    (Some(false), None) => RateMode::Fixed(250 << 10),
                };
                conf.resources.push(ResourceConf {
                    name,
                    protocol: o.protocol.unwrap_or_default(),
                    secret: o.secret,
                    after_sb: SbPolicies {
                        zero: o.sb0.unwrap_or_default(),
                        one: o.sb1.unwrap_or_default(),
                        two: o.sb2.unwrap_or_default(),
                    },
                    ping_int: o.ping_int.unwrap_or(Duration::from_secs(10)),
                    ping_timeout: o.ping_timeout.unwrap_or(Duration::from_millis(500)),
                    csums: o.csums.unwrap_or(false),
                    verify: o.verify.unwrap_or(false),
                    fencing: o.fencing.unwrap_or_default(),
                    fence_peer: o.fence_peer,
                    rate,
                    al_extents: o.al_extents.unwrap_or(crate::meta::DEFAULT_AL_EXTENTS),
                    hosts,
                    line: s.line,
                });
            }
            (k, _) => return Err(s.err(format!("unknown top-level section `{k}`"))),
        }
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
# a typical 8.4 configuration
global { usage-count no; }
common {
  protocol C;
  net { after-sb-0pri discard-zero-changes; ping-timeout 5; }
  disk { c-max-rate 80M; }
}
resource r0 {
  net {
    cram-hmac-alg sha1;
    shared-secret "FooFunFactory";
    after-sb-1pri discard-secondary;
    csums-alg sha1;
  }
  disk { fencing resource-only; al-extents 257; }
  handlers { fence-peer "/usr/lib/drbd/crm-fence-peer.sh"; }
  on alice {
    device    /dev/drbd1;
    disk      /dev/sda7;
    address   10.1.1.31:7789;
    meta-disk internal;
  }
  on bob {
    device    minor 1;
    disk      /dev/sdb7;
    address   ipv4 10.1.1.32:7789;
    meta-disk /dev/sdc1[0];
  }
}
resource r1 {
  protocol A;
  syncer { rate 10M; }
  on alice { disk /dev/sda8; address 10.1.1.31:7790; }
  on bob { disk /dev/sdb8; address 10.1.1.32:7790; }
}
"#;

    #[test]
    fn parses_sample() {
        let c = DrbdConf::parse(SAMPLE, "drbd.conf", Path::new(".")).unwrap();
        let r0 = c.resource("r0").unwrap();
        assert_eq!(r0.protocol, Protocol::C);
        assert_eq!(r0.secret.as_deref(), Some("FooFunFactory"));
        assert_eq!(r0.after_sb.zero, AfterSb0::DiscardZeroChanges);
        assert_eq!(r0.after_sb.one, AfterSb1::DiscardSecondary);
        assert_eq!(r0.ping_timeout, Duration::from_millis(500));
        assert!(r0.csums);
        assert_eq!(r0.fencing, Fencing::ResourceOnly);
        assert_eq!(r0.al_extents, 257);
        assert_eq!(
            r0.rate,
            RateMode::Dynamic {
                min: 250 << 10,
                max: 80 << 20
            }
        );
        assert_eq!(r0.host("alice").unwrap().minor, 1);
        assert_eq!(r0.peer_of("alice").unwrap().name, "bob");
        assert_eq!(
            r0.host("bob").unwrap().meta_disk,
            MetaDisk::External("/dev/sdc1".into())
        );
        let r1 = c.resource("r1").unwrap();
        assert_eq!(r1.protocol, Protocol::A);
        assert_eq!(r1.rate, RateMode::Fixed(10 << 20));
        let ec = r0.engine_config("bob").unwrap();
        assert_eq!(ec.node_name, "bob");
        assert_eq!(ec.secret.as_deref(), Some(&b"FooFunFactory"[..]));
        assert!(r0.engine_config("carol").is_err());
    }

    fn err_line(text: &str) -> (usize, String) {
        match DrbdConf::parse(text, "x.res", Path::new(".")) {
            Err(Error::Config { line, msg, file }) => {
                assert_eq!(file, "x.res");
                (line, msg)
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn errors_carry_file_and_line() {
        assert_eq!(err_line("resource r0 {\n protocol D;\n}").0, 2);
        assert!(
            err_line("resource r0 {\n protocol C\n}")
                .1
                .contains("missing `;`")
        );
        assert_eq!(
            err_line("resource r0 {\n  on a { disk /x; address 1.2.3.4:5; }\n}\n").0,
            1
        );
        let (l, m) = err_line("resource r0 {\n on a {\n disk /x;\n address nowhere;\n }\n}");
        assert_eq!(l, 4);
        assert!(m.contains("nowhere"));
        assert!(err_line("resource r0 {").1.contains("missing `}`"));
        assert!(err_line("bogus { }").1.contains("bogus"));
        assert_eq!(
            err_line("\n\nresource r0 { net { after-sb-0pri violently; } }").0,
            3
        );
        assert!(
            err_line("resource r0 { shared-secret \"open")
                .1
                .contains("unterminated")
        );
    }

    #[test]
    fn includes_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("drbd.d")).unwrap();
        std::fs::write(
            dir.path().join("drbd.d/r9.res"),
            "resource r9 { on a { disk /d; address 127.0.0.1:1; } on b { disk /d; address 127.0.0.1:2; } }",
        )
        .unwrap();
        std::fs::write(dir.path().join("drbd.d/bad.res"), "resource rx {\n oops\n").unwrap();
        std::fs::write(dir.path().join("drbd.conf"), "include \"drbd.d/*9.res\";\n").unwrap();
        let c = DrbdConf::load(&dir.path().join("drbd.conf")).unwrap();
        assert_eq!(c.resources[0].name, "r9");
        std::fs::write(
            dir.path().join("drbd.conf"),
            "include \"drbd.d/bad.res\";\n",
        )
        .unwrap();
        match DrbdConf::load(&dir.path().join("drbd.conf")) {
            Err(Error::Config { file, .. }) => assert!(file.ends_with("bad.res")),
            other => panic!("{other:?}"),
        }
    }
}
