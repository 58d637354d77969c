//! Health checks: the [`HealthCheck`] trait, the [`Registry`] that builds checks from
//! the YAML `type:` and `params:`, and the built-in checks.
//!
//! A check either judges a node from its Kubernetes object alone (pure, e.g.
//! [`NodeCondition`]) or probes it over the network on the healer's schedule (e.g.
//! [`Endpoint`]); either way it reads the node as a [`NodeView`], the part of the Node
//! the healer keeps. Either way it answers healthy, or unhealthy since an instant for a
//! reason; the healer decides when that becomes a repair.

mod endpoint;
mod heartbeat;
mod node_condition;
mod params;
mod startup;
mod util;
pub mod view;
mod webhook;

pub use endpoint::Endpoint;
pub use heartbeat::Heartbeat;
pub use k8s_openapi::jiff::Timestamp;
pub use node_condition::NodeCondition;
/// What a check author needs to read `params:` the way the built-in checks do; the
/// rest of the parsing helpers live in `autohealer-params`.
pub use params::{ParamError, ensure_crypto_provider, parse_params};
pub use startup::StartupTimeout;
pub use view::{AsNodeView, NodeView, keep_annotation, keep_label};
pub use webhook::Webhook;

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a check says about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// `since` is when the problem started, when the check can tell (a condition's
    /// `lastTransitionTime`); probing checks leave it to the healer, which remembers
    /// the first failed probe.
    Unhealthy {
        since: Option<Timestamp>,
        reason: String,
    },
}

impl Health {
    pub fn unhealthy(reason: impl Into<String>) -> Self {
        Health::Unhealthy { since: None, reason: reason.into() }
    }

    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// What a pure check may read besides the Node.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub now: Timestamp,
    /// The last renewal of the node's Lease in `kube-node-lease`, when the healer
    /// watches them (see [`HealthCheck::needs_node_leases`]).
    pub lease_renewed: Option<Timestamp>,
}

/// How a check gets its evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// Judged from the Node object alone, on every change of it; no I/O.
    Pure,
    /// Probed over the network on `monitor-interval`, concurrently and off the
    /// planner's path.
    Probe,
}

#[async_trait]
pub trait HealthCheck: Send + Sync + fmt::Debug {
    /// The `type:` this check was built from.
    fn type_name(&self) -> &str;

    /// How long the node must stay unhealthy before it is repaired.
    fn unhealthy_duration(&self) -> Duration;

    fn kind(&self) -> CheckKind {
        CheckKind::Pure
    }

    /// For [`CheckKind::Pure`] checks.
    fn judge(&self, _node: &NodeView, _ctx: &Context) -> Health {
        Health::Healthy
    }

    /// Whether [`HealthCheck::judge`] reads [`Context::now`] (or anything else besides
    /// the node): such a verdict can change while the node does not, so the healer
    /// judges it again on every evaluation. A check that answers `false` is judged
    /// again only when the node's view changes, which is what keeps an evaluation of a
    /// large fleet in proportion to the nodes that changed. The default is the safe
    /// answer.
    fn reads_clock(&self) -> bool {
        true
    }

    /// For a check that reads the clock or the Lease: until when the verdict it has just
    /// given on `node` stays what it is, whatever the clock says and however the Lease
    /// is renewed meanwhile, as long as the node itself does not change (a healthy
    /// Heartbeat verdict holds until the last renewal plus `unhealthy-duration`). The
    /// healer judges the node again from then on; `None`, the default, has it judged
    /// again at every evaluation.
    fn verdict_holds_until(&self, _node: &NodeView, _ctx: &Context) -> Option<Timestamp> {
        None
    }

    /// Whether [`Context::lease_renewed`] must be filled in: the healer then watches
    /// the nodes' Leases in `kube-node-lease`.
    fn needs_node_leases(&self) -> bool {
        false
    }

    /// For [`CheckKind::Probe`] checks. Must not fail: an error of the probe itself
    /// (no address to probe, no token, a webhook that does not answer) is reported as
    /// healthy, since the healer never repairs when unsure, and kept for
    /// [`HealthCheck::trouble`] when it is the check's own.
    async fn probe(&self, _node: &NodeView) -> Health {
        Health::Healthy
    }

    /// The check's own latest failure to get evidence (e.g. "webhook timed out after
    /// 5s"), cleared when a probe gets an answer again. Such a check judges every node
    /// healthy, so without this it would go blind silently; the healer turns it into a
    /// metric and an Event on its ConfigMap.
    fn trouble(&self) -> Option<String> {
        None
    }

    /// The node annotation in which a probing check's first failure is persisted, so
    /// that a new leader (or a replaced upstream deployment) continues the count.
    fn unhealthy_annotation(&self) -> Option<&str> {
        None
    }
}

/// Builds a check from its `params:` value; `path` is the key path of those params
/// in the config, for error messages.
pub type Factory = fn(&serde_json::Value, &str) -> Result<Arc<dyn HealthCheck>, ParamError>;

/// Checks by `type` name. A plugin crate registers its own with [`Registry::register`].
#[derive(Clone)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::with_builtins()
    }
}

impl Registry {
    pub fn empty() -> Self {
        Self { factories: BTreeMap::new() }
    }

    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        r.register("NodeCondition", |p, path| Ok(Arc::new(NodeCondition::from_params(p, path)?)));
        r.register("Endpoint", |p, path| Ok(Arc::new(Endpoint::from_params(p, path)?)));
        r.register("StartupTimeout", |p, path| Ok(Arc::new(StartupTimeout::from_params(p, path)?)));
        r.register("Heartbeat", |p, path| Ok(Arc::new(Heartbeat::from_params(p, path)?)));
        r.register("Webhook", |p, path| Ok(Arc::new(Webhook::from_params(p, path)?)));
        r
    }

    pub fn register(&mut self, type_name: &str, factory: Factory) {
        self.factories.insert(type_name.to_string(), factory);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Builds a check; `path` is where its entry sits in the config (e.g.
    /// `healthcheck.worker[0]`).
    pub fn build(&self, type_name: &str, params: &serde_json::Value, path: &str) -> Result<Arc<dyn HealthCheck>, ParamError> {
        match self.factories.get(type_name) {
            Some(f) => f(params, &format!("{path}.params")),
            None => {
                let names: Vec<&str> = self.names().collect();
                Err(ParamError::new(
                    format!("{path}.type"),
                    format!(
                        "unknown health check type {type_name:?}{}; known types: {}",
                        params::did_you_mean(type_name, &names),
                        names.join(", ")
                    ),
                ))
            }
        }
    }
}
