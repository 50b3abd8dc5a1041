//! Runs ha-demo in both modes and checks the story its timeline tells: alpha runs nfs, crashes,
//! beta fails over, alpha comes back and nfs fails back through the takeover handshake.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// Timeline lines as (node, text): `   123 ms  alpha  text`.
fn timeline(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" ms  ")?;
            let (who, text) = rest.split_once(' ')?;
            Some((who.to_owned(), text.trim().to_owned()))
        })
        .collect()
}

/// Index of the first line after `from` said by `who` containing `text`.
fn find(lines: &[(String, String)], from: usize, who: &str, text: &str) -> Option<usize> {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, (w, t))| w == who && t.contains(text))
        .map(|(i, _)| i)
}

fn check_story(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_ha-demo"))
        .args(args)
        .output()
        .expect("run ha-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ha-demo {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let lines = timeline(&stdout);
    let step = |from: usize, who: &str, text: &str| {
        find(&lines, from, who, text).unwrap_or_else(|| {
            panic!("ha-demo {args:?}: no `{who}: {text}` after line {from}:\n{stdout}")
        })
    };
    let first_run = step(0, "alpha", "nfs is RUNNING here");
    let crash = step(first_run, "alpha", "CRASH");
    let dead = step(crash, "beta", "peer alpha declared DEAD");
    let failover = step(dead, "beta", "FAILOVER: takes over nfs from dead alpha");
    let on_beta = step(failover, "beta", "nfs is RUNNING here");
    let moved = step(
        on_beta,
        "beta",
        "stopping nfs (right to left), reason: Moved",
    );
    let stopped = step(moved, "beta", "nfs stopped");
    step(stopped, "alpha", "nfs is RUNNING here");
    assert!(
        stdout.contains("end: nfs runs on alpha"),
        "ha-demo {args:?}: did not end on alpha:\n{stdout}"
    );
}

#[test]
fn simulated_timeline_tells_failover_and_failback() {
    check_story(&[]);
    check_story(&["--seed", "7"]);
}

#[test]
fn real_timeline_over_loopback_tells_failover_and_failback() {
    check_story(&["--real"]);
}
