//! The benchmark behind BENCH.md: the real `autohealer` binary (with and without the
//! Heartbeat check) and a model of the polling reference (magnum-auto-healer's
//! algorithm: two full node LISTs and a cloud call every `monitor-interval`, judge,
//! repair serially with a fixed pause), each as two child processes (a leader and a
//! standby) against the testkit's fake apiserver and fake OpenStack with N nodes and
//! their Leases, while the kubelets' churn runs (every Node's status heartbeat every
//! 5 min, every Lease renewed every 10 s; see `churn.rs`). Each side is measured the
//! same way:
//! - up: start until the leader has read every node (the healer's `/readyz`; the
//!   model's first LIST pair);
//! - steady state under churn: peak and current RSS, CPU s/min of the leader, the
//!   bytes the apiserver sent it, and the apiserver's requests and bytes by verb;
//! - one evaluation (the healer): CPU time the leader spends on one node change, churn
//!   paused (median of 10);
//! - a wave of failures 100 ms apart during churn: detection lag past
//!   `unhealthy-duration` (to the `autohealer.dev/repair` annotation, the first write
//!   of a repair);
//! - 100 simultaneous worker failures: time from the instant they became actionable
//!   until the last of their reboot calls reached Nova;
//! - failover: the leader is killed (SIGKILL) and a node fails at once; time until the
//!   standby's first action on it.

use anyhow::Context;
use autohealer_testkit::apiserver::store::Mutation;
use autohealer_testkit::openstack as fake;
use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use world::{World, node_name, nodes_res, wait_until};

mod churn;
mod fakeonly;
mod leader;
mod massfail;
mod model;
mod procfs;
mod report;
mod world;

#[derive(Parser)]
struct Args {
    /// Node counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000,15000,65000")]
    nodes: Vec<usize>,
    /// The healer binary (the shipped static build:
    /// `cargo build --release --target x86_64-unknown-linux-musl -p autohealer`).
    #[arg(long, default_value = "target/x86_64-unknown-linux-musl/release/autohealer")]
    binary: String,
    /// Steady-state window measured after both replicas are up.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// `monitor-interval` of both (the upstream example config's 15s).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// The reference model's pause after each repair (its serial, fixed waits).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pause: Duration,
    /// Failures of the wave, 100 ms apart.
    #[arg(long, default_value_t = 20)]
    wave: usize,
    /// Simultaneous failures.
    #[arg(long, default_value_t = 100)]
    simultaneous: usize,
    /// Images each Node lists in its status (real nodes list dozens).
    #[arg(long, default_value_t = 40)]
    images: usize,
    /// Which side(s) to run: autohealer (NodeCondition check), autohealer-heartbeat
    /// (NodeCondition and Heartbeat: the healer also watches the node Leases),
    /// reference-model.
    #[arg(long, value_delimiter = ',', default_value = "autohealer,autohealer-heartbeat,reference-model")]
    sides: Vec<String>,
    #[command(flatten)]
    churn: churn::ChurnArgs,
    /// Also write every row as JSON here (the plot reads it).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The reference model itself (started by the benchmark as a child process).
    ReferenceModel(model::ModelArgs),
    /// The fake apiserver alone: memory, churn and LIST speed at each size.
    Fake(fakeonly::FakeArgs),
    /// Slow start's price: N workers failing at once, time until all are rebooted and
    /// back, with `slow-start` off and on.
    MassFailure(massfail::MassArgs),
    /// Steady traffic at a small size, leader election's part of it separately.
    LeaderTraffic(leader::LeaderArgs),
    /// The tables again from `--json` files (rows of later files replace those of
    /// earlier ones with the same side and size), and the merged rows to `--json`.
    Report { files: Vec<std::path::PathBuf> },
}

const UNHEALTHY_SECS: u64 = 2;
const HEARTBEAT_SECS: u64 = 60;
pub const REPAIR: &str = "autohealer.dev/repair";

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

fn now_f64() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// How a side is started.
#[derive(Clone)]
enum Side {
    Autohealer { binary: String, heartbeat: bool },
    Model { pause: Duration },
}

struct Spawned {
    child: tokio::process::Child,
    admin: Option<u16>,
    /// Counts what the apiserver sends this replica.
    proxy: procfs::CountingProxy,
}

