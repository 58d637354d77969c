//! The benchmark behind BENCH.md: the real `autohealer` binary and a model of the
//! polling reference (magnum-auto-healer's algorithm: two full node LISTs and a cloud
//! call every `monitor-interval`, judge, repair serially with a fixed pause), each as a
//! child process (two of them: a leader and a standby) against the testkit's fake
//! apiserver and fake OpenStack with N nodes. Both are measured the same way:
//! - steady state: peak and current RSS, CPU s/min (from /proc of the leader), and the
//!   apiserver's requests and bytes per minute by verb (Leases excluded);
//! - a wave of 20 failures 100 ms apart: detection lag past `unhealthy-duration` (to the
//!   `autohealer.dev/repair` annotation, the first write of a repair), and the
//!   apiserver traffic during the wave;
//! - 100 simultaneous worker failures: time from the instant they became actionable
//!   until the last of their reboot calls reached Nova;
//! - failover: the leader is killed (SIGKILL) and a node fails at once; time until the
//!   standby's first action on it.

use anyhow::Context;
use autohealer_testkit::apiserver::resources;
use autohealer_testkit::apiserver::store::Mutation;
use autohealer_testkit::apiserver::{ApiServerOptions, FakeApiServer};
use autohealer_testkit::openstack::{self as fake, FakeOpenStack, OsOptions};
use clap::{Parser, Subcommand};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod model;

#[derive(Parser)]
struct Args {
    /// Node counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    nodes: Vec<usize>,
    /// The healer binary (build it with `cargo build --release -p autohealer`).
    #[arg(long, default_value = "target/release/autohealer")]
    binary: String,
    /// Steady-state window measured after both sides are up.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// `monitor-interval` of both (the upstream example config's 15s).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// The reference model's pause after each repair (its serial, fixed waits).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pause: Duration,
    /// Simultaneous failures.
    #[arg(long, default_value_t = 100)]
    simultaneous: usize,
    /// Images each Node lists in its status (real nodes list dozens).
    #[arg(long, default_value_t = 40)]
    images: usize,
    /// Which side(s) to run.
    #[arg(long, value_delimiter = ',', default_value = "autohealer,reference-model")]
    sides: Vec<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The reference model itself (started by the benchmark as a child process).
    ReferenceModel(model::ModelArgs),
}

const UNHEALTHY_SECS: u64 = 2;
const WAVE: usize = 20;
const REPAIR: &str = "autohealer.dev/repair";

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

fn now_f64() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix second (civil-from-days, Howard Hinnant).
fn rfc3339(secs: u64) -> String {
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok())
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn server_id(i: usize) -> String {
    format!("00000000-0000-0000-0000-{i:012}")
}

fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

/// One measured side: the fake apiserver and cloud it runs against, and its processes.
struct World {
    api: FakeApiServer,
    os: FakeOpenStack,
    dir: PathBuf,
}

