//! Hot reload: the healer's ConfigMap (`pause-configmap`) is watched; a change of its
//! `config.yaml` is validated and applied without a restart. An invalid new config is
//! rejected with an Event on the ConfigMap naming the key, and the running one stays.

use crate::Registries;
use crate::config::{Config, Loaded};
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

/// The config a reload runs: `new`'s keys that apply at once, and `started`'s for the
/// keys read once at start, with those of them that differ (they wait for a restart).
/// Taking them from `started`, not only reporting them, keeps the healer on what it
/// started with: a new `leader-election.lease-name` would otherwise send it to read its
/// fleet state (storm holds, the hour's repair budget) from a Lease nobody holds. And
/// comparing with `started` keeps a pending key reported until the restart.
///
/// Every field is named below, none left to `..`, so a new key must be classified here.
fn reloaded(started: &Loaded, mut new: Loaded) -> (Loaded, Vec<&'static str>) {
    if started.forced_dry_run {
        new.force_dry_run();
    }
    let s = &started.config;
    let mut pending = Vec::new();
    let Config {
        cluster_name,
        cloud_provider,
        leader_elect,
        leader_election,
        admin,
        kubernetes,
        node_selector,
        pause_configmap,
        notifications,
        dry_run: _,
        monitor_interval: _,
        master_monitor_enabled: _,
        worker_monitor_enabled: _,
        check_delay_after_add: _,
        rebuild_delay_after_reboot: _,
        replace_timeout: _,
        repair_steps: _,
        healthcheck: _,
        probe_concurrency: _,
        evidence: _,
        max_unhealthy: _,
        storm_cooldown: _,
        concurrency: _,
        repairs_per_hour: _,
        node_retry: _,
        correlated_hold: _,
        repeated_repairs: _,
        slow_start: _,
        approval: _,
        workload_check: _,
        recovery_stable_window: _,
        apiserver_outage_grace: _,
        drain: _,
        fencing: _,
    } = &mut new.config;
    keep(&mut pending, "cluster-name", cluster_name, &s.cluster_name);
    if keep(&mut pending, "cloud-provider", cloud_provider, &s.cloud_provider) {
        keep(&mut pending, started.provider.name(), &mut new.provider, &started.provider);
    } else {
        // Another provider's block: `cloud-provider` says it all.
        new.provider = started.provider.clone();
    }
    keep(&mut pending, "leader-election", leader_elect, &s.leader_elect);
    keep(&mut pending, "leader-election", leader_election, &s.leader_election);
    keep(&mut pending, "admin.listen", admin, &s.admin);
    keep(&mut pending, "kubernetes", kubernetes, &s.kubernetes);
    keep(&mut pending, "node-selector", node_selector, &s.node_selector);
    keep(&mut pending, "pause-configmap", pause_configmap, &s.pause_configmap);
    // Compared typed (the same sinks written otherwise are no change), kept raw too.
    *notifications = s.notifications.clone();
    keep(&mut pending, "notifications", &mut new.notify, &started.notify);
    pending.dedup();
    (new, pending)
}

