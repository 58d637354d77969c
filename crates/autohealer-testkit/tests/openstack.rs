//! The fake OpenStack driven over HTTP with reqwest.

use autohealer_testkit::openstack::{self, FakeOpenStack, OsOptions};
use serde_json::{Value, json};
use std::time::Duration;

async fn cloud() -> (FakeOpenStack, reqwest::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let os = FakeOpenStack::start(OsOptions {
        reboot_time: Duration::from_millis(300),
        update_time: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .unwrap();
    os.add_server("s1", "w1", "10.0.0.11", true);
    os.add_server("s2", "m1", "10.0.0.21", false);
    os.add_cluster("c1", "demo", &["s2".into()], &["s1".into()], true);
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    (os, http)
}

async fn token(os: &FakeOpenStack, http: &reqwest::Client, auth: Value) -> reqwest::Response {
    http.post(format!("{}/auth/tokens", os.auth_url())).json(&json!({"auth": auth})).send().await.unwrap()
}

async fn password_token(os: &FakeOpenStack, http: &reqwest::Client) -> String {
    let auth = json!({"identity": {"methods": ["password"], "password": {"user": {"id": openstack::USER_ID, "password": openstack::PASSWORD}}}, "scope": {"project": {"id": openstack::PROJECT_ID}}});
    let r = token(os, http, auth).await;
    assert_eq!(r.status(), 201);
    r.headers()["x-subject-token"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn keystone_password_and_application_credential() {
    let (os, http) = cloud().await;
    let by_name = json!({"identity": {"methods": ["password"], "password": {"user": {"name": openstack::USER_NAME, "domain": {"name": "Default"}, "password": openstack::PASSWORD}}},
        "scope": {"project": {"name": openstack::PROJECT_NAME, "domain": {"name": "Default"}}}});
    let r = token(&os, &http, by_name).await;
    assert_eq!(r.status(), 201);
    assert!(r.headers().contains_key("x-subject-token"));
    let body: Value = r.json().await.unwrap();
    assert!(body["token"]["expires_at"].as_str().unwrap().ends_with('Z'));
    let types: Vec<&str> = body["token"]["catalog"].as_array().unwrap().iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"compute") && types.contains(&"container-infra") && types.contains(&"volumev3"));

    let ac = json!({"identity": {"methods": ["application_credential"], "application_credential": {"id": openstack::APP_CRED_ID, "secret": openstack::APP_CRED_SECRET}}});
    assert_eq!(token(&os, &http, ac).await.status(), 201);
    let scoped = json!({"identity": {"methods": ["application_credential"], "application_credential": {"id": openstack::APP_CRED_ID, "secret": openstack::APP_CRED_SECRET}}, "scope": {"project": {"id": "x"}}});
    assert_eq!(token(&os, &http, scoped).await.status(), 401, "an application credential takes no scope");
    let wrong = json!({"identity": {"methods": ["password"], "password": {"user": {"id": openstack::USER_ID, "password": "nope"}}}});
    assert_eq!(token(&os, &http, wrong).await.status(), 401);
}

#[tokio::test]
async fn nova_reboot_is_409_while_in_progress_and_active_after() {
    let (os, http) = cloud().await;
    let t = password_token(&os, &http).await;
    let nova = os.endpoint("compute");
    let reboot =
        || http.post(format!("{nova}/servers/s1/action")).header("x-auth-token", &t).json(&json!({"reboot": {"type": "SOFT"}})).send();
    assert_eq!(reboot().await.unwrap().status(), 202);
    let s: Value = http.get(format!("{nova}/servers/s1")).header("x-auth-token", &t).send().await.unwrap().json().await.unwrap();
    assert_eq!(s["server"]["status"], "REBOOT");
    let r = reboot().await.unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(body["conflictingRequest"]["message"].as_str().unwrap().contains("reboot_started"));
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s: Value = http.get(format!("{nova}/servers/s1")).header("x-auth-token", &t).send().await.unwrap().json().await.unwrap();
            if s["server"]["status"] == "ACTIVE" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("ACTIVE again");
    let r = http.get(format!("{nova}/servers/nope")).header("x-auth-token", &t).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["itemNotFound"]["message"].as_str().unwrap().contains("nope"));
    let vols: Value =
        http.get(format!("{nova}/servers/s1/os-volume_attachments")).header("x-auth-token", &t).send().await.unwrap().json().await.unwrap();
    assert_eq!(vols["volumeAttachments"].as_array().unwrap().len(), 2);
    let v: Value = http
        .get(format!("{}/volumes/vol-data-s1", os.endpoint("volumev3")))
        .header("x-auth-token", &t)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["volume"]["bootable"], "false", "Cinder's bootable is a string");
}

