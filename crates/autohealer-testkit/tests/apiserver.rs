//! The fake apiserver driven through kube-rs, the client the healer uses.

use autohealer_testkit::apiserver::{ApiServerOptions, FakeApiServer};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use std::time::Duration;

fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"role": "worker"}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .unwrap()
}

async fn server() -> (FakeApiServer, kube::Client) {
    let s = FakeApiServer::start(ApiServerOptions::default()).await.unwrap();
    let c = s.client().await.unwrap();
    (s, c)
}

#[tokio::test]
async fn create_get_conflict_and_not_found_are_status_objects() {
    let (_s, c) = server().await;
    let nodes: Api<Node> = Api::all(c);
    let n = nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    assert!(n.metadata.uid.is_some() && n.metadata.creation_timestamp.is_some());
    let err = nodes.create(&PostParams::default(), &node("n1")).await.unwrap_err();
    let kube::Error::Api(s) = err else { panic!("not an API error") };
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));

    // A write carrying a stale resourceVersion is refused.
    let mut stale = n.clone();
    nodes.patch("n1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}}))).await.unwrap();
    stale.metadata.labels.get_or_insert_default().insert("y".into(), "2".into());
    let kube::Error::Api(s) = nodes.replace("n1", &PostParams::default(), &stale).await.unwrap_err() else { panic!() };
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    let p = Patch::Merge(json!({"metadata": {"resourceVersion": n.metadata.resource_version, "annotations": {"a": "b"}}}));
    let kube::Error::Api(s) = nodes.patch("n1", &PatchParams::default(), &p).await.unwrap_err() else { panic!() };
    assert_eq!(s.code, 409);

    let kube::Error::Api(s) = nodes.get("nope").await.unwrap_err() else { panic!() };
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn status_subresource_and_strategic_merge_of_conditions() {
    let (_s, c) = server().await;
    let nodes: Api<Node> = Api::all(c);
    nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    // The main resource ignores status.
    let p = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}, "spec": {"unschedulable": true}});
    let n = nodes.patch("n1", &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
    assert_eq!(n.status.unwrap().conditions.unwrap()[0].status, "True");
    assert_eq!(n.spec.unwrap().unschedulable, Some(true));
    // /status ignores everything else, and conditions merge by type.
    let p = json!({"spec": {"unschedulable": false}, "status": {"conditions": [{"type": "DiskPressure", "status": "False"}]}});
    let n = nodes.patch_status("n1", &PatchParams::default(), &Patch::Strategic(&p)).await.unwrap();
    let conds = n.status.unwrap().conditions.unwrap();
    assert_eq!(conds.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), ["Ready", "DiskPressure"]);
    assert_eq!(n.spec.unwrap().unschedulable, Some(true));
}

