//! What the harness needs from an HA system under test.

use std::time::Duration;

use testkit::netns::NsChild;

use super::rig::Rig;

/// An HA system that moves the floating address between nodes A (index 0, preferred) and
/// B (index 1). The harness starts responders, starts A and waits for it to own the
/// address, starts B, lets them settle, and then injects faults.
pub trait System {
    /// Short name for tables (`keepalived`, `ours`).
    fn name(&self) -> &str;

    /// The setting measured, e.g. `VRRPv3 unicast, advert_int 0.01`.
    fn setting(&self) -> String;

    /// Heartbeat / advertisement period: faults land at a random offset within it.
    fn cycle(&self) -> Duration;

    /// Write configuration files into the rig's work directory (called once).
    fn prepare(&mut self, rig: &Rig) -> anyhow::Result<()>;

    /// Start the daemon of node `node` in its namespace; `run` numbers log files.
    fn start(&mut self, rig: &Rig, node: usize, run: usize) -> anyhow::Result<NsChild>;

    /// Last lines of node `node`'s logs for run `run`, for error reports.
    fn log_tail(&self, rig: &Rig, node: usize, run: usize) -> String {
        let path = rig.dir().join(log_name(self.name(), node, run));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(30);
        format!("--- {} ---\n{}", path.display(), lines[start..].join("\n"))
    }
}

/// Log file name of `system`'s node `node` in run `run`.
pub fn log_name(system: &str, node: usize, run: usize) -> String {
    let n = super::rig::NODE_NAMES.get(node).copied().unwrap_or("X");
    format!("{system}-{n}-{run}.log")
}
