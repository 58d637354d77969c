//! A simulated cluster: nodes that are both Kubernetes Nodes (kept current by a
//! simulated kubelet, a plain Kubernetes client) and machines that a cloud can reboot
//! or replace. Failures are injected per node; a reboot or replace changes what the
//! node reports exactly as a real one would (NotReady, then Ready with a new bootID;
//! or the Node deleted and a new one joining).
//!
//! The simulation writes only through the Kubernetes API, so it runs against a real
//! apiserver too (`AUTOHEALER_E2E_KUBECONFIG`).

use autohealer_cloud::{Action, ActionOutcome, CloudError, CloudProvider, NodeInfo, Phase, Progress, RepairGate, Role};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Every simulated node carries this label with the simulation's prefix as value, so a
/// healer under test can be limited to its own nodes (`node-selector`) on a shared
/// real cluster.
pub const SIM_LABEL: &str = "autohealer.dev/sim";

/// What is wrong with a node, and what cures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The kubelet stops posting; the node-lifecycle controller marks Ready Unknown
    /// after the grace period.
    KubeletStopped,
    /// The kubelet reports Ready=False with this reason.
    NotReady(String),
    /// The node's `/healthz` endpoint answers 500 (masters serve one).
    HealthzDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cure {
    Reboot,
    /// Only a replace (a new machine) helps.
    Replace,
}

/// Timing of the simulation, in real-cluster terms, and the factor that shrinks it.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub masters: usize,
    pub workers: usize,
    pub zones: Vec<String>,
    /// Multiplies every duration below: 0.01 turns a 40s grace period into 0.4s.
    pub time_scale: f64,
    /// The kubelet's Lease renewal interval (10s in Kubernetes).
    pub heartbeat: Duration,
    /// `node-monitor-grace-period` (40s in Kubernetes).
    pub grace: Duration,
    /// How long a reboot keeps the node down.
    pub reboot_time: Duration,
    /// How long a replacement machine takes to join.
    pub join_time: Duration,
    /// How long a machine being replaced stays powered off with its Node still there
    /// before the Node goes (a cloud controller's delay); 0: at once.
    pub replace_time: Duration,
    /// A replace rebuilds the machine in place (Nova rebuild): it is powered off for
    /// `replace_time`, then boots fresh under the same name.
    pub rebuild_in_place: bool,
    /// Masters serve `/healthz` on their InternalIP at this port (0: pick one).
    pub healthz_port: u16,
    /// Prefix of node names.
    pub prefix: String,
    /// Runs kube-controller-manager's pod garbage collector for this simulation's
    /// nodes (every 20s, scaled); off only for a test that studies pods a real cluster
    /// would have collected.
    pub pod_gc: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            masters: 3,
            workers: 12,
            zones: vec!["zone-a".into(), "zone-b".into(), "zone-c".into()],
            time_scale: 1.0,
            heartbeat: Duration::from_secs(10),
            grace: Duration::from_secs(40),
            reboot_time: Duration::from_secs(60),
            join_time: Duration::from_secs(120),
            replace_time: Duration::ZERO,
            rebuild_in_place: false,
            healthz_port: 0,
            prefix: "sim".into(),
            pod_gc: true,
        }
    }
}

impl SimOptions {
    fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.time_scale)
    }
}

#[derive(Debug, Clone)]
struct SimNode {
    name: String,
    prefix: String,
    role: Role,
    zone: String,
    server_id: String,
    ip: Ipv4Addr,
    boot_id: String,
    fault: Option<(Fault, Cure)>,
    /// The kubelet is down (stopped by a fault or rebooting).
    down: bool,
    /// Deleted by a replace; the kubelet task ends.
    gone: bool,
    /// The machine is powered off (stopped by the cloud, or being replaced).
    off: bool,
    generation: u32,
    /// What the kubelet reports as `nodeInfo.kernelVersion`.
    kernel: String,
}

/// The kernel every simulated node runs unless a test rolls out another.
pub const SIM_KERNEL: &str = "6.1.0-sim";

/// A call the cloud side of the simulation received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudCall {
    pub action: Action,
    pub node: String,
    pub server_id: String,
}

struct Shared {
    client: kube::Client,
    opts: SimOptions,
    nodes: Mutex<BTreeMap<String, SimNode>>,
    calls: Mutex<Vec<CloudCall>>,
    gate: Mutex<RepairGate>,
    events: Mutex<Vec<String>>,
}