#[tokio::test]
async fn list_with_selectors_and_pages() {
    let (_s, c) = server().await;
    let nodes: Api<Node> = Api::all(c);
    for i in 0..7 {
        let mut n = node(&format!("n{i}"));
        if i % 2 == 0 {
            n.metadata.labels.get_or_insert_default().insert("role".into(), "master".into());
        }
        nodes.create(&PostParams::default(), &n).await.unwrap();
    }
    let masters = nodes.list(&ListParams::default().labels("role=master")).await.unwrap();
    assert_eq!(masters.items.len(), 4);
    let one = nodes.list(&ListParams::default().fields("metadata.name=n3")).await.unwrap();
    assert_eq!(one.items.len(), 1);
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = nodes.list(&lp).await.unwrap();
        names.extend(page.items.iter().filter_map(|n| n.metadata.name.clone()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names.len(), 7);
    let kube::Error::Api(s) = nodes.list(&ListParams::default().fields("spec.bogus=1")).await.unwrap_err() else { panic!() };
    assert_eq!(s.code, 400);
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410_in_the_stream() {
    let (s, c) = server().await;
    let nodes: Api<Node> = Api::all(c);
    let first = nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    let rv = first.metadata.resource_version.unwrap();
    let mut w = nodes.watch(&WatchParams::default().timeout(5), &rv).await.unwrap().boxed();
    nodes.create(&PostParams::default(), &node("n2")).await.unwrap();
    match w.next().await.unwrap().unwrap() {
        WatchEvent::Added(n) => assert_eq!(n.metadata.name.as_deref(), Some("n2")),
        e => panic!("unexpected {e:?}"),
    }
    s.store().compact();
    let mut w = nodes.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    match w.next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        e => panic!("unexpected {e:?}"),
    }
    let kube::Error::Api(st) = nodes.list(&ListParams::default().limit(1).continue_token("7b7d")).await.unwrap_err() else { panic!() };
    assert_eq!(st.code, 400);
}

#[tokio::test]
async fn watch_sends_bookmarks_when_asked() {
    let s = FakeApiServer::start(ApiServerOptions { bookmark_interval: Duration::from_millis(50), ..Default::default() }).await.unwrap();
    let nodes: Api<Node> = Api::all(s.client().await.unwrap());
    let mut w = nodes.watch(&WatchParams::default().timeout(10), "0").await.unwrap().boxed();
    match w.next().await.unwrap().unwrap() {
        WatchEvent::Bookmark(b) => assert!(!b.metadata.resource_version.is_empty()),
        e => panic!("unexpected {e:?}"),
    }
}

#[tokio::test]
async fn reflector_stays_in_sync_across_dropped_watches_and_410() {
    let (s, c) = server().await;
    let nodes: Api<Node> = Api::all(c);
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(nodes.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    reader.wait_until_ready().await.unwrap();
    let wait_for = |n: usize| {
        let reader = reader.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(20), async {
                while reader.state().len() != n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .expect("the reflector converged");
        }
    };
    nodes.create(&PostParams::default(), &node("a")).await.unwrap();
    wait_for(1).await;
    s.faults().drop_watches();
    nodes.create(&PostParams::default(), &node("b")).await.unwrap();
    wait_for(2).await;
    // While the watcher is cut off, the cluster changes and the history is compacted:
    // its next watch gets 410 and it must list again to learn what it missed.
    s.faults().outage(Duration::from_millis(500));
    let res = autohealer_testkit::apiserver::resources::find("", "v1", "nodes").unwrap();
    s.store().create(res, "", serde_json::to_value(node("c")).unwrap(), "test").unwrap();
    s.store().delete(res, "", "a", None).unwrap();
    s.store().compact();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let mut names: Vec<_> = reader.state().iter().filter_map(|n| n.metadata.name.clone()).collect();
            names.sort();
            if names == ["b", "c"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the reflector holds exactly b and c");
    assert!(s.requests("list", "nodes") >= 2, "a 410 makes the watcher list again");
    task.abort();
}

#[tokio::test]
async fn lease_taken_over_by_second_identity_only_after_expiry() {
    let (_s, c) = server().await;
    let manager = |id: &'static str| {
        kube_lease_manager::LeaseManagerBuilder::new(c.clone(), "healer")
            .with_namespace("kube-system")
            .with_identity(id)
            .with_duration(2)
            .with_grace(1)
            .build()
    };
    let (mut a_rx, a_task) = manager("a").await.unwrap().watch().await;
    a_rx.wait_for(|leader| *leader).await.unwrap();
    let (mut b_rx, _b_task) = manager("b").await.unwrap().watch().await;
    // While a renews, b stays a follower for longer than the lease duration.
    let held = tokio::time::timeout(Duration::from_secs(4), b_rx.wait_for(|leader| *leader)).await.map(|_| ());
    assert!(held.is_err(), "b must not take a lease that a keeps renewing");
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    let l = leases.get("healer").await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("a"));
    a_task.abort(); // a dies without releasing
    tokio::time::timeout(Duration::from_secs(15), b_rx.wait_for(|leader| *leader)).await.expect("b takes over after expiry").unwrap();
    let l = leases.get("healer").await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn eviction_refused_by_pdb_with_429() {
    let s = FakeApiServer::start(ApiServerOptions::default()).await.unwrap();
    // kube-rs retries 429 by default; a drain wants to see the refusal itself.
    let mut cfg = s.client_config().await.unwrap();
    cfg.default_retry = false;
    let c = kube::Client::try_from(cfg).unwrap();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for name in ["web-1", "web-2"] {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}})).unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap();
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c, "default");
    let pdb: PodDisruptionBudget = serde_json::from_value(
        json!({"metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
    )
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let on_node = pods.list(&ListParams::default().fields("spec.nodeName=n1")).await.unwrap();
    assert_eq!(on_node.items.len(), 2);
    pods.evict("web-1", &EvictParams::default()).await.unwrap();
    let kube::Error::Api(st) = pods.evict("web-2", &EvictParams::default()).await.unwrap_err() else { panic!() };
    assert_eq!((st.code, st.reason.as_str()), (429, "TooManyRequests"));
    assert!(pods.get("web-2").await.is_ok());
}

#[tokio::test]
async fn counters_and_faults() {
    let (s, c) = server().await;
    let nodes: Api<Node> = Api::all(c);
    nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    nodes.get("n1").await.unwrap();
    assert_eq!(s.requests("get", "nodes"), 1);
    assert!(s.stats()[&("get".to_string(), "nodes".to_string())].bytes > 100);
    s.faults().set_error_rate("get", 1.0);
    let kube::Error::Api(st) = nodes.get("n1").await.unwrap_err() else { panic!() };
    assert_eq!(st.code, 500);
    s.faults().set_error_rate("get", 0.0);
    s.faults().outage(Duration::from_millis(300));
    assert!(nodes.get("n1").await.is_err(), "refused during the outage");
    tokio::time::timeout(Duration::from_secs(10), async {
        while nodes.get("n1").await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("served again after the outage");
}

#[tokio::test]
async fn tls_with_generated_ca_and_bearer_token() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = FakeApiServer::start(ApiServerOptions { tls: true, ..Default::default() }).await.unwrap();
    assert!(s.url().starts_with("https://"));
    let nodes: Api<Node> = Api::all(s.client().await.unwrap());
    nodes.create(&PostParams::default(), &node("secure")).await.unwrap();
    assert_eq!(nodes.list(&ListParams::default()).await.unwrap().items.len(), 1);
    // Without the token: 401 as a Status.
    let mut cfg = s.client_config().await.unwrap();
    cfg.auth_info.token = None;
    let anonymous: Api<Node> = Api::all(kube::Client::try_from(cfg).unwrap());
    let kube::Error::Api(st) = anonymous.get("secure").await.unwrap_err() else { panic!() };
    assert_eq!(st.code, 401);
    // Without the CA: the TLS handshake fails.
    let mut cfg = s.client_config().await.unwrap();
    cfg.root_cert = None;
    let untrusting: Api<Node> = Api::all(kube::Client::try_from(cfg).unwrap());
    assert!(untrusting.get("secure").await.is_err());
}

#[tokio::test]
async fn request_counters_over_the_admin_endpoint() {
    let (s, c) = server().await;
    let nodes: Api<Node> = Api::all(c);
    nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    let body: serde_json::Value = reqwest::get(format!("{}/testkit/stats", s.url())).await.unwrap().json().await.unwrap();
    let row = body["stats"].as_array().unwrap().iter().find(|r| r["verb"] == "create" && r["resource"] == "nodes").cloned().unwrap();
    assert_eq!(row["requests"], 1);
    assert!(row["bytes"].as_u64().unwrap() > 0);
}

// ---- Graceful deletion, evictions and pod GC, checked against a real v1.36 server ----

/// What a real kube-apiserver v1.36.2 answered (see the README there).
const FIXTURES: &str = "/work/shared/fixtures/real-apiserver-v1.36";

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{FIXTURES}/{name}");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

/// A request as any client sends it, to see the status code and the body unchanged.
async fn call(s: &FakeApiServer, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", s.url())).bearer_auth("testkit-admin-token");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap())
}

async fn evict_raw(s: &FakeApiServer, ns: &str, name: &str, delete_options: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let mut body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}});
    if let Some(o) = delete_options {
        body["deleteOptions"] = o;
    }
    call(s, reqwest::Method::POST, &format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"), Some(body)).await
}

