//! The rows the benchmark measures and the Markdown tables BENCH.md shows.

use crate::churn::Achieved;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Row {
    pub side: String,
    pub n: usize,
    /// Building the fake cluster (Nodes, Leases, servers), before the side starts.
    #[serde(deserialize_with = "nan_for_null")]
    pub setup_s: f64,
    /// Start of the leader until it has read every node.
    #[serde(deserialize_with = "nan_for_null")]
    pub sync_s: f64,
    /// The leader's VmHWM once synced, and at the end of the run.
    #[serde(deserialize_with = "nan_for_null")]
    pub sync_peak_mib: f64,
    #[serde(deserialize_with = "nan_for_null")]
    pub peak_mib: f64,
    /// The leader's VmRSS at the end of the steady window.
    #[serde(deserialize_with = "nan_for_null")]
    pub rss_mib: f64,
    /// The leader's CPU seconds per minute in the steady window, under churn.
    #[serde(deserialize_with = "nan_for_null")]
    pub cpu_per_min: f64,
    /// The standby's, over the same window (it keeps its cache and evaluates too).
    #[serde(deserialize_with = "nan_for_null")]
    pub standby_cpu_per_min: f64,
    #[serde(deserialize_with = "nan_for_null")]
    pub standby_rss_mib: f64,
    /// Bytes the leader read (its apiserver connections) per minute, steady window.
    #[serde(deserialize_with = "nan_for_null")]
    pub read_bytes_per_min: f64,
    /// The fake apiserver's requests and response bytes per minute (both replicas),
    /// Events and the election Lease's writes left out, and by verb.
    #[serde(deserialize_with = "nan_for_null")]
    pub req_per_min: f64,
    #[serde(deserialize_with = "nan_for_null")]
    pub bytes_per_min: f64,
    pub by_verb: Vec<(String, f64, f64)>,
    /// CPU of the leader for one evaluation woken by one node change (median, min).
    #[serde(deserialize_with = "nan_for_null")]
    pub eval_ms: f64,
    #[serde(deserialize_with = "nan_for_null")]
    pub eval_min_ms: f64,
    /// The same evaluations as the healer's `autohealer_evaluation_duration_seconds`
    /// times them (mean wall time).
    #[serde(deserialize_with = "nan_for_null")]
    pub eval_wall_ms: f64,
    /// CPU of the leader for one heartbeat-only status write (median), and how many
    /// evaluations the ten of them woke.
    #[serde(deserialize_with = "nan_for_null")]
    pub heartbeat_ms: f64,
    #[serde(deserialize_with = "nan_for_null")]
    pub heartbeat_evaluations: f64,
    pub wave_size: usize,
    pub wave_repaired: usize,
    #[serde(deserialize_with = "nan_for_null")]
    pub lag_p50_ms: f64,
    #[serde(deserialize_with = "nan_for_null")]
    pub lag_p99_ms: f64,
    #[serde(deserialize_with = "nan_for_null")]
    pub lag_max_ms: f64,
    /// Each failure's lag, in the order they were made (NaN: not repaired in time).
    #[serde(deserialize_with = "nans_for_nulls")]
    pub wave_lags_ms: Vec<f64>,
    /// The healer's own `autohealer_detection_lag_seconds` over the wave: the upper
    /// bound of the bucket holding its p99.
    pub histogram_p99_le: Option<f64>,
    pub wave_reqs: u64,
    pub wave_bytes: u64,
    pub simultaneous: usize,
    pub simultaneous_issued: usize,
    #[serde(deserialize_with = "nan_for_null")]
    pub simultaneous_s: f64,
    #[serde(deserialize_with = "nan_for_null")]
    pub failover_s: f64,
    pub churn: Option<Achieved>,
    /// The benchmark process itself: fake apiserver, fake OpenStack and churn.
    #[serde(deserialize_with = "nan_for_null")]
    pub fake_rss_mib: f64,
    #[serde(deserialize_with = "nan_for_null")]
    pub fake_peak_mib: f64,
    #[serde(deserialize_with = "nan_for_null")]
    pub fake_cpu_per_min: f64,
}

/// JSON has no NaN: serde_json writes it as null, read back as NaN.
fn nan_for_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Option::<f64>::deserialize(d).map(|v| v.unwrap_or(f64::NAN))
}

fn nans_for_nulls<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Vec::<Option<f64>>::deserialize(d).map(|v| v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

fn f(v: f64, digits: usize) -> String {
    if v.is_nan() { "-".into() } else { format!("{v:.digits$}") }
}

fn bytes(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 1e9 {
        format!("{:.2} GB", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1} MB", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} kB", v / 1e3)
    } else {
        format!("{v:.0} B")
    }
}

fn lag(r: &Row) -> String {
    let mut s = format!("{} / {} / {}", f(r.lag_p50_ms, 0), f(r.lag_p99_ms, 0), f(r.lag_max_ms, 0));
    if r.wave_repaired < r.wave_size {
        s += &format!(" ({} of {} in time)", r.wave_repaired, r.wave_size);
    }
    s
}

fn simultaneous(r: &Row) -> String {
    if r.simultaneous_s.is_nan() {
        format!("{} of {} issued in time", r.simultaneous_issued, r.simultaneous)
    } else {
        format!("{:.2} s for {}", r.simultaneous_s, r.simultaneous)
    }
}

