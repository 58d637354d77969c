//! Minimal typed clients of the calls the strategies make.

use crate::session::{Reply, Service, Session};
use autohealer_cloud::CloudError;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn bad(service: Service, call: &str, what: &str) -> CloudError {
    CloudError::Call { call: format!("{} {call}", service.name()), status: None, message: format!("unexpected answer: {what}") }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub status: String,
    pub task_state: Option<String>,
    pub image_id: Option<String>,
    pub addresses: Vec<String>,
}

pub fn parse_server(body: &Value) -> Option<Server> {
    let s = body.get("server")?;
    let addresses = s["addresses"]
        .as_object()
        .map(|nets| {
            nets.values()
                .flat_map(|a| a.as_array().cloned().unwrap_or_default())
                .filter_map(|a| a["addr"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Some(Server {
        id: s["id"].as_str()?.to_string(),
        name: s["name"].as_str().unwrap_or_default().to_string(),
        status: s["status"].as_str().unwrap_or_default().to_string(),
        task_state: s["OS-EXT-STS:task_state"].as_str().map(String::from),
        // A server booted from a volume has `"image": ""`.
        image_id: s["image"]["id"].as_str().map(String::from),
        addresses,
    })
}

/// How Nova answered a reboot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reboot {
    Accepted,
    /// 409 because a reboot is already under way: the node is being rebooted.
    AlreadyInProgress(String),
}

pub struct Nova<'a>(pub &'a Session);

impl Nova<'_> {
    pub async fn server(&self, id: &str) -> Result<Server, CloudError> {
        let call = format!("GET /servers/{id}");
        let r = self.0.request(Service::Compute, Method::GET, &format!("/servers/{id}"), None, &call, &[200]).await?;
        parse_server(&r.body).ok_or_else(|| bad(Service::Compute, &call, "no server in the body"))
    }

    async fn action(&self, id: &str, body: Value, name: &str, ok: &[u16]) -> Result<Reply, CloudError> {
        let call = format!("POST /servers/{id}/action ({name})");
        self.0.request(Service::Compute, Method::POST, &format!("/servers/{id}/action"), Some(&body), &call, ok).await
    }

    pub async fn reboot(&self, id: &str, hard: bool) -> Result<Reboot, CloudError> {
        let t = if hard { "HARD" } else { "SOFT" };
        match self.action(id, json!({"reboot": {"type": t}}), "reboot", &[202, 409]).await? {
            r if r.status == 202 => Ok(Reboot::Accepted),
            r => {
                let msg = crate::session::error_message(&r.body);
                // Only a reboot under way is "in progress". Nova names the action in every
                // 409 ("Cannot 'reboot' instance ..."), so the task state itself must be a
                // reboot one; a stopped server (vm_state stopped) or one powering off
                // refusing the reboot is a real failure.
                if task_state_of(&msg).is_some_and(|t| t.starts_with("reboot")) {
                    Ok(Reboot::AlreadyInProgress(msg))
                } else {
                    Err(CloudError::Call { call: format!("nova POST /servers/{id}/action (reboot)"), status: Some(409), message: msg })
                }
            }
        }
    }

    /// Stops the server. Nova answers 409 to a stop of a server already stopped or
    /// already powering off; either is the state the caller asked for, so not an error.
    pub async fn stop(&self, id: &str) -> Result<(), CloudError> {
        let r = self.action(id, json!({"os-stop": null}), "os-stop", &[202, 409]).await?;
        if r.status == 409 {
            let msg = crate::session::error_message(&r.body);
            let stopped = msg.contains("vm_state stopped") || task_state_of(&msg) == Some("powering-off");
            if !stopped {
                return Err(CloudError::Call {
                    call: format!("nova POST /servers/{id}/action (os-stop)"),
                    status: Some(409),
                    message: msg,
                });
            }
        }
        Ok(())
    }

    /// Starts a stopped server. Nova takes it only from vm_state stopped with no task
    /// under way and answers 409 otherwise; the caller reads the server first, so a 409
    /// here is a real conflict and is returned as one.
    pub async fn start(&self, id: &str) -> Result<(), CloudError> {
        self.action(id, json!({"os-start": null}), "os-start", &[202]).await.map(|_| ())
    }

    pub async fn force_delete(&self, id: &str) -> Result<(), CloudError> {
        self.action(id, json!({"forceDelete": null}), "forceDelete", &[202]).await.map(|_| ())
    }

    pub async fn rebuild(&self, id: &str, image: &str) -> Result<(), CloudError> {
        self.action(id, json!({"rebuild": {"imageRef": image}}), "rebuild", &[202]).await.map(|_| ())
    }

    pub async fn console(&self, id: &str, lines: usize) -> Result<String, CloudError> {
        let r = self.action(id, json!({"os-getConsoleOutput": {"length": lines}}), "os-getConsoleOutput", &[200]).await?;
        Ok(r.body["output"].as_str().unwrap_or_default().to_string())
    }

    /// (attachment id, volume id) pairs.
    pub async fn attachments(&self, id: &str) -> Result<Vec<(String, String)>, CloudError> {
        let call = format!("GET /servers/{id}/os-volume_attachments");
        let r = self.0.request(Service::Compute, Method::GET, &format!("/servers/{id}/os-volume_attachments"), None, &call, &[200]).await?;
        let list = r.body["volumeAttachments"].as_array().ok_or_else(|| bad(Service::Compute, &call, "no volumeAttachments"))?;
        Ok(list.iter().filter_map(|a| Some((a["id"].as_str()?.to_string(), a["volumeId"].as_str()?.to_string()))).collect())
    }

    /// Detaches a volume. A 404 (the attachment is already gone) is the state asked
    /// for: a detach repeated after an uncertain answer must not fail on it.
    pub async fn detach(&self, id: &str, attachment: &str) -> Result<(), CloudError> {
        let path = format!("/servers/{id}/os-volume_attachments/{attachment}");
        self.0.request(Service::Compute, Method::DELETE, &path, None, &format!("DELETE {path}"), &[202, 404]).await.map(|_| ())
    }
}

pub struct Cinder<'a>(pub &'a Session);