async fn delete_raw(s: &FakeApiServer, ns: &str, name: &str, options: serde_json::Value) -> (u16, serde_json::Value) {
    call(s, reqwest::Method::DELETE, &format!("/api/v1/namespaces/{ns}/pods/{name}"), Some(options)).await
}

/// A pod bound to `node` (none: never scheduled), in phase `phase`, Ready when Running.
async fn pod_in(pods: &Api<Pod>, name: &str, app: &str, node: Option<&str>, phase: &str) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}}, "spec": spec})).unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    if phase != "Pending" {
        let ready = if phase == "Running" { "True" } else { "False" };
        let st = json!({"status": {"phase": phase, "conditions": [{"type": "Ready", "status": ready}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(st)).await.unwrap();
    }
    pods.get(name).await.unwrap()
}

async fn budget(c: &kube::Client, ns: &str, name: &str, app: &str) {
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.clone(), ns);
    let pdb = json!({"metadata": {"name": name}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}}});
    pdbs.create(&PostParams::default(), &serde_json::from_value(pdb).unwrap()).await.unwrap();
}

fn secs_from_now(ts: &str) -> i64 {
    let t: jiff::Timestamp = ts.parse().unwrap();
    t.as_second() - jiff::Timestamp::now().as_second()
}

/// The fields of a pod an eviction changes, as the fixtures show them.
fn assert_terminating_like(pod: &serde_json::Value, real: &serde_json::Value) {
    for f in ["/metadata/deletionGracePeriodSeconds", "/metadata/generation", "/status/phase"] {
        assert_eq!(pod.pointer(f), real.pointer(f), "{f}");
    }
    let ts = pod.pointer("/metadata/deletionTimestamp").and_then(|t| t.as_str()).expect("deletionTimestamp is set");
    assert!((28..=31).contains(&secs_from_now(ts)), "deletionTimestamp is now + grace: {ts}");
    let cond = |p: &serde_json::Value| {
        let mut c = p["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "DisruptionTarget").cloned().unwrap();
        c.as_object_mut().unwrap().remove("lastTransitionTime");
        c
    };
    assert_eq!(cond(pod), cond(real));
}

#[tokio::test]
async fn eviction_of_a_pending_pod_ignores_the_pdb() {
    let (s, c) = server().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    pod_in(&pods, "guarded", "g", Some("dead"), "Pending").await;
    budget(&c, "default", "g", "g").await;
    let (code, body) = evict_raw(&s, "default", "guarded", None).await;
    assert_eq!((code, &body), (201, &fixture("eviction-accepted.json")));
    let (_, pod) = call(&s, reqwest::Method::GET, "/api/v1/namespaces/default/pods/guarded", None).await;
    assert_terminating_like(&pod, &fixture("pod-pending-evicted-despite-pdb.json"));
}

#[tokio::test]
async fn eviction_refused_by_a_pdb_names_the_budget_like_a_real_server() {
    let (s, c) = server().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let real = fixture("eviction-refused-by-pdb.json");
    pod_in(&pods, "web", "g2", Some("n1"), "Running").await;
    budget(&c, "default", "g2", "g2").await;
    let (code, body) = evict_raw(&s, "default", "web", None).await;
    assert_eq!(code, 429);
    let without_causes = |v: &serde_json::Value| {
        let mut v = v.clone();
        v["details"]["causes"][0].as_object_mut().unwrap().remove("message");
        v
    };
    assert_eq!(without_causes(&body), without_causes(&real));
    assert_eq!(body["details"]["causes"][0]["message"], "The disruption budget g2 needs 1 healthy pods and has 1 currently");
    assert!(pods.get("web").await.unwrap().metadata.deletion_timestamp.is_none(), "a refused pod is untouched");

    // A running pod that is not Ready, under a budget already at its minimum: the
    // budget's numbers are the fixture's.
    let (s, c) = server().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    pod_in(&pods, "web", "g2", Some("n1"), "Running").await;
    let unready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    pods.patch_status("web", &PatchParams::default(), &Patch::Strategic(unready)).await.unwrap();
    budget(&c, "default", "g2", "g2").await;
    let (code, body) = evict_raw(&s, "default", "web", None).await;
    assert_eq!((code, body), (429, real));
}

#[tokio::test]
async fn evicted_pod_stays_terminating_until_its_kubelet_confirms() {
    let (s, c) = server().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let before = pod_in(&pods, "free", "f", Some("alive"), "Pending").await;
    let rv = before.metadata.resource_version.clone().unwrap();
    let mut w = pods.watch(&WatchParams::default().timeout(10), &rv).await.unwrap().boxed();
    let (code, body) = evict_raw(&s, "default", "free", None).await;
    assert_eq!((code, body), (201, fixture("eviction-accepted.json")));

    let pod = pods.get("free").await.unwrap();
    assert_ne!(pod.metadata.resource_version.as_deref(), Some(rv.as_str()));
    let (_, raw) = call(&s, reqwest::Method::GET, "/api/v1/namespaces/default/pods/free", None).await;
    assert_terminating_like(&raw, &fixture("pod-after-eviction-terminating.json"));
    // Watchers see the condition, then the deletion mark; nothing is DELETED yet.
    let mut marked = None;
    while marked.is_none() {
        match w.next().await.unwrap().unwrap() {
            WatchEvent::Modified(p) if p.metadata.deletion_timestamp.is_some() => marked = Some(p),
            WatchEvent::Modified(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(marked.unwrap().metadata.resource_version, pod.metadata.resource_version);
    // Evicting again does not move the deadline.
    assert_eq!(evict_raw(&s, "default", "free", None).await.0, 201);
    assert_eq!(pods.get("free").await.unwrap().metadata.deletion_timestamp, pod.metadata.deletion_timestamp);

    // The kubelet's confirmation: a grace-0 delete, with the uid it knows.
    let (code, _) = delete_raw(&s, "default", "free", json!({"gracePeriodSeconds": 0, "preconditions": {"uid": pod.metadata.uid}})).await;
    assert_eq!(code, 200);
    loop {
        match w.next().await.unwrap().unwrap() {
            WatchEvent::Deleted(p) => {
                assert_eq!(p.metadata.name.as_deref(), Some("free"));
                break;
            }
            WatchEvent::Modified(p) => assert_eq!(p.metadata.deletion_grace_period_seconds, Some(0)),
            e => panic!("unexpected {e:?}"),
        }
    }
    assert!(pods.get_opt("free").await.unwrap().is_none());
}

#[tokio::test]
async fn delete_without_grace_zero_only_marks_a_scheduled_pod() {
    let (s, c) = server().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    // The spec's grace period, then the request's.
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "short"}, "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 5, "containers": [{"name": "c", "image": "x"}]}})).unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.delete("short", &Default::default()).await.unwrap();
    let short = pods.get("short").await.unwrap();
    assert_eq!(short.metadata.deletion_grace_period_seconds, Some(5));
    assert_eq!(short.metadata.generation, Some(2));
    pod_in(&pods, "asked", "a", Some("n1"), "Running").await;
    let (code, body) = delete_raw(&s, "default", "asked", json!({"gracePeriodSeconds": 7})).await;
    assert_eq!(code, 200);
    assert_eq!(body["metadata"]["deletionGracePeriodSeconds"], 7);
    assert!((6..=8).contains(&secs_from_now(body["metadata"]["deletionTimestamp"].as_str().unwrap())));
    // Only a shorter grace period changes a pending deletion.
    let (_, again) = delete_raw(&s, "default", "asked", json!({"gracePeriodSeconds": 60})).await;
    assert_eq!(again["metadata"]["resourceVersion"], body["metadata"]["resourceVersion"]);
    let (_, shorter) = delete_raw(&s, "default", "asked", json!({"gracePeriodSeconds": 2})).await;
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 2);
    assert!((1..=3).contains(&secs_from_now(shorter["metadata"]["deletionTimestamp"].as_str().unwrap())));
    // Status writes (the kubelet reporting termination) leave the pod in place.
    let done = json!({"status": {"phase": "Succeeded"}});
    pods.patch_status("asked", &PatchParams::default(), &Patch::Merge(done)).await.unwrap();
    assert!(pods.get_opt("asked").await.unwrap().is_some());
}

#[tokio::test]
async fn force_delete_removes_a_terminating_pod() {
    let (s, c) = server().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    pod_in(&pods, "stuck", "s", Some("gone"), "Running").await;
    pods.delete("stuck", &Default::default()).await.unwrap();
    assert_eq!(pods.get("stuck").await.unwrap().metadata.deletion_grace_period_seconds, Some(30));
    pods.delete("stuck", &kube::api::DeleteParams::default().grace_period(0)).await.unwrap();
    assert!(pods.get_opt("stuck").await.unwrap().is_none());
    // The query parameter works as the body's field does.
    pod_in(&pods, "q", "s", Some("gone"), "Running").await;
    let (code, _) = call(&s, reqwest::Method::DELETE, "/api/v1/namespaces/default/pods/q?gracePeriodSeconds=0", None).await;
    assert_eq!(code, 200);
    assert!(pods.get_opt("q").await.unwrap().is_none());
}

#[tokio::test]
async fn unscheduled_or_terminal_pods_are_deleted_at_once() {
    let (s, c) = server().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    pod_in(&pods, "unscheduled", "u", None, "Pending").await;
    pods.delete("unscheduled", &Default::default()).await.unwrap();
    assert!(pods.get_opt("unscheduled").await.unwrap().is_none());
    pod_in(&pods, "done", "u", Some("n1"), "Succeeded").await;
    pods.delete("done", &Default::default()).await.unwrap();
    assert!(pods.get_opt("done").await.unwrap().is_none());
    // So is an evicted one.
    pod_in(&pods, "failed", "u", Some("n1"), "Failed").await;
    assert_eq!(evict_raw(&s, "default", "failed", None).await.0, 201);
    assert!(pods.get_opt("failed").await.unwrap().is_none());
}

#[tokio::test]
async fn delete_and_eviction_preconditions_conflict_like_a_real_server() {
    let (s, c) = server().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let p = pod_in(&pods, "p", "p", Some("n1"), "Running").await;
    let uid = p.metadata.uid.clone().unwrap();
    let (code, body) = delete_raw(&s, "default", "p", json!({"preconditions": {"uid": "other"}})).await;
    assert_eq!((code, body["reason"].as_str(), body["details"].clone()), (409, Some("Conflict"), json!({"name": "p", "kind": "Pod"})));
    assert_eq!(
        body["message"],
        format!(
            "Operation cannot be fulfilled on Pod \"p\": the UID in the precondition (other) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
        )
    );
    let (code, body) = delete_raw(&s, "default", "p", json!({"preconditions": {"resourceVersion": "1"}})).await;
    assert_eq!(code, 409);
    assert!(body["message"].as_str().unwrap().contains("the ResourceVersion in the precondition (1) does not match"));
    let (code, _) = evict_raw(&s, "default", "p", Some(json!({"preconditions": {"uid": "other"}}))).await;
    assert_eq!(code, 409);
    assert!(pods.get("p").await.unwrap().metadata.deletion_timestamp.is_none(), "a failed precondition changes nothing");
    let (code, _) = evict_raw(&s, "default", "p", Some(json!({"preconditions": {"uid": uid}}))).await;
    assert_eq!(code, 201);
}

#[tokio::test]
async fn a_stale_patch_conflicts_like_a_real_server() {
    let (s, c) = server().await;
    let nodes: Api<Node> = Api::all(c);
    let n = nodes.create(&PostParams::default(), &node("alive")).await.unwrap();
    nodes.patch("alive", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {"x": "1"}}}))).await.unwrap();
    let stale = json!({"metadata": {"resourceVersion": n.metadata.resource_version, "annotations": {"y": "2"}}});
    let resp = reqwest::Client::new()
        .patch(format!("{}/api/v1/nodes/alive", s.url()))
        .bearer_auth("testkit-admin-token")
        .header("Content-Type", "application/merge-patch+json")
        .body(stale.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap(), fixture("patch-stale-resourceversion-409.json"));
}

