//! From the parsed TOML ([`super::toml_schema`]) to a validated [`ClusterModel`], reporting
//! every problem at the line of the offending value.

use super::locate::Source;
use super::toml_schema::{
    AlgorithmName, AuthToml, ClassName, ConstraintName, ConstraintToml, DetectorName, FileToml,
    GroupToml, LinkKind, LinkToml, Opt, ResourceToml, TimingToml,
};
use super::validate::{
    self, BAUD_RATES, DEFAULT_BAUD, DEFAULT_OP_TIMEOUT, DEFAULT_PHI_THRESHOLD, DEFAULT_UDP_PORT,
    MIN_SECRET_LEN, TimingField, TimingInput,
};
use crate::error::{Error, Result};
use crate::ids::{GroupId, NodeId, ResourceId};
use crate::model::{
    AgentSpec, AuthAlgorithm, AuthKey, AuthSpec, ClusterModel, Constraint, DetectorKind, GroupSpec,
    LinkSpec, Medium, NodeSpec, OrderKind, Policy, QuorumMode, ResourceSpec, Timing,
};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Conversion context: where errors point and where relative `secret_file`s live.
struct Ctx<'a> {
    src: Source<'a>,
    base_dir: PathBuf,
}

impl Ctx<'_> {
    fn err(&self, span: &Range<usize>, field: &str, message: impl Into<String>) -> Error {
        self.src.error_at(span, field, message)
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.src.line_of(span.start)
    }
}

fn span_of<T>(o: &Opt<T>) -> Option<Range<usize>> {
    o.as_ref().map(Spanned::span)
}

/// Builds and validates the model. `src.path`'s directory anchors relative `secret_file`s.
pub(crate) fn build(file: &FileToml, src: Source<'_>) -> Result<ClusterModel> {
    let base_dir = src.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let ctx = Ctx { src, base_dir };

    let cluster = &file.cluster;
    validate::check_name("cluster name", cluster.name.get_ref())
        .map_err(|m| ctx.err(&cluster.name.span(), "cluster.name", m))?;

    let nodes = build_nodes(&ctx, file)?;
    let links = build_links(&ctx, file, nodes.len())?;
    let timing = build_timing(&ctx, file.timing.as_ref())?;
    let ping_nodes = build_ping_nodes(&ctx, &file.ping_nodes)?;
    let policy = build_policy(&ctx, file, nodes.len(), ping_nodes.len())?;
    let auth = build_auth(&ctx, file.auth.as_ref())?;
    let resources = build_resources(&ctx, &file.resource)?;
    let groups = build_groups(&ctx, file, &nodes, &resources)?;
    let constraints = build_constraints(&ctx, &file.constraint, &nodes, &groups)?;

    Ok(ClusterModel {
        name: cluster.name.get_ref().clone(),
        nodes,
        links,
        timing,
        policy,
        ping_nodes,
        resources: resources
            .into_iter()
            .map(|(id, (spec, _))| (id, spec))
            .collect(),
        groups,
        constraints,
        auth,
    })
}

fn build_nodes(ctx: &Ctx<'_>, file: &FileToml) -> Result<Vec<NodeSpec>> {
    let mut nodes: Vec<NodeSpec> = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ids: HashMap<u16, (usize, &str)> = HashMap::new();
    for (i, n) in file.node.iter().enumerate() {
        let node = n.get_ref();
        let name = node.name.get_ref().as_str();
        let name_span = node.name.span();
        validate::check_name("node name", name).map_err(|m| ctx.err(&name_span, "node.name", m))?;
        if let Some(line) = names.insert(name, ctx.line(&name_span)) {
            return Err(ctx.err(
                &name_span,
                "node.name",
                format!(
                    "node `{name}` is already defined on line {line}; node names must be unique"
                ),
            ));
        }
        let (id, id_span) = match &node.id {
            Some(id) => (*id.get_ref(), id.span()),
            None => {
                let id = u16::try_from(i + 1).map_err(|_| {
                    ctx.err(
                        &n.span(),
                        "node.id",
                        "too many nodes; at most 65535 are supported",
                    )
                })?;
                (id, n.span())
            }
        };
        if let Some((line, other)) = ids.insert(id, (ctx.line(&id_span), name)) {
            return Err(ctx.err(
                &id_span,
                "node.id",
                format!(
                    "node id {id} is already used by node `{other}` (line {line}); give every node a distinct `id` (ids default to the node's position, from 1)"
                ),
            ));
        }
        nodes.push(NodeSpec {
            id: NodeId(id),
            name: name.to_owned(),
            votes: node.votes.unwrap_or(1),
        });
    }
    if nodes.is_empty() {
        return Err(ctx.src.error_nowhere(
            "node",
            "no [[node]] is defined; add one [[node]] with `name = \"...\"` per cluster member",
        ));
    }
    if nodes.iter().all(|n| n.votes == 0) {
        return Err(ctx.err(
            &file.node[0].span(),
            "node.votes",
            "every node has 0 votes, so no partition could ever be quorate; give nodes `votes = 1`",
        ));
    }
    nodes.sort_by_key(|n| n.id);
    Ok(nodes)
}

