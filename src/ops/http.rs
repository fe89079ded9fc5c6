//! The health and metrics server, for load balancers, orchestrators and Prometheus:
//! `/healthz` answers 200 while the process lives, `/readyz` 200 when Redis and Postgres answer
//! and every worker runs (else 503 and the reasons, one a line), `/metrics` the Prometheus text
//! format of everything in `ops::metrics`. It starts before anything else in `run`, so that
//! `/healthz` answers while the daemon connects and migrates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ops::health::Health;

/// The Prometheus text exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: PrometheusHandle,
}

/// A running server; [`HttpServer::stop`] ends it.
pub struct HttpServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

/// Binds `listen` and serves until stopped. A port that cannot be bound is an error: an
/// operator who configured health checks wants to know at once, not find them silent.
pub async fn start(
    listen: SocketAddr,
    health: Arc<Health>,
    metrics: PrometheusHandle,
) -> anyhow::Result<HttpServer> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("could not listen on http.listen = {listen}"))?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { health, metrics });
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    tracing::info!(%addr, "http listening");
    Ok(HttpServer { addr, stop, task })
}

impl HttpServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking connections and lets requests under way finish, for a second at most.
    pub async fn stop(self) {
        self.stop.cancel();
        let mut task = self.task;
        match tokio::time::timeout(Duration::from_secs(1), &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the http server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the http server's task failed"),
            Err(_) => task.abort(),
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let problems = state.health.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", problems.join("\n")),
        )
    }
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::ops::metrics::set_ready(state.health.problems().is_empty());
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        crate::ops::metrics::render(&state.metrics),
    )
}
