//! Resync rate control (sans-IO): a fixed-rate limiter and a dynamic controller that backs
//! off while application I/O is active, in the spirit of DRBD's c-plan-ahead controller.

use std::time::Duration;

/// How resync bandwidth is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RateMode {
    /// Fixed bytes per second.
    Fixed(u64),
    /// Dynamic: up to `max` bytes/s when the device is idle, down to `min` while
    /// application I/O is seen.
    Dynamic {
        /// c-min-rate (bytes/s).
        min: u64,
        /// c-max-rate (bytes/s).
        max: u64,
    },
}

impl Default for RateMode {
    fn default() -> Self {
        // DRBD's c-min-rate 250 KiB/s and c-max-rate 100 MiB/s.
        RateMode::Dynamic {
            min: 250 << 10,
            max: 100 << 20,
        }
    }
}

/// Token-bucket pacing of resync requests.
#[derive(Clone, Debug)]
pub struct ResyncPacer {
    mode: RateMode,
    /// Seconds (as f64) of "credit" debt: positive means we are ahead of the allowed rate.
    ahead: f64,
    last: Duration,
}

impl ResyncPacer {
    /// New pacer; `now` is a monotonic timestamp.
    pub fn new(mode: RateMode, now: Duration) -> Self {
        ResyncPacer {
            mode,
            ahead: 0.0,
            last: now,
        }
    }

    /// Current target rate in bytes/s, given whether application I/O happened recently.
    pub fn rate(&self, app_io_recent: bool) -> u64 {
        match self.mode {
            RateMode::Fixed(r) => r.max(1),
            RateMode::Dynamic { min, max } => {
                if app_io_recent {
                    min.max(1)
                } else {
                    max.max(1)
                }
            }
        }
    }

    /// Account `bytes` about to be sent at `now`; returns how long to wait before sending.
    pub fn admit(&mut self, bytes: u64, now: Duration, app_io_recent: bool) -> Duration {
        let rate = self.rate(app_io_recent) as f64;
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = now;
        // Time passing pays the debt down; never bank more than a short burst of credit.
        self.ahead = (self.ahead - elapsed).max(-0.05);
        self.ahead += bytes as f64 / rate;
        if self.ahead > 0.0 {
            Duration::from_secs_f64(self.ahead)
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_rate_paces() {
        let mut p = ResyncPacer::new(RateMode::Fixed(1 << 20), Duration::ZERO);
        // 4 MiB at 1 MiB/s: the last admission waits about 4 s minus the burst allowance.
        let mut wait = Duration::ZERO;
        for _ in 0..1024 {
            wait = p.admit(4096, Duration::ZERO, false);
        }
        assert!(
            wait > Duration::from_millis(3900) && wait < Duration::from_millis(4100),
            "{wait:?}"
        );
        // After the time passes, no wait.
        assert_eq!(p.admit(0, Duration::from_secs(5), false), Duration::ZERO);
    }

    #[test]
    fn dynamic_yields_to_app_io() {
        let p = ResyncPacer::new(RateMode::default(), Duration::ZERO);
        assert!(p.rate(true) < p.rate(false));
        assert_eq!(p.rate(true), 250 << 10);
    }
}