pub struct SimCluster {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    healthz_port: u16,
    /// Gives each node, replacements included, its own loopback address.
    next_index: std::sync::atomic::AtomicUsize,
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_str() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl SimCluster {
    /// Creates the nodes and starts their kubelets, the node-lifecycle controller, the
    /// pod garbage collector and the masters' `/healthz` servers.
    pub async fn start(client: kube::Client, opts: SimOptions) -> anyhow::Result<Arc<Self>> {
        let port = if opts.healthz_port != 0 {
            opts.healthz_port
        } else {
            let l = std::net::TcpListener::bind("127.0.0.2:0")?;
            l.local_addr()?.port()
        };
        let shared = Arc::new(Shared {
            client,
            opts: opts.clone(),
            nodes: Mutex::new(BTreeMap::new()),
            calls: Mutex::new(Vec::new()),
            gate: Mutex::new(RepairGate::Allowed),
            events: Mutex::new(Vec::new()),
        });
        let sim = Arc::new(Self { shared, tasks: Mutex::new(Vec::new()), healthz_port: port, next_index: Default::default() });
        for (role, count) in [(Role::Master, opts.masters), (Role::Worker, opts.workers)] {
            for i in 0..count {
                let name = format!("{}-{}-{i}", opts.prefix, role.as_str());
                let zone = opts.zones.get(i % opts.zones.len().max(1)).cloned().unwrap_or_else(|| "zone-a".into());
                sim.add_node(&name, role, &zone, sim.next_ip(), None).await?;
            }
        }
        let lifecycle = tokio::spawn(node_lifecycle(sim.shared.clone()));
        lock(&sim.tasks).push(lifecycle);
        if opts.pod_gc {
            let gc = tokio::spawn(pod_gc(sim.shared.clone()));
            lock(&sim.tasks).push(gc);
        }
        Ok(sim)
    }

    pub fn healthz_port(&self) -> u16 {
        self.healthz_port
    }

    fn next_ip(&self) -> Ipv4Addr {
        let index = self.next_index.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ipv4Addr::new(127, 1 + (index / 250) as u8, 0, 2 + (index % 250) as u8)
    }

    async fn add_node(&self, name: &str, role: Role, zone: &str, ip: Ipv4Addr, server_id: Option<String>) -> anyhow::Result<()> {
        let node = SimNode {
            name: name.to_string(),
            prefix: self.shared.opts.prefix.clone(),
            role,
            zone: zone.to_string(),
            server_id: server_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            ip,
            boot_id: uuid::Uuid::new_v4().to_string(),
            fault: None,
            down: false,
            off: false,
            gone: false,
            generation: 0,
            kernel: SIM_KERNEL.to_string(),
        };
        create_node(&self.shared.client, &node).await?;
        lock(&self.shared.nodes).insert(name.to_string(), node);
        let kubelet = tokio::spawn(kubelet(self.shared.clone(), name.to_string()));
        lock(&self.tasks).push(kubelet);
        if role == Role::Master {
            let server = tokio::spawn(healthz(self.shared.clone(), name.to_string(), ip, self.healthz_port));
            lock(&self.tasks).push(server);
        }
        Ok(())
    }

    pub fn node_names(&self, role: Role) -> Vec<String> {
        lock(&self.shared.nodes).values().filter(|n| n.role == role && !n.gone).map(|n| n.name.clone()).collect()
    }

    pub fn zone_of(&self, name: &str) -> Option<String> {
        lock(&self.shared.nodes).get(name).map(|n| n.zone.clone())
    }

    pub fn server_id(&self, name: &str) -> Option<String> {
        lock(&self.shared.nodes).get(name).map(|n| n.server_id.clone())
    }

    /// Breaks a node; `cure` says what repairs it.
    pub fn inject(&self, name: &str, fault: Fault, cure: Cure) {
        let mut nodes = lock(&self.shared.nodes);
        if let Some(n) = nodes.get_mut(name) {
            n.down = fault == Fault::KubeletStopped;
            n.fault = Some((fault, cure));
            n.generation += 1;
        }
    }

    /// Ends a node's fault by itself (a network comes back, a kubelet restarts).
    /// Rolls another kernel out to a node: its kubelet reports it from the next status.
    pub fn set_kernel(&self, name: &str, kernel: &str) {
        if let Some(n) = lock(&self.shared.nodes).get_mut(name) {
            n.kernel = kernel.to_string();
            n.generation += 1;
        }
    }

    pub fn heal(&self, name: &str) {
        if let Some(n) = lock(&self.shared.nodes).get_mut(name) {
            n.fault = None;
            n.down = false;
            n.generation += 1;
        }
    }

    /// The cloud calls received so far.
    pub fn calls(&self) -> Vec<CloudCall> {
        lock(&self.shared.calls).clone()
    }

    pub fn calls_for(&self, node: &str, action: Action) -> usize {
        lock(&self.shared.calls).iter().filter(|c| c.node == node && c.action == action).count()
    }

    /// What the simulated machines went through, in order (for timelines).
    pub fn history(&self) -> Vec<String> {
        lock(&self.shared.events).clone()
    }

    /// The cloud's answer to `repair_allowed`.
    pub fn set_gate(&self, gate: RepairGate) {
        *lock(&self.shared.gate) = gate;
    }

    /// The provider through which a healer repairs this cluster's machines.
    pub fn provider(self: &Arc<Self>) -> Arc<dyn CloudProvider> {
        Arc::new(SimProvider { sim: self.clone() })
    }

    fn find_by_info(&self, info: &NodeInfo) -> Option<String> {
        let id = info.provider_id.as_deref().and_then(|p| p.rsplit('/').next()).map(str::to_string);
        let nodes = lock(&self.shared.nodes);
        nodes.values().find(|n| !n.gone && (Some(&n.server_id) == id.as_ref() || n.name == info.name)).map(|n| n.name.clone())
    }

    /// Reboots a machine; a `fresh` one (rebuilt) comes back without its fault.
    fn reboot(self: &Arc<Self>, name: &str, fresh: bool) {
        {
            let mut nodes = lock(&self.shared.nodes);
            let Some(n) = nodes.get_mut(name) else { return };
            n.down = true;
            n.generation += 1;
        }
        lock(&self.shared.events).push(format!("{name}: rebooting"));
        let shared = self.shared.clone();
        let name = name.to_string();
        let t = tokio::spawn(async move {
            tokio::time::sleep(shared.opts.scaled(shared.opts.reboot_time)).await;
            let mut nodes = lock(&shared.nodes);
            if let Some(n) = nodes.get_mut(&name) {
                n.boot_id = uuid::Uuid::new_v4().to_string();
                if fresh || matches!(n.fault, Some((_, Cure::Reboot))) {
                    n.fault = None;
                }
                n.down = matches!(n.fault, Some((Fault::KubeletStopped, _)));
                n.generation += 1;
            }
            lock(&shared.events).push(format!("{name}: booted"));
        });
        lock(&self.tasks).push(t);
    }

    /// The machine is gone: its Node and Lease are deleted, its kubelet ends.
    fn remove(self: &Arc<Self>, name: &str) -> Option<(Role, String)> {
        let (role, zone) = {
            let mut nodes = lock(&self.shared.nodes);
            let n = nodes.get_mut(name).filter(|n| !n.gone)?;
            n.gone = true;
            n.generation += 1;
            (n.role, n.zone.clone())
        };
        lock(&self.shared.events).push(format!("{name}: deleted"));
        let client = self.shared.client.clone();
        let name = name.to_string();
        let t = tokio::spawn(async move {
            let _ = Api::<Node>::all(client.clone()).delete(&name, &DeleteParams::default()).await;
            let _ = Api::<Lease>::namespaced(client, "kube-node-lease").delete(&name, &DeleteParams::default()).await;
        });
        lock(&self.tasks).push(t);
        Some((role, zone))
    }

    /// A new machine boots and its node joins after the join time.
    fn join_later(
        self: &Arc<Self>,
        name: String,
        role: Role,
        zone: String,
        server_id: Option<String>,
        replacing: Option<String>,
    ) -> Ipv4Addr {
        let ip = self.next_ip();
        let sim = self.clone();
        let t = tokio::spawn(async move {
            tokio::time::sleep(sim.shared.opts.scaled(sim.shared.opts.join_time)).await;
            if let Err(e) = sim.add_node(&name, role, &zone, ip, server_id).await {
                tracing::warn!(error = %e, node = %name, "a new node could not join");
                return;
            }
            let note = replacing.map(|r| format!(" (replacing {r})")).unwrap_or_default();
            lock(&sim.shared.events).push(format!("{name}: joined{note}"));
        });
        lock(&self.tasks).push(t);
        ip
    }

    fn replace(self: &Arc<Self>, name: &str) {
        let delay = self.shared.opts.scaled(self.shared.opts.replace_time);
        if delay.is_zero() && !self.shared.opts.rebuild_in_place {
            if let Some((role, zone)) = self.remove(name) {
                self.join_later(format!("{name}-r"), role, zone, None, Some(name.to_string()));
            }
            return;
        }
        self.power_off(name);
        let sim = self.clone();
        let name = name.to_string();
        let t = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if sim.shared.opts.rebuild_in_place {
                if let Some(n) = lock(&sim.shared.nodes).get_mut(&name) {
                    n.off = false;
                }
                lock(&sim.shared.events).push(format!("{name}: rebuilt"));
                sim.reboot(&name, true);
            } else if let Some((role, zone)) = sim.remove(&name) {
                sim.join_later(format!("{name}-r"), role, zone, None, Some(name.clone()));
            }
        });
        lock(&self.tasks).push(t);
    }

    fn power_off(&self, name: &str) {
        if let Some(n) = lock(&self.shared.nodes).get_mut(name) {
            n.down = true;
            n.off = true;
            n.generation += 1;
        }
        lock(&self.shared.events).push(format!("{name}: powered off"));
    }

    /// Whether the machine behind a node is powered off or gone, as a cloud would say.
    pub fn machine_off(&self, name: &str) -> bool {
        lock(&self.shared.nodes).get(name).is_none_or(|n| n.off || n.gone)
    }

    fn name_of_server(&self, server_id: &str) -> Option<String> {
        lock(&self.shared.nodes).values().find(|n| n.server_id == server_id && !n.gone).map(|n| n.name.clone())
    }

    /// Registers every node's machine as a server of `cloud`, in a Magnum cluster
    /// `cluster` (with a Heat stack unless `heat` is false), and follows what the
    /// cloud does to them from then on.
    pub fn attach_cloud(self: &Arc<Self>, cloud: &crate::openstack::FakeOpenStack, cluster: &str, heat: bool) {
        let (mut masters, mut workers) = (Vec::new(), Vec::new());
        for n in lock(&self.shared.nodes).values().filter(|n| !n.gone) {
            cloud.add_server(&n.server_id, &n.name, &n.ip.to_string(), true);
            match n.role {
                Role::Master => masters.push(n.server_id.clone()),
                Role::Worker => workers.push(n.server_id.clone()),
            }
        }
        cloud.add_cluster(cluster, &self.shared.opts.prefix, &masters, &workers, heat);
        cloud.set_hooks(Arc::new(CloudHooks(Arc::downgrade(self))));
    }
}

