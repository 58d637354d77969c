//! The cluster an end-to-end test runs against: the fake apiserver, or a real one when
//! `AUTOHEALER_E2E_KUBECONFIG` names a kubeconfig. Tests observe it only through the
//! Kubernetes API, so the same test runs unchanged against both.

use crate::apiserver::{ApiServerOptions, FakeApiServer};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::sync::{Arc, Mutex};

pub const E2E_KUBECONFIG: &str = "AUTOHEALER_E2E_KUBECONFIG";

pub struct TestCluster {
    pub client: kube::Client,
    /// A kubeconfig for this cluster, for replicas that build their own clients.
    pub kubeconfig: String,
    /// The fake apiserver, when the test runs against it.
    pub fake: Option<FakeApiServer>,
}

impl TestCluster {
    pub async fn start() -> anyhow::Result<Self> {
        match std::env::var(E2E_KUBECONFIG) {
            Ok(path) if !path.is_empty() => {
                let kubeconfig = std::fs::read_to_string(&path)?;
                let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig)?;
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
                let client = kube::Client::try_from(cfg)?;
                sweep_leftovers(&client).await;
                Ok(Self { client, kubeconfig, fake: None })
            }
            _ => {
                let fake = FakeApiServer::start(ApiServerOptions::default()).await?;
                Ok(Self { client: fake.client().await?, kubeconfig: fake.kubeconfig_yaml(), fake: Some(fake) })
            }
        }
    }

    /// A guard that deletes, when dropped (passed or failed), what a test with this
    /// prefix created on a real cluster: see [`cleanup`]. On the fake apiserver it does
    /// nothing: everything goes with the fake.
    pub fn cleanup_guard(&self, prefix: &str) -> CleanupGuard {
        CleanupGuard { kubeconfig: self.fake.is_none().then(|| self.kubeconfig.clone()), prefix: prefix.to_string() }
    }

    /// Events about a node, oldest first, as (reason, note).
    pub async fn node_events(&self, node: &str) -> Vec<(String, String)> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let Ok(list) = events.list(&Default::default()).await else {
            return vec![];
        };
        let mut out: Vec<_> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node))
            .map(|e| (e.event_time.map(|t| t.0), e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect();
        out.sort_by_key(|e| e.0);
        out.into_iter().map(|(_, r, n)| (r, n)).collect()
    }
}

/// How long a test's cleanup may take, at most, when its guard is dropped.
const CLEANUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Leftovers of tests (killed before their guard ran) older than this are swept.
const SWEEP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes what the test with `prefix` created, when dropped. `Drop` cannot await: the
/// cleanup runs on a fresh runtime on its own thread, with its own client, bounded by
/// [`CLEANUP_TIMEOUT`].
pub struct CleanupGuard {
    /// Set on a real cluster only.
    kubeconfig: Option<String>,
    prefix: String,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        let Some(kubeconfig) = self.kubeconfig.take() else { return };
        let prefix = std::mem::take(&mut self.prefix);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name(format!("cleanup-{prefix}")).spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            let result = rt.block_on(async {
                let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig)?;
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
                let client = kube::Client::try_from(cfg)?;
                tokio::time::timeout(CLEANUP_TIMEOUT, cleanup(&client, &prefix)).await?;
                anyhow::Ok(())
            });
            if let Err(e) = result {
                eprintln!("cleanup of {prefix}: {e:#}");
            }
            let _ = done_tx.send(());
        });
        if spawned.is_ok() && done_rx.recv_timeout(CLEANUP_TIMEOUT + std::time::Duration::from_secs(5)).is_err() {
            eprintln!("cleanup: gave up waiting after {CLEANUP_TIMEOUT:?}");
        }
    }
}

/// Whether a name belongs to the test with `prefix` (`{prefix}-…`, `…-{prefix}`, `…-{prefix}-…`).
fn mentions(name: &str, prefix: &str) -> bool {
    name == prefix
        || name.starts_with(&format!("{prefix}-"))
        || name.ends_with(&format!("-{prefix}"))
        || name.contains(&format!("-{prefix}-"))
}

/// Deletes what the test with `prefix` created: its Nodes and their Leases, its Leases
/// and ConfigMaps in kube-system (the healer's Lease, the pause and config ConfigMaps,
/// evidence of its nodes), its Pods and PodDisruptionBudgets in default, and every
/// Event about any of them. Errors are ignored: what is already gone is fine. Twice,
/// a moment apart, for what a kubelet or healer still stopping wrote in between.
pub async fn cleanup(client: &kube::Client, prefix: &str) {
    for pass in 0..2 {
        if pass > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        cleanup_once(client, prefix).await;
    }
}

