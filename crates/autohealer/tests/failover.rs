//! The leader killed at random points of a repair (reboot, drain, replace): whatever
//! the point, the fake OpenStack's request log shows one reboot and at most one
//! replace. Replicas run in their own runtimes, so a kill stops everything they
//! started, without releasing the Lease, as a crashed pod would.

use autohealer::Registries;
use autohealer::config::Config;
use autohealer_cloud::Role;
use autohealer_core::{Metrics, Status};
use autohealer_testkit::cluster::TestCluster;
use autohealer_testkit::openstack::{self as fake, FakeOpenStack, OsOptions};
use autohealer_testkit::sim::{Cure, Fault, SIM_LABEL, SimCluster, SimOptions};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Replica(Option<tokio::runtime::Runtime>);

impl Replica {
    fn start(kubeconfig: String, config: String, identity: &'static str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.spawn(async move {
            let loaded = Config::load_str(&config, &Registries::builtin()).unwrap();
            let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
            let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
            cfg.default_retry = false;
            let client = kube::Client::try_from(cfg).unwrap();
            let metrics = Arc::new(Metrics::new());
            let provider = autohealer::providers::build(&loaded, &metrics).unwrap();
            let rt = autohealer::Runtime { client, provider, metrics, status: Arc::new(Status::default()), identity: identity.into() };
            autohealer::run(loaded, rt, Registries::builtin(), CancellationToken::new()).await
        });
        Self(Some(rt))
    }

    fn kill(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn one_run(kill_after: Duration) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = TestCluster::start().await.unwrap();
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let prefix = format!("fo-{n:08x}");
    // Dropped after the simulation and the replicas, passed or failed.
    let _cleanup = cluster.cleanup_guard(&prefix);
    let os = FakeOpenStack::start(OsOptions {
        reboot_time: Duration::from_millis(300),
        stop_time: Duration::from_millis(100),
        update_time: Duration::from_millis(500),
        ..Default::default()
    })
    .await
    .unwrap();
    let sim = SimCluster::start(
        cluster.client.clone(),
        SimOptions { masters: 1, workers: 3, time_scale: 0.05, prefix: prefix.clone(), ..Default::default() },
    )
    .await
    .unwrap();
    sim.attach_cloud(&os, &format!("c-{prefix}"), true);
    let config = |port: u16| {
        format!(
            "cluster-name: c-{prefix}\nmonitor-interval: 1s\ncheck-delay-after-add: 0s\nrecovery-stable-window: 1s\nrebuild-delay-after-reboot: 4s\nreplace-timeout: 30s\nnode-selector: {SIM_LABEL}={prefix}\npause-configmap: kube-system/autohealer-{prefix}\nleader-election:\n  lease-name: autohealer-{prefix}\n  lease-duration: 3s\n  renew-grace: 1s\nadmin:\n  listen: 127.0.0.1:{port}\ndrain:\n  timeout: 2s\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: 2s\nopenstack:\n  auth-url: {}\n  user-id: {}\n  password: {}\n  project-id: {}\n  stop-timeout: 3s\n",
            os.auth_url(),
            fake::USER_ID,
            fake::PASSWORD,
            fake::PROJECT_ID
        )
    };
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "kube-system");
    let holder = || async {
        leases.get_opt(&format!("autohealer-{prefix}")).await.ok().flatten().and_then(|l| l.spec).and_then(|s| s.holder_identity)
    };

    let mut a = Replica::start(cluster.kubeconfig.clone(), config(free()), "replica-a");
    tokio::time::timeout(Duration::from_secs(30), async {
        while holder().await.as_deref() != Some("replica-a") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("replica-a leads");
    let _b = Replica::start(cluster.kubeconfig.clone(), config(free()), "replica-b");

    let mut workers = sim.node_names(Role::Worker);
    workers.sort();
    let victim = workers[0].clone();
    let server = sim.server_id(&victim).unwrap();
    sim.inject(&victim, Fault::KubeletStopped, Cure::Replace);
    tokio::time::sleep(kill_after).await;
    a.kill();

    let reboots = || os.count("POST", &format!("/servers/{server}/action"), Some("\"reboot\""));
    let resizes = || os.count("POST", "/actions/resize", Some(&server));
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        while resizes() == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Let the standby look at the world a few more times: nothing may be repeated.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log: Vec<String> = os
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.service != "identity")
        .map(|r| format!("{} {} {}", r.method, r.path, r.body))
        .collect();
    assert!(reboots() <= 1, "killed after {kill_after:?}: {} reboots\n{}", reboots(), log.join("\n"));
    assert!(resizes() <= 1, "killed after {kill_after:?}: {} replaces\n{}", resizes(), log.join("\n"));
    // A replace cut short between its stop and its resize stays cut short: never repeated.
    let stops = os.count("POST", &format!("/servers/{server}/action"), Some("os-stop"));
    assert!(stops <= 1 && stops >= resizes(), "killed after {kill_after:?}: {stops} stops for {} replaces\n{}", resizes(), log.join("\n"));
    if done.is_ok() {
        assert_eq!(reboots(), 1, "killed after {kill_after:?}: the reboot came first, exactly once\n{}", log.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_at_random_points_repeats_no_destructive_call() {
    // Points across detection (~2s), the reboot, the wait before replace (~4s), the drain and the replace.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // SOAK_ITERATIONS=N runs N kill points instead of four (a longer soak, off CI).
    let iterations: u64 = std::env::var("SOAK_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let mut points: Vec<Duration> = (0..iterations).map(|i| Duration::from_millis(1500 + (i % 4) * 2000 + next() % 2000)).collect();
    points.sort();
    eprintln!("kill points (seed {seed}): {points:?}");
    for p in points {
        one_run(p).await;
    }
}