impl World {
    async fn start(n: usize, images: usize, tag: &str) -> anyhow::Result<Self> {
        let api = FakeApiServer::start(ApiServerOptions { history_window: 200_000, ..Default::default() }).await?;
        let os = FakeOpenStack::start(OsOptions::default()).await?;
        let nodes = resources::find("", "v1", "nodes").context("nodes")?;
        for i in 0..n {
            let mut labels = if i < 3 { json!({"node-role.kubernetes.io/control-plane": ""}) } else { json!({}) };
            labels["topology.kubernetes.io/zone"] = json!(format!("zone-{}", i % 3));
            let ip = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
            let node = json!({
                "metadata": {"name": node_name(i), "labels": labels},
                "spec": {"providerID": format!("openstack:///{}", server_id(i))},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                    "addresses": [{"type": "InternalIP", "address": ip}],
                    "images": (0..images).map(|k| json!({"names": [format!("registry.example/app-{k}:v1")], "sizeBytes": 123456789})).collect::<Vec<_>>(),
                    "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6.1", "osImage": "x", "containerRuntimeVersion": "containerd://2",
                        "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}
                }
            });
            api.store().create(nodes, "", node, "bench").map_err(|e| anyhow::anyhow!("{}", e.message))?;
            os.add_server(&server_id(i), &node_name(i), &ip, false);
        }
        let dir = std::env::temp_dir().join(format!("autohealer-bench-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        api.write_kubeconfig(&dir.join("kubeconfig"))?;
        Ok(Self { api, os, dir })
    }

    fn break_node(&self, name: &str, transition: u64) -> anyhow::Result<()> {
        let nodes = resources::find("", "v1", "nodes").context("nodes")?;
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady", "lastTransitionTime": rfc3339(transition)}]}});
        self.api
            .store()
            .mutate(nodes, "", name, true, Mutation::StrategicPatch(patch), "bench")
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        Ok(())
    }

    fn started(&self, name: &str) -> bool {
        let Some(nodes) = resources::find("", "v1", "nodes") else { return false };
        self.api.store().get(nodes, "", name).is_ok_and(|n| n.pointer("/metadata/annotations/autohealer.dev~1repair").is_some())
    }

    fn reboots(&self) -> usize {
        self.os.count("POST", "/action", Some("reboot"))
    }

    fn holder(&self) -> Option<String> {
        let leases = resources::find("coordination.k8s.io", "v1", "leases")?;
        let l = self.api.store().get(leases, "kube-system", "autohealer").ok()?;
        l.pointer("/spec/holderIdentity").and_then(|h| h.as_str()).map(String::from)
    }

    /// Requests and bytes by "verb resource" since the last reset, Leases excluded.
    fn traffic(&self) -> (u64, u64, BTreeMap<String, u64>) {
        let (mut reqs, mut bytes, mut by) = (0, 0, BTreeMap::new());
        for ((verb, res), s) in self.api.stats() {
            if res.starts_with("leases") || res.starts_with("events") {
                continue;
            }
            reqs += s.requests;
            bytes += s.bytes;
            *by.entry(format!("{verb} {res}")).or_default() += s.requests;
        }
        (reqs, bytes, by)
    }
}

/// How a side is started.
#[derive(Clone)]
enum Side {
    Autohealer { binary: String },
    Model { pause: Duration },
}

impl Side {
    fn name(&self) -> &'static str {
        match self {
            Side::Autohealer { .. } => "autohealer",
            Side::Model { .. } => "reference model",
        }
    }

    fn spawn(&self, w: &World, identity: &str, interval: Duration) -> anyhow::Result<tokio::process::Child> {
        let kubeconfig = w.dir.join("kubeconfig");
        let mut cmd = match self {
            Side::Autohealer { binary } => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
                let config = w.dir.join(format!("{identity}.yaml"));
                std::fs::write(
                    &config,
                    format!(
                        "cloud-provider: openstack\nleader-elect: true\nmonitor-interval: {}s\ncheck-delay-after-add: 0s\nadmin:\n  listen: 127.0.0.1:{port}\nmax-unhealthy:\n  worker: 100%\n  zone: 100%\nconcurrency:\n  worker: 100000\nrepairs-per-hour: 100000\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: {UNHEALTHY_SECS}s\nopenstack:\n  strategy: nova\n  auth-url: {}\n  user-id: {}\n  password: {}\n  project-id: {}\n  console-lines: 0\n",
                        interval.as_secs(),
                        w.os.auth_url(),
                        fake::USER_ID,
                        fake::PASSWORD,
                        fake::PROJECT_ID
                    ),
                )?;
                let mut c = tokio::process::Command::new(binary);
                c.args(["run", "--config"]).arg(&config).arg("--kubeconfig").arg(&kubeconfig).args(["--log-level", "warn"]);
                c
            }
            Side::Model { pause } => {
                let mut c = tokio::process::Command::new(std::env::current_exe()?);
                c.args(["reference-model", "--kubeconfig"])
                    .arg(&kubeconfig)
                    .args(["--interval", &format!("{}ms", interval.as_millis())])
                    .args(["--unhealthy", &format!("{UNHEALTHY_SECS}s")])
                    .args(["--pause", &format!("{}ms", pause.as_millis())])
                    .args(["--auth-url", &w.os.auth_url()]);
                c
            }
        };
        cmd.env("POD_NAME", identity).env("MODEL_IDENTITY", identity).kill_on_drop(true);
        cmd.spawn().with_context(|| format!("cannot start the {} child", self.name()))
    }
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            anyhow::bail!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(start.elapsed())
}

