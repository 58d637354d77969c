//! The kubectl plugin (`kubectl-autohealer`), run as a child process with `KUBECONFIG`
//! pointing at the testkit's apiserver (or a real one with `AUTOHEALER_E2E_KUBECONFIG`),
//! as an operator runs it. The objects it reads are written as the healer writes them:
//! repair records and histories from the core types, Events through the healer's own
//! recorder. Each test keeps to its own names (its prefix), so it may share a cluster.

use autohealer_cloud::{Action, Phase};
use autohealer_core::Reason;
use autohealer_core::healer::PAUSED_ANNOTATION;
use autohealer_core::ledger::{self, HISTORY_ANNOTATION, HistoryEntry, REPAIR_ANNOTATION, RepairRecord};
use autohealer_core::node::{REMEDIATE_ANNOTATION, SKIP_ANNOTATION};
use autohealer_core::planner::Gate;
use autohealer_core::severity::Severity;
use autohealer_testkit::cluster::{CleanupGuard, TestCluster};
use autohealer_testkit::openstack::{self as fake, FakeOpenStack, OsOptions};
use autohealer_testkit::sim::SIM_LABEL;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::runtime::events::{Event as Publish, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use std::path::PathBuf;
use std::process::Output;

/// What a plugin user needs (group, resource, verb): the README documents exactly these.
/// Every call the plugin makes on the fake apiserver must be one of them.
const PLUGIN_RBAC: &[(&str, &str, &str)] = &[
    ("", "nodes", "get"),
    ("", "nodes", "list"),
    ("", "nodes", "patch"),
    ("", "configmaps", "get"),
    ("", "configmaps", "patch"),
    ("coordination.k8s.io", "leases", "get"),
    // `plan` with a Heartbeat check: the kubelets' Leases in kube-node-lease.
    ("coordination.k8s.io", "leases", "list"),
    ("events.k8s.io", "events", "list"),
];

struct World {
    cluster: TestCluster,
    prefix: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    _cleanup: CleanupGuard,
}

fn unique() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() ^ (u128::from(std::process::id()) << 40);
    format!("{:x}", n).chars().rev().take(6).collect()
}

