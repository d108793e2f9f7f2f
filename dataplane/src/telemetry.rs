//! The edge's telemetry listener (`telemetry.bind_address`/`bind_port`,
//! `--telemetry-bind`): `/healthz` (the process answers), `/readyz` (attached
//! to the control plane and not draining: what a load balancer or Kubernetes
//! should route by) and `/metrics` (Prometheus text).
// /proc/self for memory figures, not user storage.
#![allow(clippy::disallowed_methods)]

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
    std::sync::LazyLock::force(&crate::metrics::METRICS);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

#[derive(serde::Deserialize)]
struct ProfileParams {
    seconds: Option<u64>,
}

/// One CPU profile at a time (the sampler is process-wide).
static PROFILING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `/debug/pprof/profile?seconds=N` (default 30, at most 300): a CPU
/// profile sampled at 99 Hz, in pprof's protobuf format (`go tool pprof`).
async fn profile(
    axum::extract::Query(params): axum::extract::Query<ProfileParams>,
) -> axum::response::Response {
    let seconds = params.seconds.unwrap_or(30).clamp(1, 300);
    let Ok(_busy) = PROFILING.try_lock() else {
        return (StatusCode::CONFLICT, "a profile is already being taken").into_response();
    };
    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(99)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(g) => g,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start profiling: {e}"),
            )
                .into_response();
        }
    };
    tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
    let encoded = guard
        .report()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|r| {
            use pprof::protos::Message;
            let profile = r.pprof().map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            profile.write_to_vec(&mut buf).map_err(|e| e.to_string())?;
            Ok(buf)
        });
    match encoded {
        Ok(buf) => ([(header::CONTENT_TYPE, "application/octet-stream")], buf).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

/// `/debug/pprof/heap`: the process's memory as the kernel counts it.
async fn heap() -> impl IntoResponse {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let wanted = [
        "VmPeak", "VmSize", "VmHWM", "VmRSS", "RssAnon", "VmData", "Threads",
    ];
    let summary: String = status
        .lines()
        .filter(|l| wanted.iter().any(|w| l.starts_with(&format!("{w}:"))))
        .map(|l| format!("{}\n", l.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    ([(header::CONTENT_TYPE, "text/plain")], summary)
}

/// Serves the telemetry routes until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    profiler: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if profiler {
        app = app
            .route("/debug/pprof/profile", get(profile))
            .route("/debug/pprof/heap", get(heap));
    }
    let app = app.with_state(health);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "telemetry listener failed");
    }
}
