//! An in-memory resource with injectable failures, for tests of anything that drives resources.

use super::{OpTimeouts, Resource};
use crate::ids::ResourceId;
use crate::model::ResourceSpec;
use crate::outcome::{OcfCode, ResourceOp};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One completed operation, as recorded in a [`Journal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The resource.
    pub resource: ResourceId,
    /// The operation.
    pub op: ResourceOp,
    /// Its result.
    pub code: OcfCode,
}

/// A shared, ordered log of operations completed by several [`MemoryResource`]s, so a test can
/// check the order in which a group was started and stopped.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<JournalEntry>>>);

impl Journal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every entry, oldest first.
    pub fn entries(&self) -> Vec<JournalEntry> {
        lock(&self.0).clone()
    }

    /// The `(resource, op)` pairs, oldest first; handy in assertions.
    pub fn ops(&self) -> Vec<(String, ResourceOp)> {
        lock(&self.0)
            .iter()
            .map(|e| (e.resource.0.clone(), e.op))
            .collect()
    }

    /// Forget every entry.
    pub fn clear(&self) {
        lock(&self.0).clear();
    }

    fn push(&self, entry: JournalEntry) {
        lock(&self.0).push(entry);
    }
}

/// Lock ignoring poisoning: a panicking test thread must not cascade into unrelated failures.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct State {
    running: bool,
    once: HashMap<ResourceOp, VecDeque<OcfCode>>,
    always: HashMap<ResourceOp, OcfCode>,
    hang: HashSet<ResourceOp>,
    delay: HashMap<ResourceOp, Duration>,
    calls: HashMap<ResourceOp, u32>,
    validate: Option<OcfCode>,
}

#[derive(Debug)]
struct Inner {
    id: ResourceId,
    timeouts: OpTimeouts,
    journal: Option<Journal>,
    state: Mutex<State>,
}

/// A resource that lives in memory: a `running` flag, idempotent start and stop, and failures,
/// delays and hangs injectable per operation.
///
/// Clones share state, so a test keeps one handle while the code under test owns another
/// (for example boxed as `dyn Resource` in a [`ResourceGroup`](super::ResourceGroup)).
/// An injected failure leaves the state unchanged: a failed start leaves the resource stopped,
/// a failed stop leaves it running.
#[derive(Debug, Clone)]
pub struct MemoryResource {
    inner: Arc<Inner>,
}

impl MemoryResource {
    /// A stopped resource with default timeouts.
    pub fn new(id: impl Into<ResourceId>) -> Self {
        Self::build(id.into(), OpTimeouts::default(), None)
    }

    /// A stopped resource with the id and timeouts of `spec` (its agent is ignored); suitable as
    /// a [`ResourceRegistry`](super::ResourceRegistry) constructor.
    pub fn from_spec(spec: &ResourceSpec) -> Self {
        Self::build(spec.id.clone(), OpTimeouts::from_spec(spec), None)
    }

    fn build(id: ResourceId, timeouts: OpTimeouts, journal: Option<Journal>) -> Self {
        MemoryResource {
            inner: Arc::new(Inner {
                id,
                timeouts,
                journal,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The same resource (a fresh, stopped one) with these timeouts.
    pub fn with_timeouts(self, timeouts: OpTimeouts) -> Self {
        Self::build(self.inner.id.clone(), timeouts, self.inner.journal.clone())
    }

    /// The same resource (a fresh, stopped one) recording completed operations in `journal`.
    pub fn with_journal(self, journal: Journal) -> Self {
        Self::build(self.inner.id.clone(), self.inner.timeouts, Some(journal))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Whether the resource is running.
    pub fn is_running(&self) -> bool {
        self.state().running
    }

    /// Force the running flag (a resource found running at boot, or one that crashed).
    pub fn set_running(&self, running: bool) {
        self.state().running = running;
    }

    /// The resource dies behind the cluster's back: the next monitor reports NotRunning.
    pub fn crash(&self) {
        self.set_running(false);
    }

    /// The next call of `op` returns `code` (queued: several calls inject several results).
    pub fn fail_next(&self, op: ResourceOp, code: OcfCode) {
        self.state().once.entry(op).or_default().push_back(code);
    }

    /// Every call of `op` returns `code` until [`clear_failures`](Self::clear_failures).
    pub fn fail_always(&self, op: ResourceOp, code: OcfCode) {
        self.state().always.insert(op, code);
    }

    /// Make `op` never complete (`true`) or behave again (`false`); for timeout tests.
    pub fn hang(&self, op: ResourceOp, hang: bool) {
        let mut st = self.state();
        if hang {
            st.hang.insert(op);
        } else {
            st.hang.remove(&op);
        }
    }

    /// Make `op` take `delay` before completing (needs a tokio runtime: feature `agents`).
    #[cfg(feature = "agents")]
    pub fn set_delay(&self, op: ResourceOp, delay: Duration) {
        self.state().delay.insert(op, delay);
    }

    /// The result of [`Resource::validate`] (Success unless set).
    pub fn set_validate(&self, code: OcfCode) {
        self.state().validate = Some(code);
    }

    /// Remove every injected failure, hang and delay.
    pub fn clear_failures(&self) {
        let mut st = self.state();
        st.once.clear();
        st.always.clear();
        st.hang.clear();
        st.delay.clear();
    }

    /// How many times `op` was called (including calls that hung or failed).
    pub fn calls(&self, op: ResourceOp) -> u32 {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    async fn perform(&self, op: ResourceOp) -> OcfCode {
        let (hang, delay) = {
            let mut st = self.state();
            *st.calls.entry(op).or_default() += 1;
            (st.hang.contains(&op), st.delay.get(&op).copied())
        };
        if hang {
            std::future::pending::<()>().await;
        }
        #[cfg(feature = "agents")]
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        #[cfg(not(feature = "agents"))]
        let _ = delay;

        let code = {
            let mut st = self.state();
            let injected = st
                .once
                .get_mut(&op)
                .and_then(VecDeque::pop_front)
                .or_else(|| st.always.get(&op).copied());
            match (injected, op) {
                (Some(code), _) => code,
                (None, ResourceOp::Start) => {
                    st.running = true;
                    OcfCode::Success
                }
                (None, ResourceOp::Stop) => {
                    st.running = false;
                    OcfCode::Success
                }
                (None, ResourceOp::Monitor) if st.running => OcfCode::Success,
                (None, ResourceOp::Monitor) => OcfCode::NotRunning,
            }
        };
        if let Some(j) = &self.inner.journal {
            j.push(JournalEntry {
                resource: self.inner.id.clone(),
                op,
                code,
            });
        }
        code
    }
}

#[async_trait]
impl Resource for MemoryResource {
    fn id(&self) -> &ResourceId {
        &self.inner.id
    }

    async fn start(&self) -> OcfCode {
        self.perform(ResourceOp::Start).await
    }

    async fn stop(&self) -> OcfCode {
        self.perform(ResourceOp::Stop).await
    }

    async fn monitor(&self) -> OcfCode {
        self.perform(ResourceOp::Monitor).await
    }

    async fn validate(&self) -> OcfCode {
        self.state().validate.unwrap_or(OcfCode::Success)
    }

    fn timeout(&self, op: ResourceOp) -> Duration {
        self.inner.timeouts.for_op(op)
    }
}

#[cfg(all(test, feature = "agents"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idempotent_start_stop_and_injection() {
        let j = Journal::new();
        let r = MemoryResource::new("r1").with_journal(j.clone());
        assert_eq!(r.monitor().await, OcfCode::NotRunning);
        assert_eq!(
            r.stop().await,
            OcfCode::Success,
            "stop of a stopped resource"
        );
        assert_eq!(r.start().await, OcfCode::Success);
        assert_eq!(
            r.start().await,
            OcfCode::Success,
            "start of a running resource"
        );
        assert!(r.is_running());
        r.fail_next(ResourceOp::Stop, OcfCode::ErrGeneric);
        assert_eq!(r.stop().await, OcfCode::ErrGeneric);
        assert!(r.is_running(), "a failed stop leaves it running");
        assert_eq!(r.stop().await, OcfCode::Success);
        r.fail_always(ResourceOp::Start, OcfCode::ErrInstalled);
        assert_eq!(r.start().await, OcfCode::ErrInstalled);
        assert_eq!(r.start().await, OcfCode::ErrInstalled);
        assert!(!r.is_running());
        r.clear_failures();
        assert_eq!(r.start().await, OcfCode::Success);
        r.crash();
        assert_eq!(r.monitor().await, OcfCode::NotRunning);
        assert_eq!(r.calls(ResourceOp::Start), 5);
        assert_eq!(j.entries().len(), 10);
    }
}
