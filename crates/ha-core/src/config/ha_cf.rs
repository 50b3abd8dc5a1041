//! heartbeat's `ha.cf`: one directive per line, `#` starts a comment.

use super::duration::parse_heartbeat_time;
use super::locate::Source;
use super::validate::{self, BAUD_RATES, DEFAULT_BAUD, DEFAULT_UDP_PORT, TimingInput};
use crate::error::Result;
use crate::model::{LinkSpec, Medium};
use std::net::IpAddr;
use std::time::Duration;

/// A medium directive, kept until the whole file is read (`udpport` and `baud` may follow it).
#[derive(Debug, Clone)]
enum MediaLine {
    Bcast(String),
    Mcast {
        interface: String,
        group: String,
        port: u16,
        ttl: u32,
        looped: bool,
    },
    Ucast {
        interface: String,
        peers: Vec<String>,
    },
    Serial(String),
}

/// What ha.cf says, with the line of each setting for later errors.
#[derive(Debug, Clone, Default)]
pub(crate) struct HaCf {
    /// Timing as written.
    pub timing: TimingInput,
    /// Line of keepalive, warntime, deadtime, initdead (0: absent).
    pub timing_lines: [usize; 4],
    /// Nodes in order with their lines.
    pub nodes: Vec<(String, usize)>,
    /// `ping` and `ping_group` addresses.
    pub ping_nodes: Vec<String>,
    /// `auto_failback` (or the inverse of `nice_failback`), if given.
    pub auto_failback: Option<bool>,
    udpport: Option<u16>,
    baud: Option<u32>,
    media: Vec<(usize, MediaLine)>,
}

/// Directives heartbeat knows that have no meaning for the toolkit: accepted and ignored.
const IGNORED: &[&str] = &[
    "logfile",
    "debugfile",
    "logfacility",
    "use_logd",
    "debug",
    "coredumps",
    "realtime",
    "rtprio",
    "uuidfrom",
    "compression",
    "compression_threshold",
    "traditional_compression",
    "conn_logd_time",
    "msgfmt",
    "autojoin",
    "hbgenmethod",
    "max_rexmit_delay",
    "apiauth",
    "deadping",
    "hopfudge",
    "respawn",
];

fn on_off(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" | "1" | "y" => Some(true),
        "off" | "no" | "false" | "0" | "n" => Some(false),
        _ => None,
    }
}

fn ping_target(src: &Source<'_>, line: usize, directive: &str, addr: &str) -> Result<String> {
    validate::normalize_peer(addr, 0)
        .map(|_| addr.to_owned())
        .map_err(|m| {
            super::locate::config_error(src.path, line, directive, m.replace("peer", "ping node"))
        })
}

