//! The control plane's Prometheus metrics (`ferry_` prefix), served on the
//! HTTP port's `/metrics` together with the process's other metrics (the
//! embedded edge's under `ferry serve`).

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

pub struct ControlMetrics {
    /// Login attempts by method (`password`, `publickey`,
    /// `keyboard-interactive`, `publickey+password`, …) and outcome (`ok`,
    /// `ko`).
    pub logins: IntCounterVec,
    /// Connections that ended without trying to log in.
    pub no_auth: prometheus::IntCounter,
    pub dataprovider_availability: IntGauge,
    pub edges_attached: IntGauge,
    pub defender_banned_hosts: IntGauge,
    /// Time quota decisions waited for their domain's lock.
    pub reserve_wait: HistogramVec,
    /// Password hashing slots (`data_provider.password_hashing.max_concurrent`).
    pub password_slots: IntGauge,
    /// Password verifications running now.
    pub password_checks_running: IntGauge,
    /// Hash computations refused because every slot stayed busy, by kind
    /// (`verify`, `hash`).
    pub password_checks_refused: IntCounterVec,
    /// REST connections open now.
    pub http_connections: IntGauge,
    /// REST connections refused or closed by a listener limit, by limit.
    pub http_limits: IntCounterVec,
}

pub static METRICS: LazyLock<ControlMetrics> = LazyLock::new(|| {
    let logins = IntCounterVec::new(
        Opts::new(
            "ferry_logins_total",
            "Login attempts by method and outcome.",
        ),
        &["method", "outcome"],
    )
    .expect("valid metric");
    let reserve_wait = HistogramVec::new(
        HistogramOpts::new(
            "ferry_quota_lock_wait_seconds",
            "Time quota requests waited for their user's or folder's lock in the control plane.",
        )
        .buckets(vec![0.0001, 0.001, 0.01, 0.1, 1.0]),
        &["kind"],
    )
    .expect("valid metric");
    let gauge = |name: &str, help: &str| {
        let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid metric");
        prometheus::register(Box::new(g.clone())).expect("registered once");
        g
    };
    prometheus::register(Box::new(logins.clone())).expect("registered once");
    prometheus::register(Box::new(reserve_wait.clone())).expect("registered once");
    let no_auth = prometheus::IntCounter::with_opts(Opts::new(
        "ferry_no_auth_total",
        "Connections that ended without trying to log in.",
    ))
    .expect("valid metric");
    prometheus::register(Box::new(no_auth.clone())).expect("registered once");
    let password_checks_refused = IntCounterVec::new(
        Opts::new(
            "ferry_password_checks_refused_total",
            "Password hash computations refused because every hashing slot stayed busy, by kind.",
        ),
        &["kind"],
    )
    .expect("valid metric");
    prometheus::register(Box::new(password_checks_refused.clone())).expect("registered once");
    let http_limits = IntCounterVec::new(
        Opts::new(
            "ferry_http_limits_total",
            "REST connections refused or closed by a listener limit (httpd.*), by limit.",
        ),
        &["limit"],
    )
    .expect("valid metric");
    prometheus::register(Box::new(http_limits.clone())).expect("registered once");
    ControlMetrics {
        logins,
        no_auth,
        dataprovider_availability: gauge(
            "ferry_dataprovider_availability",
            "1 when the database answered the last check.",
        ),
        edges_attached: gauge(
            "ferry_edges_attached",
            "Edges attached to this control plane.",
        ),
        defender_banned_hosts: gauge(
            "ferry_defender_banned_hosts",
            "Client addresses the defender bans now.",
        ),
        reserve_wait,
        password_slots: gauge(
            "ferry_password_hash_slots",
            "Password hashes that may be computed at once.",
        ),
        password_checks_running: gauge(
            "ferry_password_checks_running",
            "Password verifications running now.",
        ),
        password_checks_refused,
        http_connections: gauge("ferry_http_connections", "REST connections open now."),
        http_limits,
    }
});

/// Counts a finished login attempt.
pub fn login(method: &str, ok: bool) {
    METRICS
        .logins
        .with_label_values(&[method, if ok { "ok" } else { "ko" }])
        .inc();
}
