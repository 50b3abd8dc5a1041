//! A script named in the configuration and looked up in a list of directories at every run:
//! what heartbeat `resource.d` scripts and LSB init scripts share.

use super::factory::{check_path_component, find_in};
use super::process::{self, Invocation, Outcome};
use crate::error::Result;
use crate::ids::ResourceId;
use crate::model::ResourceSpec;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// A script run as `script [fixed args] ACTION`.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    /// The resource it serves (for logs).
    pub(crate) id: ResourceId,
    name: String,
    args: Vec<OsString>,
    dirs: Vec<PathBuf>,
    env: Vec<(OsString, OsString)>,
    /// What it is, for errors and logs ("LSB init script").
    what: &'static str,
}

impl Script {
    /// `name` must be a plain file name: it is looked up in `dirs`, never run from elsewhere.
    pub(crate) fn new(
        spec: &ResourceSpec,
        what: &'static str,
        name: &str,
        args: Vec<OsString>,
        dirs: Vec<PathBuf>,
        env: Vec<(OsString, OsString)>,
    ) -> Result<Script> {
        check_path_component(spec, what, name)?;
        Ok(Script {
            id: spec.id.clone(),
            name: name.to_string(),
            args,
            dirs,
            env,
            what,
        })
    }

    /// Where the script is found now, if anywhere.
    pub(crate) fn path(&self) -> Option<PathBuf> {
        find_in(&self.dirs, &self.name)
    }

    /// Run it with `action` appended to the fixed arguments.
    pub(crate) async fn run(&self, action: &str, timeout: Duration) -> Outcome {
        let Some(program) = self.path() else {
            tracing::warn!(resource = %self.id, script = %self.name, dirs = ?self.dirs,
                "{} not found", self.what);
            return Outcome::SpawnFailed(std::io::ErrorKind::NotFound.into());
        };
        let mut args = self.args.clone();
        args.push(action.into());
        process::run(&Invocation {
            program,
            args,
            env: self.env.clone(),
            timeout,
            scrub_prefix: None,
        })
        .await
    }
}