async fn create_node(client: &kube::Client, n: &SimNode) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = json!({
        "kubernetes.io/hostname": n.name,
        "topology.kubernetes.io/zone": n.zone,
        SIM_LABEL: n.prefix,
    });
    if n.role == Role::Master {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
    }
    let obj: Node = serde_json::from_value(json!({
        "metadata": {"name": n.name, "labels": labels},
        "spec": {"providerID": format!("openstack:///{}", n.server_id)},
    }))?;
    nodes.create(&PostParams::default(), &obj).await?;
    patch_status(client, n, true, None).await?;
    Ok(())
}

/// The conditions a kubelet posts, healthy value first: (type, healthy status, reason,
/// message). A real kubelet posts all four, so a node that goes silent has all four
/// turned Unknown by the node-lifecycle controller.
const PRESSURE_CONDITIONS: [(&str, &str, &str, &str); 3] = [
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
];

/// What the kubelet posts: nodeInfo, addresses and its conditions.
async fn patch_status(client: &kube::Client, n: &SimNode, ready: bool, reason: Option<&str>) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = now_str();
    let (status, reason, message) = match (ready, reason) {
        (true, _) => ("True", "KubeletReady", "kubelet is posting ready status"),
        (false, Some(r)) => ("False", r, "simulated fault"),
        (false, None) => ("False", "KubeletNotReady", "container runtime is down"),
    };
    let current = nodes.get_status(&n.name).await?;
    let posted = current.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let wanted: Vec<(&str, &str, &str, &str)> =
        std::iter::once(("Ready", status, reason, message)).chain(PRESSURE_CONDITIONS.iter().copied()).collect();
    let unchanged =
        wanted.iter().all(|(t, st, r, _)| posted.iter().any(|c| c.type_ == *t && c.status == *st && c.reason.as_deref() == Some(*r)));
    if unchanged
        && current
            .status
            .as_ref()
            .and_then(|s| s.node_info.as_ref())
            .is_some_and(|i| i.boot_id == n.boot_id && i.kernel_version == n.kernel)
    {
        return Ok(());
    }
    let conditions: Vec<serde_json::Value> = wanted
        .iter()
        .map(|(t, st, r, m)| {
            let transition = posted
                .iter()
                .find(|c| c.type_ == *t && c.status == *st)
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| now.clone());
            json!({"type": t, "status": st, "reason": r, "message": m, "lastHeartbeatTime": now, "lastTransitionTime": transition})
        })
        .collect();
    let patch = json!({"status": {
        "conditions": conditions,
        "addresses": [{"type": "InternalIP", "address": n.ip.to_string()}, {"type": "Hostname", "address": n.name}],
        "nodeInfo": {
            "machineID": n.server_id.replace('-', ""), "systemUUID": n.server_id.to_uppercase(), "bootID": n.boot_id,
            "kernelVersion": n.kernel, "osImage": "Simulated Linux", "containerRuntimeVersion": "containerd://2.0.0",
            "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"
        }
    }});
    nodes.patch_status(&n.name, &PatchParams::default(), &Patch::Strategic(&patch)).await?;
    Ok(())
}

