//! Leader election behind a small trait, so the healer can run as a single replica
//! (`leader-elect: false`) or elect through a Lease.
//!
//! The Lease elector costs one request per renewal: the leader renews with a JSON patch
//! whose `test` operations require the Lease to still name it and carry its last
//! renewal (the apiserver answers 422 otherwise, and leadership is lost), so it never
//! reads before it writes, and other writers of the Lease (the fleet state in its
//! annotations) do not disturb it. Only a standby watches the Lease, which is what
//! makes its takeover fast: it sees a release at once and judges expiry by when it saw
//! the last renewal, by its own clock (as client-go does), not by the leader's. A
//! local deadline ends leadership at the last successful renewal plus the lease
//! duration minus a margin, even when the API cannot be reached to say so. The repair
//! ledger's resourceVersion precondition remains the real fence.

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[async_trait]
pub trait LeaderElector: Send + Sync {
    /// Whether this replica leads at this instant.
    fn is_leader(&self) -> bool;
    /// Changes of leadership.
    fn subscribe(&self) -> watch::Receiver<bool>;
    /// Gives leadership up (on shutdown), so a standby takes over at once.
    async fn release(&self);
}

/// The single-replica case: always the leader.
pub struct AlwaysLeader(watch::Sender<bool>);

impl Default for AlwaysLeader {
    fn default() -> Self {
        Self(watch::channel(true).0)
    }
}

#[async_trait]
impl LeaderElector for AlwaysLeader {
    fn is_leader(&self) -> bool {
        true
    }
    fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
    async fn release(&self) {}
}

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
    pub grace: Duration,
    /// Leadership ends this long before the lease would expire, so in-flight work
    /// stops before another replica can take over.
    pub margin: Duration,
}

pub struct LeaseElector {
    settings: LeaseSettings,
    state: watch::Sender<bool>,
    /// Our hold, while we have one.
    held: Mutex<Option<Hold>>,
    /// The end of leadership, for the watchdog that says so on time even while a renewal
    /// is still waiting for its answer.
    deadline: watch::Sender<Option<Instant>>,
    /// Renewals sent and not answered (`renewTime`, when sent), newest last.
    unanswered: Mutex<Vec<(String, Instant)>>,
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the leader knows of its hold without reading the Lease.
#[derive(Debug, Clone)]
struct Hold {
    /// The `renewTime` it last wrote, as the Lease holds it: the next renewal tests it.
    renew_time: String,
    /// When that write was sent, by the local clock: the hold lasts from there.
    sent: Instant,
}

/// Why a write of the Lease did not take.
#[derive(Debug)]
enum WriteError {
    /// Someone else holds it, or it changed since we looked (409, 422), or it is gone.
    Lost(String),
    /// The API did not answer as it should: try again while the hold lasts.
    Transient(String),
}

/// A patch is refused for good when the Lease is gone (404), changed (409) or no longer
/// passes its tests (422).
const PATCH_LOST: &[u16] = &[404, 409, 422];

/// `lost`: the statuses that mean another replica won, for this call.
fn classify(call: &str, e: kube::Error, lost: &[u16]) -> WriteError {
    match &e {
        kube::Error::Api(s) if lost.contains(&s.code) => WriteError::Lost(format!("{call}: {} {}", s.code, s.message)),
        _ => WriteError::Transient(format!("{call}: {e}")),
    }
}

/// How long a standby waits to try again after a take was refused, should the watch not
/// show what changed.
const REFUSED_RETRY: Duration = Duration::from_secs(2);

/// `metav1.MicroTime` as the apiserver writes it: the leader's next test compares it.
fn micro_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The Lease as a standby sees it, and when it last saw its holder renew.
#[derive(Debug, Default)]
struct Observed {
    lease: Option<Lease>,
    /// (holder, renewTime) of the last change seen, and when it was seen.
    changed: Option<(Option<String>, Option<String>, Instant)>,
}

impl Observed {
    fn saw(&mut self, lease: Option<Lease>) {
        let spec = lease.as_ref().and_then(|l| l.spec.as_ref());
        let holder = spec.and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty());
        let renew = spec.and_then(|s| s.renew_time.as_ref()).map(|t| micro_time(t.0));
        if self.changed.as_ref().is_none_or(|(h, r, _)| *h != holder || *r != renew) {
            self.changed = Some((holder, renew, Instant::now()));
        }
        self.lease = lease;
    }

