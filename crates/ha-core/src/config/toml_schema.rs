//! The TOML file as written by users: loose, optional, spanned. [`super::validate`] turns it into
//! the strict [`crate::model::ClusterModel`].
//!
//! Every field that validation may complain about is wrapped in [`Spanned`] so the complaint can
//! name its line. Kind-dependent sections (links, resources, constraints) are flat structs with a
//! discriminating field rather than serde enums: internally tagged enums buffer their content,
//! which loses spans and gives vague errors.

use super::duration::parse_duration;
use crate::model::{NoQuorumPolicy, OrderKind, QuorumMode, SCORE_INFINITY};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use toml::Spanned;

/// Shorthand for an optional spanned field.
pub(crate) type Opt<T> = Option<Spanned<T>>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileToml {
    // Not Spanned: toml cannot span implicit tables (`cluster.name = ...`, `[[auth.key]]` alone).
    pub cluster: ClusterToml,
    #[serde(default)]
    pub ping_nodes: Vec<Spanned<String>>,
    #[serde(default)]
    pub node: Vec<Spanned<NodeToml>>,
    #[serde(default)]
    pub link: Vec<Spanned<LinkToml>>,
    pub timing: Option<TimingToml>,
    pub policy: Option<PolicyToml>,
    pub auth: Option<AuthToml>,
    #[serde(default)]
    pub resource: Vec<Spanned<ResourceToml>>,
    #[serde(default)]
    pub group: Vec<Spanned<GroupToml>>,
    #[serde(default)]
    pub constraint: Vec<Spanned<ConstraintToml>>,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterToml {
    pub name: Spanned<String>,
}

/// `[[node]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeToml {
    pub name: Spanned<String>,
    pub id: Opt<u16>,
    pub votes: Option<u32>,
}

/// `[[link]] kind = ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LinkKind {
    Ucast,
    Mcast,
    Bcast,
    Serial,
}

impl LinkKind {
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Ucast => "ucast",
            LinkKind::Mcast => "mcast",
            LinkKind::Bcast => "bcast",
            LinkKind::Serial => "serial",
        }
    }
}

/// `[[link]]`: the union of every medium's parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkToml {
    pub kind: Spanned<LinkKind>,
    pub name: Opt<String>,
    pub interface: Opt<String>,
    pub peers: Opt<Vec<Spanned<String>>>,
    pub port: Opt<u16>,
    pub group: Opt<String>,
    pub ttl: Opt<u32>,
    #[serde(rename = "loop")]
    pub loop_: Opt<bool>,
    pub device: Opt<String>,
    pub baud: Opt<u32>,
}

/// `[timing] detector = ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DetectorName {
    Fixed,
    PhiAccrual,
}

/// `[timing]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimingToml {
    pub keepalive: Opt<HumanDuration>,
    pub warntime: Opt<HumanDuration>,
    pub deadtime: Opt<HumanDuration>,
    pub initdead: Opt<HumanDuration>,
    pub detector: Opt<DetectorName>,
    pub phi_threshold: Opt<f64>,
}

/// `[policy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyToml {
    pub quorum: Opt<QuorumMode>,
    pub no_quorum_policy: Option<NoQuorumPolicy>,
    pub auto_failback: Option<bool>,
    pub stickiness: Option<Score>,
    pub migration_threshold: Option<Threshold>,
    pub failure_timeout: Option<HumanDuration>,
    pub fencing: Option<bool>,
}

/// `[auth]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthToml {
    pub active: Opt<u8>,
    #[serde(default)]
    pub insecure_no_auth: bool,
    #[serde(default)]
    pub key: Vec<Spanned<KeyToml>>,
}

/// `algorithm = ...` of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AlgorithmName {
    #[serde(alias = "hmac_sha256", alias = "hmac-sha256")]
    Sha256,
    #[serde(alias = "hmac_sha1", alias = "hmac-sha1")]
    Sha1,
    #[serde(alias = "hmac_md5", alias = "hmac-md5")]
    Md5,
    Crc,
}

