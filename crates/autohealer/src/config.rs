//! The configuration file: every key of magnum-auto-healer's `config.yaml`, plus the
//! keys this healer adds, read once into typed values. [`Config::default`] is the one
//! table of defaults and [`KEYS`] says what each key means: together they are
//! `autohealer config-reference` and the README's table. A provider's block is the
//! top-level key named after it, read by the provider registered under that name.

use crate::Registries;
use crate::values::{ObjectRef, PerRole, duration, object_ref, share, threshold};
use autohealer_cloud::{Action, Role};
use autohealer_cloud::{ProviderConfig, registry::Site};
use autohealer_core::observe::{Disposition, Route};
use autohealer_core::planner::{Limits, Threshold};
use autohealer_core::{Checks, Policy};
use autohealer_params::{ParamError, from_value, kebab};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A key of the config file and what it means. Its default is [`Config::default`]'s
/// value at the key; `unset` says what a key without one means.
pub struct KeyDoc {
    pub key: &'static str,
    pub unset: Option<&'static str>,
    pub doc: &'static str,
}

impl KeyDoc {
    /// The default as `config-reference` shows it, from the one table of defaults.
    pub fn default_shown(&self, defaults: &serde_json::Value) -> String {
        let value = self.key.split('.').try_fold(defaults, |v, k| v.get(k));
        match (value, self.unset) {
            (Some(serde_json::Value::Null) | None, Some(unset)) => unset.to_string(),
            (Some(v), _) => show(v),
            (None, None) => String::from("(none)"),
        }
    }
}

/// A default value as a user writes it in YAML.
fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        key: "cluster-name",
        unset: Some("(none)"),
        doc: "The Magnum cluster's UUID. Required by `cloud-provider: openstack` unless `openstack.strategy` is `nova`.",
    },
    KeyDoc { key: "cloud-provider", unset: None, doc: "The cloud provider that repairs nodes." },
    KeyDoc {
        key: "dry-run",
        unset: None,
        doc: "Log and emit Events for what would be done; write nothing to nodes and change nothing in the cloud.",
    },
    KeyDoc {
        key: "monitor-interval",
        unset: None,
        doc: "How often probing checks (Endpoint) run. Node changes are judged as they happen, not on this interval.",
    },
    KeyDoc { key: "master-monitor-enabled", unset: None, doc: "Whether master (control-plane) nodes are repaired." },
    KeyDoc { key: "worker-monitor-enabled", unset: None, doc: "Whether worker nodes are repaired." },
    KeyDoc { key: "leader-elect", unset: None, doc: "Elect one active replica through a Lease. Set false only for a single replica." },
    KeyDoc { key: "check-delay-after-add", unset: None, doc: "Nodes younger than this are not repaired (they may still be joining)." },
    KeyDoc {
        key: "rebuild-delay-after-reboot",
        unset: None,
        doc: "How long a reboot has to bring a node back before the next step (replace).",
    },
    KeyDoc {
        key: "replace-timeout",
        unset: None,
        doc: "How long a replace has to bring a healthy node back before it is recorded as failed.",
    },
    KeyDoc {
        key: "repair-steps.master",
        unset: None,
        doc: "The steps of a master repair, in order. Steps the provider does not support are skipped.",
    },
    KeyDoc { key: "repair-steps.worker", unset: None, doc: "The steps of a worker repair, in order." },
    KeyDoc {
        key: "kubernetes.api-host",
        unset: Some("(in-cluster)"),
        doc: "The apiserver URL, overriding the kubeconfig's or the in-cluster one.",
    },
    KeyDoc {
        key: "kubernetes.kubeconfig",
        unset: Some("(in-cluster)"),
        doc: "A kubeconfig file to use instead of the pod's service account.",
    },
    KeyDoc {
        key: "healthcheck.master",
        unset: Some("(none)"),
        doc: "Checks for masters: a list of `{type, params}`. Without the key no master is checked, so none is repaired (as magnum-auto-healer).",
    },
    KeyDoc {
        key: "healthcheck.worker",
        unset: Some("(none)"),
        doc: "Checks for workers, as for masters: without the key no worker is repaired.",
    },
    KeyDoc { key: "leader-election.lease-name", unset: None, doc: "The Lease that elects the active replica." },
    KeyDoc { key: "leader-election.lease-namespace", unset: None, doc: "The Lease's namespace." },
    KeyDoc {
        key: "leader-election.lease-duration",
        unset: None,
        doc: "How long a leader's hold lasts without renewal; a standby takes over after it.",
    },
    KeyDoc {
        key: "leader-election.renew-grace",
        unset: None,
        doc: "The leader renews this long before its hold expires; it also stops acting this long before expiry.",
    },
    KeyDoc { key: "leader-election.identity", unset: Some("$POD_NAME or the hostname"), doc: "This replica's name in the Lease." },
    KeyDoc { key: "admin.listen", unset: None, doc: "Address of /healthz, /readyz and /metrics." },
    KeyDoc {
        key: "max-unhealthy.master",
        unset: None,
        doc: "Above this many unhealthy masters (a count, or a share like `40%`), no new master repair: quorum is never touched.",
    },
    KeyDoc {
        key: "max-unhealthy.worker",
        unset: None,
        doc: "Above this many unhealthy workers, no new worker repair (a partition is not a node fault). A share always allows one node.",
    },
    KeyDoc {
        key: "max-unhealthy.zone",
        unset: None,
        doc: "Above this share of unhealthy nodes of a role in one `topology.kubernetes.io/zone` (and at least two), no new repair in that zone.",
    },
    KeyDoc { key: "storm-cooldown", unset: None, doc: "After a short-circuit clears, how long before new repairs in its scope." },
    KeyDoc { key: "concurrency.master", unset: None, doc: "Master repairs in flight at once." },
    KeyDoc { key: "concurrency.worker", unset: None, doc: "Worker repairs in flight at once." },
    KeyDoc { key: "repairs-per-hour", unset: None, doc: "New repairs started in any hour, all roles together." },
    KeyDoc {
        key: "node-retry.max-failures",
        unset: None,
        doc: "After this many failed repairs of one node within `node-retry.cooldown`, it is left alone (Event `RetryBudgetExhausted`).",
    },
    KeyDoc {
        key: "node-retry.cooldown",
        unset: None,
        doc: "The window of `node-retry.max-failures`; removing the node's `autohealer.dev/repair-history` annotation clears it at once.",
    },
    KeyDoc { key: "node-retry.delay", unset: None, doc: "How long after a failed repair before the next attempt." },
    KeyDoc {
        key: "correlated-hold.enabled",
        unset: None,
        doc: "Hold new repairs of nodes whose failures share a value of an attribute (osImage, kernelVersion, kubeletVersion, containerRuntimeVersion, `node.kubernetes.io/instance-type`, the Magnum node group, `correlated-hold.labels`) far more than the fleet does (gate `correlated`): a rollout is not a node fault.",
    },
    KeyDoc {
        key: "correlated-hold.min-nodes",
        unset: None,
        doc: "At least this many failing nodes must share the value, and at least half of the failing nodes.",
    },
    KeyDoc {
        key: "correlated-hold.window",
        unset: None,
        doc: "A worker counts as failing if a check fails now or a repair of it began within this window (a failure only held by a short-circuit does not count).",
    },
    KeyDoc {
        key: "correlated-hold.max-healthy-share",
        unset: None,
        doc: "The value counts as rare if at most this share of the healthy nodes have it; a value every node has holds nothing.",
    },
    KeyDoc { key: "correlated-hold.labels", unset: None, doc: "More node labels whose values are compared, e.g. a node pool label." },
    KeyDoc {
        key: "repeated-repairs.max",
        unset: None,
        doc: "A node repaired successfully more than this many times within `repeated-repairs.window` is left to a human (gate `repeated_repairs`, critical); 0 turns it off. Removing its `autohealer.dev/repair-history` annotation clears it.",
    },
    KeyDoc { key: "repeated-repairs.window", unset: None, doc: "The window of `repeated-repairs.max`." },
    KeyDoc {
        key: "workload-check.worker",
        unset: None,
        doc: "Workload-verified recovery for workers: a repaired node counts as repaired only if, once healthy for `workload-check.window`, no pod on it crash-loops (`CrashLoopBackOff`) while a pod of the same owner elsewhere runs; otherwise the step is recorded as failed and the next one follows.",
    },
    KeyDoc { key: "workload-check.master", unset: None, doc: "The same for masters." },
    KeyDoc {
        key: "workload-check.window",
        unset: None,
        doc: "How long a repaired node is healthy before its pods are looked at (they need time to start, and to crash again).",
    },
    KeyDoc {
        key: "approval.master",
        unset: None,
        doc: "Master repair steps an operator approves first (e.g. `[replace]`): the healer proposes (Event `RepairProposed` with the command) and acts once the node is annotated `autohealer.dev/approve=<proposal id>` (`kubectl autohealer approve NODE`); `autohealer.dev/deny=<id>` refuses. Approval bypasses no other gate.",
    },
    KeyDoc { key: "approval.worker", unset: None, doc: "Worker repair steps an operator approves first." },
    KeyDoc {
        key: "approval.expiry",
        unset: None,
        doc: "How long a proposal waits for its answer; then it expires and a new one (a new id) is made.",
    },
    KeyDoc {
        key: "slow-start.enabled",
        unset: None,
        doc: "Per domain (role, zone, Magnum node group) at most one repair in flight to begin with, doubled by each repair proven healthy and back to one after a failed one, capped by `concurrency.*` (gate `slow_start`): a detector gone wrong repairs one node, not five. Slower on a real mass failure.",
    },
    KeyDoc {
        key: "slow-start.memory",
        unset: None,
        doc: "The finished repairs the width is computed from (from the nodes' histories); after this long without repairs a domain starts at one again.",
    },
    KeyDoc {
        key: "recovery-stable-window",
        unset: None,
        doc: "How long a repaired node must stay healthy (and, after a reboot, with a new bootID) before the repair counts as done.",
    },
    KeyDoc {
        key: "apiserver-outage-grace",
        unset: None,
        doc: "After the healer could not watch the apiserver (nor, through it, the kubelets report), how long nodes get to report again before a deadline that ran meanwhile is acted on, as the node-lifecycle controller does after a disruption.",
    },
    KeyDoc {
        key: "drain.before-replace",
        unset: None,
        doc: "Drain a worker (Eviction API, PodDisruptionBudgets honoured) before replacing it.",
    },
    KeyDoc { key: "drain.before-reboot", unset: None, doc: "Drain a worker before rebooting it too." },
    KeyDoc {
        key: "drain.timeout",
        unset: None,
        doc: "How long evictions refused by a PodDisruptionBudget are retried, and evicted pods waited for (not on an unreachable node).",
    },
    KeyDoc {
        key: "drain.force-delete-after-timeout",
        unset: None,
        doc: "After the drain timeout, delete the pods that could not be evicted; otherwise the step goes on and the `Drained` Event names them. On an unreachable node, pods are force-deleted only once the cloud confirms the machine is down.",
    },
    KeyDoc {
        key: "drain.allow-bare-pods",
        unset: None,
        doc: "Evict pods no controller owns (nothing recreates them). Off, as with `kubectl drain` without `--force`, such a pod blocks the drain and the step fails with an Event naming it.",
    },
    KeyDoc {
        key: "pause-configmap",
        unset: None,
        doc: "The ConfigMap whose annotation `autohealer.dev/paused: \"true\"` pauses new repairs on the fly; empty to disable.",
    },
    KeyDoc {
        key: "evidence.namespace",
        unset: None,
        doc: "Where the console output captured before a destructive step is kept, as ConfigMaps named after the node and the time.",
    },
    KeyDoc { key: "evidence.keep-per-node", unset: None, doc: "How many evidence ConfigMaps are kept per node (0: keep none)." },
    KeyDoc {
        key: "node-selector",
        unset: Some("(all nodes)"),
        doc: "A label selector (`key=value,...`) limiting the nodes the healer watches and repairs.",
    },
    KeyDoc { key: "probe-concurrency", unset: None, doc: "How many probes (Endpoint checks) run at once." },
    KeyDoc {
        key: "fencing.enabled",
        unset: None,
        doc: "Once the cloud confirms a node's machine is down (stopped or gone) during a replace, taint it `node.kubernetes.io/out-of-service=nodeshutdown:NoExecute` so Kubernetes deletes its pods and detaches their volumes; the taint is lifted when the node returns.",
    },
    KeyDoc {
        key: "fencing.confirm-timeout",
        unset: None,
        doc: "How long after a replace began the cloud is asked whether the machine is down; never confirmed, never tainted.",
    },
    KeyDoc {
        key: "notifications",
        unset: Some("(none)"),
        doc: "Where to tell people: `sinks` of type slack, webhook, pagerduty, email, routed by `min-severity` and `events`; see README, Notifications.",
    },
];