    /// When the holder's hold ends by our clock (`otherwise` when the Lease says no
    /// duration); `None` when nobody holds the Lease.
    fn expires(&self, otherwise: Duration) -> Option<Instant> {
        let spec = self.lease.as_ref()?.spec.as_ref()?;
        let (holder, _, seen) = self.changed.as_ref()?;
        holder.as_ref()?;
        let duration = spec.lease_duration_seconds.and_then(|s| u64::try_from(s.max(1)).ok()).map_or(otherwise, Duration::from_secs);
        Some(*seen + duration)
    }
}

impl LeaseElector {
    pub async fn start(client: kube::Client, mut settings: LeaseSettings) -> anyhow::Result<Arc<Self>> {
        // The Lease holds whole seconds: the local deadline counts the same, or a standby
        // could take over while this replica still believes it leads.
        settings.duration = Duration::from_secs(settings.duration.as_secs().max(1));
        if settings.grace.is_zero() || settings.grace >= settings.duration {
            anyhow::bail!(
                "leader-election: renew-grace ({:?}) must be above zero and below lease-duration ({:?})",
                settings.grace,
                settings.duration
            );
        }
        let me = Arc::new(Self {
            settings,
            state: watch::channel(false).0,
            held: Mutex::new(None),
            deadline: watch::channel(None).0,
            unanswered: Mutex::new(Vec::new()),
            stop: CancellationToken::new(),
            task: Mutex::new(None),
        });
        let leases: Api<Lease> = Api::namespaced(client, &me.settings.namespace);
        tokio::spawn(me.clone().watchdog());
        let task = tokio::spawn(me.clone().run(leases));
        *me.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(me)
    }

    fn hold(&self) -> Option<Hold> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_hold(&self, hold: Option<Hold>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = hold;
        self.deadline.send_replace(self.deadline());
        self.publish();
    }

    /// Says "no longer leading" at the deadline itself, whatever the elector is waiting on.
    async fn watchdog(self: Arc<Self>) {
        let mut deadline = self.deadline.subscribe();
        loop {
            let at = *deadline.borrow_and_update();
            tokio::select! {
                _ = self.stop.cancelled() => return,
                changed = deadline.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(at.unwrap_or_else(Instant::now).into()), if at.is_some_and(|a| Instant::now() < a) => {
                    self.publish();
                }
            }
        }
    }

    /// Leadership ends here: the last renewal sent plus the duration, less the margin.
    fn deadline(&self) -> Option<Instant> {
        let h = self.hold()?;
        Some(h.sent + self.settings.duration.saturating_sub(self.settings.margin))
    }

