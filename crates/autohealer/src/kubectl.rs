//! The kubectl plugin (`kubectl autohealer ...`): what an operator asks of the healer,
//! through the Kubernetes API alone, from wherever they run kubectl.
//!
//! It reads and writes only what the healer itself reads and writes (its Lease, its
//! ConfigMap's pause annotation, the Nodes' annotations and the healer's Events), with
//! the annotation names and parsers of `autohealer-core`, so the two never disagree on
//! what an annotation means. `plan` runs the healer's own evaluation
//! ([`crate::plan`]); it needs the cloud provider, hence its credentials.

use crate::config::{Config, EnvOverrides};
use crate::values::ObjectRef;
use anyhow::Context as _;
use autohealer_core::healer::PAUSED_ANNOTATION;
use autohealer_core::ledger::{self, HISTORY_ANNOTATION, Ledger, REPAIR_ANNOTATION, RepairRecord};
use autohealer_core::node::{APPROVE_ANNOTATION, DENY_ANNOTATION, REMEDIATE_ANNOTATION, SKIP_ANNOTATION};
use autohealer_core::planner::Gate;
use autohealer_core::{Metrics, Reason, Status};
use autohealer_healthcheck::NodeView;
use clap::{Args, Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// The namespace the healer's Events about Nodes land in: a Node has no namespace, and
/// kube-runtime's recorder puts Events about cluster-scoped objects in `default`.
const EVENTS_NAMESPACE: &str = "default";

/// The `reportingController` of the healer's Events (its recorder's reporter, in
/// `autohealer_core::actor::Context::recorder`): Events of other controllers with the
/// same reasons are not the healer's.
const REPORTING_CONTROLLER: &str = "autohealer";

/// How far back `status` looks for held repairs: older Events describe failures that
/// have most likely been dealt with, and the apiserver drops Events after an hour by
/// default anyway (`--event-ttl`).
const HELD_WINDOW: SignedDuration = SignedDuration::from_hours(1);

/// Who the plugin is: the field manager of its writes, and the identity `plan`'s healer
/// settings want (it writes nothing).
const IDENTITY: &str = "kubectl-autohealer";

/// Page size of lists: a 5,000-node cluster is read in pages, not one answer.
const PAGE: u32 = 500;

/// `kubectl autohealer`: the node auto-healer's state and controls, from kubectl.
#[derive(Debug, Parser)]
#[command(name = "kubectl-autohealer", bin_name = "kubectl autohealer", version)]
pub struct Cli {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace the healer lives in: where its Lease and ConfigMap are looked for
    /// unless named otherwise.
    #[arg(short = 'n', long, global = true, default_value_t = Config::default().leader_election.lease_namespace)]
    pub namespace: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The leader, whether repairs are paused, the nodes in repair and the held repairs.
    Status {
        #[command(flatten)]
        lease: LeaseArgs,
        #[command(flatten)]
        pause: PauseArgs,
    },
    /// The healer's evaluation now (as `autohealer plan`): every node, each check's
    /// verdict and what the healer would do. Writes nothing; needs the cloud credentials.
    Plan {
        /// The healer's config file (default: read from its ConfigMap in the cluster).
        #[arg(long, value_name = "FILE", conflicts_with = "configmap")]
        config: Option<PathBuf>,
        /// The ConfigMap holding the healer's config (default: NAMESPACE/autohealer-config).
        #[arg(long, value_name = "[NAMESPACE/]NAME")]
        configmap: Option<String>,
        /// The ConfigMap's key holding the config.
        #[arg(long, default_value = crate::reload::CONFIG_KEY)]
        key: String,
    },
    /// Pause new repairs (annotate the pause ConfigMap autohealer.dev/paused=true).
    Pause(PauseArgs),
    /// Resume repairs (remove the pause annotation).
    Resume(PauseArgs),
    /// Leave a node alone (autohealer.dev/skip=true); a repair under way takes no further step.
    Skip { node: String },
    /// Judge and repair a node again (remove autohealer.dev/skip).
    Unskip { node: String },
    /// Ask for a repair of a node now (autohealer.dev/remediate=true).
    Remediate { node: String },
    /// Approve the node's newest repair proposal (`approval.*` in the healer's config).
    Approve { node: String },
    /// Refuse the node's newest repair proposal.
    Deny { node: String },
    /// A node's finished repairs, oldest first, and its repair under way if any.
    History { node: String },
}

#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// The healer's leader Lease (its `leader-election.lease-name`).
    #[arg(long, default_value_t = Config::default().leader_election.lease_name)]
    pub lease_name: String,
    /// The Lease's namespace (its `leader-election.lease-namespace`; default: NAMESPACE).
    #[arg(long)]
    pub lease_namespace: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PauseArgs {
    /// The healer's `pause-configmap` (default: NAMESPACE/autohealer-config).
    #[arg(long, value_name = "[NAMESPACE/]NAME")]
    pub pause_configmap: Option<String>,
}

/// Runs one command, writing what it found or did to `out`. An error names what
/// failed in one line; `status` writes every section it could read before it.
pub async fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = client(&cli).await?;
    let ns = cli.namespace.as_str();
    match cli.command {
        Command::Status { lease, pause } => {
            let lease_ns = lease.lease_namespace.as_deref().unwrap_or(ns);
            status(&client, (lease_ns, &lease.lease_name), &pause.resolve(ns)?, out).await
        }
        Command::Plan { config, configmap, key } => {
            let source = match config {
                Some(path) => ConfigSource::File(path),
                None => ConfigSource::ConfigMap(resolve_ref(configmap.as_deref(), ns)?, key),
            };
            let text = plan(&client, source).await?;
            write!(out, "{text}")?;
            Ok(())
        }
        Command::Pause(p) => set_pause(&client, &p.resolve(ns)?, true, out).await,
        Command::Resume(p) => set_pause(&client, &p.resolve(ns)?, false, out).await,
        Command::Skip { node } => {
            let n = annotate_node(&client, &node, SKIP_ANNOTATION, Some("true")).await?;
            writeln!(
                out,
                "node {} annotated {SKIP_ANNOTATION}=true: the healer leaves it alone, and a repair under way takes no further step",
                n.name_any()
            )?;
            Ok(())
        }
        Command::Unskip { node } => {
            let n = annotate_node(&client, &node, SKIP_ANNOTATION, None).await?;
            writeln!(out, "node {}: {SKIP_ANNOTATION} removed: the healer judges and repairs it again", n.name_any())?;
            Ok(())
        }
        Command::Remediate { node } => {
            let n = annotate_node(&client, &node, REMEDIATE_ANNOTATION, Some("true")).await?;
            writeln!(
                out,
                "node {} annotated {REMEDIATE_ANNOTATION}=true: the healer repairs it within its limits (the annotation is removed when the repair starts)",
                n.name_any()
            )?;
            if autohealer_core::node::flag(&n, SKIP_ANNOTATION) {
                writeln!(
                    out,
                    "note: the node is skipped ({SKIP_ANNOTATION}=true): no repair starts until `kubectl autohealer unskip {}`",
                    n.name_any()
                )?;
            }
            Ok(())
        }
        Command::Approve { node } => answer(&client, &node, true, out).await,
        Command::Deny { node } => answer(&client, &node, false, out).await,
        Command::History { node } => {
            let nodes: Api<NodeView> = Api::all(client);
            let n = nodes.get(&node).await.map_err(|e| anyhow::anyhow!("get node {node} failed: {}", api_error(&e)))?;
            write!(out, "{}", history(&n, Timestamp::now()))?;
            Ok(())
        }
    }
}