impl Cinder<'_> {
    /// Whether the volume is bootable; Cinder writes it as the string "true"/"false".
    pub async fn bootable(&self, id: &str) -> Result<bool, CloudError> {
        let call = format!("GET /volumes/{id}");
        let r = self.0.request(Service::Volume, Method::GET, &format!("/volumes/{id}"), None, &call, &[200]).await?;
        match &r.body["volume"]["bootable"] {
            Value::String(s) => Ok(s.eq_ignore_ascii_case("true")),
            Value::Bool(b) => Ok(*b),
            _ => Err(bad(Service::Volume, &call, "volume.bootable missing")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackResource {
    pub name: String,
    pub type_: String,
    pub physical_id: String,
    /// The stack the resource belongs to, as (name, id), from its `rel: stack` link.
    pub stack: Option<(String, String)>,
}

pub struct Heat<'a>(pub &'a Session);

impl Heat<'_> {
    /// Resolves a stack name or id to (name, id) through the 302 Heat answers.
    pub async fn find(&self, name_or_id: &str) -> Result<(String, String), CloudError> {
        let call = format!("GET /stacks/{name_or_id}");
        let r = self.0.request(Service::Orchestration, Method::GET, &format!("/stacks/{name_or_id}"), None, &call, &[302, 200]).await?;
        let href = match (r.status, &r.location) {
            (302, Some(loc)) => loc.clone(),
            _ => r
                .body
                .pointer("/stack/links/0/href")
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| bad(Service::Orchestration, &call, "no Location"))?,
        };
        stack_of(&href).ok_or_else(|| bad(Service::Orchestration, &call, "the Location names no stack"))
    }

    pub async fn status(&self, name: &str, id: &str) -> Result<String, CloudError> {
        let call = format!("GET /stacks/{name}/{id}");
        let r = self.0.request(Service::Orchestration, Method::GET, &format!("/stacks/{name}/{id}"), None, &call, &[200]).await?;
        r.body
            .pointer("/stack/stack_status")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| bad(Service::Orchestration, &call, "no stack_status"))
    }

    pub async fn resources(&self, name: &str, id: &str) -> Result<Vec<StackResource>, CloudError> {
        let path = format!("/stacks/{name}/{id}/resources?nested_depth=2");
        let call = format!("GET {path}");
        let r = self.0.request(Service::Orchestration, Method::GET, &path, None, &call, &[200]).await?;
        let list = r.body["resources"].as_array().ok_or_else(|| bad(Service::Orchestration, &call, "no resources"))?;
        Ok(list
            .iter()
            .map(|x| StackResource {
                name: x["resource_name"].as_str().unwrap_or_default().into(),
                type_: x["resource_type"].as_str().unwrap_or_default().into(),
                physical_id: x["physical_resource_id"].as_str().unwrap_or_default().into(),
                stack: x["links"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|l| l["rel"] == "stack")
                    .and_then(|l| l["href"].as_str())
                    .and_then(stack_of),
            })
            .collect())
    }

    pub async fn mark_unhealthy(&self, stack: &(String, String), resource: &str, reason: &str) -> Result<(), CloudError> {
        let path = format!("/stacks/{}/{}/resources/{resource}", stack.0, stack.1);
        let body = json!({"mark_unhealthy": true, "resource_status_reason": reason});
        self.0.request(Service::Orchestration, Method::PATCH, &path, Some(&body), &format!("PATCH {path}"), &[200]).await.map(|_| ())
    }

    pub async fn update(&self, name: &str, id: &str) -> Result<(), CloudError> {
        let path = format!("/stacks/{name}/{id}");
        self.0.request(Service::Orchestration, Method::PATCH, &path, Some(&json!({})), &format!("PATCH {path}"), &[202]).await.map(|_| ())
    }
}

