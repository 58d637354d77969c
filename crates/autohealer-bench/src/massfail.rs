//! Slow start's price on a real mass failure: N workers fail at once (a fault a reboot
//! cures), and the time from the instant they became actionable until the last reboot
//! reached Nova and until the last node was back and released, with `slow-start` off and
//! on. The real binary runs against the testkit's apiserver, the fake OpenStack and the
//! simulated kubelets, every window scaled by `--scale` (the simulated reboot too), so a
//! run takes a few minutes; the report gives the measured seconds and what they come to
//! at the unscaled windows.

use anyhow::Context;
use autohealer_cloud::Role;
use autohealer_testkit::cluster::TestCluster;
use autohealer_testkit::openstack::{self as fake, FakeOpenStack, OsOptions};
use autohealer_testkit::sim::{Cure, Fault, SIM_LABEL, SimCluster, SimOptions};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct MassArgs {
    /// Workers that fail at once.
    #[arg(long, default_value_t = 10)]
    failing: usize,
    /// Workers in the cluster.
    #[arg(long, default_value_t = 15)]
    workers: usize,
    /// Zones the nodes are spread over: slow start keeps a width per zone.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Multiplies every window: the healer's (unhealthy-duration 5m, recovery-stable-window
    /// 60s, rebuild-delay-after-reboot 5m) and the simulated kubelets' (a reboot takes 60 s).
    #[arg(long, default_value_t = 0.1)]
    scale: f64,
    /// `concurrency.worker`.
    #[arg(long, default_value_t = 5)]
    concurrency: usize,
    /// The healer binary.
    #[arg(long, default_value = "target/x86_64-unknown-linux-musl/release/autohealer")]
    binary: String,
    /// Also write the rows here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    slow_start: bool,
    failing: usize,
    workers: usize,
    zones: usize,
    concurrency: usize,
    scale: f64,
    /// Seconds after the failures became actionable (measured, scaled windows).
    last_reboot_s: f64,
    all_back_s: f64,
    /// Reboots issued per wave: how many went out together (within 1 s of each other).
    waves: Vec<usize>,
    reboots: usize,
}

const UNHEALTHY: Duration = Duration::from_secs(300);
const STABLE: Duration = Duration::from_secs(60);
const REBUILD_DELAY: Duration = Duration::from_secs(300);

pub async fn run(args: MassArgs) -> anyhow::Result<()> {
    if !std::path::Path::new(&args.binary).exists() {
        anyhow::bail!("{} not found: cargo build --release --target x86_64-unknown-linux-musl -p autohealer", args.binary);
    }
    if args.failing > args.workers || args.failing == 0 {
        anyhow::bail!("--failing must be between 1 and --workers ({})", args.workers);
    }
    let mut rows = Vec::new();
    for slow_start in [false, true] {
        eprintln!("{} workers failing at once, slow start {} ...", args.failing, if slow_start { "on" } else { "off" });
        let row = measure(&args, slow_start).await?;
        eprintln!("  last reboot {:.1} s, all back {:.1} s, waves {:?}", row.last_reboot_s, row.all_back_s, row.waves);
        rows.push(row);
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    print(&rows);
    Ok(())
}

fn print(rows: &[Row]) {
    let Some(first) = rows.first() else { return };
    println!(
        "{} of {} workers ({} zones) failing at once, concurrency.worker {}; windows scaled by {} (the table also gives them unscaled: ÷ {}).\n",
        first.failing, first.workers, first.zones, first.concurrency, first.scale, first.scale
    );
    println!(
        "| slow start | reboots issued in waves of | last reboot issued (s, scaled / unscaled) | all nodes back and released (s, scaled / unscaled) |"
    );
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} / {:.0} | {:.1} / {:.0} |",
            if r.slow_start { "on" } else { "off" },
            r.waves.iter().map(usize::to_string).collect::<Vec<_>>().join(" + "),
            r.last_reboot_s,
            r.last_reboot_s / r.scale,
            r.all_back_s,
            r.all_back_s / r.scale
        );
    }
}

fn secs(d: Duration, scale: f64) -> String {
    format!("{}ms", d.mul_f64(scale).as_millis())
}