/// Environment variables with the `AUTOHEALER_` prefix that are not config keys.
const NOT_CONFIG_VARS: &[&str] = &["AUTOHEALER_CONFIG", "AUTOHEALER_E2E_KUBECONFIG"];

/// `AUTOHEALER_*` variables that override top-level keys of the config file, so a
/// Secret can supply what must not live in the ConfigMap. Values are YAML (a map is
/// merged into the file's map); only names are ever shown.
#[derive(Clone, Default)]
pub struct EnvOverrides(Vec<(String, String)>);

impl std::fmt::Debug for EnvOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(k, _)| k)).finish()
    }
}

impl EnvOverrides {
    /// The process's `AUTOHEALER_*` variables.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut v: Vec<(String, String)> =
            vars.into_iter().filter(|(k, _)| k.starts_with("AUTOHEALER_") && !NOT_CONFIG_VARS.contains(&k.as_str())).collect();
        v.sort();
        Self(v)
    }

    /// The config key a variable overrides: `AUTOHEALER_DRY_RUN` is `dry-run`.
    pub fn key_of(var: &str) -> String {
        var.trim_start_matches("AUTOHEALER_").to_ascii_lowercase().replace('_', "-")
    }

    /// Applies the overrides to the file's keys. Variables that name no key are ignored,
    /// not refused: Kubernetes itself sets some (the service links of a Service named
    /// `autohealer`, e.g. `AUTOHEALER_SERVICE_HOST`), so they cannot stop the healer.
    fn apply(&self, value: &mut serde_json::Value, registries: &Registries) -> Applied {
        let top = top_level_keys(registries);
        let mut applied = Vec::new();
        let mut ignored = Vec::new();
        let mut from_env = Vec::new();
        for (var, raw) in &self.0 {
            let key = Self::key_of(var);
            if !top.contains(&key.as_str()) {
                let near: Vec<String> = top.iter().map(|k| format!("AUTOHEALER_{}", k.to_ascii_uppercase().replace('-', "_"))).collect();
                let near: Vec<&str> = near.iter().map(String::as_str).collect();
                ignored.push(format!("${var} names no config key{}", autohealer_params::did_you_mean(var, &near)));
                continue;
            }
            let parsed: serde_json::Value = serde_saphyr::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.clone()));
            let parsed = if parsed.is_null() { serde_json::Value::String(raw.clone()) } else { parsed };
            let slot = &mut value[key.as_str()];
            match (slot.as_object_mut(), parsed) {
                (Some(map), serde_json::Value::Object(over)) => {
                    from_env.extend(over.keys().map(|k| (format!("{key}.{}", kebab(k)), var.clone())));
                    map.extend(over);
                }
                (_, v) => {
                    from_env.push((key.clone(), var.clone()));
                    *slot = v;
                }
            }
            applied.push((var.clone(), key));
        }
        Applied { applied, ignored, from_env }
    }
}

/// Every documented key path: the binary's own, and each registered provider's block.
pub fn key_paths(registries: &Registries) -> Vec<&'static str> {
    KEYS.iter().map(|k| k.key).chain(registries.providers.names()).collect()
}