/// Parses ha.cf.
pub(crate) fn parse(src: &Source<'_>) -> Result<HaCf> {
    let mut cf = HaCf::default();
    for (idx, raw) in src.text.lines().enumerate() {
        let line = idx + 1;
        let content = raw.split('#').next().unwrap_or("");
        let mut words = content.split_whitespace();
        let Some(first) = words.next() else { continue };
        let directive = first.to_ascii_lowercase();
        let args: Vec<&str> = words.collect();
        let err = |message: String| {
            super::locate::config_error(src.path, line, directive.as_str(), message)
        };
        let exactly = |n: usize, usage: &str| {
            if args.len() == n {
                Ok(())
            } else {
                Err(err(format!(
                    "expected {n} argument(s), found {}; write `{usage}`",
                    args.len()
                )))
            }
        };
        let at_least = |n: usize, usage: &str| {
            if args.len() >= n {
                Ok(())
            } else {
                Err(err(format!(
                    "expected at least {n} argument(s), found {}; write `{usage}`",
                    args.len()
                )))
            }
        };
        match directive.as_str() {
            "keepalive" | "warntime" | "deadtime" | "initdead" => {
                exactly(1, &format!("{directive} 2 (seconds) or {directive} 500ms"))?;
                let d: Duration = parse_heartbeat_time(args[0]).map_err(&err)?;
                let (slot, index) = match directive.as_str() {
                    "keepalive" => (&mut cf.timing.keepalive, 0),
                    "warntime" => (&mut cf.timing.warntime, 1),
                    "deadtime" => (&mut cf.timing.deadtime, 2),
                    _ => (&mut cf.timing.initdead, 3),
                };
                *slot = Some(d);
                cf.timing_lines[index] = line;
            }
            "udpport" => {
                exactly(1, "udpport 694")?;
                let port = args[0]
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| err(format!("`{}` is not a port (1-65535)", args[0])))?;
                cf.udpport = Some(port);
            }
            "bcast" => {
                at_least(1, "bcast eth0 [eth1 ...]")?;
                for interface in &args {
                    cf.media
                        .push((line, MediaLine::Bcast((*interface).to_owned())));
                }
            }
            "mcast" => {
                exactly(5, "mcast eth0 239.0.0.1 694 1 0")?;
                let group = args[1];
                if !group.parse::<IpAddr>().is_ok_and(|ip| ip.is_multicast()) {
                    return Err(err(format!(
                        "`{group}` is not a multicast address; use one in 224.0.0.0/4, e.g. 239.0.0.1"
                    )));
                }
                let port = args[2]
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| err(format!("`{}` is not a port (1-65535)", args[2])))?;
                let ttl = args[3]
                    .parse::<u32>()
                    .ok()
                    .filter(|t| (1..=255).contains(t))
                    .ok_or_else(|| err(format!("ttl `{}` must be 1 to 255", args[3])))?;
                let looped = match args[4] {
                    "0" => false,
                    "1" => true,
                    other => return Err(err(format!("loop `{other}` must be 0 or 1"))),
                };
                cf.media.push((
                    line,
                    MediaLine::Mcast {
                        interface: args[0].to_owned(),
                        group: group.to_owned(),
                        port,
                        ttl,
                        looped,
                    },
                ));
            }
            "ucast" => {
                at_least(2, "ucast eth0 10.0.0.2")?;
                cf.media.push((
                    line,
                    MediaLine::Ucast {
                        interface: args[0].to_owned(),
                        peers: args[1..].iter().map(|s| (*s).to_owned()).collect(),
                    },
                ));
            }
            "serial" => {
                at_least(1, "serial /dev/ttyS0")?;
                for dev in &args {
                    cf.media.push((line, MediaLine::Serial((*dev).to_owned())));
                }
            }
            "baud" => {
                exactly(1, "baud 19200")?;
                let baud = args[0]
                    .parse::<u32>()
                    .ok()
                    .filter(|b| BAUD_RATES.contains(b))
                    .ok_or_else(|| {
                        err(format!(
                            "unsupported baud rate `{}`; use one of {BAUD_RATES:?}",
                            args[0]
                        ))
                    })?;
                cf.baud = Some(baud);
            }
            "auto_failback" => {
                exactly(1, "auto_failback on|off")?;
                let v = args[0].to_ascii_lowercase();
                cf.auto_failback = Some(match v.as_str() {
                    // `legacy` fails back like `on` once every node runs a current heartbeat.
                    "legacy" => true,
                    _ => on_off(&v)
                        .ok_or_else(|| err(format!("`{}` is not on, off or legacy", args[0])))?,
                });
            }
            "nice_failback" => {
                exactly(1, "nice_failback on|off")?;
                let v = on_off(args[0])
                    .ok_or_else(|| err(format!("`{}` is not on or off", args[0])))?;
                cf.auto_failback = Some(!v);
            }
            "node" => {
                at_least(1, "node NAME [NAME ...]")?;
                for name in &args {
                    validate::check_name("node name", name).map_err(&err)?;
                    if let Some((_, prev)) = cf.nodes.iter().find(|(n, _)| n == name) {
                        return Err(err(format!(
                            "node `{name}` is already listed on line {prev}; list each node once"
                        )));
                    }
                    cf.nodes.push(((*name).to_owned(), line));
                }
            }
            "ping" => {
                at_least(1, "ping 10.0.0.254 [ADDR ...]")?;
                for addr in &args {
                    cf.ping_nodes.push(ping_target(src, line, "ping", addr)?);
                }
            }
            "ping_group" => {
                at_least(2, "ping_group NAME 10.0.0.253 10.0.0.254")?;
                for addr in &args[1..] {
                    cf.ping_nodes
                        .push(ping_target(src, line, "ping_group", addr)?);
                }
            }
            "crm" | "pacemaker" => {
                if on_off(args.first().copied().unwrap_or("off")) != Some(false) {
                    return Err(err(
                        "resources are managed by Pacemaker's CIB, not haresources, which this importer cannot read; write a TOML configuration instead (see examples/config/cluster.toml)".into(),
                    ));
                }
            }
            d if IGNORED.contains(&d) => {
                tracing::debug!(file = %src.path.display(), line, directive = d, "ha.cf directive ignored");
            }
            d => {
                return Err(err(format!(
                    "unknown directive `{d}`; remove it or fix its spelling (known: keepalive, deadtime, warntime, initdead, udpport, bcast, mcast, ucast, serial, baud, auto_failback, node, ping, ping_group, respawn, logfile, debugfile, logfacility)"
                )));
            }
        }
    }
    Ok(cf)
}

impl HaCf {
    /// Builds the links: one per bcast interface, mcast line and serial device; ucast lines
    /// with the same interface are merged into one link with several peers (ha.cf is identical
    /// on every node, so it lists every peer; the transport skips its own address).
    pub fn links(&self, src: &Source<'_>) -> Result<Vec<LinkSpec>> {
        let port = self.udpport.unwrap_or(DEFAULT_UDP_PORT);
        let baud = self.baud.unwrap_or(DEFAULT_BAUD);
        let mut links: Vec<LinkSpec> = Vec::new();
        for (line, media) in &self.media {
            let medium = match media {
                MediaLine::Bcast(interface) => Medium::Bcast {
                    interface: interface.clone(),
                    port,
                },
                MediaLine::Mcast {
                    interface,
                    group,
                    port,
                    ttl,
                    looped,
                } => Medium::Mcast {
                    interface: interface.clone(),
                    group: group.clone(),
                    port: *port,
                    ttl: *ttl,
                    r#loop: *looped,
                },
                MediaLine::Ucast { interface, peers } => {
                    let mut normalized = Vec::new();
                    for p in peers {
                        normalized.push(validate::normalize_peer(p, port).map_err(|m| {
                            super::locate::config_error(src.path, *line, "ucast", m)
                        })?);
                    }
                    let existing = links.iter_mut().find_map(|l| match &mut l.medium {
                        Medium::Ucast {
                            interface: i,
                            peers,
                            ..
                        } if i == interface => Some(peers),
                        _ => None,
                    });
                    if let Some(peers) = existing {
                        for p in normalized {
                            if !peers.contains(&p) {
                                peers.push(p);
                            }
                        }
                        continue;
                    }
                    Medium::Ucast {
                        interface: interface.clone(),
                        peers: normalized,
                        port,
                    }
                }
                MediaLine::Serial(device) => Medium::Serial {
                    device: device.clone(),
                    baud,
                },
            };
            if links.len() > usize::from(u8::MAX) {
                return Err(super::locate::config_error(
                    src.path,
                    *line,
                    "link",
                    "at most 256 media are supported",
                ));
            }
            links.push(LinkSpec {
                name: format!("link{}", links.len()),
                medium,
            });
        }
        Ok(links)
    }
}
