//! Property: whatever Keystone, Nova, Cinder, Heat or Magnum answer — random bytes,
//! truncated JSON, JSON of the wrong shape, any status — every client call returns
//! `Ok` or an error that names the call, and never panics. The answers come from a
//! real HTTP server, so the whole path (status handling, body decoding, parsing) runs.

use autohealer_openstack::clients::{Cinder, Heat, Magnum, Nova};
use autohealer_openstack::{OpenStackConfig, Session};
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Answer {
    /// `None`: Keystone answers properly (so the services are reached); `Some`: this
    /// is Keystone's answer too.
    auth: Option<(u16, String)>,
    service: (u16, String),
    base: String,
}

type Shared = Arc<Mutex<Answer>>;

async fn keystone(axum::extract::State(s): axum::extract::State<Shared>) -> axum::response::Response {
    let a = s.lock().unwrap().clone();
    if let Some((status, body)) = a.auth {
        let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
        r.headers_mut().insert("x-subject-token", HeaderValue::from_static("tok"));
        return r;
    }
    let ep = |t: &str| json!({"type": t, "endpoints": [{"interface": "public", "region_id": "R", "url": format!("{}/{t}", a.base)}]});
    let body = json!({"token": {"expires_at": "2099-01-01T00:00:00Z", "catalog": [ep("compute"), ep("volumev3"), ep("orchestration"), ep("container-infra")]}});
    let mut r = (StatusCode::CREATED, axum::Json(body)).into_response();
    r.headers_mut().insert("x-subject-token", HeaderValue::from_static("tok"));
    r
}

async fn service(axum::extract::State(s): axum::extract::State<Shared>) -> axum::response::Response {
    let (status, body) = s.lock().unwrap().service.clone();
    let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    if status == 302 {
        r.headers_mut().insert("location", HeaderValue::from_static("/orchestration/stacks/s/1"));
    }
    r
}

struct Harness {
    rt: tokio::runtime::Runtime,
    shared: Shared,
    session: Session,
}

fn harness() -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let shared: Shared = Arc::default();
    let base = rt.block_on(async {
        let app = axum::Router::new().route("/v3/auth/tokens", axum::routing::post(keystone)).fallback(service).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    });
    shared.lock().unwrap().base = base.clone();
    let block = json!({"auth-url": format!("{base}/v3"), "user-id": "u", "password": "p", "project-id": "p", "region": "R",
        "request-timeout": "5s"});
    let cfg = OpenStackConfig::parse(Some(&block)).unwrap();
    let settings = cfg.resolve(Some("c"), &|_| None).unwrap();
    let session = Session::new(settings, None).unwrap();
    Harness { rt, shared, session }
}

/// Typical answers, to be truncated or mangled.
fn samples() -> Vec<Value> {
    vec![
        json!({"server": {"id": "s1", "name": "n", "status": "ACTIVE", "image": {"id": "i"}, "addresses": {"net": [{"addr": "10.0.0.1"}]}}}),
        json!({"volumeAttachments": [{"id": "a", "volumeId": "v"}]}),
        json!({"volume": {"bootable": "true"}}),
        json!({"stack": {"id": "1", "stack_name": "s", "stack_status": "UPDATE_COMPLETE"}}),
        json!({"resources": [{"resource_name": "r", "resource_type": "OS::Nova::Server", "physical_resource_id": "s1", "links": [{"rel": "nested", "href": "x"}]}]}),
        json!({"uuid": "c", "status": "UPDATE_COMPLETE", "stack_id": "1", "labels": {"auto_healing_enabled": "true"}, "node_count": 3}),
        json!({"nodegroups": [{"uuid": "g", "name": "default-worker", "role": "worker", "node_count": 2, "node_addresses": ["10.0.0.1"]}]}),
        json!({"output": "console"}),
        json!({"error": {"message": "boom", "code": 500}}),
    ]
}

fn body() -> impl Strategy<Value = String> {
    let truncated = (0..samples().len(), any::<prop::sample::Index>()).prop_map(|(i, cut)| {
        let s = samples()[i].to_string();
        s[..cut.index(s.len() + 1).min(s.len())].to_string()
    });
    let random_json = any::<u64>().prop_map(|seed| {
        // A random tree of JSON values, shaped like nothing in particular.
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        fn tree(next: &mut dyn FnMut() -> u64, depth: u32) -> Value {
            match (next() % 7, depth) {
                (0, _) => Value::Null,
                (1, _) => json!(next().is_multiple_of(2)),
                (2, _) => json!((next() % 100_000) as i64 - 50_000),
                (3, _) => json!(format!("s{}", next() % 100)),
                (4, d) if d < 4 => Value::Array((0..next() % 4).map(|_| tree(next, d + 1)).collect()),
                (_, d) if d < 4 => {
                    let keys =
                        ["server", "id", "status", "uuid", "nodegroups", "resources", "volume", "bootable", "stack", "output", "error"];
                    Value::Object((0..next() % 5).map(|_| (keys[(next() % 11) as usize].to_string(), tree(next, d + 1))).collect())
                }
                _ => json!("leaf"),
            }
        }
        tree(&mut next, 0).to_string()
    });
    prop_oneof![
        truncated,
        random_json,
        ".{0,200}",
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
    ]
}

