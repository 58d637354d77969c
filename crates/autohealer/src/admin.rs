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
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready.clone();
                async move {
                    if ready.synced.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "node cache not synced yet")
                    }
                }
            }),
        )
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
        Decision::InProgress { action, until } => (format!("wait for {action}"), format!("in progress until {until}")),
        Decision::Recovered { record } => ("finish".into(), format!("healthy again after {}", record.action)),
        Decision::Failed { why, .. } => ("record failure".into(), why.clone()),
    }
}

/// A plain-text table: node, role, each check's verdict, the action and why.
pub fn plan_table(rows: &[Row]) -> String {
    let mut lines = vec![["NODE".to_string(), "ROLE".into(), "CHECKS".into(), "ACTION".into(), "WHY".into()]];
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
        lines.push([r.name.clone(), r.role.to_string(), checks.join(","), action, why]);
    }
    let widths: Vec<usize> = (0..4).map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0)).collect();
    lines
        .iter()
        .map(|l| {
            format!(
                "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
                l[0],
                l[1],
                l[2],
                l[3],
                l[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