/// Answers the node's newest proposal: `autohealer.dev/approve` or `deny` with its id.
async fn answer(client: &kube::Client, node: &str, approve: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let id = newest_proposal(client, node).await?;
    let key = if approve { APPROVE_ANNOTATION } else { DENY_ANNOTATION };
    let n = annotate_node(client, node, key, Some(&id)).await?;
    let (done, then) =
        if approve { ("approved", "the healer takes the step within its limits") } else { ("denied", "the healer does not take the step") };
    writeln!(out, "node {} annotated {key}={id}: proposal {id} {done}; {then}", n.name_any())?;
    Ok(())
}

/// The id of the newest `RepairProposed` Event about the node ("proposal <id>: ...").
async fn newest_proposal(client: &kube::Client, node: &str) -> anyhow::Result<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), EVENTS_NAMESPACE);
    let fields = format!("reportingController={REPORTING_CONTROLLER},reason={}", Reason::RepairProposed.as_str());
    let list = list_all(&events, ListParams::default().fields(&fields))
        .await
        .map_err(|e| anyhow::anyhow!("list events in {EVENTS_NAMESPACE} failed: {}", api_error(&e)))?;
    let newest = list
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node))
        .filter_map(|e| {
            let at = e.series.as_ref().map(|s| s.last_observed_time.0).or(e.event_time.as_ref().map(|t| t.0))?;
            Some((at, proposal_of(e.note.as_deref()?)?))
        })
        .max_by_key(|(at, _)| *at);
    newest
        .map(|(_, id)| id)
        .ok_or_else(|| anyhow::anyhow!("node {node} has no repair proposal (no RepairProposed Event in {EVENTS_NAMESPACE})"))
}

