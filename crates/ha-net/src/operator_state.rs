//! The operator's requests kept across restarts: standby and per-group move/ban (Pacemaker
//! keeps them in the CIB; heartbeat forgot them). Without a state file they last as long as
//! the process.
//!
//! The file is JSON, rewritten atomically (temporary file, fsync, rename) whenever an operator
//! command changes it:
//! `{"standby": false, "groups": {"web": "prefer"}}`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use ha_core::GroupId;
use ha_core::message::OperatorPref;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What the operator asked of this node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorState {
    /// The node is in standby.
    #[serde(default)]
    pub standby: bool,
    /// Move (`prefer`) or ban (`avoid`) per group; cleared groups are absent.
    #[serde(default)]
    pub groups: BTreeMap<GroupId, OperatorPref>,
}

impl OperatorState {
    /// Read `path`; a missing file is the empty state. A file that cannot be parsed is an
    /// error: starting without the operator's bans could move groups the operator had
    /// moved away on purpose.
    pub fn load(path: &Path) -> Result<OperatorState> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(OperatorState::default());
            }
            Err(e) => return Err(Error::io(format!("operator state {}", path.display()), e)),
        };
        serde_json::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "operator state {}:{}:{}: {e}; fix it or delete it to start without operator requests",
                path.display(),
                e.line(),
                e.column()
            ))
        })
    }

    /// Record `pref` for `group` (`None` removes it).
    pub fn set(&mut self, group: &GroupId, pref: OperatorPref) {
        if pref == OperatorPref::None {
            self.groups.remove(group);
        } else {
            self.groups.insert(group.clone(), pref);
        }
    }

    /// Write the state to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let ctx = |what: &str| format!("operator state {}: {what}", path.display());
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Config(ctx(&format!("encode: {e}"))))?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(ctx("create"), e))?;
        f.write_all(json.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(ctx("write"), e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(ctx("rename"), e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage_with_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("op.json");
        assert_eq!(
            OperatorState::load(&path).unwrap(),
            OperatorState::default()
        );
        let mut s = OperatorState {
            standby: true,
            ..Default::default()
        };
        s.set(&GroupId::from("web"), OperatorPref::Prefer);
        s.set(&GroupId::from("db"), OperatorPref::Avoid);
        s.set(&GroupId::from("db"), OperatorPref::None);
        s.save(&path).unwrap();
        let back = OperatorState::load(&path).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.groups.len(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"web\": \"prefer\""), "{text}");

        std::fs::write(&path, "{\n \"standby\": maybe\n}").unwrap();
        let e = OperatorState::load(&path).unwrap_err().to_string();
        assert!(e.contains("op.json:2:") && e.contains("delete it"), "{e}");
        std::fs::write(&path, "{\"groups\": {\"web\": \"sideways\"}}").unwrap();
        assert!(OperatorState::load(&path).is_err());
    }
}
