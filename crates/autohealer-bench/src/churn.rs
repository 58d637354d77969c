//! The kubelets' steady writes, at the rate a cluster of N nodes makes them: every
//! Node's status rewritten once per `node_period` (5 min, `nodeStatusReportFrequency`),
//! spread evenly, with nothing but the conditions' heartbeats moving; every Lease renewed
//! once per `lease_period` (10 s, the kubelet's renew interval) by a PUT of the kubelet's
//! own copy with a new `renewTime`. The writes go straight into the fake's store (the
//! kubelets' request bytes are not the healer's traffic), from a thread of their own.
//! The generator never falls behind silently: it counts what it did against what was
//! due, and the report shows the achieved rate and the largest backlog.

use crate::world::{LEASE_NS, World, leases_res, micro_time, node_name, nodes_res, seconds_time};
use autohealer_testkit::apiserver::store::Mutation;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Rates {
    pub node_period: Duration,
    pub lease_period: Duration,
}

/// The kubelets' churn as the command line sets it, for every mode that runs it.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct ChurnArgs {
    /// How often each kubelet rewrites its Node's status (0s: no node churn).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub node_status_period: Duration,
    /// How often each kubelet renews its Lease (0s: no lease churn).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease_period: Duration,
    /// The change history the fake apiserver keeps for watches, in seconds of churn (a
    /// healer whose initial list takes longer than this gets 410 Gone and lists again).
    #[arg(long, default_value_t = 60)]
    pub history_seconds: u64,
}

impl ChurnArgs {
    pub fn rates(&self) -> Rates {
        Rates { node_period: self.node_status_period, lease_period: self.lease_period }
    }

    /// Whether the kubelets write anything at all.
    pub fn any(&self) -> bool {
        !self.node_status_period.is_zero() || !self.lease_period.is_zero()
    }

    /// The fake apiserver's watch history for `n` nodes: `history-seconds` of changes.
    pub fn history_window(&self, n: usize) -> usize {
        let per_s = |p: Duration| if p.is_zero() { 0.0 } else { n as f64 / p.as_secs_f64() };
        let changes_per_s = per_s(self.node_status_period) + per_s(self.lease_period);
        ((changes_per_s * self.history_seconds as f64) as usize).max(20_000)
    }
}

#[derive(Default)]
pub struct Counters {
    pub nodes: AtomicU64,
    pub leases: AtomicU64,
    pub errors: AtomicU64,
    /// The largest backlog seen (writes due and not yet made), in milliseconds of rate.
    pub max_backlog_ms: AtomicU64,
    /// Nanoseconds of CPU the generator's thread spent.
    pub cpu_ns: AtomicU64,
}

pub struct Churn {
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub rates: Rates,
    pub n: usize,
}

/// What the generator did over a window, against what was due.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Achieved {
    pub node_target: f64,
    pub node_rate: f64,
    pub lease_target: f64,
    pub lease_rate: f64,
    pub max_backlog_s: f64,
    pub errors: u64,
    /// CPU of the generator (its own thread), seconds per minute.
    pub cpu_per_min: f64,
}

impl Achieved {
    pub fn kept_up(&self) -> bool {
        self.node_rate >= 0.98 * self.node_target && self.lease_rate >= 0.98 * self.lease_target && self.max_backlog_s < 1.0
    }
}

pub struct Mark {
    at: Instant,
    nodes: u64,
    leases: u64,
    errors: u64,
    cpu_ns: u64,
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Churn {
    pub fn start(world: Arc<World>, rates: Rates) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let n = world.n;
        let (s, p, c) = (stop.clone(), pause.clone(), counters.clone());
        let thread =
            std::thread::Builder::new().name("churn".into()).spawn(move || run(world, rates, s, p, c)).expect("the churn thread starts");
        Self { stop, pause, counters, thread: Some(thread), rates, n }
    }

    pub fn set_paused(&self, paused: bool) {
        self.pause.store(paused, Ordering::SeqCst);
    }

    pub fn mark(&self) -> Mark {
        let c = &self.counters;
        c.max_backlog_ms.store(0, Ordering::Relaxed);
        Mark {
            at: Instant::now(),
            nodes: c.nodes.load(Ordering::Relaxed),
            leases: c.leases.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            cpu_ns: c.cpu_ns.load(Ordering::Relaxed),
        }
    }

