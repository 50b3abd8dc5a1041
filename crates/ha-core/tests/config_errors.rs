//! Every TOML error names the file, the line and the field, and says how to fix it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers of tests

use ha_core::config::from_toml_str;
use ha_core::error::{Error, Location};
use std::path::PathBuf;

/// A valid configuration; the cases below edit it. Line numbers matter: keep them in mind.
const BASE: &[&str] = &[
    "[cluster]",                            // 1
    "name = \"c\"",                         // 2
    "[[node]]",                             // 3
    "name = \"a\"",                         // 4
    "[[node]]",                             // 5
    "name = \"b\"",                         // 6
    "[[link]]",                             // 7
    "kind = \"ucast\"",                     // 8
    "peers = [\"10.0.0.1\", \"10.0.0.2\"]", // 9
    "[auth]",                               // 10
    "[[auth.key]]",                         // 11
    "id = 1",                               // 12
    "secret = \"0123456789abcdef\"",        // 13
    "[[resource]]",                         // 14
    "id = \"r1\"",                          // 15
    "class = \"builtin\"",                  // 16
    "kind = \"IPaddr\"",                    // 17
    "params = { ip = \"10.0.0.9\" }",       // 18
    "[[group]]",                            // 19
    "id = \"g1\"",                          // 20
    "resources = [\"r1\"]",                 // 21
    "preferred_node = \"a\"",               // 22
];

fn base() -> Vec<String> {
    BASE.iter().map(|s| (*s).to_owned()).collect()
}

/// BASE with line `n` (1-based) replaced by `with` (which may hold several lines or none).
fn replace(n: usize, with: &str) -> String {
    let mut lines = base();
    lines[n - 1] = with.to_owned();
    lines.retain(|l| !l.is_empty());
    lines.join("\n")
}

/// BASE followed by `extra` (its first line is line 23).
fn append(extra: &str) -> String {
    format!("{}\n{extra}", base().join("\n"))
}

#[track_caller]
fn expect(text: &str, line: usize, field: &str, needle: &str) {
    let err = from_toml_str(text, "cluster.toml").expect_err("config must be rejected");
    let Error::Config { location, message } = &err else {
        panic!("not a config error: {err:?}");
    };
    assert_eq!(
        location,
        &Location {
            file: PathBuf::from("cluster.toml"),
            line,
            field: field.to_owned()
        },
        "message: {message}"
    );
    assert!(message.contains(needle), "`{needle}` not in `{message}`");
    // The display form starts with file:line.
    assert!(
        err.to_string()
            .starts_with(&format!("cluster.toml:{line}: `{field}`"))
    );
}

#[test]
fn the_base_is_valid() {
    from_toml_str(&base().join("\n"), "cluster.toml").unwrap();
}

#[test]
fn syntax_errors() {
    expect(&append("[timing"), 23, "[timing", "invalid TOML");
    expect(
        &append("[timing]\nkeepalive = \"2s"),
        24,
        "timing.keepalive",
        "invalid TOML",
    );
    expect(
        &replace(6, "name = \"b\"\nname = \"c\""),
        7,
        "node.name",
        "duplicate key",
    );
}

#[test]
fn type_and_schema_errors() {
    expect(
        &append("[timing]\nkeepalive = \"1s\"\nbogus = 1"),
        25,
        "timing.bogus",
        "unknown field `bogus`",
    );
    expect(&replace(2, "name = 5"), 2, "cluster.name", "invalid type");
    expect(&replace(2, ""), 1, "cluster.name", "missing field `name`");
    expect(&replace(4, ""), 3, "node.name", "missing field `name`");
    expect(
        &replace(1, "").replace("name = \"c\"\n", ""),
        0,
        "cluster",
        "missing [cluster] section",
    );
    expect(
        &append("[policy]\nquorum = \"maybe\""),
        24,
        "policy.quorum",
        "unknown variant `maybe`",
    );
    expect(
        &replace(16, "class = \"systemd\""),
        16,
        "resource.class",
        "unknown variant `systemd`",
    );
    expect(
        &append(
            "[[constraint]]\ntype = \"location\"\ngroup = \"g1\"\nnode = \"a\"\nscore = \"lots\"",
        ),
        27,
        "constraint.score",
        "invalid score `lots`",
    );
    expect(&replace(12, "id = 300"), 12, "auth.key.id", "invalid value");
}

