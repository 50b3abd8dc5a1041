//! Results per system and their tables.

use std::fmt::Write as _;
use std::time::Duration;

/// One fault.
#[derive(Debug, Clone, Copy)]
pub struct Trial {
    /// Delay between the end of the settle period and the fault, within one cycle.
    pub offset: Duration,
    /// Time since B last heard a heartbeat from A, at the fault (None: none captured).
    pub phase: Option<Duration>,
    /// Fault to the client's first answer from B.
    pub failover: Duration,
    /// Processes killed on A.
    pub killed: usize,
}

/// The loaded steady state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Steady {
    /// Length.
    pub secs: f64,
    /// Episodes in which the address was not A's alone (B held it, A lost it, or B answered).
    pub false_failovers: usize,
    /// Samples (every 50 ms) in which both nodes held the address.
    pub both_held_samples: usize,
    /// Longest gap between two answers seen by the client.
    pub max_gap: Duration,
    /// Answers received / probes sent.
    pub answered: f64,
    /// Longest gap between two of A's heartbeat frames seen at B.
    pub max_heartbeat_gap: Duration,
}

/// CPU use of each node's daemon processes while idle (no load, no fault).
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    /// Node A (holding the address), percent of one CPU.
    pub master_pct: f64,
    /// Node B (backup), percent of one CPU.
    pub backup_pct: f64,
}

impl Idle {
    /// The busier of the two nodes.
    pub fn worst(&self) -> f64 {
        self.master_pct.max(self.backup_pct)
    }
}

/// Everything measured for one system; errors are kept as text so the other system's
/// results still print.
#[derive(Debug, Default)]
pub struct SystemResult {
    /// Table title.
    pub title: String,
    /// Cycle of the system (fault offsets are within it).
    pub cycle: Duration,
    /// One entry per trial.
    pub trials: Vec<Result<Trial, String>>,
    /// Loaded steady state.
    pub steady: Option<Result<Steady, String>>,
    /// Idle CPU.
    pub idle: Option<Result<Idle, String>>,
    /// Cluster start-ups.
    pub startups: usize,
    /// Start-ups in which starting B disturbed A's service.
    pub join_disturbed: usize,
}

/// Median of `v` (mean of the middle two for an even count); None when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl SystemResult {
    /// Failover times of the successful trials, in ms.
    pub fn failover_ms(&self) -> Vec<f64> {
        self.trials
            .iter()
            .filter_map(|t| t.as_ref().ok())
            .map(|t| ms(t.failover))
            .collect()
    }

    /// Every error recorded.
    pub fn errors(&self) -> Vec<String> {
        let mut e: Vec<String> = self
            .trials
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().err().map(|e| format!("trial {}: {e}", i + 1)))
            .collect();
        if let Some(Err(s)) = &self.steady {
            e.push(format!("steady state: {s}"));
        }
        if let Some(Err(s)) = &self.idle {
            e.push(format!("idle CPU: {s}"));
        }
        e
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "== {} ==", self.title);
        let _ = writeln!(
            o,
            "(offset: random wait before the fault; fault phase: time since B last heard A)"
        );
        let _ = writeln!(
            o,
            "{:>5}  {:>9}  {:>22}  {:>11}  {:>6}",
            "trial", "offset ms", "fault phase ms (cycle)", "failover ms", "killed"
        );
        for (i, t) in self.trials.iter().enumerate() {
            match t {
                Ok(t) => {
                    let phase = t
                        .phase
                        .map_or_else(|| "-".to_string(), |p| format!("{:.2}", ms(p)));
                    let _ = writeln!(
                        o,
                        "{:>5}  {:>9.2}  {:>13} ({:>6.1})  {:>11.1}  {:>6}",
                        i + 1,
                        ms(t.offset),
                        phase,
                        ms(self.cycle),
                        ms(t.failover),
                        t.killed
                    );
                }
                Err(e) => {
                    let _ = writeln!(o, "{:>5}  FAILED: {e}", i + 1);
                }
            }
        }
        let f = self.failover_ms();
        if let Some(med) = median(&f) {
            let min = f.iter().copied().fold(f64::INFINITY, f64::min);
            let max = f.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                o,
                "failover: median {med:.1} ms (min {min:.1}, max {max:.1}) over {} trials",
                f.len()
            );
        }
        if self.join_disturbed > 0 {
            let _ = writeln!(
                o,
                "starting B disturbed A's service in {} of {} start-ups",
                self.join_disturbed, self.startups
            );
        }
        match &self.steady {
            Some(Ok(s)) => {
                let _ = writeln!(
                    o,
                    "steady {:.0} s, stress-ng --cpu 2: false failovers {}, both held {} samples, \
                     longest answer gap {:.1} ms, {:.1} % of probes answered, longest gap between \
                     A's heartbeats at B {:.1} ms",
                    s.secs,
                    s.false_failovers,
                    s.both_held_samples,
                    ms(s.max_gap),
                    s.answered * 100.0,
                    ms(s.max_heartbeat_gap)
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(o, "steady state FAILED: {e}");
            }
            None => {}
        }
        match &self.idle {
            Some(Ok(i)) => {
                let _ = writeln!(
                    o,
                    "idle CPU: master {:.2} %, backup {:.2} %",
                    i.master_pct, i.backup_pct
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(o, "idle CPU FAILED: {e}");
            }
            None => {}
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn failed_trials_are_reported_not_averaged() {
        let r = SystemResult {
            title: "t".into(),
            cycle: Duration::from_millis(10),
            trials: vec![
                Ok(Trial {
                    offset: Duration::from_millis(1),
                    phase: Some(Duration::from_millis(4)),
                    failover: Duration::from_millis(30),
                    killed: 3,
                }),
                Err("no answer".into()),
            ],
            steady: None,
            idle: None,
            startups: 2,
            join_disturbed: 0,
        };
        assert_eq!(r.failover_ms(), vec![30.0]);
        assert_eq!(r.errors(), vec!["trial 2: no answer".to_string()]);
        assert!(r.table().contains("FAILED: no answer"));
    }
}