    pub fn since(&self, m: &Mark) -> Achieved {
        let c = &self.counters;
        let secs = m.at.elapsed().as_secs_f64().max(1e-9);
        Achieved {
            node_target: self.n as f64 / self.rates.node_period.as_secs_f64(),
            node_rate: (c.nodes.load(Ordering::Relaxed) - m.nodes) as f64 / secs,
            lease_target: self.n as f64 / self.rates.lease_period.as_secs_f64(),
            lease_rate: (c.leases.load(Ordering::Relaxed) - m.leases) as f64 / secs,
            max_backlog_s: c.max_backlog_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            errors: c.errors.load(Ordering::Relaxed) - m.errors,
            cpu_per_min: (c.cpu_ns.load(Ordering::Relaxed) - m.cpu_ns) as f64 / 1e9 / secs * 60.0,
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn heartbeat_patch(now: &str) -> Value {
    let c: Vec<Value> =
        ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"].iter().map(|t| json!({"type": t, "lastHeartbeatTime": now})).collect();
    json!({"status": {"conditions": c}})
}

fn run(world: Arc<World>, rates: Rates, stop: Arc<AtomicBool>, pause: Arc<AtomicBool>, c: Arc<Counters>) {
    let n = world.n as u64;
    if n == 0 {
        return;
    }
    let node_rate = n as f64 / rates.node_period.as_secs_f64();
    let lease_rate = n as f64 / rates.lease_period.as_secs_f64();
    let store = world.api.store();
    // Due writes are counted on a clock that stops while paused.
    let mut clock = Duration::ZERO;
    let mut last = Instant::now();
    let (mut nodes_done, mut leases_done) = (0u64, 0u64);
    // Each node starts at its own offset in the period, so the writes are spread evenly.
    while !stop.load(Ordering::Relaxed) {
        let now_i = Instant::now();
        if pause.load(Ordering::Relaxed) {
            last = now_i;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        clock += now_i - last;
        last = now_i;
        let t = clock.as_secs_f64();
        let (node_due, lease_due) = ((t * node_rate) as u64, (t * lease_rate) as u64);
        // One batch of at most 20 ms of due writes, leases and nodes interleaved.
        let batch_end = Instant::now() + Duration::from_millis(20);
        let now = jiff::Timestamp::now();
        let (hb, renew) = (seconds_time(now), micro_time(now));
        while (nodes_done < node_due || leases_done < lease_due) && Instant::now() < batch_end {
            let node_behind = (node_due - nodes_done.min(node_due)) as f64 / node_rate;
            let lease_behind = (lease_due - leases_done.min(lease_due)) as f64 / lease_rate;
            if nodes_done < node_due && node_behind >= lease_behind {
                let name = node_name((nodes_done % n) as usize);
                match store.mutate(nodes_res(), "", &name, true, Mutation::StrategicPatch(heartbeat_patch(&hb)), "kubelet") {
                    Ok(_) => c.nodes.fetch_add(1, Ordering::Relaxed),
                    Err(_) => c.errors.fetch_add(1, Ordering::Relaxed),
                };
                nodes_done += 1;
            } else {
                // The kubelet's own copy is the stored one (nobody else writes it): read
                // it back rather than keep a copy of every Lease here.
                let name = node_name((leases_done % n) as usize);
                let renewed = store.get(leases_res(), LEASE_NS, &name).and_then(|l| {
                    let mut l = Arc::unwrap_or_clone(l);
                    l["spec"]["renewTime"] = json!(renew);
                    store.mutate(leases_res(), LEASE_NS, &name, false, Mutation::Replace(l), "kubelet")
                });
                match renewed {
                    Ok(_) => c.leases.fetch_add(1, Ordering::Relaxed),
                    Err(_) => c.errors.fetch_add(1, Ordering::Relaxed),
                };
                leases_done += 1;
            }
        }
        // What is still due after the batch: a generator that keeps up has next to none.
        let backlog =
            ((node_due - nodes_done.min(node_due)) as f64 / node_rate).max((lease_due - leases_done.min(lease_due)) as f64 / lease_rate);
        c.max_backlog_ms.fetch_max((backlog * 1000.0) as u64, Ordering::Relaxed);
        c.cpu_ns.store(thread_cpu_ns(), Ordering::Relaxed);
        if nodes_done >= node_due && leases_done >= lease_due {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
