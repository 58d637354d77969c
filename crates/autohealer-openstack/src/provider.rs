//! The two strategies: `magnum` (cluster gate, health report, worker replace through a
//! node-group resize, master replace through Heat) and `nova` (reboot, then rebuild
//! with the server's image) for clusters Magnum does not manage.
//!
//! What a resize does depends on the Magnum driver behind the cluster, so the provider
//! finds it first ([`MagnumDriver`]): the Heat driver replaces the servers named in
//! `nodes_to_remove` at an unchanged count; vexxhost's Cluster API driver deletes them
//! only when the count goes down, so a replace there grows the group by a fresh machine
//! and shrinks it back naming the node; magnum-capi-helm cannot remove a given node at all, so the replace is
//! left to the cluster's MachineHealthCheck.

use crate::clients::{Cinder, Cluster, Heat, Magnum, NodeGroup, Nova, Reboot, Server};
use crate::config::{MagnumDriver, Strategy};
use crate::session::Session;
use autohealer_cloud::{Action, ActionOutcome, CloudError, CloudProvider, HealthReport, NodeInfo, Phase, Progress, RepairGate, Role};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which node field named the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    ProviderId,
    SystemUuid,
    MachineId,
}

fn as_uuid(s: &str) -> Option<String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect::<String>().to_lowercase();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}

/// The Nova server id of a node: `spec.providerID` (`openstack:///<id>` or
/// `openstack://<region>/<id>`), else `systemUUID` lowercased, else `machineID` read
/// as a UUID. Upstream used machineID alone, which is often not the server's id.
pub fn server_id(node: &NodeInfo) -> Result<(String, IdSource), CloudError> {
    if let Some(pid) = &node.provider_id
        && let Some(rest) = pid.strip_prefix("openstack://")
    {
        let id = rest.rsplit('/').next().unwrap_or_default();
        if !id.is_empty() {
            return Ok((id.to_string(), IdSource::ProviderId));
        }
    }
    if let Some(id) = node.system_uuid.as_deref().and_then(as_uuid) {
        return Ok((id, IdSource::SystemUuid));
    }
    if let Some(id) = node.machine_id.as_deref().and_then(as_uuid) {
        return Ok((id, IdSource::MachineId));
    }
    Err(CloudError::NoServer {
        node: node.name.clone(),
        reason: "no openstack:// spec.providerID, and neither status.nodeInfo.systemUUID nor machineID is a UUID".into(),
    })
}

/// The phases of a replace, as recorded in the node's ledger.
const EVIDENCE: &str = "evidence";
const DETACH: &str = "detach";
const STOP: &str = "stop";
const WAIT_STOPPED: &str = "wait-stopped";
const FORCE_DELETE: &str = "force-delete";
const RESIZE: &str = "resize";
const MARK_UNHEALTHY: &str = "mark-unhealthy";
const STACK_UPDATE: &str = "stack-update";
/// The Cluster API worker replace: the group grows by a fresh machine, then shrinks
/// back with the node named, in one call.
const GROW: &str = "grow";

/// How often a wait for the cloud reads it again.
const POLL: Duration = Duration::from_secs(1);
/// How long a Magnum write is given to show (the count or the status changing) before
/// the next write is let through: Magnum's conductor acts after the 202.
const SEEN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a write waits for before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// No update under way, whoever began it.
    Idle,
    /// The group shows at least this count (the healer's own grow): vexxhost's driver
    /// keeps the group `UPDATE_IN_PROGRESS` while it has a machine not Ready, which the
    /// broken node is until the shrink removes it.
    Grown(u64),
}

/// An instant `d` from now, bounded so that an absurd configured duration cannot overflow.
fn later(d: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(d).unwrap_or(now + Duration::from_secs(365 * 24 * 3600))
}

/// The Magnum driver, and what said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// `None` when nothing said clearly: the provider then does only what is safe on
    /// every driver (reboots) and leaves replaces to the cluster.
    pub driver: Option<MagnumDriver>,
    pub how: String,
    /// The cluster's `auto_scaling_enabled` label: on the Cluster API drivers the
    /// cluster-autoscaler then sets the node groups' size, and a resize does not.
    pub autoscaled: bool,
    /// When it was found: what said nothing clearly is asked again later.
    pub at: Instant,
}

/// How long an inconclusive detection (a cluster still being created, a name that says
/// nothing) is kept before the APIs are asked again.
const UNKNOWN_FOR: Duration = Duration::from_secs(600);

impl Detected {
    fn fresh(&self) -> bool {
        self.driver.is_some() || self.at.elapsed() < UNKNOWN_FOR
    }
}

/// The Cluster API name vexxhost's driver gives a cluster (`kube-` and five
/// characters; older releases `<name>-<10 characters>`), and magnum-capi-helm's
/// (`<name>-<12 characters>`), as their `generate_cluster_api_name` and
/// `_generate_release_name` write it to `stack_id`.
fn driver_of_name(stack_id: &str) -> Option<MagnumDriver> {
    let tail = stack_id.rsplit('-').next().unwrap_or_default();
    let plain = |s: &str| s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !plain(tail) || !stack_id.contains('-') {
        return None;
    }
    match tail.len() {
        5 if stack_id.starts_with("kube-") && stack_id.len() == 10 => Some(MagnumDriver::ClusterApi),
        10 => Some(MagnumDriver::ClusterApi),
        12 => Some(MagnumDriver::CapiHelm),
        _ => None,
    }
}

/// How long the `auto_healing_enabled` label read by the gate is trusted by the health
/// report: the gate is asked only before repairs, so on a quiet cluster the report reads
/// the label itself at most this often instead of on every change.
const LABEL_FRESH: Duration = Duration::from_secs(60);

