//! Ferry's control plane: the store, credential checks, the fleet of attached
//! edges, the gRPC service edges call and the REST API admins call. It never
//! sees file data (that flows only through edges).
#![forbid(unsafe_code)]

pub mod admins;
pub mod apikeys;
pub mod auth;
pub mod backup;
pub mod bootstrap;
pub mod confidential;
pub mod config;
pub mod defender;
pub mod filters;
pub mod fleet;
pub mod folders;
pub mod groups;
pub mod grpc;
pub mod hooks;
pub mod ki_hook;
pub mod log_throttle;
pub mod login_hooks;
pub mod metrics;
pub mod migrate;
pub mod openssh_key;
pub mod password_slots;
pub mod passwords;
pub mod provider;
pub mod quota;
pub mod redb_store;
pub mod rest;
pub mod rest_listener;
pub mod secrets;
pub mod server_paths;
pub mod storage;
pub mod store;
pub mod sysusers;
pub mod users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use ferry_proto::edge::v1::edge_control_server::EdgeControlServer;
use rand::Rng;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

/// What every request handler shares.
pub struct AppState {
    pub store: store::Store,
    pub fleet: fleet::Fleet,
    /// OpenSSH-format private host keys sent to every edge.
    pub host_keys: Vec<String>,
    /// SSH identification sent by edges (after `SSH-2.0-`).
    pub server_version: String,
    /// `sftpd.login_banner_file`'s text (empty: none).
    pub login_banner: String,
    /// HS256 key for REST tokens; stored in the database so every replica
    /// signs and verifies with the same one.
    pub jwt_key: Vec<u8>,
    /// A hash verified when the account does not exist, so both paths cost
    /// the same.
    pub dummy_hash: String,
    /// Passwords that verified recently, so repeated logins skip argon2.
    pub verified: passwords::VerifiedCache,
    /// Serialises each user's quota decisions.
    pub quota_locks: quota::QuotaLocks,
    /// Methods, certificates and limits of SSH logins (`sftpd`).
    pub auth: auth::AuthSettings,
    /// Failed-login scores and bans (`common.defender`).
    pub defender: defender::Defender,
    /// API key secrets that verified recently, keyed by key id.
    pub api_key_cache: passwords::VerifiedCache,
    /// Limits of the REST API (`httpd`).
    pub rest: rest::RestSettings,
    /// Where `dumpdata` writes backup files.
    pub backups_dir: PathBuf,
}

/// Settings of a control-plane process.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    pub data_dir: PathBuf,
    pub http_bind: SocketAddr,
    pub grpc_bind: SocketAddr,
    /// Token edges must present on every gRPC call (configured, or
    /// [`generated_edge_token`]).
    pub edge_token: String,
    /// Which database to use (`FERRY_DATA_PROVIDER__*`).
    pub data_provider: provider::DataProviderConfig,
    /// How long sessions of an edge that stopped renewing them still count.
    pub lease_ttl: std::time::Duration,
    /// The SSH service settings (authentication parts).
    pub sftpd: ferry_dataplane::settings::SftpdConfig,
    /// `common.defender`.
    pub defender: ferry_dataplane::settings::DefenderConfig,
    /// `common.post_connect_hook`.
    pub post_connect_hook: String,
    /// `common.server_version` (empty: `Ferry_<version>`).
    pub server_version: String,
    /// REST limits (`httpd.max_request_size`, `httpd.jwt_lifetime`).
    pub rest: rest::RestSettings,
    /// Seals the secrets stored in the database (`kms.secrets`); None: the
    /// key generated into the data directory.
    pub master_key: Option<secrets::MasterKey>,
    /// How HTTP(S) hooks are called (`http`).
    pub http: hooks::HttpClientConfig,
}

/// The SSH identification's software part: the setting, checked against
/// RFC 4253 (printable ASCII, no spaces or '-'), or `Ferry_<version>`.
fn server_version(setting: &str) -> anyhow::Result<String> {
    if setting.is_empty() {
        return Ok(format!("Ferry_{}", ferry_proto::VERSION));
    }
    anyhow::ensure!(
        setting.len() <= 200 && setting.bytes().all(|b| b.is_ascii_graphic() && b != b'-'),
        "common.server_version {setting:?}: use printable ASCII without spaces or '-' \
         (at most 200 characters), e.g. \"SFTP_1.0\""
    );
    Ok(setting.to_string())
}

