//! `autohealer-bench fake`: the fake apiserver alone at each size, no healer: what it
//! holds (memory), how fast it is built, what the churn costs it, and how long it takes
//! to serve a full LIST of the Nodes in pages (as a reflector asks for them) and in one.

use crate::churn::Churn;
use crate::procfs;
use crate::world::World;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args)]
pub struct FakeArgs {
    #[arg(long, value_delimiter = ',', default_value = "5000,15000,65000")]
    nodes: Vec<usize>,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    #[arg(long, default_value_t = 40)]
    images: usize,
    #[command(flatten)]
    churn: crate::churn::ChurnArgs,
    /// Instead of measuring: build the cluster at the first size, write `kubeconfig`
    /// and a healer `config.yaml` (`heartbeat.yaml` with the Heartbeat check; admin on
    /// 127.0.0.1:9102) into this directory and keep it up, churning, for `--seconds`:
    /// to run a healer by hand against it (under perf or heaptrack).
    #[arg(long)]
    serve: Option<std::path::PathBuf>,
}

/// GET with the admin token; the body (HTTP/1.0 answers are read to the end).
async fn get(port: u16, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer testkit-admin-token\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| p + 4);
    Ok(buf.split_off(at))
}

fn continue_token(body: &[u8]) -> Option<String> {
    let key = b"\"continue\":\"";
    let at = body.windows(key.len()).rposition(|w| w == key)? + key.len();
    let end = body[at..].iter().position(|b| *b == b'"')?;
    Some(String::from_utf8_lossy(&body[at..at + end]).into_owned())
}

pub async fn run(a: FakeArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.serve {
        let n = *a.nodes.first().unwrap_or(&5000);
        let rates = a.churn.rates();
        let w = Arc::new(World::start(n, a.images, "serve", a.churn.history_window(n), true).await?);
        std::fs::create_dir_all(dir)?;
        w.api.write_kubeconfig(&dir.join("kubeconfig"))?;
        std::fs::write(dir.join("config.yaml"), crate::healer_config(&w, 9102, Duration::from_secs(15), false))?;
        std::fs::write(dir.join("heartbeat.yaml"), crate::healer_config(&w, 9102, Duration::from_secs(15), true))?;
        let _churn = Churn::start(w.clone(), rates);
        eprintln!("serving {n} nodes for {} s: {}", a.seconds, dir.display());
        tokio::time::sleep(Duration::from_secs(a.seconds)).await;
        return Ok(());
    }
    println!(
        "| nodes | build (s) | RSS built (MiB) | RSS after churn (MiB) | node writes/s (achieved / due) | Lease renewals/s (achieved / due) | largest backlog (s) | churn CPU s/min | LIST in pages of 500 (s, MB) | one LIST (s, MB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in a.nodes {
        let rates = a.churn.rates();
        let t = Instant::now();
        let w = Arc::new(World::start(n, a.images, "fake", a.churn.history_window(n), false).await?);
        let build = t.elapsed().as_secs_f64();
        let me = std::process::id();
        let rss_built = procfs::status_kib(me, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
        let churn = Churn::start(w.clone(), rates);
        let mark = churn.mark();
        tokio::time::sleep(Duration::from_secs(a.seconds)).await;
        let got = churn.since(&mark);
        let rss_churn = procfs::status_kib(me, "VmRSS:").unwrap_or(0) as f64 / 1024.0;
        let port: u16 = w.api.url().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
        // Pages as kube-rs' watcher asks for them (its default page_size is 500).
        let t = Instant::now();
        let (mut bytes, mut cont) = (0usize, None::<String>);
        loop {
            let path = match &cont {
                Some(c) => format!("/api/v1/nodes?limit=500&continue={c}"),
                None => "/api/v1/nodes?limit=500&resourceVersion=0&resourceVersionMatch=NotOlderThan".to_string(),
            };
            let body = get(port, &path).await?;
            bytes += body.len();
            cont = continue_token(&body).filter(|c| !c.is_empty());
            if cont.is_none() {
                break;
            }
        }
        let paged = (t.elapsed().as_secs_f64(), bytes as f64 / 1e6);
        let t = Instant::now();
        let one = get(port, "/api/v1/nodes").await?.len();
        let whole = (t.elapsed().as_secs_f64(), one as f64 / 1e6);
        println!(
            "| {n} | {build:.1} | {rss_built:.0} | {rss_churn:.0} | {:.1} / {:.1} | {:.0} / {:.0} | {:.2} | {:.1} | {:.2}, {:.0} | {:.2}, {:.0} |",
            got.node_rate,
            got.node_target,
            got.lease_rate,
            got.lease_target,
            got.max_backlog_s,
            got.cpu_per_min,
            paged.0,
            paged.1,
            whole.0,
            whole.1
        );
        drop(churn);
        drop(w);
    }
    Ok(())
}
