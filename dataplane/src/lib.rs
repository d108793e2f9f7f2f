//! Ferry's edge: the SSH/SFTP server clients talk to. It keeps no durable
//! state: host keys and policy come from the control plane over gRPC
//! ([`control`]), file bytes go to storage through the one path resolver
//! ([`vfs`]).
#![forbid(unsafe_code)]

pub mod bandwidth;
pub mod commands;
pub mod config;
pub mod control;
pub mod limits;
pub mod listeners;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod portable;
pub mod proxy;
pub mod quota;
pub mod registry;
pub mod sandbox;
pub mod scp;
pub mod settings;
pub mod sftp;
pub mod ssh;
pub mod syscmd;
pub mod telemetry;
pub mod vfs;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

/// Settings of one edge.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// gRPC URL of the control plane, e.g. `http://127.0.0.1:50051`.
    pub control_plane: String,
    /// Token presented to the control plane.
    pub token: Option<String>,
    /// SFTP listeners (at least one); the first is the one reported to the
    /// control plane.
    pub sftp_binds: Vec<SocketAddr>,
    /// Fleet-unique id; random when not given.
    pub edge_id: Option<String>,
    /// Validated `common`/`sftpd` settings.
    pub runtime: settings::EdgeRuntime,
    /// Telemetry listener (`/healthz`, `/readyz`, `/metrics`); None: off.
    pub telemetry_bind: Option<SocketAddr>,
    /// `/debug/pprof/*` on the telemetry listener.
    pub enable_profiler: bool,
}

pub use settings::EdgeArgs;

/// A running edge.
pub struct RunningEdge {
    /// The first SFTP listener's bound address (the one reported to the
    /// control plane).
    pub sftp_addr: SocketAddr,
    /// Every SFTP listener's bound address, in `sftp_binds` order.
    pub sftp_addrs: Vec<SocketAddr>,
    pub telemetry_addr: Option<SocketAddr>,
    pub edge_id: String,
    /// Ends when the listeners have stopped (after `shutdown`).
    pub task: tokio::task::JoinHandle<()>,
    pub health: Arc<telemetry::Health>,
    pub registry: Arc<registry::Registry>,
}

impl RunningEdge {
    /// The bound listeners, for `--addr-file`.
    pub fn bound_addrs(&self) -> listeners::BoundAddrs {
        let mut addrs = listeners::BoundAddrs::default();
        for addr in &self.sftp_addrs {
            addrs.push(listeners::ListenerKind::Sftp, *addr);
        }
        if let Some(addr) = self.telemetry_addr {
            addrs.push(listeners::ListenerKind::Telemetry, addr);
        }
        addrs
    }

    /// Graceful drain, for SIGTERM: `/readyz` fails at once, `stop` stops
    /// the listeners, live transfers get up to `grace` to finish, then every
    /// session is closed (releasing its lease in the control plane).
    pub async fn drain(self, grace: std::time::Duration, stop: impl FnOnce()) {
        use std::time::{Duration, Instant};
        self.health
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        stop();
        let _ = self.task.await;
        let deadline = Instant::now() + grace;
        let mut waiting = self.registry.active_transfers();
        if waiting > 0 {
            tracing::info!(
                transfers = waiting,
                grace_s = grace.as_secs(),
                "draining: waiting for transfers"
            );
        }
        while waiting > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            waiting = self.registry.active_transfers();
        }
        let closed = self.registry.disconnect_all("server shutting down");
        tracing::info!(
            sessions = closed,
            unfinished_transfers = waiting,
            "draining: closing sessions"
        );
        let until = Instant::now() + Duration::from_secs(5);
        while self.registry.session_count() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Lets the session-ended events reach the control plane.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Sets up logging: SFTPGo-style JSON lines ([`logging::JsonLines`]) on
/// stderr or in a rotated file; `FERRY_LOG` (or `RUST_LOG`) filters,
/// default `info`.
pub fn init_logging(args: &logging::LogArgs) -> anyhow::Result<()> {
    init_logging_at(args, "info")
}

/// Like [`init_logging`] with another default level (one-shot commands log
/// only warnings unless `FERRY_LOG`/`RUST_LOG` asks for more).
pub fn init_logging_at(args: &logging::LogArgs, default_level: &str) -> anyhow::Result<()> {
    let filter = std::env::var("FERRY_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default_level.into());
    let builder = tracing_subscriber::fmt()
        .event_format(logging::JsonLines)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter));
    match &args.log_file_path {
        Some(path) => {
            let file = logging::RotatingFile::open(
                path.clone(),
                args.log_max_size.saturating_mul(1024 * 1024),
                args.log_max_backups,
            )
            .with_context(|| format!("cannot open log file {}", path.display()))?;
            let _ = builder
                .with_writer(logging::SharedFile(Arc::new(file)))
                .try_init();
        }
        None => {
            let _ = builder.with_writer(std::io::stderr).try_init();
        }
    }
    Ok(())
}

