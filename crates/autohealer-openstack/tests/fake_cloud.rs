//! The provider against the testkit's fake OpenStack: every call and error path.

use autohealer_cloud::{Action, ActionOutcome, CloudError, CloudProvider, HealthReport, NodeInfo, Phase, Progress, RepairGate, Role};
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

const WORKER: &str = "11111111-1111-1111-1111-111111111111";
const MASTER: &str = "22222222-2222-2222-2222-222222222222";

/// Drives a replace as the healer does: each phase returned is the next call. Returns
/// the phases seen and the outcome, and checks that `out_of_service`, once set, stays.
async fn replace_all(p: &OpenStackProvider, node: &NodeInfo) -> Result<(Vec<Phase>, ActionOutcome), CloudError> {
    drive(p, node, None, false).await
}

/// Drives a replace from `at`, the first call `resumed` as given, the rest not.
async fn drive(
    p: &OpenStackProvider,
    node: &NodeInfo,
    at: Option<Phase>,
    resumed: bool,
) -> Result<(Vec<Phase>, ActionOutcome), CloudError> {
    let mut seen: Vec<Phase> = at.iter().cloned().collect();
    let mut at = at;
    let mut resumed = resumed;
    loop {
        match p.replace(node, at.as_ref(), resumed).await? {
            Progress::Next(next) => {
                if let Some(prev) = &at {
                    assert!(!prev.out_of_service || next.out_of_service, "out_of_service dropped from {prev:?} to {next:?}");
                }
                assert!(seen.len() < 20, "a replace that never ends: {seen:?}");
                seen.push(next.clone());
                at = Some(next);
                resumed = false;
            }
            Progress::Done(outcome) => return Ok((seen, outcome)),
        }
    }
}

fn names(phases: &[Phase]) -> Vec<&str> {
    phases.iter().map(|p| p.name.as_str()).collect()
}

/// Drives a replace until it returns the phase named `name`, without making its call.
async fn drive_to(p: &OpenStackProvider, node: &NodeInfo, name: &str) -> Phase {
    let mut at: Option<Phase> = None;
    loop {
        match p.replace(node, at.as_ref(), false).await.unwrap() {
            Progress::Next(next) if next.name == name => return next,
            Progress::Next(next) => at = Some(next),
            Progress::Done(o) => panic!("done before {name}: {o:?}"),
        }
    }
}

fn stops(os: &FakeOpenStack, id: &str) -> usize {
    os.count("POST", &format!("/servers/{id}/action"), Some("os-stop"))
}

#[tokio::test]
async fn reboot_once_and_409_while_rebooting_counts_as_in_progress() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    let first = p.reboot(&worker()).await.unwrap();
    assert!(first.detail.contains("accepted"), "{first:?}");
    assert_eq!(first.server_id.as_deref(), Some("11111111-1111-1111-1111-111111111111"));
    let second = p.reboot(&worker()).await.unwrap();
    assert!(second.detail.contains("already rebooting"), "{second:?}");
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
    let (phases, out) = replace_all(&p, &worker()).await.unwrap();
    assert_eq!(names(&phases), ["evidence", "detach", "stop", "wait-stopped", "resize"]);
    assert_eq!(phases.iter().map(|p| p.out_of_service).collect::<Vec<_>>(), [false, false, true, true, true]);
    assert_eq!(phases[0].get("nodegroup"), Some("default-worker"));
    assert_eq!(phases[0].get("node_count"), Some("1"));
    assert!(out.detail.contains("default-worker"), "{out:?}");
    let evidence = out.evidence.as_deref().expect("console output kept to the end");
    assert!(evidence.contains("simulated boot line 60") && !evidence.contains("read after"), "{evidence}");
    let id = WORKER;
    assert_eq!(os.count("DELETE", &format!("/servers/{id}/os-volume_attachments/vol-data-{id}"), None), 1, "the data volume is detached");
    assert_eq!(os.count("DELETE", &format!("/os-volume_attachments/vol-root-{id}"), None), 0, "the root volume stays");
    assert_eq!(stops(&os, id), 1);
    let resize = os.requests().into_iter().find(|r| r.path.ends_with("/actions/resize")).expect("a resize");
    let body: serde_json::Value = serde_json::from_str(&resize.body).unwrap();
    assert_eq!(body, json!({"node_count": 1, "nodes_to_remove": [id], "nodegroup": "default-worker"}));
    assert_eq!(resize.status, 202);
}

