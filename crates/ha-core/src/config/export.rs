//! Writing a [`ClusterModel`] back as TOML, so a heartbeat configuration can be migrated once
//! (`import_heartbeat` then [`to_toml_string`]) and maintained as TOML from then on.
//! Loading the output with [`super::from_toml_str`] gives back the same model.

use super::duration::format_duration;
use crate::error::{Error, Result};
use crate::model::{
    AgentSpec, AuthAlgorithm, ClusterModel, Constraint, DetectorKind, Medium, NoQuorumPolicy,
    OrderKind, QuorumMode,
};
use std::time::Duration;
use toml::{Table, Value};

/// Top-level keys in output order; plain values (ping_nodes) must precede every table.
const SECTION_ORDER: &[&str] = &[
    "ping_nodes",
    "cluster",
    "node",
    "link",
    "timing",
    "policy",
    "auth",
    "resource",
    "group",
    "constraint",
];

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn d(v: Duration) -> Value {
    Value::String(format_duration(v))
}

fn int(v: impl Into<i64>) -> Value {
    Value::Integer(v.into())
}

fn array_of_tables(tables: Vec<Table>) -> Value {
    Value::Array(tables.into_iter().map(Value::Table).collect())
}

fn node_name(model: &ClusterModel, id: crate::ids::NodeId) -> Result<Value> {
    model
        .node(id)
        .map(|n| s(&n.name))
        .ok_or_else(|| Error::Invalid(format!("node {id} is referenced but not defined")))
}

