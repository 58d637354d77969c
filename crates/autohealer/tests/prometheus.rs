//! The healer's metrics as a real Prometheus and promtool see them. The real `autohealer`
//! binary repairs a worker of a simulated cluster (the testkit's apiserver, or a real one
//! with `AUTOHEALER_E2E_KUBECONFIG`, and its fake OpenStack, as in `tests/binary.rs`):
//! - a real Prometheus server scrapes its admin port, with the rules of
//!   `manifests/monitoring/alerts.yaml` loaded, and its HTTP API shows the repair counted
//!   and the detection lag observed, the Grafana dashboard's panels showing them, and
//!   every rule evaluating without error and none firing;
//! - `promtool check metrics` passes its `/metrics` exposition.
//!
//! The tools: `$PROMETHEUS_BIN` and `$PROMTOOL_BIN`, else `prometheus` and `promtool` on
//! PATH (Debian: `apt-get install prometheus`). A test whose tool is missing says
//! SKIPPED; in CI (`CI=true`) it fails instead.

use autohealer_cloud::Role;
use autohealer_testkit::cluster::{CleanupGuard, TestCluster};
use autohealer_testkit::openstack::{self as fake, FakeOpenStack, OsOptions};
use autohealer_testkit::sim::{Cure, Fault, SIM_LABEL, SimCluster, SimOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `$env`, else `name` on PATH; `None` (having said SKIPPED) when neither, outside CI.
fn tool(env: &str, name: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file())));
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI must run this test with a real {name}: .ci/run installs Debian's prometheus package (or set ${env})");
        }
        eprintln!("SKIPPED: no {name} (apt-get install prometheus, or set ${env} to the binary)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn unique() -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() ^ (u128::from(std::process::id()) << 40);
    format!("{:x}", n).chars().rev().take(6).collect()
}

/// A simulated cluster of one master and two workers whose machines are the fake cloud's
/// servers, and the real healer running against both.
struct World {
    sim: Arc<SimCluster>,
    dir: PathBuf,
    admin_port: u16,
    healer: tokio::process::Child,
    _os: FakeOpenStack,
    _cluster: TestCluster,
    /// Last, so that it runs once the simulation has stopped.
    _cleanup: CleanupGuard,
}

impl World {
    async fn start() -> World {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cluster = TestCluster::start().await.unwrap();
        let prefix = format!("prom-{}", unique());
        let _cleanup = cluster.cleanup_guard(&prefix);
        let os = FakeOpenStack::start(OsOptions { reboot_time: Duration::from_millis(300), ..Default::default() }).await.unwrap();
        let opts = SimOptions { masters: 1, workers: 2, time_scale: 0.05, prefix: prefix.clone(), ..Default::default() };
        let sim = SimCluster::start(cluster.client.clone(), opts).await.unwrap();
        sim.attach_cloud(&os, &format!("c-{prefix}"), true);
        let dir = std::env::temp_dir().join(format!("autohealer-prometheus-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        let text = match &cluster.fake {
            Some(f) => f.kubeconfig_for("healer"),
            None => cluster.kubeconfig.clone(),
        };
        std::fs::write(&kubeconfig, text).unwrap();
        let admin_port = free_port();
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "cluster-name: c-{prefix}\nmonitor-interval: 1s\ncheck-delay-after-add: 0s\nrecovery-stable-window: 1s\npause-configmap: kube-system/autohealer-{prefix}\nnode-selector: {SIM_LABEL}={prefix}\nleader-election:\n  lease-name: autohealer-{prefix}\n  lease-duration: 3s\n  renew-grace: 1s\nadmin:\n  listen: 127.0.0.1:{admin_port}\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: 2s\nopenstack:\n  auth-url: {auth}\n  user-id: {user}\n  password: {pw}\n  project-id: {project}\n  region: {region}\n",
                auth = os.auth_url(),
                user = fake::USER_ID,
                pw = fake::PASSWORD,
                project = fake::PROJECT_ID,
                region = fake::REGION,
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("healer.log")).unwrap();
        let healer = tokio::process::Command::new(env!("CARGO_BIN_EXE_autohealer"))
            .args(["run", "--config"])
            .arg(&config)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--log-format", "json"])
            .env("POD_NAME", "replica-a")
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        World { sim, dir, admin_port, healer, _os: os, _cluster: cluster, _cleanup }
    }