pub fn one_line(r: &Row) -> String {
    format!(
        "up {:.2} s, peak {:.0} MiB, RSS {:.0} MiB, CPU {:.3} s/min, eval {} ms, lag {} ms, read {}/min",
        r.sync_s,
        r.peak_mib,
        r.rss_mib,
        r.cpu_per_min,
        f(r.eval_ms, 1),
        lag(r),
        bytes(r.read_bytes_per_min)
    )
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

pub fn print_tables(rows: &[Row]) {
    println!(
        "| nodes | side | up (s) | peak RSS (MiB) | steady RSS (MiB) | CPU s/min under churn (% of a core) | read by the leader /min | apiserver bytes/min (all clients) | apiserver requests/min | one evaluation (ms CPU, median / min; the healer's own wall time) | one heartbeat write (ms CPU; evaluations woken by 10) | detection lag p50 / p99 / max (ms) | healer's lag histogram p99 ≤ (s) | 100 at once: all cloud calls issued | failover (s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.0} | {:.3} ({:.1}%) | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            r.n,
            r.side,
            r.sync_s,
            r.peak_mib,
            r.rss_mib,
            r.cpu_per_min,
            r.cpu_per_min / 60.0 * 100.0,
            bytes(r.read_bytes_per_min),
            bytes(r.bytes_per_min),
            r.req_per_min,
            match (r.eval_ms.is_nan() || r.eval_ms == 0.0, r.eval_wall_ms.is_nan() || r.eval_wall_ms == 0.0) {
                (true, _) => "-".into(),
                (false, true) => format!("{:.1} / {:.1}", r.eval_ms, r.eval_min_ms),
                (false, false) => format!("{:.1} / {:.1}; {:.1}", r.eval_ms, r.eval_min_ms, r.eval_wall_ms),
            },
            if r.heartbeat_ms.is_nan() || r.heartbeat_ms == 0.0 {
                "-".into()
            } else {
                format!("{:.2}; {}", r.heartbeat_ms, r.heartbeat_evaluations)
            },
            lag(r),
            r.histogram_p99_le.map_or("-".into(), |v| format!("{v}")),
            simultaneous(r),
            f(r.failover_s, 1),
        );
    }
    println!();
    println!("Churn and the fake apiserver (the benchmark process: fake apiserver, fake OpenStack, churn):");
    println!();
    println!(
        "| nodes | side | standby CPU s/min, RSS (MiB) | node status writes/s (achieved / due) | Lease renewals/s (achieved / due) | largest backlog (s) | churn thread CPU s/min | benchmark process CPU s/min | its peak RSS (MiB) | build the cluster (s) | apiserver by verb, per min (requests, bytes) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let c = r.churn.unwrap_or_default();
        let verbs: Vec<String> =
            r.by_verb.iter().filter(|(_, q, b)| *q > 0.0 || *b > 0.0).map(|(k, q, b)| format!("{k}: {q:.1}, {}", bytes(*b))).collect();
        println!(
            "| {} | {} | {:.2}, {:.0} | {:.1} / {:.1} | {:.0} / {:.0} | {:.2} | {:.1} | {:.1} | {:.0} | {:.1} | {} |",
            r.n,
            r.side,
            r.standby_cpu_per_min,
            r.standby_rss_mib,
            c.node_rate,
            c.node_target,
            c.lease_rate,
            c.lease_target,
            c.max_backlog_s,
            c.cpu_per_min,
            r.fake_cpu_per_min,
            r.fake_peak_mib,
            r.setup_s,
            if verbs.is_empty() { "none".into() } else { verbs.join("; ") }
        );
    }
    println!();
    println!("Cost growth, each size against the one before (×: factor; per node: the added cost over the added nodes):");
    println!();
    println!(
        "| side | nodes | × nodes | peak RSS per added node (KiB) | × peak RSS | × CPU s/min | × up | × one evaluation | × read by the leader |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut sides: Vec<&str> = rows.iter().map(|r| r.side.as_str()).collect();
    sides.dedup();
    sides.sort();
    sides.dedup();
    for s in sides {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.side == s).collect();
        for pair in mine.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            println!(
                "| {s} | {} → {} | {:.1} | {:.2} | {} | {} | {} | {} | {} |",
                a.n,
                b.n,
                b.n as f64 / a.n as f64,
                (b.peak_mib - a.peak_mib) * 1024.0 / (b.n as f64 - a.n as f64),
                ratio(b.peak_mib, a.peak_mib),
                ratio(b.cpu_per_min, a.cpu_per_min),
                ratio(b.sync_s, a.sync_s),
                ratio(b.eval_ms, a.eval_ms),
                ratio(b.read_bytes_per_min, a.read_bytes_per_min),
            );
        }
    }
    println!();
    println!("Ratios, autohealer (NodeCondition only) / reference model (below 1: autohealer uses less or is faster):");
    println!();
    println!(
        "| nodes | peak RSS | CPU s/min | read by the leader | apiserver bytes/min | lag p99 | wave bytes | all calls issued | failover |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut ns: Vec<usize> = rows.iter().map(|r| r.n).collect();
    ns.sort();
    ns.dedup();
    for n in ns {
        let (Some(a), Some(m)) =
            (rows.iter().find(|r| r.n == n && r.side == "autohealer"), rows.iter().find(|r| r.n == n && r.side == "reference model"))
        else {
            continue;
        };
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} |",
            ratio(a.peak_mib, m.peak_mib),
            ratio(a.cpu_per_min, m.cpu_per_min),
            ratio(a.read_bytes_per_min, m.read_bytes_per_min),
            ratio(a.bytes_per_min, m.bytes_per_min),
            ratio(a.lag_p99_ms, m.lag_p99_ms),
            ratio(a.wave_bytes as f64, m.wave_bytes as f64),
            ratio(a.simultaneous_s, m.simultaneous_s),
            ratio(a.failover_s, m.failover_s),
        );
    }
}
