//! The registry of built-in resource kinds (`AgentSpec::Builtin`): resources written in Rust by
//! other crates of the toolkit (`ha-net`'s floating IP, `ha-blockrep`'s drbddisk, ...) or by the
//! embedding program.

use super::Resource;
use crate::error::{Error, Result};
use crate::model::{AgentSpec, ResourceSpec};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Builds a resource of one built-in kind from its spec (parameters in `spec.params`).
pub type ResourceConstructor = dyn Fn(&ResourceSpec) -> Result<Box<dyn Resource>> + Send + Sync;

/// Maps built-in kind names (the `kind` of `AgentSpec::Builtin`) to constructors.
///
/// Cheap to clone (constructors are shared). Kind names are case-sensitive.
#[derive(Clone, Default)]
pub struct ResourceRegistry {
    kinds: BTreeMap<String, Arc<ResourceConstructor>>,
}

impl fmt::Debug for ResourceRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceRegistry")
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ResourceRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `ctor` for `kind`, replacing any earlier constructor; returns true when one was
    /// replaced.
    pub fn register<F>(&mut self, kind: impl Into<String>, ctor: F) -> bool
    where
        F: Fn(&ResourceSpec) -> Result<Box<dyn Resource>> + Send + Sync + 'static,
    {
        self.kinds.insert(kind.into(), Arc::new(ctor)).is_some()
    }

    /// Builder-style [`register`](Self::register).
    pub fn with<F>(mut self, kind: impl Into<String>, ctor: F) -> Self
    where
        F: Fn(&ResourceSpec) -> Result<Box<dyn Resource>> + Send + Sync + 'static,
    {
        self.register(kind, ctor);
        self
    }

    /// Whether `kind` is registered.
    pub fn contains(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// Registered kind names, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Build the built-in resource described by `spec`. Fails when `spec` is not a `Builtin`
    /// agent or its kind is not registered.
    pub fn build(&self, spec: &ResourceSpec) -> Result<Box<dyn Resource>> {
        let AgentSpec::Builtin { kind } = &spec.agent else {
            return Err(Error::Agent {
                agent: spec.id.to_string(),
                message: "not a built-in resource; script agents are built by agent_for".into(),
            });
        };
        let ctor = self.kinds.get(kind).ok_or_else(|| Error::Agent {
            agent: format!("{} ({kind})", spec.id),
            message: format!(
                "unknown built-in resource kind `{kind}`; registered kinds: [{}]",
                self.kinds().collect::<Vec<_>>().join(", ")
            ),
        })?;
        ctor(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::MemoryResource;
    use std::time::Duration;

    fn spec(kind: &str) -> ResourceSpec {
        ResourceSpec {
            id: "r1".into(),
            agent: AgentSpec::Builtin { kind: kind.into() },
            params: BTreeMap::new(),
            start_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(2),
            monitor_interval: None,
            monitor_timeout: Duration::from_secs(3),
        }
    }

    #[test]
    fn builds_registered_kinds_only() {
        let reg = ResourceRegistry::new().with("memory", |s| {
            Ok(Box::new(MemoryResource::from_spec(s)) as _)
        });
        assert!(reg.contains("memory"));
        let r = reg.build(&spec("memory")).unwrap();
        assert_eq!(r.id().as_str(), "r1");
        assert_eq!(
            r.timeout(crate::ResourceOp::Stop),
            Duration::from_secs(2),
            "timeouts come from the spec"
        );
        let err = reg.build(&spec("IPaddr")).err().unwrap().to_string();
        assert!(err.contains("IPaddr") && err.contains("memory"), "{err}");
        let mut lsb = spec("x");
        lsb.agent = AgentSpec::Lsb {
            script: "foo".into(),
        };
        assert!(reg.build(&lsb).is_err());
    }
}