/// The task state a Nova 409 names ("... while it is in task_state reboot_started").
fn task_state_of(msg: &str) -> Option<&str> {
    let rest = msg.split("task_state ").nth(1)?;
    rest.split(|c: char| c.is_whitespace() || c == '.' || c == ',').next().filter(|t| !t.is_empty())
}

/// `(name, id)` from a stack URL `.../stacks/{name}/{id}`.
fn stack_of(href: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = href.trim_end_matches('/').split('/').collect();
    let i = parts.iter().rposition(|p| *p == "stacks")?;
    Some((parts.get(i + 1)?.to_string(), parts.get(i + 2)?.to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub uuid: String,
    pub status: String,
    pub labels: BTreeMap<String, String>,
    /// The Heat stack; Magnum calls it `stack_id`, later `cluster_id`. None with the
    /// drivers that have no Heat.
    pub stack_id: Option<String>,
    pub node_count: u64,
    /// Why the cluster is in its status (set by Magnum on a failure).
    pub status_reason: Option<String>,
    pub template: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGroup {
    pub uuid: String,
    pub name: String,
    pub role: String,
    pub node_count: u64,
    pub node_addresses: Vec<String>,
    /// `UPDATE_IN_PROGRESS` while a resize of the group runs; empty if not reported.
    pub status: String,
    /// The most nodes Magnum lets the group have (`None`: no bound).
    pub max_node_count: Option<u64>,
}

/// A node group as Magnum shows it; a count the resizes are computed from must be there.
fn parse_nodegroup(uuid: &str, d: &Value, call: &str) -> Result<NodeGroup, CloudError> {
    Ok(NodeGroup {
        uuid: d["uuid"].as_str().unwrap_or(uuid).into(),
        name: d["name"].as_str().unwrap_or_default().into(),
        role: d["role"].as_str().unwrap_or_default().into(),
        node_count: d["node_count"].as_u64().ok_or_else(|| bad(Service::ContainerInfra, call, "no node_count"))?,
        node_addresses: d["node_addresses"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect(),
        status: d["status"].as_str().unwrap_or_default().into(),
        max_node_count: d["max_node_count"].as_u64(),
    })
}

pub struct Magnum<'a>(pub &'a Session);

impl Magnum<'_> {
    pub async fn cluster(&self, id: &str) -> Result<Cluster, CloudError> {
        let call = format!("GET /v1/clusters/{id}");
        let r = self.0.request(Service::ContainerInfra, Method::GET, &format!("/clusters/{id}"), None, &call, &[200]).await?;
        let b = &r.body;
        let labels = b["labels"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))).collect())
            .unwrap_or_default();
        let stack_id = b["stack_id"].as_str().or(b["cluster_id"].as_str()).filter(|s| !s.is_empty()).map(String::from);
        Ok(Cluster {
            uuid: b["uuid"].as_str().ok_or_else(|| bad(Service::ContainerInfra, &call, "no uuid"))?.to_string(),
            status: b["status"].as_str().unwrap_or_default().to_string(),
            labels,
            stack_id,
            node_count: b["node_count"].as_u64().unwrap_or(0),
            status_reason: b["status_reason"].as_str().filter(|s| !s.is_empty()).map(String::from),
            template: b["cluster_template_id"].as_str().filter(|s| !s.is_empty()).map(String::from),
        })
    }

    /// The labels of a cluster template.
    pub async fn template_labels(&self, id: &str) -> Result<BTreeMap<String, String>, CloudError> {
        let call = format!("GET /v1/clustertemplates/{id}");
        let r = self.0.request(Service::ContainerInfra, Method::GET, &format!("/clustertemplates/{id}"), None, &call, &[200]).await?;
        Ok(r.body["labels"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string()))).collect())
            .unwrap_or_default())
    }

    /// One node group, with its addresses and status.
    pub async fn nodegroup(&self, id: &str, group: &str) -> Result<NodeGroup, CloudError> {
        let call = format!("GET /v1/clusters/{id}/nodegroups/{group}");
        let d = self
            .0
            .request(Service::ContainerInfra, Method::GET, &format!("/clusters/{id}/nodegroups/{group}"), None, &call, &[200])
            .await?
            .body;
        parse_nodegroup(group, &d, &call)
    }

    pub async fn update_health(&self, id: &str, status: &str, reason: &BTreeMap<String, String>) -> Result<(), CloudError> {
        let body = json!([{"op": "replace", "path": "/health_status", "value": status}, {"op": "replace", "path": "/health_status_reason", "value": reason}]);
        let call = format!("PATCH /v1/clusters/{id} (health_status)");
        self.0
            .request(Service::ContainerInfra, Method::PATCH, &format!("/clusters/{id}"), Some(&body), &call, &[202, 200])
            .await
            .map(|_| ())
    }

    pub async fn nodegroups(&self, id: &str) -> Result<Vec<NodeGroup>, CloudError> {
        let call = format!("GET /v1/clusters/{id}/nodegroups");
        let r = self.0.request(Service::ContainerInfra, Method::GET, &format!("/clusters/{id}/nodegroups"), None, &call, &[200]).await?;
        let list = r.body["nodegroups"].as_array().ok_or_else(|| bad(Service::ContainerInfra, &call, "no nodegroups"))?;
        let mut out = Vec::new();
        for ng in list {
            let uuid = ng["uuid"].as_str().unwrap_or_default();
            let call = format!("GET /v1/clusters/{id}/nodegroups/{uuid}");
            let d = self
                .0
                .request(Service::ContainerInfra, Method::GET, &format!("/clusters/{id}/nodegroups/{uuid}"), None, &call, &[200])
                .await?
                .body;
            out.push(parse_nodegroup(uuid, &d, &call)?);
        }
        Ok(out)
    }

    pub async fn resize(&self, id: &str, nodegroup: &str, node_count: u64, remove: &[String]) -> Result<(), CloudError> {
        let body = json!({"node_count": node_count, "nodes_to_remove": remove, "nodegroup": nodegroup});
        let call = format!("POST /v1/clusters/{id}/actions/resize");
        self.0
            .request(Service::ContainerInfra, Method::POST, &format!("/clusters/{id}/actions/resize"), Some(&body), &call, &[202])
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_links() {
        assert_eq!(stack_of("http://h/v1/p/stacks/name/id"), Some(("name".into(), "id".into())));
        assert_eq!(stack_of("http://h/v1/p/stacks/name/id/resources/x"), Some(("name".into(), "id".into())));
    }

    #[test]
    fn only_a_reboot_task_state_is_a_reboot_in_progress() {
        assert_eq!(task_state_of("Cannot 'reboot' instance x while it is in task_state reboot_started"), Some("reboot_started"));
        assert_eq!(task_state_of("Cannot 'reboot' instance x while it is in task_state powering-off."), Some("powering-off"));
        assert_eq!(task_state_of("Cannot 'reboot' instance x while it is in vm_state stopped"), None);
    }

    #[test]
    fn server_booted_from_volume_has_no_image() {
        let s = parse_server(&json!({"server": {"id": "x", "image": "", "status": "ACTIVE", "addresses": {"n": [{"addr": "10.0.0.1"}]}}}))
            .unwrap();
        assert_eq!((s.image_id, s.addresses), (None, vec!["10.0.0.1".to_string()]));
        assert!(parse_server(&json!({"nope": 1})).is_none());
    }
}
