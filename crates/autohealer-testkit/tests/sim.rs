//! The simulated control plane against the fake apiserver (or a real one named by
//! `AUTOHEALER_E2E_KUBECONFIG`): what the node-lifecycle controller and the kubelets
//! write, checked against the answers of a real v1.36 control plane
//! (`/work/shared/fixtures/real-apiserver-v1.36/`).

use autohealer_cloud::Role;
use autohealer_testkit::cluster::TestCluster;
use autohealer_testkit::sim::{Cure, Fault, SimCluster, SimOptions};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Keeps a deleted pod Terminating when the fake apiserver would delete it at once.
const HOLD: &str = "testkit.autohealer.dev/hold";

struct Env {
    cluster: TestCluster,
    sim: Arc<SimCluster>,
    prefix: String,
}

/// Heartbeat 0.5s, grace 2s.
async fn env(workers: usize, zones: &[&str]) -> Env {
    let cluster = TestCluster::start().await.unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("simt-{:x}", (nanos ^ u128::from(std::process::id())) & 0xff_ffff);
    let opts = SimOptions {
        masters: 0,
        workers,
        zones: zones.iter().map(|z| z.to_string()).collect(),
        time_scale: 0.05,
        prefix: prefix.clone(),
        ..SimOptions::default()
    };
    let sim = SimCluster::start(cluster.client.clone(), opts).await.unwrap();
    Env { cluster, sim, prefix }
}

impl Env {
    fn worker(&self, i: usize) -> String {
        let mut w = self.sim.node_names(Role::Worker);
        w.sort();
        w[i].clone()
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.cluster.client.clone())
    }

    async fn node(&self, name: &str) -> Node {
        self.nodes().get(name).await.unwrap()
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.cluster.client.clone(), "default")
    }

    async fn pod(&self, name: &str, node: &str, finalizers: &[&str]) -> Pod {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "finalizers": finalizers},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        self.pods().create(&PostParams::default(), &pod).await.unwrap()
    }

    fn delete_requests(&self) -> Option<u64> {
        self.cluster.fake.as_ref().map(|f| f.requests("delete", "pods"))
    }
}

fn taints(n: &Node) -> Vec<(String, String, bool)> {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| t.iter().map(|t| (t.key.clone(), t.effect.clone(), t.time_added.is_some())).collect())
        .unwrap_or_default()
}

fn has(n: &Node, key: &str, effect: &str) -> bool {
    taints(n).iter().any(|(k, e, _)| k == key && e == effect)
}

fn condition<'a>(n: &'a Node, t: &str) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t)
}

fn ready(n: &Node) -> Option<String> {
    condition(n, "Ready").map(|c| c.status.clone())
}

