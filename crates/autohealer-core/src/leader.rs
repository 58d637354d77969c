//! Leader election behind a small trait, so the healer can run as a single replica
//! (`leader-elect: false`) or elect through a Lease.
//!
//! The Lease implementation wraps kube-lease-manager and adds a local deadline:
//! leadership ends at the last renewal this replica saw plus the lease duration minus
//! a margin, even when the API cannot be reached to say so. The repair ledger's
//! resourceVersion precondition remains the real fence.

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::sync::Arc;
use std::time::Duration;
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
    /// The last renewal of our own hold on the Lease seen in the API.
    renewed: Arc<std::sync::Mutex<Option<Timestamp>>>,
    stop: CancellationToken,
    manager_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LeaseElector {
    pub async fn start(client: kube::Client, settings: LeaseSettings) -> anyhow::Result<Arc<Self>> {
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration.as_secs().max(1))
            .with_grace(settings.grace.as_secs().max(1))
            .build()
            .await
            .map_err(|e| anyhow::anyhow!("cannot set up the leader Lease {}/{}: {e}", settings.namespace, settings.name))?;
        let (manager_rx, manager_handle) = manager.watch().await;
        let me = Arc::new(Self {
            settings,
            state: watch::channel(false).0,
            renewed: Arc::default(),
            stop: CancellationToken::new(),
            manager_task: std::sync::Mutex::new(None),
        });
        let leases: Api<Lease> = Api::namespaced(client, &me.settings.namespace);
        let task = tokio::spawn(me.clone().track(leases, manager_rx, manager_handle));
        *me.manager_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(me)
    }

    fn deadline(&self) -> Option<Timestamp> {
        let renewed = (*self.renewed.lock().unwrap_or_else(|p| p.into_inner()))?;
        let window = self.settings.duration.saturating_sub(self.settings.margin);
        renewed.checked_add(SignedDuration::try_from(window).ok()?).ok()
    }

    fn fresh(&self) -> bool {
        self.deadline().is_some_and(|d| Timestamp::now() < d)
    }

    async fn track(
        self: Arc<Self>,
        leases: Api<Lease>,
        mut manager_rx: watch::Receiver<bool>,
        manager_handle: tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>,
    ) {
        let cfg = watcher::Config::default().fields(&format!("metadata.name={}", self.settings.name));
        let mut lease_events = watcher::watcher(leases, cfg).default_backoff().boxed();
        loop {
            let wake = self.deadline().map(|d| {
                let left = d.duration_since(Timestamp::now());
                Duration::try_from(left).unwrap_or(Duration::ZERO)
            });
            tokio::select! {
                _ = self.stop.cancelled() => break,
                changed = manager_rx.changed() => if changed.is_err() { break },
                ev = lease_events.next() => match ev {
                    Some(Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l))) => self.observe(&l),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::debug!(error = %e, "watching the leader Lease"),
                    None => break,
                },
                _ = tokio::time::sleep(wake.unwrap_or(Duration::from_secs(3600))), if wake.is_some() => {}
            }
            let leading = *manager_rx.borrow() && self.fresh();
            self.state.send_if_modified(|s| {
                let changed = *s != leading;
                *s = leading;
                changed
            });
        }
        self.state.send_replace(false);
        // Dropping the receiver makes kube-lease-manager release the Lease and end.
        drop(manager_rx);
        let _ = tokio::time::timeout(Duration::from_secs(5), manager_handle).await;
    }

    fn observe(&self, lease: &Lease) {
        let spec = lease.spec.as_ref();
        let ours = spec.and_then(|s| s.holder_identity.as_deref()) == Some(self.settings.identity.as_str());
        let renew = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = if ours { renew } else { None };
    }
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
        let task = self.manager_task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}
