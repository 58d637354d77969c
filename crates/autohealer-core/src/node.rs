//! What the healer reads from a Node, and the trimming that keeps 5,000 of them cheap.

use autohealer_cloud::{NodeInfo, Role};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;

pub const SKIP_ANNOTATION: &str = "autohealer.dev/skip";
pub const REMEDIATE_ANNOTATION: &str = "autohealer.dev/remediate";
/// An operator's answer to a repair proposal: its id.
pub const APPROVE_ANNOTATION: &str = "autohealer.dev/approve";
pub const DENY_ANNOTATION: &str = "autohealer.dev/deny";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

const MASTER_LABELS: &[&str] = &["node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"];

/// Drops what no check or decision reads before the object is cached: managed fields,
/// the image list (often the largest part of a Node), and last-applied configurations.
pub fn trim(node: &mut Node) {
    node.metadata.managed_fields = None;
    if let Some(a) = node.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    if let Some(s) = node.status.as_mut() {
        s.images = None;
        s.volumes_attached = None;
        s.volumes_in_use = None;
        s.config = None;
        s.daemon_endpoints = None;
    }
}

/// Masters carry a control-plane role label (kubeadm, Magnum) or Magnum's role label.
pub fn role(node: &Node) -> Role {
    let labels = node.metadata.labels.as_ref();
    let is_master = labels.is_some_and(|l| {
        MASTER_LABELS.iter().any(|k| l.contains_key(*k)) || l.get("magnum.openstack.org/role").is_some_and(|r| r == "master")
    });
    if is_master { Role::Master } else { Role::Worker }
}

pub fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
}

pub fn flag(node: &Node, key: &str) -> bool {
    annotation(node, key).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

pub fn name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

pub fn created(node: &Node) -> Option<Timestamp> {
    node.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

pub fn boot_id(node: &Node) -> Option<&str> {
    node.status.as_ref().and_then(|s| s.node_info.as_ref()).map(|i| i.boot_id.as_str()).filter(|b| !b.is_empty())
}

/// The taint cluster-autoscaler puts on a node it is about to delete.
pub const AUTOSCALER_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Why the node is going away, if it is: it is being deleted, or cluster-autoscaler is
/// removing it. Such a node is never repaired: the repair would fight its removal.
pub fn removing(node: &Node) -> Option<String> {
    if let Some(t) = &node.metadata.deletion_timestamp {
        return Some(format!("the Node is being deleted (deletionTimestamp {})", t.0));
    }
    let tainted = node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == AUTOSCALER_TAINT));
    tainted.then(|| format!("cluster-autoscaler is removing the node (taint {AUTOSCALER_TAINT})"))
}

/// The label Magnum puts on a node with its node group's name.
pub const NODEGROUP_LABEL: &str = "magnum.openstack.org/nodegroup";
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";

/// What a rollout changes on many nodes at once (the OS image, the kernel, the kubelet,
/// the container runtime, the machine type, the node group) and the labels named in
/// config: failures that share one of these far more than the fleet does are a
/// rollout, not node faults. Empty values are left out.
pub fn attributes(node: &Node, labels: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(i) = node.status.as_ref().and_then(|s| s.node_info.as_ref()) {
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
    }
    let node_labels = node.metadata.labels.as_ref();
    for key in [INSTANCE_TYPE_LABEL, NODEGROUP_LABEL].into_iter().chain(labels.iter().map(String::as_str)) {
        if let Some(v) = node_labels.and_then(|l| l.get(key)).filter(|v| !v.is_empty())
            && !out.iter().any(|(k, _)| k == key)
        {
            out.push((key.to_string(), v.clone()));
        }
    }
    out
}

pub fn unschedulable(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
}

pub fn info(node: &Node) -> NodeInfo {
    let status = node.status.as_ref();
    let ni = status.and_then(|s| s.node_info.as_ref());
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    NodeInfo {
        name: name(node).to_string(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        role: Some(role(node)),
        provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()).filter(|p| !p.is_empty()),
        system_uuid: ni.and_then(|i| nonempty(&i.system_uuid)),
        machine_id: ni.and_then(|i| nonempty(&i.machine_id)),
        boot_id: ni.and_then(|i| nonempty(&i.boot_id)),
        addresses: status
            .and_then(|s| s.addresses.as_ref())
            .map(|a| a.iter().map(|a| (a.type_.clone(), a.address.clone())).collect())
            .unwrap_or_default(),
        zone: node.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL)).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_and_trim() {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "m", "labels": {"node-role.kubernetes.io/control-plane": ""}, "managedFields": [{"manager": "x"}]},
            "status": {"images": [{"names": ["a"], "sizeBytes": 1}], "nodeInfo": {"bootID": "b1", "machineID": "", "systemUUID": "S", "architecture": "", "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "", "operatingSystem": "", "osImage": ""}}
        }))
        .unwrap();
        assert_eq!(role(&n), Role::Master);
        trim(&mut n);
        assert!(n.metadata.managed_fields.is_none() && n.status.as_ref().unwrap().images.is_none());
        let i = info(&n);
        assert_eq!((i.boot_id.as_deref(), i.machine_id), (Some("b1"), None));
    }
}
