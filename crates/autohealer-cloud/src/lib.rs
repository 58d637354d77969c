//! The contract between the healer and a cloud: what a provider is asked to do and
//! what it answers. The escalation policy (reboot first, then replace) lives in the
//! healer, so a provider only performs single, well-defined steps.

pub mod registry;

pub use registry::{Provider, ProviderConfig, Providers};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The role a node plays in the cluster; limits and checks are configured per role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a provider needs to know about a node to find and repair its machine. It is
/// deliberately not the Kubernetes object, so a provider crate needs no Kubernetes types.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub uid: String,
    pub role: Option<Role>,
    /// `spec.providerID`, e.g. `openstack:///<uuid>`.
    pub provider_id: Option<String>,
    /// `status.nodeInfo.systemUUID`.
    pub system_uuid: Option<String>,
    /// `status.nodeInfo.machineID`.
    pub machine_id: Option<String>,
    /// `status.nodeInfo.bootID`, which changes on every boot.
    pub boot_id: Option<String>,
    /// `(type, address)` pairs from `status.addresses`.
    pub addresses: Vec<(String, String)>,
    /// `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
}

impl NodeInfo {
    pub fn internal_ip(&self) -> Option<&str> {
        self.addresses.iter().find(|(t, _)| t == "InternalIP").map(|(_, a)| a.as_str())
    }
}

/// A repair step a provider may or may not support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Reboot,
    Replace,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reboot => "reboot",
            Action::Replace => "replace",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the cloud lets the healer repair anything right now, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairGate {
    Allowed,
    Denied(String),
}

/// What a provider did when asked to act on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// The cloud's id of the machine acted on, recorded in the repair ledger.
    pub server_id: Option<String>,
    /// A human-readable account for the Event, e.g. "soft reboot of server 1234 accepted"
    /// or "server 1234 is already rebooting": a step already under way is started, not
    /// a failure, and is verified like one.
    pub detail: String,
    /// What the machine showed before a destructive step (e.g. the tail of its console
    /// output), kept by the healer where an operator can read it after the machine is gone.
    pub evidence: Option<String>,
}

/// Cluster health as the healer sees it, for providers that publish it (Magnum's
/// `health_status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub healthy: bool,
    /// Per node: name to a one-line reason, only for unhealthy nodes.
    pub unhealthy_nodes: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The node maps to no machine of this cloud; the healer never guesses.
    #[error("node {node} maps to no server: {reason}")]
    NoServer { node: String, reason: String },
    #[error("{action} is not supported by the {provider} provider for this node: {reason}")]
    Unsupported { provider: String, action: Action, reason: String },
    /// A call failed; `call` names it (e.g. `nova POST /servers/{id}/action`).
    #[error("{call} failed{}: {message}", status.map(|s| format!(" with HTTP {s}")).unwrap_or_default())]
    Call { call: String, status: Option<u16>, message: String },
    /// A write got no answer in time although it may have been carried out. The
    /// healer never sends it again blindly: the phase is asked again with `resumed`,
    /// which verifies, and a last call that ends so is treated as issued.
    #[error("{call}: no answer in time: the call may have been carried out")]
    Uncertain { call: String },
    #[error("{0}")]
    Other(String),
}

/// An error with its sources, one after the other: what an HTTP client's top-level
/// error hides ("error sending request") is usually in its sources (the refused
/// connection, the certificate that did not verify).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl CloudError {
    /// Whether the call may have been carried out although it failed.
    pub fn is_uncertain(&self) -> bool {
        matches!(self, CloudError::Uncertain { .. })
    }
}

/// Where a step made of several cloud calls stands (e.g. detach, stop, wait-stopped,
/// resize). The healer writes it to the node's ledger before each call, so a new
/// leader, or the same one after a cancelled task, resumes it where it stopped
/// instead of dropping it half-way or starting it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    /// The call about to be made, as the provider names it (`stop`, `resize`).
    pub name: String,
    /// What the later calls need, as the provider chose to keep it (a node group, a count).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Set from the phase whose call may take the machine out of service (a stop) on:
    /// from then on the step is finished by whoever leads, or the machine restored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_of_service: bool,
}