    fn fresh(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() < d)
    }

    fn publish(&self) {
        let leading = self.fresh();
        self.state.send_if_modified(|s| {
            let changed = *s != leading;
            *s = leading;
            changed
        });
    }

    async fn run(self: Arc<Self>, leases: Api<Lease>) {
        while !self.stop.is_cancelled() {
            if self.hold().is_some() {
                self.lead(&leases).await;
            } else {
                self.stand_by(&leases).await;
            }
        }
        if let Some(hold) = self.hold() {
            self.set_hold(None);
            let released = tokio::time::timeout(Duration::from_secs(5), self.release_lease(&leases, &hold)).await;
            match released {
                Ok(Ok(())) => tracing::info!(lease = %self.settings.name, "released the leader Lease"),
                Ok(Err(WriteError::Lost(why) | WriteError::Transient(why))) => {
                    tracing::warn!(lease = %self.settings.name, why, "could not release the leader Lease; a standby takes over when it expires")
                }
                Err(_) => tracing::warn!(lease = %self.settings.name, "releasing the leader Lease timed out"),
            }
        }
        self.publish();
    }

    /// Renews every `lease-duration - renew-grace` while the hold lasts; a failed renewal
    /// is tried again every second until the deadline.
    async fn lead(&self, leases: &Api<Lease>) {
        let Some(hold) = self.hold() else { return };
        let period = self.settings.duration.saturating_sub(self.settings.grace);
        tokio::select! {
            _ = self.stop.cancelled() => return,
            _ = tokio::time::sleep_until((hold.sent + period).into()) => {}
        }
        // Past the deadline with no renewal in (the API unreachable), it no longer leads.
        self.publish();
        let deadline = self.deadline().unwrap_or_else(Instant::now);
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
        let renewed = tokio::select! {
            _ = self.stop.cancelled() => return,
            r = tokio::time::timeout(left, self.renew(leases, &hold)) => r,
        };
        match renewed {
            Ok(Ok(next)) => self.set_hold(Some(next)),
            Ok(Err(WriteError::Lost(why))) => {
                // An earlier renewal whose answer never came may have landed: then the
                // Lease still names us with that renewal, and the hold goes on from it.
                match self.landed(leases).await {
                    Some(adopted) => {
                        tracing::info!(lease = %self.settings.name, "a renewal whose answer was lost had landed; still leading");
                        self.set_hold(Some(adopted));
                    }
                    None => {
                        tracing::warn!(lease = %self.settings.name, why, "lost the leader Lease");
                        self.set_hold(None);
                    }
                }
            }
            Ok(Err(WriteError::Transient(why))) => {
                tracing::warn!(lease = %self.settings.name, why, "cannot renew the leader Lease; trying again");
                self.publish();
                tokio::select! {
                    _ = self.stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(_) => {
                tracing::warn!(lease = %self.settings.name, "renewing the leader Lease timed out");
                self.publish();
            }
        }
    }

    /// After a refused renewal: whether one of the renewals sent since the last answered
    /// one landed after all (a timeout or a 5xx after the write committed). One read.
    async fn landed(&self, leases: &Api<Lease>) -> Option<Hold> {
        let sent: Vec<(String, Instant)> = std::mem::take(&mut *self.unanswered.lock().unwrap_or_else(|p| p.into_inner()));
        if sent.is_empty() {
            return None;
        }
        let lease = tokio::time::timeout(Duration::from_secs(2), leases.get_opt(&self.settings.name)).await.ok()?.ok()??;
        let spec = lease.spec.as_ref()?;
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return None;
        }
        let stored = written_renew_time(&lease)?;
        sent.into_iter().find(|(t, _)| *t == stored).map(|(renew_time, sent)| Hold { renew_time, sent })
    }

    /// One request: the renewal, if the Lease still names us with our last renewal.
    async fn renew(&self, leases: &Api<Lease>, hold: &Hold) -> Result<Hold, WriteError> {
        let sent = Instant::now();
        let now = micro_time(Timestamp::now());
        self.unanswered.lock().unwrap_or_else(|p| p.into_inner()).push((now.clone(), sent));
        let ops = json!([
            {"op": "test", "path": "/spec/holderIdentity", "value": self.settings.identity},
            {"op": "test", "path": "/spec/renewTime", "value": hold.renew_time},
            {"op": "add", "path": "/spec/renewTime", "value": now},
            {"op": "add", "path": "/spec/leaseDurationSeconds", "value": self.duration_secs()},
        ]);
        let result = self.json_patch(leases, ops, "patch leases (renew)").await;
        // Answered either way: only a renewal whose answer never came (a transient error
        // or a timeout, which drops this future before here) stays a candidate.
        if !matches!(result, Err(WriteError::Transient(_))) {
            self.unanswered.lock().unwrap_or_else(|p| p.into_inner()).retain(|(t, _)| *t != now);
        }
        let lease = result?;
        self.unanswered.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(Hold { renew_time: written_renew_time(&lease).unwrap_or(now), sent })
    }

    /// Gives the hold up so that a standby takes over at once (as client-go does: no
    /// holder, a one-second duration).
    async fn release_lease(&self, leases: &Api<Lease>, hold: &Hold) -> Result<(), WriteError> {
        let ops = json!([
            {"op": "test", "path": "/spec/holderIdentity", "value": self.settings.identity},
            {"op": "test", "path": "/spec/renewTime", "value": hold.renew_time},
            {"op": "remove", "path": "/spec/holderIdentity"},
            {"op": "add", "path": "/spec/leaseDurationSeconds", "value": 1},
        ]);
        self.json_patch(leases, ops, "patch leases (release)").await.map(|_| ())
    }

    fn duration_secs(&self) -> i64 {
        i64::try_from(self.settings.duration.as_secs().max(1)).unwrap_or(15)
    }

    async fn json_patch(&self, leases: &Api<Lease>, ops: Value, call: &str) -> Result<Lease, WriteError> {
        let patch: json_patch::Patch = serde_json::from_value(ops).map_err(|e| WriteError::Transient(format!("{call}: {e}")))?;
        leases
            .patch(&self.settings.name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map_err(|e| classify(call, e, PATCH_LOST))
    }

    /// Watches the Lease until it is free (absent, released or expired by our clock),
    /// then tries to take it; returns once it holds it, or on shutdown.
    async fn stand_by(&self, leases: &Api<Lease>) {
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", self.settings.name));
        let mut events = watcher::watcher(leases.clone(), cfg).boxed();
        let mut observed = Observed::default();
        let mut synced = false;
        let mut listed: Option<Lease> = None;
        let mut failures = 0u32;
        // The version of the Lease a take was refused for (or `None` for its absence), and
        // when: the next try waits for the watch to show what changed, or a few seconds
        // should the watch have gone quiet.
        let mut refused: Option<(Option<String>, Instant)> = None;
        loop {
            let version = observed.lease.as_ref().and_then(|l| l.metadata.resource_version.clone());
            let retry_at = refused.as_ref().filter(|(v, _)| *v == version).map(|(_, at)| *at + REFUSED_RETRY);
            if synced && retry_at.is_none_or(|at| Instant::now() >= at) {
                let free = observed.lease.is_none() || observed.expires(self.settings.duration).is_none_or(|at| Instant::now() >= at);
                if free {
                    let taken = tokio::select! {
                        _ = self.stop.cancelled() => return,
                        t = tokio::time::timeout(Duration::from_secs(10), self.acquire(leases, observed.lease.as_ref())) => {
                            t.unwrap_or_else(|_| Err(WriteError::Transient("taking the Lease timed out".into())))
                        }
                    };
                    match taken {
                        Ok(hold) => {
                            tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "took the leader Lease");
                            self.set_hold(Some(hold));
                            return;
                        }
                        Err(WriteError::Lost(why)) => {
                            tracing::debug!(why, "another replica took the leader Lease first");
                            refused = Some((version, Instant::now()));
                        }
                        Err(WriteError::Transient(why)) => {
                            tracing::warn!(lease = %self.settings.name, why, "cannot take the leader Lease; trying again");
                            tokio::select! {
                                _ = self.stop.cancelled() => return,
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            }
                        }
                    }
                }
            }
            let wake = match retry_at.filter(|at| Instant::now() < *at) {
                Some(at) => Some(at),
                None => observed.expires(self.settings.duration).filter(|at| synced && Instant::now() < *at),
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep_until(wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)).into()), if wake.is_some() => {}
                ev = events.next() => match ev {
                    Some(Ok(watcher::Event::Init)) => listed = None,
                    Some(Ok(watcher::Event::InitApply(l))) => listed = Some(l),
                    Some(Ok(watcher::Event::InitDone)) => {
                        observed.saw(listed.take());
                        synced = true;
                        failures = 0;
                    }
                    Some(Ok(watcher::Event::Apply(l))) => observed.saw(Some(l)),
                    Some(Ok(watcher::Event::Delete(_))) => observed.saw(None),
                    Some(Err(e)) => {
                        failures += 1;
                        tracing::warn!(lease = %self.settings.name, error = %e, "watching the leader Lease; retrying");
                        let pause = Duration::from_millis(500u64.saturating_mul(2u64.saturating_pow(failures.min(5))));
                        tokio::select! {
                            _ = self.stop.cancelled() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                    None => return,
                },
            }
        }
    }

    /// Takes a free Lease: creates it, or writes ourselves in if it is unchanged since
    /// we saw it (a `test` of its resourceVersion), counting a transition.
    async fn acquire(&self, leases: &Api<Lease>, seen: Option<&Lease>) -> Result<Hold, WriteError> {
        let sent = Instant::now();
        let now = micro_time(Timestamp::now());
        let spec = json!({
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": self.duration_secs(),
            "acquireTime": now,
            "renewTime": now,
        });
        let lease = match seen {
            None => {
                let mut spec = spec;
                spec["leaseTransitions"] = json!(0);
                let body: Lease = serde_json::from_value(json!({
                    "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
                    "spec": spec,
                }))
                .map_err(|e| WriteError::Transient(format!("create leases: {e}")))?;
                // Only AlreadyExists is another replica's win; a missing namespace (404) is
                // said, and tried again.
                leases.create(&PostParams::default(), &body).await.map_err(|e| classify("create leases", e, &[409]))?
            }
            Some(l) => {
                let rv = l.metadata.resource_version.clone().unwrap_or_default();
                let transitions = l.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
                let held_by_other = l.spec.as_ref().and_then(|s| s.holder_identity.as_deref()).is_some_and(|h| h != self.settings.identity);
                let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
                if l.spec.is_none() {
                    ops.push(json!({"op": "add", "path": "/spec", "value": {}}));
                }
                for (k, v) in spec.as_object().into_iter().flatten() {
                    ops.push(json!({"op": "add", "path": format!("/spec/{k}"), "value": v}));
                }
                ops.push(json!({"op": "add", "path": "/spec/leaseTransitions", "value": transitions + i32::from(held_by_other)}));
                self.json_patch(leases, Value::Array(ops), "patch leases (acquire)").await?
            }
        };
        Ok(Hold { renew_time: written_renew_time(&lease).unwrap_or(now), sent })
    }
}

