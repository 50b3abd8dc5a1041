//! `ha-net-node` as a daemon: it takes the TOML cluster file, a JSON model or a heartbeat
//! configuration directory, picks its node by name or id, and rejects bad input with a message
//! that says what to fix.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ha-net-node"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap_or_else(|e| panic!("cannot run ha-net-node: {e}"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn toml_cluster_file_selects_the_node_by_name_or_id() {
    let cfg = repo().join("examples/config/cluster.toml");
    let cfg = cfg.to_str().unwrap();
    let o = node(&["--config", cfg, "--node", "beta", "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("this is node n2 (beta)"), "{}", text(&o));
    let o = node(&["--config", cfg, "--node", "1", "--check"]);
    assert!(text(&o).contains("(alpha)"), "{}", text(&o));
    let o = node(&["--config", cfg, "--node", "gamma", "--check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("nodes: alpha, beta"), "{}", text(&o));
}

#[test]
fn json_model_and_heartbeat_directory_load_the_same_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = repo().join("crates/ha-core/tests/fixtures/config/heartbeat/nfs");
    for f in ["ha.cf", "haresources", "authkeys"] {
        std::fs::copy(fixtures.join(f), dir.path().join(f)).unwrap();
    }
    // Like heartbeat, the import refuses an authkeys file others can read.
    let keys = dir.path().join("authkeys");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = dir.path().to_str().unwrap();
    let o = node(&["--heartbeat", d, "--node", "alpha", "--check"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("authkeys"), "{}", text(&o));
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = node(&["--heartbeat", d, "--node", "alpha", "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("(alpha)"), "{}", text(&o));

    let model = ha_core::config::import_heartbeat(
        &dir.path().join("ha.cf"),
        &dir.path().join("haresources"),
        &keys,
    )
    .unwrap();
    let json = dir.path().join("model.json");
    std::fs::write(&json, serde_json::to_string(&model).unwrap()).unwrap();
    let o = node(&[
        "--config",
        json.to_str().unwrap(),
        "--node",
        "beta",
        "--check",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("(beta)"), "{}", text(&o));
}

#[test]
fn config_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[cluster]\nname = \"x\"\n[[node]]\nname = \"a\"\n[timing]\nkeepalive = \"1s\"\ndeadtime = \"1s\"\n",
    )
    .unwrap();
    let o = node(&["--config", bad.to_str().unwrap(), "--node", "a", "--check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("bad.toml:7"), "{}", text(&o));
    let o = node(&["--node", "a"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn ctl_client_reports_a_missing_node_and_bad_commands() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let o = node(&["--ctl", sock.to_str().unwrap(), "status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("is the node running with --control?"),
        "{}",
        text(&o)
    );
    let o = node(&["--ctl", sock.to_str().unwrap(), "reboot"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("unknown command `reboot`"),
        "{}",
        text(&o)
    );
    let o = node(&["--ctl", sock.to_str().unwrap(), "move"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("`move` needs a group name"),
        "{}",
        text(&o)
    );
}
