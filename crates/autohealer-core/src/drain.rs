//! Draining a worker before a destructive step: evict its pods through the Eviction
//! API (PodDisruptionBudgets honoured), retry refusals until a deadline, then, only
//! if configured, delete what is left. DaemonSet and mirror pods are left alone, and
//! pods no controller owns stop the drain, as `kubectl drain` does.
//!
//! A pod is followed by its uid, not its name: a StatefulSet recreates its pod under
//! the same name, and that is a new pod, neither the one waited for nor one to evict.
//! Like `kubectl drain`, the drain acts on the pods bound to the node when it starts:
//! the caller's cordon keeps the scheduler from binding new ones here, and a pod that
//! comes back here anyway tolerates the cordon, so evicting it again would only chase
//! it until the timeout.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions as MetaPreconditions};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct DrainSettings {
    pub before_reboot: bool,
    pub before_replace: bool,
    /// How long evictions refused by a PodDisruptionBudget are retried.
    pub timeout: Duration,
    /// After the timeout, delete the pods that could not be evicted. On an
    /// unreachable node that is a force deletion, done only once the machine is
    /// confirmed down (see [`DrainContext::machine_down`]).
    pub force_delete: bool,
    pub retry_interval: Duration,
    /// Config `drain.allow-bare-pods`. Off, a pod no controller owns blocks the drain
    /// instead of being evicted: nothing would recreate it, so evicting it loses it.
    pub allow_bare_pods: bool,
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self {
            before_reboot: false,
            before_replace: true,
            timeout: Duration::from_secs(300),
            force_delete: false,
            retry_interval: Duration::from_secs(5),
            allow_bare_pods: false,
        }
    }
}

/// What the caller knows about the node's machine, which decides how far a drain may go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainContext {
    /// The kubelet stopped reporting: its pods cannot finish terminating, so the drain
    /// evicts and moves on instead of waiting for them to go.
    pub unreachable: bool,
    /// The cloud confirmed the machine is off. Only then are pods of an unreachable
    /// node force-deleted: before, a partitioned pod may still run, and a StatefulSet
    /// would start its replacement beside it.
    pub machine_down: bool,
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
    /// The drain refused to start: pods no controller owns are on the node (listed in
    /// `left`) and `drain.allow-bare-pods` is off. Nothing was evicted; the step must
    /// not go on, since a reboot or replace would take those pods with it.
    pub blocked: bool,
}

const BARE: &str = "not managed by a controller; set drain.allow-bare-pods to evict it";
const WAITS_FOR_DOWN: &str = "force deletion waits for the machine to be confirmed down";

