//! A model of the polling reference's algorithm — magnum-auto-healer's loop as its
//! design describes it, not the reference itself: every `monitor-interval`, while it
//! leads, one cloud call (its repair-allowed check), two full LISTs of the nodes (one
//! per role's checks), a judgement of every node, then each broken node repaired in
//! turn (a write on the node, a Nova reboot, a fixed pause). Leadership is a Lease with
//! the same timings as the healer's, so failover compares like with like.

use autohealer_core::{LeaderElector, LeaseElector, LeaseSettings};
use autohealer_openstack::clients::Nova;
use autohealer_openstack::{OpenStackConfig, Session};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ModelArgs {
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Duration,
    #[arg(long, value_parser = humantime::parse_duration)]
    unhealthy: Duration,
    #[arg(long, value_parser = humantime::parse_duration)]
    pause: Duration,
    #[arg(long)]
    auth_url: String,
}

fn broken_long_enough(n: &Node, unhealthy: Duration, now: k8s_openapi::jiff::Timestamp) -> bool {
    let ready = n.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match ready {
        Some(c) if c.status != "True" => c
            .last_transition_time
            .as_ref()
            .is_some_and(|t| now.duration_since(t.0) >= k8s_openapi::jiff::SignedDuration::try_from(unhealthy).unwrap_or_default()),
        _ => false,
    }
}

fn is_master(n: &Node) -> bool {
    n.metadata.labels.as_ref().is_some_and(|l| l.contains_key("node-role.kubernetes.io/control-plane"))
}

pub async fn run(a: ModelArgs) -> anyhow::Result<()> {
    let kc = kube::config::Kubeconfig::read_from(&a.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let identity = std::env::var("MODEL_IDENTITY").unwrap_or_else(|_| "model".into());
    let leader = LeaseElector::start(
        client.clone(),
        LeaseSettings {
            name: "autohealer".into(),
            namespace: "kube-system".into(),
            identity,
            duration: Duration::from_secs(15),
            grace: Duration::from_secs(5),
            margin: Duration::from_millis(2500),
        },
    )
    .await?;
    let block = json!({"strategy": "nova", "auth-url": a.auth_url, "user-id": autohealer_testkit::openstack::USER_ID,
        "password": autohealer_testkit::openstack::PASSWORD, "project-id": autohealer_testkit::openstack::PROJECT_ID});
    let settings = OpenStackConfig::parse(Some(&block))?.resolve(None, &|_| None)?;
    let session = Session::new(settings, None)?;
    let nodes: Api<Node> = Api::all(client);
    let mut tick = tokio::time::interval(a.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !leader.is_leader() {
            continue;
        }
        // Two full LISTs per interval: one for the masters' checks, one for the workers'.
        let (Ok(for_masters), Ok(for_workers)) = (nodes.list(&ListParams::default()).await, nodes.list(&ListParams::default()).await)
        else {
            continue;
        };
        let server_of =
            |n: &Node| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()).and_then(|p| p.rsplit('/').next()).map(String::from);
        if let Some(first) = for_masters.items.first().and_then(server_of) {
            let _ = Nova(&session).server(&first).await;
        }
        let now = k8s_openapi::jiff::Timestamp::now();
        let broken: Vec<&Node> = for_masters
            .items
            .iter()
            .filter(|n| is_master(n))
            .chain(for_workers.items.iter().filter(|n| !is_master(n)))
            .filter(|n| broken_long_enough(n, a.unhealthy, now))
            .filter(|n| n.metadata.annotations.as_ref().is_none_or(|m| !m.contains_key(crate::REPAIR)))
            .collect();
        for n in broken {
            if !leader.is_leader() {
                break;
            }
            let name = n.metadata.name.clone().unwrap_or_default();
            let patch = json!({"metadata": {"annotations": {crate::REPAIR: json!({"model": true, "at": now.to_string()}).to_string()}}});
            if nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_err() {
                continue;
            }
            if let Some(id) = server_of(n) {
                let _ = Nova(&session).reboot(&id, false).await;
            }
            tokio::time::sleep(a.pause).await;
        }
    }
}