/// The proposal id in a `RepairProposed` note.
fn proposal_of(note: &str) -> Option<String> {
    let id: String = note.split("proposal ").nth(1)?.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    (id.len() == 12).then_some(id)
}

/// The client a kubectl plugin uses: the kubeconfig kubectl would use, in the context
/// asked for; in-cluster when there is none (a plugin run from a pod).
async fn client(cli: &Cli) -> anyhow::Result<kube::Client> {
    let opts = KubeConfigOptions { context: cli.context.clone(), ..Default::default() };
    let cfg = match (&cli.kubeconfig, &cli.context) {
        (Some(path), _) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| anyhow::anyhow!("--kubeconfig: cannot read {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: not usable: {e}", path.display()))?
        }
        (None, Some(ctx)) => kube::Config::from_kubeconfig(&opts).await.map_err(|e| anyhow::anyhow!("--context {ctx}: not usable: {e}"))?,
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| anyhow::anyhow!("no usable kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a cluster: {e}"))?,
    };
    kube::Client::try_from(cfg).map_err(|e| anyhow::anyhow!("cannot build the Kubernetes client: {e}"))
}

impl PauseArgs {
    fn resolve(&self, ns: &str) -> anyhow::Result<(String, String)> {
        resolve_ref(self.pause_configmap.as_deref(), ns)
    }
}

/// `[NAMESPACE/]NAME` as (namespace, name); the healer's default ConfigMap name in `ns`
/// when not given, as the healer deployed in `ns` has it.
fn resolve_ref(given: Option<&str>, ns: &str) -> anyhow::Result<(String, String)> {
    let given = match given {
        Some(g) => g.to_string(),
        None => default_configmap_name()?,
    };
    if let Some(r) = ObjectRef::parse(&given) {
        return Ok((r.namespace, r.name));
    }
    if given.is_empty() || given.contains('/') {
        anyhow::bail!("not a ConfigMap name, [NAMESPACE/]NAME (value: {given:?})");
    }
    Ok((ns.to_string(), given))
}

/// The name part of the healer's default `pause-configmap`, from its own config defaults,
/// which is also the ConfigMap its config is mounted from in the shipped manifests.
fn default_configmap_name() -> anyhow::Result<String> {
    Config::default().pause_configmap.map(|r| r.name).context("the healer's config defaults name no pause-configmap")
}

