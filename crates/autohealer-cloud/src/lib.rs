//! The contract between the healer and a cloud: what a provider is asked to do and
//! what it answers. The escalation policy (reboot first, then replace) lives in the
//! healer, so a provider only performs single, well-defined steps.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
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
    /// A human-readable account for the Event, e.g. "soft reboot of server 1234 accepted".
    pub detail: String,
    /// The step was already under way (e.g. Nova's 409 while a reboot is in progress);
    /// the healer treats it as started, not as a failure.
    pub already_in_progress: bool,
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
    #[error("{0}")]
    Other(String),
}

/// The message of a call that got no answer in time although it may have been carried
/// out (a write that timed out); providers fail such calls with it.
pub const UNCERTAIN: &str = "no answer in time: the call may have been carried out";

impl CloudError {
    /// Whether the call may have been carried out although it failed: a repair step
    /// that ends so is treated as issued and verified like one, never sent again.
    pub fn is_uncertain(&self) -> bool {
        matches!(self, CloudError::Call { status: None, message, .. } if message == UNCERTAIN)
    }
}

/// A cloud that can repair the machines behind Kubernetes nodes.
#[async_trait]
pub trait CloudProvider: Send + Sync {
    /// The name used in `cloud-provider:` and in metrics and Events.
    fn name(&self) -> &str;

    /// Whether `action` is available for nodes of `role`.
    fn supports(&self, action: Action, role: Role) -> bool;

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

    /// Replaces the machines behind `nodes` (a provider may batch them). Returns once
    /// the cloud accepted the request; the healer follows the outcome on the nodes.
    async fn replace(&self, nodes: &[NodeInfo]) -> Result<Vec<ActionOutcome>, CloudError>;

    /// Publishes the cluster's health where the cloud shows it. Optional.
    /// Whether the node's machine is confirmed not running (stopped, crashed or gone),
    /// with what says so; `None` when it runs or the provider cannot tell. Fencing
    /// (the out-of-service taint that frees the node's pods and volumes) acts only on
    /// `Some`, so a provider that cannot tell keeps the default.
    async fn machine_down(&self, _node: &NodeInfo) -> Result<Option<String>, CloudError> {
        Ok(None)
    }

    async fn report_health(&self, _report: &HealthReport) -> Result<(), CloudError> {
        Ok(())
    }
}