#[tokio::test]
async fn finalizers_hold_a_pod_until_removed_and_its_grace_period_is_over() {
    let (s, c) = server().await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let held = |name: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "finalizers": ["example.com/hold"]}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}})).unwrap()
    };
    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    // Force-deleted: it stays for its finalizer, and goes with it.
    pods.create(&PostParams::default(), &held("forced")).await.unwrap();
    pods.delete("forced", &kube::api::DeleteParams::default().grace_period(0)).await.unwrap();
    let p = pods.get("forced").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(0));
    pods.patch("forced", &PatchParams::default(), &release).await.unwrap();
    assert!(pods.get_opt("forced").await.unwrap().is_none());
    // Gracefully deleted: losing its finalizer does not end its grace period.
    pods.create(&PostParams::default(), &held("graceful")).await.unwrap();
    pods.delete("graceful", &Default::default()).await.unwrap();
    pods.patch("graceful", &PatchParams::default(), &release).await.unwrap();
    assert!(pods.get_opt("graceful").await.unwrap().is_some());
    assert_eq!(delete_raw(&s, "default", "graceful", json!({"gracePeriodSeconds": 0})).await.0, 200);
    assert!(pods.get_opt("graceful").await.unwrap().is_none());
}

#[tokio::test]
async fn pods_of_a_deleted_node_are_garbage_collected() {
    let (s, c) = server().await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for n in ["gone", "here"] {
        nodes.create(&PostParams::default(), &node(n)).await.unwrap();
    }
    pod_in(&pods, "orphan", "o", Some("gone"), "Running").await;
    pod_in(&pods, "kept", "o", Some("here"), "Running").await;
    pod_in(&pods, "unscheduled", "o", None, "Pending").await;
    nodes.delete("gone", &Default::default()).await.unwrap();
    let rv = pods.list(&Default::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut w = pods.watch(&WatchParams::default().timeout(10), &rv).await.unwrap().boxed();
    assert_eq!(s.store().gc_pods(autohealer_testkit::apiserver::TERMINATED_POD_GC_THRESHOLD), ["default/orphan"]);
    loop {
        match w.next().await.unwrap().unwrap() {
            WatchEvent::Deleted(p) => {
                let st = p.status.unwrap();
                assert_eq!(st.phase.as_deref(), Some("Failed"), "marked Failed before the force delete");
                let dt = st.conditions.unwrap().into_iter().find(|c| c.type_ == "DisruptionTarget").unwrap();
                assert_eq!((dt.reason.as_deref(), dt.message.as_deref()), (Some("DeletionByPodGC"), Some("PodGC: node no longer exists")));
                break;
            }
            WatchEvent::Modified(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    let mut left: Vec<_> = pods.list(&Default::default()).await.unwrap().items.into_iter().filter_map(|p| p.metadata.name).collect();
    left.sort();
    assert_eq!(left, ["kept", "unscheduled"]);
}

#[tokio::test]
async fn terminating_pods_on_an_out_of_service_node_are_garbage_collected() {
    let (s, c) = server().await;
    let nodes: Api<Node> = Api::all(c.clone());
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    nodes.create(&PostParams::default(), &node("down")).await.unwrap();
    let taint = json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}]}});
    nodes.patch("down", &PatchParams::default(), &Patch::Merge(taint)).await.unwrap();
    for name in ["terminating", "running"] {
        pod_in(&pods, name, "t", Some("down"), "Running").await;
    }
    pods.delete("terminating", &Default::default()).await.unwrap();
    // Still Ready: podgc leaves it to the kubelet.
    assert!(s.store().gc_pods(0).is_empty());
    let unready = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    nodes.patch_status("down", &PatchParams::default(), &Patch::Strategic(unready)).await.unwrap();
    assert_eq!(s.store().gc_pods(0), ["default/terminating"]);
    assert!(pods.get_opt("terminating").await.unwrap().is_none());
    assert!(pods.get_opt("running").await.unwrap().is_some(), "only terminating pods are collected");
}

