//! The sandbox: a simulated cluster (3 masters, 12 workers, 3 zones), the real healer
//! running against it, and a scripted story of failures with a live timeline and a
//! closing summary. Exits 0 only when the story ends as expected.

use anyhow::Context;
use autohealer::Registries;
use autohealer::config::Config;
use autohealer_cloud::{Action, Role};
use autohealer_core::{Metrics, Status};
use autohealer_testkit::apiserver::{ApiServerOptions, FakeApiServer};
use autohealer_testkit::openstack::{self as fake, FakeDriver, FakeOpenStack, OsOptions};
use autohealer_testkit::sim::{Cure, Fault, SIM_KERNEL, SimCluster, SimOptions};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "Plays a scripted failure story against a simulated cluster with the real healer")]
struct Args {
    /// Play the story against this cluster instead of the built-in fake apiserver.
    #[arg(long, env = "AUTOHEALER_E2E_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Real-time factor of the simulation: 0.05 plays a minute in three seconds.
    #[arg(long, default_value_t = 0.05)]
    time_scale: f64,
    /// Show the healer's own logs too.
    #[arg(long)]
    verbose: bool,
    /// Give up on the story after this many seconds.
    #[arg(long, default_value_t = 180)]
    deadline: u64,
    /// The Magnum driver the fake cluster plays (the healer finds it by itself).
    #[arg(long, value_enum, default_value_t = Driver::Heat)]
    magnum_driver: Driver,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Driver {
    Heat,
    ClusterApi,
    CapiHelm,
}

const CLUSTER: &str = "0f8e3a52-sandbox";
const OUTAGE_ZONE: &str = "zone-c";

struct Step {
    node: String,
    failure: &'static str,
    expect: Vec<Action>,
    /// The step after these the cloud is left to do (capi-helm's MachineHealthCheck).
    delegate: bool,
    delegated: Option<Duration>,
    detected: Option<Duration>,
    actions: Vec<String>,
    recovered: Option<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    autohealer::install_crypto();
    let args = Args::parse();
    let level = if args.verbose { "info" } else { "warn" };
    tracing_subscriber::fmt().with_env_filter(level).with_writer(std::io::stderr).init();

