//! The provider against the testkit's fake OpenStack: every call and error path.

use autohealer_cloud::{Action, CloudError, CloudProvider, HealthReport, NodeInfo, RepairGate, Role};
use autohealer_openstack::OpenStackProvider;
use autohealer_testkit::openstack::{self as fake, FakeOpenStack, OsOptions};
use serde_json::json;
use std::time::Duration;

async fn cloud(opts: OsOptions, heat: bool) -> FakeOpenStack {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let os = FakeOpenStack::start(opts).await.unwrap();
    os.add_server("11111111-1111-1111-1111-111111111111", "demo-worker-0", "10.0.0.11", true);
    os.add_server("22222222-2222-2222-2222-222222222222", "demo-master-0", "10.0.0.21", true);
    os.add_cluster("c1", "demo", &["22222222-2222-2222-2222-222222222222".into()], &["11111111-1111-1111-1111-111111111111".into()], heat);
    os
}

fn fast() -> OsOptions {
    OsOptions {
        reboot_time: Duration::from_millis(300),
        stop_time: Duration::from_millis(100),
        update_time: Duration::from_millis(200),
        ..Default::default()
    }
}

fn provider(os: &FakeOpenStack, extra: serde_json::Value, cluster: Option<&str>) -> OpenStackProvider {
    let mut block = json!({"auth-url": os.auth_url(), "user-id": fake::USER_ID, "password": fake::PASSWORD, "project-id": fake::PROJECT_ID, "region": fake::REGION, "stop-timeout": "5s"});
    for (k, v) in extra.as_object().unwrap() {
        block[k] = v.clone();
    }
    autohealer_openstack::build(Some(&block), cluster, None).unwrap()
}

fn worker() -> NodeInfo {
    NodeInfo {
        name: "demo-worker-0".into(),
        role: Some(Role::Worker),
        provider_id: Some("openstack:///11111111-1111-1111-1111-111111111111".into()),
        addresses: vec![("InternalIP".into(), "10.0.0.11".into())],
        ..Default::default()
    }
}

fn master() -> NodeInfo {
    NodeInfo {
        name: "demo-master-0".into(),
        role: Some(Role::Master),
        system_uuid: Some("22222222-2222-2222-2222-222222222222".into()),
        addresses: vec![("InternalIP".into(), "10.0.0.21".into())],
        ..Default::default()
    }
}

#[tokio::test]
async fn reboot_once_and_409_while_rebooting_counts_as_in_progress() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    let first = p.reboot(&worker()).await.unwrap();
    assert!(!first.already_in_progress);
    assert_eq!(first.server_id.as_deref(), Some("11111111-1111-1111-1111-111111111111"));
    let second = p.reboot(&worker()).await.unwrap();
    assert!(second.already_in_progress, "{second:?}");
    assert_eq!(os.count("POST", "/servers/11111111-1111-1111-1111-111111111111/action", Some("SOFT")), 2);
    assert_eq!(os.count("POST", "/auth/tokens", None), 1, "one token serves both calls");
}

#[tokio::test]
async fn a_401_re_authenticates_once_and_concurrent_ones_merge() {
    let os = cloud(fast(), true).await;
    let p = std::sync::Arc::new(provider(&os, json!({}), Some("c1")));
    p.reboot(&worker()).await.unwrap();
    os.expire_tokens();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move { p.repair_allowed().await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), RepairGate::Allowed);
    }
    assert_eq!(os.count("POST", "/auth/tokens", None), 2, "eight 401s, one re-authentication");
}

#[tokio::test]
async fn token_is_renewed_before_it_expires() {
    let os = cloud(OsOptions { token_ttl: Duration::from_secs(2), ..fast() }, true).await;
    let p = provider(&os, json!({}), Some("c1"));
    p.repair_allowed().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1700)).await;
    p.repair_allowed().await.unwrap();
    assert_eq!(os.count("POST", "/auth/tokens", None), 2);
    assert!(os.requests().iter().all(|r| r.status != 401), "renewed before expiry, never refused");
}

#[tokio::test]
async fn application_credential_and_names_authenticate() {
    let os = cloud(fast(), true).await;
    let ac = autohealer_openstack::build(Some(&json!({"auth-url": os.auth_url(), "application-credential-id": fake::APP_CRED_ID, "application-credential-secret": fake::APP_CRED_SECRET})), Some("c1"), None).unwrap();
    assert_eq!(ac.repair_allowed().await.unwrap(), RepairGate::Allowed);
    let names = autohealer_openstack::build(
        Some(&json!({"auth-url": os.auth_url(), "username": fake::USER_NAME, "user-domain-name": fake::DOMAIN, "password": fake::PASSWORD, "project-name": fake::PROJECT_NAME, "project-domain-name": fake::DOMAIN})),
        Some("c1"),
        None,
    )
    .unwrap();
    assert_eq!(names.repair_allowed().await.unwrap(), RepairGate::Allowed);
    let wrong = autohealer_openstack::build(
        Some(&json!({"auth-url": os.auth_url(), "user-id": fake::USER_ID, "password": "wrong"})),
        Some("c1"),
        None,
    )
    .unwrap();
    let e = wrong.repair_allowed().await.unwrap_err().to_string();
    assert!(e.contains("keystone POST /v3/auth/tokens") && e.contains("authentication"), "{e}");
    assert!(!e.contains("wrong"), "the password is never in an error");
}

#[tokio::test]
async fn catalog_miss_names_type_interface_and_region() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({"region": "Mars"}), Some("c1"));
    let e = p.repair_allowed().await.unwrap_err().to_string();
    assert!(e.contains("container-infra") && e.contains("public") && e.contains("Mars"), "{e}");
}