/// Renders the model as a TOML cluster file. Secrets are written inline (`secret = "..."`):
/// move them to a `secret_file` of mode 600 before sharing the file. Fails when a secret is
/// not UTF-8 (TOML strings cannot hold it; use a `secret_file`).
pub fn to_toml_string(model: &ClusterModel) -> Result<String> {
    let mut root = Table::new();
    if !model.ping_nodes.is_empty() {
        root.insert(
            "ping_nodes".into(),
            Value::Array(model.ping_nodes.iter().map(|p| s(p)).collect()),
        );
    }
    root.insert(
        "cluster".into(),
        Value::Table(Table::from_iter([("name".to_owned(), s(&model.name))])),
    );
    let nodes = model
        .nodes
        .iter()
        .map(|n| {
            Table::from_iter([
                ("name".to_owned(), s(&n.name)),
                ("id".to_owned(), int(n.id.0)),
                ("votes".to_owned(), int(n.votes)),
            ])
        })
        .collect();
    root.insert("node".into(), array_of_tables(nodes));
    if !model.links.is_empty() {
        let links = model
            .links
            .iter()
            .map(|l| {
                let mut t = Table::from_iter([("name".to_owned(), s(&l.name))]);
                let mut put = |k: &str, v: Value| {
                    t.insert(k.to_owned(), v);
                };
                match &l.medium {
                    Medium::Ucast {
                        interface,
                        peers,
                        port,
                    } => {
                        put("kind", s("ucast"));
                        if !interface.is_empty() {
                            put("interface", s(interface));
                        }
                        put("peers", Value::Array(peers.iter().map(|p| s(p)).collect()));
                        put("port", int(*port));
                    }
                    Medium::Mcast {
                        interface,
                        group,
                        port,
                        ttl,
                        r#loop,
                    } => {
                        put("kind", s("mcast"));
                        put("interface", s(interface));
                        put("group", s(group));
                        put("port", int(*port));
                        put("ttl", int(*ttl));
                        put("loop", Value::Boolean(*r#loop));
                    }
                    Medium::Bcast { interface, port } => {
                        put("kind", s("bcast"));
                        put("interface", s(interface));
                        put("port", int(*port));
                    }
                    Medium::Serial { device, baud } => {
                        put("kind", s("serial"));
                        put("device", s(device));
                        put("baud", int(*baud));
                    }
                }
                t
            })
            .collect();
        root.insert("link".into(), array_of_tables(links));
    }
    let t = &model.timing;
    let mut timing = Table::from_iter([
        ("keepalive".to_owned(), d(t.keepalive)),
        ("warntime".to_owned(), d(t.warntime)),
        ("deadtime".to_owned(), d(t.deadtime)),
        ("initdead".to_owned(), d(t.initdead)),
    ]);
    match t.detector {
        DetectorKind::Fixed => {
            timing.insert("detector".into(), s("fixed"));
        }
        DetectorKind::PhiAccrual { threshold } => {
            timing.insert("detector".into(), s("phi_accrual"));
            timing.insert("phi_threshold".into(), Value::Float(threshold));
        }
    }
    root.insert("timing".into(), Value::Table(timing));
    let p = &model.policy;
    let policy = Table::from_iter([
        (
            "quorum".to_owned(),
            s(match p.quorum {
                QuorumMode::Majority => "majority",
                QuorumMode::TwoNode => "two_node",
                QuorumMode::None => "none",
            }),
        ),
        (
            "no_quorum_policy".to_owned(),
            s(match p.no_quorum_policy {
                NoQuorumPolicy::Stop => "stop",
                NoQuorumPolicy::Freeze => "freeze",
                NoQuorumPolicy::Ignore => "ignore",
            }),
        ),
        ("auto_failback".to_owned(), Value::Boolean(p.auto_failback)),
        ("stickiness".to_owned(), int(p.stickiness)),
        (
            "migration_threshold".to_owned(),
            match p.migration_threshold {
                Some(n) => int(n),
                None => s("INFINITY"),
            },
        ),
        (
            "failure_timeout".to_owned(),
            d(p.failure_timeout.unwrap_or(Duration::ZERO)),
        ),
        ("fencing".to_owned(), Value::Boolean(p.fencing)),
    ]);
    root.insert("policy".into(), Value::Table(policy));
    let mut auth = Table::new();
    if let Some(active) = model.auth.active {
        auth.insert("active".into(), int(active));
    }
    auth.insert(
        "insecure_no_auth".into(),
        Value::Boolean(model.auth.insecure_no_auth),
    );
    let mut keys = Vec::new();
    for k in &model.auth.keys {
        let mut t = Table::from_iter([
            ("id".to_owned(), int(k.id)),
            (
                "algorithm".to_owned(),
                s(match k.algorithm {
                    AuthAlgorithm::HmacSha256 => "sha256",
                    AuthAlgorithm::HmacSha1 => "sha1",
                    AuthAlgorithm::HmacMd5 => "md5",
                    AuthAlgorithm::Crc => "crc",
                }),
            ),
        ]);
        if k.algorithm != AuthAlgorithm::Crc || !k.secret.is_empty() {
            let secret = std::str::from_utf8(&k.secret).map_err(|_| {
                Error::Invalid(format!(
                    "the secret of key {} is not UTF-8 and cannot be written as a TOML string; keep it in a secret_file",
                    k.id
                ))
            })?;
            t.insert("secret".into(), s(secret));
        }
        keys.push(t);
    }
    if !keys.is_empty() {
        auth.insert("key".into(), array_of_tables(keys));
    }
    root.insert("auth".into(), Value::Table(auth));
    if !model.resources.is_empty() {
        let resources = model
            .resources
            .values()
            .map(|r| {
                let mut t = Table::from_iter([("id".to_owned(), s(r.id.as_str()))]);
                match &r.agent {
                    AgentSpec::Heartbeat { script, args } => {
                        t.insert("class".into(), s("heartbeat"));
                        t.insert("script".into(), s(script));
                        t.insert(
                            "args".into(),
                            Value::Array(args.iter().map(|a| s(a)).collect()),
                        );
                    }
                    AgentSpec::Lsb { script } => {
                        t.insert("class".into(), s("lsb"));
                        t.insert("script".into(), s(script));
                    }
                    AgentSpec::Ocf { provider, r#type } => {
                        t.insert("class".into(), s("ocf"));
                        t.insert("provider".into(), s(provider));
                        t.insert("type".into(), s(r#type));
                    }
                    AgentSpec::Builtin { kind } => {
                        t.insert("class".into(), s("builtin"));
                        t.insert("kind".into(), s(kind));
                    }
                }
                if !r.params.is_empty() {
                    t.insert(
                        "params".into(),
                        Value::Table(r.params.iter().map(|(k, v)| (k.clone(), s(v))).collect()),
                    );
                }
                t.insert("start_timeout".into(), d(r.start_timeout));
                t.insert("stop_timeout".into(), d(r.stop_timeout));
                if let Some(i) = r.monitor_interval {
                    t.insert("monitor_interval".into(), d(i));
                }
                t.insert("monitor_timeout".into(), d(r.monitor_timeout));
                t
            })
            .collect();
        root.insert("resource".into(), array_of_tables(resources));
    }
    if !model.groups.is_empty() {
        let mut groups = Vec::new();
        for g in &model.groups {
            let mut t = Table::from_iter([
                ("id".to_owned(), s(g.id.as_str())),
                (
                    "resources".to_owned(),
                    Value::Array(g.resources.iter().map(|r| s(r.as_str())).collect()),
                ),
            ]);
            if let Some(node) = g.preferred_node {
                t.insert("preferred_node".into(), node_name(model, node)?);
            }
            groups.push(t);
        }
        root.insert("group".into(), array_of_tables(groups));
    }
    if !model.constraints.is_empty() {
        let mut constraints = Vec::new();
        for c in &model.constraints {
            constraints.push(match c {
                Constraint::Location { group, node, score } => Table::from_iter([
                    ("type".to_owned(), s("location")),
                    ("group".to_owned(), s(group.as_str())),
                    ("node".to_owned(), node_name(model, *node)?),
                    ("score".to_owned(), int(*score)),
                ]),
                Constraint::Colocation { group, with, score } => Table::from_iter([
                    ("type".to_owned(), s("colocation")),
                    ("group".to_owned(), s(group.as_str())),
                    ("with".to_owned(), s(with.as_str())),
                    ("score".to_owned(), int(*score)),
                ]),
                Constraint::Order { first, then, kind } => Table::from_iter([
                    ("type".to_owned(), s("order")),
                    ("first".to_owned(), s(first.as_str())),
                    ("then".to_owned(), s(then.as_str())),
                    (
                        "kind".to_owned(),
                        s(match kind {
                            OrderKind::Mandatory => "mandatory",
                            OrderKind::Optional => "optional",
                            OrderKind::Serialize => "serialize",
                        }),
                    ),
                ]),
            });
        }
        root.insert("constraint".into(), array_of_tables(constraints));
    }
    // One section at a time, in the order a person would write them (a Table sorts its keys).
    let mut body = String::new();
    for key in SECTION_ORDER {
        if let Some(value) = root.remove(*key) {
            let section = Table::from_iter([((*key).to_owned(), value)]);
            let text = toml::to_string(&section)
                .map_err(|e| Error::Invalid(format!("cannot render the model as TOML: {e}")))?;
            body.push_str(&text);
            body.push('\n');
        }
    }
    Ok(format!(
        "# ha-toolkit cluster configuration (generated). Secrets are inline: move them to a\n# secret_file of mode 600. See examples/config/cluster.toml for every option.\n\n{body}"
    ))
}