/// Puts `started` back in `new` when they differ, and names `key` as pending; whether
/// they were the same.
fn keep<T: PartialEq + Clone>(pending: &mut Vec<&'static str>, key: &'static str, new: &mut T, started: &T) -> bool {
    if new == started {
        return true;
    }
    *new = started.clone();
    pending.push(key);
    false
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
    let started = running;
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
        match Config::load_str_with(&text, &registries, &started.env) {
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
                let (new, pending) = reloaded(&started, new);
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
        let keys = |a: &Loaded, b: &Loaded| reloaded(a, b.clone()).1;
        let base = load(RUNNING);
        let same = load("cluster-name: c\nopenstack:\n  auth-url: \"https://k/v3\"\nleader-election:\n  lease-duration: 15000ms\n");
        assert!(keys(&base, &same).is_empty(), "the same values written otherwise: {:?}", keys(&base, &same));
        let moved = load("cluster-name: c\nopenstack:\n  auth-url: https://k2/v3\nleader-election:\n  lease-name: other\ndry-run: true\n");
        assert_eq!(keys(&base, &moved), ["openstack", "leader-election"], "dry-run applies at once");
        let renamed = load("cluster-name: d\nopenstack:\n  auth-url: https://k/v3\n");
        assert_eq!(keys(&base, &renamed), ["cluster-name"], "the provider's block is unchanged");
        let other = load("cluster-name: c\ncloud-provider: openstack\nopenstack:\n  strategy: nova\n");
        assert_eq!(keys(&base, &other), ["openstack"]);
        let sinks = |name: &str| {
            format!("{RUNNING}notifications:\n  sinks:\n    - type: webhook\n      url-env: {name}\n      min-severity: medium\n")
        };
        let told = load(&sinks("W"));
        assert!(keys(&told, &load(&format!("{}  timeout: 10s\n", sinks("W")))).is_empty(), "the same sinks written otherwise");
        assert_eq!(keys(&told, &load(&sinks("V"))), ["notifications"]);
    }

    /// The log lines written while it lives (the test runtime has one thread).
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Drives [`follow`] with ConfigMap events: the first is the config the healer
    /// started with, each later one a reload. Returns the settings each reload sent
    /// to the healer and the `restart_pending` each reload logged (the Events of a
    /// series keep their first note, so the log is where every reload's list shows).
    async fn reloads(started: Loaded, texts: &[String]) -> (Vec<HealerSettings>, Vec<String>) {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let server = FakeApiServer::start(Default::default()).await.unwrap();
        let client = server.client().await.unwrap();
        let cm = |text: &str| -> ConfigMap {
            serde_json::from_value(serde_json::json!({"metadata": {"name": NAME, "namespace": NS}, "data": {CONFIG_KEY: text}})).unwrap()
        };
        let (events_tx, events) = futures::channel::mpsc::unbounded();
        let (tx, mut rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let task =
            tokio::spawn(follow(events.boxed(), recorder(client.clone()), started, Registries::builtin(), "test".into(), tx, stop.clone()));
        events_tx.unbounded_send(Ok(watcher::Event::InitApply(cm(RUNNING)))).unwrap();
        let mut sent = Vec::new();
        for text in texts {
            events_tx.unbounded_send(Ok(watcher::Event::Apply(cm(text)))).unwrap();
            sent.push(tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().expect("the reload's settings"));
        }
        stop.cancel();
        task.await.unwrap();
        let text = String::from_utf8_lossy(&log.0.lock().unwrap()).to_string();
        let pending = text
            .lines()
            .filter(|l| l.contains("new config applied"))
            .filter_map(|l| l.split("restart_pending=").nth(1))
            .map(|p| p.split(']').next().unwrap_or_default().trim_start_matches('[').to_string())
            .collect();
        (sent, pending)
    }

    #[tokio::test]
    async fn run_dry_run_holds_through_every_reload() {
        let mut started = running();
        started.force_dry_run();
        let texts = [format!("{RUNNING}dry-run: false\nmonitor-interval: 30s\n"), format!("{RUNNING}dry-run: false\n")];
        let (sent, _) = reloads(started, &texts).await;
        assert!(sent.iter().all(|s| s.policy.dry_run), "a reloaded `dry-run: false` repaired for real under --dry-run");
        assert_eq!(sent[0].monitor_interval, Duration::from_secs(30), "the rest of the new config applies");
        let (sent, _) = reloads(running(), &[format!("{RUNNING}dry-run: true\n")]).await;
        assert!(sent[0].policy.dry_run, "without --dry-run the file's dry-run applies");
    }

    /// The healer keeps its fleet state (storm holds, the hour's repair budget) on the
    /// Lease it started with: a reload must not point it at another one.
    #[tokio::test]
    async fn keys_read_at_start_keep_their_started_values_and_stay_pending() {
        let texts = [
            format!("{RUNNING}leader-election:\n  lease-name: other\n"),
            format!(
                "{RUNNING}leader-election:\n  lease-name: other\nnode-selector: pool=a\npause-configmap: other/cm\nmonitor-interval: 30s\n"
            ),
            format!("{RUNNING}leader-elect: false\nkubernetes:\n  api-host: https://k8s.test\n"),
        ];
        let (sent, pending) = reloads(running(), &texts).await;
        let lease = Some(("kube-system".to_string(), "autohealer".to_string()));
        for s in &sent {
            assert_eq!(s.fleet_lease, lease, "the fleet state is read from the Lease the healer started with");
            assert_eq!(s.node_selector, None);
            assert_eq!(s.pause_configmap, Some(("kube-system".to_string(), "autohealer-config".to_string())));
        }
        assert_eq!(sent[1].monitor_interval, Duration::from_secs(30), "the rest of the new config applies");
        assert_eq!(
            pending,
            ["\"leader-election\"", "\"leader-election\", \"node-selector\", \"pause-configmap\"", "\"leader-election\", \"kubernetes\""],
            "each pending key is reported until the restart"
        );
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
