//! The edge's telemetry listener (`telemetry.bind_address`/`bind_port`,
//! `--telemetry-bind`): `/healthz` (the process answers), `/readyz` (attached
//! to the control plane and not draining: what a load balancer or Kubernetes
//! should route by) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::control::ControlClient;

/// What `/readyz` reports.
pub struct Health {
    /// Set on SIGTERM: new connections should go elsewhere.
    pub draining: AtomicBool,
    control: ControlClient,
    config: tokio::sync::watch::Receiver<Option<Arc<ferry_proto::edge::v1::EdgeConfig>>>,
}

impl Health {
    pub fn new(
        control: ControlClient,
        config: tokio::sync::watch::Receiver<Option<Arc<ferry_proto::edge::v1::EdgeConfig>>>,
    ) -> Self {
        Self {
            draining: AtomicBool::new(false),
            control,
            config,
        }
    }

    /// None when ready, else why not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::Relaxed) {
            Some("draining")
        } else if self.config.borrow().is_none() {
            Some("not attached to the control plane yet")
        } else if !self.control.unreachable_for().is_zero() {
            Some("control plane unreachable")
        } else {
            None
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.not_ready() {
        None => (StatusCode::OK, "ready"),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// `/metrics` in Prometheus text format.
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

/// Serves the telemetry routes until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "telemetry listener failed");
    }
}