fn written_renew_time(l: &Lease) -> Option<String> {
    l.spec.as_ref()?.renew_time.as_ref().map(|t| micro_time(t.0))
}

#[async_trait]
impl LeaderElector for LeaseElector {
    fn is_leader(&self) -> bool {
        *self.state.borrow() && self.fresh()
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }

    async fn release(&self) {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renew: &str, rv: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "autohealer", "namespace": "kube-system", "resourceVersion": rv},
            "spec": {"holderIdentity": holder, "renewTime": renew, "leaseDurationSeconds": 15},
        }))
        .unwrap()
    }

    #[test]
    fn a_renewal_time_is_written_as_the_apiserver_stores_it() {
        let t: Timestamp = "2026-12-02T05:00:00Z".parse().unwrap();
        assert_eq!(micro_time(t), "2026-12-02T05:00:00.000000Z", "six digits even at a whole second");
        let t: Timestamp = "2026-12-02T05:00:00.1234567Z".parse().unwrap();
        assert_eq!(micro_time(t), "2026-12-02T05:00:00.123456Z", "cut to microseconds");
    }

    #[test]
    fn a_standby_judges_expiry_by_when_it_saw_the_holder_renew() {
        let mut o = Observed::default();
        o.saw(Some(lease(Some("a"), "2026-12-02T05:00:00.000000Z", "1")));
        let first = o.expires(Duration::from_secs(30)).unwrap();
        assert!(first > Instant::now() + Duration::from_secs(14), "the Lease's own 15 s, from when it was seen");
        // Another write that is not a renewal (the fleet state) does not extend the hold.
        o.saw(Some(lease(Some("a"), "2026-12-02T05:00:00.000000Z", "2")));
        assert_eq!(o.expires(Duration::from_secs(30)), Some(first));
        // A renewal does.
        std::thread::sleep(Duration::from_millis(5));
        o.saw(Some(lease(Some("a"), "2026-12-02T05:00:10.000000Z", "3")));
        assert!(o.expires(Duration::from_secs(30)).unwrap() > first);
        // Released: nobody holds it, it is free at once.
        o.saw(Some(lease(None, "2026-12-02T05:00:10.000000Z", "4")));
        assert_eq!(o.expires(Duration::from_secs(30)), None);
    }

    #[test]
    fn a_refused_write_is_lost_and_an_unanswered_one_is_transient() {
        let api = |code| kube::Error::Api(Box::new(kube::core::Status { code, message: "m".into(), ..Default::default() }));
        for code in [404, 409, 422] {
            assert!(matches!(classify("patch leases", api(code), PATCH_LOST), WriteError::Lost(_)), "{code}");
        }
        for code in [429, 500, 504] {
            assert!(matches!(classify("patch leases", api(code), PATCH_LOST), WriteError::Transient(_)), "{code}");
        }
        // A create refused for a missing namespace is not another replica's win.
        assert!(matches!(classify("create leases", api(404), &[409]), WriteError::Transient(_)));
        assert!(matches!(classify("create leases", api(409), &[409]), WriteError::Lost(_)));
    }
}