async fn world() -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start().await.unwrap();
    let prefix = format!("kc-{}", unique());
    let _cleanup = cluster.cleanup_guard(&prefix);
    let dir = std::env::temp_dir().join(format!("autohealer-kubectl-{prefix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    // On the fake the plugin gets its own identity, so its calls can be held to the
    // RBAC the README documents.
    let text = match &cluster.fake {
        Some(f) => f.kubeconfig_for("plugin"),
        None => cluster.kubeconfig.clone(),
    };
    std::fs::write(&kubeconfig, text).unwrap();
    World { cluster, prefix, dir, kubeconfig, _cleanup }
}

impl World {
    /// Runs the plugin as kubectl would: the kubeconfig comes from `KUBECONFIG`.
    async fn plugin(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-autohealer"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("AUTOHEALER_OPENSTACK")
            .kill_on_drop(true)
            .output()
            .await
            .unwrap()
    }

    /// The plugin's stdout, once it exited 0.
    async fn ok(&self, args: &[&str]) -> String {
        let o = self.plugin(args).await;
        assert!(o.status.success(), "{args:?} failed: {}\n{}", stderr(&o), stdout(&o));
        stdout(&o)
    }

    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    fn pause_cm(&self) -> String {
        format!("kube-system/autohealer-{}", self.prefix)
    }

    async fn node(&self, what: &str, annotations: serde_json::Value) -> Node {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": self.name(what), "labels": {SIM_LABEL: self.prefix}, "annotations": annotations},
        }))
        .unwrap();
        Api::<Node>::all(self.cluster.client.clone()).create(&PostParams::default(), &n).await.unwrap()
    }

    async fn annotations(&self, what: &str) -> std::collections::BTreeMap<String, String> {
        Api::<Node>::all(self.cluster.client.clone()).get(&self.name(what)).await.unwrap().annotations().clone()
    }

    async fn configmap(&self, name: &str, data: serde_json::Value) {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "kube-system", "labels": {SIM_LABEL: self.prefix}},
            "data": data,
        }))
        .unwrap();
        Api::<ConfigMap>::namespaced(self.cluster.client.clone(), "kube-system").create(&PostParams::default(), &cm).await.unwrap();
    }

    async fn paused_annotation(&self) -> Option<String> {
        let cms: Api<ConfigMap> = Api::namespaced(self.cluster.client.clone(), "kube-system");
        cms.get(&format!("autohealer-{}", self.prefix)).await.unwrap().annotations().get(PAUSED_ANNOTATION).cloned()
    }

    /// Every call the plugin made is one the documented RBAC grants.
    fn assert_rbac_covers_calls(&self) {
        let Some(f) = &self.cluster.fake else { return };
        let calls = f.client_calls("plugin");
        assert!(!calls.is_empty());
        for (verb, resource) in calls {
            let (res, group) = resource.split_once('.').unwrap_or((resource.as_str(), ""));
            assert!(
                PLUGIN_RBAC.contains(&(group, res, verb.as_str())),
                "the plugin called {verb} {resource}, which the documented plugin RBAC does not grant"
            );
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A failed plugin run: exit code 1 and one line on stderr.
fn failed_with(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout: {}\nstderr: {}", stdout(o), stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn record(action: Action, attempt: u32, started: Timestamp) -> RepairRecord {
    RepairRecord {
        action,
        attempt,
        started,
        first_started: started,
        reason: "Ready is Unknown for 5m".into(),
        boot_id: Some("boot-1".into()),
        server_id: Some("srv-1".into()),
        cordoned: true,
        failed: None,
        failed_at: None,
        by: "replica-a".into(),
        draining: false,
        detected: Some(started),
        severity: Some(Severity::High),
        fenced: false,
        pending: false,
        phase: None,
        out_of_service: false,
        stalls: 0,
        stalled: None,
        retry_at: None,
        unsent: false,
        delegated: None,
        workloads_failed: None,
    }
}

/// An Event of the healer's, created directly, for what the recorder cannot write (an
/// old one) or would not (another controller's).
async fn raw_event(w: &World, node: &Node, reason: &str, gate: &str, controller: &str, at: Timestamp) {
    let name = format!("{}.{:x}", node.name_any(), at.as_nanosecond() ^ controller.len() as i128);
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "eventTime": MicroTime(at),
        "reportingController": controller,
        "reportingInstance": format!("{controller}-1"),
        "action": gate,
        "reason": reason,
        "type": "Warning",
        "note": format!("held by {gate}"),
        "regarding": {"kind": "Node", "apiVersion": "v1", "name": node.name_any(), "uid": node.uid()},
    }))
    .unwrap();
    Api::<Event>::namespaced(w.cluster.client.clone(), "default").create(&PostParams::default(), &ev).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_leader_the_node_in_repair_and_the_held_repairs() {
    let w = world().await;
    let now = Timestamp::now();
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": format!("autohealer-{}", w.prefix), "namespace": "kube-system"},
        "spec": {"holderIdentity": "replica-a", "leaseDurationSeconds": 15, "renewTime": MicroTime(now), "acquireTime": MicroTime(now)},
    }))
    .unwrap();
    Api::<Lease>::namespaced(w.cluster.client.clone(), "kube-system").create(&PostParams::default(), &lease).await.unwrap();
    w.configmap(&format!("autohealer-{}", w.prefix), json!({})).await;

    // In repair: a replace at its resize, the machine stopped, the last call stalled.
    let mut r = record(Action::Replace, 2, now - SignedDuration::from_mins(7));
    r.phase = Some(Phase::new("resize").with("group", "default-worker").out_of_service());
    r.out_of_service = true;
    r.pending = true;
    r.stalls = 1;
    r.stalled = Some("magnum 409: cluster busy".into());
    w.node("w1", json!({REPAIR_ANNOTATION: r.to_json()})).await;
    // Held twice by concurrency: one Event series, as the healer's recorder writes it.
    let held = w.node("w2", json!({})).await;
    let recorder = autohealer_core::actor::Context::recorder(&w.cluster.client, "replica-a");
    for _ in 0..2 {
        let ev = Publish {
            type_: EventType::Warning,
            reason: Reason::RepairHeld.as_str().into(),
            note: Some("3 worker repairs in flight (concurrency.worker 3)".into()),
            action: Gate::Concurrency.as_str().into(),
            secondary: None,
        };
        recorder.publish(&ev, &held.object_ref(&())).await.unwrap();
    }
    // Out of budget: the gate is the Event's action too.
    let spent = w.node("w3", json!({})).await;
    let ev = Publish {
        type_: EventType::Warning,
        reason: Reason::RetryBudgetExhausted.as_str().into(),
        note: Some("3 failed repairs within 1h".into()),
        action: Gate::RetryBudget.as_str().into(),
        secondary: None,
    };
    recorder.publish(&ev, &spent.object_ref(&())).await.unwrap();
    // Not shown: a hold older than an hour, and another controller's Event.
    let old = w.node("w4", json!({})).await;
    raw_event(&w, &old, Reason::RepairHeld.as_str(), Gate::Rate.as_str(), "autohealer", now - SignedDuration::from_hours(2)).await;
    raw_event(&w, &old, Reason::RepairHeld.as_str(), Gate::Zone.as_str(), "someone-else", now).await;
    // An unreadable ledger is named, not taken for a repair.
    w.node("w5", json!({REPAIR_ANNOTATION: "{not json"})).await;

    let lease_name = format!("autohealer-{}", w.prefix);
    let out = w.ok(&["status", "--lease-name", &lease_name, "--pause-configmap", &w.pause_cm()]).await;
    let lines: Vec<&str> = out.lines().collect();
    let line = |needle: &str| lines.iter().copied().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in:\n{out}"));
    let leader = line("leader:");
    assert!(leader.contains("replica-a") && leader.contains("renewed") && !leader.contains("EXPIRED"), "{out}");
    assert!(line("paused:").contains("no"), "{out}");
    let w1 = line(&w.name("w1"));
    for want in ["replace", " 2 ", "resize", "out-of-service", "stalled x1: magnum 409: cluster busy", "cordoned", "7m"] {
        assert!(w1.contains(want), "{want:?} missing from the repair row: {w1}\n{out}");
    }
    let w2 = line(&w.name("w2"));
    assert!(w2.trim_start().starts_with("concurrency") && w2.contains("3 worker repairs in flight"), "{out}");
    assert!(w2.split_whitespace().any(|c| c == "2"), "two Events of one series: {w2}");
    assert!(line(&w.name("w3")).trim_start().starts_with("retry_budget"), "{out}");
    assert!(!out.contains(&w.name("w4")), "an old hold and another controller's Event are not shown:\n{out}");
    assert!(line(&w.name("w5")).contains("not a repair record"), "{out}");
    let held_at = lines.iter().position(|l| l.starts_with("held repairs")).unwrap();
    let repair_at = lines.iter().position(|l| l.starts_with("in repair:")).unwrap();
    assert!(repair_at < held_at, "{out}");
    w.assert_rbac_covers_calls();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_then_resume_flips_the_annotation_and_status_shows_it() {
    let w = world().await;
    w.configmap(&format!("autohealer-{}", w.prefix), json!({"config.yaml": "dry-run: true\n"})).await;
    let cm = w.pause_cm();
    let status = |out: String| out.lines().find(|l| l.starts_with("paused:")).unwrap_or_default().to_string();

    let out = w.ok(&["pause", "--pause-configmap", &cm]).await;
    assert!(out.starts_with("paused:") && out.contains(&cm), "{out}");
    assert_eq!(w.paused_annotation().await.as_deref(), Some("true"));
    assert!(status(w.ok(&["status", "--pause-configmap", &cm]).await).starts_with("paused:  yes"));
    assert!(w.ok(&["pause", "--pause-configmap", &cm]).await.starts_with("already paused"));

    let out = w.ok(&["resume", "--pause-configmap", &cm]).await;
    assert!(out.starts_with("resumed:"), "{out}");
    assert_eq!(w.paused_annotation().await, None);
    assert!(status(w.ok(&["status", "--pause-configmap", &cm]).await).starts_with("paused:  no"));

    // -n names the namespace of a bare name.
    let bare = format!("autohealer-{}", w.prefix);
    w.ok(&["-n", "kube-system", "pause", "--pause-configmap", &bare]).await;
    assert_eq!(w.paused_annotation().await.as_deref(), Some("true"));

    // A ConfigMap that does not exist is named, and not created.
    let missing = format!("kube-system/autohealer-{}-missing", w.prefix);
    let err = failed_with(&w.plugin(&["pause", "--pause-configmap", &missing]).await);
    assert!(err.contains(&missing) && err.contains("does not exist"), "{err}");
    let cms: Api<ConfigMap> = Api::namespaced(w.cluster.client.clone(), "kube-system");
    assert!(cms.get_opt(&format!("autohealer-{}-missing", w.prefix)).await.unwrap().is_none());
    w.assert_rbac_covers_calls();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_unskip_remediate_change_the_annotations_and_a_missing_node_is_named() {
    let w = world().await;
    w.node("w1", json!({})).await;
    let node = w.name("w1");

    let out = w.ok(&["skip", &node]).await;
    assert!(out.contains(&node) && out.contains(SKIP_ANNOTATION), "{out}");
    assert_eq!(w.annotations("w1").await.get(SKIP_ANNOTATION).map(String::as_str), Some("true"));

    let out = w.ok(&["remediate", &node]).await;
    assert!(out.contains(REMEDIATE_ANNOTATION) && out.contains("unskip"), "a skipped node's remediation says it waits: {out}");
    assert_eq!(w.annotations("w1").await.get(REMEDIATE_ANNOTATION).map(String::as_str), Some("true"));

    let out = w.ok(&["unskip", &node]).await;
    assert!(out.contains(&node) && out.contains("removed"), "{out}");
    let a = w.annotations("w1").await;
    assert!(!a.contains_key(SKIP_ANNOTATION) && a.get(REMEDIATE_ANNOTATION).is_some_and(|v| v == "true"), "{a:?}");

    let missing = w.name("nope");
    for cmd in ["skip", "unskip", "remediate", "history"] {
        let err = failed_with(&w.plugin(&[cmd, &missing]).await);
        assert!(err.contains(&format!("node {missing} failed: 404")), "{cmd}: {err}");
    }
    w.assert_rbac_covers_calls();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_prints_the_rows_in_order_and_the_repair_under_way() {
    let w = world().await;
    let entries = [
        HistoryEntry {
            action: Action::Reboot,
            started: ts("2026-03-01T10:00:00Z"),
            ended: ts("2026-03-01T10:06:00Z"),
            succeeded: false,
            reason: "Ready is False: KubeletNotReady".into(),
            severity: Some(Severity::Medium),
            held: false,
        },
        HistoryEntry {
            action: Action::Replace,
            started: ts("2026-03-01T10:06:00Z"),
            ended: ts("2026-03-01T10:31:00Z"),
            succeeded: true,
            reason: "Ready is False: KubeletNotReady".into(),
            severity: Some(Severity::High),
            held: false,
        },
        HistoryEntry {
            action: Action::Reboot,
            started: ts("2026-03-02T08:00:00Z"),
            ended: ts("2026-03-02T08:00:00Z"),
            succeeded: false,
            reason: "held: 3 worker repairs in flight".into(),
            severity: None,
            held: true,
        },
    ];
    let mut json = None;
    for e in entries {
        json = Some(ledger::push_history(json.as_deref(), e, None));
    }
    let mut r = record(Action::Reboot, 1, Timestamp::now() - SignedDuration::from_mins(2));
    r.draining = true;
    w.node("w1", json!({HISTORY_ANNOTATION: json, REPAIR_ANNOTATION: r.to_json()})).await;
    w.node("w2", json!({})).await;

    let out = w.ok(&["history", &w.name("w1")]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("STARTED") && lines[0].contains("OUTCOME") && lines[0].contains("SEVERITY"), "{out}");
    let rows = &lines[1..4];
    assert!(rows[0].starts_with("2026-03-01T10:00:00Z  2026-03-01T10:06:00Z  reboot") && rows[0].contains("failed"), "{out}");
    assert!(rows[0].contains("medium") && rows[0].contains("KubeletNotReady"), "{out}");
    assert!(rows[1].starts_with("2026-03-01T10:06:00Z  2026-03-01T10:31:00Z  replace") && rows[1].contains("succeeded"), "{out}");
    assert!(rows[2].starts_with("2026-03-02T08:00:00Z") && rows[2].contains("held") && rows[2].contains(" - "), "{out}");
    let current = lines.iter().find(|l| l.starts_with("in repair:")).unwrap_or_else(|| panic!("{out}"));
    assert!(current.contains("reboot (attempt 1)") && current.contains("phase draining") && current.contains("by replica-a"), "{out}");

    let out = w.ok(&["history", &w.name("w2")]).await;
    assert!(out.contains("no finished repair") && out.contains("no repair under way"), "{out}");
    w.assert_rbac_covers_calls();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_the_config_from_the_cluster_and_names_the_credential_it_cannot_read() {
    let w = world().await;
    let os = FakeOpenStack::start(OsOptions::default()).await.unwrap();
    w.node("w1", json!({})).await;
    w.node("w2", json!({SKIP_ANNOTATION: "true"})).await;
    let config = format!(
        "cloud-provider: openstack\nnode-selector: {SIM_LABEL}={p}\nleader-election:\n  lease-name: autohealer-{p}\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: 1m\nopenstack:\n  strategy: nova\n  auth-url: {auth}\n  user-id: {user}\n  password: {pw}\n  project-id: {project}\n  region: {region}\n",
        p = w.prefix,
        auth = os.auth_url(),
        user = fake::USER_ID,
        pw = fake::PASSWORD,
        project = fake::PROJECT_ID,
        region = fake::REGION,
    );
    // As the shipped manifests have it: the secret in a mounted file, absent here.
    let broken = "cloud-provider: openstack\nopenstack:\n  strategy: nova\n  auth-url: https://keystone.example.com:5000/v3\n  application-credential-id: ac-1\n  application-credential-secret-file: /etc/autohealer/secrets/application-credential-secret\n";
    let cm = format!("autohealer-{}", w.prefix);
    w.configmap(&cm, json!({"config.yaml": config, "broken.yaml": broken})).await;

    let out = w.ok(&["plan", "--configmap", &format!("kube-system/{cm}")]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NODE") && lines[0].contains("ACTION"), "{out}");
    let row = |n: &str| lines.iter().copied().find(|l| l.starts_with(&w.name(n))).unwrap_or_else(|| panic!("no {n} in:\n{out}"));
    assert!(row("w1").contains("healthy"), "{out}");
    assert!(row("w2").contains("healthy"), "{out}");
    assert!(!out.contains(fake::PASSWORD), "no secret printed:\n{out}");

    // From a file, as the healer's pod has it: the plugin names the key it cannot read.
    let file = w.dir.join("broken.yaml");
    std::fs::write(&file, broken).unwrap();
    let err = failed_with(&w.plugin(&["plan", "--config", file.to_str().unwrap()]).await);
    assert!(err.contains("openstack.application-credential-secret-file") && err.contains("cannot be built here"), "{err}");
    let err = failed_with(&w.plugin(&["plan", "--configmap", &format!("kube-system/{cm}"), "--key", "broken.yaml"]).await);
    assert!(err.contains("openstack.application-credential-secret-file"), "{err}");
    let err = failed_with(&w.plugin(&["plan", "--configmap", &format!("kube-system/{cm}"), "--key", "nope.yaml"]).await);
    assert!(err.contains("nope.yaml") && err.contains(&cm), "{err}");
    w.assert_rbac_covers_calls();
}
