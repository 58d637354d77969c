//! The drain against the testkit's fake apiserver: evictions through the real HTTP
//! API, PodDisruptionBudgets, and finalizers to hold an evicted pod Terminating the way
//! a kubelet that has not confirmed yet (or is gone) does.

use autohealer_core::drain::{DrainContext, DrainReport, DrainSettings, drain};
use autohealer_testkit::apiserver::{ApiServerOptions, FakeApiServer};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NODE: &str = "worker-1";
/// Keeps an evicted pod Terminating until the test lets it go.
const HOLD: &str = "testkit.autohealer.dev/hold";

struct Env {
    fake: FakeApiServer,
    client: kube::Client,
    pods: Api<Pod>,
}

async fn env() -> Env {
    let fake = FakeApiServer::start(ApiServerOptions::default()).await.unwrap();
    // As the binary builds it: kube's default retry would sit out every budget refusal
    // (429) inside one eviction call, and those are the drain's to retry.
    let mut cfg = fake.client_config().await.unwrap();
    cfg.default_retry = false;
    let client = kube::Client::try_from(cfg).unwrap();
    let pods = Api::namespaced(client.clone(), "default");
    Env { fake, client, pods }
}

fn owner(kind: &str, name: &str, controller: bool) -> Value {
    json!({"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": format!("uid-{name}"), "controller": controller})
}

impl Env {
    /// A Running, Ready pod bound to `node`.
    async fn pod(&self, name: &str, node: &str, owners: Value, finalizers: &[&str]) -> Pod {
        let meta = json!({"name": name, "labels": {"app": name}, "ownerReferences": owners, "finalizers": finalizers});
        let pod: Pod =
            serde_json::from_value(json!({"metadata": meta, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}}))
                .unwrap();
        self.pods.create(&PostParams::default(), &pod).await.unwrap();
        let ready = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        self.pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&ready)).await.unwrap()
    }

    /// A budget that refuses every eviction of the pods labelled `app`.
    async fn budget(&self, app: &str) {
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), "default");
        let pdb = serde_json::from_value(
            json!({"metadata": {"name": app}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}}}),
        )
        .unwrap();
        pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    }

    /// What the pod's kubelet does once its containers stopped: the finalizer goes and
    /// a DELETE with grace 0 removes the Terminating pod, as on a real cluster.
    async fn release(&self, name: &str) {
        self.pods.patch(name, &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"finalizers": null}}))).await.unwrap();
        let _ = self.pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
    }

    /// A live kubelet on the node: it completes the graceful deletion of every
    /// Terminating pod it holds, until the handle is dropped.
    fn kubelet(&self) -> AbortOnDrop {
        let pods = self.pods.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                if let Ok(list) = pods.list(&Default::default()).await {
                    for p in list.items.iter().filter(|p| p.meta().deletion_timestamp.is_some()) {
                        let _ = pods.delete(&p.name_any(), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }))
    }

    async fn drain(&self, ctx: DrainContext, settings: &DrainSettings) -> DrainReport {
        drain(&self.client, NODE, ctx, settings, &CancellationToken::new()).await.unwrap()
    }

    fn evictions(&self) -> u64 {
        self.fake.requests("create", "pods/eviction")
    }
}

fn settings(timeout: Duration) -> DrainSettings {
    DrainSettings { timeout, retry_interval: Duration::from_millis(20), ..DrainSettings::default() }
}