/// One node's kubelet: renews its Lease and reports its conditions while it runs, and
/// finishes the deletion of its Terminating pods.
async fn kubelet(shared: Arc<Shared>, name: String) {
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), "kube-node-lease");
    let beat = shared.opts.scaled(shared.opts.heartbeat).max(Duration::from_millis(10));
    let mut last_generation = u32::MAX;
    let mut last_beat = tokio::time::Instant::now() - beat;
    loop {
        let snapshot = {
            let nodes = lock(&shared.nodes);
            match nodes.get(&name) {
                Some(n) if !n.gone => Some((n.down, n.fault.clone(), n.generation, n.clone())),
                _ => None,
            }
        };
        let Some((down, fault, generation, view)) = snapshot else {
            return;
        };
        if !down {
            if last_beat.elapsed() >= beat {
                let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now())}});
                let pp = PatchParams::apply("kubelet").force();
                match leases.patch(&name, &pp, &Patch::Apply(&lease)).await {
                    Ok(_) => {
                        last_beat = tokio::time::Instant::now();
                        finish_deletions(&shared.client, &name).await;
                    }
                    // The controller may have marked the node Unknown while the
                    // apiserver was out of reach; a real kubelet's next status sync
                    // puts its conditions back, so post them again once through.
                    Err(_) => last_generation = u32::MAX,
                }
            }
            if generation != last_generation {
                let reason = match &fault {
                    Some((Fault::NotReady(r), _)) => Some(r.as_str()),
                    _ => None,
                };
                if patch_status(&shared.client, &view, reason.is_none(), reason).await.is_ok() {
                    last_generation = generation;
                }
            }
        } else {
            last_generation = u32::MAX;
        }
        tokio::time::sleep(Duration::from_millis(20).min(beat)).await;
    }
}

/// A graceful delete only marks a pod (deletionTimestamp); the kubelet removes it once
/// its containers stopped, with grace 0 and the pod's uid so that a pod recreated under
/// the same name is left alone. The simulated containers stop at once; a kubelet that
/// is down never gets here, so its pods stay Terminating, as on a real dead node.
async fn finish_deletions(client: &kube::Client, node: &str) {
    let pods: Api<Pod> = Api::all(client.clone());
    let Ok(list) = pods.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await else {
        return;
    };
    for pod in list.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_some()) {
        let (Some(ns), Some(name), Some(uid)) = (pod.metadata.namespace, pod.metadata.name, pod.metadata.uid) else {
            continue;
        };
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: Some(uid), resource_version: None }),
            ..DeleteParams::default()
        };
        if let Err(e) = Api::<Pod>::namespaced(client.clone(), &ns).delete(&name, &dp).await {
            tracing::debug!(pod = %name, namespace = %ns, error = %e, "simulated kubelet could not finish a deletion");
        }
    }
}

