//! The edge's link to the control plane. The Attach stream is turned into a
//! local value (the current SSH configuration, a `watch` receiver) by a
//! background task that reconnects with backoff; request handlers read that
//! value and never wait on the stream. Login is a plain unary call.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::edge::v1::edge_control_client::EdgeControlClient;
use ferry_proto::edge::v1::{
    ControlMessage, EdgeConfig, EdgeHello, EdgeMessage, Heartbeat, LoginRequest, LoginResponse,
    QuotaStatusRequest, QuotaStatusResponse, ReserveRequest, ReserveResponse, SettleRequest,
    control_message, edge_message,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use crate::registry::Registry;

/// Events buffered for the control plane while the stream is up; beyond
/// this, events are dropped (leases then expire on their own).
const EVENT_BUFFER: usize = 4096;
/// Deadline of one Login call.
/// Longer than any login hook may take (pre-login and check-password: 30 s each).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(90);
/// Deadline of one quota call.
const QUOTA_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct TokenInterceptor {
    header: Option<MetadataValue<Ascii>>,
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut()
                .insert(ferry_proto::AUTHORIZATION, h.clone());
        }
        Ok(req)
    }
}

type Client = EdgeControlClient<InterceptedService<Channel, TokenInterceptor>>;

/// Cheap-to-clone handle to the control plane.
#[derive(Clone)]
pub struct ControlClient {
    client: Client,
    edge_id: String,
    /// Random per process (see `EdgeHello.instance_id`).
    instance_id: Arc<String>,
    next_upload: Arc<std::sync::atomic::AtomicU64>,
    /// Sender into the current Attach stream, when one is up.
    outbound: Arc<Mutex<Option<mpsc::Sender<EdgeMessage>>>>,
    /// Since when no Attach stream has been up (None while one is).
    down_since: Arc<Mutex<Option<std::time::Instant>>>,
}

impl ControlClient {
    pub fn new(url: &str, token: Option<&str>, edge_id: String) -> anyhow::Result<Self> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| anyhow::anyhow!("invalid control plane URL {url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let header = match token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| anyhow::anyhow!("the edge token contains invalid characters"))?,
            ),
            None => None,
        };
        let client = EdgeControlClient::with_interceptor(
            endpoint.connect_lazy(),
            TokenInterceptor { header },
        );
        Ok(Self {
            client,
            edge_id,
            instance_id: Arc::new(format!("{:016x}", rand::random::<u64>())),
            next_upload: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            outbound: Arc::new(Mutex::new(None)),
            down_since: Arc::new(Mutex::new(Some(std::time::Instant::now()))),
        })
    }

    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    /// A fleet-unique id for a new upload.
    pub fn next_upload_id(&self) -> String {
        let n = self
            .next_upload
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}:{n}", self.instance_id)
    }

    /// One authentication attempt.
    pub async fn login(&self, mut req: LoginRequest) -> Result<LoginResponse, tonic::Status> {
        req.edge_id = self.edge_id.clone();
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(req);
        request.set_timeout(LOGIN_TIMEOUT);
        Ok(client.login(request).await?.into_inner())
    }

    /// Opens a keyboard-interactive hook exchange: `outbound` carries the
    /// start and then the answers.
    pub async fn keyboard_interactive(
        &self,
        outbound: mpsc::Receiver<ferry_proto::edge::v1::KiEdgeMessage>,
    ) -> Result<tonic::Streaming<ferry_proto::edge::v1::KiControlMessage>, tonic::Status> {
        let mut client = self.client.clone();
        Ok(client
            .keyboard_interactive(ReceiverStream::new(outbound))
            .await?
            .into_inner())
    }

    /// Asks the post-connect hook (through the control plane) whether a
    /// client may go on.
    pub async fn check_connection(
        &self,
        remote_address: std::net::SocketAddr,
    ) -> Result<ferry_proto::edge::v1::ConnectionVerdict, tonic::Status> {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(ferry_proto::edge::v1::ConnectionCheck {
            remote_address: remote_address.to_string(),
            protocol: "SSH".into(),
        });
        request.set_timeout(LOGIN_TIMEOUT);
        Ok(client.check_connection(request).await?.into_inner())
    }

    pub async fn reserve(&self, req: ReserveRequest) -> Result<ReserveResponse, tonic::Status> {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(req);
        request.set_timeout(QUOTA_TIMEOUT);
        Ok(client.reserve(request).await?.into_inner())
    }

    pub async fn settle(&self, req: SettleRequest) -> Result<(), tonic::Status> {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(req);
        request.set_timeout(QUOTA_TIMEOUT);
        client.settle(request).await?;
        Ok(())
    }

    pub async fn quota_status(
        &self,
        username: &str,
        folder: &str,
    ) -> Result<QuotaStatusResponse, tonic::Status> {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(QuotaStatusRequest {
            username: username.to_string(),
            folder: folder.to_string(),
        });
        request.set_timeout(QUOTA_TIMEOUT);
        Ok(client.quota_status(request).await?.into_inner())
    }

    /// Queues an event for the control plane without waiting.
    pub fn send_event(&self, kind: edge_message::Kind) {
        if self.try_send_event(kind) == Some(false) {
            warn!("control plane event buffer full, event dropped");
        }
    }

    /// Queues an event; None when no stream is up, Some(false) when full.
    fn try_send_event(&self, kind: edge_message::Kind) -> Option<bool> {
        let guard = self.outbound.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map(|tx| tx.try_send(EdgeMessage { kind: Some(kind) }).is_ok())
    }

    fn set_outbound(&self, tx: Option<mpsc::Sender<EdgeMessage>>) {
        let mut down = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        match &tx {
            Some(_) => *down = None,
            None => {
                down.get_or_insert_with(std::time::Instant::now);
            }
        }
        *self.outbound.lock().unwrap_or_else(|e| e.into_inner()) = tx;
    }

    /// How long the control plane has been out of reach (zero while the
    /// Attach stream is up).
    pub fn unreachable_for(&self) -> Duration {
        self.down_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(Duration::ZERO, |t| t.elapsed())
    }
}

