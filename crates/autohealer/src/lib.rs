//! The autohealer binary's library half: config, wiring, the admin server and the
//! entry points the CLI, the sandbox and the end-to-end tests share.

pub mod admin;
pub mod config;
pub mod kubectl;
pub mod providers;
pub mod reload;
pub mod values;

use anyhow::Context;
use autohealer_cloud::{Action, CloudProvider, Role};
use autohealer_core::{AlwaysLeader, Healer, HealerSettings, LeaderElector, LeaseElector, LeaseSettings, Metrics, Status};
use config::Loaded;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the config's names resolve to: the health checks by `type` and the cloud
/// providers by `cloud-provider`. An embedder adds its own to [`Registries::builtin`]
/// and passes them to `Config::load_*` and to [`run`], whose hot reload reads every new
/// config with them.
#[derive(Clone)]
pub struct Registries {
    pub checks: autohealer_healthcheck::Registry,
    pub providers: autohealer_cloud::Providers,
}

impl Registries {
    /// The checks and the provider crates this binary is built with. This is the one
    /// place a provider crate is listed (besides Cargo.toml): its `cloud-provider:`
    /// name, its block, its validation and its `config-reference` row all come from its
    /// [`autohealer_cloud::Provider`] impl.
    pub fn builtin() -> Self {
        let mut providers = autohealer_cloud::Providers::empty();
        providers.register::<autohealer_openstack::OpenStack>();
        Self { checks: autohealer_healthcheck::Registry::with_builtins(), providers }
    }
}

impl Default for Registries {
    fn default() -> Self {
        Self::builtin()
    }
}

/// Installs ring as rustls's crypto provider, before any TLS client is built.
pub fn install_crypto() {
    autohealer_params::ensure_crypto_provider();
}

/// This replica's name: the configured identity, `$POD_NAME`, or the hostname.
pub fn identity(loaded: &Loaded) -> String {
    loaded
        .config
        .leader_election
        .identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("autohealer-{}", std::process::id()))
}

/// Builds the Kubernetes client the config asks for: `kubernetes.kubeconfig` (or
/// `override_kubeconfig`), else `$KUBECONFIG`/in-cluster, with `kubernetes.api-host`
/// replacing the server URL.
pub async fn kube_client(loaded: &Loaded, override_kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let k = &loaded.config.kubernetes;
    let mut cfg = match override_kubeconfig.or(k.kubeconfig.as_deref()) {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("kubernetes.kubeconfig: cannot read {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("kubernetes.kubeconfig: {} is not usable", path.display()))?
        }
        None => kube::Config::infer().await.context("no kubeconfig given and no in-cluster config found")?,
    };
    if let Some(host) = &k.api_host {
        cfg.cluster_url = host.parse().with_context(|| format!("kubernetes.api-host: not a URL (value: {host:?})"))?;
    }
    // A drain must see a PodDisruptionBudget's 429 itself rather than have the
    // client retry it for minutes.
    cfg.default_retry = false;
    kube::Client::try_from(cfg).context("cannot build the Kubernetes client")
}

/// Everything a running healer needs besides its config.
pub struct Runtime {
    pub client: kube::Client,
    pub provider: Arc<dyn CloudProvider>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub identity: String,
}

