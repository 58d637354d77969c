//! The two strategies: `magnum` (cluster gate, health report, worker replace through a
//! node-group resize, master replace through Heat) and `nova` (reboot, then rebuild
//! with the server's image) for clusters Magnum does not manage.

use crate::clients::{Cinder, Heat, Magnum, Nova, Reboot};
use crate::config::Strategy;
use crate::session::Session;
use autohealer_cloud::{Action, ActionOutcome, CloudError, CloudProvider, HealthReport, NodeInfo, RepairGate, Role};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

pub struct OpenStackProvider {
    session: Arc<Session>,
    strategy: Strategy,
    cluster: Option<String>,
    stop_timeout: Duration,
    console_lines: usize,
    last_health: Mutex<Option<(String, BTreeMap<String, String>)>>,
}

impl OpenStackProvider {
    pub fn new(session: Session) -> Self {
        let s = session.settings().clone();
        Self {
            session: Arc::new(session),
            strategy: s.strategy,
            cluster: s.cluster,
            stop_timeout: s.stop_timeout,
            console_lines: s.console_lines,
            last_health: Mutex::new(None),
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

    /// The tail of the server's console output, taken before a destructive step so an
    /// operator can see why the machine failed after it is gone.
    async fn evidence(&self, id: &str) -> Option<String> {
        if self.console_lines == 0 {
            return None;
        }
        Some(match Nova(&self.session).console(id, self.console_lines).await {
            Ok(out) => out,
            Err(e) => format!("console output unavailable: {e}"),
        })
    }

    /// Waits until the server is SHUTOFF (or gone), polling every second.
    async fn wait_stopped(&self, id: &str) -> Result<bool, CloudError> {
        let deadline = tokio::time::Instant::now() + self.stop_timeout;
        loop {
            match Nova(&self.session).server(id).await {
                Ok(s) if s.status == "SHUTOFF" => return Ok(true),
                Ok(_) => {}
                Err(CloudError::Call { status: Some(404), .. }) => return Ok(true),
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_secs(1).min(self.stop_timeout)).await;
        }
    }

    /// Detaches every non-bootable volume; returns the root volume, if any.
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

    async fn replace_worker(&self, node: &NodeInfo, id: &str) -> Result<ActionOutcome, CloudError> {
        let cluster = self.cluster_id()?;
        let magnum = Magnum(&self.session);
        let addresses: Vec<&str> = node.addresses.iter().map(|(_, a)| a.as_str()).collect();
        let groups = magnum.nodegroups(cluster).await?;
        let group =
            groups.iter().find(|g| g.node_addresses.iter().any(|a| addresses.contains(&a.as_str()))).ok_or_else(|| CloudError::Call {
                call: format!("magnum GET /v1/clusters/{cluster}/nodegroups"),
                status: None,
                message: format!("no node group lists an address of node {} ({})", node.name, addresses.join(", ")),
            })?;
        let evidence = self.evidence(id).await;
        self.detach_data_volumes(id).await?;
        Nova(&self.session).stop(id).await?;
        if !self.wait_stopped(id).await? {
            tracing::warn!(server = id, "server did not stop in time; resizing anyway");
        }
        magnum.resize(cluster, &group.name, group.node_count, &[id.to_string()]).await?;
        let session = self.session.clone();
        let cluster = cluster.to_string();
        tokio::spawn(async move {
            for _ in 0..120 {
                tokio::time::sleep(Duration::from_secs(10)).await;
                match Magnum(&session).cluster(&cluster).await {
                    Ok(c) if c.status.ends_with("_COMPLETE") => {
                        tracing::info!(cluster, status = %c.status, "resize finished");
                        return;
                    }
                    Ok(c) if c.status.ends_with("_FAILED") => {
                        tracing::warn!(cluster, status = %c.status, "resize failed");
                        return;
                    }
                    _ => {}
                }
            }
        });
        Ok(ActionOutcome {
            server_id: Some(id.into()),
            detail: format!(
                "server {id} stopped and removed from node group {} (resize to {} nodes accepted)",
                group.name, group.node_count
            ),
            already_in_progress: false,
            evidence,
        })
    }

    async fn replace_master(&self, id: &str) -> Result<ActionOutcome, CloudError> {
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
        let parent = server.stack.clone().unwrap_or((stack_name.clone(), stack_id.clone()));
        let reason = "marked unhealthy by autohealer";
        let evidence = self.evidence(id).await;
        let root = self.detach_data_volumes(id).await?;
        if let Some(root) = root
            && let Some(r) = resources.iter().find(|r| r.physical_id == root)
        {
            heat.mark_unhealthy(&r.stack.clone().unwrap_or(parent.clone()), &r.name, reason).await?;
        }
        Nova(&self.session).stop(id).await?;
        if !self.wait_stopped(id).await? {
            tracing::warn!(server = id, "server did not stop in time; force-deleting it so the stack update can rebuild it");
            Nova(&self.session).force_delete(id).await?;
        }
        heat.mark_unhealthy(&parent, &server.name, reason).await?;
        heat.update(&stack_name, &stack_id).await?;
        Ok(ActionOutcome {
            server_id: Some(id.into()),
            detail: format!("server {id} marked unhealthy in stack {}; stack {stack_name} update started to rebuild it", parent.0),
            already_in_progress: false,
            evidence,
        })
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
        match Nova(&self.session).reboot(&id, false).await? {
            Reboot::Accepted => Ok(ActionOutcome {
                server_id: Some(id.clone()),
                detail: format!("soft reboot of server {id} accepted"),
                already_in_progress: false,
                evidence: None,
            }),
            Reboot::AlreadyInProgress(msg) => Ok(ActionOutcome {
                server_id: Some(id.clone()),
                detail: format!("server {id} is already rebooting ({msg})"),
                already_in_progress: true,
                evidence: None,
            }),
        }
    }

    async fn replace(&self, nodes: &[NodeInfo]) -> Result<Vec<ActionOutcome>, CloudError> {
        let mut out = Vec::new();
        for node in nodes {
            let id = self.server(node)?;
            let outcome = match (self.strategy, node.role.unwrap_or(Role::Worker)) {
                (Strategy::Nova, _) => {
                    let nova = Nova(&self.session);
                    let image = nova.server(&id).await?.image_id.ok_or_else(|| CloudError::Unsupported {
                        provider: "openstack".into(),
                        action: Action::Replace,
                        reason: format!("server {id} boots from a volume; a rebuild needs an image"),
                    })?;
                    let evidence = self.evidence(&id).await;
                    nova.rebuild(&id, &image).await?;
                    ActionOutcome {
                        server_id: Some(id.clone()),
                        detail: format!("server {id} rebuild with image {image} accepted"),
                        already_in_progress: false,
                        evidence,
                    }
                }
                (Strategy::Magnum, Role::Worker) => self.replace_worker(node, &id).await?,
                (Strategy::Magnum, Role::Master) => self.replace_master(&id).await?,
            };
            out.push(outcome);
        }
        Ok(out)
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
        let unchanged = self.last_health.lock().unwrap_or_else(|p| p.into_inner()).as_ref() == Some(&(status.clone(), reason.clone()));
        if unchanged {
            return Ok(());
        }
        Magnum(&self.session).update_health(id, &status, &reason).await?;
        *self.last_health.lock().unwrap_or_else(|p| p.into_inner()) = Some((status, reason));
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
