//! Steady apiserver traffic at a small size, and how much of it is leader election: two
//! replicas of the real binary (a leader and a standby, no Heartbeat check, no churn)
//! against the fake apiserver, every request and the bytes of every response counted by
//! verb and resource over a quiet minute. `--binary` may name an older build to compare.

use crate::world::World;
use crate::{Side, wait_ready};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct LeaderArgs {
    /// Nodes (the first three are masters: 53 is the 3 + 50 of the side-by-side with the Go healer).
    #[arg(long, default_value_t = 53)]
    nodes: usize,
    /// The quiet window measured.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The healer binaries to measure, each with a label: `label=path`.
    #[arg(long, value_delimiter = ',', default_value = "autohealer=target/x86_64-unknown-linux-musl/release/autohealer")]
    binary: Vec<String>,
}

pub async fn run(args: LeaderArgs) -> anyhow::Result<()> {
    println!(
        "| build | leader election: requests/min | its bytes/min | by verb (requests/min) | all apiserver traffic of both replicas: requests/min | bytes/min (KiB) | leader election's share of the bytes |"
    );
    println!("|---|---|---|---|---|---|---|");
    for b in &args.binary {
        let (label, path) = b.split_once('=').unwrap_or(("autohealer", b.as_str()));
        if !std::path::Path::new(path).exists() {
            anyhow::bail!("{path} not found: cargo build --release --target x86_64-unknown-linux-musl -p autohealer");
        }
        let w = World::start(args.nodes, 10, &format!("le-{label}"), 10_000, true).await?;
        let side = Side::Autohealer { binary: path.to_string(), heartbeat: false };
        let mut a = side.spawn(&w, "bench-a", Duration::from_secs(15)).await?;
        if let Some(p) = a.admin {
            wait_ready(p, Duration::from_secs(120)).await?;
        }
        let mut b = side.spawn(&w, "bench-b", Duration::from_secs(15)).await?;
        if let Some(p) = b.admin {
            wait_ready(p, Duration::from_secs(120)).await?;
        }
        // Settled: the leader elected, the first fleet write done.
        tokio::time::sleep(Duration::from_secs(20)).await;
        w.api.reset_stats();
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        let minutes = start.elapsed().as_secs_f64() / 60.0;
        let stats = w.api.stats();
        let (mut le_req, mut le_bytes, mut all_req, mut all_bytes) = (0.0, 0.0, 0.0, 0.0);
        let mut by: BTreeMap<String, f64> = BTreeMap::new();
        for ((verb, res), s) in &stats {
            all_req += s.requests as f64;
            all_bytes += s.bytes as f64;
            if res.starts_with("leases") {
                le_req += s.requests as f64;
                le_bytes += s.bytes as f64;
                *by.entry(verb.clone()).or_default() += s.requests as f64 / minutes;
            }
        }
        let by = by.iter().map(|(v, r)| format!("{v} {r:.1}")).collect::<Vec<_>>().join(", ");
        println!(
            "| {label} | {:.1} | {:.0} | {by} | {:.1} | {:.1} | {:.0}% |",
            le_req / minutes,
            le_bytes / minutes,
            all_req / minutes,
            all_bytes / minutes / 1024.0,
            if all_bytes > 0.0 { 100.0 * le_bytes / all_bytes } else { 0.0 }
        );
        let _ = a.child.start_kill();
        let _ = b.child.start_kill();
        let _ = a.child.wait().await;
        let _ = b.child.wait().await;
    }
    Ok(())
}
