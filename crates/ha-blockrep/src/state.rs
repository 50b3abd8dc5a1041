//! Resource states with DRBD's names, and `/proc/drbd`-style status.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* $v),* }
        impl $name {
            /// DRBD's name for the state.
            pub fn as_str(self) -> &'static str { match self { $($name::$v => $s),* } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

named_enum!(
    /// Role of a node for a resource.
    Role {
        /// Serves I/O; its data is the authority.
        Primary => "Primary",
        /// Receives replicated writes, refuses I/O.
        Secondary => "Secondary",
        /// Role of a peer we are not connected to.
        Unknown => "Unknown",
    }
);

named_enum!(
    /// State of the connection to the peer.
    ConnState {
        /// Not trying to connect.
        StandAlone => "StandAlone",
        /// Tearing the connection down.
        Disconnecting => "Disconnecting",
        /// About to try connecting.
        Unconnected => "Unconnected",
        /// Peer stopped answering pings.
        Timeout => "Timeout",
        /// The connection broke.
        BrokenPipe => "BrokenPipe",
        /// The peer spoke garbage.
        ProtocolError => "ProtocolError",
        /// Waiting for the peer to connect / retrying.
        WFConnection => "WFConnection",
        /// Handshake in progress.
        WFReportParams => "WFReportParams",
        /// Connected.
        Connected => "Connected",
    }
);

named_enum!(
    /// Replication state while connected.
    ReplState {
        /// Not replicating (not connected).
        Off => "Off",
        /// Connected and in sync; writes are mirrored.
        Established => "Established",
        /// Bitmaps being exchanged.
        WFBitMapS => "WFBitMapS",
        /// Bitmaps being exchanged (target side).
        WFBitMapT => "WFBitMapT",
        /// Sending resync data.
        SyncSource => "SyncSource",
        /// Receiving resync data.
        SyncTarget => "SyncTarget",
        /// Online verify, initiating side.
        VerifyS => "VerifyS",
        /// Online verify, answering side.
        VerifyT => "VerifyT",
        /// Resync paused (source).
        PausedSyncS => "PausedSyncS",
        /// Resync paused (target).
        PausedSyncT => "PausedSyncT",
    }
);

named_enum!(
    /// State of a node's disk.
    DiskState {
        /// No local disk.
        Diskless => "Diskless",
        /// Reading metadata.
        Attaching => "Attaching",
        /// An I/O error detached the disk.
        Failed => "Failed",
        /// Data is not usable (resync target in progress or never synced).
        Inconsistent => "Inconsistent",
        /// Consistent but known to be older than the peer's.
        Outdated => "Outdated",
        /// Peer's disk state is unknown (not connected).
        DUnknown => "DUnknown",
        /// Consistent, but whether it is the newest is unknown.
        Consistent => "Consistent",
        /// Consistent and current.
        UpToDate => "UpToDate",
    }
);

/// Replication protocol (when a write is complete).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Protocol {
    /// Local disk done and queued for sending.
    A,
    /// Local disk done and the peer received it.
    B,
    /// Both disks have it.
    #[default]
    C,
}

impl Protocol {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            Protocol::A => 1,
            Protocol::B => 2,
            Protocol::C => 3,
        }
    }
    /// From wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Protocol::A),
            2 => Some(Protocol::B),
            3 => Some(Protocol::C),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::A => "A",
            Protocol::B => "B",
            Protocol::C => "C",
        })
    }
}

/// Resync / verify progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncProgress {
    /// KiB to transfer when the resync started.
    pub total_kib: u64,
    /// KiB still out of sync.
    pub left_kib: u64,
    /// Recent speed in KiB/s.
    pub speed_kib_s: u64,
    /// Estimated seconds left.
    pub eta_secs: u64,
}

impl SyncProgress {
    /// Percent done (0-100).
    pub fn percent(&self) -> f64 {
        if self.total_kib == 0 {
            return 100.0;
        }
        100.0 * (self.total_kib.saturating_sub(self.left_kib)) as f64 / self.total_kib as f64
    }
}

/// A snapshot of one resource's state and counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Resource name.
    pub name: String,
    /// Minor number shown in the status line.
    pub minor: u32,
    /// Our role.
    pub role: Role,
    /// Peer's role.
    pub peer_role: Role,
    /// Connection state.
    pub conn: ConnState,
    /// Replication state.
    pub repl: ReplState,
    /// Our disk.
    pub disk: DiskState,
    /// Peer's disk.
    pub peer_disk: DiskState,
    /// Replication protocol.
    pub protocol: Protocol,
    /// KiB sent to the peer.
    pub ns: u64,
    /// KiB received from the peer.
    pub nr: u64,
    /// KiB written to the local disk.
    pub dw: u64,
    /// KiB read from the local disk.
    pub dr: u64,
    /// KiB out of sync.
    pub oos: u64,
    /// Resync or verify progress, when running.
    pub sync: Option<SyncProgress>,
    /// Generation UUIDs (current, bitmap, history).
    pub uuids: crate::meta::Uuids,
}

impl Status {
    /// The connection field as `/proc/drbd` shows it (replication state while connected).
    pub fn cs(&self) -> &'static str {
        if self.conn == ConnState::Connected && self.repl != ReplState::Off {
            if self.repl == ReplState::Established {
                "Connected"
            } else {
                self.repl.as_str()
            }
        } else {
            self.conn.as_str()
        }
    }

    /// `/proc/drbd`-style text.
    pub fn proc_text(&self) -> String {
        let mut s = format!(
            "{:2}: cs:{} ro:{}/{} ds:{}/{} {} r-----\n    ns:{} nr:{} dw:{} dr:{} oos:{}\n",
            self.minor,
            self.cs(),
            self.role,
            self.peer_role,
            self.disk,
            self.peer_disk,
            self.protocol,
            self.ns,
            self.nr,
            self.dw,
            self.dr,
            self.oos
        );
        if let Some(p) = &self.sync {
            let pct = p.percent();
            let filled = ((pct / 5.0) as usize).min(20);
            let bar: String = std::iter::repeat_n('=', filled)
                .chain(std::iter::once('>'))
                .chain(std::iter::repeat_n('.', 20 - filled))
                .collect();
            s += &format!(
                "\t[{bar}] sync'ed: {pct:.1}% ({}/{})K\n\tfinish: {}:{:02}:{:02} speed: {} K/sec\n",
                p.left_kib,
                p.total_kib,
                p.eta_secs / 3600,
                p.eta_secs / 60 % 60,
                p.eta_secs % 60,
                p.speed_kib_s
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_text_shows_sync() {
        let st = Status {
            name: "r0".into(),
            minor: 0,
            role: Role::Primary,
            peer_role: Role::Secondary,
            conn: ConnState::Connected,
            repl: ReplState::SyncSource,
            disk: DiskState::UpToDate,
            peer_disk: DiskState::Inconsistent,
            protocol: Protocol::C,
            ns: 1,
            nr: 2,
            dw: 3,
            dr: 4,
            oos: 512,
            sync: Some(SyncProgress {
                total_kib: 1024,
                left_kib: 512,
                speed_kib_s: 100,
                eta_secs: 5,
            }),
            uuids: Default::default(),
        };
        let t = st.proc_text();
        assert!(t.contains("cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C"));
        assert!(t.contains("sync'ed: 50.0%"));
        assert!(t.contains("finish: 0:00:05"));
        let json = serde_json::to_string(&st).unwrap();
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
    }
}