/// `sftpd.login_banner_file`'s text (relative paths under the data
/// directory); empty setting: no banner.
fn login_banner(file: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<String> {
    const MAX: u64 = 64 * 1024;
    if file.as_os_str().is_empty() {
        return Ok(String::new());
    }
    let path = data_dir.join(file);
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("sftpd.login_banner_file: cannot read {}", path.display()))?;
    anyhow::ensure!(
        meta.len() <= MAX,
        "sftpd.login_banner_file: {} is larger than 64 KiB",
        path.display()
    );
    std::fs::read_to_string(&path).with_context(|| {
        format!(
            "sftpd.login_banner_file: {} is not UTF-8 text",
            path.display()
        )
    })
}

/// A random URL-safe token of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A secret kept in a file of the data directory: read when the file
/// exists, else `bytes` random bytes (hex) written to a new file (mode 0600,
/// never replaced). Returns the text and whether it was just created.
pub fn secret_file(path: &std::path::Path, bytes: usize) -> anyhow::Result<(String, bool)> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            let text = random_token(bytes);
            f.write_all(format!("{text}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok((text, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(path) {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        file = %path.display(),
                        "this secret file is readable by other users: chmod 600 it"
                    );
                }
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let text = text.trim().to_string();
            anyhow::ensure!(
                text.len() >= 32,
                "{} is damaged: it should hold at least 32 characters",
                path.display()
            );
            Ok((text, false))
        }
        Err(e) => Err(anyhow::anyhow!("cannot create {}: {e}", path.display())),
    }
}

/// The file a control plane without a configured edge token keeps its
/// generated token in (edges read it with `--edge-token-file`).
pub const EDGE_TOKEN_FILE: &str = "edge-token";

/// The edge token when none is configured: generated once into the data
/// directory.
pub fn generated_edge_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let path = data_dir.join(EDGE_TOKEN_FILE);
    let (token, created) = secret_file(&path, 32)?;
    if created {
        info!(
            file = %path.display(),
            "edge token generated: edges present it with --edge-token-file (copy the file to their hosts)"
        );
    } else {
        info!(file = %path.display(), "edge token read from the data directory");
    }
    Ok(token)
}