/// Runs the healer until `shutdown`: leader election, the admin server, the loop.
/// On shutdown it stops acting and releases the Lease.
/// `registries` are those `loaded` was read with: hot reload reads every new config
/// with them, so a check or provider an embedder registered stays known.
pub async fn run(loaded: Loaded, rt: Runtime, registries: Registries, shutdown: CancellationToken) -> anyhow::Result<()> {
    let c = &loaded.config;
    let admin = admin::serve(c.admin.listen, rt.metrics.clone(), rt.status.clone(), shutdown.clone()).await?;
    tracing::info!(listen = %admin, "admin server up: /healthz /readyz /metrics");
    let leader: Arc<dyn LeaderElector> = if c.leader_elect {
        let le = &c.leader_election;
        LeaseElector::start(
            rt.client.clone(),
            LeaseSettings {
                name: le.lease_name.clone(),
                namespace: le.lease_namespace.clone(),
                identity: rt.identity.clone(),
                duration: le.lease_duration,
                grace: le.renew_grace,
                margin: le.renew_grace / 2,
            },
        )
        .await?
    } else {
        Arc::new(AlwaysLeader::default())
    };
    for (role, checks, enabled) in
        [("master", &loaded.checks.master, c.master_monitor_enabled), ("worker", &loaded.checks.worker, c.worker_monitor_enabled)]
    {
        if enabled && checks.is_empty() {
            tracing::warn!(role, "no health check configured for {role} nodes (healthcheck.{role}): none is judged, none is repaired");
        }
    }
    let settings = healer_settings(&loaded, &rt.identity);
    tracing::info!(identity = %rt.identity, provider = rt.provider.name(), dry_run = c.dry_run, leader_elect = c.leader_elect, "autohealer starting");
    // One Event recorder for the whole process: the healer's and the reloader's Events
    // share its cache, so a repeated Event becomes a series, not a flood.
    let recorder = autohealer_core::actor::Context::recorder(&rt.client, &rt.identity);
    let mut healer = Healer::new(rt.client.clone(), rt.provider, leader.clone(), settings, rt.metrics.clone(), rt.status)
        .with_recorder(recorder.clone());
    if !loaded.notify.sinks.is_empty() {
        let cluster = c.cluster_name.clone().unwrap_or_else(|| "kubernetes".into());
        let dispatcher = autohealer_notify::Dispatcher::start(&loaded.notify, &cluster, rt.metrics).map_err(|e| anyhow::anyhow!("{e}"))?;
        let sinks: Vec<String> = loaded.notify.sinks.iter().map(|s| s.name()).collect();
        tracing::info!(?sinks, "notifications on");
        healer = healer.with_notifier(dispatcher);
    }
    if let Some(cm) = &c.pause_configmap {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(reload::watch(
            rt.client,
            recorder,
            cm.namespace.clone(),
            cm.name.clone(),
            loaded.clone(),
            registries,
            rt.identity.clone(),
            tx,
            shutdown.clone(),
        ));
        healer = healer.with_reload(rx);
    }
    let result = healer.run(shutdown).await;
    leader.release().await;
    tracing::info!("autohealer stopped");
    result
}

/// What the healer loop reads, from the config.
pub fn healer_settings(loaded: &Loaded, identity: &str) -> HealerSettings {
    let c = &loaded.config;
    HealerSettings {
        policy: c.policy(),
        checks: loaded.checks.clone(),
        monitor_interval: c.monitor_interval,
        identity: identity.to_string(),
        probe_concurrency: c.probe_concurrency,
        debounce: Duration::from_millis(50),
        node_selector: c.node_selector.clone(),
        evidence: autohealer_core::actor::EvidenceSettings { namespace: c.evidence.namespace.clone(), keep: c.evidence.keep_per_node },
        drain: autohealer_core::drain::DrainSettings {
            before_reboot: c.drain.before_reboot,
            before_replace: c.drain.before_replace,
            timeout: c.drain.timeout,
            force_delete: c.drain.force_delete_after_timeout,
            retry_interval: std::time::Duration::from_secs(2).min(c.drain.timeout),
            allow_bare_pods: c.drain.allow_bare_pods,
        },
        pause_configmap: c.pause_configmap.as_ref().map(|r| (r.namespace.clone(), r.name.clone())),
        fencing: autohealer_core::actor::FencingSettings {
            enabled: c.fencing.enabled,
            confirm_timeout: c.fencing.confirm_timeout,
            poll: Duration::from_secs(10).min(c.fencing.confirm_timeout),
        },
        fleet_lease: c.leader_elect.then(|| (c.leader_election.lease_namespace.clone(), c.leader_election.lease_name.clone())),
    }
}

/// Everything `autohealer plan` needs: one evaluation, no writes.
pub async fn plan(loaded: Loaded, rt: Runtime) -> anyhow::Result<String> {
    let settings = healer_settings(&loaded, &rt.identity);
    let provider = rt.provider.clone();
    let healer = Healer::new(rt.client, rt.provider, Arc::new(AlwaysLeader::default()), settings, rt.metrics, rt.status);
    let (rows, _) = healer.plan_once().await?;
    let mut out = admin::plan_table(&rows);
    let facts: Vec<String> = provider.describe().into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
    if !facts.is_empty() {
        out.push_str(&format!("\nprovider {}: {}\n", provider.name(), facts.join("; ")));
    }
    for (role, action) in [(Role::Worker, Action::Replace), (Role::Master, Action::Replace)] {
        if let Some(to) = provider.delegated(action, role) {
            out.push_str(&format!("{role} {action}: left to {to}\n"));
        }
    }
    Ok(out)
}