pub struct OpenStackProvider {
    session: Session,
    strategy: Strategy,
    cluster: Option<String>,
    stop_timeout: Duration,
    console_lines: usize,
    last_health: Mutex<Option<(String, BTreeMap<String, String>)>>,
    /// Console output taken at the `evidence` phase, by server id, until the replace is
    /// issued: it is too large for the ledger, and after the stop it shows the shutdown
    /// rather than the failure.
    evidence: Mutex<HashMap<String, String>>,
    /// The last `auto_healing_enabled` value read and when, so the health report obeys
    /// the label as upstream does without reading the cluster for every report.
    auto_healing: Mutex<Option<(Instant, bool)>>,
    /// The configured driver, or the one found once (a cluster does not change driver).
    driver: Mutex<Option<Detected>>,
    /// Held from the wait for the cluster to settle until the write shows: Magnum runs
    /// one resize of a cluster at a time (a second one under the Heat driver fails the
    /// cluster), so the healer's node tasks write one after the other.
    writes: tokio::sync::Mutex<()>,
    busy_timeout: Duration,
    /// The node group a Cluster API replace holds from its first read to its shrink, with the
    /// server it replaces: the two resizes give absolute counts, which hold only while
    /// no other replace of the group runs between them.
    groups: Mutex<HashMap<String, (String, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A value a later phase needs; missing only if the ledger entry was damaged.
fn data<'a>(at: &'a Phase, key: &str) -> Result<&'a str, CloudError> {
    at.get(key).ok_or_else(|| CloudError::Other(format!("replace phase {:?} has no {key:?} in its data", at.name)))
}

/// The next phase: it carries the data and, once set, `out_of_service`.
fn then(at: &Phase, name: &str) -> Progress {
    Progress::Next(Phase { name: name.into(), data: at.data.clone(), out_of_service: at.out_of_service })
}

/// The stop may take the machine out of service; every phase after it keeps saying so.
fn then_stop(at: &Phase) -> Progress {
    Progress::Next(Phase { name: STOP.into(), data: at.data.clone(), out_of_service: false }.out_of_service())
}

fn unknown_phase(at: &Phase, what: &str) -> CloudError {
    CloudError::Other(format!("unknown phase {:?} for a {what} replace", at.name))
}

fn is_404(e: &CloudError) -> bool {
    matches!(e, CloudError::Call { status: Some(404), .. })
}

fn label_enabled(c: &Cluster) -> bool {
    c.labels.get("auto_healing_enabled").and_then(|v| truthy(v)) == Some(true)
}