impl DrainReport {
    pub fn summary(&self) -> String {
        if self.blocked {
            let left: Vec<&str> = self.left.iter().map(|(p, _)| p.as_str()).collect();
            return format!(
                "drain refused, nothing evicted: {} pods not managed by a controller would be lost ({}); set drain.allow-bare-pods to evict them",
                left.len(),
                left.join(", ")
            );
        }
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

/// An owner that is not the controller (`controller: true`) does not recreate the pod.
fn managed(p: &Pod) -> bool {
    p.owner_references().iter().any(|o| o.controller == Some(true))
}

fn terminating(p: &Pod) -> bool {
    p.meta().deletion_timestamp.is_some()
}

/// One pod of the drain, by uid; ordered by name so the report reads in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Tracked {
    ns: String,
    name: String,
    uid: String,
}

impl Tracked {
    fn of(p: &Pod) -> Self {
        Self { ns: p.namespace().unwrap_or_default(), name: p.name_any(), uid: p.uid().unwrap_or_default() }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

async fn list_on(client: &kube::Client, node: &str) -> Result<Vec<Pod>, kube::Error> {
    let all: Api<Pod> = Api::all(client.clone());
    Ok(all.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await?.items)
}

/// The pods still bound to `node` (namespace/name), for the Event that says whose
/// workloads a fence freed.
pub async fn pods_on(client: &kube::Client, node: &str) -> Result<Vec<String>, kube::Error> {
    Ok(list_on(client, node).await?.iter().filter(|p| !finished(p)).map(key).collect())
}

/// Posted by hand: kube's `EvictParams` serializes its delete options under a name the
/// apiserver ignores, and the uid precondition is what keeps a retry from evicting a
/// recreated pod of the same name.
async fn evict(client: &kube::Client, t: &Tracked) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &t.ns);
    let eviction = Eviction {
        metadata: ObjectMeta { name: Some(t.name.clone()), namespace: Some(t.ns.clone()), ..Default::default() },
        delete_options: Some(DeleteOptions {
            preconditions: Some(MetaPreconditions { uid: Some(t.uid.clone()), ..Default::default() }),
            ..Default::default()
        }),
    };
    api.create_subresource::<_, serde_json::Value>("eviction", &t.name, &PostParams::default(), &eviction).await.map(|_| ())
}

/// Deletes the tracked pod, not one recreated under its name; `Ok(false)` when it is gone.
async fn delete(client: &kube::Client, t: &Tracked, force: bool) -> Result<bool, kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &t.ns);
    let mut dp = DeleteParams::default().preconditions(Preconditions { uid: Some(t.uid.clone()), resource_version: None });
    if force {
        dp = dp.grace_period(0);
    }
    match api.delete(&t.name, &dp).await {
        Ok(_) => Ok(true),
        // 409: the uid precondition failed, so the name is a new pod's.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Drains `node`. A blocked report (see [`DrainReport::blocked`]) means nothing was
/// evicted and the step must not go on.
///
/// `client` must not retry 429s itself (kube's `default_retry`, off in the binary): a
/// budget's refusal is retried here, at the drain's interval and within its deadline.
pub async fn drain(
    client: &kube::Client,
    node: &str,
    ctx: DrainContext,
    settings: &DrainSettings,
    cancel: &CancellationToken,
) -> Result<DrainReport, kube::Error> {
    let mut present = list_on(client, node).await?;
    let mut report = DrainReport::default();
    let mut pending: BTreeSet<Tracked> = BTreeSet::new();
    // Evicted (by this drain or before it) and not gone yet.
    let mut waiting: BTreeSet<Tracked> = BTreeSet::new();
    let mut bare: Vec<String> = Vec::new();
    for p in &present {
        if !drainable(p) {
            report.ignored += 1;
            continue;
        }
        if finished(p) {
            continue;
        }
        if terminating(p) {
            waiting.insert(Tracked::of(p));
        } else if !managed(p) && !settings.allow_bare_pods {
            bare.push(key(p));
        } else {
            pending.insert(Tracked::of(p));
        }
    }
    // As `kubectl drain`, refuse before evicting anything: the step will not go on, so
    // disrupting the other pods would buy nothing.
    if !bare.is_empty() {
        report.blocked = true;
        report.left = bare.into_iter().map(|k| (k, BARE.to_string())).collect();
        return Ok(report);
    }
    let deadline = tokio::time::Instant::now() + settings.timeout;
    let mut refusals: BTreeMap<Tracked, String> = BTreeMap::new();
    loop {
        let alive: HashMap<String, bool> = present.iter().map(|p| (p.uid().unwrap_or_default(), terminating(p))).collect();
        pending.retain(|t| alive.contains_key(&t.uid));
        // Deleted by someone else meanwhile: it is on its way out, not to be evicted again.
        let now_terminating: Vec<Tracked> = pending.iter().filter(|t| alive.get(&t.uid) == Some(&true)).cloned().collect();
        for t in now_terminating {
            pending.remove(&t);
            waiting.insert(t);
        }
        waiting.retain(|t| alive.contains_key(&t.uid));
        refusals.retain(|t, _| pending.contains(t));
        let wait_for_termination = !ctx.unreachable && !waiting.is_empty();
        if (pending.is_empty() && !wait_for_termination) || tokio::time::Instant::now() >= deadline || cancel.is_cancelled() {
            break;
        }
        for t in pending.clone() {
            match evict(client, &t).await {
                Ok(()) => {
                    pending.remove(&t);
                    refusals.remove(&t);
                    report.evicted.push(t.key());
                    waiting.insert(t);
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    pending.remove(&t);
                    refusals.remove(&t);
                }
                Err(kube::Error::Api(s)) if s.code == 429 => {
                    refusals.insert(t, format!("eviction refused: {}", s.message));
                }
                // A 409 may be the uid precondition (the pod is gone) or a conflict worth
                // a retry: the next listing tells which.
                Err(e) => {
                    refusals.insert(t, format!("eviction failed: {e}"));
                }
            }
        }
        if pending.is_empty() && ctx.unreachable {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(settings.retry_interval) => {}
        }
        match list_on(client, node).await {
            Ok(p) => present = p,
            // The last listing stands: it keeps every pod, so nothing is taken for gone.
            Err(e) => tracing::debug!(node, error = %e, "cannot list the node's pods; retrying"),
        }
    }
    let cancelled = cancel.is_cancelled();
    let ended = if cancelled { "when the drain was cancelled" } else { "at the drain timeout" };
    for t in pending {
        let why = refusals.remove(&t).unwrap_or_else(|| format!("not evicted {ended}"));
        if !settings.force_delete || cancelled {
            report.left.push((t.key(), why));
        } else if ctx.unreachable && !ctx.machine_down {
            report.left.push((t.key(), format!("{why}; {WAITS_FOR_DOWN}")));
        } else {
            match delete(client, &t, ctx.unreachable).await {
                Ok(true) => report.deleted.push(t.key()),
                Ok(false) => {}
                Err(e) => report.left.push((t.key(), format!("{why}; delete failed: {e}"))),
            }
        }
    }
    for t in waiting {
        if !ctx.unreachable {
            report.left.push((t.key(), format!("evicted but still terminating {ended}")));
        } else if settings.force_delete && !cancelled {
            // Terminating on a node whose kubelet is gone: it stays until force-deleted.
            if ctx.machine_down {
                match delete(client, &t, true).await {
                    Ok(true) => report.deleted.push(t.key()),
                    Ok(false) => {}
                    Err(e) => report.left.push((t.key(), format!("evicted, still terminating; delete failed: {e}"))),
                }
            } else {
                report.left.push((t.key(), format!("evicted, still terminating on an unreachable node; {WAITS_FOR_DOWN}")));
            }
        }
    }
    Ok(report)
}
