//! End-to-end: the healer, in-process, against the testkit's fake apiserver and a
//! simulated cluster whose cloud side records every call. Real watch, real leader
//! election, real node writes; only the cloud is the simulation's.

use autohealer::config::{Config, Loaded};
use autohealer_cloud::Action;
use autohealer_core::{Metrics, Status};
use autohealer_healthcheck::Registry;
use autohealer_testkit::apiserver::resources::{self, Resource};
use autohealer_testkit::apiserver::{ApiServerOptions, FakeApiServer};
use autohealer_testkit::sim::{Cure, Fault, SimCluster, SimOptions};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const REPAIR: &str = "autohealer.dev/repair";

fn nodes_res() -> &'static Resource {
    resources::find("", "v1", "nodes").unwrap()
}

fn config(extra: &str) -> Loaded {
    let single = if extra.contains("leader-elect:") {
        ""
    } else {
        "leader-elect: false\n"
    };
    let text = format!(
        "cluster-name: sim\nmonitor-interval: 1s\ncheck-delay-after-add: 0s\nrebuild-delay-after-reboot: 60s\n{single}admin:\n  listen: 127.0.0.1:0\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: 2s\n{extra}"
    );
    Config::load_str(&text, &Registry::with_builtins()).unwrap()
}

async fn cluster(workers: usize) -> (FakeApiServer, Arc<SimCluster>) {
    let api = FakeApiServer::start(ApiServerOptions::default())
        .await
        .unwrap();
    let opts = SimOptions {
        masters: 1,
        workers,
        time_scale: 0.05,
        ..Default::default()
    };
    let sim = SimCluster::start(api.client().await.unwrap(), opts)
        .await
        .unwrap();
    (api, sim)
}

/// Starts a healer; the token stops it gracefully.
async fn healer(
    api: &FakeApiServer,
    sim: &Arc<SimCluster>,
    loaded: Loaded,
    identity: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    Arc<Status>,
) {
    let status = Arc::new(Status::default());
    let rt = autohealer::Runtime {
        client: api.client().await.unwrap(),
        provider: sim.provider(),
        metrics: Arc::new(Metrics::new()),
        status: status.clone(),
        identity: identity.into(),
    };
    let token = CancellationToken::new();
    let task = tokio::spawn(autohealer::run(loaded, rt, token.clone()));
    (token, task, status)
}

async fn until<F: FnMut() -> bool>(what: &str, mut f: F) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

fn node(api: &FakeApiServer, name: &str) -> Option<Arc<Value>> {
    api.store().get(nodes_res(), "", name).ok()
}

fn annotation(n: &Value, key: &str) -> Option<String> {
    n.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
        .map(String::from)
}