#[test]
fn duration_errors() {
    expect(
        &append("[timing]\nkeepalive = \"10 parsecs\""),
        24,
        "timing.keepalive",
        "unknown unit `parsecs`",
    );
    expect(
        &append("[timing]\ndeadtime = 30"),
        24,
        "timing.deadtime",
        "write \"30s\"",
    );
    expect(
        &append("[timing]\ninitdead = \"30\""),
        24,
        "timing.initdead",
        "missing unit",
    );
}

#[test]
fn timing_rules() {
    expect(
        &append("[timing]\nkeepalive = \"1s\"\ndeadtime = \"2s\""),
        25,
        "timing.deadtime",
        "must exceed 2 x keepalive",
    );
    expect(
        &append("[timing]\nkeepalive = \"20s\""),
        24,
        "timing.keepalive",
        "lower keepalive below 15s",
    );
    expect(
        &append("[timing]\ndeadtime = \"10s\"\nwarntime = \"11s\""),
        25,
        "timing.warntime",
        "exceeds deadtime",
    );
    expect(
        &append("[timing]\ndeadtime = \"10s\"\ninitdead = \"5s\""),
        25,
        "timing.initdead",
        "at least 2 x deadtime",
    );
    expect(
        &append("[timing]\nphi_threshold = 9.0"),
        24,
        "timing.phi_threshold",
        "detector = \"phi_accrual\"",
    );
}

#[test]
fn node_errors() {
    expect(
        &replace(6, "name = \"a\""),
        6,
        "node.name",
        "already defined on line 4",
    );
    expect(
        &replace(6, "name = \"b\"\nid = 1"),
        7,
        "node.id",
        "already used by node `a`",
    );
    expect(
        &replace(4, "name = \"a b\""),
        4,
        "node.name",
        "use only letters",
    );
    expect(
        &replace(22, "preferred_node = \"zz\""),
        22,
        "group.preferred_node",
        "`zz` is not a defined node; use one of [a, b]",
    );
}

#[test]
fn link_errors() {
    expect(
        &replace(9, "peers = [\"10.0.0.1\"]\nttl = 2"),
        10,
        "link.ttl",
        "does not apply to kind = \"ucast\"",
    );
    expect(
        &replace(9, "peers = [\"10.0.0.1\", \"no such host\"]"),
        9,
        "link.peers",
        "neither an IP address nor a host name",
    );
    expect(&replace(9, ""), 7, "link.peers", "needs peers");
    expect(
        &replace(
            8,
            "kind = \"mcast\"\ninterface = \"eth0\"\ngroup = \"10.0.0.1\"",
        )
        .replace("peers = [\"10.0.0.1\", \"10.0.0.2\"]\n", ""),
        10,
        "link.group",
        "not a multicast address",
    );
    let no_links = base()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !(6..9).contains(i))
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n");
    expect(&no_links, 0, "link", "add e.g. [[link]]");
}

#[test]
fn auth_errors() {
    expect(
        &replace(13, "secret = \"short\""),
        13,
        "auth.key.secret",
        "openssl rand",
    );
    expect(
        &replace(13, "secret_file = \"/nonexistent/ha.key\""),
        13,
        "auth.key.secret_file",
        "cannot read secret file /nonexistent/ha.key",
    );
    expect(
        &replace(11, "").replace("id = 1\nsecret = \"0123456789abcdef\"\n", ""),
        10,
        "auth.key",
        "insecure_no_auth = true",
    );
    let no_auth = base()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !(9..13).contains(i))
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n");
    expect(&no_auth, 0, "auth", "no [auth] section");
    expect(
        &replace(10, "[auth]\nactive = 5"),
        11,
        "auth.active",
        "active key 5 is not defined",
    );
    expect(
        &replace(12, "id = 1\nalgorithm = \"crc\""),
        13,
        "auth.key.algorithm",
        "authenticates nothing",
    );
    expect(
        &append("[[auth.key]]\nid = 1\nsecret = \"fedcba9876543210\""),
        24,
        "auth.key.id",
        "already defined on line 12",
    );
}

