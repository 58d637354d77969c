//! The provider on each Magnum driver the fake plays (Heat, vexxhost's Cluster API,
//! magnum-capi-helm): how the driver is found, what a replace sends, and that Magnum
//! sees one write of a cluster at a time.

use autohealer_cloud::{Action, CloudError, CloudProvider, NodeInfo, Phase, Progress, RepairGate, Role};
use autohealer_openstack::OpenStackProvider;
use autohealer_testkit::openstack::{self as fake, FakeDriver, FakeOpenStack, OsOptions};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const CLUSTER: &str = "c1";
const MASTER: &str = "00000000-0000-0000-0000-0000000000aa";

fn worker_id(i: usize) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

/// One master and `workers` workers, the cluster playing `driver`.
async fn cloud(workers: usize, driver: FakeDriver) -> FakeOpenStack {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let os = FakeOpenStack::start(OsOptions {
        reboot_time: Duration::from_millis(300),
        stop_time: Duration::from_millis(100),
        update_time: Duration::from_millis(1500),
        ..Default::default()
    })
    .await
    .unwrap();
    os.add_server(MASTER, "demo-master-0", "10.0.1.1", false);
    let ids: Vec<String> = (0..workers).map(worker_id).collect();
    for (i, id) in ids.iter().enumerate() {
        os.add_server(id, &format!("demo-worker-{i}"), &format!("10.0.0.{}", i + 11), false);
    }
    os.add_cluster(CLUSTER, "demo", &[MASTER.into()], &ids, true);
    if driver != FakeDriver::Heat {
        os.set_magnum_driver(CLUSTER, driver);
    }
    os
}

fn provider(os: &FakeOpenStack, extra: serde_json::Value) -> OpenStackProvider {
    let mut block = json!({"auth-url": os.auth_url(), "user-id": fake::USER_ID, "password": fake::PASSWORD, "project-id": fake::PROJECT_ID, "region": fake::REGION, "stop-timeout": "5s", "cluster-busy-timeout": "30s"});
    for (k, v) in extra.as_object().unwrap() {
        block[k] = v.clone();
    }
    autohealer_openstack::build(Some(&block), Some(CLUSTER), None).unwrap()
}

fn worker(i: usize) -> NodeInfo {
    NodeInfo {
        name: format!("demo-worker-{i}"),
        role: Some(Role::Worker),
        provider_id: Some(format!("openstack:///{}", worker_id(i))),
        addresses: vec![("InternalIP".into(), format!("10.0.0.{}", i + 11))],
        ..Default::default()
    }
}

fn master() -> NodeInfo {
    NodeInfo {
        name: "demo-master-0".into(),
        role: Some(Role::Master),
        provider_id: Some(format!("openstack:///{MASTER}")),
        addresses: vec![("InternalIP".into(), "10.0.1.1".into())],
        ..Default::default()
    }
}

/// Every call of a replace, as the healer makes them; the phases seen.
async fn replace_all(p: &OpenStackProvider, node: &NodeInfo) -> Result<(Vec<Phase>, String), CloudError> {
    let mut at: Option<Phase> = None;
    let mut seen = Vec::new();
    loop {
        match p.replace(node, at.as_ref(), false).await? {
            Progress::Next(next) => {
                assert!(at.as_ref().is_none_or(|prev| !prev.out_of_service || next.out_of_service), "out_of_service dropped");
                seen.push(next.clone());
                at = Some(next);
            }
            Progress::Done(out) => return Ok((seen, out.detail)),
        }
    }
}

fn names(phases: &[Phase]) -> Vec<&str> {
    phases.iter().map(|p| p.name.as_str()).collect()
}

