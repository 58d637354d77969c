//! Hot reload: the healer's ConfigMap (`pause-configmap`) is watched; a change of its
//! `config.yaml` is validated and applied without a restart. An invalid new config is
//! rejected with an Event on the ConfigMap naming the key, and the running one stays.

use crate::Registries;
use crate::config::{Config, Loaded};
use autohealer_cloud::ProviderConfig;
use autohealer_core::HealerSettings;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The ConfigMap key that holds the config.
pub const CONFIG_KEY: &str = "config.yaml";

/// Keys read once at start; a change of them is reported, and waits for a restart.
fn restart_only(old: &Config, old_provider: &ProviderConfig, new: &Config, new_provider: &ProviderConfig) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.cluster_name != new.cluster_name {
        keys.push("cluster-name");
    }
    if old.cloud_provider != new.cloud_provider {
        keys.push("cloud-provider");
    }
    if old_provider != new_provider {
        keys.push(new_provider.name());
    }
    if old.leader_elect != new.leader_elect || old.leader_election != new.leader_election {
        keys.push("leader-election");
    }
    if old.admin.listen != new.admin.listen {
        keys.push("admin.listen");
    }
    if old.kubernetes != new.kubernetes {
        keys.push("kubernetes");
    }
    if old.node_selector != new.node_selector {
        keys.push("node-selector");
    }
    if old.pause_configmap != new.pause_configmap {
        keys.push("pause-configmap");
    }
    if old.notifications != new.notifications {
        keys.push("notifications");
    }
    keys
}

/// Follows the ConfigMap; `recorder` is the process's one Event recorder.
#[allow(clippy::too_many_arguments)]
pub async fn watch(
    client: kube::Client,
    recorder: Recorder,
    ns: String,
    name: String,
    running: Loaded,
    registries: Registries,
    identity: String,
    tx: mpsc::Sender<HealerSettings>,
    stop: CancellationToken,
) {
    let events = config_map_events(client, &ns, &name, DefaultBackoff::default());
    follow(events, recorder, running, registries, identity, tx, stop).await
}

/// The healer's ConfigMap as watch events. Every failure waits `backoff` before the
/// next LIST or WATCH: the watcher itself retries at once, which during an apiserver
/// outage is a busy loop that spins a core and hammers the apiserver as it comes back.
fn config_map_events(
    client: kube::Client,
    ns: &str,
    name: &str,
    backoff: impl Backoff + 'static,
) -> BoxStream<'static, Result<watcher::Event<ConfigMap>, watcher::Error>> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, ns);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher::watcher(api, cfg).backoff(backoff).boxed()
}