/// The binary's own top-level keys.
fn own_top_level_keys() -> Vec<&'static str> {
    let mut top: Vec<&'static str> = KEYS.iter().map(|k| k.key.split('.').next().unwrap_or_default()).collect();
    top.dedup();
    top
}

/// Every top-level key: the binary's own, and each registered provider's block.
fn top_level_keys(registries: &Registries) -> Vec<&'static str> {
    let mut top = own_top_level_keys();
    top.extend(registries.providers.names());
    top
}

/// A provider's block is the top-level key named after it, taken out of the file before
/// the binary's keys are read: a provider named like one of those keys would silently
/// take that key's block. Refused at every load, so an embedder's first run says so.
fn check_provider_names(registries: &Registries) -> Result<(), ConfigError> {
    let own = own_top_level_keys();
    match registries.providers.names().find(|n| own.contains(n)) {
        Some(name) => Err(ConfigError {
            path: name.to_string(),
            message: format!(
                "the cloud provider {name:?} is registered under the name of one of the config's own keys, so its block could not be told from that key; give the provider another NAME"
            ),
        }),
        None => Ok(()),
    }
}

/// What [`EnvOverrides::apply`] did.
struct Applied {
    /// (variable, key) of each override applied.
    applied: Vec<(String, String)>,
    /// Why each ignored variable was ignored, with the nearest key's variable.
    ignored: Vec<String>,
    /// (key path, variable) of each value that now comes from a variable (a merged
    /// map's own keys, or the whole key), so an error there names the variable and
    /// never shows the value: a Secret supplies these.
    from_env: Vec<(String, String)>,
}

/// The whole config, typed. [`Config::default`] is the one table of defaults: a
/// config file is read over it (a key it leaves out keeps its default), and
/// `config-reference` shows it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub cluster_name: Option<String>,
    pub cloud_provider: String,
    pub dry_run: bool,
    #[serde(with = "duration")]
    pub monitor_interval: Duration,
    pub master_monitor_enabled: bool,
    pub worker_monitor_enabled: bool,
    pub leader_elect: bool,
    #[serde(with = "duration")]
    pub check_delay_after_add: Duration,
    #[serde(with = "duration")]
    pub rebuild_delay_after_reboot: Duration,
    #[serde(with = "duration")]
    pub replace_timeout: Duration,
    pub repair_steps: PerRole<Vec<Action>>,
    pub kubernetes: KubernetesConfig,
    /// Without a role's key no node of that role is checked, so none is repaired: a
    /// config written for magnum-auto-healer that checks workers only leaves masters
    /// alone here too.
    pub healthcheck: PerRole<Option<Vec<CheckSpec>>>,
    pub leader_election: LeaderElection,
    pub admin: Admin,
    pub probe_concurrency: usize,
    pub node_selector: Option<String>,
    pub evidence: Evidence,
    pub max_unhealthy: MaxUnhealthy,
    #[serde(with = "duration")]
    pub storm_cooldown: Duration,
    pub concurrency: PerRole<usize>,
    pub repairs_per_hour: usize,
    pub node_retry: NodeRetry,
    pub correlated_hold: CorrelatedHoldConfig,
    pub repeated_repairs: RepeatedRepairsConfig,
    pub slow_start: SlowStartConfig,
    pub approval: ApprovalConfig,
    pub workload_check: WorkloadCheckConfig,
    #[serde(with = "duration")]
    pub recovery_stable_window: Duration,
    #[serde(with = "duration")]
    pub apiserver_outage_grace: Duration,
    /// Off when empty.
    #[serde(with = "object_ref")]
    pub pause_configmap: Option<ObjectRef>,
    pub drain: Drain,
    pub fencing: Fencing,
    /// Parsed and validated by `autohealer-notify`, which names its key paths.
    pub notifications: Option<serde_json::Value>,
}