// ---- The fake refuses what a real v1.36 server refuses ----

/// A request with a raw body and content type, for what kube-rs never sends: unknown
/// and duplicate fields, invalid objects. Returns the code, the `Warning` headers and
/// the body.
async fn raw(
    s: &FakeApiServer,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    body: String,
) -> (u16, Vec<String>, serde_json::Value) {
    let resp = reqwest::Client::new()
        .request(method, format!("{}{path}", s.url()))
        .bearer_auth("testkit-admin-token")
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let warnings = resp.headers().get_all("warning").iter().map(|h| h.to_str().unwrap().to_string()).collect();
    (code, warnings, resp.json().await.unwrap())
}

const MERGE: &str = "application/merge-patch+json";
const JSON: &str = "application/json";

#[tokio::test]
async fn a_strategic_merge_patch_replaces_the_taint_list_whole() {
    let (_s, c) = server().await;
    let nodes: Api<Node> = Api::all(c);
    nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    let two = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "NoExecute"}]}});
    nodes.patch("n1", &PatchParams::default(), &Patch::Strategic(&two)).await.unwrap();
    // `spec.taints` has no patch strategy: the list sent is the list kept.
    let one = json!({"spec": {"taints": [{"key": "c", "value": "v", "effect": "NoSchedule"}]}});
    let n = nodes.patch("n1", &PatchParams::default(), &Patch::Strategic(&one)).await.unwrap();
    let keys: Vec<_> = n.spec.unwrap().taints.unwrap().into_iter().map(|t| t.key).collect();
    assert_eq!(keys, ["c"]);
    // Conditions do merge by type, and annotations as maps, null deleting.
    let p = json!({"metadata": {"annotations": {"x": "1", "y": "2"}}});
    nodes.patch("n1", &PatchParams::default(), &Patch::Strategic(&p)).await.unwrap();
    let p = json!({"metadata": {"annotations": {"x": null}}});
    let n = nodes.patch("n1", &PatchParams::default(), &Patch::Strategic(&p)).await.unwrap();
    assert_eq!(n.metadata.annotations.unwrap().into_iter().collect::<Vec<_>>(), [("y".to_string(), "2".to_string())]);
}