const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// `nodeConditionToTaintKeyStatusMap`: a condition in this status earns the node this
/// NoSchedule taint.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", NOT_READY_TAINT),
    ("Ready", "Unknown", UNREACHABLE_TAINT),
    ("MemoryPressure", "True", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("NetworkUnavailable", "True", "node.kubernetes.io/network-unavailable"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];

/// The conditions the controller turns Unknown when the kubelet goes silent
/// (NetworkUnavailable is left alone: the network plugin owns it).
const SILENCED_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// `--node-eviction-rate`: NoExecute taints are added to one node per zone every 10s.
const NO_EXECUTE_INTERVAL: Duration = Duration::from_secs(10);
/// `--secondary-node-eviction-rate` (0.01/s), for a partially disrupted large zone.
const NO_EXECUTE_INTERVAL_PARTIAL: Duration = Duration::from_secs(100);
/// `--large-cluster-size-threshold`: a partially disrupted zone this small gets no new
/// NoExecute taints at all.
const LARGE_ZONE: usize = 50;
/// `--unhealthy-zone-threshold`.
const UNHEALTHY_ZONE_SHARE: f64 = 0.55;
const EXCLUDE_DISRUPTION_LABEL: &str = "node.kubernetes.io/exclude-disruption";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// `ComputeZoneState`: a node without a Ready condition counts as not ready.
fn zone_state(ready: usize, not_ready: usize) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / (ready + not_ready) as f64 >= UNHEALTHY_ZONE_SHARE {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// `GetZoneKey`: region and zone together.
fn zone_key(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str| labels.and_then(|l| l.get(k)).cloned().unwrap_or_default();
    format!("{}:\u{0}:{}", get("topology.kubernetes.io/region"), get("topology.kubernetes.io/zone"))
}

fn ready_status(node: &Node) -> Option<String> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

/// What the NoExecute taints of one node should become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoExecute {
    /// Left as they are (no Ready condition, or the zone's tainter is held back).
    Leave,
    /// Exactly this node-lifecycle NoExecute taint, or none.
    Set(Option<&'static str>),
}

/// The NoExecute taint the Ready condition calls for: `None` without a Ready condition.
fn wanted_no_execute(node: &Node) -> Option<Option<&'static str>> {
    match ready_status(node)?.as_str() {
        "False" => Some(Some(NOT_READY_TAINT)),
        "Unknown" => Some(Some(UNREACHABLE_TAINT)),
        _ => Some(None),
    }
}

fn has_no_execute(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.effect == "NoExecute" && (t.key == NOT_READY_TAINT || t.key == UNREACHABLE_TAINT)))
}

/// The node's taints after the controller's NoSchedule pass and `no_execute`, or
/// `None` when nothing changes. Taints of other writers (the healer's out-of-service
/// taint, an admin's) are kept in place; new ones are appended with `timeAdded`, as
/// `SwapNodeControllerTaint` does.
fn next_taints(node: &Node, no_execute: NoExecute) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let mut no_schedule: Vec<&str> = CONDITION_TAINTS
        .iter()
        .filter(|(t, st, _)| conditions.iter().any(|c| c.type_ == *t && c.status == *st))
        .map(|(_, _, key)| *key)
        .collect();
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        no_schedule.push(UNSCHEDULABLE_TAINT);
    }
    let managed_no_schedule = |k: &str| k == UNSCHEDULABLE_TAINT || CONDITION_TAINTS.iter().any(|(_, _, key)| *key == k);
    let managed_no_execute = |k: &str| k == NOT_READY_TAINT || k == UNREACHABLE_TAINT;
    let mut wanted: Vec<(&str, &str)> = no_schedule.into_iter().map(|k| (k, "NoSchedule")).collect();
    match no_execute {
        NoExecute::Set(Some(k)) => wanted.push((k, "NoExecute")),
        NoExecute::Set(None) => {}
        NoExecute::Leave => wanted.extend(
            current.iter().filter(|t| t.effect == "NoExecute" && managed_no_execute(&t.key)).map(|t| (t.key.as_str(), "NoExecute")),
        ),
    }
    let is_managed = |t: &Taint| match t.effect.as_str() {
        "NoSchedule" => managed_no_schedule(&t.key),
        "NoExecute" => managed_no_execute(&t.key),
        _ => false,
    };
    let mut next: Vec<Taint> =
        current.iter().filter(|t| !is_managed(t) || wanted.iter().any(|(k, e)| t.key == *k && t.effect == *e)).cloned().collect();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    for (k, e) in wanted {
        if !next.iter().any(|t| t.key == k && t.effect == e) {
            next.push(Taint { key: k.to_string(), effect: e.to_string(), value: None, time_added: Some(now.clone()) });
        }
    }
    (next != current).then_some(next)
}

/// The controller's memory of when it last heard from each node: the Lease's renewTime
/// and the Ready heartbeat it saw, and when it saw them change (`probeTimestamp`). Local
/// time is what counts, as in the real controller, so clock skew does not matter.
#[derive(Debug, Clone)]
struct Probe {
    renew: Option<k8s_openapi::jiff::Timestamp>,
    heartbeat: Option<k8s_openapi::jiff::Timestamp>,
    at: tokio::time::Instant,
}

