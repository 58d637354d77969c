//! Notifications delivered to real receivers: local HTTP servers that check the
//! Slack, PagerDuty and webhook payload shapes, and a real SMTP server (aiosmtpd,
//! from PyPI) with STARTTLS and authentication.

use autohealer_cloud::Role;
use autohealer_core::{Kind, Metrics, Notification, Notifier, Severity};
use autohealer_notify::{Dispatcher, NotifyConfig};
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An HTTP receiver that keeps every JSON body and answers `fail_first` requests with
/// `fail_status` before it accepts.
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
    fail_first: Arc<AtomicUsize>,
    fail_status: u16,
    hits: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize, fail_status: u16) -> (Self, String) {
        let r = Receiver { fail_first: Arc::new(AtomicUsize::new(fail_first)), fail_status, ..Default::default() };
        let app = axum::Router::new().route("/{*path}", axum::routing::post(receive)).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, format!("http://{addr}"))
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        for _ in 0..400 {
            if self.bodies.lock().unwrap().len() >= n {
                return self.bodies();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {n} deliveries, got {:?}", self.bodies());
    }
}

async fn receive(State(r): State<Receiver>, body: String) -> (StatusCode, &'static str) {
    r.hits.fetch_add(1, Ordering::SeqCst);
    if r.fail_first.load(Ordering::SeqCst) > 0 {
        r.fail_first.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::from_u16(r.fail_status).unwrap(), "try later");
    }
    match serde_json::from_str(&body) {
        Ok(v) => {
            r.bodies.lock().unwrap().push(v);
            (StatusCode::OK, "ok")
        }
        Err(_) => (StatusCode::BAD_REQUEST, "invalid_payload"),
    }
}

fn secret_file(dir: &std::path::Path, name: &str, value: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    p.display().to_string()
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("autohealer-notify-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(yaml: &str) -> NotifyConfig {
    let v: Value = serde_saphyr_free(yaml);
    NotifyConfig::parse(&v, "notifications").unwrap_or_else(|e| panic!("{e}"))
}

/// The tests write their configs as JSON-compatible YAML (flow style).
fn serde_saphyr_free(yaml: &str) -> Value {
    serde_json::from_str(yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"))
}

fn note(kind: Kind, severity: Severity, node: &str, incident: &str) -> Notification {
    Notification {
        kind,
        severity,
        node: Some(node.into()),
        role: Some(Role::Worker),
        summary: format!("{kind} on {node}"),
        incident: incident.into(),
        dry_run: false,
        at: "2026-11-21T10:00:00Z".parse().unwrap(),
    }
}

#[tokio::test]
async fn slack_gets_channels_by_severity_and_pagerduty_pages_only_critical_then_resolves() {
    let dir = tmpdir("route");
    let (slack, slack_url) = Receiver::start(0, 500).await;
    let (pd, pd_url) = Receiver::start(0, 500).await;
    let c = config(&format!(
        r##"{{"coalesce-window": "100ms", "retry-backoff": "10ms", "sinks": [
            {{"type": "slack", "url-file": "{}", "channels": {{"critical": "#pager", "default": "#autohealer"}}}},
            {{"type": "pagerduty", "routing-key-file": "{}", "api-url": "{pd_url}/v2/enqueue"}}]}}"##,
        secret_file(&dir, "slack", &format!("{slack_url}/services/T000/B000/XXXX")),
        secret_file(&dir, "pd", "R0UT1NGKEY0123456789012345678901"),
    ));
    let metrics = Arc::new(Metrics::new());
    let d = Dispatcher::start(&c, "prod-1", metrics.clone()).unwrap();

    // A worker rebooted and fixed: chat hears it, nobody is paged.
    d.notify(note(Kind::RepairStarted, Severity::Medium, "w-1", "node/w-1/1"));
    d.notify(note(Kind::RepairSucceeded, Severity::Medium, "w-1", "node/w-1/1"));
    let got = slack.wait_for(2).await;
    for b in &got {
        assert_eq!(b["username"], "autohealer");
        assert_eq!(b["channel"], "#autohealer");
        assert!(b["text"].as_str().unwrap().contains("w-1") && b["text"].as_str().unwrap().contains("prod-1"), "{b}");
    }
    // A node failing for the fourth time in an hour: paged, then resolved with the same key.
    d.notify(note(Kind::RepairStarted, Severity::Critical, "w-2", "node/w-2/7"));
    let pages = pd.wait_for(1).await;
    assert_eq!(pages[0]["event_action"], "trigger");
    assert_eq!(pages[0]["routing_key"], "R0UT1NGKEY0123456789012345678901");
    assert_eq!(pages[0]["payload"]["severity"], "critical");
    assert_eq!(pages[0]["payload"]["source"], "w-2");
    assert!(pages[0]["payload"]["summary"].as_str().unwrap().len() <= 1024);
    let key = pages[0]["dedup_key"].as_str().unwrap().to_string();
    assert_eq!(key, "autohealer/prod-1/node/w-2/7");
    d.notify(note(Kind::RepairSucceeded, Severity::Critical, "w-2", "node/w-2/7"));
    let pages = pd.wait_for(2).await;
    assert_eq!(
        pages[1],
        serde_json::json!({"routing_key": "R0UT1NGKEY0123456789012345678901", "event_action": "resolve", "dedup_key": key})
    );
    assert_eq!(slack.wait_for(4).await[2]["channel"], "#pager", "critical goes to its own channel");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pd.bodies().len(), 2, "the medium reboot paged nobody");
}