#[tokio::test]
async fn unknown_fields_are_dropped_with_a_warning_by_default_and_refused_when_strict() {
    let (s, c) = server().await;
    let nodes: Api<Node> = Api::all(c);
    nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    let patch = json!({"spec": {"unschedulable": true, "bogus": 1}}).to_string();
    let (code, warnings, body) = raw(&s, reqwest::Method::PATCH, "/api/v1/nodes/n1", MERGE, patch.clone()).await;
    assert_eq!((code, warnings), (200, vec![r#"299 - "unknown field \"spec.bogus\"""#.to_string()]));
    assert_eq!(body["spec"], json!({"unschedulable": true}), "the unknown field is not kept");

    let (code, _, body) = raw(&s, reqwest::Method::PATCH, "/api/v1/nodes/n1?fieldValidation=Strict", MERGE, patch.clone()).await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.starts_with(r#" "" is invalid: patch: Invalid value: "#)
            && msg.ends_with(r#"strict decoding error: unknown field "spec.bogus""#),
        "{msg}"
    );
    let (code, warnings, _) = raw(&s, reqwest::Method::PATCH, "/api/v1/nodes/n1?fieldValidation=Ignore", MERGE, patch).await;
    assert_eq!((code, warnings.len()), (200, 0));

    // A create under Strict: a BadRequest naming the type, as the create handler does.
    let body = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}, "spec": {"bogus": 1}}).to_string();
    let (code, _, st) = raw(&s, reqwest::Method::POST, "/api/v1/nodes?fieldValidation=Strict", JSON, body).await;
    assert_eq!(code, 400);
    assert_eq!(st["message"], r#"Node in version "v1" cannot be handled as a Node: strict decoding error: unknown field "spec.bogus""#);
    assert!(nodes.get_opt("n2").await.unwrap().is_none());

    // Duplicate keys: the last one wins, with a warning; refused under Strict.
    let dup = r#"{"metadata": {"labels": {"a": "1", "a": "2"}}}"#.to_string();
    let (code, warnings, body) = raw(&s, reqwest::Method::PATCH, "/api/v1/nodes/n1", MERGE, dup.clone()).await;
    assert_eq!((code, warnings), (200, vec![r#"299 - "duplicate field \"metadata.labels.a\"""#.to_string()]));
    assert_eq!(body["metadata"]["labels"]["a"], "2");
    assert_eq!(raw(&s, reqwest::Method::PATCH, "/api/v1/nodes/n1?fieldValidation=Strict", MERGE, dup).await.0, 422);

    // A wrong type is refused whatever the directive, and an unknown directive too.
    let (code, _, _) =
        raw(&s, reqwest::Method::PATCH, "/api/v1/nodes/n1", MERGE, json!({"spec": {"unschedulable": "yes"}}).to_string()).await;
    assert_eq!(code, 422);
    let (code, _, st) = raw(&s, reqwest::Method::PATCH, "/api/v1/nodes/n1?fieldValidation=Loud", MERGE, "{}".into()).await;
    assert_eq!(code, 422);
    assert_eq!(
        st["message"],
        r#"PatchOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "Loud": supported values: "Ignore", "Strict", "Warn""#
    );

    // kube-rs asks for Strict through PatchParams.
    let pp = PatchParams { field_validation: Some(kube::api::ValidationDirective::Strict), ..Default::default() };
    let kube::Error::Api(st) = nodes.patch("n1", &pp, &Patch::Merge(json!({"spec": {"bogus": 2}}))).await.unwrap_err() else { panic!() };
    assert_eq!(st.code, 422);
}

#[tokio::test]
async fn every_field_the_real_server_returned_is_one_the_fake_knows() {
    let res = |plural: &str| autohealer_testkit::apiserver::resources::find("", "v1", plural).unwrap();
    let mut objects = vec![fixture("node-ready.json"), fixture("node-unknown-after-lease-stops.json")];
    objects.extend(fixture("nodes-all-unready-disruption-mode.json")["items"].as_array().unwrap().iter().cloned());
    for o in &objects {
        let (clean, unknown) = autohealer_testkit::apiserver::validation::decode_typed(res("nodes"), o).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(&clean, o);
    }
    for f in ["pod-after-eviction-terminating.json", "pod-pending-evicted-despite-pdb.json"] {
        let pod = fixture(f);
        let (clean, unknown) = autohealer_testkit::apiserver::validation::decode_typed(res("pods"), &pod).unwrap();
        assert!(unknown.is_empty(), "{f}: {unknown:?}");
        assert_eq!(clean, pod, "{f}");
    }
}

#[tokio::test]
async fn annotations_beyond_256_kib_are_refused_on_every_type() {
    let (s, c) = server().await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    let l: Lease =
        serde_json::from_value(json!({"metadata": {"name": "autohealer"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}))
            .unwrap();
    leases.create(&PostParams::default(), &l).await.unwrap();
    let key = "autohealer.dev/fleet";
    // Keys and values count together; exactly the limit is allowed.
    let fits = "x".repeat(256 * 1024 - key.len());
    leases.patch("autohealer", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {key: fits}}}))).await.unwrap();
    let over = "x".repeat(256 * 1024 - key.len() + 1);
    let kube::Error::Api(st) = leases
        .patch("autohealer", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {key: over}}})))
        .await
        .unwrap_err()
    else {
        panic!()
    };
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        st.message,
        r#"Lease.coordination.k8s.io "autohealer" is invalid: metadata.annotations: Too long: must have at most 262144 bytes"#
    );
    let (_, _, body) =
        raw(&s, reqwest::Method::GET, "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/autohealer", JSON, String::new()).await;
    assert_eq!(body["metadata"]["annotations"][key].as_str().unwrap().len(), 256 * 1024 - key.len(), "the refused write changed nothing");
    assert_eq!(
        fixture_like_details(&s, "/api/v1/nodes", json!({"metadata": {"name": "big", "annotations": {"a": "x".repeat(256 * 1024)}}})).await,
        json!({"name": "big", "kind": "Node", "causes": [{"reason": "FieldValueTooLong", "message": "Too long: must have at most 262144 bytes", "field": "metadata.annotations"}]})
    );
}

