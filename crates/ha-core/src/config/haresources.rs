//! heartbeat's `haresources`: one resource group per line, `NODE RES1 RES2 ...`.
//!
//! Mapping of resource tokens (arguments are separated by `::`):
//! - `10.0.0.100` (a bare IPv4 address, optionally `/PREFIX/IF/BCAST`) and `IPaddr::SPEC`,
//!   `IPaddr2::SPEC` become [`AgentSpec::Builtin`] `kind = "IPaddr"` with params `ip`, and when
//!   given `cidr_netmask`, `nic`, `broadcast` (the toolkit's floating IP implements both).
//! - `drbddisk::RES` becomes `Builtin` `kind = "drbddisk"` with param `resource` (`all` when
//!   omitted, as the script does).
//! - `Filesystem::DEV::DIR[::FSTYPE[::OPTIONS]]` and every other name stay heartbeat
//!   `resource.d` scripts ([`AgentSpec::Heartbeat`]) called with their arguments: Filesystem is
//!   a real resource.d script and its mount logic (fsck, options) is best left to it.
//!
//! Ids are deterministic: a resource's id is its token with `::` and `/` turned into `-` and
//! other characters outside `[A-Za-z0-9_.-]` dropped (a bare address is first written
//! `IPaddr::ADDR`), e.g. `IPaddr-10.0.0.100`, `drbddisk-r0`; clashes get `-2`, `-3`, ...
//! A group's id is `group-` followed by its first resource's id.

use super::locate::{Source, config_error};
use crate::error::Result;
use crate::model::AgentSpec;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

/// One resource of a haresources line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HaResource {
    /// Derived id.
    pub id: String,
    /// Agent.
    pub agent: AgentSpec,
    /// Params (for builtin agents).
    pub params: BTreeMap<String, String>,
}

/// One haresources line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HaGroup {
    /// Derived id.
    pub id: String,
    /// Preferred node as written.
    pub node: String,
    /// Line where the group starts.
    pub line: usize,
    /// Members in start order.
    pub resources: Vec<HaResource>,
}

/// A word with the physical line it is on.
struct Word<'a> {
    text: &'a str,
    line: usize,
}

/// Splits into logical lines (joining `\` continuations), dropping comments and blanks.
fn logical_lines(text: &str) -> Vec<Vec<Word<'_>>> {
    let mut out = Vec::new();
    let mut current: Vec<Word<'_>> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let content = match raw.find('#') {
            Some(pos) => &raw[..pos],
            None => raw,
        };
        let trimmed = content.trim_end();
        let (body, continued) = match trimmed.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        current.extend(body.split_whitespace().map(|w| Word {
            text: w,
            line: idx + 1,
        }));
        if !continued && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Turns any text into an id: `[A-Za-z0-9_.-]`, no leading/trailing/double `-`, <= 64 chars.
pub(crate) fn sanitize_id(text: &str) -> String {
    let mut id = String::new();
    for c in text.replace("::", "-").chars() {
        let c = if c == '/' { '-' } else { c };
        if !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            continue;
        }
        if c == '-' && (id.is_empty() || id.ends_with('-')) {
            continue;
        }
        id.push(c);
    }
    let mut id: String = id.trim_end_matches('-').chars().take(64).collect();
    while id.ends_with('-') {
        id.pop();
    }
    if id.is_empty() {
        "resource".to_owned()
    } else {
        id
    }
}

