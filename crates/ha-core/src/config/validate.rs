//! Rules shared by the TOML loader and the heartbeat importer: names, timing, peers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// heartbeat's UDP port.
pub const DEFAULT_UDP_PORT: u16 = 694;
/// heartbeat's serial default.
pub const DEFAULT_BAUD: u32 = 19_200;
/// Baud rates heartbeat's serial medium accepts.
pub const BAUD_RATES: &[u32] = &[9_600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800];
/// Pacemaker's default operation timeout.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(20);
/// Shortest HMAC secret accepted from TOML.
pub const MIN_SECRET_LEN: usize = 16;
/// Default phi-accrual threshold.
pub const DEFAULT_PHI_THRESHOLD: f64 = 8.0;

/// Checks an identifier (cluster, node, resource, group): 1-64 characters from
/// `[A-Za-z0-9_.-]`. Returns the problem, phrased as a fix.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty; give it a name"));
    }
    if name.len() > 64 {
        return Err(format!(
            "{what} `{name}` is longer than 64 characters; shorten it"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "{what} `{name}` contains {bad:?}; use only letters, digits, `_`, `.` and `-`"
        ));
    }
    Ok(())
}

/// Timing as written, before defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimingInput {
    /// keepalive, if given.
    pub keepalive: Option<Duration>,
    /// warntime, if given.
    pub warntime: Option<Duration>,
    /// deadtime, if given.
    pub deadtime: Option<Duration>,
    /// initdead, if given.
    pub initdead: Option<Duration>,
}

/// Which timing field a [`resolve_timing`] complaint is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimingField {
    /// keepalive.
    Keepalive,
    /// warntime.
    Warntime,
    /// deadtime.
    Deadtime,
    /// initdead.
    Initdead,
}

impl TimingField {
    /// The setting's name in both ha.cf and TOML.
    pub fn name(self) -> &'static str {
        match self {
            TimingField::Keepalive => "keepalive",
            TimingField::Warntime => "warntime",
            TimingField::Deadtime => "deadtime",
            TimingField::Initdead => "initdead",
        }
    }
}

/// Applies heartbeat's defaults (keepalive 2 s, deadtime 30 s, warntime deadtime/2, initdead
/// 2 x deadtime) and its rules. Returns (keepalive, warntime, deadtime, initdead).
pub fn resolve_timing(
    t: TimingInput,
) -> Result<(Duration, Duration, Duration, Duration), (TimingField, String)> {
    let defaults = crate::model::Timing::default();
    // Saturating arithmetic below: absurd values from a file must give an error, not a panic.
    let keepalive = t.keepalive.unwrap_or(defaults.keepalive);
    let deadtime = t.deadtime.unwrap_or(defaults.deadtime);
    let warntime = t.warntime.unwrap_or(deadtime / 2);
    let initdead = t.initdead.unwrap_or(deadtime.saturating_mul(2));
    let fmt = super::duration::format_duration;
    if keepalive.is_zero() {
        return Err((
            TimingField::Keepalive,
            "keepalive must be greater than zero, e.g. \"1s\"".into(),
        ));
    }
    // heartbeat refuses to start with deadtime <= 2 x keepalive: one lost packet would kill.
    if deadtime <= keepalive.saturating_mul(2) {
        let (field, fix) = if t.deadtime.is_some() {
            (
                TimingField::Deadtime,
                format!("raise deadtime above {}", fmt(keepalive.saturating_mul(2))),
            )
        } else {
            (
                TimingField::Keepalive,
                format!("lower keepalive below {}", fmt(deadtime / 2)),
            )
        };
        return Err((
            field,
            format!(
                "deadtime {} must exceed 2 x keepalive ({}); {fix}",
                fmt(deadtime),
                fmt(keepalive)
            ),
        ));
    }
    if warntime > deadtime {
        return Err((
            TimingField::Warntime,
            format!(
                "warntime {} exceeds deadtime {}; set it below deadtime (default deadtime/2)",
                fmt(warntime),
                fmt(deadtime)
            ),
        ));
    }
    if warntime < keepalive {
        tracing::warn!(
            "warntime {} is below keepalive {}: every heartbeat will be reported late",
            fmt(warntime),
            fmt(keepalive)
        );
    }
    if initdead < deadtime {
        return Err((
            TimingField::Initdead,
            format!(
                "initdead {} is below deadtime {}; set it to at least 2 x deadtime ({})",
                fmt(initdead),
                fmt(deadtime),
                fmt(deadtime.saturating_mul(2))
            ),
        ));
    }
    if initdead < deadtime.saturating_mul(2) {
        tracing::warn!(
            "initdead {} is below 2 x deadtime: peers still booting may be declared dead",
            fmt(initdead)
        );
    }
    Ok((keepalive, warntime, deadtime, initdead))
}

/// Normalises a unicast peer to `IP:PORT` / `HOST:PORT` (the form `ha-net` resolves).
pub fn normalize_peer(peer: &str, port: u16) -> Result<String, String> {
    let p = peer.trim();
    if let Ok(sa) = p.parse::<SocketAddr>() {
        return Ok(sa.to_string());
    }
    if let Ok(ip) = p.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port).to_string());
    }
    let (host, explicit_port) = match p.rsplit_once(':') {
        Some((h, pt)) => match pt.parse::<u16>() {
            Ok(pt) => (h, pt),
            Err(_) => {
                return Err(format!(
                    "peer `{peer}` has an invalid port; write `HOST`, `IP` or `IP:PORT`"
                ));
            }
        },
        None => (p, port),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !host_ok {
        return Err(format!(
            "peer `{peer}` is neither an IP address nor a host name; write e.g. `10.0.0.2` or `node-b:694`"
        ));
    }
    Ok(format!("{host}:{explicit_port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_defaults_follow_deadtime() {
        let (k, w, d, i) = resolve_timing(TimingInput {
            keepalive: Some(Duration::from_millis(100)),
            deadtime: Some(Duration::from_millis(300)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(k, Duration::from_millis(100));
        assert_eq!(w, Duration::from_millis(150));
        assert_eq!(d, Duration::from_millis(300));
        assert_eq!(i, Duration::from_millis(600));
    }

    #[test]
    fn deadtime_must_exceed_twice_keepalive() {
        let err = resolve_timing(TimingInput {
            keepalive: Some(Duration::from_secs(1)),
            deadtime: Some(Duration::from_secs(2)),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.0, TimingField::Deadtime);
        let err = resolve_timing(TimingInput {
            keepalive: Some(Duration::from_secs(20)),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.0, TimingField::Keepalive);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        // Found by the fuzzer: `keepalive 0000...0001e20`-style values overflowed `* 2`.
        let huge = Duration::new(u64::MAX, 0);
        assert!(
            resolve_timing(TimingInput {
                keepalive: Some(huge),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            resolve_timing(TimingInput {
                keepalive: Some(Duration::from_secs(1)),
                deadtime: Some(huge),
                ..Default::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn peers_are_normalised() {
        assert_eq!(normalize_peer("10.0.0.2", 694).unwrap(), "10.0.0.2:694");
        assert_eq!(normalize_peer("10.0.0.2:700", 694).unwrap(), "10.0.0.2:700");
        assert_eq!(normalize_peer("fe80::1", 694).unwrap(), "[fe80::1]:694");
        assert_eq!(normalize_peer("node-b", 694).unwrap(), "node-b:694");
        assert!(normalize_peer("a b", 694).is_err());
        assert!(normalize_peer("host:x", 694).is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("node name", "alpha-1.x_y").is_ok());
        assert!(check_name("node name", "").is_err());
        assert!(check_name("node name", "a b").is_err());
    }
}