/// Keeps an Attach stream up for the life of the process. Returns the
/// configuration the control plane last sent (None until the first one).
pub fn spawn_attach(
    control: ControlClient,
    registry: Arc<Registry>,
    sftp_addr: SocketAddr,
) -> watch::Receiver<Option<Arc<EdgeConfig>>> {
    let (config_tx, config_rx) = watch::channel(None);
    spawn_fence(control.clone(), registry.clone(), config_rx.clone());
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let (tx, rx) = mpsc::channel(EVENT_BUFFER);
            let hello = EdgeMessage {
                kind: Some(edge_message::Kind::Hello(EdgeHello {
                    edge_id: control.edge_id.clone(),
                    version: ferry_proto::VERSION.to_string(),
                    sftp_address: sftp_addr.to_string(),
                    instance_id: control.instance_id.to_string(),
                })),
            };
            let _ = tx.try_send(hello);
            // The control plane forgets our connections when the stream
            // drops: tell it again what is live.
            for opened in registry.opened_connections() {
                let _ = tx.try_send(EdgeMessage {
                    kind: Some(edge_message::Kind::ConnectionOpened(opened)),
                });
            }
            let mut client = control.client.clone();
            match client.attach(ReceiverStream::new(rx)).await {
                Ok(resp) => {
                    control.set_outbound(Some(tx));
                    crate::metrics::METRICS.control_plane_connected.set(1);
                    let mut inbound = resp.into_inner();
                    let mut heartbeat: Option<tokio::task::JoinHandle<()>> = None;
                    loop {
                        match inbound.message().await {
                            Ok(Some(msg)) => {
                                backoff = Duration::from_millis(100);
                                if let Some(interval) =
                                    handle_control_message(msg, &config_tx, &registry, &control)
                                    && heartbeat.is_none()
                                {
                                    heartbeat = Some(spawn_heartbeat(
                                        control.clone(),
                                        registry.clone(),
                                        interval,
                                    ));
                                }
                            }
                            Ok(None) => {
                                warn!("control plane closed the attach stream");
                                break;
                            }
                            Err(e) => {
                                warn!(error = %e, "attach stream failed");
                                break;
                            }
                        }
                    }
                    if let Some(h) = heartbeat {
                        h.abort();
                    }
                    control.set_outbound(None);
                    crate::metrics::METRICS.control_plane_connected.set(0);
                }
                Err(e) => warn!(error = %e, "cannot attach to the control plane"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    config_rx
}

/// Applies one message; returns the heartbeat interval when it was a config.
fn handle_control_message(
    msg: ControlMessage,
    config_tx: &watch::Sender<Option<Arc<EdgeConfig>>>,
    registry: &Registry,
    control: &ControlClient,
) -> Option<Duration> {
    match msg.kind? {
        control_message::Kind::Config(cfg) => {
            info!(
                host_keys = cfg.host_keys.len(),
                "configuration received from the control plane"
            );
            let interval = Duration::from_millis(u64::from(cfg.heartbeat_interval_ms.max(100)));
            let _ = config_tx.send(Some(Arc::new(cfg)));
            Some(interval)
        }
        control_message::Kind::Bans(bans) => {
            info!(banned = bans.hosts.len(), "defender bans received");
            registry.set_bans(&bans.hosts);
            None
        }
        control_message::Kind::DisconnectConnection(d) => {
            info!(
                connection_id = d.connection_id,
                "disconnect requested by the control plane"
            );
            registry.disconnect_connection(&d.connection_id);
            None
        }
        control_message::Kind::DisconnectUser(d) => {
            info!(
                username = d.username,
                "disconnect of user requested by the control plane"
            );
            registry.disconnect_user(&d.username);
            None
        }
        control_message::Kind::ScanQuota(scan) => {
            info!(
                scan_id = scan.scan_id,
                "quota scan requested by the control plane"
            );
            let control = control.clone();
            tokio::spawn(async move {
                let result = crate::vfs::scan_usage(
                    scan.paths.clone(),
                    scan.stores.clone(),
                    scan.uploads_in_progress.clone(),
                )
                .await;
                let (size, files, error) = match result {
                    Ok((s, f)) => (s, f, String::new()),
                    Err(e) => (0, 0, e),
                };
                control.send_event(edge_message::Kind::QuotaScanned(
                    ferry_proto::edge::v1::QuotaScanned {
                        scan_id: scan.scan_id,
                        size,
                        files,
                        error,
                    },
                ));
            });
            None
        }
        control_message::Kind::RecoverUploads(r) => {
            info!(
                username = r.username,
                uploads = r.uploads.len(),
                "recovering uploads of a vanished edge"
            );
            tokio::spawn(recover_uploads(control.clone(), r));
            None
        }
    }
}

/// Fencing: once the control plane has been out of reach for longer than
/// the lease TTL, the leases of this edge's sessions have expired there (their
/// slots and quota reservations are given to others, their uploads recovered
/// by another edge), so the sessions end here too.
fn spawn_fence(
    control: ControlClient,
    registry: Arc<Registry>,
    config: watch::Receiver<Option<Arc<EdgeConfig>>>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let ttl = config
                .borrow()
                .as_ref()
                .map(|c| Duration::from_secs(u64::from(c.lease_ttl_seconds.max(1))));
            let Some(ttl) = ttl else { continue };
            let down = control.unreachable_for();
            if down > ttl {
                let n = registry.disconnect_all("the control plane is unreachable");
                if n > 0 {
                    warn!(
                        sessions = n,
                        unreachable_ms = down.as_millis() as u64,
                        "control plane unreachable for longer than the lease TTL: sessions ended"
                    );
                }
            }
        }
    });
}