/// The node-lifecycle controller (`monitorNodeHealth`): a node not heard from for the
/// grace period has its conditions turned Unknown; conditions are mirrored as NoSchedule
/// taints, and a not-ready or unreachable node gets a NoExecute taint unless every zone
/// is fully disrupted (then they are lifted: the fault is likelier the control plane's
/// own than every node's). Only this simulation's nodes are watched: on a shared real
/// cluster the real controller owns the others.
async fn node_lifecycle(shared: Arc<Shared>) {
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let leases: Api<Lease> = Api::namespaced(shared.client.clone(), "kube-node-lease");
    let grace = shared.opts.scaled(shared.opts.grace);
    let period = (grace / 8).max(Duration::from_millis(20));
    let selector = format!("{SIM_LABEL}={}", shared.opts.prefix);
    let mut probes: HashMap<String, Probe> = HashMap::new();
    let mut all_disrupted = false;
    let mut next_no_execute: HashMap<String, tokio::time::Instant> = HashMap::new();
    loop {
        tokio::time::sleep(period).await;
        let (Ok(listed), Ok(lease_list)) =
            (nodes.list(&ListParams::default().labels(&selector)).await, leases.list(&ListParams::default()).await)
        else {
            continue;
        };
        let renewals: HashMap<String, Option<k8s_openapi::jiff::Timestamp>> =
            lease_list.items.into_iter().filter_map(|l| Some((l.metadata.name?, l.spec.and_then(|s| s.renew_time).map(|t| t.0)))).collect();
        let ours: std::collections::BTreeSet<String> = lock(&shared.nodes).values().filter(|n| !n.gone).map(|n| n.name.clone()).collect();
        let now = tokio::time::Instant::now();
        let mut observed = Vec::new();
        for node in listed.items {
            let Some(name) = node.metadata.name.clone().filter(|n| ours.contains(n)) else {
                continue;
            };
            let renew = renewals.get(&name).copied().flatten();
            let heartbeat = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0);
            let probe = probes.entry(name.clone()).or_insert(Probe { renew, heartbeat, at: now });
            if probe.renew != renew || probe.heartbeat != heartbeat {
                *probe = Probe { renew, heartbeat, at: now };
            }
            let node = if now.duration_since(probe.at) > grace { mark_unknown(&nodes, node).await } else { node };
            observed.push(node);
        }
        probes.retain(|name, _| ours.contains(name));

        let mut zones: HashMap<String, (usize, usize)> = HashMap::new();
        for node in observed.iter().filter(|n| n.metadata.labels.as_ref().is_none_or(|l| !l.contains_key(EXCLUDE_DISRUPTION_LABEL))) {
            let e = zones.entry(zone_key(node)).or_default();
            if ready_status(node).as_deref() == Some("True") {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        let states: HashMap<String, (ZoneState, usize)> = zones.into_iter().map(|(z, (r, nr))| (z, (zone_state(r, nr), r + nr))).collect();
        let all_now = !states.is_empty() && states.values().all(|(s, _)| *s == ZoneState::FullDisruption);
        if all_now && !all_disrupted {
            tracing::info!("simulated node-lifecycle: all Nodes are not-Ready, entering master disruption mode");
        } else if !all_now && all_disrupted {
            tracing::info!("simulated node-lifecycle: some Nodes are Ready, exiting master disruption mode");
            // Every node gets a fresh grace period, as the real controller resets its
            // probe timestamps.
            for p in probes.values_mut() {
                p.at = now;
            }
        }
        all_disrupted = all_now;

        for node in observed {
            let zone = zone_key(&node);
            let no_execute = if all_disrupted {
                NoExecute::Set(None)
            } else {
                match wanted_no_execute(&node) {
                    None => NoExecute::Leave,
                    Some(None) => NoExecute::Set(None),
                    // Present already, or the opposite one to swap at once.
                    Some(Some(k)) if has_no_execute(&node) => NoExecute::Set(Some(k)),
                    Some(Some(k)) => {
                        let interval = match states.get(&zone) {
                            Some((ZoneState::PartialDisruption, size)) if *size <= LARGE_ZONE => None,
                            Some((ZoneState::PartialDisruption, _)) => Some(NO_EXECUTE_INTERVAL_PARTIAL),
                            _ => Some(NO_EXECUTE_INTERVAL),
                        };
                        match interval {
                            Some(i) if next_no_execute.get(&zone).is_none_or(|t| now >= *t) => {
                                next_no_execute.insert(zone.clone(), now + shared.opts.scaled(i));
                                NoExecute::Set(Some(k))
                            }
                            _ => NoExecute::Leave,
                        }
                    }
                }
            };
            write_taints(&nodes, node, no_execute).await;
        }
    }
}

/// Turns the conditions of a silent node Unknown (`tryUpdateNodeHealth`), keeping their
/// last heartbeats; a condition never posted gets `NodeStatusNeverUpdated` with the
/// node's creation as heartbeat. Written only when Ready changes, behind the
/// resourceVersion, re-read on a conflict.
async fn mark_unknown(nodes: &Api<Node>, mut node: Node) -> Node {
    for _ in 0..5 {
        let Some(name) = node.metadata.name.clone() else { return node };
        let conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
        if conditions.iter().any(|c| c.type_ == "Ready" && c.status == "Unknown") {
            return node;
        }
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let mut next = conditions.clone();
        for t in SILENCED_CONDITIONS {
            match next.iter_mut().find(|c| c.type_ == t) {
                Some(c) if c.status != "Unknown" => {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(now.clone());
                }
                Some(_) => {}
                None => next.push(NodeCondition {
                    type_: t.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(now.clone()),
                }),
            }
        }
        let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "status": {"conditions": next}});
        match nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(n) => return n,
            Err(kube::Error::Api(e)) if e.code == 409 => match nodes.get_status(&name).await {
                Ok(fresh) => node = fresh,
                Err(_) => return node,
            },
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "simulated node-lifecycle could not mark the node Unknown");
                return node;
            }
        }
    }
    node
}

