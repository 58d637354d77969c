//! [`NodeView`]: the part of a Node the healer reads, decoded straight from the
//! apiserver's JSON.
//!
//! A kubelet-registered Node is about 10 KB of JSON (40 images, capacity and
//! allocatable, managed fields, a dozen labels and annotations); decoded into
//! k8s-openapi's `Node` and cached it cost 5.75 KiB a node, which at 65,000 nodes is most
//! of the healer's memory. The view keeps what the built-in checks, the planner, the
//! ledger and the node writes read, and nothing else: the rest of the object is skipped
//! while it is parsed, so the full Node is never built. The view also leaves out what
//! moves without meaning anything to a check (the conditions' `lastHeartbeatTime`), so
//! that a kubelet's periodic status write decodes to a view equal to the one cached
//! ([`NodeView::same_state`]) and costs no evaluation.
//!
//! Labels and annotations are filtered by key: the ones the healer reads are kept by
//! default ([`label_kept`], [`annotation_kept`]); a check or a setting that reads
//! another one registers it with [`keep_label`] or [`keep_annotation`] before the nodes
//! are watched (a key registered later shows on each node from its next update).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{PoisonError, RwLock};

pub use k8s_openapi::api::core::v1::{NodeAddress, Taint};

/// The label prefixes and keys kept in every view: the role labels, the topology and
/// machine-type labels the planner and the correlated-failure hold read, Magnum's node
/// group and role, and the healer's own.
const LABELS: &[&str] = &[
    "node-role.kubernetes.io/",
    "magnum.openstack.org/role",
    "magnum.openstack.org/nodegroup",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "autohealer.dev/",
];

/// The annotation prefixes kept in every view: the healer's own (ledger, history,
/// skip, approve, ...) and upstream magnum-auto-healer's (its probe timestamp).
const ANNOTATIONS: &[&str] = &["autohealer.dev/", "autohealing.openstack.org/"];

static EXTRA_LABELS: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());
static EXTRA_ANNOTATIONS: RwLock<BTreeSet<String>> = RwLock::new(BTreeSet::new());

/// Keeps the label `key` in every [`NodeView`] decoded from now on (e.g. a label named in
/// `correlated-hold.labels`, or one a custom check reads).
pub fn keep_label(key: &str) {
    keep(&EXTRA_LABELS, key);
}

/// Keeps the annotation `key` in every [`NodeView`] decoded from now on (e.g. a probing
/// check's configured `unhealthy-annotation`).
pub fn keep_annotation(key: &str) {
    keep(&EXTRA_ANNOTATIONS, key);
}

fn keep(set: &RwLock<BTreeSet<String>>, key: &str) {
    let known = set.read().unwrap_or_else(PoisonError::into_inner).contains(key);
    if !known {
        set.write().unwrap_or_else(PoisonError::into_inner).insert(key.to_string());
    }
}

fn kept(defaults: &[&str], extra: &RwLock<BTreeSet<String>>, key: &str) -> bool {
    let default = defaults.iter().any(|d| if d.ends_with('/') { key.starts_with(d) } else { key == *d });
    default || extra.read().unwrap_or_else(PoisonError::into_inner).contains(key)
}

/// Whether a view keeps the label `key`.
pub fn label_kept(key: &str) -> bool {
    kept(LABELS, &EXTRA_LABELS, key)
}

/// Whether a view keeps the annotation `key`.
pub fn annotation_kept(key: &str) -> bool {
    kept(ANNOTATIONS, &EXTRA_ANNOTATIONS, key)
}

/// A node condition without its `lastHeartbeatTime`, which moves on every status
/// report and tells a check nothing the status does not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub last_transition_time: Option<Time>,
}

/// What `status.nodeInfo` says that identifies the machine or names what a rollout
/// changes; empty strings for what the node does not report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NodeIds {
    #[serde(rename = "bootID")]
    pub boot_id: String,
    #[serde(rename = "machineID")]
    pub machine_id: String,
    #[serde(rename = "systemUUID")]
    pub system_uuid: String,
    pub os_image: String,
    pub kernel_version: String,
    pub kubelet_version: String,
    pub container_runtime_version: String,
}

/// The healer's view of a Node (see the module docs). `metadata` holds the name, uid,
/// resourceVersion, creation and deletion timestamps and the kept labels and
/// annotations, nothing else.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    pub metadata: ObjectMeta,
    /// `spec.providerID`.
    pub provider_id: Option<String>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `spec.taints`, whole: the healer rewrites the list when it fences a node.
    pub taints: Vec<Taint>,
    /// `status.conditions`.
    pub conditions: Vec<Condition>,
    /// `status.addresses`.
    pub addresses: Vec<NodeAddress>,
    /// `status.nodeInfo`, in part.
    pub node_info: NodeIds,
}

