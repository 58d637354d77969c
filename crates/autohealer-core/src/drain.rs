//! Draining a worker before a destructive step: evict its pods through the Eviction
//! API (PodDisruptionBudgets honoured), retry refusals until a deadline, then, only
//! if configured, delete what is left. DaemonSet and mirror pods are left alone, as
//! `kubectl drain` does.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, EvictParams, ListParams};
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct DrainSettings {
    pub before_reboot: bool,
    pub before_replace: bool,
    /// How long evictions refused by a PodDisruptionBudget are retried.
    pub timeout: Duration,
    /// After the timeout, delete the pods that could not be evicted.
    pub force_delete: bool,
    pub retry_interval: Duration,
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self {
            before_reboot: false,
            before_replace: true,
            timeout: Duration::from_secs(300),
            force_delete: false,
            retry_interval: Duration::from_secs(5),
        }
    }
}

/// What a drain did, for the Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    pub evicted: Vec<String>,
    pub deleted: Vec<String>,
    /// Pods still there, with why.
    pub left: Vec<(String, String)>,
    /// DaemonSet and mirror pods, which a drain leaves.
    pub ignored: usize,
}

impl DrainReport {
    pub fn summary(&self) -> String {
        let mut s = format!("drained: {} pods evicted", self.evicted.len());
        if !self.deleted.is_empty() {
            s.push_str(&format!(", {} deleted after the drain timeout ({})", self.deleted.len(), self.deleted.join(", ")));
        }
        if !self.left.is_empty() {
            let left: Vec<String> = self.left.iter().map(|(p, why)| format!("{p} ({why})")).collect();
            s.push_str(&format!(", {} left behind: {}", self.left.len(), left.join("; ")));
        }
        if self.ignored > 0 {
            s.push_str(&format!(", {} DaemonSet or mirror pods left as they are", self.ignored));
        }
        s
    }
}

fn key(p: &Pod) -> String {
    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
}

fn drainable(p: &Pod) -> bool {
    let mirror = p.annotations().contains_key("kubernetes.io/config.mirror");
    let daemon = p.owner_references().iter().any(|o| o.kind == "DaemonSet");
    !mirror && !daemon
}

fn finished(p: &Pod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// The pods still bound to `node` (namespace/name), for the Event that says whose
/// workloads a fence freed.
pub async fn pods_on(client: &kube::Client, node: &str) -> Result<Vec<String>, kube::Error> {
    let all: Api<Pod> = Api::all(client.clone());
    let list = all.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await?;
    Ok(list.items.iter().filter(|p| !finished(p)).map(key).collect())
}

/// Drains `node`. When it is `unreachable` (its kubelet is gone), pods cannot
/// terminate, so the drain evicts and moves on instead of waiting for them to go.
pub async fn drain(
    client: &kube::Client,
    node: &str,
    unreachable: bool,
    settings: &DrainSettings,
    cancel: &CancellationToken,
) -> Result<DrainReport, kube::Error> {
    let all: Api<Pod> = Api::all(client.clone());
    let on_node = all.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await?;
    let mut report = DrainReport::default();
    let mut pending: BTreeMap<String, Pod> = BTreeMap::new();
    for p in on_node.items {
        if !drainable(&p) {
            report.ignored += 1;
        } else if !finished(&p) && p.meta().deletion_timestamp.is_none() {
            pending.insert(key(&p), p);
        }
    }
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let mut refusals: BTreeMap<String, String> = BTreeMap::new();
    let mut evicted_waiting: Vec<String> = Vec::new();
    loop {
        let keys: Vec<String> = pending.keys().cloned().collect();
        for k in keys {
            let Some(p) = pending.get(&k) else { continue };
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
            match api.evict(&p.name_any(), &EvictParams::default()).await {
                Ok(_) => {
                    pending.remove(&k);
                    refusals.remove(&k);
                    report.evicted.push(k.clone());
                    evicted_waiting.push(k);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    pending.remove(&k);
                }
                Err(kube::Error::Api(s)) if s.code == 429 => {
                    refusals.insert(k, format!("eviction refused: {}", s.message));
                }
                Err(e) => {
                    refusals.insert(k, format!("eviction failed: {e}"));
                }
            }
        }
        // Evicted pods of a reachable node are waited for, so the step starts after they terminated.
        if !unreachable {
            let mut still = Vec::new();
            for k in evicted_waiting.drain(..) {
                let (ns, name) = k.split_once('/').unwrap_or(("", &k));
                let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                if matches!(api.get_opt(name).await, Ok(Some(_))) {
                    still.push(k);
                }
            }
            evicted_waiting = still;
        } else {
            evicted_waiting.clear();
        }
        if (pending.is_empty() && evicted_waiting.is_empty()) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(settings.retry_interval) => {}
        }
    }
    for (k, p) in pending {
        let why = refusals.get(&k).cloned().unwrap_or_else(|| "not evicted before the drain timeout".into());
        if settings.force_delete && !cancel.is_cancelled() {
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
            let dp = if unreachable { DeleteParams::default().grace_period(0) } else { DeleteParams::default() };
            match api.delete(&p.name_any(), &dp).await {
                Ok(_) => report.deleted.push(k),
                Err(e) => report.left.push((k, format!("{why}; delete failed: {e}"))),
            }
        } else {
            report.left.push((k, why));
        }
    }
    for k in evicted_waiting {
        report.left.push((k, "evicted but still terminating at the drain timeout".into()));
    }
    Ok(report)
}