impl Phase {
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), data: BTreeMap::new(), out_of_service: false }
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }

    /// This phase's call may take the machine out of service (and so may every later one).
    pub fn out_of_service(mut self) -> Self {
        self.out_of_service = true;
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(String::as_str)
    }
}

/// What one call of a replace did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The next call to make: the healer records it, then calls [`CloudProvider::replace`]
    /// with it. A phase that keeps `out_of_service` once set is what lets the healer
    /// finish the step after a crash.
    Next(Phase),
    /// The step is issued; the healer follows its outcome on the node.
    Done(ActionOutcome),
}

/// A cloud that can repair the machines behind Kubernetes nodes.
#[async_trait]
pub trait CloudProvider: Send + Sync {
    /// The name used in `cloud-provider:` and in metrics and Events.
    fn name(&self) -> &str;

    /// Whether `action` is available for nodes of `role`. Asked at every evaluation, so
    /// a provider may answer from what it learnt from the cloud since (in
    /// [`CloudProvider::repair_allowed`], asked before any new step).
    fn supports(&self, action: Action, role: Role) -> bool;

    /// Who performs `action` for nodes of `role` instead of the healer, when the cloud
    /// does it itself (a Cluster API MachineHealthCheck replacing what a reboot did not
    /// fix): the healer then hands the node over and waits, rather than failing the
    /// repair. `None` (the default) when nobody does.
    fn delegated(&self, _action: Action, _role: Role) -> Option<String> {
        None
    }

    /// What the provider knows about the cloud that decides what it does (for OpenStack,
    /// the Magnum driver and how it was found), as `(key, value)` pairs for `plan`,
    /// the logs and `autohealer_provider_info`.
    fn describe(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Whether this node can be acted on at all (e.g. it maps to a machine of this
    /// cloud). Asked, without I/O, before anything is written for a repair, so a node
    /// the provider cannot handle is never cordoned or recorded for nothing.
    fn check_node(&self, _node: &NodeInfo) -> Result<(), CloudError> {
        Ok(())
    }

    /// A cluster-level gate, e.g. Magnum's `auto_healing_enabled` label and the
    /// cluster's status. Asked before any new repair is started.
    async fn repair_allowed(&self) -> Result<RepairGate, CloudError>;

    /// Reboots the machine behind `node`. Returns once the cloud accepted the request.
    async fn reboot(&self, node: &NodeInfo) -> Result<ActionOutcome, CloudError>;

    /// Makes one call of the replace of `node`'s machine: the first with `at: None`,
    /// then each phase the previous call returned. `resumed` says the phase was read back
    /// from the ledger (a new leader, a cancelled task, an uncertain answer): its call
    /// may already have been made, so the provider verifies before acting and never
    /// repeats a call that must happen once. A provider with a single call returns
    /// [`Progress::Done`] at once.
    async fn replace(&self, node: &NodeInfo, at: Option<&Phase>, resumed: bool) -> Result<Progress, CloudError>;

    /// Brings back a machine that a replace took out of service and could not finish
    /// (starts a stopped server again), so that a stalled replace never leaves a machine
    /// stopped for good. `at` is the phase the replace stalled at.
    async fn restore(&self, _node: &NodeInfo, at: &Phase) -> Result<ActionOutcome, CloudError> {
        Err(CloudError::Other(format!("the {} provider cannot restore a machine (the replace stalled at {})", self.name(), at.name)))
    }

    /// Whether the node's machine is confirmed not running (stopped, crashed or gone),
    /// with what says so; `None` when it runs or the provider cannot tell. Fencing
    /// (the out-of-service taint that frees the node's pods and volumes) acts only on
    /// `Some`, so a provider that cannot tell keeps the default.
    async fn machine_down(&self, _node: &NodeInfo) -> Result<Option<String>, CloudError> {
        Ok(None)
    }

    /// Publishes the cluster's health where the cloud shows it. Optional.
    async fn report_health(&self, _report: &HealthReport) -> Result<(), CloudError> {
        Ok(())
    }
}
