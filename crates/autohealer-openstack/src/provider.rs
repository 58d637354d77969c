//! The two strategies: `magnum` (cluster gate, health report, worker replace through a
//! node-group resize, master replace through Heat) and `nova` (reboot, then rebuild
//! with the server's image) for clusters Magnum does not manage.

use crate::clients::{Cinder, Cluster, Heat, Magnum, Nova, Reboot, Server};
use crate::config::Strategy;
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
        }
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
        Ok(Progress::Next(
            Phase::new(EVIDENCE).with("server", &id).with("nodegroup", &group.name).with("node_count", group.node_count.to_string()),
        ))
    }

    async fn replace_worker(&self, node: &NodeInfo, at: Option<&Phase>, resumed: bool) -> Result<Progress, CloudError> {
        let Some(at) = at else { return self.worker_begin(node).await };
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
                    Magnum(&self.session).resize(cluster, group, count, std::slice::from_ref(&id)).await?;
                    format!("server {id} stopped and removed from node group {group} (resize to {count} nodes accepted)")
                };
                self.forget_evidence(&id);
                Ok(Progress::Done(ActionOutcome { server_id: Some(id), detail, evidence }))
            }
            _ => Err(unknown_phase(at, "worker")),
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
                    heat.update(stack_name, data(at, "stack_id")?).await?;
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

    fn supports(&self, _action: Action, _role: Role) -> bool {
        true
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
        if !c.status.ends_with("_COMPLETE") {
            return Ok(RepairGate::Denied(format!("cluster {id} is {}", c.status)));
        }
        match c.labels.get("auto_healing_enabled").map(|v| (v, truthy(v))) {
            None => return Ok(RepairGate::Denied(format!("cluster {id} has no auto_healing_enabled label"))),
            Some((v, None)) => return Ok(RepairGate::Denied(format!("cluster {id} label auto_healing_enabled={v:?} is not a boolean"))),
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
            (Strategy::Magnum, Role::Worker) => self.replace_worker(node, at, resumed).await,
            (Strategy::Magnum, Role::Master) => self.replace_master(node, at, resumed).await,
        }
    }

    async fn restore(&self, node: &NodeInfo, at: &Phase) -> Result<ActionOutcome, CloudError> {
        let id = self.phase_server(node, at)?;
        self.forget_evidence(&id);
        let done = |detail: String| Ok(ActionOutcome { server_id: Some(id.clone()), detail, evidence: None });
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