impl NodeView {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    pub fn uid(&self) -> &str {
        self.metadata.uid.as_deref().unwrap_or_default()
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.as_ref().and_then(|a| a.get(key)).map(String::as_str)
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Equal but for the resourceVersion: an update that leaves this true changed
    /// nothing a check, the planner or a step reads (a kubelet's heartbeat).
    pub fn same_state(&self, other: &NodeView) -> bool {
        let (a, b) = (&self.metadata, &other.metadata);
        a.name == b.name
            && a.uid == b.uid
            && a.creation_timestamp == b.creation_timestamp
            && a.deletion_timestamp == b.deletion_timestamp
            && a.labels == b.labels
            && a.annotations == b.annotations
            && self.provider_id == other.provider_id
            && self.unschedulable == other.unschedulable
            && self.taints == other.taints
            && self.conditions == other.conditions
            && self.addresses == other.addresses
            && self.node_info == other.node_info
    }
}

impl k8s_openapi::Resource for NodeView {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Node";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "nodes";
    type Scope = k8s_openapi::ClusterResourceScope;
}

impl k8s_openapi::Metadata for NodeView {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A full Node (from a client that listed them itself, or a test) as the healer sees it.
impl From<&k8s_openapi::api::core::v1::Node> for NodeView {
    fn from(n: &k8s_openapi::api::core::v1::Node) -> Self {
        let m = &n.metadata;
        let filter = |map: &Option<BTreeMap<String, String>>, keep: fn(&str) -> bool| {
            map.as_ref().map(|m| m.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
        };
        let spec = n.spec.as_ref();
        let status = n.status.as_ref();
        let info = status.and_then(|s| s.node_info.as_ref());
        NodeView {
            metadata: ObjectMeta {
                name: m.name.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                creation_timestamp: m.creation_timestamp.clone(),
                deletion_timestamp: m.deletion_timestamp.clone(),
                labels: filter(&m.labels, label_kept),
                annotations: filter(&m.annotations, annotation_kept),
                ..Default::default()
            },
            provider_id: spec.and_then(|s| s.provider_id.clone()),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            conditions: status
                .and_then(|s| s.conditions.as_ref())
                .map(|c| {
                    c.iter()
                        .map(|c| Condition {
                            type_: c.type_.clone(),
                            status: c.status.clone(),
                            reason: c.reason.clone(),
                            message: c.message.clone(),
                            last_transition_time: c.last_transition_time.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            addresses: status.and_then(|s| s.addresses.clone()).unwrap_or_default(),
            node_info: info
                .map(|i| NodeIds {
                    boot_id: i.boot_id.clone(),
                    machine_id: i.machine_id.clone(),
                    system_uuid: i.system_uuid.clone(),
                    os_image: i.os_image.clone(),
                    kernel_version: i.kernel_version.clone(),
                    kubelet_version: i.kubelet_version.clone(),
                    container_runtime_version: i.container_runtime_version.clone(),
                })
                .unwrap_or_default(),
        }
    }
}

/// Something the healer can judge as a [`NodeView`]: the view itself, or a full Node
/// (converted) from a tool that read Nodes through the API.
pub trait AsNodeView {
    fn as_node_view(&self) -> std::borrow::Cow<'_, NodeView>;
}

impl AsNodeView for NodeView {
    fn as_node_view(&self) -> std::borrow::Cow<'_, NodeView> {
        std::borrow::Cow::Borrowed(self)
    }
}

impl AsNodeView for k8s_openapi::api::core::v1::Node {
    fn as_node_view(&self) -> std::borrow::Cow<'_, NodeView> {
        std::borrow::Cow::Owned(NodeView::from(self))
    }
}

/// The Node's JSON, as far as the view reads it; every other field is skipped unparsed.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    spec: Option<WireSpec>,
    #[serde(default)]
    status: Option<WireStatus>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    creation_timestamp: Option<Time>,
    #[serde(default)]
    deletion_timestamp: Option<Time>,
    #[serde(default, deserialize_with = "labels")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "annotations")]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireSpec {
    #[serde(default, rename = "providerID")]
    provider_id: Option<String>,
    #[serde(default)]
    unschedulable: Option<bool>,
    #[serde(default)]
    taints: Option<Vec<Taint>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    #[serde(default)]
    conditions: Option<Vec<Condition>>,
    #[serde(default)]
    addresses: Option<Vec<NodeAddress>>,
    #[serde(default)]
    node_info: Option<NodeIds>,
}

impl<'de> Deserialize<'de> for NodeView {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let spec = w.spec.unwrap_or_default();
        let status = w.status.unwrap_or_default();
        let mut conditions = status.conditions.unwrap_or_default();
        conditions.shrink_to_fit();
        let mut addresses = status.addresses.unwrap_or_default();
        addresses.shrink_to_fit();
        Ok(NodeView {
            metadata: ObjectMeta {
                name: w.metadata.name,
                uid: w.metadata.uid,
                resource_version: w.metadata.resource_version,
                creation_timestamp: w.metadata.creation_timestamp,
                deletion_timestamp: w.metadata.deletion_timestamp,
                labels: w.metadata.labels,
                annotations: w.metadata.annotations,
                ..Default::default()
            },
            provider_id: spec.provider_id,
            unschedulable: spec.unschedulable.unwrap_or(false),
            taints: spec.taints.unwrap_or_default(),
            conditions,
            addresses,
            node_info: status.node_info.unwrap_or_default(),
        })
    }
}

fn labels<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    d.deserialize_option(Kept(label_kept))
}

fn annotations<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    d.deserialize_option(Kept(annotation_kept))
}

/// Decodes a string map keeping only the keys `0` accepts; the other values are
/// skipped, not decoded (a last-applied configuration can be kilobytes).
struct Kept(fn(&str) -> bool);

impl<'de> Visitor<'de> for Kept {
    type Value = Option<BTreeMap<String, String>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of strings")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if (self.0)(&key) {
                out.insert(key, map.next_value::<String>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kubelet_node(heartbeat: &str, rv: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": "w1", "uid": "u1", "resourceVersion": rv, "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"kubernetes.io/hostname": "w1", "node-role.kubernetes.io/worker": "", "topology.kubernetes.io/zone": "z1", "example.com/rack": "r7"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}", "autohealer.dev/skip": "true", "node.alpha.kubernetes.io/ttl": "0"},
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]
            },
            "spec": {"providerID": "openstack:///abc", "podCIDR": "10.0.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "capacity": {"cpu": "4"}, "allocatable": {"cpu": "4"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2026-01-01T00:01:00Z"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
                "nodeInfo": {"bootID": "b1", "machineID": "m1", "systemUUID": "s1", "kernelVersion": "6.1", "osImage": "Debian", "kubeletVersion": "v1.33.0", "containerRuntimeVersion": "containerd://2", "architecture": "amd64", "operatingSystem": "linux", "kubeProxyVersion": ""},
                "images": [{"names": ["registry/image:1"], "sizeBytes": 1}]
            }
        })
    }

    #[test]
    fn a_kubelet_node_decodes_to_what_the_healer_reads() {
        let v: NodeView = serde_json::from_value(kubelet_node("2026-01-01T00:05:00Z", "7")).unwrap();
        assert_eq!((v.name(), v.uid(), v.metadata.resource_version.as_deref()), ("w1", "u1", Some("7")));
        let labels: Vec<&str> = v.metadata.labels.iter().flatten().map(|(k, _)| k.as_str()).collect();
        assert_eq!(labels, ["node-role.kubernetes.io/worker", "topology.kubernetes.io/zone"], "hostname and unread labels are dropped");
        let annotations: Vec<&str> = v.metadata.annotations.iter().flatten().map(|(k, _)| k.as_str()).collect();
        assert_eq!(annotations, ["autohealer.dev/skip"]);
        assert!(v.metadata.managed_fields.is_none());
        assert_eq!(v.provider_id.as_deref(), Some("openstack:///abc"));
        assert_eq!(v.taints.len(), 1);
        assert_eq!(v.condition("Ready").map(|c| c.status.as_str()), Some("True"));
        assert_eq!((v.node_info.boot_id.as_str(), v.node_info.kernel_version.as_str()), ("b1", "6.1"));
        assert_eq!(v.addresses[0].address, "10.0.0.5");
        let full: k8s_openapi::api::core::v1::Node = serde_json::from_value(kubelet_node("2026-01-01T00:05:00Z", "7")).unwrap();
        assert_eq!(NodeView::from(&full), v, "a full Node converts to the same view");
    }

    #[test]
    fn a_heartbeat_is_no_change_but_a_transition_is() {
        let a: NodeView = serde_json::from_value(kubelet_node("2026-01-01T00:05:00Z", "7")).unwrap();
        let b: NodeView = serde_json::from_value(kubelet_node("2026-01-01T00:10:00Z", "8")).unwrap();
        assert!(a.same_state(&b), "only the heartbeat and resourceVersion moved");
        let mut c = b.clone();
        c.conditions[0].status = "False".into();
        assert!(!a.same_state(&c));
    }

    #[test]
    fn a_registered_label_is_kept() {
        let mut n = kubelet_node("2026-01-01T00:05:00Z", "7");
        n["metadata"]["labels"]["example.com/registered"] = json!("yes");
        assert_eq!(serde_json::from_value::<NodeView>(n.clone()).unwrap().label("example.com/registered"), None);
        keep_label("example.com/registered");
        assert_eq!(serde_json::from_value::<NodeView>(n).unwrap().label("example.com/registered"), Some("yes"));
    }

    #[test]
    fn a_node_with_nothing_but_a_name_decodes() {
        let v: NodeView = serde_json::from_value(json!({"metadata": {"name": "n", "labels": null}, "spec": null})).unwrap();
        assert_eq!(v.name(), "n");
        assert!(v.conditions.is_empty() && v.metadata.labels.is_none());
    }
}