/// 502, 503 and 504 are retried with backoff (seconds): `a_503_is_retried_then_reported`
/// covers them once instead of in every case.
fn status() -> impl Strategy<Value = u16> {
    prop::sample::select(vec![200u16, 201, 202, 204, 302, 400, 401, 404, 406, 409, 500])
}

#[test]
fn a_503_is_retried_then_reported_naming_the_call() {
    let h = harness();
    h.shared.lock().unwrap().service = (503, r#"{"message": "try later"}"#.into());
    let results =
        h.rt.block_on(async { vec![("nova", Nova(&h.session).reboot("s1", false).await.map(|_| ()).map_err(|e| e.to_string()))] });
    check(&results, false);
    let e = results[0].1.clone().unwrap_err();
    assert!(e.contains("HTTP 503") && e.contains("try later"), "{e}");
}

/// Every client call once; each result must be `Ok` or an error naming the service.
async fn every_call(s: &Session) -> Vec<(&'static str, Result<(), String>)> {
    fn r<T>(x: Result<T, autohealer_cloud::CloudError>) -> Result<(), String> {
        x.map(|_| ()).map_err(|e| e.to_string())
    }
    let (nova, cinder, heat, magnum) = (Nova(s), Cinder(s), Heat(s), Magnum(s));
    vec![
        ("nova", r(nova.server("s1").await)),
        ("nova", r(nova.reboot("s1", false).await)),
        ("nova", r(nova.stop("s1").await)),
        ("nova", r(nova.start("s1").await)),
        ("nova", r(nova.console("s1", 10).await)),
        ("nova", r(nova.attachments("s1").await)),
        ("cinder", r(cinder.bootable("v").await)),
        ("heat", r(heat.find("s").await)),
        ("heat", r(heat.status("s", "1").await)),
        ("heat", r(heat.resources("s", "1").await)),
        ("magnum", r(magnum.cluster("c").await)),
        ("magnum", r(magnum.nodegroups("c").await)),
        ("magnum", r(magnum.resize("c", "g", 2, &["s1".to_string()]).await)),
    ]
}

fn check(results: &[(&str, Result<(), String>)], auth_broken: bool) {
    for (service, r) in results {
        if let Err(e) = r {
            let named = if auth_broken { e.contains("keystone") } else { e.contains(service) };
            assert!(named, "{service}: the error does not name the call: {e}");
            assert!(!e.contains("panicked"), "{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_service_answer_gives_a_result_or_an_error_naming_the_call(status in status(), body in body()) {
        thread_local!(static H: Harness = harness());
        H.with(|h| {
            h.shared.lock().unwrap().auth = None;
            h.shared.lock().unwrap().service = (status, body.clone());
            let results = h.rt.block_on(every_call(&h.session));
            check(&results, false);
        });
    }

    #[test]
    fn any_keystone_answer_gives_a_token_or_an_error_naming_keystone(status in status(), body in body()) {
        thread_local!(static H: Harness = harness());
        H.with(|h| {
            h.shared.lock().unwrap().auth = Some((status, body.clone()));
            h.shared.lock().unwrap().service = (200, "{}".into());
            // A fresh session each time, so Keystone is asked again.
            let block = json!({"auth-url": format!("{}/v3", h.shared.lock().unwrap().base), "user-id": "u", "password": "p", "project-id": "p"});
            let settings = OpenStackConfig::parse(Some(&block)).unwrap().resolve(Some("c"), &|_| None).unwrap();
            let session = Session::new(settings, None).unwrap();
            let results = h.rt.block_on(async { vec![("nova", Nova(&session).server("s1").await.map(|_| ()).map_err(|e| e.to_string()))] });
            // Either Keystone's answer was usable (then the service answered `{}`), or the error names Keystone.
            for (_, r) in &results {
                if let Err(e) = r {
                    prop_assert!(e.contains("keystone") || e.contains("nova"), "{e}");
                }
            }
            Ok(())
        })?;
    }
}