fn spawn_heartbeat(
    control: ControlClient,
    registry: Arc<Registry>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (connections, lease_ids) = registry.heartbeat_snapshot();
            let usage = registry.usage.drain();
            let sent = control.try_send_event(edge_message::Kind::Heartbeat(Heartbeat {
                connections,
                lease_ids,
                usage: usage.clone(),
            }));
            if sent != Some(true) {
                // Kept for the next heartbeat: usage must not be lost.
                registry.usage.restore(usage);
            }
        }
    })
}

/// Recovers the uploads a vanished edge left open (sent by the control
/// plane): the temporary file of an atomic upload is removed, or moved onto
/// the target in mode 2, and the real change of each upload is settled once.
async fn recover_uploads(control: ControlClient, cmd: ferry_proto::edge::v1::RecoverUploads) {
    let username = cmd.username.clone();
    let fs = match crate::vfs::UserFs::open_with(
        &cmd.username,
        std::path::Path::new(&cmd.home_dir),
        cmd.storage.as_ref(),
        None,
        &cmd.virtual_folders,
        crate::vfs::FsSettings::default(),
    )
    .await
    {
        Ok(fs) => fs,
        Err(e) => {
            warn!(username, error = %e, "cannot open a home to recover uploads");
            return;
        }
    };
    for u in cmd.uploads {
        let outcome =
            match crate::vfs::recover_upload(&fs, &u.target_path, &u.temp_path, u.resume).await {
                Ok(o) => o,
                Err(e) => {
                    warn!(username, upload = u.target_path, error = %e, "cannot recover an upload");
                    continue;
                }
            };
        let existed = u.old_size >= 0;
        let size = outcome
            .final_size
            .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX));
        let req = ferry_proto::edge::v1::SettleRequest {
            username: username.clone(),
            reservation_id: String::new(),
            size_delta: size - u.old_size.max(0),
            files_delta: i64::from(outcome.final_size.is_some()) - i64::from(existed),
            upload_id: u.upload_id.clone(),
            folder: u.folder.clone(),
        };
        match control.settle(req).await {
            Ok(()) => info!(
                username,
                upload = u.target_path,
                "upload of a vanished edge recovered"
            ),
            Err(e) => warn!(username, error = %e, "cannot settle a recovered upload"),
        }
    }
}