/// Creates `obj` at `path` and returns the 422's details.
async fn fixture_like_details(s: &FakeApiServer, path: &str, obj: serde_json::Value) -> serde_json::Value {
    let (code, _, body) = raw(s, reqwest::Method::POST, path, JSON, obj.to_string()).await;
    assert_eq!(code, 422, "{body}");
    body["details"].clone()
}

#[tokio::test]
async fn label_values_annotation_keys_and_taints_follow_the_real_rules() {
    let (s, c) = server().await;
    let nodes: Api<Node> = Api::all(c);
    nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    let refused = |p: serde_json::Value| {
        let nodes = nodes.clone();
        async move {
            match nodes.patch("n1", &PatchParams::default(), &Patch::Merge(&p)).await {
                Err(kube::Error::Api(st)) => {
                    assert_eq!(st.code, 422, "{p}");
                    st.message
                }
                other => panic!("{p} was accepted: {other:?}"),
            }
        }
    };
    // A label value of 64 characters, or one that ends in '-' (a node name cut at 63).
    let msg = refused(json!({"metadata": {"labels": {"autohealer.dev/evidence-for": "n".repeat(64)}}})).await;
    assert!(msg.contains("metadata.labels: Invalid value: ") && msg.contains("must be no more than 63 bytes"), "{msg}");
    let msg = refused(json!({"metadata": {"labels": {"autohealer.dev/evidence-for": "worker-"}}})).await;
    assert!(msg.contains("a valid label must be an empty string or consist of alphanumeric characters"), "{msg}");
    let msg = refused(json!({"metadata": {"annotations": {"not a key": "v"}}})).await;
    assert!(
        msg.contains(r#"metadata.annotations: Invalid value: "not a key": name part must consist of alphanumeric characters"#),
        "{msg}"
    );
    // Taints: a known effect, label-like values, one per key and effect.
    let msg = refused(json!({"spec": {"taints": [{"key": "a", "effect": "Sometimes"}]}})).await;
    assert!(msg.contains(r#"spec.taints[0].effect: Unsupported value: "Sometimes""#), "{msg}");
    let twice = json!({"spec": {"taints": [{"key": "a", "effect": "NoExecute"}, {"key": "a", "value": "x", "effect": "NoExecute"}]}});
    assert!(refused(twice).await.contains("taints must be unique by key and effect pair"));
    // The healer's own: its annotations and the out-of-service taint next to another.
    let ok = json!({"metadata": {"annotations": {"autohealer.dev/repair": "{}", "autohealer.dev/repair-history": "[]"}},
        "spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"},
                            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"}]}});
    nodes.patch("n1", &PatchParams::default(), &Patch::Merge(&ok)).await.unwrap();
    // Finalizers cannot be added to an object being deleted.
    let pods: Api<Pod> = Api::namespaced(s.client().await.unwrap(), "default");
    let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "finalizers": ["example.com/a"]}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}})).unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.delete("p", &Default::default()).await.unwrap();
    let more = Patch::Merge(json!({"metadata": {"finalizers": ["example.com/a", "example.com/b"]}}));
    let kube::Error::Api(st) = pods.patch("p", &PatchParams::default(), &more).await.unwrap_err() else { panic!() };
    assert!(st.message.contains("no new finalizers can be added if the object is being deleted"), "{}", st.message);
}

