//! End-to-end with the real `autohealer` binary as a child process, configured with
//! `cloud-provider: openstack`, against the testkit's apiserver (or a real one with
//! `AUTOHEALER_E2E_KUBECONFIG`) and the fake OpenStack, both coupled to a simulated
//! cluster. The fake cloud's request log shows what the healer did.

mod common;

use autohealer_cloud::Role;
use autohealer_testkit::cluster::{CleanupGuard, NodeRecorder, TestCluster};
use autohealer_testkit::openstack::{self as fake, FakeOpenStack, OsOptions};
use autohealer_testkit::sim::{Cure, Fault, SIM_LABEL, SimCluster, SimOptions};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, ResourceExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

struct World {
    cluster: TestCluster,
    os: FakeOpenStack,
    sim: Arc<SimCluster>,
    dir: PathBuf,
    prefix: String,
    kubeconfig: PathBuf,
    /// Last, so that it runs once the simulation has stopped.
    _cleanup: CleanupGuard,
}

fn unique() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() ^ (u128::from(std::process::id()) << 40);
    format!("{:x}", n).chars().rev().take(6).collect()
}

async fn world(workers: usize, heat: bool) -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start().await.unwrap();
    let prefix = format!("bin-{}", unique());
    let _cleanup = cluster.cleanup_guard(&prefix);
    let os = FakeOpenStack::start(OsOptions {
        reboot_time: Duration::from_millis(300),
        stop_time: Duration::from_millis(100),
        update_time: Duration::from_millis(500),
        ..Default::default()
    })
    .await
    .unwrap();
    let opts = SimOptions { masters: 1, workers, time_scale: 0.05, prefix: prefix.clone(), ..Default::default() };
    let sim = SimCluster::start(cluster.client.clone(), opts).await.unwrap();
    sim.attach_cloud(&os, &format!("c-{prefix}"), heat);
    let dir = std::env::temp_dir().join(format!("autohealer-e2e-{prefix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    // On the fake apiserver the healer gets its own identity, so its calls can be held
    // to the shipped RBAC.
    let text = match &cluster.fake {
        Some(f) => f.kubeconfig_for("healer"),
        None => cluster.kubeconfig.clone(),
    };
    std::fs::write(&kubeconfig, text).unwrap();
    World { cluster, os, sim, dir, prefix, kubeconfig, _cleanup }
}

struct Healer {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Healer {
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl World {
    /// Every call the healer made is one the shipped RBAC grants.
    fn assert_rbac_covers_calls(&self) {
        let Some(fake) = &self.cluster.fake else { return };
        let granted = common::granted();
        let calls = fake.client_calls("healer");
        assert!(!calls.is_empty());
        for (verb, resource) in calls {
            let need = common::as_rbac(&verb, &resource);
            assert!(granted.contains(&need), "the healer called {verb} {resource}, which manifests/rbac.yaml does not grant");
        }
    }

    fn config(&self, name: &str, extra: &str) -> PathBuf {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let text = format!(
            "cluster-name: c-{p}\ncloud-provider: openstack\nmonitor-interval: 1s\ncheck-delay-after-add: 0s\nrecovery-stable-window: 1s\npause-configmap: kube-system/autohealer-{p}\nrebuild-delay-after-reboot: 6s\nreplace-timeout: 60s\nnode-selector: {SIM_LABEL}={p}\nleader-election:\n  lease-name: autohealer-{p}\n  lease-duration: 3s\n  renew-grace: 1s\nadmin:\n  listen: 127.0.0.1:{port}\nhealthcheck:\n  master:\n    - type: Endpoint\n      params:\n        protocol: HTTP\n        port: {hp}\n        unhealthy-duration: 2s\n        timeout: 1s\n    - type: NodeCondition\n      params:\n        unhealthy-duration: 2s\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: 2s\nopenstack:\n  auth-url: {auth}\n  user-id: {user}\n  password: {pw}\n  project-id: {project}\n  region: {region}\n  stop-timeout: 5s\n{extra}",
            p = self.prefix,
            hp = self.sim.healthz_port(),
            auth = self.os.auth_url(),
            user = fake::USER_ID,
            pw = fake::PASSWORD,
            project = fake::PROJECT_ID,
            region = fake::REGION,
        );
        let path = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn healer(&self, config: &PathBuf, identity: &str) -> Healer {
        self.healer_logging(config, identity, "info").await
    }

    async fn healer_logging(&self, config: &PathBuf, identity: &str, level: &str) -> Healer {
        let log = self.dir.join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_autohealer"))
            .args(["run", "--config"])
            .arg(config)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--log-format", "json", "--log-level", level])
            .env("POD_NAME", identity)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Healer { child, log }
    }

    async fn node(&self, name: &str) -> Option<Node> {
        Api::<Node>::all(self.cluster.client.clone()).get_opt(name).await.ok().flatten()
    }

    fn server(&self, node: &str) -> String {
        self.sim.server_id(node).unwrap()
    }

    fn reboots(&self, server: &str) -> usize {
        self.os.count("POST", &format!("/servers/{server}/action"), Some("\"reboot\""))
    }

    async fn holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.cluster.client.clone(), "kube-system");
        leases.get_opt(&format!("autohealer-{}", self.prefix)).await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity)
    }
}

async fn until<F, Fut>(what: &str, healers: &[&Healer], mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let ok = tokio::time::timeout(Duration::from_secs(90), async {
        while !f().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if ok.is_err() {
        for h in healers {
            eprintln!("--- healer log {}:\n{}", h.log.display(), h.log());
        }
        panic!("timed out waiting until {what}");
    }
}

fn ready(n: &Node) -> bool {
    n.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

fn released(n: &Option<Node>) -> bool {
    n.as_ref().is_some_and(|n| {
        ready(n)
            && !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
            && !n.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("autohealer.dev/repair"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_fixed_by_one_reboot_through_nova() {
    let w = world(2, true).await;
    let victim = w.sim.node_names(Role::Worker).into_iter().min().unwrap();
    let server = w.server(&victim);
    let h = w.healer(&w.config("reboot", ""), "replica-a").await;
    w.sim.inject(&victim, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until("Nova got the reboot", &[&h], || async { w.reboots(&server) == 1 }).await;
    until("the node recovered and was released", &[&h], || async { released(&w.node(&victim).await) }).await;
    assert_eq!(w.reboots(&server), 1, "exactly one reboot");
    assert_eq!(w.os.count("POST", "/actions/resize", None), 0, "no replace");
    until("Magnum shows the cluster healthy again", &[&h], || async {
        w.os.cluster(&format!("c-{}", w.prefix)).and_then(|c| c.health_status).as_deref() == Some("HEALTHY")
    })
    .await;
    assert!(w.os.count("PATCH", &format!("/clusters/c-{}", w.prefix), Some("UNHEALTHY")) >= 1, "the unhealthy node was reported to Magnum");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_that_stays_broken_is_replaced_once_through_magnum_resize() {
    let w = world(2, true).await;
    let original = w.sim.node_names(Role::Worker);
    let victim = original.iter().min().unwrap().clone();
    let server = w.server(&victim);
    // Workloads on the node: one evictable, one protected by a PodDisruptionBudget, one
    // of a DaemonSet (left alone).
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(w.cluster.client.clone(), "default");
    let pod = |name: &str, app: &str, daemon: bool| -> k8s_openapi::api::core::v1::Pod {
        let mut meta = serde_json::json!({"name": format!("{}-{name}", w.prefix), "labels": {"app": format!("{}-{app}", w.prefix)}});
        // Each has a controller: a pod nothing would recreate blocks the drain.
        meta["ownerReferences"] = if daemon {
            serde_json::json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "d1", "controller": true}])
        } else {
            serde_json::json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-rs"), "uid": format!("rs-{app}"), "controller": true}])
        };
        serde_json::from_value(
            serde_json::json!({"metadata": meta, "spec": {"nodeName": victim, "containers": [{"name": "c", "image": "x"}]}}),
        )
        .unwrap()
    };
    for (name, app, daemon) in [("batch", "batch", false), ("web", "web", false), ("agent", "agent", true)] {
        pods.create(&Default::default(), &pod(name, app, daemon)).await.unwrap();
        let ready = serde_json::json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(&format!("{}-{name}", w.prefix), &Default::default(), &kube::api::Patch::Merge(&ready)).await.unwrap();
    }
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> = Api::namespaced(w.cluster.client.clone(), "default");
    let pdb = serde_json::from_value(serde_json::json!({"metadata": {"name": format!("{}-web", w.prefix)}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": format!("{}-web", w.prefix)}}}})).unwrap();
    pdbs.create(&Default::default(), &pdb).await.unwrap();
    // Every version of the PDB-protected pod: once its node is gone, pod garbage
    // collection removes it (as on a real cluster), so what shows the PDB honoured is
    // that it was never evicted.
    let web = autohealer_testkit::cluster::PodRecorder::start(w.cluster.client.clone(), "default", &format!("{}-web", w.prefix));

    let h = w.healer(&w.config("replace", "drain:\n  timeout: 3s\n"), "replica-a").await;
    w.sim.inject(&victim, Fault::KubeletStopped, Cure::Replace);
    until("Nova got the reboot", &[&h], || async { w.reboots(&server) == 1 }).await;
    until("Magnum got the resize", &[&h], || async { w.os.count("POST", "/actions/resize", None) == 1 }).await;
    let resize = w.os.requests().into_iter().find(|r| r.path.ends_with("/actions/resize")).unwrap();
    let body: serde_json::Value = serde_json::from_str(&resize.body).unwrap();
    assert_eq!(body["nodes_to_remove"], serde_json::json!([server]));
    assert_eq!(body["node_count"], 2, "the node group keeps its size");
    until("the old node is gone", &[&h], || async { w.node(&victim).await.is_none() }).await;
    until("a new worker joined and is Ready", &[&h], || async {
        let workers = w.sim.node_names(Role::Worker);
        let mut ok = false;
        for n in workers.iter().filter(|n| !original.contains(n)) {
            ok |= w.node(n).await.is_some_and(|n| ready(&n));
        }
        ok
    })
    .await;
    assert_eq!(w.reboots(&server), 1);
    assert_eq!(w.os.count("POST", &format!("/servers/{server}/action"), Some("os-stop")), 1);
    assert_eq!(w.os.count("POST", "/actions/resize", None), 1, "exactly one replace");

    // The node was drained before the replace: the evictable pod went, the PDB kept its
    // pod (named in the Event), the DaemonSet pod was left alone.
    let events = w.cluster.node_events(&victim).await;
    let drained = events.iter().position(|(r, _)| r == "Drained").expect("a Drained Event");
    let issued_replace = events
        .iter()
        .rposition(|(r, n)| r == "RepairIssued" && n.contains("node group"))
        .unwrap_or_else(|| panic!("no RepairIssued of the replace: {events:?}"));
    assert!(drained < issued_replace, "drained before the replace: {events:?}");
    let note = &events[drained].1;
    assert!(
        note.contains("1 pods evicted")
            && note.contains(&format!("default/{}-web", w.prefix))
            && note.contains("1 DaemonSet or mirror pods"),
        "{note}"
    );
    // Evicted: gone, or Terminating on a node whose kubelet is gone (as on a real
    // cluster, until pod garbage collection removes it).
    let batch = pods.get_opt(&format!("{}-batch", w.prefix)).await.unwrap();
    assert!(batch.is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "the evictable pod was evicted");
    assert!(!web.versions().is_empty() && !web.evicted(), "the PDB was honoured");

    // The console output from before the stop is kept for the operator, and the Event says where.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(w.cluster.client.clone(), "kube-system");
    let kept = cms.list(&kube::api::ListParams::default().labels(&format!("autohealer.dev/evidence-for={victim}"))).await.unwrap();
    assert_eq!(kept.items.len(), 1);
    let data = kept.items[0].data.clone().unwrap();
    assert!(data["console.log"].contains("simulated boot line 60") && data["server"] == server, "{data:?}");
    let note = w
        .cluster
        .node_events(&victim)
        .await
        .into_iter()
        .filter(|(r, _)| r == "RepairIssued")
        .map(|(_, n)| n)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(note.contains("Console output before the step kept in ConfigMap kube-system/autohealer-evidence-"), "{note}");
    w.assert_rbac_covers_calls();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_with_failing_healthz_is_rebuilt_through_heat() {
    let w = world(1, true).await;
    let master = w.sim.node_names(Role::Master).pop().unwrap();
    let server = w.server(&master);
    let h = w.healer(&w.config("master", ""), "replica-a").await;
    w.sim.inject(&master, Fault::HealthzDown, Cure::Replace);
    until("Nova got the reboot", &[&h], || async { w.reboots(&server) == 1 }).await;
    until("Heat got the stack update", &[&h], || async { w.os.count("PATCH", "/stacks/", Some("{}")) == 1 }).await;
    until("the master is healthy and the repair closed", &[&h], || async {
        released(&w.node(&master).await) && !h.log().is_empty() && w.os.count("PATCH", "/resources/", None) == 2
    })
    .await;
    assert_eq!(w.os.count("PATCH", "/resources/", Some("mark_unhealthy")), 2, "server and root volume marked unhealthy");
    assert_eq!(w.reboots(&server), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_binary_changes_nothing() {
    let w = world(1, true).await;
    let victim = w.sim.node_names(Role::Worker).pop().unwrap();
    let recorder = NodeRecorder::start(w.cluster.client.clone(), &victim);
    let h = w.healer(&w.config("dry", "dry-run: true\n"), "replica-a").await;
    w.sim.inject(&victim, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until("the DryRun Event", &[&h], || async { w.cluster.node_events(&victim).await.iter().any(|(r, _)| r == "DryRun") }).await;
    let changing: Vec<_> = w.os.requests().into_iter().filter(|r| r.method != "GET" && r.service != "identity").collect();
    assert!(changing.is_empty(), "dry-run changed the cloud: {changing:?}");
    assert!(recorder.versions().iter().all(|v| !v.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("autohealer.dev/repair"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_hands_over_and_sigterm_releases_the_lease() {
    let w = world(2, true).await;
    let mut a = w.healer(&w.config("ha-a", ""), "replica-a").await;
    until("replica-a leads", &[&a], || async { w.holder().await.as_deref() == Some("replica-a") }).await;
    let b = w.healer(&w.config("ha-b", ""), "replica-b").await;
    let mut workers = w.sim.node_names(Role::Worker);
    workers.sort();
    let (first, second) = (workers[0].clone(), workers[1].clone());
    w.sim.inject(&first, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until("the leader reboots", &[&a, &b], || async { w.reboots(&w.server(&first)) == 1 }).await;
    until("the first repair closes", &[&a, &b], || async { released(&w.node(&first).await) }).await;

    a.child.kill().await.unwrap();
    until("replica-b takes the Lease", &[&b], || async { w.holder().await.as_deref() == Some("replica-b") }).await;
    w.sim.inject(&second, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until("the standby reboots", &[&b], || async { w.reboots(&w.server(&second)) == 1 }).await;
    assert_eq!(w.reboots(&w.server(&first)), 1, "the handover repeated nothing");

    let pid = b.pid().to_string();
    let mut b = b;
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), b.child.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(status.success(), "SIGTERM ends with exit 0: {status:?}\n{}", b.log());
    assert_ne!(w.holder().await.as_deref(), Some("replica-b"), "the Lease was released");
    w.assert_rbac_covers_calls();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_each_node_and_what_it_would_do_and_metrics_are_served() {
    let w = world(2, true).await;
    let victim = w.sim.node_names(Role::Worker).into_iter().min().unwrap();
    w.sim.inject(&victim, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    let cfg = w.config("plan", "");
    // Wait until the condition has been NotReady for longer than its 2s.
    until("the node is NotReady", &[], || async { w.node(&victim).await.is_some_and(|n| !ready(&n)) }).await;
    let mut out = String::new();
    until("plan proposes the reboot", &[], || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_autohealer"))
            .args(["plan", "--config"])
            .arg(&cfg)
            .arg("--kubeconfig")
            .arg(&w.kubeconfig)
            .output()
            .unwrap();
        out = String::from_utf8_lossy(&o.stdout).to_string();
        let ok = o.status.success() && out.contains("reboot (attempt 1)");
        async move { ok }
    })
    .await;
    assert!(out.lines().next().unwrap().starts_with("NODE"), "{out}");
    let row = out.lines().find(|l| l.starts_with(&victim)).unwrap();
    assert!(row.contains("NodeCondition=FAIL") && row.contains("KubeletNotReady"), "{row}");
    assert!(out.lines().next().unwrap().contains("SEVERITY") && row.contains("medium"), "plan shows the severity:\n{out}");
    assert!(out.lines().filter(|l| l.contains("healthy")).count() >= 2, "the healthy nodes are listed too:\n{out}");
    assert_eq!(w.os.count("POST", "/action", None), 0, "plan changes nothing");

    // The running healer serves its metrics.
    let h = w.healer(&cfg, "replica-a").await;
    let port =
        std::fs::read_to_string(&cfg).unwrap().lines().find_map(|l| l.trim().strip_prefix("listen: 127.0.0.1:").map(String::from)).unwrap();
    let url = format!("http://127.0.0.1:{port}/metrics");
    until("the reboot is counted", &[&h], || async {
        let body = reqwest::get(&url).await.ok().map(|r| r.text());
        let body = match body {
            Some(f) => f.await.unwrap_or_default(),
            None => String::new(),
        };
        body.contains("autohealer_leader 1")
            && body.contains(r#"autohealer_repairs_total{role="worker",action="reboot",result="started"} 1"#)
            && body.contains(r#"autohealer_cloud_requests_total{service="nova",code="202"}"#)
            && body.contains(r#"autohealer_nodes{role="worker"} 2"#)
            && body.contains(r#"autohealer_detections_total{role="worker",severity="medium"} 1"#)
    })
    .await;
    for path in ["readyz", "ready", "healthz", "health"] {
        assert_eq!(reqwest::get(format!("http://127.0.0.1:{port}/{path}")).await.unwrap().status(), 200, "/{path}");
    }
}

#[test]
fn validate_names_the_bad_key_and_fails() {
    let dir = std::env::temp_dir().join(format!("autohealer-validate-{}", unique()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "cluster-name: c\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthyDuration: soon\n",
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_autohealer")).args(["validate", "--config"]).arg(&bad).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("healthcheck.worker[0].params.unhealthy-duration") && err.contains("soon"), "{err}");
    let good = dir.join("good.yaml");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/upstream-config-camel.yaml"), &good).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_autohealer")).args(["validate", "--config"]).arg(&good).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("master: Endpoint (unhealthy after 30s), NodeCondition (unhealthy after 1m)"), "{out}");

    // Environment overrides: applied, shown by name, their values never shown.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_autohealer"))
        .args(["validate", "--config"])
        .arg(&good)
        .env("AUTOHEALER_DRY_RUN", "true")
        .env("AUTOHEALER_OPENSTACK", "{password: hunter2-from-a-secret}")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("dry-run: true"), "{out}");
    assert!(
        out.contains("dry-run: overridden by $AUTOHEALER_DRY_RUN") && out.contains("openstack: overridden by $AUTOHEALER_OPENSTACK"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_autohealer"))
        .args(["validate", "--config"])
        .arg(&good)
        .env("AUTOHEALER_DRYRUN", "true")
        .env("AUTOHEALER_SERVICE_HOST", "10.0.0.1")
        .output()
        .unwrap();
    // A misspelt variable, or one Kubernetes sets for a Service named autohealer, is shown and ignored.
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("ignored: $AUTOHEALER_DRYRUN names no config key, did you mean \"AUTOHEALER_DRY_RUN\""), "{out}");
    assert!(out.contains("ignored: $AUTOHEALER_SERVICE_HOST") && out.contains("dry-run: false"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_a_server_is_never_touched_and_an_event_says_why() {
    let w = world(1, true).await;
    let nodes: Api<Node> = Api::all(w.cluster.client.clone());
    let name = format!("{}-stray", w.prefix);
    let stray: Node = serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {SIM_LABEL: w.prefix}}})).unwrap();
    nodes.create(&Default::default(), &stray).await.unwrap();
    let status = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    nodes.patch_status(&name, &Default::default(), &kube::api::Patch::Merge(&status)).await.unwrap();
    let recorder = NodeRecorder::start(w.cluster.client.clone(), &name);
    let h = w.healer(&w.config("stray", ""), "replica-a").await;
    until("the RepairImpossible Event", &[&h], || async {
        w.cluster.node_events(&name).await.iter().any(|(r, n)| r == "RepairImpossible" && n.contains("maps to no server"))
    })
    .await;
    for v in recorder.versions() {
        assert!(!v.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false), "never cordoned");
        assert!(!v.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("autohealer.dev/repair")), "never recorded");
    }
    assert_eq!(w.os.count("POST", "/action", None), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_apply_without_restart_and_bad_ones_are_rejected() {
    let w = world(1, true).await;
    let cfg = w.config("reload", "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(w.cluster.client.clone(), "kube-system");
    let name = format!("autohealer-{}", w.prefix);
    let cm = serde_json::from_value(
        serde_json::json!({"metadata": {"name": name, "labels": {SIM_LABEL: w.prefix}}, "data": {"config.yaml": text}}),
    )
    .unwrap();
    cms.create(&Default::default(), &cm).await.unwrap();
    let h = w.healer(&cfg, "replica-a").await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(w.cluster.client.clone(), "kube-system");
    let cm_event = |reason: &'static str| {
        let events = events.clone();
        let name = name.clone();
        async move {
            events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str()) && e.reason.as_deref() == Some(reason)
                })
                .and_then(|e| e.note)
        }
    };
    until("the healer leads", &[&h], || async { w.holder().await.as_deref() == Some("replica-a") }).await;

    let set = |t: String| {
        let cms = cms.clone();
        let name = name.clone();
        async move {
            cms.patch(&name, &Default::default(), &kube::api::Patch::Merge(serde_json::json!({"data": {"config.yaml": t}}))).await.unwrap();
        }
    };
    set(text.replace("monitor-interval: 1s", "monitor-interval: 1s\ndry-run: maybe")).await;
    until("the bad config is rejected", &[&h], || async {
        cm_event("ConfigRejected").await.is_some_and(|n| n.contains("dry-run") && n.contains("maybe"))
    })
    .await;
    set(text.replace("monitor-interval: 1s", "monitor-interval: 1s\ndry-run: true")).await;
    until("the good config is applied", &[&h], || async { cm_event("ConfigReloaded").await.is_some() }).await;

    // The running healer now works in dry-run: it announces, and repairs nothing.
    let victim = w.sim.node_names(Role::Worker).pop().unwrap();
    w.sim.inject(&victim, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until("the dry-run Event", &[&h], || async { w.cluster.node_events(&victim).await.iter().any(|(r, _)| r == "DryRun") }).await;
    assert_eq!(w.reboots(&w.server(&victim)), 0);
}

/// Accepted (2xx) writes in the fake cloud's log whose path ends with `path_end` and whose
/// body contains `body`.
fn accepted(w: &World, path_part: &str, body: &str) -> usize {
    w.os.requests()
        .iter()
        .filter(|r| r.method != "GET" && r.path.contains(path_part) && r.body.contains(body) && (200..300).contains(&r.status))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_faults_at_20_percent_still_repair_each_node_exactly_once_and_no_secret_leaks() {
    // Six workers: two broken at once stay below max-unhealthy (40%).
    let w = world(6, true).await;
    let mut workers = w.sim.node_names(Role::Worker);
    workers.sort();
    let (a, b) = (workers[0].clone(), workers[1].clone());
    let (sa, sb) = (w.server(&a), w.server(&b));
    // One service call in five fails: one in ten answered 503, and one read in ten
    // answered only after the client gave up.
    w.os.set_error_rate(0.1);
    w.os.stall_reads(0.1, Duration::from_millis(1500));
    // A's reboot is carried out but answered too late: the healer cannot know it happened.
    w.os.stall_next(&format!("/servers/{sa}/action"), 1, Duration::from_millis(1500));
    // B's first reboot is refused with a 409 (Nova did nothing): a failed step, retried.
    w.os.conflict_next(&format!("/servers/{sb}/action"), 1);
    let extra = "  request-timeout: 1s\nnode-retry:\n  max-failures: 10\n  delay: 2s\ndrain:\n  timeout: 2s\n";
    let cfg = w.config("faults", extra);
    // At debug, so the secrets check below reads everything the healer can log.
    let h = w.healer_logging(&cfg, "replica-a", "debug").await;
    w.sim.inject(&a, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    w.sim.inject(&b, Fault::KubeletStopped, Cure::Replace);
    until("A's reboot is carried out", &[&h], || async { accepted(&w, &format!("/servers/{sa}/action"), "reboot") == 1 }).await;
    let mut tokens = w.os.issued_tokens();
    // Every token expires mid-repair: the next calls get 401 and the session re-authenticates.
    w.os.expire_tokens();
    until("A is back and released", &[&h], || async { released(&w.node(&a).await) }).await;
    until("B's node group resize is accepted", &[&h], || async { accepted(&w, "/actions/resize", &sb) == 1 }).await;
    until("B is gone and a new worker is Ready", &[&h], || async {
        let mut joined = false;
        for n in w.sim.node_names(Role::Worker).iter().filter(|n| !workers.contains(n)) {
            joined |= w.node(n).await.is_some_and(|n| ready(&n));
        }
        joined && w.node(&b).await.is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes: Vec<String> =
        w.os.requests()
            .iter()
            .filter(|r| r.method != "GET" && r.service != "identity")
            .map(|r| format!("{} {} {} {}", r.status, r.method, r.path, r.body))
            .collect();
    let writes = writes.join("\n");
    assert_eq!(accepted(&w, &format!("/servers/{sa}/action"), "reboot"), 1, "A rebooted exactly once:\n{writes}");
    assert_eq!(accepted(&w, &format!("/servers/{sb}/action"), "reboot"), 1, "B rebooted exactly once:\n{writes}");
    assert_eq!(accepted(&w, &format!("/servers/{sb}/action"), "os-stop"), 1, "B stopped exactly once:\n{writes}");
    assert_eq!(accepted(&w, "/actions/resize", ""), 1, "one replace in all:\n{writes}");
    assert!(w.os.requests().iter().any(|r| r.status == 503), "faults were injected");
    assert!(w.os.requests().iter().any(|r| r.status == 409 && r.path.contains(&sb)), "B's first reboot was refused");
    assert!(
        w.cluster.node_events(&a).await.iter().any(|(r, n)| r == "RepairIssued" && n.contains("treated as issued")),
        "A's unanswered reboot was not repeated"
    );
    assert!(h.log().contains("re-authenticating once"), "the expired token was renewed");

    // Secrets: the password and every token the healer held appear nowhere a user can see.
    tokens.extend(w.os.issued_tokens());
    assert!(tokens.len() >= 2, "a token was issued, and another after the expiry");
    let mut seen = vec![("log".to_string(), h.log())];
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(w.cluster.client.clone());
    for e in events.list(&Default::default()).await.unwrap().items {
        seen.push(("event".into(), format!("{} {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default())));
    }
    for n in Api::<Node>::all(w.cluster.client.clone()).list(&Default::default()).await.unwrap().items {
        seen.push(("node".into(), serde_json::to_string(&n.metadata.annotations).unwrap()));
    }
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::all(w.cluster.client.clone());
    for c in cms.list(&Default::default()).await.unwrap().items {
        seen.push(("configmap".into(), serde_json::to_string(&c).unwrap()));
    }
    let port =
        std::fs::read_to_string(&cfg).unwrap().lines().find_map(|l| l.trim().strip_prefix("listen: 127.0.0.1:").map(String::from)).unwrap();
    seen.push(("metrics".into(), reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap()));
    assert!(seen.iter().any(|(_, s)| s.contains(&sb)), "the check reads real material");
    for (what, text) in &seen {
        assert!(!text.contains(fake::PASSWORD), "the password is in a {what}: {text}");
        for t in &tokens {
            assert!(!text.contains(t.as_str()), "a token is in a {what}: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_workers_failing_at_once_on_the_cluster_api_driver_get_fresh_machines_one_resize_at_a_time() {
    let w = world(7, true).await;
    let cluster = format!("c-{}", w.prefix);
    w.os.set_magnum_driver(&cluster, fake::FakeDriver::ClusterApi);
    let mut original = w.sim.node_names(Role::Worker);
    original.sort();
    let victims: Vec<String> = original[..5].to_vec();
    let servers: Vec<String> = victims.iter().map(|v| w.server(v)).collect();
    let limits = "max-unhealthy:\n  worker: 100%\n  zone: 100%\ndrain:\n  timeout: 3s\n";
    let h = w.healer(&w.config("capi", limits), "replica-a").await;
    for (v, s) in victims.iter().zip(&servers) {
        w.sim.inject(v, Fault::KubeletStopped, Cure::Replace);
        // As vexxhost's driver counts it: its group stays in progress while they are.
        w.os.set_machine_ready(s, false);
    }
    until("every failed worker's machine is gone and five fresh workers are Ready", &[&h], || async {
        let mut gone = true;
        for v in &victims {
            gone &= w.node(v).await.is_none();
        }
        let mut fresh = 0;
        for n in w.sim.node_names(Role::Worker).iter().filter(|n| !original.contains(n)) {
            fresh += usize::from(w.node(n).await.is_some_and(|n| ready(&n)));
        }
        gone && fresh == 5
    })
    .await;
    let c = w.os.cluster(&cluster).unwrap();
    assert_eq!(w.os.nodegroup_count(&cluster, "worker"), 7, "the node group is back at its size: {:?}", c.resizes);
    assert_eq!(c.overlapping_resizes, 0, "no resize of the cluster while another ran: {:?}", c.resizes);
    assert_eq!(c.resizes.len(), 10, "a grow and a shrink per failed worker: {:?}", c.resizes);
    for s in &servers {
        assert_eq!(w.reboots(s), 1, "rebooted once first");
        assert_eq!(c.resizes.iter().filter(|(_, _, remove)| remove.contains(s)).count(), 1, "removed once: {s}");
        assert!(w.os.server(s).is_none(), "the failed machine is deleted: {s}");
    }
    assert_eq!(w.os.count("POST", "/servers/", Some("os-stop")), 0, "no server is stopped on the Cluster API driver");
    for n in &original[5..] {
        assert!(w.node(n).await.is_some(), "a healthy worker was kept: {n}");
    }
    let log = h.log();
    assert!(log.contains("cluster-api"), "the driver found is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cluster_autoscaler_is_removing_is_left_alone() {
    let w = world(3, true).await;
    let mut workers = w.sim.node_names(Role::Worker);
    workers.sort();
    let victim = workers[0].clone();
    let server = w.server(&victim);
    let taint =
        serde_json::json!({"spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "value": "1700000000", "effect": "NoSchedule"}]}});
    Api::<Node>::all(w.cluster.client.clone())
        .patch(&victim, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&taint))
        .await
        .unwrap();
    let h = w.healer(&w.config("autoscaler", "max-unhealthy:\n  worker: 100%\n  zone: 100%\n"), "replica-a").await;
    w.sim.inject(&victim, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until("the repair is held because the node is going away", &[&h], || async {
        w.cluster.node_events(&victim).await.iter().any(|(r, n)| r == "RepairHeld" && n.contains("ToBeDeletedByClusterAutoscaler"))
    })
    .await;
    // A second worker failing meanwhile is repaired: the hold is the node's, not the healer's.
    let other = workers[1].clone();
    let other_server = w.server(&other);
    w.sim.inject(&other, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    until("the other worker is rebooted", &[&h], || async { w.reboots(&other_server) == 1 }).await;
    assert_eq!(w.reboots(&server), 0, "the node being removed is not rebooted");
    assert!(w.node(&victim).await.is_some_and(|n| !n.annotations().contains_key("autohealer.dev/repair")), "nothing recorded on it");
    let held = w.cluster.node_events(&victim).await.into_iter().filter(|(r, _)| r == "RepairHeld").count();
    assert_eq!(held, 1, "said once");
}