fn driver_of(p: &OpenStackProvider) -> String {
    p.describe().into_iter().find(|(k, _)| k == "magnum-driver").map(|(_, v)| v).unwrap_or_default()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn the_driver_is_found_from_what_magnum_and_heat_answer_or_set_by_config() {
    for (driver, expect) in [(FakeDriver::Heat, "heat"), (FakeDriver::ClusterApi, "cluster-api"), (FakeDriver::CapiHelm, "capi-helm")] {
        let os = cloud(2, driver).await;
        let p = provider(&os, json!({}));
        assert_eq!(driver_of(&p), "not yet known");
        assert_eq!(p.repair_allowed().await.unwrap(), RepairGate::Allowed, "{expect}");
        assert_eq!(driver_of(&p), expect);
        let from = p.describe().into_iter().find(|(k, _)| k == "magnum-driver-from").map(|(_, v)| v).unwrap();
        assert!(from.contains("stack"), "{expect}: {from}");
        assert_eq!(p.supports(Action::Replace, Role::Worker), driver != FakeDriver::CapiHelm, "{expect}");
        assert_eq!(p.supports(Action::Replace, Role::Master), driver == FakeDriver::Heat, "{expect}");
        assert!(p.supports(Action::Reboot, Role::Master) && p.supports(Action::Reboot, Role::Worker));
        assert_eq!(p.delegated(Action::Replace, Role::Master).is_some(), driver != FakeDriver::Heat, "{expect}");
    }
    // The configured driver wins, and is not looked up.
    let os = cloud(2, FakeDriver::Heat).await;
    let p = provider(&os, json!({"magnum-driver": "capi-helm"}));
    assert_eq!(driver_of(&p), "capi-helm");
    assert!(!p.supports(Action::Replace, Role::Worker));
    let e = autohealer_openstack::build(
        Some(&json!({"auth-url": os.auth_url(), "user-id": "u", "password": "p", "magnum-driver": "kubeadm"})),
        Some(CLUSTER),
        None,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("openstack.magnum-driver") && e.to_string().contains("kubeadm"), "{e}");
}

#[tokio::test]
async fn on_the_cluster_api_driver_the_label_is_not_permission_and_a_failed_cluster_is_named_with_its_reason() {
    let os = cloud(2, FakeDriver::ClusterApi).await;
    os.set_cluster_label(CLUSTER, "auto_healing_enabled", Some("false"));
    let p = provider(&os, json!({}));
    assert_eq!(p.repair_allowed().await.unwrap(), RepairGate::Allowed, "the label turns the cluster's MachineHealthChecks on");
    os.set_cluster_status_reason(CLUSTER, "UPDATE_FAILED", "Machine demo-md-0-x failed to provision");
    let RepairGate::Denied(why) = p.repair_allowed().await.unwrap() else { panic!("a failed cluster denies repairs") };
    assert!(why.contains("UPDATE_FAILED") && why.contains("failed to provision"), "{why}");
}

#[tokio::test]
async fn a_cluster_api_worker_replace_grows_the_group_then_shrinks_it_back_removing_the_node() {
    let os = cloud(3, FakeDriver::ClusterApi).await;
    // The broken node is not Ready: after the grow, vexxhost's group stays in progress
    // until the shrink removes it.
    os.set_machine_ready(&worker_id(1), false);
    let p = provider(&os, json!({}));
    p.repair_allowed().await.unwrap();
    let (phases, detail) = replace_all(&p, &worker(1)).await.unwrap();
    assert_eq!(names(&phases), ["evidence", "grow"]);
    assert!(phases[1..].iter().all(|p| p.out_of_service) && !phases[0].out_of_service, "{phases:?}");
    assert!(detail.contains("resized back to 3"), "{detail}");
    assert_eq!(os.count("POST", "/servers/", Some("os-stop")), 0, "nothing is stopped: Cluster API deletes the machine itself");
    let resizes = os.cluster(CLUSTER).unwrap().resizes;
    assert_eq!(resizes, vec![("default-worker".into(), 4, vec![]), ("default-worker".into(), 3, vec![worker_id(1)])]);
    wait_until("Cluster API deletes the node's machine", || os.server(&worker_id(1)).is_none()).await;
    let servers = os.nodegroup_servers(CLUSTER, "worker");
    assert_eq!(servers.len(), 3, "{servers:?}");
    assert!(servers.contains(&worker_id(0)) && servers.contains(&worker_id(2)) && !servers.contains(&worker_id(1)), "{servers:?}");
    assert_eq!(os.nodegroup_count(CLUSTER, "worker"), 3);
    assert_eq!(os.cluster(CLUSTER).unwrap().overlapping_resizes, 0);
}

#[tokio::test]
async fn a_resumed_cluster_api_replace_never_grows_twice_and_a_stalled_one_gives_the_count_back() {
    let os = cloud(4, FakeDriver::ClusterApi).await;
    let p = provider(&os, json!({}));
    p.repair_allowed().await.unwrap();
    let magnum = autohealer_openstack::clients::Magnum(p.session());
    let resizes = || os.cluster(CLUSTER).unwrap().resizes;

    // Cut after the grow went out: resumed, it is not grown again, only shrunk back.
    let Progress::Next(evidence) = p.replace(&worker(0), None, false).await.unwrap() else { panic!() };
    let Progress::Next(grow) = p.replace(&worker(0), Some(&evidence), false).await.unwrap() else { panic!() };
    assert_eq!(grow.get("node_count"), Some("4"));
    magnum.resize(CLUSTER, "default-worker", 5, &[]).await.unwrap();
    let Progress::Done(done) = p.replace(&worker(0), Some(&grow), true).await.unwrap() else { panic!() };
    assert!(done.detail.contains("resized back to 4"), "{}", done.detail);
    assert_eq!(resizes().len(), 2, "one grow (sent before the cut) and one shrink: {:?}", resizes());
    wait_until("the machine is deleted", || os.server(&worker_id(0)).is_none()).await;
    // Resumed once more after all that: nothing is sent.
    let Progress::Done(again) = p.replace(&worker(0), Some(&grow), true).await.unwrap() else { panic!() };
    assert!(again.detail.contains("went out earlier"), "{}", again.detail);
    assert_eq!(resizes().len(), 2);

    // A replace stalled after its grow: restoring gives the size back, removing the
    // node's own machine; restoring again does nothing.
    let Progress::Next(evidence) = p.replace(&worker(1), None, false).await.unwrap() else { panic!() };
    let Progress::Next(grow) = p.replace(&worker(1), Some(&evidence), false).await.unwrap() else { panic!() };
    wait_until("the group settles", || os.nodegroup_servers(CLUSTER, "worker").len() == 4).await;
    magnum.resize(CLUSTER, "default-worker", 5, &[]).await.unwrap();
    let out = p.restore(&worker(1), &grow).await.unwrap();
    assert!(out.detail.contains("resized back to 4"), "{}", out.detail);
    assert_eq!(resizes().last().unwrap(), &("default-worker".to_string(), 4, vec![worker_id(1)]));
    let out = p.restore(&worker(1), &grow).await.unwrap();
    assert!(out.detail.contains("nothing to restore"), "{}", out.detail);
    assert_eq!(os.cluster(CLUSTER).unwrap().overlapping_resizes, 0, "{:?}", resizes());
}

#[tokio::test]
async fn a_cluster_api_group_at_its_maximum_is_not_touched_and_an_autoscaled_one_is_delegated() {
    let os = cloud(3, FakeDriver::ClusterApi).await;
    os.set_max_node_count(CLUSTER, "worker", Some(3));
    let p = provider(&os, json!({}));
    p.repair_allowed().await.unwrap();
    let e = replace_all(&p, &worker(0)).await.unwrap_err();
    assert!(matches!(&e, CloudError::Unsupported { reason, .. } if reason.contains("max_node_count")), "{e}");
    assert!(os.cluster(CLUSTER).unwrap().resizes.is_empty());
    // A second replace of the group is not held by the first one's claim.
    os.set_max_node_count(CLUSTER, "worker", None);
    replace_all(&p, &worker(2)).await.unwrap();

    let os = cloud(3, FakeDriver::ClusterApi).await;
    os.set_cluster_label(CLUSTER, "auto_scaling_enabled", Some("true"));
    let p = provider(&os, json!({}));
    p.repair_allowed().await.unwrap();
    assert!(!p.supports(Action::Replace, Role::Worker));
    assert!(p.delegated(Action::Replace, Role::Worker).is_some_and(|to| to.contains("auto_scaling_enabled")));
}

#[tokio::test]
async fn five_cluster_api_replaces_at_once_write_to_magnum_one_at_a_time() {
    let os = cloud(8, FakeDriver::ClusterApi).await;
    for i in 0..5 {
        os.set_machine_ready(&worker_id(i), false);
    }
    let p = Arc::new(provider(&os, json!({})));
    p.repair_allowed().await.unwrap();
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move { replace_all(&p, &worker(i)).await.map(|(_, d)| d) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let c = os.cluster(CLUSTER).unwrap();
    assert_eq!(c.overlapping_resizes, 0, "no resize of the cluster while another ran: {:?}", c.resizes);
    assert_eq!(c.resizes.len(), 10, "a grow and a shrink per node: {:?}", c.resizes);
    wait_until("the group is whole again", || os.nodegroup_servers(CLUSTER, "worker").len() == 8).await;
    let servers = os.nodegroup_servers(CLUSTER, "worker");
    assert!((0..5).all(|i| !servers.contains(&worker_id(i))), "each failed node's machine was replaced: {servers:?}");
    assert!((5..8).all(|i| servers.contains(&worker_id(i))), "no healthy machine was taken: {servers:?}");
    assert_eq!(os.nodegroup_count(CLUSTER, "worker"), 8);
}

#[tokio::test]
async fn heat_resizes_of_one_cluster_wait_for_each_other_and_for_anyone_elses() {
    let os = cloud(3, FakeDriver::Heat).await;
    let p = Arc::new(provider(&os, json!({})));
    p.repair_allowed().await.unwrap();
    // Someone else (cluster-autoscaler, an operator) resizes the cluster first.
    autohealer_openstack::clients::Magnum(p.session()).resize(CLUSTER, "default-worker", 4, &[]).await.unwrap();
    let tasks: Vec<_> = (0..2)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move { replace_all(&p, &worker(i)).await.map(|(_, d)| d) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let c = os.cluster(CLUSTER).unwrap();
    assert_eq!(c.overlapping_resizes, 0, "{:?}", c.resizes);
    assert_ne!(c.status, "UPDATE_FAILED", "{:?}", c.status_reason);
    assert_eq!(c.resizes.len(), 3, "{:?}", c.resizes);
}

#[tokio::test]
async fn a_heat_resize_sent_while_another_runs_fails_the_cluster_as_magnum_does() {
    let os = cloud(3, FakeDriver::Heat).await;
    let p = provider(&os, json!({}));
    p.repair_allowed().await.unwrap();
    // Two writes behind the provider's back: the second finds the stack updating.
    let magnum = autohealer_openstack::clients::Magnum(p.session());
    magnum.resize(CLUSTER, "default-worker", 3, &[worker_id(0)]).await.unwrap();
    magnum.resize(CLUSTER, "default-worker", 3, &[worker_id(1)]).await.unwrap();
    let c = os.cluster(CLUSTER).unwrap();
    assert_eq!(c.status, "UPDATE_FAILED");
    assert!(c.status_reason.as_deref().is_some_and(|r| r.contains("in progress")), "{:?}", c.status_reason);
    let RepairGate::Denied(why) = p.repair_allowed().await.unwrap() else { panic!("a failed cluster denies repairs") };
    assert!(why.contains("UPDATE_FAILED") && why.contains("in progress"), "the gate names the reason: {why}");
}

#[tokio::test]
async fn on_capi_helm_and_for_cluster_api_masters_a_replace_is_delegated_and_nothing_is_touched() {
    for (driver, node) in [(FakeDriver::CapiHelm, worker(0)), (FakeDriver::CapiHelm, master()), (FakeDriver::ClusterApi, master())] {
        let os = cloud(2, driver).await;
        let p = provider(&os, json!({}));
        p.repair_allowed().await.unwrap();
        let to = p.delegated(Action::Replace, node.role.unwrap()).expect("delegated");
        assert!(to.contains("MachineHealthCheck"), "{to}");
        let e = p.replace(&node, None, false).await.unwrap_err();
        assert!(matches!(&e, CloudError::Unsupported { reason, .. } if reason.contains("delegated")), "{e}");
        assert_eq!(os.requests().iter().filter(|r| r.method != "GET" && r.service != "identity").count(), 0, "nothing written");
    }
}
