//! The admin HTTP server (`/healthz`, `/readyz`, `/metrics`) and the `plan` table.

use autohealer_core::healer::Row;
use autohealer_core::{Decision, Metrics, Status};
use autohealer_healthcheck::Health;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;

/// Binds and serves in the background; returns the bound address.
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("admin.listen: cannot bind {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let ready = status.clone();
    let readyz = axum::routing::get(move || {
        let ready = ready.clone();
        async move {
            if ready.synced.load(Ordering::Relaxed) {
                (StatusCode::OK, "ok")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "node cache not synced yet")
            }
        }
    });
    // `/health` and `/ready` are what the seed design's manifests probe.
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .route("/readyz", readyz.clone())
        .route("/ready", readyz)
        .route(
            "/metrics",
            axum::routing::get(move || {
                let m = metrics.clone();
                async move {
                    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.encode()).into_response()
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    });
    Ok(bound)
}

fn describe(d: &Decision) -> (String, String) {
    match d {
        Decision::Healthy => ("none".into(), "healthy".into()),
        Decision::NotMonitored => ("none".into(), "role not monitored".into()),
        Decision::Waiting { until, why } => ("none yet".into(), format!("{why}; actionable at {until}")),
        Decision::Held { gate, why, until } => (
            format!("held ({})", gate.as_str()),
            match until {
                Some(u) => format!("{why}; until {u}"),
                None => why.clone(),
            },
        ),
        Decision::Repair { action, attempt, reason, .. } => (format!("{action} (attempt {attempt})"), reason.clone()),
        Decision::Continue { record } => (
            format!("continue {}", record.action),
            match (&record.phase, record.draining) {
                (_, true) => "resume its drain".into(),
                (Some(p), _) => format!("from phase {}", p.name),
                (None, _) => "from its first call".into(),
            },
        ),
        Decision::Restore { record } => {
            ("restore machine".into(), format!("{} stalled: {}", record.action, record.stalled.clone().unwrap_or_default()))
        }
        Decision::InProgress { action, until } => (format!("wait for {action}"), format!("in progress until {until}")),
        Decision::Recovered { record } => ("finish".into(), format!("healthy again after {}", record.action)),
        Decision::Failed { why, .. } => ("record failure".into(), why.clone()),
        Decision::Delegate { record, action, to } => {
            (format!("hand {action} over"), format!("{} did not recover the node; the {action} is left to {to}", record.action))
        }
    }
}

/// A plain-text table: node, role, each check's verdict, the failure's severity,
/// the action and why.
pub fn plan_table(rows: &[Row]) -> String {
    let mut lines = vec![vec!["NODE".to_string(), "ROLE".into(), "CHECKS".into(), "SEVERITY".into(), "ACTION".into(), "WHY".into()]];
    for r in rows {
        let checks: Vec<String> = r
            .verdicts
            .iter()
            .map(|v| match &v.health {
                Health::Healthy => format!("{}=ok", v.check),
                Health::Unhealthy { .. } => format!("{}=FAIL", v.check),
            })
            .collect();
        let (action, why) = describe(&r.decision);
        let severity = r.severity.as_ref().map_or("-".to_string(), |(s, _)| s.to_string());
        let why = match &r.severity {
            Some((_, because)) if !because.is_empty() => format!("{why} [severity: {because}]"),
            _ => why,
        };
        lines.push(vec![r.name.clone(), r.role.to_string(), checks.join(","), severity, action, why]);
    }
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns - 1).map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0)).collect();
    lines
        .iter()
        .map(|l| {
            let mut out: String = l.iter().zip(&widths).map(|(cell, w)| format!("{cell:w$}  ")).collect();
            out.push_str(&l[columns - 1]);
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