#[test]
fn resource_and_group_errors() {
    expect(
        &append("[[resource]]\nid = \"r1\"\nclass = \"lsb\"\nscript = \"x\""),
        24,
        "resource.id",
        "already defined on line 15",
    );
    expect(
        &replace(17, "kind = \"IPaddr\"\nscript = \"x\""),
        18,
        "resource.script",
        "does not apply to class = \"builtin\"",
    );
    expect(&replace(17, ""), 14, "resource.kind", "missing `kind`");
    expect(
        &replace(15, "id = \"r 1\""),
        15,
        "resource.id",
        "use only letters",
    );
    expect(
        &append("start_timeout = \"0s\""),
        23,
        "group.start_timeout",
        "unknown field",
    );
    expect(
        &replace(21, "resources = [\"r1\", \"nope\"]"),
        21,
        "group.resources",
        "`nope` is not a defined resource",
    );
    expect(
        &append("[[group]]\nid = \"g2\"\nresources = [\"r1\"]"),
        25,
        "group.resources",
        "already in group `g1` (line 21)",
    );
    expect(
        &append("[[group]]\nid = \"g1\"\nresources = [\"r1\"]"),
        24,
        "group.id",
        "already defined on line 20",
    );
    expect(
        &replace(21, "resources = []"),
        21,
        "group.resources",
        "no resources",
    );
}

#[test]
fn constraint_and_policy_errors() {
    expect(
        &append("[[constraint]]\ntype = \"location\"\ngroup = \"r1\"\nnode = \"a\"\nscore = 5"),
        25,
        "constraint.group",
        "`r1` is a resource of group `g1`",
    );
    expect(
        &append("[[constraint]]\ntype = \"location\"\ngroup = \"g1\"\nscore = 5"),
        23,
        "constraint.node",
        "needs node",
    );
    expect(
        &append("[[constraint]]\ntype = \"order\"\nfirst = \"g1\"\nthen = \"g1\""),
        26,
        "constraint.then",
        "ordered after itself",
    );
    expect(
        &append("[[constraint]]\ntype = \"order\"\nfirst = \"g1\"\nthen = \"g1\"\nscore = 1"),
        27,
        "constraint.score",
        "does not apply to type = \"order\"",
    );
    expect(
        &replace(6, "name = \"b\"\n[[node]]\nname = \"c\"")
            .replace("[auth]", "[policy]\nquorum = \"two_node\"\n[auth]"),
        13,
        "policy.quorum",
        "needs exactly 2 nodes but 3",
    );
}

#[test]
fn implicit_tables_work_and_section_errors_without_header_use_line_0() {
    // Only [[auth.key]] written: [auth] is implicit; two keys need `active`.
    let text = replace(10, "").replace(
        "secret = \"0123456789abcdef\"",
        "secret = \"0123456789abcdef\"\n[[auth.key]]\nid = 2\nsecret = \"0123456789abcdef\"",
    );
    expect(&text, 0, "auth.active", "active = ID");
    // Dotted keys and inline arrays of tables are plain TOML too.
    let text = format!(
        "cluster.name = \"c\"\nnode = [{{ name = \"a\" }}, {{ name = \"b\", id = 9 }}]\n{}",
        base()[6..].join("\n")
    );
    let model = from_toml_str(&text, "cluster.toml").unwrap();
    assert_eq!(model.nodes[1].id.0, 9);
    expect(
        &text.replace("id = 9", "id = 1"),
        2,
        "node.id",
        "already used by node `a`",
    );
}