impl OpenStackProvider {
    pub fn new(session: Session) -> Self {
        let s = session.settings().clone();
        Self {
            session,
            strategy: s.strategy,
            cluster: s.cluster,
            stop_timeout: s.stop_timeout,
            console_lines: s.console_lines,
            last_health: Mutex::new(None),
            evidence: Mutex::new(HashMap::new()),
            auto_healing: Mutex::new(None),
            driver: Mutex::new(s.magnum_driver.map(|d| Detected {
                driver: Some(d),
                how: "set by openstack.magnum-driver".into(),
                autoscaled: false,
                at: Instant::now(),
            })),
            writes: tokio::sync::Mutex::new(()),
            busy_timeout: s.cluster_busy_timeout,
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// The Magnum driver: a `stack_id` that Heat knows is the Heat driver; a Cluster API
    /// name without a Heat stack, with the capi-helm chart label on the cluster or its
    /// template, or in the form each Cluster API driver gives it, says which. Found once;
    /// an answer that says nothing for sure (an error) is not kept.
    pub async fn driver(&self) -> Result<Detected, CloudError> {
        let id = self.cluster_id()?;
        let cluster = Magnum(&self.session).cluster(id).await?;
        self.driver_of(&cluster).await
    }

    /// The driver known, or found now from `c` if what is known is stale. A configured
    /// driver still reads the autoscaling label from the cluster as read.
    async fn driver_of(&self, c: &Cluster) -> Result<Detected, CloudError> {
        let known = lock(&self.driver).clone();
        let autoscaled = c.labels.get("auto_scaling_enabled").and_then(|v| truthy(v)) == Some(true);
        let d = match known {
            Some(d) if d.fresh() => Detected { autoscaled, ..d },
            _ => {
                let d = self.detect(c).await?;
                tracing::info!(cluster = %c.uuid, driver = d.driver.map_or("unknown", MagnumDriver::as_str), how = %d.how, "Magnum driver");
                Detected { autoscaled, ..d }
            }
        };
        *lock(&self.driver) = Some(d.clone());
        Ok(d)
    }

    async fn detect(&self, c: &Cluster) -> Result<Detected, CloudError> {
        let found = |driver, how: String| Ok(Detected { driver, how, autoscaled: false, at: Instant::now() });
        let Some(stack_id) = &c.stack_id else {
            return found(None, "the cluster has no stack_id yet: set openstack.magnum-driver".into());
        };
        match Heat(&self.session).find(stack_id).await {
            Ok((name, _)) => return found(Some(MagnumDriver::Heat), format!("stack_id {stack_id} is Heat stack {name}")),
            Err(e) if is_404(&e) => {}
            // No Heat in the catalog: a Cluster API cloud.
            Err(CloudError::Other(m)) if m.contains("Keystone catalog") => {}
            Err(e) => return Err(e),
        }
        let chart = "capi_helm_chart_version";
        if c.labels.contains_key(chart) {
            return found(Some(MagnumDriver::CapiHelm), format!("no Heat stack {stack_id}; the cluster has the {chart} label"));
        }
        if let Some(t) = &c.template
            && Magnum(&self.session).template_labels(t).await?.contains_key(chart)
        {
            return found(Some(MagnumDriver::CapiHelm), format!("no Heat stack {stack_id}; cluster template {t} has the {chart} label"));
        }
        match driver_of_name(stack_id) {
            Some(d) => found(Some(d), format!("no Heat stack {stack_id}; the name is one the {} driver gives", d.as_str())),
            None => found(None, format!("no Heat stack {stack_id}, and the name says no driver: set openstack.magnum-driver")),
        }
    }

    fn known_driver(&self) -> Option<Option<MagnumDriver>> {
        lock(&self.driver).as_ref().map(|d| d.driver)
    }

    fn autoscaled(&self) -> bool {
        lock(&self.driver).as_ref().is_some_and(|d| d.autoscaled)
    }

    /// The authenticated session, for callers that talk to the cloud beside the provider.
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn cluster_id(&self) -> Result<&str, CloudError> {
        self.cluster.as_deref().ok_or_else(|| CloudError::Other("cluster-name is not set".into()))
    }

    fn server(&self, node: &NodeInfo) -> Result<String, CloudError> {
        let (id, source) = server_id(node)?;
        tracing::debug!(node = %node.name, server = %id, ?source, "node mapped to a server");
        Ok(id)
    }

    /// The server a replace acts on is the one its first phase recorded: the node may
    /// have been given another machine since.
    fn phase_server(&self, node: &NodeInfo, at: &Phase) -> Result<String, CloudError> {
        match at.get("server") {
            Some(id) => Ok(id.to_string()),
            None => self.server(node),
        }
    }

    /// The server, or `None` once Nova no longer knows it.
    async fn read_server(&self, id: &str) -> Result<Option<Server>, CloudError> {
        match Nova(&self.session).server(id).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_404(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The tail of the server's console output, taken before a destructive step so an
    /// operator can see why the machine failed after it is gone.
    async fn console(&self, id: &str) -> Option<String> {
        if self.console_lines == 0 {
            return None;
        }
        Some(match Nova(&self.session).console(id, self.console_lines).await {
            Ok(out) => out,
            Err(e) => format!("console output unavailable: {e}"),
        })
    }

    async fn keep_evidence(&self, id: &str) {
        if let Some(out) = self.console(id).await {
            lock(&self.evidence).insert(id.to_string(), out);
        }
    }

    /// The evidence for the outcome. Another leader (or this one after a restart) holds
    /// none, so it is read again, marked as read late.
    async fn kept_evidence(&self, id: &str) -> Option<String> {
        if let Some(e) = lock(&self.evidence).get(id).cloned() {
            return Some(e);
        }
        let late = self.console(id).await?;
        let late = format!("(read after the server was stopped: the output taken before was not kept)\n{late}");
        lock(&self.evidence).insert(id.to_string(), late.clone());
        Some(late)
    }

    fn forget_evidence(&self, id: &str) {
        lock(&self.evidence).remove(id);
    }

    /// Waits until the server is SHUTOFF (or gone), polling every second.
    async fn wait_stopped(&self, id: &str) -> Result<bool, CloudError> {
        let deadline = tokio::time::Instant::now() + self.stop_timeout;
        loop {
            match self.read_server(id).await? {
                Some(s) if s.status == "SHUTOFF" => return Ok(true),
                Some(_) => {}
                None => return Ok(true),
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_secs(1).min(self.stop_timeout)).await;
        }
    }

    /// Detaches every non-bootable volume; returns the root volume, if any. Listing the
    /// attachments each time makes it safe to repeat.
    async fn detach_data_volumes(&self, id: &str) -> Result<Option<String>, CloudError> {
        let nova = Nova(&self.session);
        let mut root = None;
        for (attachment, volume) in nova.attachments(id).await? {
            if Cinder(&self.session).bootable(&volume).await? {
                root = Some(volume);
            } else {
                tracing::info!(server = id, volume, "detaching data volume before replace");
                nova.detach(id, &attachment).await?;
            }
        }
        Ok(root)
    }

    /// Stops the server. A resumed stop may already have been sent: Nova refuses a second
    /// one with a 409, so the server is read first and a stop under way or done is kept.
    async fn stop(&self, id: &str, resumed: bool) -> Result<(), CloudError> {
        if resumed {
            match self.read_server(id).await? {
                None => {
                    tracing::info!(server = id, "server is gone; no stop needed");
                    return Ok(());
                }
                Some(s) if s.status == "SHUTOFF" || s.task_state.as_deref() == Some("powering-off") => {
                    tracing::info!(server = id, status = %s.status, "server already stopped or stopping; not stopped again");
                    return Ok(());
                }
                Some(_) => {}
            }
        }
        Nova(&self.session).stop(id).await
    }

    /// Waits until neither the cluster nor the node group nor, on the Heat driver, the
    /// cluster's stack has an update under way, whoever started it, and refuses a failed
    /// one: the gate read again right before a write. Returns the group as read then.
    async fn wait_idle(&self, cluster: &str, group: Option<&str>) -> Result<Option<NodeGroup>, CloudError> {
        self.wait_for(cluster, group, Settled::Idle).await
    }

    async fn wait_for(&self, cluster: &str, group: Option<&str>, until: Settled) -> Result<Option<NodeGroup>, CloudError> {
        let magnum = Magnum(&self.session);
        let deadline = later(self.busy_timeout);
        let on_heat = self.known_driver() == Some(Some(MagnumDriver::Heat));
        // vexxhost's driver keeps a group (and the cluster) `UPDATE_IN_PROGRESS` while a
        // machine of it is not Ready, which a broken node is: there the status cannot say
        // whether a resize is being applied, the group's machines against its count can.
        let capi = self.known_driver() == Some(Some(MagnumDriver::ClusterApi));
        loop {
            let c = magnum.cluster(cluster).await?;
            let reason = || c.status_reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            if c.status.ends_with("_FAILED") {
                return Err(CloudError::Other(format!("cluster {cluster} is {}{}; no Magnum write is sent to it", c.status, reason())));
            }
            let mut busy =
                (until == Settled::Idle && !capi && !c.status.ends_with("_COMPLETE")).then(|| format!("cluster {cluster} is {}", c.status));
            let mut ng = None;
            if busy.is_none()
                && let Some(g) = group
            {
                let n = magnum.nodegroup(cluster, g).await?;
                if n.status.ends_with("_FAILED") {
                    return Err(CloudError::Other(format!(
                        "node group {g} of cluster {cluster} is {}; no Magnum write is sent to it",
                        n.status
                    )));
                }
                let machines = n.node_addresses.len() as u64;
                let listed = !n.node_addresses.is_empty();
                match until {
                    Settled::Idle if capi && listed && machines != n.node_count => {
                        busy = Some(format!("node group {g} has {machines} machines for a count of {}", n.node_count))
                    }
                    Settled::Idle if !capi && n.status.ends_with("_IN_PROGRESS") => busy = Some(format!("node group {g} is {}", n.status)),
                    // The grow's machine exists (where the driver lists the group's
                    // addresses) before the next resize goes out.
                    Settled::Grown(to) if n.node_count < to || (!n.node_addresses.is_empty() && (n.node_addresses.len() as u64) < to) => {
                        busy = Some(format!("node group {g} is at {} nodes, not yet {to}", n.node_count))
                    }
                    _ => {}
                }
                ng = Some(n);
            }
            if busy.is_none()
                && on_heat
                && let Some(stack) = &c.stack_id
            {
                let heat = Heat(&self.session);
                let (name, id) = heat.find(stack).await?;
                let status = heat.status(&name, &id).await?;
                if status.ends_with("_FAILED") {
                    return Err(CloudError::Other(format!("stack {name} of cluster {cluster} is {status}; no update is sent to it")));
                }
                if status.ends_with("_IN_PROGRESS") {
                    busy = Some(format!("stack {name} is {status}"));
                }
            }
            let Some(why) = busy else { return Ok(ng) };
            if tokio::time::Instant::now() >= deadline {
                return Err(CloudError::Other(format!(
                    "{why} after waiting {} (openstack.cluster-busy-timeout): an update under way, the healer's or another's (cluster-autoscaler, an operator)",
                    humantime::format_duration(self.busy_timeout)
                )));
            }
            tracing::info!(cluster, %why, "waiting for the cluster to settle before writing to it");
            tokio::time::sleep(POLL).await;
        }
    }

    /// One resize of a node group, one at a time per cluster: waits for the cluster to
    /// settle (or, `Settled::Grown`, for the group to show the healer's own grow), sends
    /// it, and holds the next writer back until Magnum shows it (the group's count
    /// changed, or its status left `_COMPLETE`), since the conductor acts after the 202.
    /// Once the resize was accepted, a failure to see it is only logged: the write is
    /// done and must not be taken for one that was not sent.
    async fn resize_one(&self, cluster: &str, group: &str, count: u64, remove: &[String], until: Settled) -> Result<(), CloudError> {
        let _turn = self.writes.lock().await;
        let before = self.wait_for(cluster, Some(group), until).await?.map(|n| n.node_count);
        let magnum = Magnum(&self.session);
        magnum.resize(cluster, group, count, remove).await?;
        let deadline = later(SEEN_TIMEOUT);
        loop {
            match magnum.nodegroup(cluster, group).await {
                Ok(n) if (n.node_count == count && before != Some(count)) || !n.status.ends_with("_COMPLETE") => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(cluster, group, error = %e, "the resize was accepted; cannot read the node group to see it");
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(cluster, group, "the resize was accepted and does not show yet; letting the next write through");
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A Heat stack update, as a write of the cluster: after the cluster settles, and
    /// before the next one until the stack shows it.
    async fn stack_update_one(&self, cluster: &str, name: &str, id: &str) -> Result<(), CloudError> {
        let _turn = self.writes.lock().await;
        self.wait_idle(cluster, None).await?;
        let heat = Heat(&self.session);
        heat.update(name, id).await?;
        let deadline = later(SEEN_TIMEOUT);
        while tokio::time::Instant::now() < deadline {
            match heat.status(name, id).await {
                Ok(s) if !s.ends_with("_COMPLETE") => break,
                Ok(_) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    tracing::warn!(stack = name, error = %e, "the stack update was accepted; cannot read the stack to see it");
                    break;
                }
            }
        }
        Ok(())
    }

    /// The read-only first call: finds the node group, whose name and size the resize
    /// needs, while nothing has been changed yet.
    async fn worker_begin(&self, node: &NodeInfo) -> Result<Progress, CloudError> {
        let id = self.server(node)?;
        let cluster = self.cluster_id()?;
        let addresses: Vec<&str> = node.addresses.iter().map(|(_, a)| a.as_str()).collect();
        let groups = Magnum(&self.session).nodegroups(cluster).await?;
        let group =
            groups.iter().find(|g| g.node_addresses.iter().any(|a| addresses.contains(&a.as_str()))).ok_or_else(|| CloudError::Call {
                call: format!("magnum GET /v1/clusters/{cluster}/nodegroups"),
                status: None,
                message: format!("no node group lists an address of node {} ({})", node.name, addresses.join(", ")),
            })?;
        let driver = self.driver().await?.driver;
        let mut first =
            Phase::new(EVIDENCE).with("server", &id).with("nodegroup", &group.name).with("node_count", group.node_count.to_string());
        if let Some(d) = driver {
            first = first.with("driver", d.as_str());
        }
        Ok(Progress::Next(first))
    }

    async fn replace_worker(&self, node: &NodeInfo, at: Option<&Phase>, resumed: bool) -> Result<Progress, CloudError> {
        let Some(at) = at else { return self.worker_begin(node).await };
        // The flow is the one the replace began with, whatever is configured since.
        if at.get("driver") == Some(MagnumDriver::ClusterApi.as_str()) {
            return self.replace_capi_worker(node, at, resumed).await;
        }
        let id = self.phase_server(node, at)?;
        match at.name.as_str() {
            EVIDENCE => {
                self.keep_evidence(&id).await;
                Ok(then(at, DETACH))
            }
            DETACH => {
                self.detach_data_volumes(&id).await?;
                Ok(then_stop(at))
            }
            STOP => {
                // A resize of someone else's is waited for before the server is stopped,
                // not after: a stopped server waits for nothing.
                self.wait_idle(self.cluster_id()?, at.get("nodegroup")).await?;
                self.stop(&id, resumed).await?;
                Ok(then(at, WAIT_STOPPED))
            }
            WAIT_STOPPED => {
                if !self.wait_stopped(&id).await? {
                    tracing::warn!(server = %id, "server did not stop in time; resizing anyway");
                }
                Ok(then(at, RESIZE))
            }
            RESIZE => {
                let cluster = self.cluster_id()?;
                let group = data(at, "nodegroup")?;
                let count: u64 = data(at, "node_count")?.parse().map_err(|_| {
                    CloudError::Other(format!("replace phase {RESIZE:?}: node_count {:?} is not a number", at.get("node_count")))
                })?;
                let evidence = self.kept_evidence(&id).await;
                // Resumed, the resize may have been sent with its answer lost (or, rarely,
                // never: the leader stopped right after writing this phase). A second one
                // would shrink the group again, so it is never sent twice: the server gone
                // says it went out; otherwise the node's return verifies it, and if none
                // comes within replace-timeout the healer restores the machine and the
                // repair is retried.
                let detail = if resumed {
                    if self.server_gone(&id).await? {
                        format!("server {id} is gone: the resize of node group {group} removing it went out earlier")
                    } else {
                        format!(
                            "server {id} stopped; the resize of node group {group} removing it may already have been sent, so it is not sent again: the new node verifies it"
                        )
                    }
                } else {
                    self.resize_one(cluster, group, count, std::slice::from_ref(&id), Settled::Idle).await?;
                    format!("server {id} stopped and removed from node group {group} (resize to {count} nodes accepted)")
                };
                self.forget_evidence(&id);
                Ok(Progress::Done(ActionOutcome { server_id: Some(id), detail, evidence }))
            }
            _ => Err(unknown_phase(at, "worker")),
        }
    }

    fn group_and_count<'a>(&self, at: &'a Phase) -> Result<(&'a str, u64), CloudError> {
        let group = data(at, "nodegroup")?;
        let count = data(at, "node_count")?.parse().map_err(|_| {
            CloudError::Other(format!("replace phase {:?}: node_count {:?} is not a number", at.name, at.get("node_count")))
        })?;
        Ok((group, count))
    }

    /// Waits until no other Cluster API replace holds `group`, then holds it for `server`.
    /// A hold older than twice `cluster-busy-timeout` is taken as abandoned.
    async fn claim_group(&self, group: &str, server: &str) -> Result<(), CloudError> {
        let deadline = later(self.busy_timeout);
        let stale = self.busy_timeout.saturating_mul(2);
        loop {
            let holder = {
                let mut g = lock(&self.groups);
                match g.get(group) {
                    Some((other, at)) if other != server && at.elapsed() < stale => Some(other.clone()),
                    _ => {
                        g.insert(group.to_string(), (server.to_string(), Instant::now()));
                        None
                    }
                }
            };
            let Some(other) = holder else { return Ok(()) };
            if tokio::time::Instant::now() >= deadline {
                return Err(CloudError::Other(format!(
                    "node group {group} is still being replaced into for server {other} after {}: one replace of a group at a time",
                    humantime::format_duration(self.busy_timeout)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn release_group(&self, group: &str, server: &str) {
        let mut g = lock(&self.groups);
        if g.get(group).is_some_and(|(s, _)| s == server) {
            g.remove(group);
        }
    }

    /// Gives the group back the size it had before the grow, removing the node's machine;
    /// if that machine went meanwhile (the cluster's MachineHealthCheck deleted it), the
    /// size alone is given back.
    async fn shrink_back(&self, cluster: &str, group: &str, count: u64, id: &str) -> Result<(), CloudError> {
        let named = if self.server_gone(id).await? { Vec::new() } else { vec![id.to_string()] };
        self.resize_one(cluster, group, count, &named, Settled::Grown(count + 1)).await
    }

    /// vexxhost's driver deletes the Machines named in `nodes_to_remove` only when the
    /// count goes down: the group is grown by one (a fresh machine), then shrunk back with
    /// the node named, which deletes its Machine. Growing first keeps the capacity, and
    /// it puts last the call after which the Node is deleted (Cluster API deletes it with
    /// its Machine, and the ledger with it). Nothing is stopped: Cluster API drains and
    /// deletes the machine itself. The size both resizes give is read once, while the
    /// group is held and settled, and recorded before either is sent, so a resumed one
    /// sends the same absolute count again, never one more.
    async fn replace_capi_worker(&self, node: &NodeInfo, at: &Phase, resumed: bool) -> Result<Progress, CloudError> {
        let id = self.phase_server(node, at)?;
        let cluster = self.cluster_id()?;
        let (group, count) = self.group_and_count(at)?;
        match at.name.as_str() {
            EVIDENCE => {
                self.keep_evidence(&id).await;
                self.claim_group(group, &id).await?;
                let read = self
                    .wait_idle(cluster, Some(group))
                    .await
                    .and_then(|n| n.ok_or_else(|| CloudError::Other(format!("node group {group} could not be read"))));
                let n = match read {
                    Ok(n) => n,
                    Err(e) => {
                        self.release_group(group, &id);
                        return Err(e);
                    }
                };
                if n.max_node_count.is_some_and(|max| n.node_count >= max) {
                    self.release_group(group, &id);
                    return Err(CloudError::Unsupported {
                        provider: "openstack".into(),
                        action: Action::Replace,
                        reason: format!(
                            "node group {group} is at its max_node_count ({}): the Cluster API driver replaces a node by growing the group by one first",
                            n.node_count
                        ),
                    });
                }
                // Once the group may have grown, the step is finished or the size given back.
                let mut next = Phase { name: GROW.into(), data: at.data.clone(), out_of_service: true };
                next.data.insert("node_count".into(), n.node_count.to_string());
                Ok(Progress::Next(next))
            }
            GROW => {
                // The grow and the shrink are one call: the ledger lives on the Node, which
                // Cluster API may delete between two calls (its MachineHealthCheck
                // remediating the same node), and a group left grown would stay so.
                self.claim_group(group, &id).await?;
                let n = Magnum(&self.session).nodegroup(cluster, group).await?;
                let gone = self.server_gone(&id).await?;
                if resumed && n.node_count <= count && gone {
                    self.release_group(group, &id);
                    self.forget_evidence(&id);
                    let detail =
                        format!("server {id} is gone and node group {group} is at {} nodes: the replace went out earlier", n.node_count);
                    return Ok(Progress::Done(ActionOutcome { server_id: Some(id), detail, evidence: None }));
                }
                let grown = resumed && n.node_count > count;
                if grown {
                    tracing::info!(server = %id, group, "the node group was grown earlier; not grown again");
                } else if let Err(e) = self.resize_one(cluster, group, count + 1, &[], Settled::Idle).await {
                    if !e.is_uncertain() {
                        self.release_group(group, &id);
                    }
                    return Err(e);
                }
                let evidence = self.kept_evidence(&id).await;
                self.shrink_back(cluster, group, count, &id).await?;
                self.release_group(group, &id);
                self.forget_evidence(&id);
                let detail = format!(
                    "node group {group} grown by a fresh machine, then resized back to {count} with server {id} in nodes_to_remove: Cluster API deletes its Machine"
                );
                Ok(Progress::Done(ActionOutcome { server_id: Some(id), detail, evidence }))
            }
            _ => Err(unknown_phase(at, "Cluster API worker")),
        }
    }

    /// The read-only first call: finds the server's resource in the cluster's Heat stack,
    /// and refuses a cluster without one before anything is changed.
    async fn master_begin(&self, node: &NodeInfo) -> Result<Progress, CloudError> {
        let id = self.server(node)?;
        let cluster_id = self.cluster_id()?;
        let cluster = Magnum(&self.session).cluster(cluster_id).await?;
        let Some(stack_id) = cluster.stack_id else {
            return Err(CloudError::Unsupported {
                provider: "openstack".into(),
                action: Action::Replace,
                reason: format!(
                    "cluster {cluster_id} has no Heat stack (a Magnum driver without Heat); a master cannot be rebuilt through Heat"
                ),
            });
        };
        let heat = Heat(&self.session);
        let (stack_name, stack_id) = heat.find(&stack_id).await?;
        let resources = heat.resources(&stack_name, &stack_id).await?;
        let server = resources.iter().find(|r| r.type_ == "OS::Nova::Server" && r.physical_id == id).ok_or_else(|| CloudError::Call {
            call: format!("heat GET /stacks/{stack_name}/{stack_id}/resources?nested_depth=2"),
            status: None,
            message: format!("server {id} is not a resource of stack {stack_name}"),
        })?;
        let (parent_name, parent_id) = server.stack.clone().unwrap_or((stack_name.clone(), stack_id.clone()));
        Ok(Progress::Next(
            Phase::new(EVIDENCE)
                .with("server", &id)
                .with("stack_name", stack_name)
                .with("stack_id", stack_id)
                .with("parent_name", parent_name)
                .with("parent_id", parent_id)
                .with("resource", &server.name),
        ))
    }

    async fn replace_master(&self, node: &NodeInfo, at: Option<&Phase>, resumed: bool) -> Result<Progress, CloudError> {
        let Some(at) = at else { return self.master_begin(node).await };
        let id = self.phase_server(node, at)?;
        let heat = Heat(&self.session);
        let reason = "marked unhealthy by autohealer";
        let parent = || -> Result<(String, String), CloudError> { Ok((data(at, "parent_name")?.into(), data(at, "parent_id")?.into())) };
        match at.name.as_str() {
            EVIDENCE => {
                self.keep_evidence(&id).await;
                Ok(then(at, DETACH))
            }
            DETACH => {
                // The root volume is marked with the server so the stack update recreates
                // both; marking again is harmless, so a resumed detach just repeats.
                if let Some(root) = self.detach_data_volumes(&id).await? {
                    let resources = heat.resources(data(at, "stack_name")?, data(at, "stack_id")?).await?;
                    if let Some(r) = resources.iter().find(|r| r.physical_id == root) {
                        heat.mark_unhealthy(&r.stack.clone().map_or_else(parent, Ok)?, &r.name, reason).await?;
                    }
                }
                Ok(then_stop(at))
            }
            STOP => {
                self.stop(&id, resumed).await?;
                Ok(then(at, WAIT_STOPPED))
            }
            WAIT_STOPPED => {
                if self.wait_stopped(&id).await? {
                    Ok(then(at, MARK_UNHEALTHY))
                } else {
                    tracing::warn!(server = %id, "server did not stop in time; force-deleting it so the stack update can rebuild it");
                    Ok(then(at, FORCE_DELETE))
                }
            }
            FORCE_DELETE => {
                let needed = !resumed || self.read_server(&id).await?.is_some_and(|s| s.status != "SHUTOFF");
                // As upstream: a failed force-delete is not fatal, the stack update
                // replaces the server marked unhealthy either way.
                if needed && let Err(e) = Nova(&self.session).force_delete(&id).await {
                    tracing::warn!(server = %id, error = %e, "force-delete failed; going on with the stack update");
                }
                Ok(then(at, MARK_UNHEALTHY))
            }
            MARK_UNHEALTHY => {
                heat.mark_unhealthy(&parent()?, data(at, "resource")?, reason).await?;
                Ok(then(at, STACK_UPDATE))
            }
            STACK_UPDATE => {
                let stack_name = data(at, "stack_name")?;
                let (parent_name, _) = parent()?;
                let evidence = self.kept_evidence(&id).await;
                // Resumed, never sent twice, as a resumed resize.
                let detail = if resumed {
                    if self.server_gone(&id).await? {
                        format!("server {id} is gone: the update of stack {stack_name} rebuilding it went out earlier")
                    } else {
                        format!(
                            "server {id} marked unhealthy in stack {parent_name}; the update of stack {stack_name} may already have been sent, so it is not sent again: the rebuilt node verifies it"
                        )
                    }
                } else {
                    self.stack_update_one(self.cluster_id()?, stack_name, data(at, "stack_id")?).await?;
                    format!("server {id} marked unhealthy in stack {parent_name}; stack {stack_name} update started to rebuild it")
                };
                self.forget_evidence(&id);
                Ok(Progress::Done(ActionOutcome { server_id: Some(id), detail, evidence }))
            }
            _ => Err(unknown_phase(at, "master")),
        }
    }

    /// Whether the server is gone (404 from Nova): the resumed last call went out.
    async fn server_gone(&self, id: &str) -> Result<bool, CloudError> {
        match Nova(&self.session).server(id).await {
            Err(CloudError::Call { status: Some(404), .. }) => Ok(true),
            Err(e) => Err(e),
            Ok(_) => Ok(false),
        }
    }

    /// A rebuild is one call. Resumed, it may already have been sent, and a second one
    /// would wipe the machine again, so the server is only read.
    async fn rebuild(&self, node: &NodeInfo, resumed: bool) -> Result<Progress, CloudError> {
        let id = self.server(node)?;
        let nova = Nova(&self.session);
        let server = nova.server(&id).await?;
        if resumed {
            let rebuilding = server.status == "REBUILD" || server.task_state.as_deref().is_some_and(|t| t.starts_with("rebuild"));
            let detail = if rebuilding {
                format!("server {id} is already rebuilding; not rebuilt again")
            } else {
                format!(
                    "the rebuild of server {id} may already have been sent (the server is {}), so it is not sent again: the node verifies it",
                    server.status
                )
            };
            return Ok(Progress::Done(ActionOutcome { server_id: Some(id), detail, evidence: None }));
        }
        let image = server.image_id.ok_or_else(|| CloudError::Unsupported {
            provider: "openstack".into(),
            action: Action::Replace,
            reason: format!("server {id} boots from a volume; a rebuild needs an image"),
        })?;
        let evidence = self.console(&id).await;
        nova.rebuild(&id, &image).await?;
        Ok(Progress::Done(ActionOutcome {
            server_id: Some(id.clone()),
            detail: format!("server {id} rebuild with image {image} accepted"),
            evidence,
        }))
    }

    fn remember_label(&self, enabled: bool) {
        *lock(&self.auto_healing) = Some((Instant::now(), enabled));
    }

    async fn auto_healing_enabled(&self, cluster: &str) -> Result<bool, CloudError> {
        if let Some((at, enabled)) = *lock(&self.auto_healing)
            && at.elapsed() < LABEL_FRESH
        {
            return Ok(enabled);
        }
        let enabled = label_enabled(&Magnum(&self.session).cluster(cluster).await?);
        self.remember_label(enabled);
        Ok(enabled)
    }
}

fn truthy(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

#[async_trait::async_trait]
impl CloudProvider for OpenStackProvider {
    fn name(&self) -> &str {
        "openstack"
    }

    fn supports(&self, action: Action, role: Role) -> bool {
        if self.strategy == Strategy::Nova || action == Action::Reboot {
            return true;
        }
        // Before the driver is known (it is found by the gate asked before any step)
        // the replace is offered; `replace` refuses it if the driver turns out not to.
        match self.known_driver() {
            None | Some(Some(MagnumDriver::Heat)) => true,
            Some(Some(MagnumDriver::ClusterApi)) => role == Role::Worker && !self.autoscaled(),
            Some(Some(MagnumDriver::CapiHelm) | None) => false,
        }
    }

    fn delegated(&self, action: Action, role: Role) -> Option<String> {
        if self.strategy == Strategy::Nova || action != Action::Replace {
            return None;
        }
        match (self.known_driver()?, role) {
            (Some(MagnumDriver::Heat), _) => None,
            (Some(MagnumDriver::ClusterApi), Role::Worker) if !self.autoscaled() => None,
            (Some(MagnumDriver::ClusterApi), Role::Worker) => Some(
                "the cluster's MachineHealthCheck (Magnum driver cluster-api with auto_scaling_enabled: cluster-autoscaler sets the node groups' size, a resize does not)"
                    .into(),
            ),
            (Some(MagnumDriver::ClusterApi), Role::Master) => Some(
                "the cluster's MachineHealthCheck and KubeadmControlPlane (Magnum driver cluster-api: masters are not replaced through Magnum)"
                    .into(),
            ),
            (Some(MagnumDriver::CapiHelm), _) => Some(
                "the cluster's MachineHealthCheck (Magnum driver capi-helm: a resize cannot name the node to remove)".into(),
            ),
            (None, _) => Some("the cluster's own remediation (the Magnum driver is not known: set openstack.magnum-driver)".into()),
        }
    }

    fn describe(&self) -> Vec<(String, String)> {
        if self.strategy == Strategy::Nova {
            return vec![("strategy".into(), "nova".into())];
        }
        let mut out = vec![("strategy".into(), "magnum".into())];
        match lock(&self.driver).as_ref() {
            Some(d) => {
                out.push(("magnum-driver".into(), d.driver.map_or("unknown", MagnumDriver::as_str).into()));
                out.push(("magnum-driver-from".into(), d.how.clone()));
            }
            None => out.push(("magnum-driver".into(), "not yet known".into())),
        }
        out
    }

    fn check_node(&self, node: &NodeInfo) -> Result<(), CloudError> {
        server_id(node).map(|_| ())
    }

    async fn repair_allowed(&self) -> Result<RepairGate, CloudError> {
        if self.strategy == Strategy::Nova {
            return Ok(RepairGate::Allowed);
        }
        let id = self.cluster_id()?;
        let c = Magnum(&self.session).cluster(id).await?;
        self.remember_label(label_enabled(&c));
        let driver = self.driver_of(&c).await?;
        if !c.status.ends_with("_COMPLETE") {
            let reason = c.status_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            return Ok(RepairGate::Denied(format!("cluster {id} is {}{reason}", c.status)));
        }
        // On the Cluster API drivers the label turns the cluster's MachineHealthChecks on;
        // it says nothing about this healer, whose own pause and limits apply.
        if driver.driver == Some(MagnumDriver::Heat) {
            match c.labels.get("auto_healing_enabled").map(|v| (v, truthy(v))) {
                None => return Ok(RepairGate::Denied(format!("cluster {id} has no auto_healing_enabled label"))),
                Some((v, None)) => {
                    return Ok(RepairGate::Denied(format!("cluster {id} label auto_healing_enabled={v:?} is not a boolean")));
                }
                Some((_, Some(false))) => return Ok(RepairGate::Denied(format!("cluster {id} label auto_healing_enabled is false"))),
                Some((_, Some(true))) => {}
            }
            if let Some(stack) = &c.stack_id {
                let heat = Heat(&self.session);
                let (name, sid) = heat.find(stack).await?;
                let status = heat.status(&name, &sid).await?;
                if status == "UPDATE_IN_PROGRESS" || status == "UPDATE_FAILED" {
                    return Ok(RepairGate::Denied(format!("cluster stack {name} is {status}")));
                }
            }
        }
        Ok(RepairGate::Allowed)
    }

    async fn reboot(&self, node: &NodeInfo) -> Result<ActionOutcome, CloudError> {
        let id = self.server(node)?;
        let detail = match Nova(&self.session).reboot(&id, false).await? {
            Reboot::Accepted => format!("soft reboot of server {id} accepted"),
            Reboot::AlreadyInProgress(msg) => format!("server {id} is already rebooting ({msg})"),
        };
        Ok(ActionOutcome { server_id: Some(id), detail, evidence: None })
    }

    async fn replace(&self, node: &NodeInfo, at: Option<&Phase>, resumed: bool) -> Result<Progress, CloudError> {
        match (self.strategy, node.role.unwrap_or(Role::Worker)) {
            (Strategy::Nova, _) => self.rebuild(node, resumed).await,
            (Strategy::Magnum, role) => {
                // A replace begun under the Heat driver (its phases) is finished as it began.
                let begun_on_heat = at.is_some_and(|p| p.get("driver").is_none_or(|d| d == MagnumDriver::Heat.as_str()));
                if at.is_none() {
                    let driver = self.driver().await?;
                    if let Some(to) = self.delegated(Action::Replace, role) {
                        return Err(CloudError::Unsupported {
                            provider: "openstack".into(),
                            action: Action::Replace,
                            reason: format!("delegated to {to} ({})", driver.how),
                        });
                    }
                }
                match role {
                    Role::Worker => self.replace_worker(node, at, resumed).await,
                    Role::Master if at.is_none() || begun_on_heat => self.replace_master(node, at, resumed).await,
                    Role::Master => Err(CloudError::Other(format!(
                        "a master replace recorded at phase {:?} of a driver that does not replace masters",
                        at.map(|p| p.name.as_str()).unwrap_or_default()
                    ))),
                }
            }
        }
    }

    async fn restore(&self, node: &NodeInfo, at: &Phase) -> Result<ActionOutcome, CloudError> {
        let id = self.phase_server(node, at)?;
        self.forget_evidence(&id);
        let done = |detail: String| Ok(ActionOutcome { server_id: Some(id.clone()), detail, evidence: None });
        if at.out_of_service && at.get("driver") == Some(MagnumDriver::ClusterApi.as_str()) {
            // Nothing was stopped: what a stalled Cluster API replace can leave is a group
            // one machine larger than before. Its size is given back by the shrink that
            // removes the node's own machine, which was to go anyway; the group is held
            // meanwhile like a replace holds it.
            let cluster = self.cluster_id()?;
            let (group, count) = self.group_and_count(at)?;
            self.claim_group(group, &id).await?;
            let n = Magnum(&self.session).nodegroup(cluster, group).await?;
            if n.node_count <= count {
                self.release_group(group, &id);
                return done(format!("node group {group} is at {} nodes: nothing to restore", n.node_count));
            }
            self.shrink_back(cluster, group, count, &id).await?;
            self.release_group(group, &id);
            return done(format!(
                "node group {group} was left at {} nodes by a replace stalled at {}; resized back to {count}",
                n.node_count, at.name
            ));
        }
        if self.known_driver().is_some_and(|d| d != Some(MagnumDriver::Heat)) && self.strategy == Strategy::Magnum {
            // On the Cluster API drivers the healer stops no server: one found stopped
            // was stopped by someone else.
            return done(format!("the replace of server {id} stopped nothing on this driver: nothing to restore"));
        }
        if !at.out_of_service {
            // Nothing was stopped yet; a server found stopped was stopped by someone else.
            return done(format!("the replace of server {id} stalled at {} before stopping it: nothing to restore", at.name));
        }
        let gone = || format!("server {id} is gone (404 from Nova): nothing to start");
        let Some(mut server) = self.read_server(&id).await? else { return done(gone()) };
        if server.task_state.as_deref() == Some("powering-off") {
            // A stop still under way would leave the server SHUTOFF after this returned.
            self.wait_stopped(&id).await?;
            let Some(again) = self.read_server(&id).await? else { return done(gone()) };
            if again.task_state.as_deref() == Some("powering-off") {
                return Err(CloudError::Other(format!(
                    "server {id} is still powering off after {}: it can be started only once it is SHUTOFF",
                    humantime::format_duration(self.stop_timeout)
                )));
            }
            server = again;
        }
        match (server.status.as_str(), server.task_state.as_deref()) {
            ("SHUTOFF", None) => {
                Nova(&self.session).start(&id).await?;
                done(format!("server {id} was left SHUTOFF by a replace stalled at {}; start accepted", at.name))
            }
            ("SHUTOFF", Some("powering-on")) => done(format!("server {id} is already starting")),
            ("ACTIVE" | "REBOOT" | "HARD_REBOOT" | "REBUILD", _) => done(format!("server {id} is {}: nothing to start", server.status)),
            (status, task) => Err(CloudError::Other(format!(
                "server {id} is {status}{}: it cannot be started (os-start takes only a SHUTOFF server with no task under way)",
                task.map(|t| format!(" (task {t})")).unwrap_or_default()
            ))),
        }
    }

    async fn machine_down(&self, node: &NodeInfo) -> Result<Option<String>, CloudError> {
        let id = self.server(node)?;
        match Nova(&self.session).server(&id).await {
            // Only states in which the guest cannot be running: never a maybe (ERROR,
            // REBUILD and the like may still run the old workloads).
            Ok(s) if matches!(s.status.as_str(), "SHUTOFF" | "DELETED" | "SOFT_DELETED") => {
                Ok(Some(format!("server {id} is {}", s.status)))
            }
            Ok(_) => Ok(None),
            Err(CloudError::Call { status: Some(404), .. }) => Ok(Some(format!("server {id} is gone (404 from Nova)"))),
            Err(e) => Err(e),
        }
    }

    async fn report_health(&self, report: &HealthReport) -> Result<(), CloudError> {
        if self.strategy == Strategy::Nova {
            return Ok(());
        }
        let id = self.cluster_id()?;
        let status = if report.healthy { "HEALTHY" } else { "UNHEALTHY" }.to_string();
        let mut reason = BTreeMap::new();
        if report.healthy {
            reason.insert("api".to_string(), "ok".to_string());
            reason.insert("nodes".to_string(), "ok".to_string());
        }
        for (node, why) in &report.unhealthy_nodes {
            reason.insert(node.clone(), why.clone());
        }
        let unchanged = lock(&self.last_health).as_ref() == Some(&(status.clone(), reason.clone()));
        if unchanged {
            return Ok(());
        }
        // Upstream writes health_status only while the cluster opts in; what was not
        // written stays pending, so it is written once the label is true again.
        if !self.auto_healing_enabled(id).await? {
            tracing::debug!(cluster = id, "auto_healing_enabled is not true; health_status not written");
            return Ok(());
        }
        Magnum(&self.session).update_health(id, &status, &reason).await?;
        *lock(&self.last_health) = Some((status, reason));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(pid: Option<&str>, sys: Option<&str>, mid: Option<&str>) -> NodeInfo {
        NodeInfo {
            name: "n".into(),
            provider_id: pid.map(String::from),
            system_uuid: sys.map(String::from),
            machine_id: mid.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn node_to_server_id() {
        assert_eq!(server_id(&node(Some("openstack:///abc"), None, None)).unwrap(), ("abc".into(), IdSource::ProviderId));
        assert_eq!(server_id(&node(Some("openstack://RegionOne/abc"), None, None)).unwrap().0, "abc");
        let sys = "8B2A4C1E-0F3D-4E5A-9B6C-7D8E9F0A1B2C";
        assert_eq!(server_id(&node(Some("aws:///x"), Some(sys), None)).unwrap(), (sys.to_lowercase(), IdSource::SystemUuid));
        assert_eq!(
            server_id(&node(None, Some("not-a-uuid"), Some("8b2a4c1e0f3d4e5a9b6c7d8e9f0a1b2c"))).unwrap(),
            ("8b2a4c1e-0f3d-4e5a-9b6c-7d8e9f0a1b2c".into(), IdSource::MachineId)
        );
        assert!(matches!(server_id(&node(None, None, Some("x"))), Err(CloudError::NoServer { .. })));
    }
}
