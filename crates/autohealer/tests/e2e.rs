//! End-to-end: the healer, in-process, against a cluster (the testkit's fake apiserver,
//! or a real one named by `AUTOHEALER_E2E_KUBECONFIG`) with simulated nodes whose cloud
//! side records every call. Real watch, real leader election, real node writes; every
//! observation goes through the Kubernetes API, so the tests run unchanged on both.

use autohealer::Registries;
use autohealer::config::{Config, Loaded};
use autohealer_cloud::{Action, Role};
use autohealer_core::{Metrics, Status};
use autohealer_testkit::cluster::{CleanupGuard, NodeRecorder, TestCluster};
use autohealer_testkit::sim::{Cure, Fault, SIM_LABEL, SimCluster, SimOptions};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const REPAIR: &str = "autohealer.dev/repair";

struct Env {
    cluster: TestCluster,
    sim: Arc<SimCluster>,
    prefix: String,
    /// Last, so that it runs once the simulation has stopped.
    _cleanup: CleanupGuard,
}

async fn env(workers: usize) -> Env {
    env_with(workers, SimOptions::default()).await
}

async fn env_with(workers: usize, base: SimOptions) -> Env {
    let cluster = TestCluster::start().await.unwrap();
    let prefix = format!("e2e-{}", &uuid_like()[..6]);
    let opts = SimOptions { masters: 1, workers, time_scale: 0.05, prefix: prefix.clone(), ..base };
    let _cleanup = cluster.cleanup_guard(&prefix);
    let sim = SimCluster::start(cluster.client.clone(), opts).await.unwrap();
    Env { cluster, sim, prefix, _cleanup }
}

fn uuid_like() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() ^ u128::from(std::process::id()))
        .chars()
        .rev()
        .collect()
}

impl Env {
    fn config(&self, extra: &str) -> Loaded {
        let single = if extra.contains("leader-elect:") { "" } else { "leader-elect: false\n" };
        let own = self.own_names(extra);
        let checks = if extra.contains("healthcheck:") {
            ""
        } else {
            "healthcheck:\n  master:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: 2s\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: 2s\n"
        };
        let text = format!(
            "cluster-name: sim\nmonitor-interval: 1s\ncheck-delay-after-add: 0s\nrecovery-stable-window: 1s\nrebuild-delay-after-reboot: 60s\nnode-selector: {SIM_LABEL}={}\n{own}{single}admin:\n  listen: 127.0.0.1:0\n{checks}{extra}",
            self.prefix
        );
        Config::load_str(&text, &Registries::builtin()).unwrap()
    }

    /// The test's own Lease and pause ConfigMap, unless `extra` names them: on a shared
    /// cluster a test never reads or takes another healer's.
    fn own_names(&self, extra: &str) -> String {
        let mut own = String::new();
        if !extra.contains("pause-configmap:") {
            own += &format!("pause-configmap: kube-system/autohealer-{}\n", self.prefix);
        }
        if !extra.contains("leader-election:") {
            own += &format!("leader-election:\n  lease-name: autohealer-{}\n", self.prefix);
        }
        own
    }

    fn worker(&self, i: usize) -> String {
        let mut w = self.sim.node_names(Role::Worker);
        w.sort();
        w[i].clone()
    }

    /// Starts a healer; the token stops it gracefully.
    async fn healer(&self, loaded: Loaded, identity: &str) -> (CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let status = Arc::new(Status::default());
        let rt = autohealer::Runtime {
            client: self.cluster.client.clone(),
            provider: self.sim.provider(),
            metrics: Arc::new(Metrics::new()),
            status: status.clone(),
            identity: identity.into(),
        };
        let token = CancellationToken::new();
        let task = tokio::spawn(autohealer::run(loaded, rt, Registries::builtin(), token.clone()));
        until("the node cache syncs", || status.synced.load(std::sync::atomic::Ordering::Relaxed)).await;
        (token, task)
    }

    async fn node(&self, name: &str) -> Option<Node> {
        Api::<Node>::all(self.cluster.client.clone()).get_opt(name).await.ok().flatten()
    }

