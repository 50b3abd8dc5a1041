//! Property tests: durations round-trip, generated haresources import to what they describe.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests

use ha_core::config::{
    format_duration, from_toml_str, import_heartbeat_str, parse_duration, parse_heartbeat_time,
    to_toml_string,
};
use ha_core::model::AgentSpec;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..100_000).prop_map(Duration::from_millis),
        (0u64..100_000).prop_map(Duration::from_secs),
        (0u64..1000).prop_map(|m| Duration::from_secs(m * 60)),
    ]
}

proptest! {
    #[test]
    fn durations_round_trip(d in any_duration()) {
        let text = format_duration(d);
        prop_assert_eq!(parse_duration(&text), Ok(d), "text {}", text);
        prop_assert_eq!(parse_heartbeat_time(&text), Ok(d));
    }

    #[test]
    fn decimal_seconds_are_exact(whole in 0u64..1_000_000, millis in 0u32..1000) {
        let text = format!("{whole}.{millis:03}");
        let expected = Duration::new(whole, millis * 1_000_000);
        prop_assert_eq!(parse_heartbeat_time(&text), Ok(expected));
        prop_assert_eq!(parse_duration(&format!("{text}s")), Ok(expected));
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,20}") {
        let _ = parse_duration(&s);
        let _ = parse_heartbeat_time(&s);
    }
}

/// A resource as the generator describes it.
#[derive(Debug, Clone)]
enum Res {
    Ip {
        addr: String,
        prefix: Option<u8>,
        nic: Option<String>,
    },
    Drbd(String),
    Fs(Vec<String>),
    Script(String, Vec<String>),
}

impl Res {
    fn token(&self) -> String {
        match self {
            Res::Ip { addr, prefix, nic } => {
                let mut t = addr.clone();
                if let Some(p) = prefix {
                    t.push_str(&format!("/{p}"));
                    if let Some(n) = nic {
                        t.push_str(&format!("/{n}"));
                    }
                }
                t
            }
            Res::Drbd(r) => format!("drbddisk::{r}"),
            Res::Fs(args) => format!("Filesystem::{}", args.join("::")),
            Res::Script(name, args) => std::iter::once(name.clone())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join("::"),
        }
    }

    fn expected(&self) -> (AgentSpec, BTreeMap<String, String>) {
        let mut params = BTreeMap::new();
        match self {
            Res::Ip { addr, prefix, nic } => {
                params.insert("ip".to_owned(), addr.clone());
                if let Some(p) = prefix {
                    params.insert("cidr_netmask".to_owned(), p.to_string());
                    if let Some(n) = nic {
                        params.insert("nic".to_owned(), n.clone());
                    }
                }
                (
                    AgentSpec::Builtin {
                        kind: "IPaddr".into(),
                    },
                    params,
                )
            }
            Res::Drbd(r) => {
                params.insert("resource".to_owned(), r.clone());
                (
                    AgentSpec::Builtin {
                        kind: "drbddisk".into(),
                    },
                    params,
                )
            }
            Res::Fs(args) => (
                AgentSpec::Heartbeat {
                    script: "Filesystem".into(),
                    args: args.clone(),
                },
                params,
            ),
            Res::Script(name, args) => (
                AgentSpec::Heartbeat {
                    script: name.clone(),
                    args: args.clone(),
                },
                params,
            ),
        }
    }
}

/// A resource whose token is made unique by (group, position).
fn res(g: usize, r: usize) -> impl Strategy<Value = Res> {
    let word = "[a-z][a-z0-9_]{0,6}";
    prop_oneof![
        (
            proptest::option::of(0u8..=32),
            proptest::option::of("eth[0-9]")
        )
            .prop_map(move |(prefix, nic)| Res::Ip {
                addr: format!("10.{g}.{r}.1"),
                prefix,
                nic
            }),
        word.prop_map(move |w| Res::Drbd(format!("{w}{g}x{r}"))),
        (
            proptest::collection::vec("/[a-z0-9/]{1,8}", 2..=2),
            proptest::option::of("ext4|xfs")
        )
            .prop_map(move |(mut args, fstype)| {
                args[0] = format!("/dev/d{g}x{r}");
                args.extend(fstype);
                Res::Fs(args)
            }),
        (
            word,
            proptest::collection::vec("[A-Za-z0-9_./=-]{1,8}", 0..3)
        )
            .prop_map(move |(name, args)| Res::Script(format!("{name}{g}x{r}"), args)),
    ]
}

fn group(g: usize) -> impl Strategy<Value = (bool, Vec<Res>, Vec<bool>)> {
    (1usize..5).prop_flat_map(move |n| {
        let members: Vec<_> = (0..n).map(|r| res(g, r)).collect();
        (
            any::<bool>(),
            members,
            proptest::collection::vec(any::<bool>(), n),
        )
    })
}

fn groups() -> impl Strategy<Value = Vec<(bool, Vec<Res>, Vec<bool>)>> {
    (1usize..4).prop_flat_map(|n| (0..n).map(group).collect::<Vec<_>>())
}

proptest! {
    #[test]
    fn generated_haresources_import_as_described(gs in groups()) {
        let mut text = String::from("# generated\n");
        for (on_b, members, breaks) in &gs {
            text.push_str(if *on_b { "b" } else { "a" });
            for (m, brk) in members.iter().zip(breaks) {
                text.push_str(if *brk { " \\\n    " } else { " " });
                text.push_str(&m.token());
            }
            text.push('\n');
        }
        let model = import_heartbeat_str(
            "keepalive 1\ndeadtime 10\nbcast eth0\nnode a b\n",
            &text,
            "auth 1\n1 sha1 0123456789abcdef\n",
        );
        let model = match model {
            Ok(m) => m,
            Err(e) => return Err(TestCaseError::fail(format!("{e}\n{text}"))),
        };
        prop_assert_eq!(model.groups.len(), gs.len());
        let total: usize = gs.iter().map(|g| g.1.len()).sum();
        prop_assert_eq!(model.resources.len(), total);
        for (spec, (on_b, members, _)) in model.groups.iter().zip(&gs) {
            let node = model.node_by_name(if *on_b { "b" } else { "a" }).map(|n| n.id);
            prop_assert_eq!(spec.preferred_node, node);
            prop_assert_eq!(spec.resources.len(), members.len());
            for (id, m) in spec.resources.iter().zip(members) {
                let r = &model.resources[id];
                let (agent, params) = m.expected();
                prop_assert_eq!(&r.agent, &agent, "{}", text);
                prop_assert_eq!(&r.params, &params);
                prop_assert!(ha_core::config::validate::check_name("id", id.as_str()).is_ok());
            }
        }
        // The import migrates to TOML unchanged.
        let toml = to_toml_string(&model).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let again = from_toml_str(&toml, "migrated.toml")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{toml}")))?;
        prop_assert_eq!(again, model);
    }
}