#[tokio::test]
async fn worker_replace_resumed_after_stop_finishes_without_a_second_stop() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({"request-timeout": "1s"}), Some("c1"));
    let stop = drive_to(&p, &worker(), "stop").await;
    assert!(stop.out_of_service);
    // The stop is carried out but answered too late: the leader cannot tell it happened.
    os.stall_next(&format!("POST /compute/v2.1/servers/{WORKER}/action"), 1, Duration::from_secs(3));
    let e = p.replace(&worker(), Some(&stop), false).await.unwrap_err();
    assert!(e.is_uncertain(), "{e}");
    assert_eq!(stops(&os, WORKER), 1);
    // A new leader (nothing in memory) resumes from the ledger.
    let next = provider(&os, json!({}), Some("c1"));
    let (phases, out) = drive(&next, &worker(), Some(stop), true).await.unwrap();
    assert_eq!(names(&phases), ["stop", "wait-stopped", "resize"]);
    assert_eq!(stops(&os, WORKER), 1, "the stop is not sent again");
    assert_eq!(os.count("POST", "/actions/resize", None), 1);
    assert!(out.detail.contains("resize to 1 nodes accepted"), "{out:?}");
    assert!(out.evidence.as_deref().is_some_and(|e| e.contains("read after")), "the new leader reads the console again: {out:?}");
}

#[tokio::test]
async fn resumed_resize_is_not_sent_again() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({"request-timeout": "1s"}), Some("c1"));
    let resize = drive_to(&p, &worker(), "resize").await;
    assert!(resize.out_of_service);
    os.stall_next("POST /container-infra/v1/clusters/c1/actions/resize", 1, Duration::from_secs(3));
    let e = p.replace(&worker(), Some(&resize), false).await.unwrap_err();
    assert!(e.is_uncertain(), "{e}");
    let Progress::Done(out) = p.replace(&worker(), Some(&resize), true).await.unwrap() else { panic!("a resumed resize is the last call") };
    assert!(out.detail.contains("went out earlier") || out.detail.contains("may already have been sent"), "{out:?}");
    assert!(out.evidence.as_deref().is_some_and(|e| e.contains("simulated boot line 60") && !e.contains("read after")), "{out:?}");
    assert_eq!(os.count("POST", "/actions/resize", None), 1, "one resize, never two");
    assert!(!os.nodegroup_servers("c1", "worker").contains(&WORKER.to_string()), "the first resize was carried out");
}

// A leader that wrote the resize phase and stopped before sending it: resumed, a resize
// is never sent twice, so it is not sent now either; the healer restores the machine if
// no node comes.
#[tokio::test]
async fn a_resumed_resize_is_never_sent_a_second_time() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    let resize = drive_to(&p, &worker(), "resize").await;
    let Progress::Done(out) = p.replace(&worker(), Some(&resize), true).await.unwrap() else { panic!("the resize is the last call") };
    assert!(out.detail.contains("may already have been sent"), "{out:?}");
    assert_eq!(os.count("POST", "/actions/resize", None), 0);
}