/// One line for an apiserver error: the status code and its message (`404 Not Found:
/// nodes "foo" not found`), or the cause of a failure to reach it.
fn api_error(e: &kube::Error) -> String {
    let text = match e {
        kube::Error::Api(s) => {
            let reason = axum::http::StatusCode::from_u16(s.code).ok().and_then(|c| c.canonical_reason()).unwrap_or(&s.reason);
            if s.message.is_empty() { format!("{} {reason}", s.code) } else { format!("{} {reason}: {}", s.code, s.message) }
        }
        other => autohealer_cloud::error_chain(other),
    };
    one_line(&text)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A merge patch of one annotation (`None` removes it). The node must exist: a patch of a
/// missing node is the apiserver's 404, named.
async fn annotate_node(client: &kube::Client, name: &str, key: &str, value: Option<&str>) -> anyhow::Result<NodeView> {
    let nodes: Api<NodeView> = Api::all(client.clone());
    let patch = json!({"metadata": {"annotations": {key: value}}});
    nodes
        .patch(name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| anyhow::anyhow!("patch node {name} failed: {}", api_error(&e)))
}

/// The plugin's writes are its own in `managedFields`, told apart from the healer's.
fn patch_params() -> PatchParams {
    PatchParams { field_manager: Some(IDENTITY.into()), ..Default::default() }
}

/// Sets or removes the pause annotation. The ConfigMap is never created: a missing one
/// means the healer reads another (or none), and pausing a ConfigMap nobody watches
/// would only look like a pause.
async fn set_pause(client: &kube::Client, (ns, name): &(String, String), paused: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = match cms.get(name).await {
        Ok(cm) => cm,
        Err(e) if is_not_found(&e) => anyhow::bail!(
            "ConfigMap {ns}/{name} does not exist, so nothing was changed: name the healer's pause-configmap with --pause-configmap or -n"
        ),
        Err(e) => anyhow::bail!("get configmap {ns}/{name} failed: {}", api_error(&e)),
    };
    let was = is_paused(&cm);
    let value = paused.then_some("true");
    let patch = json!({"metadata": {"annotations": {PAUSED_ANNOTATION: value}}});
    cms.patch(name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| anyhow::anyhow!("patch configmap {ns}/{name} failed: {}", api_error(&e)))?;
    let line = match (paused, was) {
        (true, true) => format!("already paused (ConfigMap {ns}/{name} has {PAUSED_ANNOTATION}=true)"),
        (true, false) => format!(
            "paused: ConfigMap {ns}/{name} annotated {PAUSED_ANNOTATION}=true; no new repair starts, repairs already issued are still verified and closed"
        ),
        (false, true) => format!("resumed: {PAUSED_ANNOTATION} removed from ConfigMap {ns}/{name}; new repairs may start"),
        (false, false) => format!("not paused: ConfigMap {ns}/{name} has no {PAUSED_ANNOTATION}=true; nothing to resume"),
    };
    writeln!(out, "{line}")?;
    Ok(())
}

/// As the healer reads it: `true` in any case pauses, anything else does not.
fn is_paused(cm: &ConfigMap) -> bool {
    cm.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Every item of a paged list.
async fn list_all<K>(api: &Api<K>, lp: ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut lp = lp.limit(PAGE);
    let mut items = Vec::new();
    loop {
        let page = api.list(&lp).await?;
        items.extend(page.items);
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return Ok(items),
        }
    }
}

/// `status`: each section on its own, so that one the user may not read (RBAC) does
/// not hide the others; the command still fails, naming what it could not read.
async fn status(client: &kube::Client, lease: (&str, &str), pause: &(String, String), out: &mut dyn Write) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let mut failed = Vec::new();

    let (lns, lname) = lease;
    let leases: Api<Lease> = Api::namespaced(client.clone(), lns);
    match leases.get_opt(lname).await {
        Ok(l) => writeln!(out, "leader:  {}", leader_line(l.as_ref(), lns, lname, now))?,
        Err(e) => {
            let why = format!("get lease {lns}/{lname} failed: {}", api_error(&e));
            writeln!(out, "leader:  unknown ({why})")?;
            failed.push(why);
        }
    }

    let (pns, pname) = pause;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), pns);
    match cms.get_opt(pname).await {
        Ok(Some(cm)) if is_paused(&cm) => {
            writeln!(out, "paused:  yes: no new repair starts (ConfigMap {pns}/{pname} has {PAUSED_ANNOTATION}=true)")?
        }
        Ok(Some(_)) => writeln!(out, "paused:  no (ConfigMap {pns}/{pname} has no {PAUSED_ANNOTATION}=true)")?,
        Ok(None) => writeln!(out, "paused:  no (ConfigMap {pns}/{pname} does not exist; --pause-configmap names the healer's)")?,
        Err(e) => {
            let why = format!("get configmap {pns}/{pname} failed: {}", api_error(&e));
            writeln!(out, "paused:  unknown ({why})")?;
            failed.push(why);
        }
    }

    let mut in_repair: BTreeMap<String, RepairRecord> = BTreeMap::new();
    match list_all(&Api::<NodeView>::all(client.clone()), ListParams::default()).await {
        Ok(nodes) => {
            let mut unreadable = Vec::new();
            for n in &nodes {
                match Ledger::parse(autohealer_core::node::annotation(n, REPAIR_ANNOTATION)) {
                    Ledger::Record(r) => {
                        in_repair.insert(n.name_any(), *r);
                    }
                    Ledger::Unreadable(why) => unreadable.push((n.name_any(), why)),
                    Ledger::None => {}
                }
            }
            writeln!(out, "\nin repair: {} of {} nodes", in_repair.len(), nodes.len())?;
            if !in_repair.is_empty() {
                let mut rows = vec![row(["NODE", "ACTION", "ATTEMPT", "SINCE", "PHASE", "FLAGS"])];
                for (name, r) in &in_repair {
                    rows.push(vec![
                        name.clone(),
                        r.action.to_string(),
                        r.attempt.to_string(),
                        at(r.first_started, now),
                        phase(r),
                        flags(r),
                    ]);
                }
                write!(out, "{}", table(&rows, "  "))?;
            }
            for (name, why) in unreadable {
                writeln!(out, "  {name}: {why}; the healer leaves the node alone until it is fixed or removed")?;
            }
        }
        Err(e) => {
            let why = format!("list nodes failed: {}", api_error(&e));
            writeln!(out, "\nin repair: unknown ({why})")?;
            failed.push(why);
        }
    }

    match held(client, now).await {
        Ok(held) => {
            writeln!(out, "\nheld repairs (last {}): {}", span(HELD_WINDOW), held.len())?;
            if !held.is_empty() {
                let mut rows = vec![row(["GATE", "NODE", "LAST SEEN", "TIMES", "WHY"])];
                for h in &held {
                    // A hold the node's repair has since overcome.
                    let started = in_repair.get(&h.node).is_some_and(|r| r.first_started >= h.last);
                    let why = if started { format!("[in repair now] {}", h.note) } else { h.note.clone() };
                    rows.push(vec![
                        h.gate.clone(),
                        h.node.clone(),
                        format!("{} ago", span(now.duration_since(h.last))),
                        h.count.to_string(),
                        why,
                    ]);
                }
                write!(out, "{}", table(&rows, "  "))?;
            }
        }
        Err(why) => {
            writeln!(out, "\nheld repairs: unknown ({why})")?;
            failed.push(why);
        }
    }

    if failed.is_empty() { Ok(()) } else { anyhow::bail!("status incomplete: {}", failed.join("; ")) }
}