/// Which optional `[[link]]` fields each kind accepts.
fn link_fields(kind: LinkKind) -> &'static [&'static str] {
    match kind {
        LinkKind::Ucast => &["interface", "peers", "port"],
        LinkKind::Mcast => &["interface", "group", "port", "ttl", "loop"],
        LinkKind::Bcast => &["interface", "port"],
        LinkKind::Serial => &["device", "baud"],
    }
}

fn build_links(ctx: &Ctx<'_>, file: &FileToml, node_count: usize) -> Result<Vec<LinkSpec>> {
    let mut links = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, l) in file.link.iter().enumerate() {
        let link = l.get_ref();
        let kind = *link.kind.get_ref();
        let present = [
            ("interface", span_of(&link.interface)),
            ("peers", span_of(&link.peers)),
            ("port", span_of(&link.port)),
            ("group", span_of(&link.group)),
            ("ttl", span_of(&link.ttl)),
            ("loop", span_of(&link.loop_)),
            ("device", span_of(&link.device)),
            ("baud", span_of(&link.baud)),
        ];
        let allowed = link_fields(kind);
        for (field, span) in present {
            if let Some(span) = span
                && !allowed.contains(&field)
            {
                return Err(ctx.err(
                    &span,
                    &format!("link.{field}"),
                    format!(
                        "`{field}` does not apply to kind = \"{}\" (which takes {}); remove it",
                        kind.name(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let name = match &link.name {
            Some(n) => {
                validate::check_name("link name", n.get_ref())
                    .map_err(|m| ctx.err(&n.span(), "link.name", m))?;
                n.get_ref().clone()
            }
            None => format!("link{i}"),
        };
        let name_span = link
            .name
            .as_ref()
            .map(Spanned::span)
            .unwrap_or_else(|| l.span());
        if let Some(line) = names.insert(name.clone(), ctx.line(&name_span)) {
            return Err(ctx.err(
                &name_span,
                "link.name",
                format!("link name `{name}` is already used on line {line}; names must be unique"),
            ));
        }
        let medium = build_medium(ctx, l, kind)?;
        links.push(LinkSpec { name, medium });
    }
    if links.len() > usize::from(u8::MAX) + 1 {
        return Err(ctx.err(
            &file.link[256].span(),
            "link",
            "at most 256 links are supported",
        ));
    }
    if links.is_empty() && node_count > 1 {
        return Err(ctx.src.error_nowhere(
            "link",
            "no [[link]] is defined, so nodes cannot hear each other; add e.g. [[link]] kind = \"ucast\" interface = \"eth0\" peers = [\"10.0.0.2\"]",
        ));
    }
    Ok(links)
}

fn required<'a, T>(
    ctx: &Ctx<'_>,
    table: &Spanned<impl Sized>,
    value: &'a Opt<T>,
    field: &str,
    hint: &str,
) -> Result<&'a Spanned<T>> {
    value.as_ref().ok_or_else(|| {
        ctx.err(
            &table.span(),
            field,
            format!("missing `{}`: {hint}", last(field)),
        )
    })
}

fn last(field: &str) -> &str {
    field.rsplit('.').next().unwrap_or(field)
}

fn build_medium(ctx: &Ctx<'_>, l: &Spanned<LinkToml>, kind: LinkKind) -> Result<Medium> {
    let link = l.get_ref();
    let port = link
        .port
        .as_ref()
        .map_or(DEFAULT_UDP_PORT, |p| *p.get_ref());
    let interface = |need: bool| -> Result<String> {
        match &link.interface {
            Some(i) if i.get_ref().trim().is_empty() && need => Err(ctx.err(
                &i.span(),
                "link.interface",
                "interface is empty; name the network interface, e.g. \"eth0\"",
            )),
            Some(i) => Ok(i.get_ref().trim().to_owned()),
            None if need => Err(ctx.err(
                &l.span(),
                "link.interface",
                format!(
                    "missing `interface`: a {} link needs e.g. interface = \"eth0\"",
                    kind.name()
                ),
            )),
            None => Ok(String::new()),
        }
    };
    Ok(match kind {
        LinkKind::Ucast => {
            let peers = required(
                ctx,
                l,
                &link.peers,
                "link.peers",
                "a ucast link needs peers = [\"10.0.0.2\"]",
            )?;
            if peers.get_ref().is_empty() {
                return Err(ctx.err(
                    &peers.span(),
                    "link.peers",
                    "peers is empty; list the other nodes' addresses",
                ));
            }
            let peers = peers
                .get_ref()
                .iter()
                .map(|p| {
                    validate::normalize_peer(p.get_ref(), port)
                        .map_err(|m| ctx.err(&p.span(), "link.peers", m))
                })
                .collect::<Result<Vec<_>>>()?;
            Medium::Ucast {
                interface: interface(false)?,
                peers,
                port,
            }
        }
        LinkKind::Mcast => {
            let group = required(
                ctx,
                l,
                &link.group,
                "link.group",
                "an mcast link needs group = \"239.0.0.1\"",
            )?;
            let is_mcast = group
                .get_ref()
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_multicast());
            if !is_mcast {
                return Err(ctx.err(
                    &group.span(),
                    "link.group",
                    format!("`{}` is not a multicast address; use one in 224.0.0.0/4 (e.g. 239.0.0.1) or ff00::/8", group.get_ref()),
                ));
            }
            let ttl = match &link.ttl {
                Some(t) if !(1..=255).contains(t.get_ref()) => {
                    return Err(ctx.err(
                        &t.span(),
                        "link.ttl",
                        "ttl must be between 1 and 255 (1 keeps packets on the local network)",
                    ));
                }
                Some(t) => *t.get_ref(),
                None => 1,
            };
            Medium::Mcast {
                interface: interface(true)?,
                group: group.get_ref().clone(),
                port,
                ttl,
                r#loop: link.loop_.as_ref().is_some_and(|b| *b.get_ref()),
            }
        }
        LinkKind::Bcast => Medium::Bcast {
            interface: interface(true)?,
            port,
        },
        LinkKind::Serial => {
            let device = required(
                ctx,
                l,
                &link.device,
                "link.device",
                "a serial link needs device = \"/dev/ttyS0\"",
            )?;
            if device.get_ref().trim().is_empty() {
                return Err(ctx.err(
                    &device.span(),
                    "link.device",
                    "device is empty; give the serial device path, e.g. \"/dev/ttyS0\"",
                ));
            }
            let baud = match &link.baud {
                Some(b) if !BAUD_RATES.contains(b.get_ref()) => {
                    return Err(ctx.err(
                        &b.span(),
                        "link.baud",
                        format!(
                            "unsupported baud rate {}; use one of {BAUD_RATES:?}",
                            b.get_ref()
                        ),
                    ));
                }
                Some(b) => *b.get_ref(),
                None => DEFAULT_BAUD,
            };
            Medium::Serial {
                device: device.get_ref().clone(),
                baud,
            }
        }
    })
}

fn build_timing(ctx: &Ctx<'_>, t: Option<&TimingToml>) -> Result<Timing> {
    let Some(t) = t else {
        return Ok(Timing::default());
    };
    let val = |o: &Opt<super::toml_schema::HumanDuration>| o.as_ref().map(|s| s.get_ref().0);
    let input = TimingInput {
        keepalive: val(&t.keepalive),
        warntime: val(&t.warntime),
        deadtime: val(&t.deadtime),
        initdead: val(&t.initdead),
    };
    let (keepalive, warntime, deadtime, initdead) =
        validate::resolve_timing(input).map_err(|(field, message)| {
            let span = match field {
                TimingField::Keepalive => span_of(&t.keepalive),
                TimingField::Warntime => span_of(&t.warntime),
                TimingField::Deadtime => span_of(&t.deadtime),
                TimingField::Initdead => span_of(&t.initdead),
            };
            let name = format!("timing.{}", field.name());
            match span {
                Some(span) => ctx.err(&span, &name, message),
                None => ctx.src.error_nowhere(name, message),
            }
        })?;
    let detector = match (t.detector.as_ref().map(|d| *d.get_ref()), &t.phi_threshold) {
        (None | Some(DetectorName::Fixed), Some(th)) => {
            return Err(ctx.err(
                &th.span(),
                "timing.phi_threshold",
                "phi_threshold applies only with detector = \"phi_accrual\"; remove it or set the detector",
            ));
        }
        (None | Some(DetectorName::Fixed), None) => DetectorKind::Fixed,
        (Some(DetectorName::PhiAccrual), th) => {
            let threshold = th.as_ref().map_or(DEFAULT_PHI_THRESHOLD, |t| *t.get_ref());
            if !(threshold.is_finite() && threshold > 0.0) {
                let span = span_of(th).unwrap_or_default();
                return Err(ctx.err(
                    &span,
                    "timing.phi_threshold",
                    "phi_threshold must be a positive number, typically 8 to 12",
                ));
            }
            DetectorKind::PhiAccrual { threshold }
        }
    };
    Ok(Timing {
        keepalive,
        warntime,
        deadtime,
        initdead,
        detector,
    })
}

fn build_ping_nodes(ctx: &Ctx<'_>, ping: &[Spanned<String>]) -> Result<Vec<String>> {
    ping.iter()
        .map(|p| {
            // Reuse the peer check; ping nodes carry no port.
            validate::normalize_peer(p.get_ref(), 0)
                .map(|_| p.get_ref().trim().to_owned())
                .map_err(|m| ctx.err(&p.span(), "ping_nodes", m.replace("peer", "ping node")))
        })
        .collect()
}

fn build_policy(
    ctx: &Ctx<'_>,
    file: &FileToml,
    node_count: usize,
    ping_count: usize,
) -> Result<Policy> {
    let defaults = Policy::default();
    let Some(p) = &file.policy else {
        return Ok(Policy {
            quorum: default_quorum(node_count),
            ..defaults
        });
    };
    let quorum = match &p.quorum {
        Some(q) if *q.get_ref() == QuorumMode::TwoNode && node_count != 2 => {
            return Err(ctx.err(
                &q.span(),
                "policy.quorum",
                format!("quorum = \"two_node\" needs exactly 2 nodes but {node_count} are defined; use \"majority\""),
            ));
        }
        Some(q) => *q.get_ref(),
        None => default_quorum(node_count),
    };
    if quorum == QuorumMode::TwoNode && ping_count == 0 {
        tracing::warn!(
            "two_node quorum without ping_nodes: a partitioned node cannot tell a dead peer from a cut link"
        );
    }
    if quorum == QuorumMode::Majority && node_count == 2 {
        tracing::warn!(
            "majority quorum on 2 nodes: losing either node stops every resource; consider quorum = \"two_node\""
        );
    }
    Ok(Policy {
        quorum,
        no_quorum_policy: p.no_quorum_policy.unwrap_or(defaults.no_quorum_policy),
        auto_failback: p.auto_failback.unwrap_or(defaults.auto_failback),
        stickiness: p.stickiness.map_or(defaults.stickiness, |s| s.0),
        migration_threshold: p
            .migration_threshold
            .map_or(defaults.migration_threshold, |t| t.0),
        // Pacemaker: failure-timeout 0 means failures never expire.
        failure_timeout: p.failure_timeout.map(|d| d.0).filter(|d| !d.is_zero()),
        fencing: p.fencing.unwrap_or(defaults.fencing),
    })
}

/// Two nodes default to `two_node` (as `pcs cluster setup` does), more to a majority.
fn default_quorum(node_count: usize) -> QuorumMode {
    if node_count == 2 {
        QuorumMode::TwoNode
    } else {
        QuorumMode::Majority
    }
}

fn build_auth(ctx: &Ctx<'_>, auth: Option<&AuthToml>) -> Result<AuthSpec> {
    let Some(a) = auth else {
        return Err(ctx.src.error_nowhere(
            "auth",
            "no [auth] section: add [auth] with a [[auth.key]] id = 1, secret_file = \"...\" (or set insecure_no_auth = true in [auth] to run unauthenticated)",
        ));
    };
    let mut keys: Vec<AuthKey> = Vec::new();
    let mut seen: HashMap<u8, usize> = HashMap::new();
    for k in &a.key {
        let key = k.get_ref();
        let id = *key.id.get_ref();
        if let Some(line) = seen.insert(id, ctx.line(&key.id.span())) {
            return Err(ctx.err(
                &key.id.span(),
                "auth.key.id",
                format!(
                    "key id {id} is already defined on line {line}; give every key a distinct id"
                ),
            ));
        }
        let algorithm = match key.algorithm.as_ref().map(|a| *a.get_ref()) {
            None | Some(AlgorithmName::Sha256) => AuthAlgorithm::HmacSha256,
            Some(AlgorithmName::Sha1) => AuthAlgorithm::HmacSha1,
            Some(AlgorithmName::Md5) => AuthAlgorithm::HmacMd5,
            Some(AlgorithmName::Crc) => AuthAlgorithm::Crc,
        };
        if algorithm == AuthAlgorithm::Crc && !a.insecure_no_auth {
            let span = span_of(&key.algorithm).unwrap_or_else(|| k.span());
            return Err(ctx.err(
                &span,
                "auth.key.algorithm",
                "algorithm \"crc\" authenticates nothing; use \"sha256\" or set insecure_no_auth = true in [auth]",
            ));
        }
        let secret = read_secret(ctx, k, algorithm)?;
        keys.push(AuthKey {
            id,
            algorithm,
            secret,
        });
    }
    let active = match &a.active {
        Some(act) => {
            let id = *act.get_ref();
            if !seen.contains_key(&id) {
                let known: Vec<String> = keys.iter().map(|k| k.id.to_string()).collect();
                return Err(ctx.err(
                    &act.span(),
                    "auth.active",
                    format!("active key {id} is not defined; define [[auth.key]] id = {id} or pick one of [{}]", known.join(", ")),
                ));
            }
            Some(id)
        }
        None if keys.len() == 1 => keys.first().map(|k| k.id),
        None if keys.is_empty() => None,
        None => {
            return Err(ctx.src.section_error(
                "auth",
                "auth.active",
                "several keys are defined; say which one signs with `active = ID` in [auth]",
            ));
        }
    };
    if keys.is_empty() && !a.insecure_no_auth {
        return Err(ctx.src.section_error(
            "auth",
            "auth.key",
            "no [[auth.key]] is defined; add one (id = 1, secret_file = \"...\") or set insecure_no_auth = true to run without authentication",
        ));
    }
    if keys.is_empty()
        || keys
            .iter()
            .any(|k| Some(k.id) == active && k.algorithm == AuthAlgorithm::Crc)
    {
        tracing::warn!("cluster traffic is NOT authenticated (insecure_no_auth)");
    }
    Ok(AuthSpec {
        active,
        keys,
        insecure_no_auth: a.insecure_no_auth,
    })
}

fn read_secret(
    ctx: &Ctx<'_>,
    k: &Spanned<super::toml_schema::KeyToml>,
    algorithm: AuthAlgorithm,
) -> Result<Vec<u8>> {
    let key = k.get_ref();
    let (secret, span, field) = match (&key.secret, &key.secret_file) {
        (Some(_), Some(f)) => {
            return Err(ctx.err(
                &f.span(),
                "auth.key.secret_file",
                "give either `secret` or `secret_file`, not both",
            ));
        }
        (Some(s), None) => (s.get_ref().as_bytes().to_vec(), s.span(), "auth.key.secret"),
        (None, Some(f)) => {
            let path = ctx.base_dir.join(f.get_ref());
            let bytes = std::fs::read(&path).map_err(|e| {
                ctx.err(&f.span(), "auth.key.secret_file", format!("cannot read secret file {}: {e}; create it (e.g. `openssl rand -base64 32 > FILE; chmod 600 FILE`)", path.display()))
            })?;
            warn_if_readable_by_others(&path);
            (trim_newline(bytes), f.span(), "auth.key.secret_file")
        }
        (None, None) if algorithm == AuthAlgorithm::Crc => return Ok(Vec::new()),
        (None, None) => {
            return Err(ctx.err(&k.span(), "auth.key.secret", "missing `secret` or `secret_file` for this key; prefer secret_file = \"/etc/ha-toolkit/authkey\""));
        }
    };
    if algorithm != AuthAlgorithm::Crc && secret.len() < MIN_SECRET_LEN {
        return Err(ctx.err(
            &span,
            field,
            format!("secret is {} bytes, shorter than {MIN_SECRET_LEN}; generate one with `openssl rand -base64 32`", secret.len()),
        ));
    }
    Ok(secret)
}

/// Drops one trailing `\n` or `\r\n` (editors add it; it is not part of the secret).
fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    bytes
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "secret file {} is accessible by group or others; chmod 600 it",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Which optional `[[resource]]` fields each class accepts.
fn class_fields(class: ClassName) -> &'static [&'static str] {
    match class {
        ClassName::Heartbeat => &["script", "args"],
        ClassName::Lsb => &["script"],
        ClassName::Ocf => &["provider", "type"],
        ClassName::Builtin => &["kind"],
    }
}

type Resources = BTreeMap<ResourceId, (ResourceSpec, Range<usize>)>;

fn build_resources(ctx: &Ctx<'_>, list: &[Spanned<ResourceToml>]) -> Result<Resources> {
    let mut out: Resources = BTreeMap::new();
    for r in list {
        let res = r.get_ref();
        let id = res.id.get_ref();
        let id_span = res.id.span();
        validate::check_name("resource id", id).map_err(|m| ctx.err(&id_span, "resource.id", m))?;
        if let Some((_, span)) = out.get(&ResourceId::from(id.as_str())) {
            return Err(ctx.err(
                &id_span,
                "resource.id",
                format!(
                    "resource `{id}` is already defined on line {}; resource ids must be unique",
                    ctx.line(span)
                ),
            ));
        }
        let class = *res.class.get_ref();
        let present = [
            ("script", span_of(&res.script)),
            ("args", span_of(&res.args)),
            ("provider", span_of(&res.provider)),
            ("type", span_of(&res.type_)),
            ("kind", span_of(&res.kind)),
        ];
        let allowed = class_fields(class);
        for (field, span) in present {
            if let Some(span) = span
                && !allowed.contains(&field)
            {
                return Err(ctx.err(
                    &span,
                    &format!("resource.{field}"),
                    format!(
                        "`{field}` does not apply to class = \"{}\" (which takes {}); remove it",
                        class.name(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let text = |o: &Opt<String>, field: &str, hint: &str| -> Result<String> {
            let v = required(ctx, r, o, field, hint)?;
            let s = v.get_ref().trim();
            if s.is_empty() || s.chars().any(char::is_whitespace) {
                return Err(ctx.err(
                    &v.span(),
                    field,
                    format!("`{}` must be a single non-empty word; {hint}", last(field)),
                ));
            }
            Ok(s.to_owned())
        };
        let agent = match class {
            ClassName::Heartbeat => AgentSpec::Heartbeat {
                script: text(
                    &res.script,
                    "resource.script",
                    "e.g. script = \"Filesystem\" (a file in resource.d)",
                )?,
                args: res
                    .args
                    .as_ref()
                    .map(|a| a.get_ref().clone())
                    .unwrap_or_default(),
            },
            ClassName::Lsb => AgentSpec::Lsb {
                script: text(
                    &res.script,
                    "resource.script",
                    "e.g. script = \"nfs-kernel-server\" (a file in /etc/init.d)",
                )?,
            },
            ClassName::Ocf => AgentSpec::Ocf {
                provider: match &res.provider {
                    Some(_) => text(
                        &res.provider,
                        "resource.provider",
                        "e.g. provider = \"heartbeat\"",
                    )?,
                    None => "heartbeat".to_owned(),
                },
                r#type: text(
                    &res.type_,
                    "resource.type",
                    "e.g. type = \"Dummy\" (an agent in /usr/lib/ocf/resource.d/PROVIDER)",
                )?,
            },
            ClassName::Builtin => AgentSpec::Builtin {
                kind: text(
                    &res.kind,
                    "resource.kind",
                    "e.g. kind = \"IPaddr\" or \"drbddisk\"",
                )?,
            },
        };
        for name in res.params.keys() {
            let ok =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(ctx.err(
                    &r.span(),
                    "resource.params",
                    format!("parameter name `{name}` must use only letters, digits and `_` (it becomes OCF_RESKEY_{name})"),
                ));
            }
        }
        let timeout = |o: &Opt<super::toml_schema::HumanDuration>,
                       field: &str|
         -> Result<std::time::Duration> {
            match o {
                Some(d) if d.get_ref().0.is_zero() => Err(ctx.err(
                    &d.span(),
                    field,
                    format!("`{}` must be greater than zero, e.g. \"20s\"", last(field)),
                )),
                Some(d) => Ok(d.get_ref().0),
                None => Ok(DEFAULT_OP_TIMEOUT),
            }
        };
        let spec = ResourceSpec {
            id: ResourceId::from(id.as_str()),
            agent,
            params: res
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
            start_timeout: timeout(&res.start_timeout, "resource.start_timeout")?,
            stop_timeout: timeout(&res.stop_timeout, "resource.stop_timeout")?,
            // "0s" disables the monitor, like Pacemaker's interval 0.
            monitor_interval: res
                .monitor_interval
                .as_ref()
                .map(|d| d.get_ref().0)
                .filter(|d| !d.is_zero()),
            monitor_timeout: timeout(&res.monitor_timeout, "resource.monitor_timeout")?,
        };
        out.insert(spec.id.clone(), (spec, id_span));
    }
    Ok(out)
}

fn build_groups(
    ctx: &Ctx<'_>,
    file: &FileToml,
    nodes: &[NodeSpec],
    resources: &Resources,
) -> Result<Vec<GroupSpec>> {
    let mut groups: Vec<GroupSpec> = Vec::new();
    let mut group_lines: HashMap<String, usize> = HashMap::new();
    // resource -> (group, line)
    let mut member_of: HashMap<String, (String, usize)> = HashMap::new();
    for g in &file.group {
        let group: &GroupToml = g.get_ref();
        let id = group.id.get_ref();
        validate::check_name("group id", id)
            .map_err(|m| ctx.err(&group.id.span(), "group.id", m))?;
        if let Some(line) = group_lines.insert(id.clone(), ctx.line(&group.id.span())) {
            return Err(ctx.err(
                &group.id.span(),
                "group.id",
                format!("group `{id}` is already defined on line {line}; group ids must be unique"),
            ));
        }
        if group.resources.get_ref().is_empty() {
            return Err(ctx.err(
                &group.resources.span(),
                "group.resources",
                "the group has no resources; list its members in start order",
            ));
        }
        let mut members = Vec::new();
        for r in group.resources.get_ref() {
            let rid = r.get_ref();
            if !resources.contains_key(&ResourceId::from(rid.as_str())) {
                let known: Vec<&str> = resources.keys().map(ResourceId::as_str).collect();
                return Err(ctx.err(
                    &r.span(),
                    "group.resources",
                    format!("`{rid}` is not a defined resource; add a [[resource]] id = \"{rid}\" or use one of [{}]", known.join(", ")),
                ));
            }
            if let Some((other, line)) =
                member_of.insert(rid.clone(), (id.clone(), ctx.line(&r.span())))
            {
                return Err(ctx.err(
                    &r.span(),
                    "group.resources",
                    format!("resource `{rid}` is already in group `{other}` (line {line}); a resource belongs to one group only"),
                ));
            }
            members.push(ResourceId::from(rid.as_str()));
        }
        let preferred_node = match &group.preferred_node {
            Some(n) => Some(node_ref(ctx, nodes, n, "group.preferred_node")?),
            None => None,
        };
        groups.push(GroupSpec {
            id: GroupId::from(id.as_str()),
            resources: members,
            preferred_node,
        });
    }
    // A resource outside every group still has to run somewhere: give it a group of its own,
    // named after it, appended in resource-id order.
    for (rid, (_, span)) in resources {
        if member_of.contains_key(rid.as_str()) {
            continue;
        }
        if let Some(line) = group_lines.get(rid.as_str()) {
            return Err(ctx.err(
                span,
                "resource.id",
                format!("resource `{rid}` is in no group, and its implicit group would clash with group `{rid}` (line {line}); add the resource to a group or rename one of them"),
            ));
        }
        groups.push(GroupSpec {
            id: GroupId::from(rid.as_str()),
            resources: vec![rid.clone()],
            preferred_node: None,
        });
    }
    Ok(groups)
}

fn node_ref(ctx: &Ctx<'_>, nodes: &[NodeSpec], n: &Spanned<String>, field: &str) -> Result<NodeId> {
    nodes
        .iter()
        .find(|node| &node.name == n.get_ref())
        .map(|node| node.id)
        .ok_or_else(|| {
            let known: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            ctx.err(
                &n.span(),
                field,
                format!(
                    "`{}` is not a defined node; use one of [{}] or add a [[node]]",
                    n.get_ref(),
                    known.join(", ")
                ),
            )
        })
}

fn group_ref(
    ctx: &Ctx<'_>,
    groups: &[GroupSpec],
    g: &Spanned<String>,
    field: &str,
) -> Result<GroupId> {
    let id = g.get_ref();
    if let Some(group) = groups.iter().find(|x| x.id.as_str() == id) {
        return Ok(group.id.clone());
    }
    let hint = match groups
        .iter()
        .find(|x| x.resources.iter().any(|r| r.as_str() == id))
    {
        Some(owner) => format!(
            "`{id}` is a resource of group `{}`; constraints apply to groups, so write `{}`",
            owner.id, owner.id
        ),
        None => {
            let known: Vec<&str> = groups.iter().map(|x| x.id.as_str()).collect();
            format!(
                "`{id}` is not a defined group; use one of [{}]",
                known.join(", ")
            )
        }
    };
    Err(ctx.err(&g.span(), field, hint))
}

fn build_constraints(
    ctx: &Ctx<'_>,
    list: &[Spanned<ConstraintToml>],
    nodes: &[NodeSpec],
    groups: &[GroupSpec],
) -> Result<Vec<Constraint>> {
    let mut out = Vec::new();
    for c in list {
        let con = c.get_ref();
        let kind = *con.type_.get_ref();
        let allowed: &[&str] = match kind {
            ConstraintName::Location => &["group", "node", "score"],
            ConstraintName::Colocation => &["group", "with", "score"],
            ConstraintName::Order => &["first", "then", "kind"],
        };
        let present = [
            ("group", span_of(&con.group)),
            ("node", span_of(&con.node)),
            ("score", span_of(&con.score)),
            ("with", span_of(&con.with)),
            ("first", span_of(&con.first)),
            ("then", span_of(&con.then)),
            ("kind", span_of(&con.kind)),
        ];
        for (field, span) in present {
            if let Some(span) = span
                && !allowed.contains(&field)
            {
                return Err(ctx.err(
                    &span,
                    &format!("constraint.{field}"),
                    format!(
                        "`{field}` does not apply to type = \"{}\" (which takes {}); remove it",
                        kind.name(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let need = |o: &Opt<String>, field: &str| -> Result<GroupId> {
            let v = required(
                ctx,
                c,
                o,
                field,
                &format!("a {} constraint needs {}", kind.name(), allowed.join(", ")),
            )?;
            group_ref(ctx, groups, v, field)
        };
        let score = || -> Result<i64> {
            required(
                ctx,
                c,
                &con.score,
                "constraint.score",
                "write score = 100, \"INFINITY\" or \"-INFINITY\"",
            )
            .map(|s| s.get_ref().0)
        };
        out.push(match kind {
            ConstraintName::Location => {
                let group = need(&con.group, "constraint.group")?;
                let node_s = required(
                    ctx,
                    c,
                    &con.node,
                    "constraint.node",
                    "a location constraint needs node = \"NAME\"",
                )?;
                let node = node_ref(ctx, nodes, node_s, "constraint.node")?;
                Constraint::Location {
                    group,
                    node,
                    score: score()?,
                }
            }
            ConstraintName::Colocation => {
                let group = need(&con.group, "constraint.group")?;
                let with = need(&con.with, "constraint.with")?;
                if group == with {
                    let span = span_of(&con.with).unwrap_or_else(|| c.span());
                    return Err(ctx.err(
                        &span,
                        "constraint.with",
                        "a group cannot be colocated with itself; name another group",
                    ));
                }
                Constraint::Colocation {
                    group,
                    with,
                    score: score()?,
                }
            }
            ConstraintName::Order => {
                let first = need(&con.first, "constraint.first")?;
                let then = need(&con.then, "constraint.then")?;
                if first == then {
                    let span = span_of(&con.then).unwrap_or_else(|| c.span());
                    return Err(ctx.err(
                        &span,
                        "constraint.then",
                        "a group cannot be ordered after itself; name another group",
                    ));
                }
                Constraint::Order {
                    first,
                    then,
                    kind: con
                        .kind
                        .as_ref()
                        .map_or(OrderKind::Mandatory, |k| *k.get_ref()),
                }
            }
        });
    }
    Ok(out)
}