async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(Duration::from_secs(30), async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_stops_goes_unknown_with_unreachable_taints() {
    let e = env(2, &["zone-a"]).await;
    let victim = e.worker(0);
    // Another writer's taint and a cordon, which the controller must keep.
    let p = json!({"spec": {"unschedulable": true, "taints": [{"key": "example.com/keep", "value": "x", "effect": "NoSchedule"}]}});
    e.nodes().patch(&victim, &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
    until("the cordon shows as a taint", || async { has(&e.node(&victim).await, "node.kubernetes.io/unschedulable", "NoSchedule") }).await;
    let before = e.node(&victim).await;
    assert_eq!(ready(&before).as_deref(), Some("True"));
    let heartbeat = condition(&before, "Ready").and_then(|c| c.last_heartbeat_time.clone());

    e.sim.inject(&victim, Fault::KubeletStopped, Cure::Reboot);
    until("the node is unreachable on both effects", || async {
        let n = e.node(&victim).await;
        has(&n, UNREACHABLE, "NoSchedule") && has(&n, UNREACHABLE, "NoExecute")
    })
    .await;
    let n = e.node(&victim).await;
    let r = condition(&n, "Ready").unwrap();
    assert_eq!((r.status.as_str(), r.reason.as_deref()), ("Unknown", Some("NodeStatusUnknown")));
    assert_eq!(r.message.as_deref(), Some("Kubelet stopped posting node status."));
    assert_eq!(r.last_heartbeat_time, heartbeat, "the last heartbeat is kept, as the real controller does");
    for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        let c = condition(&n, t).unwrap_or_else(|| panic!("{t} missing"));
        assert_eq!((c.status.as_str(), c.reason.as_deref()), ("Unknown", Some("NodeStatusUnknown")), "{t}");
    }
    assert!(taints(&n).iter().filter(|(k, _, _)| k == UNREACHABLE).all(|(_, _, added)| *added), "timeAdded set: {:?}", taints(&n));
    assert!(has(&n, "example.com/keep", "NoSchedule"), "another writer's taint is kept: {:?}", taints(&n));
    assert!(has(&n, "node.kubernetes.io/unschedulable", "NoSchedule"));
    assert_eq!(ready(&e.node(&e.worker(1)).await).as_deref(), Some("True"), "the live node is untouched");
    assert!(taints(&e.node(&e.worker(1)).await).is_empty());

    e.sim.heal(&victim);
    until("the unreachable taints go once it is Ready", || async {
        let n = e.node(&victim).await;
        ready(&n).as_deref() == Some("True") && !taints(&n).iter().any(|(k, _, _)| k == UNREACHABLE)
    })
    .await;
    let n = e.node(&victim).await;
    assert!(has(&n, "example.com/keep", "NoSchedule"), "{:?}", taints(&n));
    assert!(condition(&n, "MemoryPressure").is_some_and(|c| c.status == "False"), "the kubelet posts its conditions again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_ready_node_gets_the_not_ready_taint_and_loses_it_when_ready() {
    let e = env(2, &["zone-a"]).await;
    let victim = e.worker(0);
    e.sim.inject(&victim, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until("the node is not-ready on both effects", || async {
        let n = e.node(&victim).await;
        has(&n, NOT_READY, "NoSchedule") && has(&n, NOT_READY, "NoExecute")
    })
    .await;
    let n = e.node(&victim).await;
    assert_eq!(ready(&n).as_deref(), Some("False"), "the kubelet still posts: not Unknown");
    assert!(!taints(&n).iter().any(|(k, _, _)| k == UNREACHABLE), "{:?}", taints(&n));

    // The kubelet goes silent: the not-ready taints are swapped for unreachable ones.
    e.sim.inject(&victim, Fault::KubeletStopped, Cure::Reboot);
    until("not-ready is swapped for unreachable", || async {
        let n = e.node(&victim).await;
        has(&n, UNREACHABLE, "NoExecute") && has(&n, UNREACHABLE, "NoSchedule") && !taints(&n).iter().any(|(k, _, _)| k == NOT_READY)
    })
    .await;

    e.sim.heal(&victim);
    until("every node-lifecycle taint goes once it is Ready", || async {
        let n = e.node(&victim).await;
        ready(&n).as_deref() == Some("True") && taints(&n).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_node_is_ready_no_execute_taints_are_lifted() {
    let e = env(3, &["zone-a"]).await;
    let names: Vec<String> = (0..3).map(|i| e.worker(i)).collect();
    e.sim.inject(&names[0], Fault::KubeletStopped, Cure::Reboot);
    until("the first silent node is tainted NoExecute", || async { has(&e.node(&names[0]).await, UNREACHABLE, "NoExecute") }).await;

    for n in &names[1..] {
        e.sim.inject(n, Fault::KubeletStopped, Cure::Reboot);
    }
    until("every node is Unknown, NoSchedule stays and NoExecute is lifted", || async {
        for name in &names {
            let n = e.node(name).await;
            if ready(&n).as_deref() != Some("Unknown") || !has(&n, UNREACHABLE, "NoSchedule") || has(&n, UNREACHABLE, "NoExecute") {
                return false;
            }
        }
        true
    })
    .await;
    // Disruption mode holds: no NoExecute taint comes back while no node is Ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in &names {
        assert!(!has(&e.node(name).await, UNREACHABLE, "NoExecute"), "{name}: {:?}", taints(&e.node(name).await));
    }

    // One node is back: the others are unreachable again, after a fresh grace period.
    e.sim.heal(&names[0]);
    until("the nodes still down are tainted NoExecute again", || async {
        has(&e.node(&names[1]).await, UNREACHABLE, "NoExecute") && has(&e.node(&names[2]).await, UNREACHABLE, "NoExecute")
    })
    .await;
    assert!(taints(&e.node(&names[0]).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_kubelet_completes_a_graceful_deletion() {
    let e = env(2, &["zone-a"]).await;
    let (live, dead) = (e.worker(0), e.worker(1));
    e.sim.inject(&dead, Fault::KubeletStopped, Cure::Reboot);
    let heartbeats = Duration::from_secs(2);

    // Does the apiserver keep an evicted pod Terminating (as a real one does)?
    let probe = format!("{}-dead", e.prefix);
    e.pod(&probe, &dead, &[]).await;
    e.pods().evict(&probe, &EvictParams::default()).await.unwrap();
    let graceful = e.pods().get_opt(&probe).await.unwrap().is_some_and(|p| p.metadata.deletion_timestamp.is_some());

    if graceful {
        let pod = format!("{}-live", e.prefix);
        e.pod(&pod, &live, &[]).await;
        e.pods().evict(&pod, &EvictParams::default()).await.unwrap();
        until("the live kubelet removes its Terminating pod", || async { e.pods().get_opt(&pod).await.unwrap().is_none() }).await;
        tokio::time::sleep(heartbeats).await;
        let left = e.pods().get_opt(&probe).await.unwrap();
        assert!(left.is_some_and(|p| p.metadata.deletion_timestamp.is_some()), "a dead kubelet's pod stays Terminating");
        e.sim.heal(&dead);
        until("the kubelet back up removes its pod", || async { e.pods().get_opt(&probe).await.unwrap().is_none() }).await;
        return;
    }

    // The fake deletes at once: hold the pods with a finalizer and watch the kubelets'
    // DELETE requests instead.
    println!("the fake apiserver does not keep Terminating pods yet: checking the kubelets' grace-0 DELETEs by request count");
    let Some(start) = e.delete_requests() else {
        panic!("a real apiserver keeps Terminating pods; it should not get here");
    };
    let held_dead = format!("{}-held-dead", e.prefix);
    e.pod(&held_dead, &dead, &[HOLD]).await;
    e.pods().delete(&held_dead, &DeleteParams::default()).await.unwrap();
    assert!(e.pods().get(&held_dead).await.unwrap().metadata.deletion_timestamp.is_some());
    tokio::time::sleep(heartbeats).await;
    assert_eq!(e.delete_requests(), Some(start + 1), "a kubelet that is down deletes nothing");

    let held_live = format!("{}-held-live", e.prefix);
    e.pod(&held_live, &live, &[HOLD]).await;
    e.pods().delete(&held_live, &DeleteParams::default()).await.unwrap();
    until("the live kubelet issues its DELETE", || async { e.delete_requests().is_some_and(|n| n > start + 2) }).await;
    for p in [&held_dead, &held_live] {
        e.pods().patch(p, &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"finalizers": null}}))).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_a_deleted_node_are_collected_once_it_stayed_missing_through_the_quarantine() {
    let e = env(2, &["zone-a"]).await;
    let (gone, kept) = (e.worker(0), e.worker(1));
    let (orphan, other) = (format!("{}-orphan", e.prefix), format!("{}-kept", e.prefix));
    e.pod(&orphan, &gone, &[]).await;
    e.pod(&other, &kept, &[]).await;
    let recorder = autohealer_testkit::cluster::PodRecorder::start(e.cluster.client.clone(), "default", &orphan);
    e.sim.inject(&gone, Fault::KubeletStopped, Cure::Replace);
    e.nodes().delete(&gone, &DeleteParams::default()).await.unwrap();
    let since = tokio::time::Instant::now();
    until("podgc removes the pod of the deleted node", || async { e.pods().get_opt(&orphan).await.unwrap().is_none() }).await;
    // podgc's 40s quarantine, scaled: 2s.
    assert!(since.elapsed() >= Duration::from_secs(2), "collected after {:?}, before the quarantine", since.elapsed());
    let failed = |p: &Pod| p.status.as_ref().is_some_and(|s| s.phase.as_deref() == Some("Failed"));
    until("the recorder saw it marked", || async { recorder.versions().iter().any(failed) }).await;
    let st = recorder.versions().into_iter().find(failed).unwrap().status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Failed"), "marked Failed before the force delete");
    let dt = st.conditions.unwrap().into_iter().find(|c| c.type_ == "DisruptionTarget").expect("a DisruptionTarget condition");
    assert_eq!((dt.reason.as_deref(), dt.message.as_deref()), (Some("DeletionByPodGC"), Some("PodGC: node no longer exists")));
    assert!(!recorder.evicted(), "collected, not evicted");
    assert!(e.pods().get_opt(&other).await.unwrap().is_some(), "a pod on a live node stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_pods_of_a_not_ready_out_of_service_node_are_collected() {
    let e = env(2, &["zone-a"]).await;
    let victim = e.worker(0);
    let (terminating, running) = (format!("{}-terminating", e.prefix), format!("{}-running", e.prefix));
    e.pod(&terminating, &victim, &[]).await;
    e.pod(&running, &victim, &[]).await;
    e.sim.inject(&victim, Fault::KubeletStopped, Cure::Replace);
    until("the node is Unknown", || async { ready(&e.node(&victim).await).as_deref() == Some("Unknown") }).await;
    // Its kubelet is down: the graceful delete leaves the pod Terminating.
    e.pods().delete(&terminating, &DeleteParams::default()).await.unwrap();
    assert!(e.pods().get(&terminating).await.unwrap().metadata.deletion_timestamp.is_some());
    // The healer's fence, once the machine is confirmed down.
    let node = e.node(&victim).await;
    let mut taints: Vec<serde_json::Value> =
        node.spec.and_then(|s| s.taints).unwrap_or_default().iter().map(|t| serde_json::to_value(t).unwrap()).collect();
    taints.push(json!({"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}));
    let fence = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": taints}});
    e.nodes().patch(&victim, &PatchParams::default(), &Patch::Merge(&fence)).await.unwrap();
    until("podgc force-deletes the Terminating pod", || async { e.pods().get_opt(&terminating).await.unwrap().is_none() }).await;
    let left = e.pods().get(&running).await.unwrap();
    assert!(left.metadata.deletion_timestamp.is_none(), "a pod nobody deleted is not podgc's to collect");
}