/// Who leads and since when it last renewed; an expired hold is no leader (a standby
/// takes over after it), which is what an operator needs to know.
fn leader_line(lease: Option<&Lease>, ns: &str, name: &str, now: Timestamp) -> String {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return format!("none (no Lease {ns}/{name}: the healer has not run, runs without leader-elect, or uses another --lease-name)");
    };
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return format!("none (Lease {ns}/{name} is not held: released at shutdown)");
    };
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return format!("{holder} (Lease {ns}/{name}, never renewed)");
    };
    let duration = spec.lease_duration_seconds.map(|s| SignedDuration::from_secs(i64::from(s)));
    let expired = duration.is_some_and(|d| renewed + d < now);
    let hold = duration.map(|d| format!(", holds {}", span(d))).unwrap_or_default();
    let state = if expired { "; EXPIRED: no replica leads until a standby takes over" } else { "" };
    format!("{holder} (Lease {ns}/{name}), renewed {}{hold}{state}", at(renewed, now))
}

fn phase(r: &RepairRecord) -> String {
    match (&r.phase, r.draining) {
        (_, true) => "draining".into(),
        (Some(p), _) => p.name.clone(),
        (None, _) => "-".into(),
    }
}

/// What an operator looks for in a repair: handed to the cloud, machine out of service,
/// a call that keeps failing, a failed step awaiting its retry.
fn flags(r: &RepairRecord) -> String {
    let mut f = Vec::new();
    if r.cordoned {
        f.push("cordoned".to_string());
    }
    if let Some(d) = &r.delegated {
        f.push(format!("delegated ({} to {})", d.action, d.to));
    }
    if r.out_of_service {
        f.push("out-of-service".into());
    }
    if r.fenced {
        f.push("fenced".into());
    }
    if r.stalls > 0 || r.stalled.is_some() {
        f.push(format!("stalled x{}: {}", r.stalls, one_line(r.stalled.as_deref().unwrap_or(""))));
    }
    if let Some(why) = &r.failed {
        f.push(format!("failed, retried later: {}", one_line(why)));
    }
    if f.is_empty() { "-".into() } else { f.join(", ") }
}