/// Connects to the configured database and migrates its schema (on the
/// blocking pool: diesel and the migration lock wait synchronously).
pub async fn open_store(
    cfg: &provider::DataProviderConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<store::Store> {
    cfg.password_hashing.install().map_err(anyhow::Error::msg)?;
    users::install_users_base_dir(&cfg.users_base_dir).map_err(anyhow::Error::msg)?;
    let (cfg, dir) = (cfg.clone(), data_dir.to_path_buf());
    let store = tokio::task::spawn_blocking(move || store::Store::open(&cfg, &dir)).await??;
    info!(backend = ?store.backend(), "database ready");
    Ok(store)
}

/// A running control plane: its bound addresses and the task serving it.
pub struct RunningControlPlane {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub state: Arc<AppState>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningControlPlane {
    /// The bound listeners, for `--addr-file`.
    pub fn bound_addrs(&self) -> ferry_dataplane::listeners::BoundAddrs {
        use ferry_dataplane::listeners::{BoundAddrs, ListenerKind};
        let mut addrs = BoundAddrs::default();
        addrs.push(ListenerKind::Http, self.http_addr);
        addrs.push(ListenerKind::Grpc, self.grpc_addr);
        addrs
    }
}

/// Opens the store, bootstraps fleet settings and the first admin, binds the
/// HTTP and gRPC listeners and serves them until `shutdown` resolves.
pub async fn start_controlplane(
    opts: ControlPlaneOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningControlPlane> {
    anyhow::ensure!(
        opts.edge_token.len() >= 16,
        "the edge token must be at least 16 characters long"
    );
    // Settings are checked before anything is created.
    let auth =
        auth::AuthSettings::from_config(&opts.sftpd, &opts.data_provider, &opts.post_connect_hook)?;
    let defender = defender::Defender::new(opts.defender.clone())?;
    hooks::install_http_client(&opts.http, &opts.data_dir)?;
    let server_version = server_version(&opts.server_version)?;
    let login_banner = login_banner(&opts.sftpd.login_banner_file, &opts.data_dir)?;
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("cannot create data directory {}", opts.data_dir.display()))?;
    let store = open_store(&opts.data_provider, &opts.data_dir).await?;
    let memory_backup = opts.data_provider.memory_backup(&opts.data_dir);
    if let Some(path) = &memory_backup {
        let r = backup::load_file(&store, path, false)
            .await
            .map_err(|e| anyhow::anyhow!("memory provider: {e}"))?;
        info!(file = %path.display(), added = r.added, "memory provider loaded");
    }
    let keys = secrets::key_ring(opts.master_key.clone(), &opts.data_dir)?;
    confidential::install(keys.clone());
    let host_keys =
        bootstrap::host_keys(&store, &keys, &opts.sftpd.host_keys, &opts.data_dir).await?;
    let jwt_key = bootstrap::jwt_key(&store, &keys).await?;
    bootstrap::first_admin(&store, &opts.data_dir).await?;
    let dummy_hash = passwords::hash(random_token(16))
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let state = Arc::new(AppState {
        store,
        fleet: fleet::Fleet::new(opts.lease_ttl),
        host_keys,
        server_version,
        login_banner,
        jwt_key,
        dummy_hash,
        verified: passwords::VerifiedCache::default(),
        quota_locks: quota::QuotaLocks::default(),
        auth,
        defender,
        api_key_cache: passwords::VerifiedCache::default(),
        rest: opts.rest.clone(),
        backups_dir: opts.data_provider.backups_dir(&opts.data_dir),
    });

    let http = TcpListener::bind(opts.http_bind)
        .await
        .with_context(|| format!("cannot bind HTTP to {}", opts.http_bind))?;
    let grpc = TcpListener::bind(opts.grpc_bind)
        .await
        .with_context(|| format!("cannot bind gRPC to {}", opts.grpc_bind))?;
    let http_addr = http.local_addr()?;
    let grpc_addr = grpc.local_addr()?;
    use ferry_dataplane::listeners::ListenerKind;
    info!(listener = ListenerKind::Http.as_str(), addr = %http_addr, "listening");
    info!(listener = ListenerKind::Grpc.as_str(), addr = %grpc_addr, "listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let closing = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        closing.fleet.close_all();
        let _ = stop_tx.send(true);
    });
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let sweeper_state = state.clone();
    tokio::spawn(async move {
        let every = sweeper_state
            .fleet
            .heartbeat_interval()
            .min(std::time::Duration::from_secs(5));
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            sweeper_state.fleet.expire_leases();
            quota::recover_orphans(&sweeper_state).await;
        }
    });

    #[cfg(unix)]
    if let Some(path) = memory_backup {
        // SIGHUP reloads the memory provider from its file, all or nothing.
        let store = state.store.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot install the SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match backup::load_file(&store, &path, true).await {
                    Ok(r) => {
                        info!(file = %path.display(), objects = r.added, "memory provider reloaded")
                    }
                    Err(e) => tracing::error!(
                        error = e,
                        "memory provider reload failed; the previous data stays"
                    ),
                }
            }
        });
    }

    let app = rest::router(state.clone());
    let http_task = rest_listener::serve(
        http,
        app,
        opts.rest.listener.clone(),
        wait_stop(stop_rx.clone()),
    );
    let token = Arc::new(opts.edge_token);
    let svc = EdgeControlServer::with_interceptor(
        grpc::EdgeService::new(state.clone()),
        grpc::token_interceptor(token),
    );
    let grpc_task = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .add_service(svc)
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), wait_stop(stop_rx));
    let task = tokio::spawn(async move {
        let (h, g) = tokio::join!(http_task, grpc_task);
        h.context("HTTP server failed")?;
        g.context("gRPC server failed")?;
        Ok(())
    });
    Ok(RunningControlPlane {
        http_addr,
        grpc_addr,
        state,
        task,
    })
}