/// Polls `cond` until it holds; a bound only turns a hang into a failure.
async fn until<F: Future<Output = bool>>(what: &str, cond: impl Fn() -> F) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !cond().await {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

#[tokio::test]
async fn force_delete_waits_for_the_machine_to_be_confirmed_down() {
    let e = env().await;
    // A StatefulSet pod its budget will not let go, and one whose eviction goes
    // through but that stays Terminating: its kubelet is behind the partition.
    e.pod("web-0", NODE, json!([owner("StatefulSet", "web", true)]), &[]).await;
    e.budget("web-0").await;
    e.pod("db-0", NODE, json!([owner("StatefulSet", "db", true)]), &[HOLD]).await;
    let s = DrainSettings { force_delete: true, ..settings(Duration::from_millis(300)) };

    let partitioned = e.drain(DrainContext { unreachable: true, machine_down: false }, &s).await;
    assert!(!partitioned.blocked);
    assert_eq!(partitioned.evicted, ["default/db-0"]);
    assert!(partitioned.deleted.is_empty(), "{partitioned:?}");
    let left: Vec<&str> = partitioned.left.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(left, ["default/web-0", "default/db-0"], "{partitioned:?}");
    assert!(
        partitioned.left.iter().all(|(_, why)| why.contains("force deletion waits for the machine to be confirmed down")),
        "{partitioned:?}"
    );
    assert_eq!(e.fake.requests("delete", "pods"), 0, "nothing is deleted while the machine may still run");
    let web = e.pods.get("web-0").await.unwrap();
    assert!(web.meta().deletion_timestamp.is_none(), "the budget's pod is untouched");

    let down = e.drain(DrainContext { unreachable: true, machine_down: true }, &s).await;
    assert_eq!(down.deleted, ["default/web-0", "default/db-0"], "{down:?}");
    assert!(down.left.is_empty() && down.evicted.is_empty(), "the Terminating pod is not evicted again: {down:?}");
    assert!(e.pods.get_opt("web-0").await.unwrap().is_none(), "force-deleted once the machine is down");
}

#[tokio::test]
async fn a_pod_recreated_under_the_same_name_does_not_hold_the_drain() {
    let e = env().await;
    let old = e.pod("db-0", NODE, json!([owner("StatefulSet", "db", true)]), &[HOLD]).await;
    // Long enough that a drain waiting on the name would still be waiting when the
    // guard below gives up.
    let s = settings(Duration::from_secs(60));
    let client = e.client.clone();
    let task = tokio::spawn(async move { drain(&client, NODE, DrainContext::default(), &s, &CancellationToken::new()).await.unwrap() });

    until("the eviction leaves db-0 Terminating", || async { e.pods.get("db-0").await.unwrap().meta().deletion_timestamp.is_some() }).await;
    // Two more listings: the drain looked at the Terminating pod and kept waiting.
    let lists = e.fake.requests("list", "pods");
    until("the drain rechecks the pod", || async { e.fake.requests("list", "pods") >= lists + 2 }).await;
    assert_eq!(e.evictions(), 1, "a Terminating pod is waited for, not evicted again");

    // Its kubelet confirms, and the StatefulSet recreates the pod under the same name,
    // here bound to the same node: the drain acts on the pods it found.
    e.release("db-0").await;
    let new = e.pod("db-0", NODE, json!([owner("StatefulSet", "db", true)]), &[]).await;
    assert_ne!(new.uid(), old.uid());

    let report = tokio::time::timeout(Duration::from_secs(10), task).await.expect("the drain ends once the evicted pod is gone").unwrap();
    assert_eq!(report.evicted, ["default/db-0"]);
    assert!(report.left.is_empty() && report.deleted.is_empty() && !report.blocked, "{report:?}");
    let now = e.pods.get("db-0").await.unwrap();
    assert_eq!(now.uid(), new.uid());
    assert!(now.meta().deletion_timestamp.is_none(), "the new pod was not evicted");
    assert_eq!(e.evictions(), 1);
}

#[tokio::test]
async fn bare_pods_are_not_evicted_unless_allowed() {
    let e = env().await;
    e.pod("scratch", NODE, json!([]), &[]).await;
    // An owner that is not its controller recreates nothing either.
    e.pod("attached", NODE, json!([owner("ReplicaSet", "old", false)]), &[]).await;
    e.pod("web-1", NODE, json!([owner("ReplicaSet", "web", true)]), &[]).await;
    e.pod("agent", NODE, json!([owner("DaemonSet", "agent", true)]), &[]).await;

    let refused = e.drain(DrainContext::default(), &settings(Duration::from_secs(5))).await;
    assert!(refused.blocked, "{refused:?}");
    let left: Vec<&str> = refused.left.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(left, ["default/attached", "default/scratch"]);
    assert!(refused.left.iter().all(|(_, why)| why.contains("not managed by a controller") && why.contains("drain.allow-bare-pods")));
    assert!(refused.evicted.is_empty() && refused.deleted.is_empty());
    assert_eq!(e.evictions(), 0, "a refused drain evicts nothing, not even the managed pods");
    assert!(refused.summary().contains("drain refused"), "{}", refused.summary());
    assert_eq!(e.pods.list(&Default::default()).await.unwrap().items.len(), 4);

    let allowed = DrainSettings { allow_bare_pods: true, ..settings(Duration::from_secs(5)) };
    let _kubelet = e.kubelet();
    let drained = e.drain(DrainContext::default(), &allowed).await;
    assert!(!drained.blocked && drained.left.is_empty(), "{drained:?}");
    assert_eq!(drained.evicted, ["default/attached", "default/scratch", "default/web-1"]);
    assert_eq!(drained.ignored, 1);
    let names: Vec<String> = e.pods.list(&Default::default()).await.unwrap().items.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, ["agent"]);
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