/// Makes `base` unique among `taken` by appending `-2`, `-3`, ...
fn unique(base: String, taken: &mut HashSet<String>) -> String {
    let mut candidate = base.clone();
    let mut n = 2usize;
    while taken.contains(&candidate) {
        let suffix = format!("-{n}");
        let keep = 64usize.saturating_sub(suffix.len());
        candidate = format!("{}{suffix}", base.chars().take(keep).collect::<String>());
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

fn is_ipv4_spec(name: &str) -> bool {
    name.split('/')
        .next()
        .is_some_and(|a| a.parse::<Ipv4Addr>().is_ok())
}

/// Parses `ADDR[/PREFIX[/IF[/BCAST]]]` into IPaddr params.
fn ip_params(spec: &str) -> Result<BTreeMap<String, String>, String> {
    let parts: Vec<&str> = spec.split('/').collect();
    if parts.len() > 4 {
        return Err(format!(
            "`{spec}` has too many `/` parts; write ADDR[/PREFIX[/IF[/BCAST]]]"
        ));
    }
    let mut params = BTreeMap::new();
    let ip = parts[0];
    if ip.parse::<Ipv4Addr>().is_err() {
        return Err(format!(
            "`{ip}` is not an IPv4 address; write e.g. IPaddr::10.0.0.100/24/eth0"
        ));
    }
    params.insert("ip".to_owned(), ip.to_owned());
    if let Some(prefix) = parts.get(1).filter(|p| !p.is_empty()) {
        match prefix.parse::<u8>() {
            Ok(n) if n <= 32 => {
                params.insert("cidr_netmask".to_owned(), n.to_string());
            }
            _ => {
                return Err(format!(
                    "netmask `{prefix}` must be a prefix length from 0 to 32, e.g. 24"
                ));
            }
        }
    }
    if let Some(nic) = parts.get(2).filter(|p| !p.is_empty()) {
        params.insert("nic".to_owned(), (*nic).to_owned());
    }
    if let Some(bcast) = parts.get(3).filter(|p| !p.is_empty()) {
        if bcast.parse::<Ipv4Addr>().is_err() {
            return Err(format!("broadcast `{bcast}` is not an IPv4 address"));
        }
        params.insert("broadcast".to_owned(), (*bcast).to_owned());
    }
    Ok(params)
}

/// Maps one token to (canonical token, agent, params).
fn resource_of(token: &str) -> Result<(String, AgentSpec, BTreeMap<String, String>), String> {
    let parts: Vec<&str> = token.split("::").collect();
    let name = parts[0];
    let args = &parts[1..];
    if args.iter().any(|a| a.is_empty()) {
        return Err(format!(
            "`{token}` has an empty argument; separate arguments with a single `::`"
        ));
    }
    let builtin = |kind: &str| AgentSpec::Builtin {
        kind: kind.to_owned(),
    };
    if args.is_empty() && is_ipv4_spec(name) {
        return Ok((
            format!("IPaddr::{name}"),
            builtin("IPaddr"),
            ip_params(name)?,
        ));
    }
    match name {
        "IPaddr" | "IPaddr2" => match args {
            [spec] => Ok((token.to_owned(), builtin("IPaddr"), ip_params(spec)?)),
            _ => Err(format!(
                "{name} takes one argument; write {name}::10.0.0.100/24/eth0"
            )),
        },
        "drbddisk" => match args {
            [] => Ok((token.to_owned(), builtin("drbddisk"), resource_param("all"))),
            [res] => Ok((token.to_owned(), builtin("drbddisk"), resource_param(res))),
            _ => Err("drbddisk takes one argument; write drbddisk::r0".to_owned()),
        },
        "Filesystem" if !(2..=4).contains(&args.len()) => Err(
            "Filesystem takes 2 to 4 arguments; write Filesystem::/dev/drbd0::/srv/data::ext4"
                .to_owned(),
        ),
        _ => {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+' | '@'));
            if !ok {
                return Err(format!(
                    "`{name}` is not a valid resource script name (a file name in resource.d or init.d, without `/`)"
                ));
            }
            Ok((
                token.to_owned(),
                AgentSpec::Heartbeat {
                    script: name.to_owned(),
                    args: args.iter().map(|s| (*s).to_owned()).collect(),
                },
                BTreeMap::new(),
            ))
        }
    }
}

fn resource_param(res: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("resource".to_owned(), res.to_owned())])
}

/// Parses haresources. Node names are checked by the caller against ha.cf.
pub(crate) fn parse(src: &Source<'_>) -> Result<Vec<HaGroup>> {
    let mut groups = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut resource_ids = HashSet::new();
    let mut group_ids = HashSet::new();
    for words in logical_lines(src.text) {
        let Some((node, rest)) = words.split_first() else {
            continue;
        };
        if rest.is_empty() {
            return Err(config_error(
                src.path,
                node.line,
                node.text,
                "the line names a node but no resources; write `NODE RES1 RES2 ...` or remove it",
            ));
        }
        let mut resources = Vec::new();
        for w in rest {
            let (canonical, agent, params) =
                resource_of(w.text).map_err(|m| config_error(src.path, w.line, w.text, m))?;
            if let Some(prev) = seen.insert(canonical.clone(), w.line) {
                return Err(config_error(
                    src.path,
                    w.line,
                    w.text,
                    format!(
                        "resource `{}` is already used on line {prev}; a resource belongs to one group only",
                        w.text
                    ),
                ));
            }
            let id = unique(sanitize_id(&canonical), &mut resource_ids);
            resources.push(HaResource { id, agent, params });
        }
        let first = resources.first().map(|r| r.id.as_str()).unwrap_or("");
        let id = unique(sanitize_id(&format!("group-{first}")), &mut group_ids);
        groups.push(HaGroup {
            id,
            node: node.text.to_owned(),
            line: node.line,
            resources,
        });
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sanitised() {
        assert_eq!(
            sanitize_id("IPaddr::10.0.0.1/24/eth0"),
            "IPaddr-10.0.0.1-24-eth0"
        );
        assert_eq!(
            sanitize_id("Filesystem::/dev/drbd0::/srv/nfs::ext4"),
            "Filesystem-dev-drbd0-srv-nfs-ext4"
        );
        assert_eq!(sanitize_id("$$$"), "resource");
    }

    #[test]
    fn bare_address_is_ipaddr() {
        let (canon, agent, params) = resource_of("10.0.0.5/24/eth1/10.0.0.255").unwrap();
        assert_eq!(canon, "IPaddr::10.0.0.5/24/eth1/10.0.0.255");
        assert_eq!(
            agent,
            AgentSpec::Builtin {
                kind: "IPaddr".into()
            }
        );
        assert_eq!(params["cidr_netmask"], "24");
        assert_eq!(params["nic"], "eth1");
        assert_eq!(params["broadcast"], "10.0.0.255");
        assert!(resource_of("IPaddr::10.0.0.5/33").is_err());
        assert!(resource_of("IPaddr::nonsense").is_err());
        assert!(resource_of("drbddisk::a::b").is_err());
        assert!(resource_of("foo::").is_err());
        assert!(resource_of("../bin/sh").is_err());
    }
}