#[tokio::test]
async fn restore_starts_a_server_a_stalled_replace_left_stopped() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    let resize = drive_to(&p, &worker(), "resize").await;
    assert_eq!(os.server(WORKER).unwrap().status, "SHUTOFF");
    let out = p.restore(&worker(), &resize).await.unwrap();
    assert!(out.detail.contains("start accepted"), "{out:?}");
    assert_eq!(os.count("POST", &format!("/servers/{WORKER}/action"), Some("os-start")), 1);
    let again = p.restore(&worker(), &resize).await.unwrap();
    assert!(again.detail.contains("already starting"), "{again:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(os.server(WORKER).unwrap().status, "ACTIVE");
    let running = p.restore(&worker(), &resize).await.unwrap();
    assert!(running.detail.contains("nothing to start"), "{running:?}");
    assert_eq!(os.count("POST", "/action", Some("os-start")), 1, "a running server is not started");
    assert_eq!(os.count("POST", "/actions/resize", None), 0);

    // Nova refuses to start a running server, as the fake does.
    let settings = autohealer_openstack::OpenStackConfig::parse(Some(
        &json!({"auth-url": os.auth_url(), "user-id": fake::USER_ID, "password": fake::PASSWORD, "project-id": fake::PROJECT_ID}),
    ))
    .unwrap()
    .resolve(Some("c1"), &|_| None)
    .unwrap();
    let session = autohealer_openstack::Session::new(settings, None).unwrap();
    let e = autohealer_openstack::clients::Nova(&session).start(WORKER).await.unwrap_err();
    assert!(matches!(&e, CloudError::Call { status: Some(409), message, .. } if message.contains("vm_state active")), "{e}");

    // A replace that stopped nothing yet restores nothing; a server gone is nothing to start.
    let before = p.restore(&master(), &Phase::new("detach")).await.unwrap();
    assert!(before.detail.contains("nothing to restore"), "{before:?}");
    let ghost = NodeInfo {
        name: "ghost".into(),
        provider_id: Some("openstack:///99999999-9999-9999-9999-999999999999".into()),
        ..Default::default()
    };
    let gone = p.restore(&ghost, &Phase::new("resize").out_of_service()).await.unwrap();
    assert!(gone.detail.contains("gone"), "{gone:?}");
    assert_eq!(os.count("POST", "/action", Some("os-start")), 2, "the one start and the refused one sent directly");
}

