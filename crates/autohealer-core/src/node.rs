//! What the healer reads from a Node, through the [`NodeView`] it caches.

use autohealer_cloud::{NodeInfo, Role};
use autohealer_healthcheck::NodeView;
use k8s_openapi::jiff::Timestamp;

pub const SKIP_ANNOTATION: &str = "autohealer.dev/skip";
pub const REMEDIATE_ANNOTATION: &str = "autohealer.dev/remediate";
/// An operator's answer to a repair proposal: its id.
pub const APPROVE_ANNOTATION: &str = "autohealer.dev/approve";
pub const DENY_ANNOTATION: &str = "autohealer.dev/deny";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

const MASTER_LABELS: &[&str] = &["node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"];

/// Masters carry a control-plane role label (kubeadm, Magnum) or Magnum's role label.
pub fn role(node: &NodeView) -> Role {
    let is_master = MASTER_LABELS.iter().any(|k| node.label(k).is_some()) || node.label("magnum.openstack.org/role") == Some("master");
    if is_master { Role::Master } else { Role::Worker }
}

pub fn annotation<'a>(node: &'a NodeView, key: &str) -> Option<&'a str> {
    node.annotation(key)
}

pub fn flag(node: &NodeView, key: &str) -> bool {
    annotation(node, key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

pub fn name(node: &NodeView) -> &str {
    node.name()
}

pub fn created(node: &NodeView) -> Option<Timestamp> {
    node.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

pub fn boot_id(node: &NodeView) -> Option<&str> {
    Some(node.node_info.boot_id.as_str()).filter(|b| !b.is_empty())
}

/// The taint cluster-autoscaler puts on a node it is about to delete.
pub const AUTOSCALER_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Why the node is going away, if it is: it is being deleted, or cluster-autoscaler is
/// removing it. Such a node is never repaired: the repair would fight its removal.
pub fn removing(node: &NodeView) -> Option<String> {
    if let Some(t) = &node.metadata.deletion_timestamp {
        return Some(format!("the Node is being deleted (deletionTimestamp {})", t.0));
    }
    let tainted = node.taints.iter().any(|t| t.key == AUTOSCALER_TAINT);
    tainted.then(|| format!("cluster-autoscaler is removing the node (taint {AUTOSCALER_TAINT})"))
}

/// The label Magnum puts on a node with its node group's name.
pub const NODEGROUP_LABEL: &str = "magnum.openstack.org/nodegroup";
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";

/// What a rollout changes on many nodes at once (the OS image, the kernel, the kubelet,
/// the container runtime, the machine type, the node group) and the labels named in
/// config: failures that share one of these far more than the fleet does are a
/// rollout, not node faults. Empty values are left out.
pub fn attributes(node: &NodeView, labels: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let i = &node.node_info;
    for (k, v) in [
        ("osImage", &i.os_image),
        ("kernelVersion", &i.kernel_version),
        ("kubeletVersion", &i.kubelet_version),
        ("containerRuntimeVersion", &i.container_runtime_version),
    ] {
        if !v.is_empty() {
            out.push((k.to_string(), v.clone()));
        }
    }
    for key in [INSTANCE_TYPE_LABEL, NODEGROUP_LABEL].into_iter().chain(labels.iter().map(String::as_str)) {
        if let Some(v) = node.label(key).filter(|v| !v.is_empty())
            && !out.iter().any(|(k, _)| k == key)
        {
            out.push((key.to_string(), v.to_string()));
        }
    }
    out
}

pub fn unschedulable(node: &NodeView) -> bool {
    node.unschedulable
}

pub fn info(node: &NodeView) -> NodeInfo {
    let ni = &node.node_info;
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    NodeInfo {
        name: name(node).to_string(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        role: Some(role(node)),
        provider_id: node.provider_id.clone().filter(|p| !p.is_empty()),
        system_uuid: nonempty(&ni.system_uuid),
        machine_id: nonempty(&ni.machine_id),
        boot_id: nonempty(&ni.boot_id),
        addresses: node.addresses.iter().map(|a| (a.type_.clone(), a.address.clone())).collect(),
        zone: node.label(ZONE_LABEL).map(String::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_and_ids() {
        let n: NodeView = serde_json::from_value(json!({
            "metadata": {"name": "m", "labels": {"node-role.kubernetes.io/control-plane": ""}, "managedFields": [{"manager": "x"}]},
            "status": {"images": [{"names": ["a"], "sizeBytes": 1}], "nodeInfo": {"bootID": "b1", "machineID": "", "systemUUID": "S", "architecture": "", "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "operatingSystem": "", "osImage": ""}}
        }))
        .unwrap();
        assert_eq!(role(&n), Role::Master);
        let i = info(&n);
        assert_eq!((i.boot_id.as_deref(), i.machine_id), (Some("b1"), None));
    }
}
