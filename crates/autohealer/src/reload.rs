//! Hot reload: the healer's ConfigMap (`pause-configmap`) is watched; a change of its
//! `config.yaml` is validated and applied without a restart. An invalid new config is
//! rejected with an Event on the ConfigMap naming the key, and the running one stays.

use crate::config::{Config, Loaded};
use autohealer_core::HealerSettings;
use autohealer_healthcheck::Registry;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The ConfigMap key that holds the config.
pub const CONFIG_KEY: &str = "config.yaml";

/// Keys read once at start; a change of them is reported, and waits for a restart.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let differ = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    if old.cluster_name != new.cluster_name {
        keys.push("cluster-name");
    }
    if old.cloud_provider != new.cloud_provider {
        keys.push("cloud-provider");
    }
    if differ(&old.openstack.as_ref().map(|b| &b.0), &new.openstack.as_ref().map(|b| &b.0)) {
        keys.push("openstack");
    }
    if old.leader_elect != new.leader_elect || differ(&old.leader_election, &new.leader_election) {
        keys.push("leader-election");
    }
    if old.admin.listen != new.admin.listen {
        keys.push("admin.listen");
    }
    if differ(&old.kubernetes, &new.kubernetes) {
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

pub async fn watch(
    client: kube::Client,
    ns: String,
    name: String,
    running: Loaded,
    identity: String,
    tx: mpsc::Sender<HealerSettings>,
    stop: CancellationToken,
) {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), &ns);
    let recorder = Recorder::new(client, Reporter { controller: "autohealer".into(), instance: Some(identity.clone()) });
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, cfg).boxed();
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
                tracing::debug!(error = %e, "watching the healer's ConfigMap for config changes");
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
        let publish = |warning: bool, reason: &'static str, note: String| {
            let recorder = &recorder;
            let reference = reference.clone();
            async move {
                let ev = Event {
                    type_: if warning { EventType::Warning } else { EventType::Normal },
                    reason: reason.into(),
                    note: Some(note),
                    action: "Reload".into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&ev, &reference).await {
                    tracing::warn!(error = %e, "cannot publish an Event on the healer's ConfigMap");
                }
            }
        };
        match Config::load_str_with(&text, &Registry::with_builtins(), &current.env) {
            Err(e) => {
                tracing::warn!(error = %e, "new config rejected; the running one stays");
                publish(
                    true,
                    "ConfigRejected",
                    format!("The new {CONFIG_KEY} is invalid and was not applied ({e}); the running config stays."),
                )
                .await;
            }
            Ok(new) => {
                let pending = restart_only(&current.config, &new.config);
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
                publish(!pending.is_empty(), "ConfigReloaded", note).await;
                current = new;
            }
        }
    }
}