async fn measure(args: &MassArgs, slow_start: bool) -> anyhow::Result<Row> {
    let cluster = TestCluster::start().await?;
    let prefix = format!("mass-{}", if slow_start { "on" } else { "off" });
    let os = FakeOpenStack::start(OsOptions { reboot_time: Duration::from_millis(300), ..Default::default() }).await?;
    let zones = (0..args.zones.max(1)).map(|z| format!("zone-{}", char::from(b'a' + (z % 26) as u8))).collect();
    let opts =
        SimOptions { masters: 1, workers: args.workers, zones, time_scale: args.scale, prefix: prefix.clone(), ..Default::default() };
    let sim = SimCluster::start(cluster.client.clone(), opts).await?;
    sim.attach_cloud(&os, &format!("c-{prefix}"), true);
    let dir = std::env::temp_dir().join(format!("autohealer-bench-{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.fake.as_ref().map(|f| f.kubeconfig_for("healer")).unwrap_or(cluster.kubeconfig.clone()))?;
    let config = dir.join("config.yaml");
    let s = args.scale;
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let text = format!(
        "cluster-name: c-{prefix}\ncloud-provider: openstack\nleader-elect: false\nadmin:\n  listen: 127.0.0.1:{admin}\nmonitor-interval: 1s\ncheck-delay-after-add: 0s\n\
         recovery-stable-window: {stable}\nrebuild-delay-after-reboot: {rebuild}\nnode-selector: {SIM_LABEL}={prefix}\n\
         pause-configmap: kube-system/autohealer-{prefix}\nmax-unhealthy:\n  worker: 100%\n  zone: 100%\nconcurrency:\n  worker: {c}\n\
         slow-start:\n  enabled: {slow_start}\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: {unhealthy}\n\
         openstack:\n  auth-url: {auth}\n  user-id: {user}\n  password: {pw}\n  project-id: {project}\n  region: {region}\n  console-lines: 0\n",
        stable = secs(STABLE, s),
        rebuild = secs(REBUILD_DELAY, s),
        unhealthy = secs(UNHEALTHY, s),
        c = args.concurrency,
        auth = os.auth_url(),
        user = fake::USER_ID,
        pw = fake::PASSWORD,
        project = fake::PROJECT_ID,
        region = fake::REGION,
    );
    std::fs::write(&config, text)?;
    let log = std::fs::File::create(dir.join("healer.log"))?;
    let mut child = tokio::process::Command::new(&args.binary)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--log-format", "json", "--log-level", "info"])
        .env("POD_NAME", "bench-mass")
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", args.binary))?;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let mut workers = sim.node_names(Role::Worker);
    workers.sort();
    // Workers spread over the zones, as a mass failure would hit them.
    let failing: Vec<String> = workers.iter().take(args.failing).cloned().collect();
    // The healer has read every node (its /readyz); the faults then all begin together.
    crate::wait_ready(admin, Duration::from_secs(60)).await.with_context(|| format!("healer log in {}", dir.display()))?;
    let start = Instant::now();
    for n in &failing {
        sim.inject(n, Fault::NotReady("KernelDeadlock".into()), Cure::Reboot);
    }
    let actionable = start + UNHEALTHY.mul_f64(s);
    let limit = Duration::from_secs(600).max(Duration::from_secs_f64(3600.0 * s));
    let mut rebooted: BTreeMap<String, Instant> = BTreeMap::new();
    let mut back: BTreeMap<String, Instant> = BTreeMap::new();
    // The reboots that reached Nova, from the fake cloud's request log.
    let reboots = |n: &str| sim.server_id(n).map(|id| os.count("POST", &format!("/servers/{id}/action"), Some("\"reboot\""))).unwrap_or(0);
    while back.len() < failing.len() {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("the healer exited ({status}); its log is in {}", dir.display());
        }
        if start.elapsed() > limit {
            let _ = child.start_kill();
            anyhow::bail!(
                "after {limit:?}: {} of {} rebooted, {} back (healer log in {})",
                rebooted.len(),
                failing.len(),
                back.len(),
                dir.display()
            );
        }
        for n in &failing {
            if !rebooted.contains_key(n) && reboots(n) > 0 {
                rebooted.insert(n.clone(), Instant::now());
            }
            if rebooted.contains_key(n) && !back.contains_key(n) && released(nodes.get_opt(n).await.ok().flatten().as_ref()) {
                back.insert(n.clone(), Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reboots = failing.iter().map(|n| reboots(n)).sum();
    let _ = child.start_kill();
    let _ = child.wait().await;
    let since = |t: &Instant| t.saturating_duration_since(actionable).as_secs_f64();
    let mut times: Vec<Instant> = rebooted.values().copied().collect();
    times.sort();
    let mut waves: Vec<usize> = Vec::new();
    let mut last: Option<Instant> = None;
    for t in &times {
        match last {
            Some(l) if t.saturating_duration_since(l) < Duration::from_secs(1) => {
                if let Some(w) = waves.last_mut() {
                    *w += 1;
                }
            }
            _ => waves.push(1),
        }
        last = Some(*t);
    }
    Ok(Row {
        slow_start,
        failing: args.failing,
        workers: args.workers,
        zones: args.zones,
        concurrency: args.concurrency,
        scale: s,
        last_reboot_s: times.last().map(since).unwrap_or(f64::NAN),
        all_back_s: back.values().map(since).fold(0.0, f64::max),
        waves,
        reboots,
    })
}

fn released(n: Option<&Node>) -> bool {
    n.is_some_and(|n| {
        let ready =
            n.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
        ready
            && !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
            && !n.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(crate::REPAIR))
    })
}