/// Read-modify-write of the taint list behind the resourceVersion (`PatchNodeTaints`):
/// a taint list is replaced whole, so a write from a stale read would drop or restore
/// another writer's taint; on a conflict the node is read again and the change redone.
async fn write_taints(nodes: &Api<Node>, mut node: Node, no_execute: NoExecute) {
    for _ in 0..5 {
        let Some(name) = node.metadata.name.clone() else { return };
        let Some(taints) = next_taints(&node, no_execute) else { return };
        let taints = if taints.is_empty() { serde_json::Value::Null } else { json!(taints) };
        let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": taints}});
        match nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => match nodes.get(&name).await {
                Ok(fresh) => node = fresh,
                Err(_) => return,
            },
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "simulated node-lifecycle could not write taints");
                return;
            }
        }
    }
}

/// podgc's `gcCheckPeriod`, as pkg/controller/podgc/gc_controller.go does.
const POD_GC_PERIOD: Duration = Duration::from_secs(20);
/// podgc's `quarantineTime`: how long a Node must stay missing before its pods go.
const POD_GC_QUARANTINE: Duration = Duration::from_secs(40);

/// kube-controller-manager's pod garbage collector (`gc` in
/// pkg/controller/podgc/gc_controller.go), which a bare apiserver does not have: every
/// period it force-deletes, after marking them Failed, the terminating pods of a
/// NotReady node tainted `node.kubernetes.io/out-of-service`, and the pods bound to a
/// node that stayed missing through the quarantine (with a `DisruptionTarget`
/// condition). Only pods on this simulation's nodes, past or present, are collected:
/// on a shared real cluster the real one owns the others (and does the same to ours).
/// The terminated-pod threshold (12500) and never-scheduled terminating pods are left
/// to [`crate::apiserver::Store::gc_pods`]: no simulation reaches them.
async fn pod_gc(shared: Arc<Shared>) {
    let pods: Api<Pod> = Api::all(shared.client.clone());
    let nodes: Api<Node> = Api::all(shared.client.clone());
    let period = shared.opts.scaled(POD_GC_PERIOD).max(Duration::from_millis(20));
    let quarantine = shared.opts.scaled(POD_GC_QUARANTINE);
    let selector = format!("{SIM_LABEL}={}", shared.opts.prefix);
    // The delaying queue of node names: when each missing node is due for a check.
    let mut quarantined: HashMap<String, tokio::time::Instant> = HashMap::new();
    loop {
        tokio::time::sleep(period).await;
        let ours: std::collections::BTreeSet<String> = lock(&shared.nodes).keys().cloned().collect();
        let (Ok(pod_list), Ok(node_list)) =
            (pods.list(&ListParams::default()).await, nodes.list(&ListParams::default().labels(&selector)).await)
        else {
            continue;
        };
        let existing: HashMap<String, Node> = node_list.items.into_iter().filter_map(|n| Some((n.metadata.name.clone()?, n))).collect();
        let node_of = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| ours.contains(n));
        let mine: Vec<Pod> = pod_list.items.into_iter().filter(|p| node_of(p).is_some()).collect();

        for pod in mine.iter().filter(|p| p.metadata.deletion_timestamp.is_some()) {
            let Some(node) = node_of(pod).and_then(|n| existing.get(&n)) else { continue };
            let out_of_service =
                node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT));
            if ready_status(node).as_deref() != Some("True") && out_of_service {
                gc_delete(&shared.client, pod, None).await;
            }
        }

        let now = tokio::time::Instant::now();
        for n in mine.iter().filter_map(node_of).filter(|n| !existing.contains_key(n)) {
            quarantined.entry(n).or_insert(now + quarantine);
        }
        let due: Vec<String> = quarantined.iter().filter(|(_, at)| **at <= now).map(|(n, _)| n.clone()).collect();
        let mut deleted = std::collections::BTreeSet::new();
        for n in due {
            quarantined.remove(&n);
            if !existing.contains_key(&n) && matches!(nodes.get_opt(&n).await, Ok(None)) {
                deleted.insert(n);
            }
        }
        for pod in mine.iter().filter(|p| node_of(p).is_some_and(|n| deleted.contains(&n))) {
            let cond = json!({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists", "lastTransitionTime": now_str()});
            gc_delete(&shared.client, pod, Some(cond)).await;
        }
    }
}