/// One held repair: the newest `RepairHeld`/`RetryBudgetExhausted` Event of a node.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    gate: String,
    node: String,
    last: Timestamp,
    count: i32,
    note: String,
}

/// The healer's held-repair Events of the last [`HELD_WINDOW`], newest per node (what
/// holds it now), grouped by gate (the Event's action is the gate's name).
async fn held(client: &kube::Client, now: Timestamp) -> Result<Vec<Held>, String> {
    let events: Api<Event> = Api::namespaced(client.clone(), EVENTS_NAMESPACE);
    let mut newest: BTreeMap<String, Held> = BTreeMap::new();
    for reason in [Reason::RepairHeld, Reason::RetryBudgetExhausted] {
        let fields = format!("reportingController={REPORTING_CONTROLLER},reason={}", reason.as_str());
        let list = list_all(&events, ListParams::default().fields(&fields))
            .await
            .map_err(|e| format!("list events in {EVENTS_NAMESPACE} failed: {}", api_error(&e)))?;
        for e in list {
            if let Some(h) = held_of(&e, now)
                && newest.get(&h.node).is_none_or(|old| old.last < h.last)
            {
                newest.insert(h.node.clone(), h);
            }
        }
    }
    let mut out: Vec<Held> = newest.into_values().collect();
    out.sort_by(|a, b| (&a.gate, &a.node).cmp(&(&b.gate, &b.node)));
    Ok(out)
}

fn held_of(e: &Event, now: Timestamp) -> Option<Held> {
    if e.reporting_controller.as_deref() != Some(REPORTING_CONTROLLER) {
        return None;
    }
    let regarding = e.regarding.as_ref().filter(|r| r.kind.as_deref() == Some("Node"))?;
    let last = e
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    if now.duration_since(last) > HELD_WINDOW {
        return None;
    }
    let gate = match e.action.as_deref() {
        Some(a) if !a.is_empty() => a.to_string(),
        _ if e.reason.as_deref() == Some(Reason::RetryBudgetExhausted.as_str()) => Gate::RetryBudget.as_str().to_string(),
        _ => "unknown".into(),
    };
    Some(Held {
        gate,
        node: regarding.name.clone()?,
        last,
        count: e.series.as_ref().map_or(1, |s| s.count),
        note: one_line(e.note.as_deref().unwrap_or("")),
    })
}

