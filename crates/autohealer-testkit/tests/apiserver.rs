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
