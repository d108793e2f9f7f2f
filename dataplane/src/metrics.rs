//! Prometheus metrics of an edge (SFTPGo's set under a `ferry_` prefix, in
//! Prometheus naming: counters end in `_total`, sizes in `_bytes_total`),
//! registered in the process's default registry: `ferry serve` exposes them
//! with the control plane's on one `/metrics`.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

pub struct EdgeMetrics {
    pub uploads: IntCounter,
    pub downloads: IntCounter,
    pub upload_errors: IntCounter,
    pub download_errors: IntCounter,
    pub upload_bytes: IntCounter,
    pub download_bytes: IntCounter,
    pub ssh_commands: IntCounter,
    pub ssh_command_errors: IntCounter,
    pub ssh_sessions: IntGauge,
    pub active_connections: IntGauge,
    pub active_transfers: IntGauge,
    pub control_plane_connected: IntGauge,
    pub connections_refused: IntCounter,
    pub reserve_seconds: Histogram,
    /// Requests refused by a per-connection or per-user limit, by limit.
    pub limit_refusals: IntCounterVec,
}

fn counter(name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help)).expect("valid metric");
    prometheus::register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid metric");
    prometheus::register(Box::new(g.clone())).expect("registered once");
    g
}

pub static METRICS: LazyLock<EdgeMetrics> = LazyLock::new(|| {
    let reserve_seconds = Histogram::with_opts(
        HistogramOpts::new(
            "ferry_quota_reserve_seconds",
            "Time an upload waited for a quota reservation from the control plane.",
        )
        .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
    )
    .expect("valid metric");
    prometheus::register(Box::new(reserve_seconds.clone())).expect("registered once");
    let limit_refusals = IntCounterVec::new(
        Opts::new(
            "ferry_limit_refusals_total",
            "Requests refused by a per-connection or per-user limit (channels, handles).",
        ),
        &["limit"],
    )
    .expect("valid metric");
    prometheus::register(Box::new(limit_refusals.clone())).expect("registered once");
    EdgeMetrics {
        uploads: counter("ferry_uploads_total", "Completed uploads."),
        downloads: counter("ferry_downloads_total", "Completed downloads."),
        upload_errors: counter(
            "ferry_upload_errors_total",
            "Uploads that failed or were cut off.",
        ),
        download_errors: counter(
            "ferry_download_errors_total",
            "Downloads that failed or were cut off.",
        ),
        upload_bytes: counter("ferry_upload_bytes_total", "Bytes received in uploads."),
        download_bytes: counter("ferry_download_bytes_total", "Bytes sent in downloads."),
        ssh_commands: counter("ferry_ssh_commands_total", "SSH commands run."),
        ssh_command_errors: counter(
            "ferry_ssh_command_errors_total",
            "SSH commands that failed or were refused.",
        ),
        ssh_sessions: gauge("ferry_ssh_sessions", "Authenticated SSH connections."),
        active_connections: gauge(
            "ferry_active_connections",
            "Open SFTP/SCP/command channels (SFTPGo's connections).",
        ),
        active_transfers: gauge("ferry_active_transfers", "Transfers in progress."),
        control_plane_connected: gauge(
            "ferry_control_plane_connected",
            "1 while the edge's stream to the control plane is up.",
        ),
        connections_refused: counter(
            "ferry_connections_refused_total",
            "Connections dropped before the SSH handshake (defender, PROXY rules, post-connect hook).",
        ),
        reserve_seconds,
        limit_refusals,
    }
});

/// The process's metrics in Prometheus text format: whatever is registered
/// (an edge's metrics exist once the edge runs, so a control plane alone
/// does not show idle edge counters).
pub fn render() -> String {
    let families = prometheus::gather();
    let mut out = String::new();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    out
}

/// Per-user transfer bytes (`telemetry.per_user_metrics`): off by default;
/// at most `limit` users get their own series, the rest add up under
/// `username="_other"`, so a busy server cannot blow up the scrape.
pub struct UserMetrics {
    upload: prometheus::IntCounterVec,
    download: prometheus::IntCounterVec,
    limit: usize,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

static USER_METRICS: std::sync::OnceLock<UserMetrics> = std::sync::OnceLock::new();

/// Turns per-user metrics on (once per process).
pub fn enable_per_user(limit: usize) {
    USER_METRICS.get_or_init(|| {
        let vec = |name: &str, help: &str| {
            let v = prometheus::IntCounterVec::new(Opts::new(name, help), &["username"])
                .expect("valid metric");
            prometheus::register(Box::new(v.clone())).expect("registered once");
            v
        };
        UserMetrics {
            upload: vec(
                "ferry_user_upload_bytes_total",
                "Bytes uploaded per user (the first per_user_metrics_limit users; then _other).",
            ),
            download: vec(
                "ferry_user_download_bytes_total",
                "Bytes downloaded per user (the first per_user_metrics_limit users; then _other).",
            ),
            limit,
            seen: Default::default(),
        }
    });
}

/// Counts a finished transfer's bytes for `username`, when enabled.
pub fn user_bytes(username: &str, upload: bool, bytes: u64) {
    let Some(m) = USER_METRICS.get() else {
        return;
    };
    let label = {
        let mut seen = m.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(username) || seen.len() < m.limit {
            seen.insert(username.to_string());
            username
        } else {
            "_other"
        }
    };
    let vec = if upload { &m.upload } else { &m.download };
    vec.with_label_values(&[label]).inc_by(bytes);
}