/// Runs a binary's async main on a multi-threaded runtime; a failure becomes
/// one readable line on stderr (with its causes, not a Debug dump) and exit
/// status 1.
pub fn run_main(
    main: impl std::future::Future<Output = anyhow::Result<()>>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard one (both binaries call
/// it at start): every connection, open file and database socket takes a
/// descriptor, and distributions start services with a soft limit of 1024.
/// Returns (before, after).
pub fn raise_fd_limit() -> (u64, u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let before = lim.current.unwrap_or(u64::MAX);
    let Some(hard) = lim.maximum else {
        return (before, before);
    };
    if before >= hard {
        return (before, before);
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    ) {
        Ok(()) => (before, hard),
        Err(_) => (before, before),
    }
}

/// The soft limit on open files now.
pub fn fd_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX)
}

fn random_edge_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "edge".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Binds the SFTP listener, attaches to the control plane and serves until
/// `shutdown` resolves.
pub async fn start_edge(
    opts: EdgeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningEdge> {
    let edge_id = opts.edge_id.clone().unwrap_or_else(random_edge_id);
    anyhow::ensure!(!opts.sftp_binds.is_empty(), "no SFTP listener configured");
    let mut sftp_listeners = Vec::new();
    for bind in &opts.sftp_binds {
        sftp_listeners.push(
            TcpListener::bind(bind)
                .await
                .with_context(|| format!("cannot bind SFTP to {bind}"))?,
        );
    }
    let sftp_addrs = sftp_listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    let sftp_addr = sftp_addrs[0];
    let registry = Arc::new(registry::Registry::default());
    let control =
        control::ControlClient::new(&opts.control_plane, opts.token.as_deref(), edge_id.clone())?;
    let config = control::spawn_attach(control.clone(), registry.clone(), sftp_addr);
    let health = Arc::new(telemetry::Health::new(control.clone(), config.clone()));
    let runtime = opts.runtime;
    sandbox::warn_if_unavailable(&runtime.commands);
    if let Some(timeout) = runtime.idle_timeout {
        let registry = registry.clone();
        tokio::spawn(async move {
            let every = (timeout / 4).min(std::time::Duration::from_secs(30));
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                registry.disconnect_idle(timeout);
            }
        });
    }
    let ctx = Arc::new(ssh::EdgeContext::new(
        control,
        registry.clone(),
        config,
        runtime.fs,
        runtime.commands,
        runtime.limits,
        crate::limits::SessionLimits::new(runtime.session_limits),
    ));
    let proxy = Arc::new(runtime.proxy);
    // Every listener stops when `shutdown` resolves.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let telemetry_addr = match opts.telemetry_bind {
        Some(bind) => {
            let listener = TcpListener::bind(bind)
                .await
                .with_context(|| format!("cannot bind telemetry to {bind}"))?;
            let addr = listener.local_addr()?;
            tracing::info!(
                listener = listeners::ListenerKind::Telemetry.as_str(),
                %addr,
                "listening"
            );
            // Up for the whole life of the process: /readyz reports the drain.
            tokio::spawn(telemetry::serve(
                listener,
                health.clone(),
                opts.enable_profiler,
                std::future::pending(),
            ));
            Some(addr)
        }
        None => None,
    };
    let mut loops = Vec::new();
    for (listener, addr) in sftp_listeners.into_iter().zip(&sftp_addrs) {
        tracing::info!(
            edge_id,
            listener = listeners::ListenerKind::Sftp.as_str(),
            %addr,
            control_plane = opts.control_plane,
            "listening"
        );
        let mut rx = stop_rx.clone();
        loops.push(tokio::spawn(ssh::accept_loop(
            listener,
            ctx.clone(),
            proxy.clone(),
            async move {
                let _ = rx.wait_for(|v| *v).await;
            },
        )));
    }
    let task = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        for l in loops {
            let _ = l.await;
        }
    });
    Ok(RunningEdge {
        sftp_addr,
        sftp_addrs,
        telemetry_addr,
        edge_id,
        task,
        health,
        registry,
    })
}