    /// Breaks a worker; the healer reboots it (the simulated machine comes back healthy).
    fn break_a_worker(&self) {
        let victim = self.sim.node_names(Role::Worker).into_iter().min().unwrap();
        self.sim.inject(&victim, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for f in ["healer.log", "prometheus.log"] {
            if let Ok(t) = std::fs::read_to_string(self.dir.join(f)) {
                out += &format!("--- {f}:\n{t}\n");
            }
        }
        out
    }

    /// Polls `f` until it gives a value; fails with the logs on a timeout or if the
    /// healer exits meanwhile.
    async fn until<T, F, Fut>(&mut self, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let done = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                if let Some(v) = f().await {
                    return Ok(v);
                }
                if let Ok(Some(status)) = self.healer.try_wait() {
                    return Err(status);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        match done {
            Ok(Ok(v)) => v,
            Ok(Err(status)) => panic!("the healer exited ({status}) while waiting until {what}\n{}", self.logs()),
            Err(_) => panic!("timed out waiting until {what}\n{}", self.logs()),
        }
    }
}

/// The healer's `/metrics`, or "" while it does not answer.
async fn metrics(admin_port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{admin_port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Percent-encoding of a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `data` of a Prometheus HTTP API answer, or `None` while it cannot give one.
async fn api(port: u16, path: &str) -> Option<Value> {
    let body: Value = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.ok()?.json().await.ok()?;
    (body["status"] == "success").then(|| body["data"].clone())
}

/// The values of an instant query's series.
async fn query(port: u16, promql: &str) -> Vec<f64> {
    let Some(data) = api(port, &format!("/api/v1/query?query={}", encode(promql))).await else { return vec![] };
    data["result"].as_array().into_iter().flatten().filter_map(|r| r["value"][1].as_str()?.parse().ok()).collect()
}

/// The rule groups of the PrometheusRule in manifests/monitoring/alerts.yaml as a plain
/// rules file (JSON is YAML), for Prometheus's `rule_files`.
fn rules_file(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/monitoring/alerts.yaml")).unwrap();
    let rule: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(rule["kind"], "PrometheusRule");
    let path = dir.join("alerts.rules.yaml");
    std::fs::write(&path, serde_json::json!({"groups": rule["spec"]["groups"]}).to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_repair_and_the_detection_lag_and_evaluates_the_alerts() {
    let Some(prometheus) = tool("PROMETHEUS_BIN", "prometheus") else { return };
    let mut w = World::start().await;
    let port = free_port();
    let config = w.dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files: [{rules}]\nscrape_configs:\n  - job_name: autohealer\n    static_configs:\n      - targets: ['127.0.0.1:{admin}']\n",
            rules = rules_file(&w.dir).display(),
            admin = w.admin_port,
        ),
    )
    .unwrap();
    let log = std::fs::File::create(w.dir.join("prometheus.log")).unwrap();
    let _prometheus = tokio::process::Command::new(&prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", w.dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    w.until("Prometheus scrapes the healer, which leads", || async {
        (query(port, r#"up{job="autohealer"}"#).await == [1.0] && query(port, "autohealer_leader").await == [1.0]).then_some(())
    })
    .await;
    // Before the failure: nothing repaired, no detection lag observed.
    assert_eq!(query(port, r#"sum(autohealer_repairs_total{result="started"}) or vector(0)"#).await, [0.0]);
    assert_eq!(query(port, "autohealer_detection_lag_seconds_count").await, [0.0]);

    w.break_a_worker();
    w.until("Prometheus has the reboot counted and its detection lag observed", || async {
        (query(port, r#"autohealer_repairs_total{role="worker",action="reboot",result="started"}"#).await == [1.0]
            && query(port, "autohealer_detection_lag_seconds_count").await == [1.0])
        .then_some(())
    })
    .await;
    let lag = query(port, "autohealer_detection_lag_seconds_sum").await;
    assert!(lag.len() == 1 && lag[0] >= 0.0 && lag[0] < 30.0, "the detection lag in Prometheus: {lag:?}");
    w.until("Prometheus has the repair counted as succeeded, and its duration", || async {
        (query(port, r#"autohealer_repairs_total{role="worker",action="reboot",result="succeeded"}"#).await == [1.0]
            && query(port, r#"autohealer_repair_duration_seconds_count{role="worker",action="reboot"}"#).await == [1.0])
        .then_some(())
    })
    .await;
    assert_eq!(
        query(port, r#"autohealer_cloud_requests_total{service="nova",code="202"} > 0"#).await.len(),
        1,
        "the reboot call is counted"
    );

    // The Grafana dashboard's panels on these series: every query is one Prometheus
    // runs, and the panels a user looks at after one reboot show it.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/monitoring/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let data = api(port, &format!("/api/v1/query?query={}", encode(expr))).await;
            assert!(data.is_some(), "the panel {} has a query Prometheus refuses: {expr}", panel["title"]);
        }
    }
    let expr = |title: &str, i: usize| -> String {
        let panel =
            dashboard["panels"].as_array().unwrap().iter().find(|p| p["title"] == title).unwrap_or_else(|| panic!("a panel {title}"));
        panel["targets"][i]["expr"].as_str().unwrap().to_string()
    };
    assert_eq!(query(port, &expr("Repairs (24h)", 0)).await, [1.0], "the Repairs (24h) panel shows the reboot");
    for i in [0, 1] {
        let q = query(port, &expr("Detection lag past unhealthy-duration", i)).await;
        assert!(q.len() == 1 && q[0].is_finite() && q[0] >= 0.0, "the detection lag panel: {q:?}");
    }
    let evaluations = query(port, &expr("Evaluations and Node updates", 0)).await;
    assert!(evaluations.len() == 1 && evaluations[0] > 0.0, "the healer evaluates and the panel shows it: {evaluations:?}");
    assert_eq!(query(port, "autohealer_evaluation_duration_seconds_count > 0").await.len(), 1, "each evaluation is timed");
    let by_result = query(port, &expr("Repairs by result", 0)).await;
    assert_eq!(by_result, [1.0, 1.0], "the Repairs by result panel: one reboot started, one succeeded");

    // The shipped alerting rules evaluate against the real series without error.
    let rules: Vec<Value> = w
        .until("every rule of alerts.yaml has been evaluated", || async {
            let data = api(port, "/api/v1/rules").await?;
            let all: Vec<Value> =
                data["groups"].as_array().into_iter().flatten().flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default()).collect();
            (all.len() == 7 && all.iter().all(|r| r["health"] != "unknown")).then_some(all)
        })
        .await;
    // A routine reboot raises no alert, and with a leading healer AutohealerNoLeader is
    // not even pending.
    for r in &rules {
        assert_eq!(r["health"], "ok", "the rule {} fails in Prometheus: {}", r["name"], r["lastError"]);
        assert_eq!(r["state"], "inactive", "{r}");
    }
}

/// promtool lints the classic text format only; the healer serves OpenMetrics, whose
/// counter families are named without `_total` (their samples carry it) and which ends
/// with `# EOF`. This is the same exposition in the text format: nothing else differs.
fn as_text_format(openmetrics: &str) -> String {
    let counters: Vec<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).filter(|n| !n.contains(' ')).collect();
    let mut out = String::new();
    for line in openmetrics.lines().filter(|l| *l != "# EOF" && !l.starts_with("# UNIT ")) {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{p}{name}_total {tail}"))
        });
        out += &renamed.unwrap_or_else(|| line.to_string());
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_check_metrics_passes_the_healers_exposition_after_a_repair() {
    let Some(promtool) = tool("PROMTOOL_BIN", "promtool") else { return };
    let mut w = World::start().await;
    w.break_a_worker();
    let port = w.admin_port;
    let body = w
        .until("the healer exports the repair, its detection lag and its duration", || async move {
            let m = metrics(port).await;
            (m.contains(r#"autohealer_repairs_total{role="worker",action="reboot",result="succeeded"} 1"#)
                && m.contains("autohealer_detection_lag_seconds_count 1")
                && m.contains(r#"autohealer_repair_duration_seconds_count{role="worker",action="reboot"} 1"#))
            .then_some(m)
        })
        .await;
    assert!(body.trim_end().ends_with("# EOF"), "the healer serves OpenMetrics:\n{body}");
    let text = as_text_format(&body);
    let mut child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && said.trim().is_empty(), "promtool check metrics finds problems:\n{said}\nin:\n{text}");
    // Every family was linted, with series of every type in it.
    for family in
        ["# TYPE autohealer_repairs_total counter", "# TYPE autohealer_detection_lag_seconds histogram", "# TYPE autohealer_leader gauge"]
    {
        assert!(text.contains(family), "{family} in:\n{text}");
    }
}