/// `[[auth.key]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyToml {
    pub id: Spanned<u8>,
    pub algorithm: Opt<AlgorithmName>,
    pub secret: Opt<String>,
    pub secret_file: Opt<String>,
}

/// `class = ...` of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClassName {
    Heartbeat,
    Lsb,
    Ocf,
    Builtin,
}

impl ClassName {
    pub fn name(self) -> &'static str {
        match self {
            ClassName::Heartbeat => "heartbeat",
            ClassName::Lsb => "lsb",
            ClassName::Ocf => "ocf",
            ClassName::Builtin => "builtin",
        }
    }
}

/// `[[resource]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourceToml {
    pub id: Spanned<String>,
    pub class: Spanned<ClassName>,
    pub script: Opt<String>,
    pub args: Opt<Vec<String>>,
    pub provider: Opt<String>,
    #[serde(rename = "type")]
    pub type_: Opt<String>,
    pub kind: Opt<String>,
    #[serde(default)]
    pub params: BTreeMap<String, ParamValue>,
    pub start_timeout: Opt<HumanDuration>,
    pub stop_timeout: Opt<HumanDuration>,
    pub monitor_interval: Opt<HumanDuration>,
    pub monitor_timeout: Opt<HumanDuration>,
}

/// `[[group]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupToml {
    pub id: Spanned<String>,
    pub resources: Spanned<Vec<Spanned<String>>>,
    pub preferred_node: Opt<String>,
}

/// `[[constraint]] type = ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ConstraintName {
    Location,
    Colocation,
    Order,
}

impl ConstraintName {
    pub fn name(self) -> &'static str {
        match self {
            ConstraintName::Location => "location",
            ConstraintName::Colocation => "colocation",
            ConstraintName::Order => "order",
        }
    }
}

/// `[[constraint]]`: the union of every constraint kind's fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConstraintToml {
    #[serde(rename = "type")]
    pub type_: Spanned<ConstraintName>,
    pub group: Opt<String>,
    pub node: Opt<String>,
    pub score: Opt<Score>,
    pub with: Opt<String>,
    pub first: Opt<String>,
    pub then: Opt<String>,
    pub kind: Opt<OrderKind>,
}

/// A duration written as `"100ms"`, `"2s"`; parse errors carry the value's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"2s\" or \"100ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(HumanDuration).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write \"{v}s\" or \"{v}ms\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A Pacemaker score: an integer or `"INFINITY"` / `"-INFINITY"`, clamped to +/- INFINITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Score(pub i64);

impl<'de> Deserialize<'de> for Score {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Score;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer score or \"INFINITY\" / \"-INFINITY\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Score(v.clamp(-SCORE_INFINITY, SCORE_INFINITY)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v.trim().to_ascii_uppercase().as_str() {
                    "INFINITY" | "+INFINITY" | "INF" | "+INF" => Ok(Score(SCORE_INFINITY)),
                    "-INFINITY" | "-INF" => Ok(Score(-SCORE_INFINITY)),
                    _ => Err(E::custom(format!(
                        "invalid score `{v}`: write an integer or \"INFINITY\" / \"-INFINITY\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A failure count or `"INFINITY"` (None: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Threshold(pub Option<u32>);

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Threshold;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a positive failure count or \"INFINITY\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u32::try_from(v) {
                    Ok(n) if n > 0 => Ok(Threshold(Some(n))),
                    _ => Err(E::custom(format!(
                        "invalid migration_threshold {v}: write a count from 1 up, or \"INFINITY\""
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v.trim().to_ascii_uppercase().as_str() {
                    "INFINITY" | "INF" => Ok(Threshold(None)),
                    _ => Err(E::custom(format!(
                        "invalid migration_threshold `{v}`: write a count or \"INFINITY\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A resource parameter: strings, numbers and booleans are all passed on as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParamValue(pub String);

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ParamValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ParamValue(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ParamValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
