//! The cluster a side runs against: a fake apiserver holding N Nodes shaped as real
//! kubelets register them (labels, annotations, capacity, four conditions with
//! heartbeats, addresses, nodeInfo and a list of images) and their Leases in
//! `kube-node-lease`, and a fake OpenStack with one server per node.

use autohealer_testkit::apiserver::resources::{self, Resource};
use autohealer_testkit::apiserver::store::Mutation;
use autohealer_testkit::apiserver::{ApiServerOptions, FakeApiServer};
use autohealer_testkit::openstack::{FakeOpenStack, OsOptions};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub const LEASE_NS: &str = "kube-node-lease";

pub fn server_id(i: usize) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

pub fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

pub fn nodes_res() -> &'static Resource {
    resources::find("", "v1", "nodes").expect("nodes are served")
}

pub fn leases_res() -> &'static Resource {
    resources::find("coordination.k8s.io", "v1", "leases").expect("leases are served")
}

/// `metav1.MicroTime` as the kubelet writes `renewTime`.
pub fn micro_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

pub fn seconds_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The four conditions a kubelet reports, all healthy, with this heartbeat.
pub fn conditions(heartbeat: &str) -> Value {
    let c = |t: &str, s: &str, reason: &str, message: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": message,
            "lastHeartbeatTime": heartbeat, "lastTransitionTime": "2026-01-01T00:00:00Z"})
    };
    json!([
        c("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        c("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        c("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        c("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ])
}

pub fn node_object(i: usize, images: usize, heartbeat: &str) -> Value {
    let name = node_name(i);
    let mut labels = json!({
        "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux", "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": "m1.large",
        "topology.kubernetes.io/region": "region-1", "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
        "magnum.openstack.org/nodegroup": if i < 3 { "default-master" } else { "default-worker" },
        "magnum.openstack.org/role": if i < 3 { "master" } else { "worker" },
    });
    if i < 3 {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    let ip = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
    let resources = json!({"cpu": "4", "ephemeral-storage": "41152812Ki", "hugepages-1Gi": "0", "hugepages-2Mi": "0", "memory": "8148452Ki", "pods": "110"});
    json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "csi.volume.kubernetes.io/nodeid": format!("{{\"cinder.csi.openstack.org\":\"{}\"}}", server_id(i)),
            },
        },
        "spec": {"providerID": format!("openstack:///{}", server_id(i)), "podCIDR": format!("10.100.{}.0/24", i % 256), "podCIDRs": [format!("10.100.{}.0/24", i % 256)]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions(heartbeat),
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": (0..images).map(|k| json!({"names": [format!("registry.example/app-{k}@sha256:{k:064x}"), format!("registry.example/app-{k}:v1")], "sizeBytes": 123456789})).collect::<Vec<_>>(),
            "nodeInfo": {"machineID": format!("{i:032x}"), "systemUUID": server_id(i), "bootID": format!("{:032x}", i + 1), "kernelVersion": "6.1.0-28-amd64",
                "osImage": "Fedora CoreOS 40", "containerRuntimeVersion": "containerd://2.0.1",
                "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}
        }
    })
}

pub fn lease_object(i: usize, uid: &str, renew: &str) -> Value {
    let name = node_name(i);
    json!({
        "metadata": {"name": name, "namespace": LEASE_NS,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew}
    })
}

/// One measured side: the fake apiserver and cloud it runs against, and its processes.
pub struct World {
    pub api: FakeApiServer,
    pub os: FakeOpenStack,
    pub dir: PathBuf,
    pub n: usize,
}

impl World {
    /// `servers`: also one server per node in the fake Nova (the fake apiserver alone
    /// is measured without them).
    pub async fn start(n: usize, images: usize, tag: &str, history_window: usize, servers: bool) -> anyhow::Result<Self> {
        let api = FakeApiServer::start(ApiServerOptions { history_window, ..Default::default() }).await?;
        let os = FakeOpenStack::start(OsOptions::default()).await?;
        let now = jiff::Timestamp::now();
        let (hb, renew) = (seconds_time(now), micro_time(now));
        let e = |e: autohealer_testkit::apiserver::ApiError| anyhow::anyhow!("{}", e.message);
        for i in 0..n {
            let node = api.store().create(nodes_res(), "", node_object(i, images, &hb), "kubelet").map_err(e)?;
            let uid = node.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
            api.store().create(leases_res(), LEASE_NS, lease_object(i, &uid, &renew), "kubelet").map_err(e)?;
            if servers {
                let ip = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
                os.add_server(&server_id(i), &node_name(i), &ip, false);
            }
        }
        let dir = std::env::temp_dir().join(format!("autohealer-bench-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { api, os, dir, n })
    }

    /// Ready=False since `transition`, as a kubelet writes it (the other conditions and
    /// the heartbeats are left as they are).
    pub fn break_node(&self, name: &str, transition: u64) -> anyhow::Result<()> {
        let at = jiff::Timestamp::from_second(transition as i64).unwrap_or_else(|_| jiff::Timestamp::now());
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
            "message": "container runtime is down", "lastTransitionTime": seconds_time(at)}]}});
        self.api
            .store()
            .mutate(nodes_res(), "", name, true, Mutation::StrategicPatch(patch), "kubelet")
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        Ok(())
    }

    pub fn started(&self, name: &str) -> bool {
        // Polled every few ms for many nodes: the stored JSON is searched, not parsed.
        const NEEDLE: &[u8] = b"\"autohealer.dev/repair\":";
        self.api.store().get_encoded(nodes_res(), "", name).is_ok_and(|b| b.windows(NEEDLE.len()).any(|w| w == NEEDLE))
    }

    pub fn reboots(&self) -> usize {
        self.os.count("POST", "/action", Some("reboot"))
    }

    pub fn holder(&self) -> Option<String> {
        let l = self.api.store().get(leases_res(), "kube-system", "autohealer").ok()?;
        l.pointer("/spec/holderIdentity").and_then(|h| h.as_str()).map(String::from)
    }

    /// Bytes the apiserver sent for reads (list, watch, get) of Nodes and node Leases
    /// since the last reset, and requests of every verb, by "verb resource". Events and
    /// the leader-election Lease's own writes are left out: both sides make the same.
    pub fn traffic(&self) -> Traffic {
        let mut t = Traffic::default();
        for ((verb, res), s) in self.api.stats() {
            let lease = res.starts_with("leases");
            if res.starts_with("events") || (lease && !matches!(verb.as_str(), "list" | "watch")) {
                continue;
            }
            t.requests += s.requests;
            t.bytes += s.bytes;
            let e = t.by.entry(format!("{verb} {res}")).or_default();
            e.0 += s.requests;
            e.1 += s.bytes;
        }
        t
    }
}

#[derive(Default, Debug, Clone)]
pub struct Traffic {
    pub requests: u64,
    pub bytes: u64,
    /// (requests, bytes) by "verb resource".
    pub by: BTreeMap<String, (u64, u64)>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let start = std::time::Instant::now();
    while !f() {
        if start.elapsed() > limit {
            anyhow::bail!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(start.elapsed())
}