    async fn annotate(&self, name: &str, key: &str, value: &str) {
        let p = json!({"metadata": {"annotations": {key: value}}});
        Api::<Node>::all(self.cluster.client.clone()).patch(name, &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
    }

    async fn has_event(&self, node: &str, reason: &str) -> bool {
        self.cluster.node_events(node).await.iter().any(|(r, _)| r == reason)
    }

    async fn event_note(&self, node: &str, reason: &str) -> String {
        self.cluster.node_events(node).await.into_iter().find(|(r, _)| r == reason).map(|(_, n)| n).unwrap_or_default()
    }
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

async fn until_async<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(Duration::from_secs(60), async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

fn annotation(n: &Node, key: &str) -> Option<String> {
    n.metadata.annotations.as_ref().and_then(|a| a.get(key)).cloned()
}

fn cordoned(n: &Node) -> bool {
    n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
}

fn ready(n: &Node) -> bool {
    n.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

fn released(n: &Option<Node>) -> bool {
    n.as_ref().is_some_and(|n| ready(n) && !cordoned(n) && annotation(n, REPAIR).is_none())
}

fn record_writers(versions: &[Node]) -> Vec<String> {
    versions
        .iter()
        .filter_map(|v| annotation(v, REPAIR))
        .filter_map(|r| serde_json::from_str::<Value>(&r).ok())
        .filter_map(|r| r["by"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_not_ready_is_cordoned_rebooted_once_and_uncordoned() {
    let e = env(3).await;
    let victim = e.worker(0);
    let recorder = NodeRecorder::start(e.cluster.client.clone(), &victim);
    let (token, task) = e.healer(e.config(""), "replica-a").await;
    e.sim.inject(&victim, Fault::NotReady("KernelDeadlock".into()), Cure::Reboot);
    until("the reboot is issued", || e.sim.calls_for(&victim, Action::Reboot) == 1).await;
    until_async("the node has recovered and is released", || async { released(&e.node(&victim).await) }).await;
    until("the recorder saw the release", || recorder.latest().is_some_and(|n| released(&Some(n)))).await;

    // On the way, the ledger and the cordon were written together, before the call.
    let versions = recorder.versions();
    let started = versions.iter().find(|v| annotation(v, REPAIR).is_some()).expect("a repair record was written");
    assert!(cordoned(started), "the worker is cordoned in the same write that records the repair");
    let record: Value = serde_json::from_str(&annotation(started, REPAIR).unwrap()).unwrap();
    assert_eq!((record["action"].as_str(), record["by"].as_str()), (Some("reboot"), Some("replica-a")));
    assert!(record["reason"].as_str().unwrap().contains("KernelDeadlock"));

    until_async("the Recovered Event is published", || e.has_event(&victim, "Recovered")).await;
    let reasons: Vec<String> = e.cluster.node_events(&victim).await.into_iter().map(|(r, _)| r).collect();
    for want in ["RepairStarted", "RepairIssued", "Recovered"] {
        assert!(reasons.contains(&want.to_string()), "missing Event {want}: {reasons:?}");
    }
    assert!(e.event_note(&victim, "RepairStarted").await.contains("KernelDeadlock"), "the Event says why");
    assert_eq!(e.sim.calls().len(), 1, "exactly one cloud call in all: {:?}", e.sim.calls());
    for other in [e.worker(1), e.worker(2)] {
        assert!(e.node(&other).await.is_some_and(|n| !cordoned(&n)), "{other} was left alone");
    }
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_and_calls_nothing() {
    let e = env(2).await;
    let victim = e.worker(1);
    let recorder = NodeRecorder::start(e.cluster.client.clone(), &victim);
    let (token, task) = e.healer(e.config("dry-run: true\n"), "replica-a").await;
    e.sim.inject(&victim, Fault::NotReady("NetworkUnavailable".into()), Cure::Reboot);
    until_async("the dry-run Event is emitted", || e.has_event(&victim, "DryRun")).await;
    let note = e.event_note(&victim, "DryRun").await;
    assert!(note.contains("Would reboot") && note.contains("NetworkUnavailable"), "{note}");
    token.cancel();
    task.await.unwrap().unwrap();
    assert!(e.sim.calls().is_empty(), "no cloud call in dry-run: {:?}", e.sim.calls());
    let versions = recorder.versions();
    assert!(!versions.is_empty());
    for v in versions {
        assert!(annotation(&v, REPAIR).is_none() && !cordoned(&v), "dry-run wrote to the node: {v:?}");
        let managers: Vec<String> = v.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
        assert!(!managers.contains(&"autohealer".to_string()), "dry-run wrote to the node: {managers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_node_is_left_alone_and_remediate_repairs_on_request() {
    // Five workers: the skipped broken one and the requested one are within max-unhealthy
    // (a node asked for by hand counts, like any other taken out of service).
    let e = env(5).await;
    let (skipped, requested) = (e.worker(0), e.worker(1));
    e.annotate(&skipped, "autohealer.dev/skip", "true").await;
    let (token, task) = e.healer(e.config(""), "replica-a").await;
    e.sim.inject(&skipped, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until_async("the hold is announced", || async { e.event_note(&skipped, "RepairHeld").await.contains("autohealer.dev/skip") }).await;
    // A healthy node repaired on request, and the request removed when taken.
    e.annotate(&requested, "autohealer.dev/remediate", "true").await;
    until("the requested reboot is issued", || e.sim.calls_for(&requested, Action::Reboot) == 1).await;
    until_async("the request annotation is removed", || async {
        e.node(&requested).await.is_some_and(|n| annotation(&n, "autohealer.dev/remediate").is_none())
    })
    .await;
    assert_eq!(e.sim.calls_for(&skipped, Action::Reboot), 0, "a skipped node is never repaired");
    token.cancel();
    task.await.unwrap().unwrap();
}

/// A replica in its own runtime on its own thread, so that killing it stops every
/// task it started (as a crashed pod would), without releasing the Lease.
struct Replica {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Replica {
    fn start(kubeconfig: String, sim: Arc<SimCluster>, loaded: Loaded, identity: &'static str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        runtime.spawn(async move {
            let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
            let client = kube::Client::try_from(cfg).unwrap();
            let rt = autohealer::Runtime {
                client,
                provider: sim.provider(),
                metrics: Arc::new(Metrics::new()),
                status: Arc::new(Status::default()),
                identity: identity.into(),
            };
            autohealer::run(loaded, rt, Registries::builtin(), CancellationToken::new()).await
        });
        Self { runtime: Some(runtime) }
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
    let e = env(3).await;
    let lease = format!("autohealer-{}", e.prefix);
    let loaded =
        e.config(&format!("leader-elect: true\nleader-election:\n  lease-name: {lease}\n  lease-duration: 3s\n  renew-grace: 1s\n"));
    let leases: Api<Lease> = Api::namespaced(e.cluster.client.clone(), "kube-system");
    let holder = || async { leases.get_opt(&lease).await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity) };
    let mut a = Replica::start(e.cluster.kubeconfig.clone(), e.sim.clone(), loaded.clone(), "replica-a");
    until_async("replica-a leads", || async { holder().await.as_deref() == Some("replica-a") }).await;
    let mut b = Replica::start(e.cluster.kubeconfig.clone(), e.sim.clone(), loaded, "replica-b");

    let (first, second) = (e.worker(0), e.worker(1));
    let recorder = NodeRecorder::start(e.cluster.client.clone(), &first);
    e.sim.inject(&first, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until("the leader reboots", || e.sim.calls_for(&first, Action::Reboot) == 1).await;
    until("the first repair is done", || recorder.latest().is_some_and(|n| released(&Some(n)))).await;
    assert_eq!(e.sim.calls_for(&first, Action::Reboot), 1, "two replicas, one reboot");
    let writers = record_writers(&recorder.versions());
    assert!(!writers.is_empty() && writers.iter().all(|w| w == "replica-a"), "only the leader writes: {writers:?}");
    until_async("the leader keeps the repair's start in the fleet state on its Lease", || async {
        let l = leases.get_opt(&lease).await.ok().flatten();
        l.and_then(|l| l.metadata.annotations).and_then(|a| a.get("autohealer.dev/fleet").cloned()).is_some_and(|f| f.len() > 2)
    })
    .await;

    a.kill();
    until_async("replica-b takes over the Lease", || async { holder().await.as_deref() == Some("replica-b") }).await;
    e.sim.inject(&second, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until("the standby repairs", || e.sim.calls_for(&second, Action::Reboot) == 1).await;
    until_async("the second repair is done", || async { released(&e.node(&second).await) }).await;
    assert_eq!(e.sim.calls().len(), 2, "{:?}", e.sim.calls());
    b.kill();
}

async fn zones_env() -> Env {
    let cluster = TestCluster::start().await.unwrap();
    let prefix = format!("e2e-{}", &uuid_like()[..6]);
    let opts = SimOptions { masters: 3, workers: 9, time_scale: 0.05, prefix: prefix.clone(), ..Default::default() };
    let _cleanup = cluster.cleanup_guard(&prefix);
    let sim = SimCluster::start(cluster.client.clone(), opts).await.unwrap();
    Env { cluster, sim, prefix, _cleanup }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_outage_is_short_circuited_and_repairs_nothing() {
    let e = zones_env().await;
    let (token, task) = e.healer(e.config(""), "replica-a").await;
    let zone_c: Vec<String> = e
        .sim
        .node_names(Role::Worker)
        .into_iter()
        .chain(e.sim.node_names(Role::Master))
        .filter(|n| e.sim.zone_of(n).as_deref() == Some("zone-c"))
        .collect();
    assert_eq!(zone_c.len(), 4, "three workers and a master");
    for n in &zone_c {
        e.sim.inject(n, Fault::KubeletStopped, Cure::Reboot);
    }
    for n in &zone_c {
        until_async("the zone short-circuit is announced", || async { e.event_note(n, "RepairHeld").await.contains("zone zone-c") }).await;
    }
    for n in &zone_c {
        e.sim.heal(n);
    }
    for n in &zone_c {
        until_async("the zone is back", || async { e.node(n).await.is_some_and(|n| ready(&n)) }).await;
    }
    assert!(e.sim.calls().is_empty(), "a zone outage is not a node fault: {:?}", e.sim.calls());
    for n in &zone_c {
        let n = e.node(n).await.unwrap();
        assert!(!cordoned(&n) && annotation(&n, REPAIR).is_none(), "recovery is clean: nothing left on {:?}", n.metadata.name);
    }
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_of_most_workers_repairs_nothing_and_pause_holds_repairs() {
    let e = zones_env().await;
    let cm = format!("autohealer-{}", e.prefix);
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(e.cluster.client.clone(), "kube-system");
    let paused_cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": cm, "labels": {SIM_LABEL: e.prefix}, "annotations": {"autohealer.dev/paused": "true"}}}),
    )
    .unwrap();
    cms.create(&Default::default(), &paused_cm).await.unwrap();
    let (token, task) = e.healer(e.config(&format!("pause-configmap: kube-system/{cm}\n")), "replica-a").await;

    // Paused: a broken worker is held, not repaired.
    let mut workers = e.sim.node_names(Role::Worker);
    workers.sort();
    e.sim.inject(&workers[0], Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until_async("the pause is announced", || async { e.event_note(&workers[0], "RepairHeld").await.contains("paused") }).await;
    assert!(e.sim.calls().is_empty());
    // Resumed within moments of removing the annotation.
    cms.patch(&cm, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"autohealer.dev/paused": null}}})))
        .await
        .unwrap();
    until("the repair goes ahead once resumed", || e.sim.calls_for(&workers[0], Action::Reboot) == 1).await;
    until_async("the first repair closes", || async { released(&e.node(&workers[0]).await) }).await;

    // Six of nine workers down at once: a partition, not six node faults.
    for w in &workers[1..7] {
        e.sim.inject(w, Fault::KubeletStopped, Cure::Reboot);
    }
    until_async("the partition is announced", || async { e.event_note(&workers[1], "RepairHeld").await.contains("max-unhealthy") }).await;
    for w in &workers[1..7] {
        e.sim.heal(w);
    }
    for w in &workers[1..7] {
        until_async("the partition heals", || async { e.node(w).await.is_some_and(|n| ready(&n)) }).await;
    }
    assert_eq!(e.sim.calls().len(), 1, "only the paused-then-resumed repair: {:?}", e.sim.calls());
    // The held failures are in the nodes' history, critical, for the next leader's severity.
    let history = annotation(&e.node(&workers[1]).await.unwrap(), "autohealer.dev/repair-history").expect("a history");
    let history: Value = serde_json::from_str(&history).unwrap();
    assert!(
        history.as_array().unwrap().iter().any(|h| h["held"] == true && h["severity"] == "critical"),
        "a held detection was kept: {history}"
    );
    for w in &workers {
        let n = e.node(w).await.unwrap();
        assert!(!cordoned(&n) && annotation(&n, REPAIR).is_none(), "recovery is clean: nothing left on {w}");
    }
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_check_reads_the_node_lease_directly() {
    let e = env(2).await;
    let victim = e.worker(0);
    let text = format!(
        "cluster-name: sim\nmonitor-interval: 200ms\ncheck-delay-after-add: 0s\nrecovery-stable-window: 1s\nleader-elect: false\nnode-selector: {SIM_LABEL}={}\n{}admin:\n  listen: 127.0.0.1:0\nhealthcheck:\n  worker:\n    - type: Heartbeat\n      params:\n        unhealthy-duration: 1s\n",
        e.prefix,
        e.own_names("")
    );
    let loaded = Config::load_str(&text, &Registries::builtin()).unwrap();
    let (token, task) = e.healer(loaded, "replica-a").await;
    e.sim.inject(&victim, Fault::KubeletStopped, Cure::Reboot);
    until("the stale Lease gets the node rebooted", || e.sim.calls_for(&victim, Action::Reboot) == 1).await;
    let note = e.event_note(&victim, "RepairStarted").await;
    assert!(note.contains("Lease not renewed"), "{note}");
    assert_eq!(e.sim.calls().len(), 1, "the healthy node's Lease keeps it healthy");
    token.cancel();
    task.await.unwrap().unwrap();
}

/// A local receiver for the generic webhook sink: every JSON body it was sent.
async fn webhook_receiver() -> (Arc<std::sync::Mutex<Vec<Value>>>, std::path::PathBuf) {
    let got: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let file = std::env::temp_dir().join(format!("autohealer-e2e-hook-{}", uuid_like()));
    std::fs::write(&file, url).unwrap();
    (got, file)
}

fn kinds(got: &std::sync::Mutex<Vec<Value>>) -> Vec<(String, String)> {
    got.lock()
        .unwrap()
        .iter()
        .map(|b| (b["kind"].as_str().unwrap_or("").to_string(), b["severity"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn has_taint(n: &Node) -> bool {
    n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| {
        t.iter()
            .any(|t| t.key == "node.kubernetes.io/out-of-service" && t.value.as_deref() == Some("nodeshutdown") && t.effect == "NoExecute")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_confirmed_down_is_fenced_then_unfenced_when_it_returns_and_people_are_told() {
    let e = env_with(3, SimOptions { rebuild_in_place: true, replace_time: Duration::from_secs(20), ..Default::default() }).await;
    let victim = e.worker(0);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(e.cluster.client.clone(), "default");
    let pod_name = format!("{}-db-0", e.prefix);
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": pod_name, "namespace": "default"},
        "spec": {"nodeName": victim, "containers": [{"name": "db", "image": "postgres"}]},
    }))
    .unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    let recorder = NodeRecorder::start(e.cluster.client.clone(), &victim);
    let (got, url_file) = webhook_receiver().await;
    let extra = format!(
        "repair-steps:\n  worker: [replace]\ndrain:\n  before-replace: false\nfencing:\n  confirm-timeout: 60s\nnotifications:\n  coalesce-window: 100ms\n  sinks:\n    - type: webhook\n      min-severity: info\n      url-file: {}\n",
        url_file.display()
    );
    let (token, task) = e.healer(e.config(&extra), "replica-a").await;
    e.sim.inject(&victim, Fault::KubeletStopped, Cure::Replace);
    until("the replace is issued", || e.sim.calls_for(&victim, Action::Replace) == 1).await;
    until_async("the Fenced Event is published", || e.has_event(&victim, "Fenced")).await;
    let note = e.event_note(&victim, "Fenced").await;
    assert!(note.contains(&pod_name) && note.contains("powered off"), "the Event names the pods and the evidence: {note}");
    until_async("the node has recovered and is released", || async { released(&e.node(&victim).await) }).await;
    until("the recorder saw the release", || recorder.latest().is_some_and(|n| released(&Some(n)))).await;
    let versions = recorder.versions();
    let first = versions.iter().find(|v| has_taint(v)).expect("the node was tainted out-of-service");
    assert!(!ready(first), "tainted while the machine was down, never while it might be running");
    assert!(!has_taint(&e.node(&victim).await.unwrap()), "the taint is lifted once the node is back");
    assert!(e.event_note(&victim, "Recovered").await.contains("Out-of-service taint removed"));
    assert!(e.event_note(&victim, "RepairStarted").await.contains("Severity: medium"), "first failure of a worker");

    until("the webhook heard the whole story", || kinds(&got).iter().any(|(k, _)| k == "repair-succeeded")).await;
    let told = kinds(&got);
    assert!(got.lock().unwrap().iter().all(|b| b["role"] == "worker" && b["node"] == victim.as_str()), "{:?}", got.lock().unwrap());
    for want in ["repair-started", "fenced", "repair-succeeded"] {
        assert!(told.iter().any(|(k, s)| k == want && s == "medium"), "missing {want} (medium): {told:?}");
    }
    let incidents: std::collections::BTreeSet<String> =
        got.lock().unwrap().iter().filter_map(|b| b["incident"].as_str().map(String::from)).collect();
    assert_eq!(incidents.len(), 1, "one incident from detection to recovery: {incidents:?}");
    // The history keeps the outcome with its severity, on the node, for the next leader.
    let history = annotation(&e.node(&victim).await.unwrap(), "autohealer.dev/repair-history").unwrap();
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!((history[0]["succeeded"].as_bool(), history[0]["severity"].as_str()), (Some(true), Some("medium")));
    assert_eq!(e.sim.calls().len(), 1, "{:?}", e.sim.calls());
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_only_check_tells_and_never_repairs() {
    let e = env(2).await;
    let victim = e.worker(0);
    let (got, url_file) = webhook_receiver().await;
    let extra =
        format!("notifications:\n  coalesce-window: 100ms\n  sinks:\n    - type: webhook\n      url-file: {}\n", url_file.display());
    let text = format!(
        "cluster-name: sim\nleader-elect: false\nmonitor-interval: 1s\ncheck-delay-after-add: 0s\nnode-selector: {SIM_LABEL}={}\n{}admin:\n  listen: 127.0.0.1:0\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: 2s\n    - type: NodeCondition\n      action: notify-only\n      params:\n        types: [MemoryPressure]\n        error-values: [\"True\"]\n        unhealthy-duration: 1s\n{extra}",
        e.prefix,
        e.own_names("")
    );
    let loaded = Config::load_str(&text, &Registries::builtin()).unwrap();
    let (token, task) = e.healer(loaded, "replica-a").await;
    let pressure = json!({"status": {"conditions": [{"type": "MemoryPressure", "status": "True", "reason": "KubeletHasInsufficientMemory",
        "message": "available memory is low", "lastTransitionTime": "2026-01-01T00:00:00Z", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}});
    Api::<Node>::all(e.cluster.client.clone()).patch_status(&victim, &PatchParams::default(), &Patch::Strategic(&pressure)).await.unwrap();
    until_async("the NodeProblem Event is published", || e.has_event(&victim, "NodeProblem")).await;
    let note = e.event_note(&victim, "NodeProblem").await;
    assert!(note.contains("MemoryPressure") && note.contains("notify-only"), "{note}");
    until("the webhook heard it", || kinds(&got).iter().any(|(k, _)| k == "detected")).await;
    // Well past its unhealthy-duration: told once, never repaired, never cordoned.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(kinds(&got).iter().filter(|(k, _)| k == "detected").count(), 1, "told once: {:?}", kinds(&got));
    assert!(e.sim.calls().is_empty(), "{:?}", e.sim.calls());
    let n = e.node(&victim).await.unwrap();
    assert!(!cordoned(&n) && annotation(&n, REPAIR).is_none());
    token.cancel();
    task.await.unwrap().unwrap();
}

/// The reliability suite's Kubernetes faults run against the fake apiserver only: a
/// real cluster cannot be taken down on demand. Their names end in `_on_the_fake`, and
/// the `real-cluster` nextest profile leaves them out (reported as skipped); this is
/// the second guard, for a run on a real cluster without that profile.
fn fake_apiserver(e: &Env) -> Option<&autohealer_testkit::apiserver::FakeApiServer> {
    let fake = e.cluster.fake.as_ref();
    if fake.is_none() {
        eprintln!(
            "SKIPPED, not passed: this test injects apiserver faults (outages, dropped watches, compaction) \
             that only the fake apiserver can; run with `--profile real-cluster` to have it listed as skipped"
        );
    }
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_outage_crashes_nothing_acts_on_nothing_while_blind_and_the_healer_resumes_on_the_fake() {
    // A grace period longer than the outage: the nodes' own Leases do not all go stale.
    let e = env_with(4, SimOptions { grace: Duration::from_secs(120), ..Default::default() }).await;
    let Some(fake) = fake_apiserver(&e) else { return };
    // A minute for nodes to report again after the outage, at the test's time scale.
    let extra = format!(
        "leader-elect: true\nleader-election:\n  lease-name: ah-{}\n  lease-duration: 3s\n  renew-grace: 1s\napiserver-outage-grace: 3s\n",
        e.prefix
    );
    let (token, task) = e.healer(e.config(&extra), "replica-a").await;
    let victim = e.worker(0);
    e.sim.inject(&victim, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until_async("the node is NotReady", || async { e.node(&victim).await.is_some_and(|n| !ready(&n)) }).await;
    // 60 s at the test's time scale; the node becomes actionable (2 s) while the healer is blind.
    let outage = Duration::from_secs(3);
    fake.faults().outage(outage);
    let blind_until = tokio::time::Instant::now() + outage;
    while tokio::time::Instant::now() < blind_until {
        assert!(e.sim.calls().is_empty(), "a cloud call while the apiserver was down: {:?}", e.sim.calls());
        assert!(!task.is_finished(), "the healer stopped during the outage");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until("the repair goes ahead once the apiserver is back", || e.sim.calls_for(&victim, Action::Reboot) == 1).await;
    until_async("the node has recovered and is released", || async { released(&e.node(&victim).await) }).await;
    assert_eq!(e.sim.calls().len(), 1, "{:?}", e.sim.calls());
    assert!(!task.is_finished());
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_dropped_again_and_again_and_410_gone_converge_without_a_spurious_repair_on_the_fake() {
    let e = env(5).await;
    let Some(fake) = fake_apiserver(&e) else { return };
    let (token, task) = e.healer(e.config(""), "replica-a").await;
    let nodes: Api<Node> = Api::all(e.cluster.client.clone());
    for i in 0..30 {
        fake.faults().drop_watches();
        if i % 3 == 0 {
            // History gone: a watch resumed from an old resourceVersion gets 410 Gone and relists.
            fake.store().compact();
        }
        let p = json!({"metadata": {"labels": {"churn": i.to_string()}}});
        nodes.patch(&e.worker(i % 5), &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(e.sim.calls().is_empty(), "no repair of healthy nodes: {:?}", e.sim.calls());
    // The cache converged: a real failure now is seen and repaired, once, on the right node.
    let victim = e.worker(3);
    e.sim.inject(&victim, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until("the failed node is rebooted", || e.sim.calls_for(&victim, Action::Reboot) == 1).await;
    until_async("the node has recovered and is released", || async { released(&e.node(&victim).await) }).await;
    assert_eq!(e.sim.calls().len(), 1, "{:?}", e.sim.calls());
    token.cancel();
    task.await.unwrap().unwrap();
}

/// What a test creates is deleted by its cleanup (run by its guard on a real cluster),
/// and nothing of another test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_deletes_what_the_test_created_and_nothing_else() {
    let e = env(2).await;
    // Another test's nodes, on the same cluster.
    let other_prefix = format!("e2e-{}", &uuid_like()[..6]);
    let other_opts = SimOptions { masters: 0, workers: 1, time_scale: 0.05, prefix: other_prefix.clone(), ..Default::default() };
    let other = SimCluster::start(e.cluster.client.clone(), other_opts).await.unwrap();
    let client = e.cluster.client.clone();
    let (token, task) = e.healer(e.config(""), "replica-a").await;
    let victim = e.worker(0);
    e.sim.inject(&victim, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until_async("the repair is announced", || e.has_event(&victim, "RepairStarted")).await;
    token.cancel();
    task.await.unwrap().unwrap();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": format!("autohealer-{}", e.prefix), "labels": {SIM_LABEL: e.prefix}}})).unwrap();
    cms.create(&Default::default(), &cm).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": format!("autohealer-{}", e.prefix)}})).unwrap();
    leases.create(&Default::default(), &lease).await.unwrap();
    let names = e.sim.node_names(Role::Worker).into_iter().chain(e.sim.node_names(Role::Master)).collect::<Vec<_>>();
    let prefix = e.prefix.clone();
    autohealer_testkit::cluster::cleanup(&client, &prefix).await;
    for n in &names {
        assert!(e.node(n).await.is_none(), "{n} is deleted");
    }
    assert!(e.cluster.node_events(&victim).await.is_empty(), "its Events are deleted");
    assert!(cms.get_opt(&format!("autohealer-{prefix}")).await.unwrap().is_none());
    assert!(leases.get_opt(&format!("autohealer-{prefix}")).await.unwrap().is_none());
    assert_ne!(other_prefix, prefix);
    let others = other.node_names(Role::Worker);
    assert_eq!(others.len(), 1);
    assert!(e.node(&others[0]).await.is_some(), "another test's node is left alone");
}

/// The guard as it runs on a real cluster (the cluster in its own runtime, as if in
/// another process): a test that fails still leaves nothing behind.
#[test]
fn the_guard_cleans_up_on_a_real_cluster_when_the_test_fails() {
    let server_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let fake = server_rt.block_on(autohealer_testkit::apiserver::FakeApiServer::start(Default::default())).unwrap();
    let kubeconfig = fake.kubeconfig_yaml();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client = || async {
        let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
        kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap()
    };
    let prefix = format!("e2e-{}", &uuid_like()[..6]);
    let names = rt.block_on(async {
        let cluster = TestCluster { client: client().await, kubeconfig: kubeconfig.clone(), fake: None };
        let opts = SimOptions { masters: 1, workers: 2, time_scale: 0.05, prefix: prefix.clone(), ..Default::default() };
        let sim = SimCluster::start(cluster.client.clone(), opts).await.unwrap();
        sim.node_names(Role::Worker).into_iter().chain(sim.node_names(Role::Master)).collect::<Vec<_>>()
    });
    assert_eq!(names.len(), 3);
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async {
            let cluster = TestCluster { client: client().await, kubeconfig: kubeconfig.clone(), fake: None };
            let _cleanup = cluster.cleanup_guard(&prefix);
            let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(cluster.client.clone(), "kube-system");
            let cm = serde_json::from_value(json!({"metadata": {"name": format!("autohealer-{prefix}")}})).unwrap();
            cms.create(&Default::default(), &cm).await.unwrap();
            panic!("the test fails");
        })
    }));
    assert!(failed.is_err());
    rt.block_on(async {
        let c = client().await;
        for n in &names {
            assert!(Api::<Node>::all(c.clone()).get_opt(n).await.unwrap().is_none(), "{n} is deleted");
        }
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c, "kube-system");
        assert!(cms.get_opt(&format!("autohealer-{prefix}")).await.unwrap().is_none(), "the ConfigMap is deleted");
    });
    drop(rt);
    drop(fake);
}

/// A bad kernel on three of eight workers: they fail in turn; the first two are rebooted
/// (nothing says yet it is a rollout), the third is held as correlated and never touched,
/// and a worker with the fleet's kernel that fails meanwhile is still repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_of_a_bad_kernel_rollout_are_held_as_correlated_and_others_are_repaired() {
    let e = env(8).await;
    let bad = [e.worker(0), e.worker(1), e.worker(2)];
    let unrelated = e.worker(3);
    for n in &bad {
        e.sim.set_kernel(n, "6.2.0-bad");
    }
    until_async("the nodes report the new kernel", || async {
        let mut all = true;
        for n in &bad {
            all &= e.node(n).await.and_then(|n| n.status).and_then(|s| s.node_info).is_some_and(|i| i.kernel_version == "6.2.0-bad");
        }
        all
    })
    .await;
    let (token, task) = e.healer(e.config("max-unhealthy:\n  worker: 100%\n  zone: 100%\n"), "replica-a").await;
    for n in &bad[..2] {
        e.sim.inject(n, Fault::NotReady("KernelDeadlock".into()), Cure::Reboot);
        until("the reboot is issued", || e.sim.calls_for(n, Action::Reboot) == 1).await;
        until_async("it recovered", || async { released(&e.node(n).await) }).await;
    }
    e.sim.inject(&bad[2], Fault::NotReady("KernelDeadlock".into()), Cure::Reboot);
    e.sim.inject(&unrelated, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until_async("the third is held as correlated", || async {
        e.cluster.node_events(&bad[2]).await.iter().any(|(r, n)| r == "RepairHeld" && n.contains("kernelVersion=6.2.0-bad"))
    })
    .await;
    until("the unrelated worker is rebooted", || e.sim.calls_for(&unrelated, Action::Reboot) == 1).await;
    let note = e.event_note(&bad[2], "RepairHeld").await;
    assert!(note.contains(&bad[0]) && note.contains(&bad[1]) && note.contains(&bad[2]), "the nodes are named: {note}");
    assert_eq!(e.sim.calls_for(&bad[2], Action::Reboot), 0, "the held node is not touched");
    token.cancel();
    task.await.unwrap().unwrap();
}

/// Reboots need approval here: the healer proposes (an Event with the command), takes
/// no step, and reboots once the node carries the proposal's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_needs_approval_waits_for_it_and_is_taken_once() {
    let e = env(3).await;
    let victim = e.worker(0);
    let (token, task) = e.healer(e.config("approval:\n  worker: [reboot]\n"), "replica-a").await;
    e.sim.inject(&victim, Fault::NotReady("KernelDeadlock".into()), Cure::Reboot);
    until_async("a proposal is made", || async { e.has_event(&victim, "RepairProposed").await }).await;
    let note = e.event_note(&victim, "RepairProposed").await;
    let id: String = note.split("proposal ").nth(1).unwrap().chars().take(12).collect();
    assert!(note.contains(&format!("kubectl annotate node {victim} autohealer.dev/approve={id}")), "{note}");
    assert_eq!(e.sim.calls_for(&victim, Action::Reboot), 0, "no step before the approval");
    e.annotate(&victim, "autohealer.dev/approve", &id).await;
    until("the approved reboot is issued", || e.sim.calls_for(&victim, Action::Reboot) == 1).await;
    until_async("the node has recovered and is released", || async { released(&e.node(&victim).await) }).await;
    assert_eq!(e.sim.calls_for(&victim, Action::Reboot), 1);
    token.cancel();
    task.await.unwrap().unwrap();
}

/// Workload-verified recovery: the reboot brings the node back, but a pod of a
/// ReplicaSet crash-loops on it while its sibling on another node runs: the reboot did
/// not repair it, and the replace follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_workloads_still_crash_loop_after_a_reboot_is_replaced() {
    let e = env(3).await;
    let victim = e.worker(0);
    let other = e.worker(1);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(e.cluster.client.clone(), "default");
    let owner = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{}-web", e.prefix), "uid": format!("{}-rs-uid", e.prefix), "controller": true}]);
    for (name, node, waiting) in [("a", &victim, Some("CrashLoopBackOff")), ("b", &other, None)] {
        let pod_name = format!("{}-web-{name}", e.prefix);
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": pod_name, "namespace": "default", "ownerReferences": owner, "labels": {SIM_LABEL: e.prefix}},
            "spec": {"nodeName": node, "containers": [{"name": "web", "image": "nginx"}]},
        }))
        .unwrap();
        pods.create(&Default::default(), &pod).await.unwrap();
        let state = match waiting {
            Some(r) => json!({"waiting": {"reason": r, "message": "back-off restarting failed container"}}),
            None => json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
        };
        let status = json!({"status": {"phase": "Running", "containerStatuses": [{"name": "web", "image": "nginx", "imageID": "", "ready": waiting.is_none(), "restartCount": if waiting.is_some() { 7 } else { 0 }, "state": state}]}});
        pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    }
    let (token, task) =
        e.healer(e.config("workload-check:\n  worker: true\n  window: 1s\ndrain:\n  before-replace: false\n"), "replica-a").await;
    e.sim.inject(&victim, Fault::NotReady("KernelDeadlock".into()), Cure::Reboot);
    until("the reboot is issued", || e.sim.calls_for(&victim, Action::Reboot) == 1).await;
    until("the replace follows", || e.sim.calls_for(&victim, Action::Replace) == 1).await;
    let failed = e.event_note(&victim, "RepairFailed").await;
    assert!(failed.contains("crash-loops") && failed.contains("web-a") && failed.contains("next one follows"), "{failed}");
    assert_eq!(e.sim.calls_for(&other, Action::Reboot), 0, "the sibling's node is left alone");
    token.cancel();
    task.await.unwrap().unwrap();
}

/// The node's finished repairs, from its history annotation.
async fn history(e: &Env, name: &str) -> Vec<autohealer_core::ledger::HistoryEntry> {
    let n = e.node(name).await;
    autohealer_core::ledger::parse_history(n.as_ref().and_then(|n| annotation(n, autohealer_core::ledger::HISTORY_ANNOTATION)).as_deref())
        .into_iter()
        .filter(|h| !h.held)
        .collect()
}

/// Slow start: three workers of one zone fail at once; one is rebooted and the other
/// two are held (gate `slow_start`) until it is proven healthy; then the width has
/// doubled and both go together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_repairs_one_first_and_the_rest_once_it_is_proven_healthy() {
    let e = env_with(4, SimOptions { zones: vec!["zone-a".into()], ..Default::default() }).await;
    let failing = [e.worker(0), e.worker(1), e.worker(2)];
    let config = e.config("max-unhealthy:\n  worker: 100%\n  zone: 100%\nslow-start:\n  enabled: true\n");
    let (token, task) = e.healer(config, "replica-a").await;
    for n in &failing {
        e.sim.inject(n, Fault::NotReady("KernelDeadlock".into()), Cure::Reboot);
    }
    until("a first reboot is issued", || !e.sim.calls().is_empty()).await;
    let first = e.sim.calls()[0].node.clone();
    let others: Vec<&String> = failing.iter().filter(|n| **n != first).collect();
    until_async("the other two are held by slow start", || async {
        let mut held = true;
        for n in &others {
            held &= e.cluster.node_events(n).await.iter().any(|(r, note)| r == "RepairHeld" && note.contains("slow start"));
        }
        held
    })
    .await;
    until("all three are rebooted", || failing.iter().all(|n| e.sim.calls_for(n, Action::Reboot) == 1)).await;
    for n in &failing {
        until_async("it is back and released", || async { released(&e.node(n).await) }).await;
    }
    let first_done = history(&e, &first).await.first().map(|h| h.ended).expect("the first repair is in its history");
    for n in &others {
        let started = history(&e, n).await.first().map(|h| h.started).expect("its repair is in its history");
        assert!(started >= first_done, "{n} was rebooted at {started}, before the first repair was proven healthy at {first_done}");
    }
    assert_eq!(e.sim.calls().len(), 3, "one reboot each: {:?}", e.sim.calls());
    token.cancel();
    task.await.unwrap().unwrap();
}

/// A node that keeps failing after successful repairs is left to a human: with
/// `repeated-repairs.max: 1`, two reboots that each worked, then the third failure is
/// held with an Event that says what to do, and removing the history lets it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_repaired_again_and_again_is_left_to_a_human() {
    let e = env(3).await;
    let victim = e.worker(0);
    let (token, task) = e.healer(e.config("repeated-repairs:\n  max: 1\n"), "replica-a").await;
    for round in 1..=2 {
        e.sim.inject(&victim, Fault::NotReady("KernelDeadlock".into()), Cure::Reboot);
        until("the reboot is issued", || e.sim.calls_for(&victim, Action::Reboot) == round).await;
        until_async("it recovered", || async { history(&e, &victim).await.len() == round }).await;
        until_async("it is released", || async { released(&e.node(&victim).await) }).await;
    }
    e.sim.inject(&victim, Fault::NotReady("KernelDeadlock".into()), Cure::Reboot);
    until_async("the third failure is held", || async {
        e.cluster.node_events(&victim).await.iter().any(|(r, note)| r == "RepairHeld" && note.contains("left to a human"))
    })
    .await;
    let note = e.cluster.node_events(&victim).await.into_iter().find(|(_, n)| n.contains("left to a human")).map(|(_, n)| n).unwrap();
    assert!(note.contains("repaired successfully 2 times") && note.contains("autohealer.dev/repair-history"), "{note}");
    assert_eq!(e.sim.calls_for(&victim, Action::Reboot), 2, "no third reboot");
    let clear = json!({"metadata": {"annotations": {autohealer_core::ledger::HISTORY_ANNOTATION: null}}});
    Api::<Node>::all(e.cluster.client.clone()).patch(&victim, &PatchParams::default(), &Patch::Merge(&clear)).await.unwrap();
    until("with its history removed it is repaired again", || e.sim.calls_for(&victim, Action::Reboot) == 3).await;
    token.cancel();
    task.await.unwrap().unwrap();
}

/// Per-condition actions: the Ready condition's reason picks the steps. An XID that
/// needs another machine is replaced at once (no reboot first), one a reboot recovers is
/// rebooted, and a reason with `action: none` is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reason_of_a_condition_picks_replace_reboot_or_nothing() {
    let e = env(4).await;
    let (gone, flaky, ignored) = (e.worker(0), e.worker(1), e.worker(2));
    let checks = "healthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: 2s\n      reasons:\n        - match: 'NvidiaXID(74|79)Error'\n          steps: [replace]\n        - match: 'NvidiaXID(13|31)Error'\n          steps: [reboot]\n        - match: 'Maintenance'\n          action: none\n";
    let extra = format!("max-unhealthy:\n  worker: 100%\n  zone: 100%\ndrain:\n  before-replace: false\n{checks}");
    let (token, task) = e.healer(e.config(&extra), "replica-a").await;
    e.sim.inject(&gone, Fault::NotReady("NvidiaXID79Error".into()), Cure::Replace);
    e.sim.inject(&flaky, Fault::NotReady("NvidiaXID13Error".into()), Cure::Reboot);
    e.sim.inject(&ignored, Fault::NotReady("Maintenance".into()), Cure::Reboot);
    until("the XID 79 node is replaced", || e.sim.calls_for(&gone, Action::Replace) == 1).await;
    until("the XID 13 node is rebooted", || e.sim.calls_for(&flaky, Action::Reboot) == 1).await;
    until_async("the rebooted node is back and released", || async { released(&e.node(&flaky).await) }).await;
    assert_eq!(e.sim.calls_for(&gone, Action::Reboot), 0, "no reboot before a replace the reason calls for");
    assert_eq!(e.sim.calls_for(&flaky, Action::Replace), 0);
    let n = e.node(&ignored).await.unwrap();
    assert!(e.sim.calls_for(&ignored, Action::Reboot) + e.sim.calls_for(&ignored, Action::Replace) == 0, "{:?}", e.sim.calls());
    assert!(annotation(&n, REPAIR).is_none() && !cordoned(&n), "the node with action none is not touched");
    token.cancel();
    task.await.unwrap().unwrap();
}

/// Leader election costs one request per renewal: the leader patches its Lease (the
/// patch itself tests that the Lease still names it) and never reads it first, and a
/// shut-down leader gives the Lease up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_renews_with_one_request_and_reads_nothing_first_on_the_fake() {
    let e = env(1).await;
    let Some(api) = fake_apiserver(&e) else { return };
    let lease = format!("autohealer-{}", e.prefix);
    let loaded =
        e.config(&format!("leader-elect: true\nleader-election:\n  lease-name: {lease}\n  lease-duration: 3s\n  renew-grace: 1s\n"));
    let leases: Api<Lease> = Api::namespaced(e.cluster.client.clone(), "kube-system");
    let holder = || async { leases.get_opt(&lease).await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity) };
    let (token, task) = e.healer(loaded, "replica-a").await;
    until_async("replica-a leads", || async { holder().await.as_deref() == Some("replica-a") }).await;
    const LEASES: &str = "leases.coordination.k8s.io";
    // Renewals seen through a watch (which reads nothing by GET): the new leader reads the
    // fleet state it keeps in the Lease once; from the first renewal on (every 2 s: 3 s
    // less the 1 s grace), it reads nothing.
    let renewals = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let seen = renewals.clone();
    let cfg = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={lease}"));
    let watch =
        tokio::spawn(kube::runtime::WatchStreamExt::applied_objects(kube::runtime::watcher(leases.clone(), cfg)).for_each(move |l| {
            if let Some(t) = l.ok().and_then(|l| l.spec).and_then(|s| s.renew_time) {
                seen.lock().unwrap().insert(t.0);
            }
            futures::future::ready(())
        }));
    let count = || renewals.lock().unwrap().len();
    until("the first renewal", || count() >= 2).await;
    let (gets, at) = (api.requests("get", LEASES), count());
    until("three more renewals", || count() >= at + 3).await;
    watch.abort();
    assert_eq!(api.requests("get", LEASES), gets, "no read of the Lease before a renewal");
    token.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(holder().await, None, "released on shutdown");
}