impl Side {
    fn name(&self) -> &'static str {
        match self {
            Side::Autohealer { heartbeat: false, .. } => "autohealer",
            Side::Autohealer { heartbeat: true, .. } => "autohealer+heartbeat",
            Side::Model { .. } => "reference model",
        }
    }

    fn tag(&self) -> &'static str {
        match self {
            Side::Autohealer { heartbeat: false, .. } => "ah",
            Side::Autohealer { heartbeat: true, .. } => "ahhb",
            Side::Model { .. } => "model",
        }
    }

    async fn spawn(&self, w: &World, identity: &str, interval: Duration) -> anyhow::Result<Spawned> {
        let url = w.api.url();
        let upstream: std::net::SocketAddr = url.trim_start_matches("http://").parse().context("the fake apiserver's address")?;
        let proxy = procfs::CountingProxy::start(upstream).await?;
        let kubeconfig = w.dir.join(format!("{identity}.kubeconfig"));
        std::fs::write(&kubeconfig, w.api.kubeconfig_yaml().replace(&url, &format!("http://127.0.0.1:{}", proxy.port)))?;
        let (mut cmd, admin) = match self {
            Side::Autohealer { binary, heartbeat } => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
                let config = w.dir.join(format!("{identity}.yaml"));
                std::fs::write(&config, healer_config(w, port, interval, *heartbeat))?;
                let mut c = tokio::process::Command::new(binary);
                c.args(["run", "--config"]).arg(&config).arg("--kubeconfig").arg(&kubeconfig).args(["--log-level", "warn"]);
                (c, Some(port))
            }
            Side::Model { pause } => {
                let mut c = tokio::process::Command::new(std::env::current_exe()?);
                c.args(["reference-model", "--kubeconfig"])
                    .arg(&kubeconfig)
                    .args(["--interval", &format!("{}ms", interval.as_millis())])
                    .args(["--unhealthy", &format!("{UNHEALTHY_SECS}s")])
                    .args(["--pause", &format!("{}ms", pause.as_millis())])
                    .args(["--auth-url", &w.os.auth_url()]);
                (c, None)
            }
        };
        cmd.env("POD_NAME", identity).env("MODEL_IDENTITY", identity).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("cannot start the {} child", self.name()))?;
        Ok(Spawned { child, admin, proxy })
    }
}

/// The healer's configuration in the benchmark: the default NodeCondition check (and
/// the Heartbeat check), limits opened up so that they do not hide speed.
pub fn healer_config(w: &World, admin_port: u16, interval: Duration, heartbeat: bool) -> String {
    let heartbeat_check = if heartbeat {
        format!("    - type: Heartbeat\n      params:\n        unhealthy-duration: {HEARTBEAT_SECS}s\n")
    } else {
        String::new()
    };
    format!(
        "cloud-provider: openstack\nleader-elect: true\nmonitor-interval: {}s\ncheck-delay-after-add: 0s\nadmin:\n  listen: 127.0.0.1:{admin_port}\nmax-unhealthy:\n  worker: 100%\n  zone: 100%\nconcurrency:\n  worker: 100000\nrepairs-per-hour: 100000\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: {UNHEALTHY_SECS}s\n{heartbeat_check}openstack:\n  strategy: nova\n  auth-url: {}\n  user-id: {}\n  password: {}\n  project-id: {}\n  console-lines: 0\n",
        interval.as_secs(),
        w.os.auth_url(),
        fake::USER_ID,
        fake::PASSWORD,
        fake::PROJECT_ID
    )
}

async fn ready(port: u16) -> bool {
    matches!(procfs::http_get(port, "/readyz").await, Some((200, _)))
}