const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// `markFailedAndDeletePodWithCondition`: a pod whose kubelet is gone would stay
/// Running forever, so it is marked Failed (and given the condition) before the
/// grace-0 delete. The real controller applies the status server-side; a strategic
/// merge of the status (conditions merge by type) changes the same fields.
async fn gc_delete(client: &kube::Client, pod: &Pod, condition: Option<serde_json::Value>) {
    let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else { return };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut status = serde_json::Map::new();
    if let Some(c) = condition {
        status.insert("conditions".into(), json!([c]));
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if !matches!(phase, Some("Succeeded" | "Failed")) {
        status.insert("phase".into(), json!("Failed"));
    }
    if !status.is_empty() {
        let pp = PatchParams { field_manager: Some("PodGC".into()), ..Default::default() };
        if let Err(e) = api.patch_status(name, &pp, &Patch::Strategic(&json!({"status": status}))).await {
            tracing::debug!(pod = %name, namespace = %ns, error = %e, "simulated pod GC could not mark the pod Failed");
            return;
        }
    }
    if let Err(e) = api.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await {
        tracing::debug!(pod = %name, namespace = %ns, error = %e, "simulated pod GC could not delete the pod");
    }
}

/// A master's `/healthz`, on its own loopback address.
async fn healthz(shared: Arc<Shared>, name: String, ip: Ipv4Addr, port: u16) {
    let Ok(listener) = tokio::net::TcpListener::bind((ip, port)).await else {
        tracing::warn!(node = %name, %ip, port, "cannot serve the simulated /healthz");
        return;
    };
    let app = axum::Router::new().route(
        "/healthz",
        axum::routing::get(move || {
            let shared = shared.clone();
            let name = name.clone();
            async move {
                let nodes = lock(&shared.nodes);
                let bad = nodes.get(&name).is_none_or(|n| n.gone || n.down || matches!(n.fault, Some((Fault::HealthzDown, _))));
                if bad { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "unhealthy") } else { (axum::http::StatusCode::OK, "ok") }
            }
        }),
    );
    let _ = axum::serve(listener, app).await;
}

/// The cloud side of the simulation as a [`CloudProvider`]: a stand-in until the
/// fake OpenStack serves the same story through the real provider.
struct SimProvider {
    sim: Arc<SimCluster>,
}

#[async_trait::async_trait]
impl CloudProvider for SimProvider {
    fn name(&self) -> &str {
        "simulated"
    }

    fn supports(&self, _action: Action, _role: Role) -> bool {
        true
    }

    async fn repair_allowed(&self) -> Result<RepairGate, CloudError> {
        Ok(lock(&self.sim.shared.gate).clone())
    }

    async fn reboot(&self, node: &NodeInfo) -> Result<ActionOutcome, CloudError> {
        let name = self
            .sim
            .find_by_info(node)
            .ok_or_else(|| CloudError::NoServer { node: node.name.clone(), reason: "no simulated machine".into() })?;
        let server_id = self.sim.server_id(&name).unwrap_or_default();
        lock(&self.sim.shared.calls).push(CloudCall { action: Action::Reboot, node: name.clone(), server_id: server_id.clone() });
        self.sim.reboot(&name, false);
        Ok(ActionOutcome {
            server_id: Some(server_id.clone()),
            detail: format!("soft reboot of server {server_id} accepted"),
            evidence: None,
        })
    }

    async fn replace(&self, node: &NodeInfo, _at: Option<&Phase>, _resumed: bool) -> Result<Progress, CloudError> {
        let name = self
            .sim
            .find_by_info(node)
            .ok_or_else(|| CloudError::NoServer { node: node.name.clone(), reason: "no simulated machine".into() })?;
        let server_id = self.sim.server_id(&name).unwrap_or_default();
        lock(&self.sim.shared.calls).push(CloudCall { action: Action::Replace, node: name.clone(), server_id: server_id.clone() });
        self.sim.replace(&name);
        Ok(Progress::Done(ActionOutcome {
            server_id: Some(server_id.clone()),
            detail: format!("server {server_id} is being replaced"),
            evidence: None,
        }))
    }

    async fn machine_down(&self, node: &NodeInfo) -> Result<Option<String>, CloudError> {
        Ok(self.sim.find_by_info(node).filter(|n| self.sim.machine_off(n)).map(|n| format!("simulated machine of {n} is powered off")))
    }
}

/// The cloud side of the coupling: what the fake OpenStack did to a server happens to
/// the simulated node behind it.
struct CloudHooks(std::sync::Weak<SimCluster>);

impl crate::openstack::MachineHooks for CloudHooks {
    fn rebooted(&self, server_id: &str) {
        if let Some(sim) = self.0.upgrade()
            && let Some(name) = sim.name_of_server(server_id)
        {
            sim.reboot(&name, false);
        }
    }

    fn stopped(&self, server_id: &str) {
        if let Some(sim) = self.0.upgrade()
            && let Some(name) = sim.name_of_server(server_id)
        {
            sim.power_off(&name);
        }
    }

    fn started(&self, server_id: &str) {
        if let Some(sim) = self.0.upgrade()
            && let Some(name) = sim.name_of_server(server_id)
        {
            if let Some(n) = lock(&sim.shared.nodes).get_mut(&name) {
                n.off = false;
            }
            sim.reboot(&name, false);
        }
    }

    fn deleted(&self, server_id: &str) {
        if let Some(sim) = self.0.upgrade()
            && let Some(name) = sim.name_of_server(server_id)
        {
            sim.remove(&name);
        }
    }

    fn rebuilt(&self, server_id: &str) {
        if let Some(sim) = self.0.upgrade()
            && let Some(name) = sim.name_of_server(server_id)
        {
            lock(&sim.shared.events).push(format!("{name}: rebuilt"));
            sim.reboot(&name, true);
        }
    }

    fn created(&self, server_id: &str, name: &str, role: &str) -> Option<String> {
        let sim = self.0.upgrade()?;
        let role = if role == "master" { Role::Master } else { Role::Worker };
        let zone = sim.shared.opts.zones.first().cloned().unwrap_or_else(|| "zone-a".into());
        let ip = sim.join_later(name.to_string(), role, zone, Some(server_id.to_string()), None);
        Some(ip.to_string())
    }
}