async fn follow(
    mut events: BoxStream<'static, Result<watcher::Event<ConfigMap>, watcher::Error>>,
    recorder: Recorder,
    running: Loaded,
    registries: Registries,
    identity: String,
    tx: mpsc::Sender<HealerSettings>,
    stop: CancellationToken,
) {
    let mut current = running;
    let mut seen: Option<String> = None;
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = events.next() => ev,
        };
        let cm = match ev {
            Some(Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm))) => cm,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "watching the healer's ConfigMap for config changes; retrying after a pause");
                continue;
            }
            None => return,
        };
        let Some(text) = cm.data.as_ref().and_then(|d| d.get(CONFIG_KEY)).cloned() else { continue };
        // The first sight is the config the healer started with (the same ConfigMap, mounted).
        let first = seen.is_none();
        if seen.as_deref() == Some(text.as_str()) {
            continue;
        }
        seen = Some(text.clone());
        if first {
            continue;
        }
        let reference = cm.object_ref(&());
        let publish = |warning: bool, reason: autohealer_core::Reason, note: String| {
            let recorder = &recorder;
            let reference = reference.clone();
            async move {
                let ev = Event {
                    type_: if warning { EventType::Warning } else { EventType::Normal },
                    reason: reason.as_str().into(),
                    note: Some(note),
                    action: "Reload".into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&ev, &reference).await {
                    tracing::warn!(error = %e, "cannot publish an Event on the healer's ConfigMap");
                }
            }
        };
        match Config::load_str_with(&text, &registries, &current.env) {
            Err(e) => {
                tracing::warn!(error = %e, "new config rejected; the running one stays");
                publish(
                    true,
                    autohealer_core::Reason::ConfigRejected,
                    format!("The new {CONFIG_KEY} is invalid and was not applied ({e}); the running config stays."),
                )
                .await;
            }
            Ok(new) => {
                let pending = restart_only(&current.config, &current.provider, &new.config, &new.provider);
                let settings = crate::healer_settings(&new, &identity);
                if tx.send(settings).await.is_err() {
                    return;
                }
                let note = if pending.is_empty() {
                    "The new config was validated and applied.".to_string()
                } else {
                    format!(
                        "The new config was validated and applied, except {} which take effect at the next restart.",
                        pending.join(", ")
                    )
                };
                tracing::info!(restart_pending = ?pending, "new config applied");
                publish(!pending.is_empty(), autohealer_core::Reason::ConfigReloaded, note).await;
                current = new;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autohealer_testkit::apiserver::FakeApiServer;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const NS: &str = "kube-system";
    const NAME: &str = "autohealer-config";
    const RUNNING: &str = "cluster-name: c\nopenstack:\n  auth-url: https://k/v3\n";

    fn running() -> Loaded {
        Config::load_str(RUNNING, &Registries::builtin()).unwrap()
    }

    fn recorder(client: kube::Client) -> Recorder {
        Recorder::new(client, kube::runtime::events::Reporter { controller: "autohealer".into(), instance: Some("test".into()) })
    }

    /// Records how many LISTs the apiserver had answered at each pause, and pauses
    /// only a moment, so the test waits on what happens, not on the clock.
    struct Counting {
        server: Arc<FakeApiServer>,
        lists_at_pause: Arc<Mutex<Vec<u64>>>,
    }

    impl Iterator for Counting {
        type Item = Duration;
        fn next(&mut self) -> Option<Duration> {
            let lists = self.server.requests("list", "configmaps");
            self.lists_at_pause.lock().unwrap_or_else(|p| p.into_inner()).push(lists);
            Some(Duration::from_millis(1))
        }
    }

    impl Backoff for Counting {
        fn reset(&mut self) {}
    }

    #[test]
    fn keys_read_at_start_are_compared_by_their_typed_values() {
        let load = |text: &str| Config::load_str(text, &Registries::builtin()).unwrap();
        let keys = |a: &Loaded, b: &Loaded| restart_only(&a.config, &a.provider, &b.config, &b.provider);
        let base = load(RUNNING);
        let same = load("cluster-name: c\nopenstack:\n  auth-url: \"https://k/v3\"\nleader-election:\n  lease-duration: 15000ms\n");
        assert!(keys(&base, &same).is_empty(), "the same values written otherwise: {:?}", keys(&base, &same));
        let moved = load("cluster-name: c\nopenstack:\n  auth-url: https://k2/v3\nleader-election:\n  lease-name: other\ndry-run: true\n");
        assert_eq!(keys(&base, &moved), ["openstack", "leader-election"], "dry-run applies at once");
    }

    #[tokio::test]
    async fn the_config_map_watch_pauses_after_every_failure() {
        let server = Arc::new(FakeApiServer::start(Default::default()).await.unwrap());
        server.faults().set_error_rate("list", 1.0);
        server.faults().set_error_rate("watch", 1.0);
        let client = server.client().await.unwrap();
        let lists_at_pause = Arc::new(Mutex::new(Vec::new()));
        let backoff = Counting { server: server.clone(), lists_at_pause: lists_at_pause.clone() };
        let events = config_map_events(client.clone(), NS, NAME, backoff);
        let (tx, _rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(events, recorder(client), running(), Registries::builtin(), "test".into(), tx, stop.clone()));
        // Until five pauses, or fifty LISTs without them; 30s at most.
        for _ in 0..3000 {
            let pauses = lists_at_pause.lock().unwrap().len();
            if pauses >= 5 || server.requests("list", "configmaps") >= 50 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap();
        let at_pause = lists_at_pause.lock().unwrap().clone();
        let lists = server.requests("list", "configmaps");
        assert!(at_pause.len() >= 5, "{lists} failed LISTs and {} pauses: the watch retries without backing off", at_pause.len());
        for (i, n) in at_pause.iter().enumerate() {
            assert!(*n <= i as u64 + 1, "LISTs without a pause between them: {at_pause:?}");
        }
    }

    #[tokio::test]
    async fn a_rejected_config_event_names_the_key_not_the_secret() {
        use k8s_openapi::api::events::v1::Event as KubeEvent;
        let server = FakeApiServer::start(Default::default()).await.unwrap();
        let client = server.client().await.unwrap();
        let cms: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), NS);
        let cm = |text: &str| -> ConfigMap {
            serde_json::from_value(serde_json::json!({"metadata": {"name": NAME, "namespace": NS}, "data": {CONFIG_KEY: text}})).unwrap()
        };
        cms.create(&Default::default(), &cm(RUNNING)).await.unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(
            client.clone(),
            recorder(client.clone()),
            NS.into(),
            NAME.into(),
            running(),
            Registries::builtin(),
            "test".into(),
            tx,
            stop.clone(),
        ));
        for _ in 0..3000 {
            if server.requests("watch", "configmaps") >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let bad = "cluster-name: c\ncloud-provider: openstack\nopenstack:\n  auth-url: https://k/v3\n  user-id: u\n  password: 12345678\n";
        cms.replace(NAME, &Default::default(), &cm(bad)).await.unwrap();
        let events: kube::Api<KubeEvent> = kube::Api::namespaced(client, NS);
        let mut note = None;
        for _ in 0..3000 {
            let list = events.list(&Default::default()).await.unwrap();
            note = list.items.into_iter().find(|e| e.reason.as_deref() == Some("ConfigRejected")).and_then(|e| e.note);
            if note.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap();
        let note = note.expect("a ConfigRejected Event");
        assert!(note.contains("openstack.password") && !note.contains("12345678"), "{note}");
    }
}