/// `history`: the node's finished repairs as the healer recorded them (oldest first),
/// then the repair under way.
fn history(n: &NodeView, now: Timestamp) -> String {
    let name = n.name_any();
    let raw = autohealer_core::node::annotation(n, HISTORY_ANNOTATION);
    let entries = ledger::parse_history(raw);
    let mut out = String::new();
    if entries.is_empty() {
        match raw.map(str::trim).filter(|v| !v.is_empty() && *v != "[]") {
            Some(_) => out.push_str(&format!(
                "node {name}: {HISTORY_ANNOTATION} is not readable; the healer counts it as empty (no retry budget spent)\n"
            )),
            None => out.push_str(&format!("node {name}: no finished repair recorded\n")),
        }
    } else {
        let mut rows = vec![row(["STARTED", "ENDED", "ACTION", "OUTCOME", "SEVERITY", "REASON"])];
        for e in &entries {
            let outcome = if e.held {
                "held"
            } else if e.succeeded {
                "succeeded"
            } else {
                "failed"
            };
            rows.push(vec![
                stamp(e.started),
                stamp(e.ended),
                e.action.to_string(),
                outcome.into(),
                e.severity.map_or("-".into(), |s| s.to_string()),
                one_line(&e.reason),
            ]);
        }
        out.push_str(&table(&rows, ""));
    }
    match Ledger::parse(autohealer_core::node::annotation(n, REPAIR_ANNOTATION)) {
        Ledger::None => out.push_str(&format!("\nnode {name}: no repair under way\n")),
        Ledger::Unreadable(why) => out.push_str(&format!("\nnode {name}: {why}\n")),
        Ledger::Record(r) => {
            out.push_str(&format!(
                "\nin repair: {} (attempt {}) since {}, step started {}, phase {}, by {}\n  reason: {}\n  flags: {}\n",
                r.action,
                r.attempt,
                at(r.first_started, now),
                at(r.started, now),
                phase(&r),
                if r.by.is_empty() { "-" } else { &r.by },
                one_line(&r.reason),
                flags(&r),
            ));
        }
    }
    out
}

/// Where `plan` gets the healer's config.
enum ConfigSource {
    File(PathBuf),
    ConfigMap((String, String), String),
}