async fn wait_ready(port: u16, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ready(port).await {
        if start.elapsed() > limit {
            anyhow::bail!("the healer was not ready within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn quantile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A heartbeat-only status write on one node, as a kubelet's: it changes nothing the
/// healer reads, so it costs the decoding of one watch event and no evaluation.
fn heartbeat(w: &World, i: usize) -> anyhow::Result<()> {
    let now = world::seconds_time(jiff::Timestamp::now());
    let patch = json!({"status": {"conditions": [{"type": "Ready", "lastHeartbeatTime": now}]}});
    w.api
        .store()
        .mutate(nodes_res(), "", &node_name(i), true, Mutation::StrategicPatch(patch), "kubelet")
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(())
}

/// A change the healer reads on one node (an annotation of its own that means nothing
/// to it): it wakes one evaluation, which judges that node again and plans the fleet.
fn touch(w: &World, i: usize, k: usize) -> anyhow::Result<()> {
    let patch = json!({"metadata": {"annotations": {"autohealer.dev/bench-touch": k.to_string()}}});
    w.api
        .store()
        .mutate(nodes_res(), "", &node_name(i), false, Mutation::MergePatch(patch), "bench")
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(())
}

async fn measure(side: &Side, n: usize, args: &Args) -> anyhow::Result<report::Row> {
    let mut row = report::Row { side: side.name().into(), n, ..Default::default() };
    let setup = Instant::now();
    let rates = args.churn.rates();
    let w = Arc::new(World::start(n, args.images, side.tag(), args.churn.history_window(n), true).await?);
    row.setup_s = setup.elapsed().as_secs_f64();
    row.fake_rss_mib = procfs::status_kib(std::process::id(), "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    let churn = args.churn.any().then(|| churn::Churn::start(w.clone(), rates));
    let me = std::process::id();

    let started = Instant::now();
    let mut leader = side.spawn(&w, "bench-a", args.interval).await?;
    let pid = leader.child.id().context("no pid")?;
    let limit = Duration::from_secs(300);
    match leader.admin {
        Some(port) => wait_ready(port, limit).await?,
        None => {
            wait_until("the model has listed the nodes twice", limit, || w.api.requests("list", "nodes") >= 2).await?;
        }
    }
    row.sync_s = started.elapsed().as_secs_f64();
    row.sync_peak_mib = procfs::status_kib(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    wait_until("the first replica leads", Duration::from_secs(120), || w.holder().as_deref() == Some("bench-a")).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Steady state under churn.
    w.api.reset_stats();
    let churn_mark = churn.as_ref().map(|c| c.mark());
    let (cpu0, read0, me_cpu0) = (procfs::cpu_seconds(pid).unwrap_or(0.0), leader.proxy.bytes(), procfs::cpu_seconds(me).unwrap_or(0.0));
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    row.cpu_per_min = (procfs::cpu_seconds(pid).unwrap_or(0.0) - cpu0) / minutes;
    row.read_bytes_per_min = (leader.proxy.bytes() - read0) as f64 / minutes;
    row.fake_cpu_per_min = (procfs::cpu_seconds(me).unwrap_or(0.0) - me_cpu0) / minutes;
    row.rss_mib = procfs::status_kib(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
    row.fake_rss_mib = row.fake_rss_mib.max(procfs::status_kib(me, "VmRSS:").unwrap_or(0) as f64 / 1024.0);
    let t = w.traffic();
    row.req_per_min = t.requests as f64 / minutes;
    row.bytes_per_min = t.bytes as f64 / minutes;
    row.by_verb = t.by.iter().map(|(k, (r, b))| (k.clone(), *r as f64 / minutes, *b as f64 / minutes)).collect();
    if let (Some(c), Some(m)) = (&churn, &churn_mark) {
        row.churn = Some(c.since(m));
    }

    // One evaluation: the CPU the leader spends on one node change, churn paused.
    if leader.admin.is_some() {
        if let Some(c) = &churn {
            c.set_paused(true);
        }
        // Until the leader is idle again: an evaluation still running (under churn the
        // loop may be one behind) would be counted in the first sample.
        let idle = |limit: Duration| async move {
            let start = Instant::now();
            let mut last = procfs::run_ns(pid).unwrap_or(0);
            let mut quiet = Duration::ZERO;
            while quiet < Duration::from_millis(300) && start.elapsed() < limit {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = procfs::run_ns(pid).unwrap_or(0);
                // Under 1 ms of CPU in 50 ms: bookmarks and timers, no evaluation.
                quiet = if now - last < 1_000_000 { quiet + Duration::from_millis(50) } else { Duration::ZERO };
                last = now;
            }
        };
        idle(Duration::from_secs(30)).await;
        let scrape = |port| async move {
            let body = procfs::http_get(port, "/metrics").await.map(|(_, b)| b).unwrap_or_default();
            let value =
                |name: &str| body.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).unwrap_or(f64::NAN);
            (value("autohealer_evaluation_duration_seconds_sum "), value("autohealer_evaluation_duration_seconds_count "))
        };
        let port = leader.admin.context("no admin port")?;
        let mut heartbeats = Vec::new();
        let mut samples = Vec::new();
        let (_, count0) = scrape(port).await;
        for k in 0..10 {
            let before = procfs::run_ns(pid).unwrap_or(0);
            heartbeat(&w, 3 + k)?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            idle(Duration::from_secs(20)).await;
            heartbeats.push((procfs::run_ns(pid).unwrap_or(0) - before) as f64 / 1e6);
        }
        let (sum1, count1) = scrape(port).await;
        row.heartbeat_evaluations = count1 - count0;
        for k in 0..10 {
            let before = procfs::run_ns(pid).unwrap_or(0);
            touch(&w, 3 + k, k)?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            idle(Duration::from_secs(20)).await;
            // The 300 ms of quiet at the end hold next to nothing.
            samples.push((procfs::run_ns(pid).unwrap_or(0) - before) as f64 / 1e6);
        }
        let (sum2, count2) = scrape(port).await;
        // The healer's own histogram: wall time per evaluation over the changes.
        row.eval_wall_ms = (sum2 - sum1) / (count2 - count1) * 1e3;
        heartbeats.sort_by(f64::total_cmp);
        row.heartbeat_ms = quantile(&heartbeats, 0.5);
        samples.sort_by(f64::total_cmp);
        row.eval_ms = quantile(&samples, 0.5);
        row.eval_min_ms = samples[0];
        if let Some(c) = &churn {
            c.set_paused(false);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // A wave of failures during churn, one after the other.
    w.api.reset_stats();
    let hist0 = match leader.admin {
        Some(p) => procfs::http_get(p, "/metrics").await.map(|(_, b)| procfs::histogram(&b, "autohealer_detection_lag_seconds")),
        None => None,
    };
    // The last worker is kept healthy for the failover measurement.
    let workers: Vec<usize> = (3..n - 1).collect();
    let wave: Vec<usize> = workers.iter().copied().step_by((workers.len() / args.wave.max(1)).max(1)).take(args.wave).collect();
    let mut actionable = Vec::new();
    for i in &wave {
        let t = now_secs();
        w.break_node(&node_name(*i), t)?;
        actionable.push((t + UNHEALTHY_SECS) as f64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lags = vec![f64::NAN; wave.len()];
    let deadline = Instant::now() + args.interval * 2 + args.pause * wave.len() as u32 + Duration::from_secs(30);
    while lags.iter().any(|l| l.is_nan()) && Instant::now() < deadline {
        let now = now_f64();
        for (k, i) in wave.iter().enumerate() {
            if lags[k].is_nan() && w.started(&node_name(*i)) {
                lags[k] = (now - actionable[k]) * 1000.0;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    row.wave_repaired = lags.iter().filter(|l| !l.is_nan()).count();
    row.wave_size = wave.len();
    row.wave_lags_ms = lags.clone();
    let mut got: Vec<f64> = lags.into_iter().filter(|l| !l.is_nan()).collect();
    got.sort_by(f64::total_cmp);
    (row.lag_p50_ms, row.lag_p99_ms, row.lag_max_ms) = (quantile(&got, 0.5), quantile(&got, 0.99), got.last().copied().unwrap_or(f64::NAN));
    if let (Some(p), Some(h0)) = (leader.admin, &hist0)
        && let Some((_, b)) = procfs::http_get(p, "/metrics").await
    {
        row.histogram_p99_le = procfs::bucket_quantile(h0, &procfs::histogram(&b, "autohealer_detection_lag_seconds"), 0.99);
    }
    let t = w.traffic();
    (row.wave_reqs, row.wave_bytes) = (t.requests, t.bytes);

    // Many failures at once: every one actionable at the same instant.
    let rest: Vec<usize> = workers.iter().copied().filter(|i| !wave.contains(i)).take(args.simultaneous).collect();
    let before = w.reboots();
    let t = now_secs();
    for i in &rest {
        w.break_node(&node_name(*i), t)?;
    }
    let at = (t + UNHEALTHY_SECS) as f64;
    let limit = args.interval * 2 + args.pause * rest.len() as u32 + Duration::from_secs(30);
    let done = wait_until("every reboot call is issued", limit, || w.reboots() >= before + rest.len()).await;
    row.simultaneous = rest.len();
    row.simultaneous_issued = w.reboots() - before;
    row.simultaneous_s = if done.is_ok() { now_f64() - at } else { f64::NAN };
    row.peak_mib = procfs::status_kib(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    row.fake_peak_mib = procfs::status_kib(me, "VmHWM:").unwrap_or(0) as f64 / 1024.0;

    // The standby starts only now: on this 2-core machine a second replica, which keeps
    // its own cache and evaluates as often as the leader, would take the CPU that the
    // leader's figures and the churn need. Its own cost is measured over 20 s of churn.
    let mut standby = side.spawn(&w, "bench-b", args.interval).await?;
    if let Some(port) = standby.admin {
        wait_ready(port, Duration::from_secs(300)).await?;
    }
    let standby_pid = standby.child.id().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let standby_cpu0 = procfs::cpu_seconds(standby_pid).unwrap_or(0.0);
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    row.standby_cpu_per_min = (procfs::cpu_seconds(standby_pid).unwrap_or(0.0) - standby_cpu0) / (t1.elapsed().as_secs_f64() / 60.0);
    row.standby_rss_mib = procfs::status_kib(standby_pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0;

    // Failover: the leader dies; a node fails at once, already past its unhealthy-duration.
    let victim = node_name(n - 1);
    leader.child.start_kill()?;
    let _ = leader.child.wait().await;
    let killed = Instant::now();
    w.break_node(&victim, now_secs() - UNHEALTHY_SECS - 1)?;
    row.failover_s = match wait_until("the standby acts", Duration::from_secs(120), || w.started(&victim)).await {
        Ok(_) => killed.elapsed().as_secs_f64(),
        Err(_) => f64::NAN,
    };
    let _ = standby.child.start_kill();
    let _ = standby.child.wait().await;
    drop(churn);
    Ok(row)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls_crypto();
    let args = Args::parse();
    match args.command {
        Some(Cmd::ReferenceModel(m)) => return model::run(m).await,
        Some(Cmd::Fake(f)) => return fakeonly::run(f).await,
        Some(Cmd::MassFailure(m)) => return massfail::run(m).await,
        Some(Cmd::LeaderTraffic(l)) => return leader::run(l).await,
        Some(Cmd::Report { files }) => {
            let mut rows: Vec<report::Row> = Vec::new();
            for f in files {
                let more: Vec<report::Row> =
                    serde_json::from_str(&std::fs::read_to_string(&f)?).with_context(|| format!("{}", f.display()))?;
                for r in more {
                    rows.retain(|o| !(o.side == r.side && o.n == r.n));
                    rows.push(r);
                }
            }
            let order = |s: &str| ["autohealer", "autohealer+heartbeat", "reference model"].iter().position(|x| *x == s).unwrap_or(9);
            rows.sort_by(|a, b| a.n.cmp(&b.n).then(order(&a.side).cmp(&order(&b.side))));
            if let Some(p) = &args.json {
                std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
            }
            report::print_tables(&rows);
            return Ok(());
        }
        None => {}
    }
    let mut sides = Vec::new();
    for s in &args.sides {
        sides.push(match s.as_str() {
            "autohealer" => Side::Autohealer { binary: args.binary.clone(), heartbeat: false },
            "autohealer-heartbeat" => Side::Autohealer { binary: args.binary.clone(), heartbeat: true },
            "reference-model" => Side::Model { pause: args.pause },
            other => anyhow::bail!("--sides: unknown side {other:?} (autohealer, autohealer-heartbeat, reference-model)"),
        });
    }
    if !Path::new(&args.binary).exists() && sides.iter().any(|s| matches!(s, Side::Autohealer { .. })) {
        anyhow::bail!("{} not found: cargo build --release --target x86_64-unknown-linux-musl -p autohealer", args.binary);
    }
    if args.nodes.iter().any(|n| *n < 8) {
        anyhow::bail!("--nodes: at least 8 nodes");
    }
    let mut rows = Vec::new();
    for n in &args.nodes {
        for side in &sides {
            eprintln!("measuring {} at {n} nodes ...", side.name());
            let started = Instant::now();
            let row = measure(side, *n, &args).await?;
            eprintln!("  done in {:.0} s: {}", started.elapsed().as_secs_f64(), report::one_line(&row));
            if let Some(c) = &row.churn
                && !c.kept_up()
            {
                eprintln!(
                    "  WARNING: the churn generator fell behind: {:.1} of {:.1} node writes/s, {:.0} of {:.0} lease writes/s, backlog up to {:.1} s",
                    c.node_rate, c.node_target, c.lease_rate, c.lease_target, c.max_backlog_s
                );
            }
            rows.push(row);
            if let Some(p) = &args.json {
                std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
            }
        }
    }
    report::print_tables(&rows);
    Ok(())
}

fn rustls_crypto() -> Result<(), ()> {
    rustls::crypto::ring::default_provider().install_default().map_err(|_| ())
}