struct Row {
    side: &'static str,
    n: usize,
    sync: f64,
    peak_mib: u64,
    rss_mib: u64,
    cpu_per_min: f64,
    req_per_min: f64,
    bytes_per_min: f64,
    by_verb: String,
    lag: String,
    lag_p99: f64,
    wave_reqs: u64,
    wave_bytes: u64,
    simultaneous: String,
    simultaneous_s: f64,
    failover: String,
    failover_s: f64,
}

fn quantiles(mut v: Vec<f64>) -> (String, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return ("-".into(), f64::NAN);
    }
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (format!("{:.0} / {:.0} / {:.0}", q(0.5), q(0.99), v[v.len() - 1]), q(0.99))
}

async fn measure(side: &Side, n: usize, args: &Args) -> anyhow::Result<Row> {
    let w = World::start(n, args.images, side.name().split(' ').next().unwrap_or("x")).await?;
    let started = Instant::now();
    let mut leader = side.spawn(&w, "bench-a", args.interval)?;
    wait_until("the first replica leads", Duration::from_secs(120), || w.holder().as_deref() == Some("bench-a")).await?;
    let pid = leader.id().context("no pid")?;
    // Up and judging: both have read every node once (the model's first LIST pair, our cache sync).
    let list_done = || w.api.stats().iter().any(|((v, r), _)| (v == "list" || v == "watch") && r.starts_with("nodes"));
    wait_until("the first replica has read the nodes", Duration::from_secs(120), list_done).await?;
    let sync = started.elapsed().as_secs_f64();
    let mut standby = side.spawn(&w, "bench-b", args.interval)?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Steady state.
    w.api.reset_stats();
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let cpu1 = cpu_seconds(pid).unwrap_or(0.0);
    let minutes = args.seconds as f64 / 60.0;
    let (reqs, bytes, by) = w.traffic();
    let by_verb = by.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}: {:.0}", *n as f64 / minutes)).collect::<Vec<_>>();

    // A wave of failures, one after the other.
    w.api.reset_stats();
    // The last worker is kept healthy for the failover measurement.
    let workers: Vec<usize> = (3..n - 1).collect();
    let wave: Vec<usize> = workers.iter().copied().step_by((workers.len() / WAVE).max(1)).take(WAVE).collect();
    let mut actionable = Vec::new();
    for i in &wave {
        let t = now_secs();
        w.break_node(&node_name(*i), t)?;
        actionable.push((t + UNHEALTHY_SECS) as f64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lags = vec![f64::NAN; wave.len()];
    let deadline = Instant::now() + args.interval * 2 + Duration::from_secs(30);
    while lags.iter().any(|l| l.is_nan()) && Instant::now() < deadline {
        let now = now_f64();
        for (k, i) in wave.iter().enumerate() {
            if lags[k].is_nan() && w.started(&node_name(*i)) {
                lags[k] = (now - actionable[k]) * 1000.0;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let repaired = lags.iter().filter(|l| !l.is_nan()).count();
    let (mut lag, lag_p99) = quantiles(lags.into_iter().filter(|l| !l.is_nan()).collect());
    if repaired < wave.len() {
        lag = format!("{lag} ({repaired} of {} in time)", wave.len());
    }
    let (wave_reqs, wave_bytes, _) = w.traffic();

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
    let simultaneous_s = now_f64() - at;
    let simultaneous = match done {
        Ok(_) => format!("{simultaneous_s:.2} s for {}", rest.len()),
        Err(_) => format!("{} of {} in {:.0} s", w.reboots() - before, rest.len(), limit.as_secs_f64()),
    };
    let simultaneous_s = if done.is_ok() { simultaneous_s } else { f64::NAN };
    let peak = proc_status(pid, "VmHWM:").unwrap_or(0);
    let rss = proc_status(pid, "VmRSS:").unwrap_or(0);

    // Failover: the leader dies; a node fails at once, already past its unhealthy-duration.
    let victim = node_name(n - 1);
    leader.start_kill()?;
    let _ = leader.wait().await;
    let killed = Instant::now();
    w.break_node(&victim, now_secs() - UNHEALTHY_SECS - 1)?;
    let took = wait_until("the standby acts", Duration::from_secs(120), || w.started(&victim)).await;
    let (failover, failover_s) = match took {
        Ok(_) => (format!("{:.1} s", killed.elapsed().as_secs_f64()), killed.elapsed().as_secs_f64()),
        Err(e) => (format!("{e}"), f64::NAN),
    };
    let _ = standby.start_kill();
    let _ = standby.wait().await;
    let _ = std::fs::remove_dir_all(&w.dir);
    Ok(Row {
        side: side.name(),
        n,
        sync,
        peak_mib: peak / 1024,
        rss_mib: rss / 1024,
        cpu_per_min: (cpu1 - cpu0) / minutes,
        req_per_min: reqs as f64 / minutes,
        bytes_per_min: bytes as f64 / minutes,
        by_verb: if by_verb.is_empty() { "none".into() } else { by_verb.join(", ") },
        lag,
        lag_p99,
        wave_reqs,
        wave_bytes,
        simultaneous,
        simultaneous_s,
        failover,
        failover_s,
    })
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        return "-".into();
    }
    if a == 0.0 {
        return "0".into();
    }
    let r = a / b;
    if r < 0.01 { format!("{r:.1e}") } else { format!("{r:.2}") }
}

fn print_tables(rows: &[Row], simultaneous: usize) {
    println!(
        "| nodes | side | up (s) | peak RSS (MiB) | RSS (MiB) | CPU s/min | apiserver req/min | apiserver bytes/min | requests/min by verb | detection lag p50 / p99 / max (ms) | wave: requests / bytes | {simultaneous} at once: all cloud calls issued | failover: kill to standby's first action |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} | {} | {} | {:.3} | {:.1} | {:.0} | {} | {} | {} / {} | {} | {} |",
            r.n,
            r.side,
            r.sync,
            r.peak_mib,
            r.rss_mib,
            r.cpu_per_min,
            r.req_per_min,
            r.bytes_per_min,
            r.by_verb,
            r.lag,
            r.wave_reqs,
            r.wave_bytes,
            r.simultaneous,
            r.failover
        );
    }
    println!();
    println!("Ratios, autohealer / reference model (below 1: autohealer uses less or is faster):");
    println!();
    println!(
        "| nodes | peak RSS | CPU s/min | steady bytes/min | steady requests/min | lag p99 | wave bytes | all calls issued | failover |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let ns: std::collections::BTreeSet<usize> = rows.iter().map(|r| r.n).collect();
    for n in ns {
        let (Some(a), Some(m)) =
            (rows.iter().find(|r| r.n == n && r.side == "autohealer"), rows.iter().find(|r| r.n == n && r.side == "reference model"))
        else {
            continue;
        };
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ratio(a.peak_mib as f64, m.peak_mib as f64),
            ratio(a.cpu_per_min, m.cpu_per_min),
            ratio(a.bytes_per_min, m.bytes_per_min),
            ratio(a.req_per_min, m.req_per_min),
            ratio(a.lag_p99, m.lag_p99),
            ratio(a.wave_bytes as f64, m.wave_bytes as f64),
            ratio(a.simultaneous_s, m.simultaneous_s),
            ratio(a.failover_s, m.failover_s),
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls_crypto();
    let args = Args::parse();
    if let Some(Cmd::ReferenceModel(m)) = args.command {
        return model::run(m).await;
    }
    let mut sides = Vec::new();
    for s in &args.sides {
        sides.push(match s.as_str() {
            "autohealer" => Side::Autohealer { binary: args.binary.clone() },
            "reference-model" => Side::Model { pause: args.pause },
            other => anyhow::bail!("--sides: unknown side {other:?} (autohealer, reference-model)"),
        });
    }
    if !Path::new(&args.binary).exists() && sides.iter().any(|s| matches!(s, Side::Autohealer { .. })) {
        anyhow::bail!("{} not found: cargo build --release -p autohealer", args.binary);
    }
    let mut rows = Vec::new();
    for n in &args.nodes {
        for side in &sides {
            eprintln!("measuring {} at {n} nodes ...", side.name());
            rows.push(measure(side, *n, &args).await?);
        }
    }
    print_tables(&rows, args.simultaneous);
    Ok(())
}

fn rustls_crypto() -> Result<(), ()> {
    rustls::crypto::ring::default_provider().install_default().map_err(|_| ())
}