/// `plan`: the healer's own evaluation, with the healer's config (environment overrides
/// apply, as they do to the healer, so `AUTOHEALER_OPENSTACK` or `OS_*` can supply here
/// the credentials its pod gets from a Secret). Its `kubernetes.*` keys are ignored: they
/// say how the healer's pod reaches the apiserver, not how the operator does.
async fn plan(client: &kube::Client, source: ConfigSource) -> anyhow::Result<String> {
    let registry = crate::Registries::builtin();
    let (loaded, origin) = match source {
        ConfigSource::File(path) => {
            let l = Config::load_file(&path, &registry).map_err(|e| anyhow::anyhow!("invalid config {}: {e}", path.display()))?;
            (l, path.display().to_string())
        }
        ConfigSource::ConfigMap((ns, name), key) => {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let cm = match cms.get(&name).await {
                Ok(cm) => cm,
                Err(e) if is_not_found(&e) => {
                    anyhow::bail!("ConfigMap {ns}/{name} does not exist: name the healer's with --configmap or -n, or give --config FILE")
                }
                Err(e) => anyhow::bail!("get configmap {ns}/{name} failed: {}", api_error(&e)),
            };
            let Some(text) = cm.data.as_ref().and_then(|d| d.get(&key)) else {
                anyhow::bail!("ConfigMap {ns}/{name} has no key {key:?}: name it with --key, or give --config FILE");
            };
            let origin = format!("ConfigMap {ns}/{name} key {key}");
            let l = Config::load_str_with(text, &registry, &EnvOverrides::from_env())
                .map_err(|e| anyhow::anyhow!("invalid config in {origin}: {e}"))?;
            (l, origin)
        }
    };
    let metrics = Arc::new(Metrics::new());
    let provider = crate::providers::build(&loaded, &metrics).map_err(|e| {
        anyhow::anyhow!(
            "plan needs the cloud provider {:?} of the config in {origin}, which cannot be built here: {}; the healer's pod gets its credentials from a Secret: supply them here (AUTOHEALER_OPENSTACK, OS_* variables, or --config FILE with them)",
            loaded.config.cloud_provider,
            one_line(&format!("{e:#}"))
        )
    })?;
    let rt = crate::Runtime { client: client.clone(), provider, metrics, status: Arc::new(Status::default()), identity: IDENTITY.into() };
    crate::plan(loaded, rt).await.map_err(|e| anyhow::anyhow!("plan failed: {}", one_line(&format!("{e:#}"))))
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Columns aligned, the last one left unpadded; each line begins with `indent`.
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let mut line = indent.to_string();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A time as the apiserver writes it, to the second.
fn stamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A time and how long ago it was.
fn at(t: Timestamp, now: Timestamp) -> String {
    let d = now.duration_since(t);
    if d.is_negative() { format!("{} (in {})", stamp(t), span(-d)) } else { format!("{} ({} ago)", stamp(t), span(d)) }
}

/// A duration in its two largest units: `45s`, `3m12s`, `2h5m`, `3d4h`.
fn span(d: SignedDuration) -> String {
    let s = d.as_secs().unsigned_abs();
    let (days, hours, mins, secs) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) if secs == 0 => format!("{m}m"),
        (0, 0, m) => format!("{m}m{secs}s"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_proposal_id_is_read_from_the_note() {
        let note = "condition Ready is False; proposal 0a1b2c3d4e5f: replace awaits approval: kubectl annotate node w1 autohealer.dev/approve=0a1b2c3d4e5f";
        assert_eq!(super::proposal_of(note).as_deref(), Some("0a1b2c3d4e5f"));
        assert_eq!(super::proposal_of("no proposal here"), None);
    }

    use super::*;

    #[test]
    fn defaults_are_the_healers() {
        assert_eq!(resolve_ref(None, "kube-system").unwrap(), ("kube-system".into(), "autohealer-config".into()));
        assert_eq!(resolve_ref(None, "ops").unwrap(), ("ops".into(), "autohealer-config".into()));
        assert_eq!(resolve_ref(Some("a/b"), "ops").unwrap(), ("a".into(), "b".into()));
        assert_eq!(resolve_ref(Some("b"), "ops").unwrap(), ("ops".into(), "b".into()));
        assert!(resolve_ref(Some("a/"), "ops").is_err() && resolve_ref(Some("a/b/c"), "ops").is_err());
        let cli = Cli::try_parse_from(["kubectl-autohealer", "status"]).unwrap();
        assert_eq!(cli.namespace, "kube-system");
        let Command::Status { lease, .. } = cli.command else { panic!() };
        assert_eq!(lease.lease_name, "autohealer");
    }

    #[test]
    fn an_expired_hold_is_no_leader() {
        let now: Timestamp = "2026-03-01T10:00:00Z".parse().unwrap();
        let lease = |renewed: Timestamp| -> Lease {
            serde_json::from_value(json!({"spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": renewed}})).unwrap()
        };
        let fresh = leader_line(Some(&lease(now - SignedDuration::from_secs(3))), "kube-system", "autohealer", now);
        assert!(fresh.starts_with("a (Lease kube-system/autohealer), renewed 2026-03-01T09:59:57Z (3s ago)") && !fresh.contains("EXPIRED"));
        let stale = leader_line(Some(&lease(now - SignedDuration::from_secs(60))), "kube-system", "autohealer", now);
        assert!(stale.contains("EXPIRED"), "{stale}");
        assert!(leader_line(None, "kube-system", "autohealer", now).starts_with("none"));
    }

    #[test]
    fn spans_and_tables() {
        assert_eq!(span(SignedDuration::from_secs(45)), "45s");
        assert_eq!(span(SignedDuration::from_secs(192)), "3m12s");
        assert_eq!(span(SignedDuration::from_secs(3600 * 2 + 300)), "2h5m");
        assert_eq!(span(SignedDuration::from_secs(86_400 * 3 + 3600 * 4 + 5)), "3d4h");
        assert_eq!(table(&[row(["A", "BB"]), row(["ccc", "d"])], ""), "A    BB\nccc  d\n");
    }
}
