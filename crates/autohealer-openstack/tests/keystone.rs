//! The provider against a real Keystone (installed from PyPI and started by
//! `.ci/keystone.sh`, which `.ci/run` calls), whose catalog points at the fake
//! Nova/Cinder/Heat/Magnum. Skipped with a visible message when no Keystone is set
//! up locally; required in CI.

use autohealer_cloud::{CloudProvider, NodeInfo, RepairGate, Role};
use autohealer_testkit::openstack::{FakeOpenStack, OsOptions};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn fixture() -> Option<Value> {
    match std::env::var("AUTOHEALER_KEYSTONE_FIXTURE") {
        Ok(path) => Some(
            serde_json::from_str(&std::fs::read_to_string(&path).expect("the Keystone fixture file is readable"))
                .expect("the fixture is JSON"),
        ),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI must run the real-Keystone tests: .ci/run starts Keystone with .ci/keystone.sh")
        }
        Err(_) => {
            eprintln!(
                "SKIPPED: no real Keystone (run `eval $(bash .ci/keystone.sh)` to set one up and export AUTOHEALER_KEYSTONE_FIXTURE)"
            );
            None
        }
    }
}

#[tokio::test]
async fn real_keystone_password_application_credential_renewal_and_catalog() {
    let Some(f) = fixture() else { return };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = |k: &str| f[k].as_str().unwrap().to_string();
    let os = FakeOpenStack::start(OsOptions {
        port: f["services_port"].as_u64().unwrap() as u16,
        keystone: Some(s("auth_url")),
        ..Default::default()
    })
    .await
    .unwrap();
    os.add_server("33333333-3333-3333-3333-333333333333", "k-worker-0", "10.1.0.11", true);
    os.add_cluster("kc1", "k", &[], &["33333333-3333-3333-3333-333333333333".into()], true);
    let auths = Arc::new(AtomicUsize::new(0));
    let counter = auths.clone();
    let observer: autohealer_openstack::Observer = Arc::new(move |service: &str, code: u16| {
        if service == "keystone" && code == 201 {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let build = |block: Value, observer: Option<autohealer_openstack::Observer>| {
        autohealer_openstack::build(Some(&block), Some("kc1"), observer).unwrap()
    };

    // Password, user and project by id; the catalog Keystone returned leads to the fake services.
    let by_id = build(
        json!({"auth-url": s("auth_url"), "user-id": s("user_id"), "password": s("password"), "project-id": s("project_id"), "region": s("region")}),
        Some(observer),
    );
    assert_eq!(by_id.repair_allowed().await.unwrap(), RepairGate::Allowed);
    let node = NodeInfo {
        name: "k-worker-0".into(),
        role: Some(Role::Worker),
        provider_id: Some("openstack:///33333333-3333-3333-3333-333333333333".into()),
        ..Default::default()
    };
    by_id.reboot(&node).await.unwrap();
    assert_eq!(os.count("POST", "/servers/33333333-3333-3333-3333-333333333333/action", Some("SOFT")), 1);
    assert_eq!(auths.load(Ordering::Relaxed), 1);

    // The token lives 8s (.ci/keystone.sh); it is renewed before it expires, never refused.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(by_id.repair_allowed().await.unwrap(), RepairGate::Allowed);
    assert_eq!(auths.load(Ordering::Relaxed), 2, "renewed ahead of expiry");
    assert!(os.requests().iter().all(|r| r.status != 401), "no service ever saw an expired token");

    // Names with domains.
    let by_name = build(
        json!({"auth-url": s("auth_url"), "username": s("user_name"), "user-domain-name": s("domain"), "password": s("password"), "project-name": s("project_name"), "project-domain-name": s("domain")}),
        None,
    );
    assert_eq!(by_name.repair_allowed().await.unwrap(), RepairGate::Allowed);

    // Application credentials, by id and by name + user; no scope is sent.
    let ac_id = build(
        json!({"auth-url": s("auth_url"), "application-credential-id": s("app_cred_id"), "application-credential-secret": s("app_cred_secret")}),
        None,
    );
    assert_eq!(ac_id.repair_allowed().await.unwrap(), RepairGate::Allowed);
    let ac_name = build(
        json!({"auth-url": s("auth_url"), "application-credential-name": s("app_cred_name"), "user-id": s("user_id"), "application-credential-secret": s("app_cred_secret")}),
        None,
    );
    assert_eq!(ac_name.repair_allowed().await.unwrap(), RepairGate::Allowed);

    // A wrong password: the error names the call and the status, never the secret.
    let wrong = build(
        json!({"auth-url": s("auth_url"), "user-id": s("user_id"), "password": "not-the-password", "project-id": s("project_id")}),
        None,
    );
    let e = wrong.repair_allowed().await.unwrap_err().to_string();
    assert!(e.contains("keystone POST /v3/auth/tokens") && e.contains("401"), "{e}");
    assert!(!e.contains("not-the-password"));
}