#[tokio::test]
async fn magnum_gate_label_status_and_stack() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    assert_eq!(p.repair_allowed().await.unwrap(), RepairGate::Allowed);
    os.set_cluster_label("c1", "auto_healing_enabled", Some("false"));
    assert!(matches!(p.repair_allowed().await.unwrap(), RepairGate::Denied(w) if w.contains("false")));
    os.set_cluster_label("c1", "auto_healing_enabled", Some("maybe"));
    assert!(matches!(p.repair_allowed().await.unwrap(), RepairGate::Denied(w) if w.contains("not a boolean")));
    os.set_cluster_label("c1", "auto_healing_enabled", None);
    assert!(matches!(p.repair_allowed().await.unwrap(), RepairGate::Denied(w) if w.contains("no auto_healing_enabled")));
    os.set_cluster_label("c1", "auto_healing_enabled", Some("True"));
    os.set_cluster_status("c1", "UPDATE_IN_PROGRESS");
    assert!(matches!(p.repair_allowed().await.unwrap(), RepairGate::Denied(w) if w.contains("UPDATE_IN_PROGRESS")));
    assert!(os.count("GET", "/stacks/stack-c1", None) >= 1, "the stack was looked up through its 302");
}

#[tokio::test]
async fn worker_replace_detaches_stops_and_resizes_its_node_group() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    let out = p.replace(&[worker()]).await.unwrap();
    assert!(out[0].detail.contains("default-worker"), "{:?}", out[0]);
    let id = "11111111-1111-1111-1111-111111111111";
    assert_eq!(os.count("DELETE", &format!("/servers/{id}/os-volume_attachments/vol-data-{id}"), None), 1, "the data volume is detached");
    assert_eq!(os.count("DELETE", &format!("/os-volume_attachments/vol-root-{id}"), None), 0, "the root volume stays");
    assert_eq!(os.count("POST", &format!("/servers/{id}/action"), Some("os-stop")), 1);
    let resize = os.requests().into_iter().find(|r| r.path.ends_with("/actions/resize")).expect("a resize");
    let body: serde_json::Value = serde_json::from_str(&resize.body).unwrap();
    assert_eq!(body, json!({"node_count": 1, "nodes_to_remove": [id], "nodegroup": "default-worker"}));
    assert_eq!(resize.status, 202);
}

#[tokio::test]
async fn master_replace_through_heat_and_clear_failure_without_heat() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    let out = p.replace(&[master()]).await.unwrap();
    assert!(out[0].detail.contains("stack"), "{:?}", out[0]);
    let marks: Vec<String> =
        os.requests().into_iter().filter(|r| r.method == "PATCH" && r.path.contains("/resources/")).map(|r| r.path).collect();
    assert_eq!(marks.len(), 2, "root volume and server marked unhealthy: {marks:?}");
    assert!(marks.iter().all(|m| m.contains("demo-stack-kube_masters")), "marked in their parent stack: {marks:?}");
    assert_eq!(os.count("PATCH", "/stacks/demo-stack/stack-c1", Some("{}")), 1, "one stack update");

    let no_heat = cloud(fast(), false).await;
    let p = provider(&no_heat, json!({}), Some("c1"));
    let e = p.replace(&[master()]).await.unwrap_err();
    assert!(matches!(&e, CloudError::Unsupported { action: Action::Replace, reason, .. } if reason.contains("no Heat stack")), "{e}");
    assert_eq!(no_heat.count("POST", "/action", Some("os-stop")), 0, "nothing destructive was done");
}

#[tokio::test]
async fn health_is_reported_only_when_it_changes() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    let bad = HealthReport { healthy: false, unhealthy_nodes: vec![("demo-worker-0".into(), "NodeCondition".into())] };
    p.report_health(&bad).await.unwrap();
    p.report_health(&bad).await.unwrap();
    assert_eq!(os.count("PATCH", "/clusters/c1", None), 1);
    assert_eq!(os.cluster("c1").unwrap().health_status.as_deref(), Some("UNHEALTHY"));
    p.report_health(&HealthReport { healthy: true, unhealthy_nodes: vec![] }).await.unwrap();
    assert_eq!(os.cluster("c1").unwrap().health_status.as_deref(), Some("HEALTHY"));
}

#[tokio::test]
async fn nova_strategy_rebuilds_with_the_current_image() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({"strategy": "nova"}), None);
    assert_eq!(p.repair_allowed().await.unwrap(), RepairGate::Allowed);
    p.replace(&[worker()]).await.unwrap();
    assert_eq!(os.count("POST", "/action", Some("\"imageRef\":\"img-k8s\"")), 1);
    assert_eq!(os.count("POST", "/actions/resize", None), 0);
}

#[tokio::test]
async fn errors_name_service_call_and_status() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    let ghost = NodeInfo {
        name: "ghost".into(),
        provider_id: Some("openstack:///99999999-9999-9999-9999-999999999999".into()),
        ..Default::default()
    };
    let e = p.reboot(&ghost).await.unwrap_err();
    match &e {
        CloudError::Call { call, status, message } => {
            assert!(call.starts_with("nova POST /servers/99999999-9999-9999-9999-999999999999/action (reboot)"), "{call}");
            assert_eq!(*status, Some(404));
            assert!(message.contains("could not be found"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let unmapped = NodeInfo { name: "bare".into(), ..Default::default() };
    assert!(matches!(p.reboot(&unmapped).await, Err(CloudError::NoServer { .. })));
    os.set_error_rate(1.0);
    let e = p.repair_allowed().await.unwrap_err().to_string();
    assert!(e.contains("magnum GET /v1/clusters/c1") && e.contains("503"), "{e}");
}