impl Default for Config {
    /// The planner's own defaults are core's [`Policy::default`], which its tests and
    /// the lifecycle simulation run with; the keys that set them take them from there.
    fn default() -> Self {
        let p = Policy::default();
        let l = &p.limits;
        let secs = Duration::from_secs;
        Config {
            cluster_name: None,
            cloud_provider: "openstack".into(),
            dry_run: p.dry_run,
            monitor_interval: secs(60),
            master_monitor_enabled: p.master_enabled,
            worker_monitor_enabled: p.worker_enabled,
            leader_elect: true,
            check_delay_after_add: p.check_delay_after_add,
            rebuild_delay_after_reboot: p.rebuild_delay_after_reboot,
            replace_timeout: p.replace_timeout,
            repair_steps: PerRole { master: p.master_steps.clone(), worker: p.worker_steps.clone() },
            kubernetes: KubernetesConfig { api_host: None, kubeconfig: None },
            healthcheck: PerRole { master: None, worker: None },
            leader_election: LeaderElection {
                lease_name: "autohealer".into(),
                lease_namespace: "kube-system".into(),
                lease_duration: secs(15),
                renew_grace: secs(5),
                identity: None,
            },
            admin: Admin { listen: std::net::SocketAddr::from(([0, 0, 0, 0], 9102)) },
            probe_concurrency: 32,
            node_selector: None,
            evidence: Evidence { namespace: "kube-system".into(), keep_per_node: 3 },
            max_unhealthy: MaxUnhealthy { master: l.master_max_unhealthy, worker: l.worker_max_unhealthy, zone: l.zone_max_unhealthy },
            storm_cooldown: l.storm_cooldown,
            concurrency: PerRole { master: l.master_concurrency, worker: l.worker_concurrency },
            repairs_per_hour: l.repairs_per_hour,
            node_retry: NodeRetry { max_failures: l.node_max_failures, cooldown: l.node_cooldown, delay: l.retry_delay },
            correlated_hold: CorrelatedHoldConfig {
                enabled: p.correlated.enabled,
                min_nodes: p.correlated.min_nodes,
                window: p.correlated.window,
                max_healthy_share: p.correlated.max_healthy_share,
                labels: Vec::new(),
            },
            repeated_repairs: RepeatedRepairsConfig { max: p.repeated.max, window: p.repeated.window },
            slow_start: SlowStartConfig { enabled: p.slow_start.is_some(), memory: p.slow_start.unwrap_or(secs(24 * 3600)) },
            approval: ApprovalConfig { master: p.approval.master.clone(), worker: p.approval.worker.clone(), expiry: p.approval.expiry },
            workload_check: WorkloadCheckConfig { master: p.workloads.master, worker: p.workloads.worker, window: p.workloads.window },
            recovery_stable_window: l.stable_window,
            apiserver_outage_grace: p.blind_grace,
            pause_configmap: Some(ObjectRef { namespace: "kube-system".into(), name: "autohealer-config".into() }),
            drain: Drain {
                before_replace: true,
                before_reboot: false,
                timeout: secs(300),
                force_delete_after_timeout: false,
                allow_bare_pods: false,
            },
            fencing: Fencing { enabled: true, confirm_timeout: secs(300) },
            notifications: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CorrelatedHoldConfig {
    pub enabled: bool,
    pub min_nodes: usize,
    #[serde(with = "duration")]
    pub window: Duration,
    /// A fraction, written as a percentage.
    #[serde(with = "share")]
    pub max_healthy_share: f64,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkloadCheckConfig {
    pub master: bool,
    pub worker: bool,
    #[serde(with = "duration")]
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ApprovalConfig {
    pub master: Vec<Action>,
    pub worker: Vec<Action>,
    #[serde(with = "duration")]
    pub expiry: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SlowStartConfig {
    pub enabled: bool,
    #[serde(with = "duration")]
    pub memory: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RepeatedRepairsConfig {
    pub max: usize,
    #[serde(with = "duration")]
    pub window: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Fencing {
    pub enabled: bool,
    #[serde(with = "duration")]
    pub confirm_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Drain {
    pub before_replace: bool,
    pub before_reboot: bool,
    #[serde(with = "duration")]
    pub timeout: Duration,
    pub force_delete_after_timeout: bool,
    pub allow_bare_pods: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MaxUnhealthy {
    #[serde(with = "threshold")]
    pub master: Threshold,
    #[serde(with = "threshold")]
    pub worker: Threshold,
    #[serde(with = "threshold")]
    pub zone: Threshold,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeRetry {
    pub max_failures: usize,
    #[serde(with = "duration")]
    pub cooldown: Duration,
    #[serde(with = "duration")]
    pub delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Evidence {
    pub namespace: String,
    pub keep_per_node: usize,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesConfig {
    pub api_host: Option<String>,
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckSpec {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub params: serde_json::Value,
    #[serde(default)]
    pub action: CheckAction,
    /// This check's own repair steps, instead of the role's `repair-steps`.
    #[serde(default)]
    pub steps: Option<Vec<Action>>,
    /// Rules on the finding's reason (the condition's reason and message, as the check
    /// reports it), first match wins; a finding no rule matches follows `action`/`steps`.
    #[serde(default)]
    pub reasons: Vec<ReasonRule>,
}

/// What a check's finding leads to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckAction {
    /// The node is repaired (reboot, then replace).
    #[default]
    Repair,
    /// An Event and a notification; never a repair (e.g. MemoryPressure).
    NotifyOnly,
    /// Nothing: shown by `plan` only.
    None,
}

/// A rule on a finding's reason: a regular expression, and what a match leads to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReasonRule {
    #[serde(rename = "match")]
    pub pattern: String,
    #[serde(default)]
    pub action: CheckAction,
    #[serde(default)]
    pub steps: Option<Vec<Action>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LeaderElection {
    pub lease_name: String,
    pub lease_namespace: String,
    #[serde(with = "duration")]
    pub lease_duration: Duration,
    #[serde(with = "duration")]
    pub renew_grace: Duration,
    pub identity: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Admin {
    pub listen: std::net::SocketAddr,
}

/// [`Config::default`] as the file's values are read over, computed once.
static DEFAULTS: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(|| {
    // Cannot fail: every field is a plain value, a map with string keys or a list.
    serde_json::to_value(Config::default()).expect("the default config serializes")
});

/// `value` read over `defaults`: a map's keys replace or extend the default map's,
/// recursively; any other value replaces the default whole (a list is not merged).
/// A section written with nothing after it (`kubernetes:` with its keys commented
/// out) keeps its defaults, as magnum-auto-healer's Go YAML does.
fn over(defaults: serde_json::Value, value: &serde_json::Value) -> serde_json::Value {
    match (defaults, value) {
        (serde_json::Value::Object(mut base), serde_json::Value::Object(given)) => {
            for (k, v) in given {
                let merged = match base.remove(k) {
                    Some(d @ serde_json::Value::Object(_)) if v.is_null() => d,
                    Some(d) => over(d, v),
                    None => v.clone(),
                };
                base.insert(k.clone(), merged);
            }
            serde_json::Value::Object(base)
        }
        (_, v) => v.clone(),
    }
}

/// A config error: the key path, and what is wrong with the value there.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl From<ParamError> for ConfigError {
    fn from(e: ParamError) -> Self {
        Self { path: e.path, message: e.message }
    }
}

/// Keys whose values are credentials wherever they appear: the OpenStack password and
/// application-credential secret, the Endpoint check's `token`, the `url` of the
/// Webhook check and of notification sinks (a webhook URL is its own credential),
/// PagerDuty's routing key, and any `*-password`, `*-token`, `*-secret` or `*-key`.
/// A provider adds its own with [`autohealer_cloud::Provider::SECRET_KEYS`].
fn is_secret_key(key: &str) -> bool {
    const NAMES: &[&str] = &["password", "token", "secret", "url", "routing-key", "api-key"];
    NAMES.contains(&key) || ["-password", "-token", "-secret", "-key"].iter().any(|s| key.ends_with(s))
}

/// The secret keys each provider declares for its block.
type ProviderSecrets = Vec<(&'static str, &'static [&'static str])>;

/// Whether the value at `path` (whose last key is `key`) is a secret: by its name, or
/// as a secret key its provider declared within its block.
fn is_secret(path: &str, key: &str, providers: &ProviderSecrets) -> bool {
    is_secret_key(key)
        || providers
            .iter()
            .any(|(name, keys)| path.strip_prefix(name).is_some_and(|rest| rest.starts_with(['.', '['])) && keys.contains(&key))
}

/// A value's YAML kind, to say what was found without saying what it was.
fn kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// The value at an error's key path (`a.b[0].c`, keys as the parsers spell them).
fn at<'a>(root: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let mut cur = root;
    for seg in path.split('.') {
        let (name, indices) = seg.split_once('[').map_or((seg, ""), |(n, rest)| (n, rest));
        if !name.is_empty() {
            cur = cur.as_object()?.iter().find(|(k, _)| kebab(k) == name).map(|(_, v)| v)?;
        }
        for idx in indices.split('[').filter(|i| !i.is_empty()) {
            cur = cur.get(idx.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(cur)
}

/// A YAML syntax error without its source snippet, which quotes the lines around the
/// error, secrets included; the position is enough to find it.
fn yaml_error(e: &serde_saphyr::Error, text: &str, providers: &ProviderSecrets) -> String {
    let message = e.without_snippet().to_string();
    // Without a parsed tree there is no path: a key any provider declares is hidden.
    let declared = |k: &str| providers.iter().any(|(_, keys)| keys.contains(&k));
    let mut values = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let line = line.strip_prefix("- ").unwrap_or(line);
        if let Some((k, v)) = line.split_once(':')
            && (is_secret_key(&kebab(k.trim())) || declared(&kebab(k.trim())))
        {
            let v = v.trim().trim_matches(['"', '\'']).trim();
            if !v.is_empty() {
                values.push(Scalar::Text(v.to_string()));
            }
        }
    }
    scrub(&message, &values)
}

/// A hidden scalar, as the parsers would print it.
enum Scalar {
    Text(String),
    Number(String),
}

/// `message` with every rendering of `values` replaced by `<hidden>`: quoted as JSON,
/// Rust and serde quote strings, and bare when long enough not to match by chance.
/// (Serde's backticks quote key names and numbers, not strings.)
fn scrub(message: &str, values: &[Scalar]) -> String {
    let mut out = message.to_string();
    for v in values {
        match v {
            Scalar::Text(t) => {
                for quoted in [serde_json::to_string(t).unwrap_or_default(), format!("{t:?}")] {
                    out = out.replace(&quoted, "\"<hidden>\"");
                }
                if t.chars().count() >= 6 {
                    out = out.replace(t.as_str(), "<hidden>");
                }
            }
            // Numbers only where no digit or point touches them, so "line 12" stays.
            Scalar::Number(n) if n.len() >= 4 => {
                let mut kept = String::with_capacity(out.len());
                let mut rest = out.as_str();
                while let Some(i) = rest.find(n.as_str()) {
                    let before = rest[..i].chars().next_back();
                    let after = rest[i + n.len()..].chars().next();
                    let touches = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit() || c == '.');
                    kept.push_str(&rest[..i]);
                    kept.push_str(if touches(before) || touches(after) { n.as_str() } else { "<hidden>" });
                    rest = &rest[i + n.len()..];
                }
                kept.push_str(rest);
                out = kept;
            }
            Scalar::Number(_) => {}
        }
    }
    out
}

/// What a config error may not show, found in the config before it is parsed: the
/// values of secret keys and of `AUTOHEALER_*` overrides. It is applied to every error
/// in one place because the parsers below (serde, check params, notification sinks)
/// quote values, and config errors reach logs, `autohealer validate` and the
/// `ConfigRejected` Event of a hot reload.
struct Hidden {
    root: serde_json::Value,
    /// Key paths whose values are hidden, and why, as the message says it.
    paths: Vec<(String, String)>,
    /// The `AUTOHEALER_*` variable behind a key path.
    from_env: Vec<(String, String)>,
    /// Every hidden scalar, to scrub from errors about the maps and lists above them.
    values: Vec<Scalar>,
    providers: ProviderSecrets,
}

impl Hidden {
    fn find(root: serde_json::Value, from_env: Vec<(String, String)>, providers: ProviderSecrets) -> Self {
        let mut h = Hidden { root: serde_json::Value::Null, paths: Vec::new(), from_env, values: Vec::new(), providers };
        h.walk(&root, "", None);
        h.root = root;
        h
    }

    fn walk(&mut self, v: &serde_json::Value, path: &str, why: Option<&str>) {
        use serde_json::Value;
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let key = kebab(k);
                    let p = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    let own = match self.from_env.iter().find(|(at, _)| *at == p) {
                        Some((_, var)) => Some(format!("it comes from ${var}")),
                        None if is_secret(&p, &key, &self.providers) => Some("it is a secret".to_string()),
                        None => None,
                    };
                    match (why, own) {
                        (Some(w), _) => self.walk(child, &p, Some(w)),
                        (None, Some(own)) => {
                            self.paths.push((p.clone(), own.clone()));
                            self.walk(child, &p, Some(&own));
                        }
                        (None, None) => self.walk(child, &p, None),
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    self.walk(child, &format!("{path}[{i}]"), why);
                }
            }
            Value::String(s) if why.is_some() && !s.is_empty() => self.values.push(Scalar::Text(s.clone())),
            Value::Number(n) if why.is_some() => self.values.push(Scalar::Number(n.to_string())),
            _ => {}
        }
    }

    fn redact(&self, e: ConfigError) -> ConfigError {
        let below = |a: &str, b: &str| a.is_empty() || b == a || b.starts_with(&format!("{a}.")) || b.starts_with(&format!("{a}["));
        let under = |p: &str| below(p, &e.path);
        let mut message = match self.paths.iter().find(|(p, _)| under(p)) {
            Some((_, why)) => self.reword(&e, why),
            None => e.message.clone(),
        };
        // Only an error at a hidden key or above one can quote its value; elsewhere a
        // scrub would only garble messages that happen to contain a secret's text.
        if self.paths.iter().any(|(p, _)| under(p) || below(&e.path, p)) {
            message = scrub(&message, &self.values);
        }
        if let Some((_, var)) = self.from_env.iter().find(|(p, _)| under(p))
            && !message.contains(var.as_str())
        {
            message.push_str(&format!(" (set by ${var})"));
        }
        ConfigError { path: e.path, message }
    }

    /// The message of an error at a hidden key: what was expected and what kind of
    /// value was found, never the value.
    fn reword(&self, e: &ConfigError, why: &str) -> String {
        let msg = e.message.as_str();
        // These quote key names only; the scrub takes care of any value after them.
        let about_keys = ["unknown field", "unknown key", "missing field", "duplicate field"];
        if msg.contains("value not shown") || about_keys.iter().any(|k| msg.starts_with(k)) {
            return msg.to_string();
        }
        let got = at(&self.root, &e.path).map_or("another value", kind);
        let serde = msg.strip_prefix("invalid type: ").or_else(|| msg.strip_prefix("invalid value: "));
        if let Some((_, expected)) = serde.and_then(|m| m.split_once(", expected ")) {
            let expected = expected.split(" (value: ").next().unwrap_or_default();
            let expected = if expected.starts_with("struct ") { "a map of keys" } else { expected };
            let safe = expected.len() <= 200 && !expected.contains(['"', '\'']);
            let quote = expected == "a string" && matches!(got, "an integer" | "a number" | "a boolean");
            let hint = if quote { "; put it in quotes" } else { "" };
            return if safe {
                format!("expected {expected}, got {got} (value not shown: {why}){hint}")
            } else {
                format!("wrong type, got {got} (value not shown: {why})")
            };
        }
        // A check's or sink's own message: keep what it says up to where it quotes.
        match msg.find(" (value").into_iter().chain(msg.find(['"', '`'])).min() {
            Some(i) => {
                let head = msg[..i].trim_end_matches([' ', ':', ',']);
                format!("{} (value not shown: {why})", if head.is_empty() { "invalid" } else { head })
            }
            None => msg.to_string(),
        }
    }
}

/// A loaded, validated config with its checks built.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub checks: Checks,
    /// The block of the provider `cloud-provider` names, parsed and validated by it.
    pub provider: ProviderConfig,
    pub notify: autohealer_notify::NotifyConfig,
    /// The environment overrides in force, and the keys they replaced.
    pub env: EnvOverrides,
    pub overridden: Vec<(String, String)>,
    /// `AUTOHEALER_*` variables that name no key, and the nearest one.
    pub ignored_env: Vec<String>,
    /// Set by `run --dry-run` ([`Loaded::force_dry_run`]); hot reload keeps it.
    pub forced_dry_run: bool,
}

impl Loaded {
    /// `run --dry-run`: dry-run now and in every config a hot reload reads after, so a
    /// file's `dry-run: false` never starts the repairs the operator asked only to see.
    pub fn force_dry_run(&mut self) {
        self.forced_dry_run = true;
        self.config.dry_run = true;
    }
}

impl Config {
    pub fn load_file(path: &Path, registries: &Registries) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError { path: path.display().to_string(), message: format!("cannot read the config file: {e}") })?;
        Self::load_str_with(&text, registries, &EnvOverrides::from_env())
    }

    /// Loads a config file's text alone, without environment overrides.
    pub fn load_str(text: &str, registries: &Registries) -> Result<Loaded, ConfigError> {
        Self::load_str_with(text, registries, &EnvOverrides::default())
    }

    pub fn load_str_with(text: &str, registries: &Registries, env: &EnvOverrides) -> Result<Loaded, ConfigError> {
        check_provider_names(registries)?;
        let secrets: ProviderSecrets = registries.providers.secret_keys().collect();
        let value: serde_json::Value = serde_saphyr::from_str(text)
            .map_err(|e| ConfigError { path: "(file)".into(), message: format!("not valid YAML: {}", yaml_error(&e, text, &secrets)) })?;
        let mut value = if value.is_null() { serde_json::json!({}) } else { value };
        if !value.is_object() {
            return Err(ConfigError { path: "(file)".into(), message: format!("the config must be a map of keys, got {}", kind(&value)) });
        }
        let Applied { applied: overridden, ignored: ignored_env, from_env } = env.apply(&mut value, registries);
        let hidden = Hidden::find(value.clone(), from_env, secrets);
        let (config, checks, provider, notify) = Self::load_value(value, registries).map_err(|e| hidden.redact(e))?;
        Ok(Loaded { config, checks, provider, notify, env: env.clone(), overridden, ignored_env, forced_dry_run: false })
    }

    fn load_value(
        mut value: serde_json::Value,
        registries: &Registries,
    ) -> Result<(Config, Checks, ProviderConfig, autohealer_notify::NotifyConfig), ConfigError> {
        // Each provider's block is its own top-level key, read by the provider alone.
        let mut blocks = std::collections::BTreeMap::new();
        if let Some(map) = value.as_object_mut() {
            let top = top_level_keys(registries);
            if let Some(k) = map.keys().find(|k| !top.contains(&k.as_str())) {
                return Err(ConfigError {
                    path: k.clone(),
                    message: format!("unknown key {k:?}{}; valid keys: {}", autohealer_params::did_you_mean(k, &top), top.join(", ")),
                });
            }
            for name in registries.providers.names() {
                if let Some(block) = map.remove(name) {
                    blocks.insert(name, block);
                }
            }
        }
        let config: Config = from_value(&over(DEFAULTS.clone(), &value), "")?;
        let checks = config.validate(&registries.checks)?;
        let site = Site { cluster_name: config.cluster_name.clone() };
        let provider = registries.providers.parse(&config.cloud_provider, blocks.get(config.cloud_provider.as_str()), &site)?;
        let notify = match &config.notifications {
            Some(v) => {
                autohealer_notify::NotifyConfig::parse(v, "notifications").map_err(|e| ConfigError { path: e.path, message: e.message })?
            }
            None => Default::default(),
        };
        Ok((config, checks, provider, notify))
    }

    fn validate(&self, registry: &autohealer_healthcheck::Registry) -> Result<Checks, ConfigError> {
        let err = |path: &str, message: String| ConfigError { path: path.into(), message };
        if self.monitor_interval.is_zero() {
            return Err(err("monitor-interval", "must be more than 0s".into()));
        }
        if let Some(sel) = &self.node_selector
            && (sel.trim().is_empty() || sel.split(',').any(|r| r.trim().is_empty()))
        {
            return Err(err("node-selector", format!("not a label selector (value: {sel:?})")));
        }
        if self.concurrency.iter().any(|(_, n)| *n == 0) {
            return Err(err(
                "concurrency",
                "must be at least 1 per role (to stop repairs, pause them or disable the role's monitoring)".into(),
            ));
        }
        if let Some(i) = self.correlated_hold.labels.iter().position(|l| l.trim().is_empty()) {
            return Err(err(&format!("correlated-hold.labels[{i}]"), "must be a label key".into()));
        }
        if self.repeated_repairs.max >= autohealer_core::ledger::HISTORY_LEN {
            return Err(err(
                "repeated-repairs.max",
                format!(
                    "must be below {}: a node's history keeps its last {} repairs (value: {})",
                    autohealer_core::ledger::HISTORY_LEN,
                    autohealer_core::ledger::HISTORY_LEN,
                    self.repeated_repairs.max
                ),
            ));
        }
        if self.repeated_repairs.max > 0 && self.repeated_repairs.window.is_zero() {
            return Err(err(
                "repeated-repairs.window",
                "must be longer than 0s (to turn the guard off, set repeated-repairs.max: 0)".into(),
            ));
        }
        if self.approval.expiry < Duration::from_secs(60) {
            return Err(err(
                "approval.expiry",
                format!(
                    "must be at least 1m: an operator needs time to answer (value: {})",
                    humantime::format_duration(self.approval.expiry)
                ),
            ));
        }
        if self.slow_start.enabled && self.slow_start.memory.is_zero() {
            return Err(err("slow-start.memory", "must be longer than 0s: with no memory the width never grows".into()));
        }
        if self.correlated_hold.enabled && self.correlated_hold.min_nodes < 2 {
            return Err(err(
                "correlated-hold.min-nodes",
                format!("must be at least 2: one failing node is no pattern (value: {})", self.correlated_hold.min_nodes),
            ));
        }
        if self.probe_concurrency == 0 {
            return Err(err("probe-concurrency", "must be at least 1 (value: 0)".into()));
        }
        let le = &self.leader_election;
        if le.renew_grace >= le.lease_duration {
            return Err(err(
                "leader-election.renew-grace",
                format!(
                    "must be shorter than leader-election.lease-duration ({} >= {})",
                    humantime::format_duration(le.renew_grace),
                    humantime::format_duration(le.lease_duration)
                ),
            ));
        }
        if le.lease_duration.as_secs() < 2 {
            return Err(err(
                "leader-election.lease-duration",
                format!("must be at least 2s (value: {})", humantime::format_duration(le.lease_duration)),
            ));
        }
        for (role, steps) in self.repair_steps.iter() {
            let mut seen = std::collections::BTreeSet::new();
            if let Some(dup) = steps.iter().find(|s| !seen.insert(**s)) {
                return Err(err(&format!("repair-steps.{role}"), format!("{dup} is listed twice")));
            }
        }
        let mut routes = std::collections::BTreeMap::new();
        for (role, specs) in self.healthcheck.iter() {
            for (i, spec) in specs.iter().flatten().enumerate() {
                if spec.steps.is_none() && spec.reasons.is_empty() && spec.action != CheckAction::None {
                    continue;
                }
                let path = format!("healthcheck.{role}[{i}]");
                let disposition = |action: CheckAction, steps: &Option<Vec<Action>>, at: &str| -> Result<Disposition, ConfigError> {
                    if let Some(s) = steps {
                        let mut seen = std::collections::BTreeSet::new();
                        if s.is_empty() {
                            return Err(err(&format!("{at}.steps"), "must name at least one step (or use action: none)".into()));
                        }
                        if let Some(dup) = s.iter().find(|a| !seen.insert(**a)) {
                            return Err(err(&format!("{at}.steps"), format!("{dup} is listed twice")));
                        }
                        if action != CheckAction::Repair {
                            return Err(err(&format!("{at}.steps"), "steps apply to action: repair only".into()));
                        }
                    }
                    Ok(match action {
                        CheckAction::Repair => Disposition::Repair(steps.clone()),
                        CheckAction::NotifyOnly => Disposition::NotifyOnly,
                        CheckAction::None => Disposition::Ignore,
                    })
                };
                let fallback = disposition(spec.action, &spec.steps, &path)?;
                let mut rules = Vec::new();
                for (j, r) in spec.reasons.iter().enumerate() {
                    let at = format!("{path}.reasons[{j}]");
                    let re =
                        regex::Regex::new(&r.pattern).map_err(|e| err(&format!("{at}.match"), format!("not a regular expression: {e}")))?;
                    rules.push((re, disposition(r.action, &r.steps, &at)?));
                }
                let route = Route(Arc::new(move |reason: &str| {
                    rules.iter().find(|(re, _)| re.is_match(reason)).map_or_else(|| fallback.clone(), |(_, d)| d.clone())
                }));
                routes.insert((role, i), route);
            }
        }
        let notify_only = self
            .healthcheck
            .iter()
            .flat_map(|(role, specs)| specs.iter().flatten().enumerate().map(move |(i, s)| (role, i, s)))
            .filter(|(_, _, s)| s.action == CheckAction::NotifyOnly)
            .map(|(role, i, _)| (role, i))
            .collect();
        let build = |role: Role| -> Result<Vec<_>, ConfigError> {
            let specs = self.healthcheck.get(role).iter().flatten().enumerate();
            specs.map(|(i, s)| Ok(registry.build(&s.type_, &s.params, &format!("healthcheck.{role}[{i}]"))?)).collect()
        };
        Ok(Checks {
            master: build(Role::Master)?,
            worker: build(Role::Worker)?,
            notify_only,
            attribute_labels: self.correlated_hold.labels.clone(),
            routes,
        })
    }

    /// The planner's policy.
    pub fn policy(&self) -> Policy {
        let limits = Limits {
            master_max_unhealthy: self.max_unhealthy.master,
            worker_max_unhealthy: self.max_unhealthy.worker,
            zone_max_unhealthy: self.max_unhealthy.zone,
            storm_cooldown: self.storm_cooldown,
            master_concurrency: self.concurrency.master,
            worker_concurrency: self.concurrency.worker,
            repairs_per_hour: self.repairs_per_hour,
            node_max_failures: self.node_retry.max_failures,
            node_cooldown: self.node_retry.cooldown,
            retry_delay: self.node_retry.delay,
            stable_window: self.recovery_stable_window,
            ..Limits::default()
        };
        Policy {
            limits,
            dry_run: self.dry_run,
            master_enabled: self.master_monitor_enabled,
            worker_enabled: self.worker_monitor_enabled,
            check_delay_after_add: self.check_delay_after_add,
            rebuild_delay_after_reboot: self.rebuild_delay_after_reboot,
            replace_timeout: self.replace_timeout,
            master_steps: self.repair_steps.master.clone(),
            worker_steps: self.repair_steps.worker.clone(),
            blind_grace: self.apiserver_outage_grace,
            correlated: autohealer_core::planner::CorrelatedHold {
                enabled: self.correlated_hold.enabled,
                min_nodes: self.correlated_hold.min_nodes,
                window: self.correlated_hold.window,
                max_healthy_share: self.correlated_hold.max_healthy_share,
            },
            repeated: autohealer_core::planner::RepeatedRepairs { max: self.repeated_repairs.max, window: self.repeated_repairs.window },
            slow_start: self.slow_start.enabled.then_some(self.slow_start.memory),
            workloads: autohealer_core::planner::WorkloadCheck {
                master: self.workload_check.master,
                worker: self.workload_check.worker,
                window: self.workload_check.window,
            },
            approval: autohealer_core::planner::Approval {
                master: self.approval.master.clone(),
                worker: self.approval.worker.clone(),
                expiry: self.approval.expiry,
            },
        }
    }
}

/// The key reference as a Markdown table; each registered provider's block follows
/// `cloud-provider`.
pub fn reference_markdown(registries: &Registries) -> String {
    let defaults = &*DEFAULTS;
    let mut s = String::from("| key | default | meaning |\n|---|---|---|\n");
    for k in KEYS {
        s.push_str(&format!("| `{}` | {} | {} |\n", k.key, k.default_shown(defaults), k.doc));
        if k.key == "cloud-provider" {
            for (name, doc) in registries.providers.docs() {
                s.push_str(&format!("| `{name}` | (none) | {doc} |\n"));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn load(text: &str) -> Result<Loaded, ConfigError> {
        Config::load_str(text, &Registries::builtin())
    }

    #[test]
    fn upstream_configs_load_unchanged() {
        for file in ["upstream-config-camel.yaml", "upstream-config-kebab.yaml"] {
            let text = std::fs::read_to_string(format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
            let l = load(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(l.config.monitor_interval, secs(15));
            assert_eq!(l.config.check_delay_after_add, secs(1200));
            assert_eq!(l.checks.master.len(), 2);
            assert_eq!(l.checks.master[0].type_name(), "Endpoint");
            assert_eq!(l.checks.master[0].unhealthy_duration(), secs(30));
            assert_eq!(l.checks.worker[0].unhealthy_duration(), secs(60));
            assert_eq!(l.config.rebuild_delay_after_reboot, secs(300), "upstream default");
        }
    }

    #[test]
    fn errors_name_the_key_path_and_value() {
        let e = load("cluster-name: c\nmonitor-intervall: 15s\n").unwrap_err();
        assert_eq!(e.path, "monitor-intervall");
        assert!(e.message.contains("did you mean \"monitor-interval\""), "{e}");
        let e = load("cluster-name: c\ndry-run: maybe\n").unwrap_err();
        assert_eq!(e.path, "dry-run");
        assert!(e.message.contains("maybe"), "{e}");
        let e = load("cluster-name: c\ncheck-delay-after-add: soon\n").unwrap_err();
        assert_eq!(e.path, "check-delay-after-add");
        assert!(e.message.contains("soon"), "{e}");
        let e = load("cluster-name: c\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      params:\n        okValues: [\"True\"]\n        errorValues: [\"False\"]\n").unwrap_err();
        assert_eq!(e.path, "healthcheck.worker[0].params.error-values");
        let e = load("cluster-name: c\nhealthcheck:\n  master:\n    - type: EndPoint\n").unwrap_err();
        assert_eq!(e.path, "healthcheck.master[0].type");
        assert!(e.message.contains("did you mean \"Endpoint\""), "{e}");
        let e = load("dry-run: true\n").unwrap_err();
        assert_eq!(e.path, "cluster-name");
        let e = load("cluster-name: c\nkubernetes:\n  apihost: x\n").unwrap_err();
        assert_eq!(e.path, "kubernetes.apihost");
        assert!(e.message.contains("did you mean \"api-host\""), "{e}");
        let e = load("cluster-name: c\nopenstack:\n  auth-urll: https://k/v3\n").unwrap_err();
        assert_eq!(e.path, "openstack.auth-urll");
        assert!(load("cloud-provider: openstack\nopenstack:\n  strategy: nova\n").is_ok(), "nova needs no cluster-name");
        let e = load("cluster-name: c\nmax-unhealthy:\n  worker: lots\n").unwrap_err();
        assert_eq!(e.path, "max-unhealthy.worker");
        assert!(e.message.contains("lots"), "{e}");
        let p = load("cluster-name: c\nmax-unhealthy:\n  worker: 3\n  zone: 30%\n").unwrap().config.policy();
        assert_eq!((p.limits.worker_max_unhealthy, p.limits.zone_max_unhealthy), (Threshold::Count(3), Threshold::Percent(30.0)));
        let e = load("cluster-name: c\nrepair-steps:\n  worker: [reboot, rebuild]\n").unwrap_err();
        assert!(e.path.starts_with("repair-steps.worker"), "{e}");
    }

    #[test]
    fn environment_overrides_replace_scalars_and_merge_maps() {
        let env = EnvOverrides::from_vars([
            ("AUTOHEALER_DRY_RUN".to_string(), "true".to_string()),
            ("AUTOHEALER_MONITOR_INTERVAL".to_string(), "15s".to_string()),
            ("AUTOHEALER_OPENSTACK".to_string(), "{password: from-secret}".to_string()),
            ("AUTOHEALER_CONFIG".to_string(), "/etc/autohealer/config.yaml".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ]);
        let text = "cluster-name: c\nopenstack:\n  auth-url: https://k/v3\n  user-id: u\n";
        let l = Config::load_str_with(text, &Registries::builtin(), &env).unwrap();
        assert!(l.config.dry_run);
        assert_eq!(l.config.monitor_interval, secs(15));
        let merged = serde_json::json!({"auth-url": "https://k/v3", "user-id": "u", "password": "from-secret"});
        let site = Site { cluster_name: Some("c".into()) };
        assert_eq!(l.provider, Registries::builtin().providers.parse("openstack", Some(&merged), &site).unwrap(), "merged");
        let names: Vec<&str> = l.overridden.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(names, ["AUTOHEALER_DRY_RUN", "AUTOHEALER_MONITOR_INTERVAL", "AUTOHEALER_OPENSTACK"]);
        assert!(!format!("{l:?}").contains("from-secret"), "values never shown");
        let foreign = EnvOverrides::from_vars([("AUTOHEALER_SERVICE_HOST".to_string(), "10.0.0.1".to_string())]);
        let l = Config::load_str_with(text, &Registries::builtin(), &foreign).unwrap();
        assert!(l.ignored_env[0].starts_with("$AUTOHEALER_SERVICE_HOST names no config key"), "{:?}", l.ignored_env);
        let bad = EnvOverrides::from_vars([("AUTOHEALER_DRY_RUN".to_string(), "perhaps".to_string())]);
        let e = Config::load_str_with(text, &Registries::builtin(), &bad).unwrap_err();
        assert_eq!(e.path, "dry-run");
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let l = load("cluster-name: c\nopenstack:\n  user-id: u\n  password: hunter2-secret\n").unwrap();
        let shown = format!("{l:?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("password"), "the keys are shown: {shown}");
    }

    #[test]
    fn defaults() {
        let l = load("cluster-name: c\n").unwrap();
        let c = &l.config;
        assert_eq!((c.monitor_interval, c.check_delay_after_add, c.rebuild_delay_after_reboot), (secs(60), secs(600), secs(300)));
        assert!(c.leader_elect && c.master_monitor_enabled && c.worker_monitor_enabled && !c.dry_run);
        assert_eq!(c.leader_election.lease_namespace, "kube-system");
    }

    #[test]
    fn a_secret_that_is_a_common_word_leaves_other_errors_whole() {
        let e = load("cluster-name: c\nopenstack:\n  password: password\n  auth-urll: https://k/v3\n").unwrap_err();
        assert_eq!(e.path, "openstack.auth-urll");
        assert!(e.message.contains("password, password-file"), "{e}");
        let e = load("cluster-name: c\nhealthcheck:\n  master:\n    - params: {token: type}\n").unwrap_err();
        assert_eq!(e.path, "healthcheck.master[0]");
        assert!(e.message.contains("missing field `type`") && e.message.contains("\"<hidden>\""), "{e}");
    }

    /// magnum-auto-healer checks no node of a role without `healthcheck.<role>`; a
    /// config written for it that checks workers only must leave masters alone here too.
    #[test]
    fn without_a_healthcheck_key_no_node_of_that_role_is_checked() {
        let l = load("cluster-name: c\n").unwrap();
        assert!(l.checks.master.is_empty() && l.checks.worker.is_empty(), "no healthcheck key: no checks");
        let l = load("cluster-name: c\nhealthcheck:\n  worker:\n    - type: NodeCondition\n").unwrap();
        assert!(l.checks.master.is_empty());
        assert_eq!(l.checks.worker.len(), 1);
        let node = |name: &str, role_label: &str| -> k8s_openapi::api::core::v1::Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "uid": name, "labels": {role_label: ""}, "creationTimestamp": "2026-01-01T00:00:00Z"},
                "status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
            }))
            .unwrap()
        };
        let now = "2026-06-01T00:00:00Z".parse().unwrap();
        let judge = |n| {
            let mut obs = autohealer_core::observe::Observations::default();
            autohealer_core::observe::evaluate(&n, &l.checks, &mut obs, now, &autohealer_core::observe::LeaseRenewals::default()).0
        };
        assert!(judge(node("m", "node-role.kubernetes.io/control-plane")).findings.is_empty(), "an unready master is not repaired");
        assert!(!judge(node("w", "node-role.kubernetes.io/worker")).findings.is_empty(), "an unready worker is");
    }

    #[test]
    fn every_documented_key_takes_its_default_from_the_one_table() {
        let defaults = serde_json::to_value(Config::default()).unwrap();
        for k in KEYS {
            let value = k.key.split('.').try_fold(&defaults, |v, seg| v.get(seg));
            assert!(value.is_some(), "{} is documented but is no key of Config", k.key);
            assert!(k.unset.is_some() || !value.unwrap().is_null(), "{} has no default and does not say what unset means", k.key);
        }
        let shown = reference_markdown(&Registries::builtin());
        for row in
            ["| `max-unhealthy.worker` | 40% |", "| `correlated-hold.max-healthy-share` | 20% |", "| `repeated-repairs.window` | 7d |"]
        {
            assert!(shown.contains(row), "{row} not in:\n{shown}");
        }
        assert!(shown.contains("| `pause-configmap` | kube-system/autohealer-config |"), "{shown}");
        assert!(shown.contains("| `repair-steps.worker` | [reboot, replace] |"), "{shown}");
        let empty = load("cluster-name: c\n").unwrap().config;
        assert_eq!(empty, Config { cluster_name: Some("c".into()), ..Config::default() }, "an empty file is the defaults");
        assert_eq!(empty.policy(), Policy::default(), "the planner runs with core's defaults, every one of them");
    }

    /// magnum-auto-healer's Go YAML keeps a section's defaults when the section is
    /// written with its keys commented out.
    #[test]
    fn a_section_written_with_nothing_after_it_keeps_its_defaults() {
        let text = "cluster-name: c\nkubernetes:\n  # api-host: https://k8s:6443\nleader-election:\nhealthcheck:\ndrain:\nopenstack:\nnotifications:\n";
        let l = load(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.config, Config { cluster_name: Some("c".into()), ..Config::default() });
        let e = load("cluster-name: c\nkubernetes:\n  api-hots: x\n").unwrap_err();
        assert_eq!(e.path, "kubernetes.api-hots", "a section with keys is still read");
    }

    #[test]
    fn a_token_or_key_suffix_hides_its_value() {
        let e =
            load("cluster-name: c\nhealthcheck:\n  worker:\n    - type: Endpoint\n      params:\n        bearer-token: [s3cr3t-value]\n")
                .unwrap_err();
        assert!(!e.message.contains("s3cr3t-value"), "{e}");
        for key in ["api-token", "signing-key", "db-password", "hmac-secret"] {
            assert!(is_secret_key(key), "{key}");
        }
        assert!(!is_secret_key("lease-name") && !is_secret_key("keep-per-node"));
    }

    #[test]
    fn every_key_is_documented() {
        let documented = top_level_keys(&Registries::builtin());
        let sample = "cluster-name: c\ncloud-provider: openstack\ndry-run: false\nmonitor-interval: 1m\nmaster-monitor-enabled: true\nworker-monitor-enabled: true\nleader-elect: true\ncheck-delay-after-add: 1m\nrebuild-delay-after-reboot: 1m\nreplace-timeout: 1m\nrepair-steps: {}\nkubernetes: {}\nhealthcheck: {}\nopenstack: {}\nleader-election: {}\nadmin: {}\nprobe-concurrency: 1\nnode-selector: a=b\nevidence: {}\nmax-unhealthy: {}\nstorm-cooldown: 1m\nconcurrency: {}\nrepairs-per-hour: 3\nnode-retry: {}\ncorrelated-hold: {}\nrepeated-repairs: {}\nslow-start: {}\napproval: {}\nworkload-check: {}\nrecovery-stable-window: 1s\napiserver-outage-grace: 1s\npause-configmap: a/b\ndrain: {}\nfencing: {}\nnotifications: {}\n";
        load(sample).unwrap();
        for line in sample.lines() {
            let key = line.split(':').next().unwrap();
            assert!(documented.contains(&key), "{key} is not in KEYS");
        }
    }
}

#[cfg(test)]
mod readme {
    #[test]
    fn readme_has_the_current_key_reference() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
        assert!(
            readme.contains(&super::reference_markdown(&crate::Registries::builtin())),
            "README's key table differs from `autohealer config-reference`: paste its output into README.md"
        );
    }
}

#[cfg(test)]
mod examples {
    use super::*;

    #[test]
    fn every_example_config_is_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                Config::load_file(&path, &Registries::builtin()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 3);
    }

    #[test]
    fn checks_carry_their_own_steps_and_reasons_pick_them() {
        use autohealer_core::observe::Disposition;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/");
        let gpu = Config::load_str(&std::fs::read_to_string(format!("{dir}gpu.yaml")).unwrap(), &Registries::builtin()).unwrap();
        let route = &gpu.checks.routes[&(Role::Worker, 1)];
        let reason = |r: &str| (route.0)(&format!("condition AcceleratedHardwareReady is False ({r})"));
        assert_eq!(reason("NvidiaXID79Error"), Disposition::Repair(Some(vec![Action::Replace])));
        assert_eq!(reason("NvidiaXID13Error"), Disposition::Repair(Some(vec![Action::Reboot])));
        assert_eq!(reason("NvidiaXID43Error"), Disposition::NotifyOnly, "another XID is only told");
        let npd = Config::load_str(&std::fs::read_to_string(format!("{dir}node-problem-detector.yaml")).unwrap(), &Registries::builtin())
            .unwrap();
        assert_eq!((npd.checks.routes[&(Role::Worker, 2)].0)("x"), Disposition::Repair(Some(vec![Action::Replace])));
        assert!(!npd.checks.routes.contains_key(&(Role::Worker, 0)), "a plain check keeps the role's steps");
        // A bad pattern, or steps with notify-only, is refused at its key.
        let bad = "cluster-name: c\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      reasons:\n        - match: 'XID(('\n          steps: [reboot]\n";
        let e = Config::load_str(bad, &Registries::builtin()).unwrap_err();
        assert_eq!(e.path, "healthcheck.worker[0].reasons[0].match", "{e}");
        let bad = "cluster-name: c\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      action: notify-only\n      steps: [reboot]\n";
        assert_eq!(Config::load_str(bad, &Registries::builtin()).unwrap_err().path, "healthcheck.worker[0].steps");
        let none = "cluster-name: c\nhealthcheck:\n  worker:\n    - type: NodeCondition\n      action: none\n";
        assert_eq!((Config::load_str(none, &Registries::builtin()).unwrap().checks.routes[&(Role::Worker, 0)].0)("x"), Disposition::Ignore);
    }

    #[test]
    fn pressure_example_repairs_wedged_kernels_and_only_tells_about_pressure() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pressure-checks.yaml");
        let l = Config::load_str(&std::fs::read_to_string(path).unwrap(), &Registries::builtin()).unwrap();
        let only: Vec<(Role, usize)> = l.checks.notify_only.iter().copied().collect();
        assert_eq!(only, [(Role::Master, 1), (Role::Worker, 2)]);
        assert_eq!(l.checks.worker.len(), 3);
        assert_eq!(l.notify.sinks.len(), 3);
        assert_eq!(l.notify.sinks[1].min_severity(), autohealer_core::Severity::Critical, "PagerDuty pages only for critical");
    }
}
