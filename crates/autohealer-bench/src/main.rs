//! A first benchmark: the real `autohealer` binary, as a child process, watching N
//! nodes on the testkit's fake apiserver. It reports the healer's peak and steady
//! resident memory, its CPU time, and the apiserver traffic it causes at steady state
//! (from the fake's counters, by verb). Results go to BENCH.md by hand, with the command.

use anyhow::Context;
use autohealer_testkit::apiserver::resources;
use autohealer_testkit::apiserver::store::Mutation;
use autohealer_testkit::apiserver::{ApiServerOptions, FakeApiServer};
use clap::Parser;
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Node counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    nodes: Vec<usize>,
    /// The healer binary (build it with `cargo build --release -p autohealer`).
    #[arg(long, default_value = "target/release/autohealer")]
    binary: String,
    /// Steady-state window measured after the cache synced.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

const UNHEALTHY_SECS: u64 = 2;
const WAVE: usize = 20;

/// Breaks `WAVE` workers one after the other (Ready=False, as the kubelet would write
/// it) and measures, for each, the time from the instant it became actionable (its
/// transition, at the API's one-second precision, plus `unhealthy-duration`) to the
/// healer's ledger write, the first thing a repair does.
async fn failure_wave(api: &FakeApiServer, n: usize) -> anyhow::Result<String> {
    let nodes = resources::find("", "v1", "nodes").context("nodes")?;
    let victims: Vec<String> = (3..n).step_by(((n - 3) / WAVE).max(1)).take(WAVE).map(|i| format!("node-{i:05}")).collect();
    let mut actionable = Vec::new();
    for v in &victims {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady", "lastTransitionTime": rfc3339(secs)}]}});
        api.store().mutate(nodes, "", v, true, Mutation::StrategicPatch(patch), "bench").map_err(|e| anyhow::anyhow!("{}", e.message))?;
        actionable.push((secs + UNHEALTHY_SECS) as f64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lags = vec![f64::NAN; victims.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while lags.iter().any(|l| l.is_nan()) && Instant::now() < deadline {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
        for (i, v) in victims.iter().enumerate() {
            if lags[i].is_nan()
                && api.store().get(nodes, "", v).is_ok_and(|n| n.pointer("/metadata/annotations/autohealer.dev~1repair").is_some())
            {
                lags[i] = (now - actionable[i]) * 1000.0;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut done: Vec<f64> = lags.into_iter().filter(|l| !l.is_nan()).collect();
    done.sort_by(|a, b| a.total_cmp(b));
    if done.len() < victims.len() {
        return Ok(format!("{} of {} repaired within 60 s", done.len(), victims.len()));
    }
    let q = |p: f64| done[((done.len() - 1) as f64 * p).round() as usize];
    Ok(format!("{:.0} / {:.0} / {:.0}", q(0.5), q(0.99), done[done.len() - 1]))
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

async fn measure(n: usize, args: &Args) -> anyhow::Result<String> {
    let api = FakeApiServer::start(ApiServerOptions { history_window: 200_000, ..Default::default() }).await?;
    let nodes = resources::find("", "v1", "nodes").context("nodes")?;
    for i in 0..n {
        let role = if i < 3 { json!({"node-role.kubernetes.io/control-plane": ""}) } else { json!({}) };
        let mut labels = role;
        labels["topology.kubernetes.io/zone"] = json!(format!("zone-{}", i % 3));
        let node = json!({
            "metadata": {"name": format!("node-{i:05}"), "labels": labels},
            "spec": {"providerID": format!("openstack:///00000000-0000-0000-0000-{i:012}")},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "addresses": [{"type": "InternalIP", "address": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)}],
                "images": (0..40).map(|k| json!({"names": [format!("registry.example/app-{k}:v1")], "sizeBytes": 123456789})).collect::<Vec<_>>(),
                "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6.1", "osImage": "x", "containerRuntimeVersion": "containerd://2",
                    "kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}
            }
        });
        api.store().create(nodes, "", node, "bench").map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    let dir = std::env::temp_dir().join(format!("autohealer-bench-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "cloud-provider: openstack\nleader-elect: true\ncheck-delay-after-add: 0s\nadmin:\n  listen: 127.0.0.1:{port}\nmax-unhealthy:\n  worker: 100%\n  zone: 100%\nconcurrency:\n  worker: 100000\nrepairs-per-hour: 100000\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        unhealthy-duration: {UNHEALTHY_SECS}s\nopenstack:\n  strategy: nova\n  auth-url: http://127.0.0.1:9/v3\n  user-id: u\n  password: p\n  request-timeout: 1s\n"
        ),
    )?;
    let mut child = tokio::process::Command::new(&args.binary)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--log-level", "warn"])
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", args.binary))?;
    let pid = child.id().context("no pid")?;
    let started = Instant::now();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    loop {
        if let Ok(o) = tokio::process::Command::new("curl").args(["-sf", &ready]).output().await
            && o.status.success()
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("the healer did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sync = started.elapsed();
    api.reset_stats();
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let cpu1 = cpu_seconds(pid).unwrap_or(0.0);
    let rss = proc_status(pid, "VmRSS:").unwrap_or(0);
    let hwm = proc_status(pid, "VmHWM:").unwrap_or(0);
    let stats = api.stats();
    let minutes = args.seconds as f64 / 60.0;
    let (mut reqs, mut bytes) = (0u64, 0u64);
    let mut by_verb = Vec::new();
    for ((verb, res), s) in &stats {
        if res.starts_with("leases") {
            continue;
        }
        reqs += s.requests;
        bytes += s.bytes;
        by_verb.push(format!("{verb} {res}: {}", s.requests));
    }
    let lag = failure_wave(&api, n).await?;
    let _ = child.kill().await;
    Ok(format!(
        "| {n} | {:.2} | {} | {} | {:.3} | {:.1} | {:.0} | {} | {lag} |",
        sync.as_secs_f64(),
        hwm / 1024,
        rss / 1024,
        (cpu1 - cpu0) / minutes,
        reqs as f64 / minutes,
        bytes as f64 / minutes,
        if by_verb.is_empty() { "none".to_string() } else { by_verb.join(", ") }
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "| nodes | start to cache synced (s) | peak RSS (MiB) | steady RSS (MiB) | CPU s/min | apiserver requests/min (no Leases) | apiserver bytes/min | requests by verb | detection lag past unhealthy-duration, {WAVE} failures: p50 / p99 / max (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in &args.nodes {
        println!("{}", measure(*n, &args).await?);
    }
    Ok(())
}