#[tokio::test]
async fn a_storm_becomes_one_summary_and_delivery_retries_transient_failures() {
    let dir = tmpdir("storm");
    // Two 503s, then accepted: one delivery, after retries.
    let (hook, url) = Receiver::start(2, 503).await;
    let c = config(&format!(
        r##"{{"coalesce-window": "300ms", "retry-backoff": "10ms", "sinks": [{{"type": "webhook", "name": "teams", "url-file": "{}"}}]}}"##,
        secret_file(&dir, "hook", &format!("{url}/hook"))
    ));
    let metrics = Arc::new(Metrics::new());
    let d = Dispatcher::start(&c, "prod-1", metrics.clone()).unwrap();
    for i in 0..40 {
        d.notify(note(Kind::Detected, Severity::Critical, &format!("w-{i:02}"), &format!("node/w-{i:02}/1")));
    }
    let got = hook.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.bodies().len(), 1, "one summary, not 40 messages: {:?}", hook.bodies());
    let b = &got[0];
    assert_eq!(b["kind"], "detected");
    assert_eq!(b["count"], 40);
    assert_eq!(b["nodes"].as_array().unwrap().len(), 40);
    assert!(b["summary"].as_str().unwrap().contains("40 nodes"), "{b}");
    assert_eq!(b["severity"], "critical");
    assert!(b["role"].is_null(), "a summary is about many nodes");
    assert_eq!(hook.hits.load(Ordering::SeqCst), 3, "two failures, then delivered");
    let m = metrics.encode();
    assert!(m.contains(r#"autohealer_notifications_total{sink="teams",result="sent"} 1"#), "{m}");
    assert!(m.contains(r#"autohealer_notifications_total{sink="teams",result="coalesced"} 40"#), "{m}");
}

#[tokio::test]
async fn a_refused_payload_is_not_retried_and_a_full_queue_drops_without_waiting() {
    let dir = tmpdir("refuse");
    let (hook, url) = Receiver::start(usize::MAX, 400).await;
    let c = config(&format!(
        r##"{{"coalesce-window": "50ms", "retry-backoff": "10ms", "queue-size": 5, "sinks": [{{"type": "slack", "url-file": "{}"}}]}}"##,
        secret_file(&dir, "slack", &format!("{url}/hooks/SECRETPATH"))
    ));
    let metrics = Arc::new(Metrics::new());
    let d = Dispatcher::start(&c, "c", metrics.clone()).unwrap();
    // Far more than the queue holds, handed over from a single-threaded caller: none may block.
    for i in 0..10_000 {
        d.notify(note(Kind::RepairFailed, Severity::High, &format!("n{i}"), "x"));
    }
    for _ in 0..400 {
        if metrics.encode().contains(r#"sink="slack",result="failed""#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let m = metrics.encode();
    assert!(m.contains(r#"autohealer_notifications_total{sink="slack",result="failed"} 1"#), "{m}");
    assert!(m.contains(r#"sink="all",result="dropped""#), "{m}");
    assert_eq!(hook.hits.load(Ordering::SeqCst), 1, "a 400 is final: no retry");
}

#[test]
fn secrets_in_the_config_are_refused_and_errors_name_the_key() {
    let parse = |s: &str| NotifyConfig::parse(&serde_json::from_str(s).unwrap(), "notifications").unwrap_err();
    let e = parse(r#"{"sinks": [{"type": "slack", "url": "https://hooks.slack.com/services/T/B/SECRET"}]}"#);
    assert_eq!(e.path, "notifications.sinks[0].url");
    assert!(e.message.contains("url-env or url-file") && !e.message.contains("SECRET"), "{e}");
    let e = parse(r#"{"sinks": [{"type": "pagerduty", "routing-key": "abc"}]}"#);
    assert_eq!(e.path, "notifications.sinks[0].routing-key");
    let e = parse(r#"{"sinks": [{"type": "email", "smtp-host": "m", "from": "a@b.c", "to": ["x@y.z"], "password": "p"}]}"#);
    assert_eq!(e.path, "notifications.sinks[0].password");
    let e = parse(r#"{"sinks": [{"type": "slak", "url-env": "X"}]}"#);
    assert!(e.path.starts_with("notifications.sinks[0]"), "{e}");
    let e = parse(r#"{"sinks": [{"type": "slack", "url-env": "X", "smtp-host": "m"}]}"#);
    assert_eq!(e.path, "notifications.sinks[0].smtp-host");
    let e = parse(r#"{"sinks": [{"type": "email", "smtp-host": "m", "from": "not an address", "to": ["x@y.z"]}]}"#);
    assert_eq!(e.path, "notifications.sinks[0].from");
    assert!(e.message.contains("not an address"), "{e}");
    let e = parse(r#"{"sinks": [{"type": "slack", "url-env": "X", "min-severity": "urgent"}]}"#);
    assert_eq!(e.path, "notifications.sinks[0].min-severity");
    let e = parse(r#"{"sinks": [{"type": "slack", "url-env": "X", "events": ["rebooted"]}]}"#);
    assert!(e.path.starts_with("notifications.sinks[0].events"), "{e}");
    let e = parse(r#"{"sinks": [{"type": "webhook"}]}"#);
    assert_eq!(e.path, "notifications.sinks[0].url-env");
}

#[tokio::test]
async fn a_missing_secret_names_the_variable() {
    let c = config(r#"{"sinks": [{"type": "slack", "url-env": "AUTOHEALER_TEST_UNSET_SLACK_URL"}]}"#);
    let e = Dispatcher::start(&c, "c", Arc::new(Metrics::new())).err().unwrap();
    assert_eq!(e.path, "notifications.sinks[0].url-env");
    assert!(e.message.contains("AUTOHEALER_TEST_UNSET_SLACK_URL is not set"), "{e}");
}

/// A free port on 127.0.0.1 for the SMTP server.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn email_goes_through_a_real_smtp_server_with_starttls_and_auth() {
    let dir = tmpdir("smtp");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let port = free_port();
    let python = std::env::var("NOTIFY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_server.py");
    let mut server = tokio::process::Command::new(&python)
        .args([script, &port.to_string(), &cert_path.display().to_string(), &key_path.display().to_string()])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {python} (aiosmtpd from PyPI: pip install aiosmtpd; .ci/run installs it): {e}"));
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("SMTP server start").unwrap();
    assert_eq!(ready.as_deref(), Some("READY"), "the SMTP server did not start (is aiosmtpd installed? pip install aiosmtpd)");

    let c = config(&format!(
        r#"{{"coalesce-window": "50ms", "retry-backoff": "10ms", "sinks": [{{"type": "email", "smtp-host": "127.0.0.1", "smtp-port": {port},
            "ca-file": "{}", "username": "healer", "password-file": "{}", "from": "autohealer <healer@example.org>",
            "to": ["ops@example.org", "oncall@example.org"], "min-severity": "high"}}]}}"#,
        cert_path.display(),
        secret_file(&dir, "smtp-password", "s3cr3t-smtp-pass\n"),
    ));
    let metrics = Arc::new(Metrics::new());
    let d = Dispatcher::start(&c, "prod-1", metrics.clone()).unwrap();
    d.notify(note(Kind::RepairStarted, Severity::Medium, "w-1", "node/w-1/1"));
    d.notify(note(Kind::RepairFailed, Severity::High, "m-0", "node/m-0/5"));
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("a mail").unwrap().unwrap();
    let mail: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(mail["tls"], true, "STARTTLS was used: {mail}");
    assert_eq!(mail["auth"], true, "authenticated: {mail}");
    assert_eq!(mail["from"], "healer@example.org");
    assert_eq!(mail["to"], serde_json::json!(["ops@example.org", "oncall@example.org"]));
    let data = mail["data"].as_str().unwrap();
    assert!(data.contains("Subject: [autohealer] [high] repair-failed on m-0"), "{data}");
    assert!(data.contains("Nodes:    m-0") && data.contains("Cluster:  prod-1"), "{data}");
    assert!(!data.contains("s3cr3t"), "{data}");
    // The medium one was below the sink's min-severity: no second mail.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(metrics.encode().contains(r#"autohealer_notifications_total{sink="email",result="sent"} 1"#));
    drop(server.stdin.take());
    let _ = server.kill().await;
}