    let (client, _api) = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("cannot read {}", path.display()))?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            println!("Playing against the cluster in {}", path.display());
            (kube::Client::try_from(cfg)?, None)
        }
        None => {
            let api = FakeApiServer::start(ApiServerOptions::default()).await?;
            println!("Fake kube-apiserver at {}", api.url());
            (api.client().await?, Some(api))
        }
    };
    let opts = SimOptions { masters: 3, workers: 12, time_scale: args.time_scale, prefix: "sandbox".into(), ..Default::default() };
    let sim = SimCluster::start(client.clone(), opts.clone()).await?;
    println!("Simulated cluster: 3 masters, 12 workers in zones {} (time scale {})", opts.zones.join(", "), args.time_scale);
    let ms = |secs: f64| Duration::from_secs_f64(secs * args.time_scale);
    let os = FakeOpenStack::start(OsOptions { reboot_time: ms(60.0), stop_time: ms(20.0), update_time: ms(120.0), ..Default::default() })
        .await?;
    sim.attach_cloud(&os, CLUSTER, true);
    let driver_name = match args.magnum_driver {
        Driver::Heat => "heat",
        Driver::ClusterApi => {
            os.set_magnum_driver(CLUSTER, FakeDriver::ClusterApi);
            "cluster-api"
        }
        Driver::CapiHelm => {
            os.set_magnum_driver(CLUSTER, FakeDriver::CapiHelm);
            "capi-helm"
        }
    };
    println!(
        "Fake OpenStack (Keystone, Nova, Cinder, Heat, Magnum) at {}; Magnum cluster {CLUSTER} on the {driver_name} driver",
        os.auth_url()
    );

    let scale = |secs: f64| format!("{}ms", (secs * 1000.0 * args.time_scale).round() as u64);
    let config = format!(
        "cluster-name: {CLUSTER}\ncloud-provider: openstack\nmonitor-interval: {}\ncheck-delay-after-add: 0s\nrecovery-stable-window: {}\nrebuild-delay-after-reboot: {}\nreplace-timeout: {}\nleader-elect: true\nleader-election:\n  lease-duration: 4s\n  renew-grace: 1s\nadmin:\n  listen: 127.0.0.1:0\nhealthcheck:\n  master:\n    - type: Endpoint\n      params:\n        protocol: HTTP\n        port: {}\n        unhealthy-duration: {}\n        timeout: 1s\n    - type: NodeCondition\n      params:\n        unhealthy-duration: {}\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: {}\nopenstack:\n  auth-url: {}\n  user-id: {}\n  password: {}\n  project-id: {}\n  region: {}\n  stop-timeout: 5s\n",
        scale(20.0),
        scale(60.0),
        scale(300.0),
        scale(900.0),
        sim.healthz_port(),
        scale(60.0),
        scale(60.0),
        scale(60.0),
        os.auth_url(),
        fake::USER_ID,
        fake::PASSWORD,
        fake::PROJECT_ID,
        fake::REGION,
    );
    let loaded = Config::load_str(&config, &Registries::builtin()).map_err(|e| anyhow::anyhow!("sandbox config: {e}"))?;
    let status = Arc::new(Status::default());
    let metrics = Arc::new(Metrics::new());
    let provider = autohealer::providers::build(&loaded, &metrics)?;
    let describe = provider.clone();
    let rt = autohealer::Runtime { client: client.clone(), provider, metrics, status: status.clone(), identity: "sandbox-healer".into() };
    let stop = CancellationToken::new();
    let healer = tokio::spawn(autohealer::run(loaded, rt, Registries::builtin(), stop.clone()));
    while !status.synced.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    println!("Healer running; the story begins.\n");

    let workers = sim.node_names(Role::Worker);
    let masters = sim.node_names(Role::Master);
    let pick = |list: &[String], i: usize| list.get(i).cloned().context("the simulated cluster is smaller than the story needs");
    let steps = Arc::new(Mutex::new(vec![
        Step {
            node: pick(&workers, 0)?,
            failure: "NotReady (KubeletNotReady), fixed by a reboot",
            expect: vec![Action::Reboot],
            delegate: false,
            delegated: None,
            detected: None,
            actions: vec![],
            recovered: None,
        },
        Step {
            node: pick(&workers, 1)?,
            failure: "kubelet stopped, fixed only by a new machine",
            expect: if args.magnum_driver == Driver::CapiHelm { vec![Action::Reboot] } else { vec![Action::Reboot, Action::Replace] },
            delegate: args.magnum_driver == Driver::CapiHelm,
            delegated: None,
            detected: None,
            actions: vec![],
            recovered: None,
        },
        Step {
            node: pick(&masters, 0)?,
            failure: "/healthz answers 500, fixed by a reboot",
            expect: vec![Action::Reboot],
            delegate: false,
            delegated: None,
            detected: None,
            actions: vec![],
            recovered: None,
        },
    ]));
    let cloud = Arc::new(os);
    let original: Vec<String> = sim.node_names(Role::Worker);
    let original_workers = original.clone();
    let timeline = tokio::spawn(print_timeline(client.clone(), sim.clone(), cloud.clone(), original, steps.clone(), start));

    let t = |s: &Step| s.node.clone();
    let (n0, n1, m0) = {
        let s = steps.lock().unwrap_or_else(|p| p.into_inner());
        (t(&s[0]), t(&s[1]), t(&s[2]))
    };
    say(start, &n0, "INJECT", "Ready=False (KubeletNotReady)");
    sim.inject(&n0, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    say(start, &n1, "INJECT", "kubelet stopped; only a replace cures it");
    sim.inject(&n1, Fault::KubeletStopped, Cure::Replace);
    say(start, &m0, "INJECT", "/healthz answers 500");
    sim.inject(&m0, Fault::HealthzDown, Cure::Reboot);
    let deadline = Instant::now() + Duration::from_secs(args.deadline);
    let done = loop {
        let ok = {
            let s = steps.lock().unwrap_or_else(|p| p.into_inner());
            s.iter().all(|s| s.recovered.is_some())
        };
        if ok || Instant::now() > deadline {
            break ok;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Act two: a whole zone goes down at once. A zone outage is not a node fault: the
    // healer must short-circuit it and repair nothing there.
    let zone_nodes: Vec<String> = sim
        .node_names(Role::Worker)
        .into_iter()
        .chain(sim.node_names(Role::Master))
        .filter(|n| sim.zone_of(n).as_deref() == Some(OUTAGE_ZONE))
        .collect();
    let zone_start = start.elapsed();
    say(start, OUTAGE_ZONE, "INJECT", &format!("the kubelets of all {} nodes in the zone stop at once", zone_nodes.len()));
    for n in &zone_nodes {
        sim.inject(n, Fault::KubeletStopped, Cure::Reboot);
    }
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let mut zone_held = None;
    while done && Instant::now() < deadline {
        let list = events.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
        let held = zone_nodes.iter().all(|n| {
            list.iter().any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(n.as_str())
                    && e.reason.as_deref() == Some("RepairHeld")
                    && e.note.as_deref().is_some_and(|t| t.contains(&format!("zone {OUTAGE_ZONE}")))
            })
        });
        if held {
            zone_held = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say(start, OUTAGE_ZONE, "HEAL", "the zone comes back by itself");
    for n in &zone_nodes {
        sim.heal(n);
    }
    let nodes_api: Api<Node> = Api::all(client.clone());
    let mut zone_back = None;
    while zone_held.is_some() && Instant::now() < deadline {
        let mut all = true;
        for n in &zone_nodes {
            let ready = nodes_api
                .get(n)
                .await
                .ok()
                .and_then(|n| n.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            all &= ready;
        }
        if all {
            zone_back = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let zone_calls: usize = zone_nodes
        .iter()
        .filter_map(|n| sim.server_id(n))
        .map(|id| cloud.count("POST", &format!("/servers/{id}/action"), None) + cloud.count("POST", "/actions/resize", Some(&id)))
        .sum();

    // Act three: a bad kernel rolled out to three workers. They fail one after the
    // other; the first two are rebooted (a reboot cannot know yet), the third is held as
    // a correlated failure, while a worker with the fleet's kernel is still repaired.
    const BAD_KERNEL: &str = "6.2.0-bad";
    let calm: Vec<String> = sim
        .node_names(Role::Worker)
        .into_iter()
        .filter(|n| sim.zone_of(n).as_deref() != Some(OUTAGE_ZONE) && n != &n0 && n != &n1 && original_workers.contains(n))
        .collect();
    let rollout = (zone_back.is_some() && calm.len() >= 4).then(|| (calm[..3].to_vec(), calm[3].clone()));
    let mut rollout_result: Option<RolloutResult> = None;
    if let Some((bad, unrelated)) = &rollout {
        rollout_result = Some(play_rollout(&client, &sim, &cloud, bad, unrelated, BAD_KERNEL, start, deadline).await);
    }

    stop.cancel();
    let _ = healer.await;
    timeline.abort();

    println!("\nSummary");
    println!("{:<24} {:<48} {:>11} {:<20} {:>12}", "NODE", "FAILURE", "DETECTED AT", "ACTIONS", "RECOVERED AT");
    let mut expected_calls = true;
    let steps = steps.lock().unwrap_or_else(|p| p.into_inner());
    for s in steps.iter() {
        let fmt = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("+{:.1}s", d.as_secs_f64()));
        let mut actions = s.actions.join(" -> ");
        if s.delegated.is_some() {
            actions.push_str(" -> delegated");
        }
        println!("{:<24} {:<48} {:>11} {:<20} {:>12}", s.node, s.failure, fmt(s.detected), actions, fmt(s.recovered));
        if s.delegate && s.delegated.is_none() {
            expected_calls = false;
            println!("  expected the replace of {} to be delegated to the cluster's MachineHealthCheck", s.node);
        }
        let server = sim.server_id(&s.node).unwrap_or_default();
        for a in [Action::Reboot, Action::Replace] {
            let want = usize::from(s.expect.contains(&a));
            let got = match a {
                Action::Reboot => cloud.count("POST", &format!("/servers/{server}/action"), Some("\"reboot\"")),
                Action::Replace => {
                    cloud.count("POST", "/actions/resize", Some(&server))
                        + cloud.count("PATCH", "/stacks/", Some("{}")) * usize::from(s.node.contains("master"))
                }
            };
            if got != want {
                expected_calls = false;
                println!("  expected {want} {a} call(s) for {}, the cloud saw {got}", s.node);
            }
        }
    }
    let fmt = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("+{:.1}s", d.as_secs_f64()));
    let zone_action = if zone_calls == 0 { "short-circuited".to_string() } else { format!("{zone_calls} cloud calls!") };
    println!(
        "{:<24} {:<48} {:>11} {:<20} {:>12}",
        format!("{OUTAGE_ZONE} ({} nodes)", zone_nodes.len()),
        format!("whole zone down at +{:.1}s, back by itself", zone_start.as_secs_f64()),
        fmt(zone_held),
        zone_action,
        fmt(zone_back)
    );
    if zone_calls > 0 {
        println!("  a zone outage must repair nothing; the cloud saw {zone_calls} call(s) for its nodes");
    }
    let rollout_ok = match (&rollout, &rollout_result) {
        (Some((bad, unrelated)), Some(r)) => {
            println!(
                "{:<24} {:<48} {:>11} {:<20} {:>12}",
                format!("rollout ({} nodes)", bad.len()),
                format!("kernel {BAD_KERNEL} on 3 workers, failing in turn"),
                fmt(r.held),
                if r.held.is_some() { "2 reboots, 3rd held" } else { "not held!" },
                fmt(r.rolled_back)
            );
            println!("  ({})", bad.join(", "));
            println!(
                "{:<24} {:<48} {:>11} {:<20} {:>12}",
                unrelated,
                "NotReady during the rollout, kernel unchanged",
                "-",
                if r.unrelated_rebooted { "reboot" } else { "-" },
                fmt(r.unrelated_recovered)
            );
            let ok =
                r.held.is_some() && r.third_reboots == 0 && r.first_reboots == 2 && r.unrelated_rebooted && r.unrelated_recovered.is_some();
            if !ok {
                println!(
                    "  expected the first two rebooted, the third held as correlated and never rebooted, the unrelated worker repaired: {} first reboots, {} third, unrelated rebooted {}",
                    r.first_reboots, r.third_reboots, r.unrelated_rebooted
                );
            }
            ok
        }
        _ => {
            println!("  the rollout chapter did not run (the story stopped before it)");
            false
        }
    };
    let facts: Vec<String> = describe.describe().into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("\nProvider: {}", facts.join("; "));
    if args.magnum_driver != Driver::Heat {
        let stops = cloud.count("POST", "/servers/", Some("os-stop"));
        let count = cloud.nodegroup_count(CLUSTER, "worker");
        let overlapping = cloud.cluster(CLUSTER).map_or(0, |c| c.overlapping_resizes);
        println!("Worker node group: {count} nodes; servers stopped: {stops}; resizes sent while another ran: {overlapping}");
        if stops > 0 || count != opts.workers || overlapping > 0 {
            expected_calls = false;
            println!("  expected no stopped server, the node group back at {} and one resize at a time", opts.workers);
        }
    }
    if done && expected_calls && zone_held.is_some() && zone_back.is_some() && zone_calls == 0 && rollout_ok {
        let changes = cloud.requests().into_iter().filter(|r| r.method != "GET" && r.service != "identity").count();
        println!("\nThe story ended as expected ({changes} changing OpenStack calls).");
        Ok(())
    } else {
        anyhow::bail!("the story did not end as expected within {}s", args.deadline)
    }
}

struct RolloutResult {
    held: Option<Duration>,
    rolled_back: Option<Duration>,
    first_reboots: usize,
    third_reboots: usize,
    unrelated_rebooted: bool,
    unrelated_recovered: Option<Duration>,
}

fn ready(n: &Node) -> bool {
    n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until `f` holds or the story's deadline passes.
async fn wait_for<F, Fut>(deadline: Instant, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[allow(clippy::too_many_arguments)]
async fn play_rollout(
    client: &kube::Client,
    sim: &SimCluster,
    cloud: &FakeOpenStack,
    bad: &[String],
    unrelated: &str,
    kernel: &str,
    start: Instant,
    deadline: Instant,
) -> RolloutResult {
    let nodes: Api<Node> = Api::all(client.clone());
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let reboots = |n: &str| sim.server_id(n).map_or(0, |id| cloud.count("POST", &format!("/servers/{id}/action"), Some("\"reboot\"")));
    let kernel_of = |n: Node| n.status.and_then(|s| s.node_info).map(|i| i.kernel_version).unwrap_or_default();
    say(start, "rollout", "INJECT", &format!("kernel {kernel} rolled out to {}", bad.join(", ")));
    for n in bad {
        sim.set_kernel(n, kernel);
    }
    wait_for(deadline, || async {
        let mut all = true;
        for n in bad {
            all &= nodes.get(n).await.map(kernel_of).is_ok_and(|k| k == kernel);
        }
        all
    })
    .await;
    for n in &bad[..2] {
        say(start, n, "INJECT", "Ready=False (the new kernel hangs); a reboot brings it back for now");
        sim.inject(n, Fault::NotReady("KernelDeadlock".into()), Cure::Reboot);
        let before = reboots(n);
        wait_for(deadline, || async { reboots(n) > before && nodes.get(n).await.is_ok_and(|x| ready(&x)) }).await;
    }
    let third = &bad[2];
    say(start, third, "INJECT", "Ready=False (the new kernel hangs)");
    sim.inject(third, Fault::NotReady("KernelDeadlock".into()), Cure::Reboot);
    say(start, unrelated, "INJECT", "Ready=False (KubeletNotReady), kernel unchanged");
    sim.inject(unrelated, Fault::NotReady("KubeletNotReady".into()), Cure::Reboot);
    let held = wait_for(deadline, || async {
        let list = events.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
        list.iter().any(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(third.as_str())
                && e.reason.as_deref() == Some("RepairHeld")
                && e.action.as_deref() == Some("correlated")
        })
    })
    .await
    .then(|| start.elapsed());
    let unrelated_recovered =
        wait_for(deadline, || async { reboots(unrelated) > 0 && nodes.get(unrelated).await.is_ok_and(|x| ready(&x)) })
            .await
            .then(|| start.elapsed());
    say(start, third, "HEAL", &format!("the operator rolls {third} back to kernel {SIM_KERNEL}"));
    sim.set_kernel(third, SIM_KERNEL);
    sim.heal(third);
    let rolled_back = wait_for(deadline, || async { nodes.get(third).await.is_ok_and(|x| ready(&x)) }).await.then(|| start.elapsed());
    RolloutResult {
        held,
        rolled_back,
        first_reboots: bad[..2].iter().map(|n| reboots(n)).sum(),
        third_reboots: reboots(third),
        unrelated_rebooted: reboots(unrelated) > 0,
        unrelated_recovered,
    }
}

fn say(start: Instant, node: &str, what: &str, detail: &str) {
    println!("+{:>6.1}s  {:<22} {:<14} {}", start.elapsed().as_secs_f64(), node, what, detail);
}

/// Prints the healer's Events, the OpenStack calls that change something and the
/// machines' history as they happen, and fills in the summary.
async fn print_timeline(
    client: kube::Client,
    sim: Arc<SimCluster>,
    cloud: Arc<FakeOpenStack>,
    original: Vec<String>,
    steps: Arc<Mutex<Vec<Step>>>,
    start: Instant,
) {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client);
    let mut stream = watcher(events, watcher::Config::default()).applied_objects().boxed();
    let (mut seen_history, mut seen_calls) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut joined: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(Ok(ev)) = ev else { continue };
                let node = ev.regarding.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
                let reason = ev.reason.clone().unwrap_or_default();
                say(start, &node, &reason, ev.note.as_deref().unwrap_or_default());
                let mut s = steps.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(step) = s.iter_mut().find(|s| s.node == node) {
                    match reason.as_str() {
                        "RepairStarted" => {
                            step.detected.get_or_insert(start.elapsed());
                            step.actions.push(ev.action.clone().unwrap_or_default().to_lowercase());
                        }
                        "Recovered" => step.recovered = Some(start.elapsed()),
                        "RepairDelegated" => {
                            step.delegated = Some(start.elapsed());
                            // The cluster's MachineHealthCheck, which the healer left the replace to.
                            if let Some(id) = sim.server_id(&node) {
                                say(start, &node, "MHC", "the cluster's MachineHealthCheck replaces the machine");
                                cloud.remediate_machine(&id);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ = tick.tick() => {
                let calls = cloud.requests();
                for r in calls[seen_calls..].iter().filter(|r| r.method != "GET" && r.service != "identity") {
                    let what = r.body.chars().take(90).collect::<String>();
                    say(start, &r.service, "CLOUD", &format!("{} {} -> {} {what}", r.method, r.path, r.status));
                }
                seen_calls = calls.len();
                let history = sim.history();
                for line in &history[seen_history..] {
                    let (node, what) = line.split_once(": ").unwrap_or(("", line));
                    say(start, node, "MACHINE", what);
                    if what.starts_with("joined") && !original.contains(&node.to_string()) {
                        joined.push(node.to_string());
                    }
                }
                seen_history = history.len();
                // A replaced worker counts as recovered when a new worker is Ready.
                for new in joined.clone() {
                    let ready = nodes.get(&new).await.ok().and_then(|n| n.status).and_then(|s| s.conditions).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                    if ready {
                        joined.retain(|j| j != &new);
                        let mut s = steps.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(step) = s.iter_mut().find(|s| s.recovered.is_none() && (s.delegated.is_some() || s.actions.iter().any(|a| a == "replace"))) {
                            say(start, &new, "READY", &format!("new worker replacing {} is Ready", step.node));
                            step.recovered = Some(start.elapsed());
                        }
                    }
                }
            }
        }
    }
}