#[tokio::test]
async fn reboot_of_a_stopped_server_is_refused_with_409() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    drive_to(&p, &worker(), "resize").await;
    assert_eq!(os.server(WORKER).unwrap().status, "SHUTOFF");
    let e = p.reboot(&worker()).await.unwrap_err();
    match &e {
        CloudError::Call { call, status, message } => {
            assert_eq!(call, &format!("nova POST /servers/{WORKER}/action (reboot)"));
            assert_eq!(*status, Some(409));
            assert!(message.contains("vm_state stopped"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("HTTP 409") && !e.to_string().contains("already rebooting"), "{e}");
}

#[tokio::test]
async fn master_replace_through_heat_and_clear_failure_without_heat() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    let (phases, out) = replace_all(&p, &master()).await.unwrap();
    assert_eq!(names(&phases), ["evidence", "detach", "stop", "wait-stopped", "mark-unhealthy", "stack-update"]);
    assert!(phases[2..].iter().all(|p| p.out_of_service) && !phases[1].out_of_service, "{phases:?}");
    assert!(out.detail.contains("stack"), "{out:?}");
    assert!(out.evidence.as_deref().is_some_and(|e| e.contains("demo-master-0")), "{out:?}");
    let marks: Vec<String> =
        os.requests().into_iter().filter(|r| r.method == "PATCH" && r.path.contains("/resources/")).map(|r| r.path).collect();
    assert_eq!(marks.len(), 2, "root volume and server marked unhealthy: {marks:?}");
    assert!(marks.iter().all(|m| m.contains("demo-stack-kube_masters")), "marked in their parent stack: {marks:?}");
    assert_eq!(os.count("PATCH", "/stacks/demo-stack/stack-c1", Some("{}")), 1, "one stack update");
    assert_eq!(stops(&os, MASTER), 1);

    // Resumed at the stack update, it is not sent again.
    let update = phases.last().unwrap();
    let Progress::Done(again) = p.replace(&master(), Some(update), true).await.unwrap() else {
        panic!("the stack update is the last call")
    };
    assert!(again.detail.contains("may already have been sent") || again.detail.contains("went out earlier"), "{again:?}");
    assert_eq!(os.count("PATCH", "/stacks/demo-stack/stack-c1", Some("{}")), 1, "still one stack update");

    let no_heat = cloud(fast(), false).await;
    let p = provider(&no_heat, json!({}), Some("c1"));
    let e = replace_all(&p, &master()).await.unwrap_err();
    assert!(
        matches!(&e, CloudError::Unsupported { action: Action::Replace, reason, .. } if reason.contains("delegated") && reason.contains("openstack.magnum-driver")),
        "{e}"
    );
    assert_eq!(no_heat.count("POST", "/action", None), 0, "nothing was done to the server");
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
    assert_eq!(os.count("GET", "/clusters/c1", None), 1, "the label read once serves the later reports");
}

#[tokio::test]
async fn health_status_is_not_written_while_auto_healing_is_disabled() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({}), Some("c1"));
    os.set_cluster_label("c1", "auto_healing_enabled", Some("false"));
    assert!(matches!(p.repair_allowed().await.unwrap(), RepairGate::Denied(_)));
    let reads = os.count("GET", "/clusters/c1", None);
    let bad = HealthReport { healthy: false, unhealthy_nodes: vec![("demo-worker-0".into(), "NodeCondition".into())] };
    p.report_health(&bad).await.unwrap();
    p.report_health(&bad).await.unwrap();
    assert_eq!(os.count("PATCH", "/clusters/c1", None), 0, "nothing written while the cluster opts out");
    assert_eq!(os.cluster("c1").unwrap().health_status, None);
    assert_eq!(os.count("GET", "/clusters/c1", None), reads, "the label the gate read is used, not read again");

    os.set_cluster_label("c1", "auto_healing_enabled", Some("true"));
    assert_eq!(p.repair_allowed().await.unwrap(), RepairGate::Allowed);
    p.report_health(&bad).await.unwrap();
    assert_eq!(os.count("PATCH", "/clusters/c1", None), 1, "the pending report is written once enabled");
    assert_eq!(os.cluster("c1").unwrap().health_status.as_deref(), Some("UNHEALTHY"));

    // Without the gate asked first, the report reads the label itself.
    let fresh = provider(&os, json!({}), Some("c1"));
    os.set_cluster_label("c1", "auto_healing_enabled", None);
    fresh.report_health(&HealthReport { healthy: true, unhealthy_nodes: vec![] }).await.unwrap();
    assert_eq!(os.count("PATCH", "/clusters/c1", None), 1, "no label, no write");
}

#[tokio::test]
async fn nova_strategy_rebuilds_with_the_current_image() {
    let os = cloud(fast(), true).await;
    let p = provider(&os, json!({"strategy": "nova"}), None);
    assert_eq!(p.repair_allowed().await.unwrap(), RepairGate::Allowed);
    let Progress::Done(out) = p.replace(&worker(), None, false).await.unwrap() else { panic!("a rebuild is one call") };
    assert!(out.detail.contains("rebuild with image img-k8s accepted"), "{out:?}");
    assert_eq!(os.count("POST", "/action", Some("\"imageRef\":\"img-k8s\"")), 1);
    assert_eq!(os.count("POST", "/actions/resize", None), 0);

    // Resumed (the answer was lost, or a new leader): read, never rebuilt again.
    let Progress::Done(during) = p.replace(&worker(), None, true).await.unwrap() else { panic!("one call") };
    assert!(during.detail.contains("already rebuilding"), "{during:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let Progress::Done(after) = p.replace(&worker(), None, true).await.unwrap() else { panic!("one call") };
    assert!(after.detail.contains("may already have been sent"), "{after:?}");
    assert_eq!(os.count("POST", "/action", Some("imageRef")), 1, "one rebuild, never two");
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