#[tokio::test]
async fn leases_are_validated_and_a_blind_put_is_refused() {
    let (s, c) = server().await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "kube-system");
    let path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases";
    let lease =
        |spec: serde_json::Value| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": spec});
    let (code, _, st) =
        raw(&s, reqwest::Method::POST, path, JSON, lease(json!({"leaseDurationSeconds": 0, "leaseTransitions": -1})).to_string()).await;
    assert_eq!(code, 422);
    assert_eq!(
        st["message"],
        r#"Lease.coordination.k8s.io "l" is invalid: [spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0, spec.leaseTransitions: Invalid value: -1: must be greater than or equal to 0]"#
    );
    // What kube-lease-manager creates: an empty spec.
    let (code, _, created) = raw(&s, reqwest::Method::POST, path, JSON, lease(json!({})).to_string()).await;
    assert_eq!(code, 201);
    // A PUT without a resourceVersion: Leases take no unconditional update.
    let mut blind = created.clone();
    blind["metadata"].as_object_mut().unwrap().remove("resourceVersion");
    blind["spec"]["holderIdentity"] = json!("b");
    let (code, _, st) = raw(&s, reqwest::Method::PUT, &format!("{path}/l"), JSON, blind.to_string()).await;
    assert_eq!(code, 422);
    assert_eq!(
        st["message"],
        r#"leases.coordination.k8s.io "l" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"#
    );
    assert_eq!(st["details"]["kind"], "leases");
    // With the version read: taken; with that version again: a conflict.
    let mut fenced = created.clone();
    fenced["spec"]["holderIdentity"] = json!("b");
    assert_eq!(raw(&s, reqwest::Method::PUT, &format!("{path}/l"), JSON, fenced.to_string()).await.0, 200);
    let (code, _, st) = raw(&s, reqwest::Method::PUT, &format!("{path}/l"), JSON, fenced.to_string()).await;
    assert_eq!((code, st["reason"].as_str()), (409, Some("Conflict")));
    assert_eq!(leases.get("l").await.unwrap().spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn an_apply_that_creates_needs_its_own_name_and_version() {
    let (s, c) = server().await;
    let leases: Api<Lease> = Api::namespaced(c, "kube-node-lease");
    let pp = PatchParams::apply("kubelet");
    let nameless = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "n1"}});
    let kube::Error::Api(st) = leases.patch("n1", &pp, &Patch::Apply(&nameless)).await.unwrap_err() else { panic!() };
    assert_eq!((st.code, st.message.as_str()), (400, "the name of the object () does not match the name on the URL (n1)"));
    let old = json!({"apiVersion": "coordination.k8s.io/v1beta1", "kind": "Lease", "metadata": {"name": "n1"}});
    let kube::Error::Api(st) = leases.patch("n1", &pp, &Patch::Apply(&old)).await.unwrap_err() else { panic!() };
    assert_eq!(st.code, 400);
    let bogus = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"}, "spec": {"holder": "n1"}});
    let kube::Error::Api(st) = leases.patch("n1", &pp, &Patch::Apply(&bogus)).await.unwrap_err() else { panic!() };
    assert!(st.message.ends_with(".spec.holder: field not declared in schema"), "{}", st.message);
    let named =
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}});
    leases.patch("n1", &pp, &Patch::Apply(&named)).await.unwrap();
    drop(s);
}

#[tokio::test]
async fn the_kube_recorder_s_events_pass_and_invalid_events_are_refused() {
    use kube::runtime::events::{Event as Ev, EventType as EvType, Recorder, Reporter};
    let (s, c) = server().await;
    let nodes: Api<Node> = Api::all(c.clone());
    let n = nodes.create(&PostParams::default(), &node("n1")).await.unwrap();
    let recorder = Recorder::new(c.clone(), Reporter { controller: "autohealer".into(), instance: Some("replica-a".into()) });
    let ev = Ev {
        type_: EvType::Warning,
        reason: "RepairStarted".into(),
        note: Some("é".repeat(500)),
        action: "Reboot".into(),
        secondary: None,
    };
    // The first publish creates; the second, a series, is a merge patch of the whole Event.
    recorder.publish(&ev, &kube::Resource::object_ref(&n, &())).await.unwrap();
    recorder.publish(&ev, &kube::Resource::object_ref(&n, &())).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), "default");
    let list = events.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));

    let path = "/apis/events.k8s.io/v1/namespaces/default/events";
    let good = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "autohealer", "reportingInstance": "replica-a", "action": "Reboot", "reason": "RepairStarted",
        "regarding": {"kind": "Node", "name": "n1", "apiVersion": "v1"}, "type": "Normal", "note": "ok"});
    let mut bad = good.clone();
    bad["note"] = json!("x".repeat(1025));
    bad["type"] = json!("Info");
    bad.as_object_mut().unwrap().remove("action");
    let (code, _, st) = raw(&s, reqwest::Method::POST, path, JSON, bad.to_string()).await;
    assert_eq!(code, 422);
    assert_eq!(
        st["message"],
        r#"Event.events.k8s.io "e1" is invalid: [action: Required value, message: Invalid value: "": can have at most 1024 characters, type: Invalid value: "": has invalid value: Info]"#
    );
    let mut elsewhere = good.clone();
    elsewhere["metadata"]["namespace"] = json!("kube-public");
    let (code, _, st) =
        raw(&s, reqwest::Method::POST, "/apis/events.k8s.io/v1/namespaces/kube-public/events", JSON, elsewhere.to_string()).await;
    assert_eq!(code, 422, "an Event about a cluster-scoped object lives in default or kube-system");
    assert!(st["message"].as_str().unwrap().contains("involvedObject.namespace: Invalid value: \"\": does not match event.namespace"));
    assert_eq!(raw(&s, reqwest::Method::POST, path, JSON, good.to_string()).await.0, 201);
    // On update, what happened is immutable, and a series counts from 2.
    let (code, _, st) = raw(&s, reqwest::Method::PATCH, &format!("{path}/e1"), MERGE, json!({"note": "changed"}).to_string()).await;
    assert_eq!(code, 422);
    assert!(st["message"].as_str().unwrap().contains(r#"message: Invalid value: "changed": field is immutable"#), "{st}");
    let series = json!({"series": {"count": 1, "lastObservedTime": "2026-01-01T00:00:01.000000Z"}});
    let (code, _, st) = raw(&s, reqwest::Method::PATCH, &format!("{path}/e1"), MERGE, series.to_string()).await;
    assert_eq!(code, 422);
    assert!(st["message"].as_str().unwrap().contains("series.count: Invalid value: \"\": should be at least 2"), "{st}");
}
