//! The cluster an end-to-end test runs against: the fake apiserver, or a real one when
//! `AUTOHEALER_E2E_KUBECONFIG` names a kubeconfig. Tests observe it only through the
//! Kubernetes API, so the same test runs unchanged against both.

use crate::apiserver::{ApiServerOptions, FakeApiServer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::sync::{Arc, Mutex};

pub const E2E_KUBECONFIG: &str = "AUTOHEALER_E2E_KUBECONFIG";

pub struct TestCluster {
    pub client: kube::Client,
    /// A kubeconfig for this cluster, for replicas that build their own clients.
    pub kubeconfig: String,
    /// The fake apiserver, when the test runs against it.
    pub fake: Option<FakeApiServer>,
}

impl TestCluster {
    pub async fn start() -> anyhow::Result<Self> {
        match std::env::var(E2E_KUBECONFIG) {
            Ok(path) if !path.is_empty() => {
                let kubeconfig = std::fs::read_to_string(&path)?;
                let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig)?;
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
                Ok(Self { client: kube::Client::try_from(cfg)?, kubeconfig, fake: None })
            }
            _ => {
                let fake = FakeApiServer::start(ApiServerOptions::default()).await?;
                Ok(Self { client: fake.client().await?, kubeconfig: fake.kubeconfig_yaml(), fake: Some(fake) })
            }
        }
    }

    /// Events about a node, oldest first, as (reason, note).
    pub async fn node_events(&self, node: &str) -> Vec<(String, String)> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), "default");
        let Ok(list) = events.list(&Default::default()).await else {
            return vec![];
        };
        let mut out: Vec<_> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node))
            .map(|e| (e.event_time.map(|t| t.0), e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect();
        out.sort_by_key(|e| e.0);
        out.into_iter().map(|(_, r, n)| (r, n)).collect()
    }
}

/// Every version of one Node, as a watch delivers them, so a test can check what
/// was written on the way and not only where it ended.
pub struct NodeRecorder {
    versions: Arc<Mutex<Vec<Node>>>,
    task: tokio::task::JoinHandle<()>,
}

impl NodeRecorder {
    pub fn start(client: kube::Client, name: &str) -> Self {
        let nodes: Api<Node> = Api::all(client);
        let versions: Arc<Mutex<Vec<Node>>> = Arc::default();
        let sink = versions.clone();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = tokio::spawn(async move {
            let mut s = watcher(nodes, cfg).applied_objects().boxed();
            while let Some(ev) = s.next().await {
                if let Ok(n) = ev {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(n);
                }
            }
        });
        Self { versions, task }
    }

    pub fn versions(&self) -> Vec<Node> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn latest(&self) -> Option<Node> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner()).last().cloned()
    }
}

impl Drop for NodeRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
