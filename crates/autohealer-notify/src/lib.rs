//! Delivery of the healer's notifications: Slack, a generic JSON webhook, PagerDuty
//! Events API v2 and email over SMTP, each routed by severity and kind.
//!
//! The healer hands a notification over without waiting ([`Dispatcher::notify`]); a
//! collector task gathers what arrives within `coalesce-window` so a storm becomes one
//! summary per kind, and one task per sink delivers with retries and backoff from a
//! bounded queue. Delivery can fail or fall behind; a repair never waits for it.

pub mod config;
mod sinks;

pub use config::{NotifyConfig, NotifyConfigError, SinkConfig, SinkType, Target};

use autohealer_core::{Kind, Metrics, Notification, Notifier, Severity};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A message as a sink sends it: one notification, or the summary of several of one
/// kind that arrived together.
#[derive(Debug, Clone)]
pub struct Message {
    pub kind: Kind,
    pub severity: Severity,
    pub summary: String,
    pub node: Option<String>,
    /// The node's role, for a single notification about a node.
    pub role: Option<autohealer_cloud::Role>,
    /// Every node the message is about (one, or all of a summary).
    pub nodes: Vec<String>,
    pub incident: String,
    pub dry_run: bool,
    pub cluster: String,
    /// How many notifications it stands for.
    pub count: usize,
    /// When it happened (RFC 3339).
    pub at: String,
}

/// Takes notifications from the healer and hands them to the sinks.
pub struct Dispatcher {
    tx: mpsc::Sender<Notification>,
    metrics: Arc<Metrics>,
    send_in_dry_run: bool,
}

impl Notifier for Dispatcher {
    fn notify(&self, n: Notification) {
        if n.dry_run && !self.send_in_dry_run {
            return;
        }
        if self.tx.try_send(n).is_err() {
            self.metrics.notification("all", "dropped");
            tracing::warn!("notification queue full: a notification was dropped");
        }
    }
}

impl Dispatcher {
    /// Builds every sink (reading its secrets) and starts delivery. Fails when a
    /// secret is missing, naming the key and where it was looked for.
    pub fn start(config: &NotifyConfig, cluster: &str, metrics: Arc<Metrics>) -> Result<Arc<Dispatcher>, NotifyConfigError> {
        let mut outs = Vec::new();
        for (i, s) in config.sinks.iter().enumerate() {
            let sink = sinks::build(s, config, &format!("notifications.sinks[{i}]"))?;
            let (tx, rx) = mpsc::channel::<Message>(config.queue_size);
            tokio::spawn(deliver(sink, rx, config.clone(), metrics.clone(), s.name()));
            outs.push((s.clone(), tx));
        }
        let (tx, rx) = mpsc::channel(config.queue_size);
        tokio::spawn(collect(rx, outs, config.clone(), cluster.to_string(), metrics.clone()));
        Ok(Arc::new(Dispatcher { tx, metrics, send_in_dry_run: config.send_in_dry_run }))
    }
}

/// Gathers notifications for `coalesce-window`, then routes the batch to each sink,
/// a kind with more than `coalesce-above` notifications as one summary.
async fn collect(
    mut rx: mpsc::Receiver<Notification>,
    outs: Vec<(SinkConfig, mpsc::Sender<Message>)>,
    config: NotifyConfig,
    cluster: String,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + config.coalesce_window;
        while let Ok(Some(n)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            batch.push(n);
        }
        for (sink, tx) in &outs {
            let name = sink.name();
            let mut by_kind: BTreeMap<Kind, Vec<&Notification>> = BTreeMap::new();
            for n in batch.iter().filter(|n| sink.wants(n.kind, n.severity)) {
                by_kind.entry(n.kind).or_default().push(n);
            }
            for (kind, group) in by_kind {
                let messages = if group.len() > config.coalesce_above {
                    metrics.notifications.get_or_create(&coalesced(&name)).inc_by(group.len() as u64);
                    vec![summary(kind, &group, &cluster)]
                } else {
                    group.iter().map(|n| single(n, &cluster)).collect()
                };
                for m in messages {
                    if tx.try_send(m).is_err() {
                        metrics.notification(&name, "dropped");
                        tracing::warn!(sink = %name, "notification queue of the sink is full: a message was dropped");
                    }
                }
            }
        }
    }
}

fn coalesced(sink: &str) -> autohealer_core::metrics::NotificationLabels {
    autohealer_core::metrics::NotificationLabels { sink: sink.into(), result: "coalesced".into() }
}

fn single(n: &Notification, cluster: &str) -> Message {
    Message {
        kind: n.kind,
        severity: n.severity,
        summary: n.summary.clone(),
        node: n.node.clone(),
        role: n.role,
        nodes: n.node.iter().cloned().collect(),
        incident: n.incident.clone(),
        dry_run: n.dry_run,
        cluster: cluster.to_string(),
        count: 1,
        at: n.at.to_string(),
    }
}

/// One message for many notifications of one kind: the most severe, every node named
/// (up to a bound), and an incident key of its own.
fn summary(kind: Kind, group: &[&Notification], cluster: &str) -> Message {
    let severity = group.iter().map(|n| n.severity).max().unwrap_or(Severity::Medium);
    let mut nodes: Vec<String> = group.iter().filter_map(|n| n.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    const SHOWN: usize = 20;
    let shown = nodes.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    let more = nodes.len().saturating_sub(SHOWN);
    let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
    let first = group[0];
    let summary = if nodes.is_empty() {
        format!("{} notifications of kind {kind}: {}", group.len(), first.summary)
    } else {
        format!("{kind} on {} nodes: {shown}{tail}. First: {}", nodes.len(), first.summary)
    };
    Message {
        kind,
        severity,
        summary,
        node: None,
        role: None,
        nodes,
        incident: format!("storm/{kind}/{}", first.at.as_second()),
        dry_run: group.iter().any(|n| n.dry_run),
        cluster: cluster.to_string(),
        count: group.len(),
        at: first.at.to_string(),
    }
}

/// Sends each message of one sink, retrying with exponential backoff.
async fn deliver(sink: Box<dyn sinks::Sink>, mut rx: mpsc::Receiver<Message>, config: NotifyConfig, metrics: Arc<Metrics>, name: String) {
    while let Some(m) = rx.recv().await {
        let mut delay = config.retry_backoff;
        let mut attempt = 1;
        loop {
            match tokio::time::timeout(config.timeout, sink.send(&m)).await.unwrap_or_else(|_| Err(sinks::SendError::retry("timed out"))) {
                Ok(()) => {
                    metrics.notification(&name, "sent");
                    tracing::debug!(sink = %name, kind = %m.kind, "notification sent");
                    break;
                }
                Err(e) if e.retry && attempt < config.max_attempts => {
                    tracing::debug!(sink = %name, attempt, error = %e, "notification not delivered; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(60));
                    attempt += 1;
                }
                Err(e) => {
                    metrics.notification(&name, "failed");
                    tracing::warn!(sink = %name, kind = %m.kind, attempts = attempt, error = %e, "notification not delivered");
                    break;
                }
            }
        }
    }
}