async fn cleanup_once(client: &kube::Client, prefix: &str) {
    let dp = DeleteParams::default();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node_names: Vec<String> = Vec::new();
    if let Ok(list) = nodes.list(&ListParams::default()).await {
        for n in list.items {
            let name = n.metadata.name.unwrap_or_default();
            let labelled = n.metadata.labels.as_ref().and_then(|l| l.get(crate::sim::SIM_LABEL)).is_some_and(|v| v == prefix);
            if labelled || mentions(&name, prefix) {
                node_names.push(name);
            }
        }
    }
    for n in &node_names {
        let _ = nodes.delete(n, &dp).await;
    }
    let node_leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    if let Ok(list) = node_leases.list(&ListParams::default()).await {
        for l in list.items.into_iter().filter_map(|l| l.metadata.name) {
            if mentions(&l, prefix) || node_names.contains(&l) {
                let _ = node_leases.delete(&l, &dp).await;
            }
        }
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    if let Ok(list) = leases.list(&ListParams::default()).await {
        for l in list.items.into_iter().filter_map(|l| l.metadata.name).filter(|l| mentions(l, prefix)) {
            let _ = leases.delete(&l, &dp).await;
        }
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    if let Ok(list) = cms.list(&ListParams::default()).await {
        for c in list.items {
            let labels = c.metadata.labels.as_ref();
            let evidence = labels.and_then(|l| l.get("autohealer.dev/evidence-for")).is_some_and(|n| mentions(n, prefix));
            let labelled = labels.and_then(|l| l.get(crate::sim::SIM_LABEL)).is_some_and(|v| v == prefix);
            let name = c.metadata.name.unwrap_or_default();
            if evidence || labelled || mentions(&name, prefix) {
                let _ = cms.delete(&name, &dp).await;
            }
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    if let Ok(list) = pods.list(&ListParams::default()).await {
        for p in list.items.into_iter().filter_map(|p| p.metadata.name).filter(|p| mentions(p, prefix)) {
            // Their kubelet is gone: nothing else would finish a graceful delete.
            let _ = pods.delete(&p, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
        }
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    if let Ok(list) = pdbs.list(&ListParams::default()).await {
        for p in list.items.into_iter().filter_map(|p| p.metadata.name).filter(|p| mentions(p, prefix)) {
            let _ = pdbs.delete(&p, &dp).await;
        }
    }
    if let Ok(list) = Api::<Event>::all(client.clone()).list(&ListParams::default()).await {
        for e in list.items {
            let about = e.regarding.as_ref().and_then(|r| r.name.as_deref()).is_some_and(|n| mentions(n, prefix));
            if !about {
                continue;
            }
            let (Some(ns), Some(name)) = (e.metadata.namespace, e.metadata.name) else { continue };
            let _ = Api::<Event>::namespaced(client.clone(), &ns).delete(&name, &dp).await;
        }
    }
}

/// On a real cluster, before a test: deletes what earlier runs left behind (a test killed
/// before its guard ran), found by the testkit's label ([`crate::sim::SIM_LABEL`], whose
/// value is the run's prefix) on Nodes and ConfigMaps created more than an hour ago.
async fn sweep_leftovers(client: &kube::Client) {
    let cutoff = k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::try_from(SWEEP_AGE).unwrap_or_default();
    let lp = ListParams::default().labels(crate::sim::SIM_LABEL);
    let old =
        |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| meta.creation_timestamp.as_ref().is_some_and(|t| t.0 < cutoff);
    let mut prefixes = std::collections::BTreeSet::new();
    if let Ok(list) = Api::<Node>::all(client.clone()).list(&lp).await {
        prefixes.extend(
            list.items.iter().filter(|n| old(&n.metadata)).filter_map(|n| n.metadata.labels.as_ref()?.get(crate::sim::SIM_LABEL).cloned()),
        );
    }
    if let Ok(list) = Api::<ConfigMap>::namespaced(client.clone(), "kube-system").list(&lp).await {
        prefixes.extend(
            list.items.iter().filter(|c| old(&c.metadata)).filter_map(|c| c.metadata.labels.as_ref()?.get(crate::sim::SIM_LABEL).cloned()),
        );
    }
    for p in prefixes.into_iter().filter(|p| !p.is_empty()) {
        eprintln!("sweeping leftovers of an earlier test run: {p}");
        let _ = tokio::time::timeout(CLEANUP_TIMEOUT, cleanup_once(client, &p)).await;
    }
}

/// Every version of one Node, as a watch delivers them, so a test can check what
/// was written on the way and not only where it ended.
pub struct NodeRecorder {
    versions: Arc<Mutex<Vec<Node>>>,
    task: tokio::task::JoinHandle<()>,
}

impl NodeRecorder {
    pub fn start(client: kube::Client, name: &str) -> Self {
        let nodes: Api<Node> = Api::all(client);
        let versions: Arc<Mutex<Vec<Node>>> = Arc::default();
        let sink = versions.clone();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(async move {
            let mut s = watcher(nodes, cfg).applied_objects().boxed();
            while let Some(ev) = s.next().await {
                if let Ok(n) = ev {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(n);
                }
            }
        });
        Self { versions, task }
    }

    pub fn versions(&self) -> Vec<Node> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn latest(&self) -> Option<Node> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner()).last().cloned()
    }
}

impl Drop for NodeRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every version of one Pod a watch delivers, its last one as deleted too: what a pod
/// went through stays visible after the pod is gone (a real cluster's pod garbage
/// collector removes the pods of a deleted node, whatever happened to them before).
pub struct PodRecorder {
    versions: Arc<Mutex<Vec<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodRecorder {
    pub fn start(client: kube::Client, namespace: &str, name: &str) -> Self {
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let versions: Arc<Mutex<Vec<Pod>>> = Arc::default();
        let sink = versions.clone();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(async move {
            let mut s = watcher(pods, cfg).boxed();
            while let Some(ev) = s.next().await {
                let pod = match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p) | watcher::Event::Delete(p)) => p,
                    _ => continue,
                };
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(pod);
            }
        });
        Self { versions, task }
    }

    pub fn versions(&self) -> Vec<Pod> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether any version carried the Eviction API's `DisruptionTarget` condition.
    pub fn evicted(&self) -> bool {
        self.versions().iter().any(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "DisruptionTarget" && c.reason.as_deref() == Some("EvictionByEvictionAPI")))
        })
    }
}

impl Drop for PodRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