#[tokio::test]
async fn expired_token_gets_401_on_every_service() {
    let (os, http) = cloud().await;
    let t = password_token(&os, &http).await;
    let url = format!("{}/servers/s1", os.endpoint("compute"));
    assert_eq!(http.get(&url).header("x-auth-token", &t).send().await.unwrap().status(), 200);
    os.expire_tokens();
    assert_eq!(http.get(&url).header("x-auth-token", &t).send().await.unwrap().status(), 401);
    let magnum = format!("{}/clusters/c1", os.endpoint("container-infra"));
    assert_eq!(http.get(&magnum).header("x-auth-token", &t).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn heat_find_redirects_and_update_rebuilds_marked_servers() {
    let (os, http) = cloud().await;
    let t = password_token(&os, &http).await;
    let heat = os.endpoint("orchestration");
    let r = http.get(format!("{heat}/stacks/stack-c1")).header("x-auth-token", &t).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.ends_with("/stacks/demo-stack/stack-c1"), "{loc}");
    let res: Value =
        http.get(format!("{loc}/resources?nested_depth=2")).header("x-auth-token", &t).send().await.unwrap().json().await.unwrap();
    let server = res["resources"].as_array().unwrap().iter().find(|r| r["physical_resource_id"] == "s2").unwrap().clone();
    let parent = server["links"].as_array().unwrap().iter().find(|l| l["rel"] == "stack").unwrap()["href"].as_str().unwrap().to_string();
    let mark = http
        .patch(format!("{parent}/resources/{}", server["resource_name"].as_str().unwrap()))
        .header("x-auth-token", &t)
        .json(&json!({"mark_unhealthy": true, "resource_status_reason": "autohealer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(mark.status(), 200);
    assert_eq!(http.patch(&loc).header("x-auth-token", &t).json(&json!({})).send().await.unwrap().status(), 202);
    assert_eq!(os.stack("stack-c1").unwrap().status, "UPDATE_IN_PROGRESS");
    tokio::time::timeout(Duration::from_secs(10), async {
        while os.stack("stack-c1").unwrap().status != "UPDATE_COMPLETE" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn magnum_microversions_patch_and_resize() {
    let (os, http) = cloud().await;
    let t = password_token(&os, &http).await;
    let url = format!("{}/clusters/c1", os.endpoint("container-infra"));
    let get = |v: &'static str| http.get(&url).header("x-auth-token", &t).header("OpenStack-API-Version", v).send();
    let old: Value = get("container-infra 1.10").await.unwrap().json().await.unwrap();
    assert_eq!(old["stack_id"], "stack-c1");
    assert!(old.get("cluster_id").is_none());
    let new: Value = get("container-infra 1.13").await.unwrap().json().await.unwrap();
    assert!(new.get("stack_id").is_none() && new["cluster_id"] == "stack-c1");
    assert_eq!(get("container-infra 1.99").await.unwrap().status(), 406);

    let patch = json!([{"op": "replace", "path": "/health_status", "value": "UNHEALTHY"}, {"op": "replace", "path": "/health_status_reason", "value": {"w1.NodeCondition": "error"}}]);
    let r = http
        .patch(&url)
        .header("x-auth-token", &t)
        .header("OpenStack-API-Version", "container-infra 1.10")
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(os.cluster("c1").unwrap().health_status.as_deref(), Some("UNHEALTHY"));

    let ng: Value =
        http.get(format!("{url}/nodegroups/default-worker")).header("x-auth-token", &t).send().await.unwrap().json().await.unwrap();
    assert_eq!(ng["node_addresses"], json!(["10.0.0.11"]));
    let resize = json!({"node_count": 1, "nodes_to_remove": ["s1"], "nodegroup": "default-worker"});
    let r = http.post(format!("{url}/actions/resize")).header("x-auth-token", &t).json(&resize).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert!(os.server("s1").is_none(), "the removed server is deleted");
    tokio::time::timeout(Duration::from_secs(10), async {
        while os.cluster("c1").unwrap().status != "UPDATE_COMPLETE" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let workers = os.nodegroup_servers("c1", "worker");
    assert_eq!(workers.len(), 1);
    assert_ne!(workers[0], "s1", "a replacement server was created");
    assert_eq!(os.count("POST", "/actions/resize", Some("nodes_to_remove")), 1);
}