fn cordoned(n: &Value) -> bool {
    n.pointer("/spec/unschedulable")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn ready(n: &Value) -> bool {
    n.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn event_reasons(api: &FakeApiServer, node: &str) -> Vec<(String, String)> {
    let events = resources::find("events.k8s.io", "v1", "events").unwrap();
    let mut out: Vec<(String, String, String)> = api
        .store()
        .all(events)
        .iter()
        .filter(|e| e.pointer("/regarding/name").and_then(Value::as_str) == Some(node))
        .map(|e| {
            let s = |p: &str| {
                e.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (s("/metadata/creationTimestamp"), s("/reason"), s("/note"))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, r, n)| (r, n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_not_ready_is_cordoned_rebooted_once_and_uncordoned() {
    let (api, sim) = cluster(3).await;
    let (token, task, status) = healer(&api, &sim, config(""), "replica-a").await;
    until("the node cache syncs", || {
        status.synced.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    let victim = "sim-worker-0";
    sim.inject(
        victim,
        Fault::NotReady("KernelDeadlock".into()),
        Cure::Reboot,
    );
    until("the reboot is issued", || {
        sim.calls_for(victim, Action::Reboot) == 1
    })
    .await;
    until("the node has recovered and is released", || {
        node(&api, victim)
            .is_some_and(|n| ready(&n) && !cordoned(&n) && annotation(&n, REPAIR).is_none())
    })
    .await;

    // On the way, the ledger and the cordon were written together, before the call.
    let versions = api.store().history_of(nodes_res(), "", victim);
    let started = versions
        .iter()
        .find(|v| annotation(v, REPAIR).is_some())
        .expect("a repair record was written");
    assert!(
        cordoned(started),
        "the worker is cordoned in the same write that records the repair"
    );
    let record: Value = serde_json::from_str(&annotation(started, REPAIR).unwrap()).unwrap();
    assert_eq!(record["action"], "reboot");
    assert_eq!(record["by"], "replica-a");
    assert!(
        record["reason"]
            .as_str()
            .unwrap()
            .contains("KernelDeadlock")
    );

    let reasons: Vec<String> = event_reasons(&api, victim)
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    for want in ["RepairStarted", "RepairIssued", "Recovered"] {
        assert!(
            reasons.contains(&want.to_string()),
            "missing Event {want}: {reasons:?}"
        );
    }
    let note = event_reasons(&api, victim)
        .into_iter()
        .find(|(r, _)| r == "RepairStarted")
        .unwrap()
        .1;
    assert!(
        note.contains("KernelDeadlock"),
        "the Event says why: {note}"
    );
    assert_eq!(
        sim.calls().len(),
        1,
        "exactly one cloud call in all: {:?}",
        sim.calls()
    );
    for other in ["sim-worker-1", "sim-worker-2", "sim-master-0"] {
        assert!(
            node(&api, other).is_some_and(|n| !cordoned(&n)),
            "{other} was left alone"
        );
    }
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_and_calls_nothing() {
    let (api, sim) = cluster(2).await;
    let (token, task, status) = healer(&api, &sim, config("dry-run: true\n"), "replica-a").await;
    until("the node cache syncs", || {
        status.synced.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    let victim = "sim-worker-1";
    sim.inject(
        victim,
        Fault::NotReady("NetworkUnavailable".into()),
        Cure::Reboot,
    );
    until("the dry-run Event is emitted", || {
        event_reasons(&api, victim)
            .iter()
            .any(|(r, _)| r == "DryRun")
    })
    .await;
    let (_, note) = event_reasons(&api, victim)
        .into_iter()
        .find(|(r, _)| r == "DryRun")
        .unwrap();
    assert!(
        note.contains("Would reboot") && note.contains("NetworkUnavailable"),
        "{note}"
    );
    token.cancel();
    task.await.unwrap().unwrap();
    assert!(
        sim.calls().is_empty(),
        "no cloud call in dry-run: {:?}",
        sim.calls()
    );
    for v in api.store().history_of(nodes_res(), "", victim) {
        assert!(
            annotation(&v, REPAIR).is_none() && !cordoned(&v),
            "dry-run wrote to the node: {v}"
        );
        let managers: Vec<&str> = v
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert!(
            !managers.contains(&"autohealer"),
            "dry-run wrote to the node: {managers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_node_is_left_alone_and_remediate_repairs_on_request() {
    let (api, sim) = cluster(2).await;
    let client = api.client().await.unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let pp = kube::api::PatchParams::default();
    nodes
        .patch(
            "sim-worker-0",
            &pp,
            &kube::api::Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"autohealer.dev/skip": "true"}}}),
            ),
        )
        .await
        .unwrap();
    let (token, task, status) = healer(&api, &sim, config(""), "replica-a").await;
    until("the node cache syncs", || {
        status.synced.load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    sim.inject(
        "sim-worker-0",
        Fault::NotReady("KubeletNotReady".into()),
        Cure::Reboot,
    );
    until("the hold is announced", || {
        event_reasons(&api, "sim-worker-0")
            .iter()
            .any(|(r, n)| r == "RepairHeld" && n.contains("autohealer.dev/skip"))
    })
    .await;
    // A healthy node repaired on request, and the request removed when taken.
    nodes.patch("sim-worker-1", &pp, &kube::api::Patch::Merge(serde_json::json!({"metadata": {"annotations": {"autohealer.dev/remediate": "true"}}}))).await.unwrap();
    until("the requested reboot is issued", || {
        sim.calls_for("sim-worker-1", Action::Reboot) == 1
    })
    .await;
    until("the request annotation is removed", || {
        node(&api, "sim-worker-1")
            .is_some_and(|n| annotation(&n, "autohealer.dev/remediate").is_none())
    })
    .await;
    assert_eq!(
        sim.calls_for("sim-worker-0", Action::Reboot),
        0,
        "a skipped node is never repaired"
    );
    token.cancel();
    task.await.unwrap().unwrap();
}

/// A replica in its own runtime on its own thread, so that killing it stops every
/// task it started (as a crashed pod would), without releasing the Lease.
struct Replica {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Replica {
    fn start(
        kubeconfig: String,
        sim: Arc<SimCluster>,
        loaded: Loaded,
        identity: &'static str,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(async move {
            let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .unwrap();
            let client = kube::Client::try_from(cfg).unwrap();
            let rt = autohealer::Runtime {
                client,
                provider: sim.provider(),
                metrics: Arc::new(Metrics::new()),
                status: Arc::new(Status::default()),
                identity: identity.into(),
            };
            autohealer::run(loaded, rt, CancellationToken::new()).await
        });
        Self {
            runtime: Some(runtime),
        }
    }

    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_acts_and_the_standby_takes_over_when_it_dies() {
    let (api, sim) = cluster(3).await;
    let loaded =
        config("leader-elect: true\nleader-election:\n  lease-duration: 3s\n  renew-grace: 1s\n");
    let mut a = Replica::start(
        api.kubeconfig_yaml(),
        sim.clone(),
        loaded.clone(),
        "replica-a",
    );
    let leases = resources::find("coordination.k8s.io", "v1", "leases").unwrap();
    let holder = || {
        api.store()
            .get(leases, "kube-system", "autohealer")
            .ok()
            .and_then(|l| {
                l.pointer("/spec/holderIdentity")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
    };
    until("replica-a leads", || {
        holder().as_deref() == Some("replica-a")
    })
    .await;
    let mut b = Replica::start(api.kubeconfig_yaml(), sim.clone(), loaded, "replica-b");

    sim.inject(
        "sim-worker-0",
        Fault::NotReady("KubeletNotReady".into()),
        Cure::Reboot,
    );
    until("the leader reboots", || {
        sim.calls_for("sim-worker-0", Action::Reboot) == 1
    })
    .await;
    until("the first repair is done", || {
        node(&api, "sim-worker-0").is_some_and(|n| ready(&n) && annotation(&n, REPAIR).is_none())
    })
    .await;
    assert_eq!(
        sim.calls_for("sim-worker-0", Action::Reboot),
        1,
        "two replicas, one reboot"
    );
    let writers: Vec<String> = api
        .store()
        .history_of(nodes_res(), "", "sim-worker-0")
        .iter()
        .filter_map(|v| annotation(v, REPAIR))
        .filter_map(|r| serde_json::from_str::<Value>(&r).ok())
        .filter_map(|r| r["by"].as_str().map(String::from))
        .collect();
    assert!(
        !writers.is_empty() && writers.iter().all(|w| w == "replica-a"),
        "only the leader writes: {writers:?}"
    );

    a.kill();
    until("replica-b takes over the Lease", || {
        holder().as_deref() == Some("replica-b")
    })
    .await;
    sim.inject(
        "sim-worker-1",
        Fault::NotReady("KubeletNotReady".into()),
        Cure::Reboot,
    );
    until("the standby repairs", || {
        sim.calls_for("sim-worker-1", Action::Reboot) == 1
    })
    .await;
    until("the second repair is done", || {
        node(&api, "sim-worker-1").is_some_and(|n| ready(&n) && annotation(&n, REPAIR).is_none())
    })
    .await;
    assert_eq!(sim.calls().len(), 2, "{:?}", sim.calls());
    b.kill();
}
