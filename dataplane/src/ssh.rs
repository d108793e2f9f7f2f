//! The SSH server: accepts TCP, runs russh with the fleet's host keys and
//! algorithms, relays every authentication attempt to the control plane, and
//! starts SFTP on session channels that ask for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_proto::edge::v1::{
    ConnectionClosed, ConnectionOpened, EdgeConfig, LoginOutcome, LoginRequest,
    PublicKeyCredential, SessionEnded, SessionPolicy, edge_message, login_request,
};
use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey};
use russh::server::{Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Preferred, SshId, cipher, kex, mac};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use tokio_util::sync::CancellationToken;

use crate::control::ControlClient;
use crate::limits::{ChannelSlot, ConnectionBudget};
use crate::policy::UserPolicy;
use crate::registry::{Registry, now_ms};
use crate::sftp::SftpSession;
use crate::vfs::UserFs;

/// Connections silent at the SSH level this long are dropped even when the
/// idle timeout is off (unauthenticated ones never reach the idle checker).
const SILENT_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// SSH flow-control window per channel; large enough for `sftp -R 64 -B 261120`.
const WINDOW_SIZE: u32 = 16 * 1024 * 1024;
/// The SSH handshake and authentication must be done within this.
const AUTH_DEADLINE: Duration = Duration::from_secs(120);

/// Shared by every connection on this edge.
pub struct EdgeContext {
    control: ControlClient,
    registry: Arc<Registry>,
    config: watch::Receiver<Option<Arc<EdgeConfig>>>,
    /// The russh config built from the last EdgeConfig, rebuilt on change.
    ssh_config: std::sync::Mutex<Option<(Arc<EdgeConfig>, Arc<russh::server::Config>)>>,
    next_session: AtomicU64,
    as_root: bool,
    fs: crate::vfs::FsSettings,
    commands: crate::commands::EnabledCommands,
    limits: Arc<crate::limits::ConnectionLimits>,
    session_limits: Arc<crate::limits::SessionLimits>,
}

impl EdgeContext {
    pub fn new(
        control: ControlClient,
        registry: Arc<Registry>,
        config: watch::Receiver<Option<Arc<EdgeConfig>>>,
        fs: crate::vfs::FsSettings,
        commands: crate::commands::EnabledCommands,
        limits: Arc<crate::limits::ConnectionLimits>,
        session_limits: Arc<crate::limits::SessionLimits>,
    ) -> Self {
        Self {
            control,
            registry,
            config,
            ssh_config: std::sync::Mutex::new(None),
            next_session: AtomicU64::new(1),
            as_root: crate::vfs::running_as_root(),
            fs,
            commands,
            limits,
            session_limits,
        }
    }

    /// The russh configuration for new connections, or None while the
    /// control plane has not sent host keys yet.
    fn ssh_config(&self) -> Option<Arc<russh::server::Config>> {
        let current = self.config.borrow().clone()?;
        let mut cached = self.ssh_config.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((src, cfg)) = cached.as_ref()
            && Arc::ptr_eq(src, &current)
        {
            return Some(cfg.clone());
        }
        match build_ssh_config(&current) {
            Ok(cfg) => {
                let cfg = Arc::new(cfg);
                *cached = Some((current, cfg.clone()));
                Some(cfg)
            }
            Err(e) => {
                warn!(error = %e, "invalid configuration from the control plane");
                None
            }
        }
    }
}

/// The algorithms we offer: no SHA-1 anywhere, AES-GCM first (fastest here).
pub fn preferred_algorithms() -> Preferred {
    Preferred {
        kex: std::borrow::Cow::Borrowed(&[
            kex::MLKEM768X25519_SHA256,
            kex::CURVE25519,
            kex::CURVE25519_PRE_RFC_8731,
            kex::EXTENSION_SUPPORT_AS_SERVER,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
        ]),
        key: std::borrow::Cow::Borrowed(&[
            Algorithm::Ed25519,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ]),
        host_key_certificates: std::borrow::Cow::Borrowed(&[]),
        cipher: std::borrow::Cow::Borrowed(&[
            cipher::AES_128_GCM,
            cipher::AES_256_GCM,
            cipher::CHACHA20_POLY1305,
            cipher::AES_128_CTR,
            cipher::AES_256_CTR,
        ]),
        mac: std::borrow::Cow::Borrowed(&[
            mac::HMAC_SHA256_ETM,
            mac::HMAC_SHA512_ETM,
            mac::HMAC_SHA256,
            mac::HMAC_SHA512,
        ]),
        compression: std::borrow::Cow::Borrowed(&[russh::compression::NONE]),
    }
}

fn build_ssh_config(cfg: &EdgeConfig) -> anyhow::Result<russh::server::Config> {
    let keys = cfg
        .host_keys
        .iter()
        .map(PrivateKey::from_openssh)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("host key does not parse: {e}"))?;
    anyhow::ensure!(!keys.is_empty(), "no host keys");
    Ok(russh::server::Config {
        server_id: SshId::Standard(format!("SSH-2.0-{}", cfg.server_version).into()),
        methods: offered_methods(cfg),
        auth_rejection_time: Duration::from_secs(1),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys,
        window_size: WINDOW_SIZE,
        maximum_packet_size: 65535,
        preferred: preferred_algorithms(),
        // 0 is unlimited for russh as for the control plane's setting.
        max_auth_attempts: cfg.max_auth_tries as usize,
        inactivity_timeout: Some(SILENT_TIMEOUT),
        nodelay: true,
        ..Default::default()
    })
}

/// Accepts SSH connections until `shutdown` resolves.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<EdgeContext>,
    proxy: Arc<crate::proxy::ProxyPolicy>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    tokio::pin!(shutdown);
    let mut reserve = crate::listeners::FdReserve::take();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    if let Some(peer) = reserve.shed(&e, &listener).await {
                        warn!(?peer, "connection refused: out of file descriptors");
                        crate::metrics::METRICS.connections_refused.inc();
                    } else {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        reserve.refill();
        let Some(config) = ctx.ssh_config() else {
            warn!(%peer, "connection refused: not attached to the control plane yet");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (ctx, proxy) = (ctx.clone(), proxy.clone());
        tokio::spawn(async move {
            // The PROXY header (if any) is read here, off the accept loop.
            let (stream, client) = match proxy.accept(stream, peer).await {
                Ok(v) => v,
                Err(reason) => {
                    info!(%peer, reason, "connection refused");
                    crate::metrics::METRICS.connections_refused.inc();
                    return;
                }
            };
            if ctx.registry.is_banned(client.ip()) {
                info!(%client, "connection refused: address banned by the defender");
                crate::metrics::METRICS.connections_refused.inc();
                return;
            }
            // Held until this task ends, whatever ends it.
            let _slot = match ctx.limits.acquire(client.ip()) {
                Ok(slot) => slot,
                Err(refusal) => {
                    info!(%client, reason = %refusal, "connection refused");
                    crate::metrics::METRICS.connections_refused.inc();
                    return;
                }
            };
            let deadline = tokio::time::Instant::now() + AUTH_DEADLINE;
            let post_connect = ctx
                .config
                .borrow()
                .as_ref()
                .is_some_and(|c| c.post_connect_hook);
            if post_connect {
                match ctx.control.check_connection(client).await {
                    Ok(v) if v.allowed => {}
                    Ok(v) => {
                        info!(%client, reason = v.message, "connection refused by the post-connect hook");
                        crate::metrics::METRICS.connections_refused.inc();
                        return;
                    }
                    Err(e) => {
                        warn!(%client, error = %e, "connection refused: post-connect check unavailable");
                        return;
                    }
                }
            }
            let handler = SshHandler::new(ctx.clone(), client);
            let authenticated = handler.authenticated.clone();
            let tried = handler.tried.clone();
            // SFTPGo's `no_auth_tried`: the control plane logs it, scores it
            // (`score_no_auth`) and tells the post-login hook.
            let no_auth = |reason: String| {
                ctx.control.send_event(edge_message::Kind::NoAuth(
                    ferry_proto::edge::v1::ConnectionWithoutAuth {
                        remote_address: client.to_string(),
                        reason,
                    },
                ));
            };
            let started = tokio::time::timeout_at(
                deadline,
                russh::server::run_stream(config, stream, handler),
            )
            .await;
            let mut running = match started {
                Ok(Ok(running)) => running,
                Ok(Err(e)) => {
                    debug!(%client, error = %e, "ssh handshake failed");
                    no_auth(format!("ssh handshake failed: {e}"));
                    return;
                }
                Err(_) => {
                    info!(%client, "connection closed: no SSH handshake within the deadline");
                    no_auth("no SSH handshake within the deadline".into());
                    return;
                }
            };
            let handle = running.handle();
            let ended = tokio::select! {
                r = &mut running => Some(r),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let result = match ended {
                Some(r) => r,
                None => {
                    if !authenticated.load(Ordering::Relaxed) {
                        info!(%client, "connection closed: not authenticated within 2 minutes");
                        let _ = handle
                            .disconnect(
                                russh::Disconnect::ByApplication,
                                "authentication timeout".into(),
                                String::new(),
                            )
                            .await;
                    }
                    running.await
                }
            };
            if let Err(e) = &result {
                debug!(%client, error = %e, "ssh session ended with an error");
            }
            if !tried.load(Ordering::Relaxed) {
                no_auth(match result {
                    Err(e) => format!("closed without trying to log in: {e}"),
                    Ok(()) => "closed without trying to log in".into(),
                });
            }
        });
    }
}

/// Methods offered to clients (the control plane's switches); a failed
/// attempt keeps them all available so a client may retry (up to
/// `max_auth_tries`), as OpenSSH allows.
fn offered_methods(cfg: &EdgeConfig) -> MethodSet {
    let mut methods = vec![MethodKind::PublicKey];
    if cfg.password_authentication {
        methods.push(MethodKind::Password);
    }
    if cfg.keyboard_interactive_authentication {
        methods.push(MethodKind::KeyboardInteractive);
    }
    MethodSet::from(&methods[..])
}

fn method_kind(name: &str) -> Option<MethodKind> {
    match name {
        "password" => Some(MethodKind::Password),
        "keyboard-interactive" => Some(MethodKind::KeyboardInteractive),
        "publickey" => Some(MethodKind::PublicKey),
        _ => None,
    }
}

struct Authenticated {
    policy: SessionPolicy,
    lease_id: String,
}

/// Per-connection state.
pub struct SshHandler {
    ctx: Arc<EdgeContext>,
    peer: SocketAddr,
    session_no: u64,
    session_tag: String,
    auth: Option<Authenticated>,
    client_version: String,
    /// Channels opened and not yet given a subsystem or command, with their
    /// places on the connection.
    channels: HashMap<ChannelId, (Channel<Msg>, ChannelSlot)>,
    channel_count: u64,
    /// What this connection may hold (channels, handles, queued replies).
    budget: Arc<ConnectionBudget>,
    /// Cancelled when the SSH session ends (the handler is dropped): every
    /// task of the connection stops waiting and releases what it holds.
    gone: CancellationToken,
    /// The user's rules, built at the first channel and shared by all.
    rules: Option<Arc<UserPolicy>>,
    /// Methods still offered (narrowed to the second factors after a
    /// partial success).
    methods: MethodSet,
    /// Set by a partial success; sent with the second step.
    partial: Option<(String, String)>,
    /// Keyboard-interactive round state from the control plane.
    ki_state: String,
    /// The hook exchange in progress (keyboard_interactive_auth_hook).
    ki_stream: Option<(
        tokio::sync::mpsc::Sender<ferry_proto::edge::v1::KiEdgeMessage>,
        tonic::Streaming<ferry_proto::edge::v1::KiControlMessage>,
    )>,
    /// Set once authentication succeeded (the 2-minute deadline).
    authenticated: Arc<std::sync::atomic::AtomicBool>,
    /// Set at the first credential the client tries ("none" aside).
    tried: Arc<std::sync::atomic::AtomicBool>,
}

impl SshHandler {
    fn new(ctx: Arc<EdgeContext>, peer: SocketAddr) -> Self {
        let methods = ctx
            .config
            .borrow()
            .as_ref()
            .map(|c| offered_methods(c))
            .unwrap_or_else(|| MethodSet::from(&[MethodKind::PublicKey][..]));
        let session_no = ctx.next_session.fetch_add(1, Ordering::Relaxed);
        let session_tag = format!("{:016x}", rand::random::<u64>());
        let budget = ctx.session_limits.connection();
        Self {
            ctx,
            peer,
            session_no,
            session_tag,
            auth: None,
            client_version: String::new(),
            channels: HashMap::new(),
            channel_count: 0,
            budget,
            gone: CancellationToken::new(),
            rules: None,
            methods,
            partial: None,
            ki_state: String::new(),
            ki_stream: None,
            authenticated: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            tried: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    fn reject(&self) -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(self.methods.clone()),
            partial_success: false,
        }
    }

    /// The request for one attempt; None when a second step names another
    /// user than the first.
    fn login_request(
        &self,
        user: &str,
        credential: login_request::Credential,
    ) -> Option<LoginRequest> {
        // A second step continues the first one only for the same user.
        let partial_token = match &self.partial {
            Some((first_user, token)) if first_user == user => token.clone(),
            Some(_) => return None,
            None => String::new(),
        };
        Some(LoginRequest {
            edge_id: String::new(),
            username: user.to_string(),
            remote_address: self.peer.to_string(),
            client_version: self.client_version.clone(),
            session_id: self.session_tag.clone(),
            credential: Some(credential),
            partial_token,
        })
    }

    async fn login(&mut self, user: &str, credential: login_request::Credential) -> Auth {
        self.tried.store(true, Ordering::Relaxed);
        let offer_only =
            matches!(&credential, login_request::Credential::PublicKey(k) if !k.verified);
        let Some(req) = self.login_request(user, credential) else {
            return self.reject();
        };
        let resp = match self.ctx.control.login(req).await {
            Ok(resp) => resp,
            Err(status) => {
                warn!(user, error = %status, "control plane unreachable, login refused");
                return self.reject();
            }
        };
        self.apply(user, resp, offer_only)
    }

    /// One keyboard-interactive round through the control plane's hook
    /// stream: `answers` None starts the attempt.
    async fn ki_hook_round(&mut self, user: &str, answers: Option<Vec<String>>) -> Auth {
        self.tried.store(true, Ordering::Relaxed);
        use ferry_proto::edge::v1::{KiEdgeMessage, ki_control_message, ki_edge_message};
        match answers {
            None => {
                self.ki_stream = None;
                let credential = login_request::Credential::KeyboardInteractive(Default::default());
                let Some(req) = self.login_request(user, credential) else {
                    return self.reject();
                };
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let _ = tx
                    .send(KiEdgeMessage {
                        kind: Some(ki_edge_message::Kind::Start(req)),
                    })
                    .await;
                match self.ctx.control.keyboard_interactive(rx).await {
                    Ok(inbound) => self.ki_stream = Some((tx, inbound)),
                    Err(status) => {
                        warn!(user, error = %status, "control plane unreachable, login refused");
                        return self.reject();
                    }
                }
            }
            Some(answers) => {
                let Some((tx, _)) = &self.ki_stream else {
                    return self.reject();
                };
                let msg = KiEdgeMessage {
                    kind: Some(ki_edge_message::Kind::Answers(
                        ferry_proto::edge::v1::KeyboardInteractive {
                            answers,
                            state: String::new(),
                        },
                    )),
                };
                if tx.send(msg).await.is_err() {
                    self.ki_stream = None;
                    return self.reject();
                }
            }
        }
        let Some((_, inbound)) = self.ki_stream.as_mut() else {
            return self.reject();
        };
        // The control plane ends the exchange after 60 s.
        let next = tokio::time::timeout(Duration::from_secs(75), inbound.message()).await;
        match next {
            Ok(Ok(Some(msg))) => match msg.kind {
                Some(ki_control_message::Kind::Challenge(ch)) => Self::challenge(ch),
                Some(ki_control_message::Kind::Result(resp)) => {
                    self.ki_stream = None;
                    self.apply(user, resp, false)
                }
                None => {
                    self.ki_stream = None;
                    self.reject()
                }
            },
            _ => {
                self.ki_stream = None;
                self.reject()
            }
        }
    }

    fn challenge(ch: ferry_proto::edge::v1::Challenge) -> Auth {
        let prompts: Vec<(std::borrow::Cow<'static, str>, bool)> = ch
            .prompts
            .into_iter()
            .map(|p| (p.text.into(), p.echo))
            .collect();
        Auth::Partial {
            name: ch.name.into(),
            instructions: ch.instruction.into(),
            prompts: prompts.into(),
        }
    }

    /// Turns the control plane's answer into russh's.
    fn apply(
        &mut self,
        user: &str,
        resp: ferry_proto::edge::v1::LoginResponse,
        offer_only: bool,
    ) -> Auth {
        match LoginOutcome::try_from(resp.outcome) {
            Ok(LoginOutcome::KeyAcceptable) if offer_only => Auth::Accept,
            Ok(LoginOutcome::Accepted) if !offer_only => {
                let (Some(policy), Some(lease)) = (resp.policy, resp.lease) else {
                    warn!(
                        user,
                        "control plane accepted a login without policy or lease"
                    );
                    return self.reject();
                };
                self.ctx
                    .session_limits
                    .attach_user(&self.budget, &policy.username);
                self.auth = Some(Authenticated {
                    policy,
                    lease_id: lease.lease_id,
                });
                self.authenticated.store(true, Ordering::Relaxed);
                Auth::Accept
            }
            Ok(LoginOutcome::Partial) if !offer_only => {
                let kinds: Vec<MethodKind> = resp
                    .next_methods
                    .iter()
                    .filter_map(|m| method_kind(m))
                    .collect();
                if kinds.is_empty() {
                    return self.reject();
                }
                self.methods = MethodSet::from(&kinds[..]);
                self.partial = Some((user.to_string(), resp.partial_token));
                Auth::Reject {
                    proceed_with_methods: Some(self.methods.clone()),
                    partial_success: true,
                }
            }
            Ok(LoginOutcome::Challenge) => {
                let Some(ch) = resp.challenge else {
                    return self.reject();
                };
                self.ki_state = ch.state.clone();
                Self::challenge(ch)
            }
            _ => {
                if !offer_only {
                    info!(user, remote_address = %self.peer, reason = resp.message, "login failed");
                }
                self.reject()
            }
        }
    }

    fn key_credential(
        key: &russh::keys::PublicKey,
        verified: bool,
    ) -> Option<login_request::Credential> {
        let text = key.to_openssh().ok()?;
        Some(login_request::Credential::PublicKey(PublicKeyCredential {
            public_key: text,
            verified,
        }))
    }

    /// Opens the user's storage and registers a new connection (one per
    /// channel, as SFTPGo counts them) of `protocol`.
    async fn open_connection(&mut self, protocol: &str) -> Result<Opened, String> {
        let auth = self.auth.as_ref().ok_or("not authenticated")?;
        let policy = &auth.policy;
        let owner = (self.ctx.as_root && policy.uid > 0).then_some((policy.uid, policy.gid));
        let fs = UserFs::open_with(
            &policy.username,
            std::path::Path::new(&policy.home_dir),
            policy.storage.as_ref(),
            owner,
            &policy.virtual_folders,
            self.ctx.fs,
        )
        .await
        .map_err(|e| format!("cannot open home directory {}: {e}", policy.home_dir))?;
        let rules = match &self.rules {
            Some(r) => r.clone(),
            None => {
                let quota = crate::quota::QuotaAgent::new(
                    self.ctx.control.clone(),
                    self.ctx.registry.clone(),
                    policy.username.clone(),
                    auth.lease_id.clone(),
                    policy.quota_size,
                    policy.quota_files,
                    policy.max_upload_file_size,
                );
                let r = Arc::new(UserPolicy::from_session(policy, quota, &self.ctx.registry)?);
                self.rules = Some(r.clone());
                r
            }
        };
        self.channel_count += 1;
        let connection_id = format!("{protocol}_{}_{}", self.session_tag, self.channel_count);
        let opened = ConnectionOpened {
            connection_id: connection_id.clone(),
            username: policy.username.clone(),
            protocol: protocol.into(),
            remote_address: self.peer.to_string(),
            client_version: self.client_version.clone(),
            connection_time_ms: now_ms(),
            lease_id: auth.lease_id.clone(),
        };
        let conn = self
            .ctx
            .registry
            .add_connection(self.session_no, opened.clone());
        self.ctx
            .control
            .send_event(edge_message::Kind::ConnectionOpened(opened));
        Ok(Opened {
            fs,
            rules,
            owner,
            conn,
            connection_id,
            username: policy.username.clone(),
        })
    }

    /// Runs `work` for a registered connection and unregisters it after.
    /// `work` gets the session's end as a token and must stop when it
    /// fires; the channel's place is held until then.
    fn spawn_connection<F>(
        &self,
        opened: &Opened,
        what: &'static str,
        slot: ChannelSlot,
        work: impl FnOnce(CancellationToken) -> F,
    ) where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let ctx = self.ctx.clone();
        let (connection_id, username) = (opened.connection_id.clone(), opened.username.clone());
        let work = work(self.gone.clone());
        tokio::spawn(async move {
            info!(connection_id, username, what, "connection started");
            work.await;
            drop(slot);
            if ctx.registry.remove_connection(&connection_id) {
                ctx.control
                    .send_event(edge_message::Kind::ConnectionClosed(ConnectionClosed {
                        connection_id: connection_id.clone(),
                    }));
            }
            info!(connection_id, username, what, "connection ended");
        });
    }

    async fn start_sftp(&mut self, channel: Channel<Msg>, slot: ChannelSlot) -> Result<(), String> {
        let opened = self.open_connection("SFTP").await?;
        let session = Arc::new(SftpSession::new(
            opened.fs.clone(),
            opened.rules.clone(),
            opened.conn.clone(),
            self.budget.clone(),
        ));
        let budget = self.budget.clone();
        self.spawn_connection(&opened, "sftp", slot, |gone| {
            crate::sftp::serve(channel, session, budget, gone)
        });
        Ok(())
    }

    async fn start_command(
        &mut self,
        channel: Channel<Msg>,
        slot: ChannelSlot,
        command: crate::commands::Command,
    ) -> Result<(), String> {
        if let crate::commands::Command::Scp(args) = command {
            let opened = self.open_connection("SCP").await?;
            let ctx = crate::scp::ScpContext {
                fs: opened.fs.clone(),
                rules: opened.rules.clone(),
                conn: opened.conn.clone(),
            };
            self.spawn_connection(&opened, "scp", slot, |gone| {
                until_gone(gone, crate::scp::run(channel, args, ctx))
            });
            return Ok(());
        }
        let opened = self.open_connection("SSH").await?;
        let ctx = crate::commands::CommandContext {
            fs: opened.fs.clone(),
            rules: opened.rules.clone(),
            conn: opened.conn.clone(),
            owner: opened.owner,
        };
        self.spawn_connection(&opened, "ssh command", slot, |gone| {
            until_gone(gone, crate::commands::run(channel, command, ctx))
        });
        Ok(())
    }
}

/// Runs `work` until it ends, or at most [`GONE_GRACE`] after the session
/// did. Its own waits end with the session (reads see the channel end,
/// writes fail), so it normally finishes by itself and ends its uploads and
/// child programs properly; the grace is a backstop, after which it is
/// dropped (an unfinished upload's temporary file goes, a child program is
/// killed).
async fn until_gone(gone: CancellationToken, work: impl std::future::Future<Output = ()>) {
    tokio::select! {
        () = work => {}
        () = async {
            gone.cancelled().await;
            tokio::time::sleep(GONE_GRACE).await;
        } => {
            warn!("a channel's task did not end with its session; stopped");
        }
    }
}

/// See [`until_gone`].
const GONE_GRACE: Duration = Duration::from_secs(10);

/// A connection's storage, permissions and registry entry.
struct Opened {
    fs: UserFs,
    rules: Arc<UserPolicy>,
    owner: Option<(u32, u32)>,
    conn: Arc<crate::registry::Connection>,
    connection_id: String,
    username: String,
}

impl Drop for SshHandler {
    fn drop(&mut self) {
        self.gone.cancel();
        for connection_id in self.ctx.registry.remove_session(self.session_no) {
            self.ctx
                .control
                .send_event(edge_message::Kind::ConnectionClosed(ConnectionClosed {
                    connection_id,
                }));
        }
        if let Some(auth) = &self.auth {
            self.ctx
                .control
                .send_event(edge_message::Kind::SessionEnded(SessionEnded {
                    lease_id: auth.lease_id.clone(),
                }));
        }
    }
}

impl russh::server::Handler for SshHandler {
    type Error = russh::Error;

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        let banner = self
            .ctx
            .config
            .borrow()
            .as_ref()
            .map(|c| c.login_banner.clone())
            .unwrap_or_default();
        Ok((!banner.is_empty()).then_some(banner))
    }

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(self.reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self
            .login(
                user,
                login_request::Credential::Password(password.to_string()),
            )
            .await)
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let Some(cred) = Self::key_credential(offer.public_key, false) else {
            return Ok(self.reject());
        };
        Ok(self.login(user, cred).await)
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let Some(cred) = Self::key_credential(key.public_key, true) else {
            return Ok(self.reject());
        };
        Ok(self.login(user, cred).await)
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        // russh checked the validity window and that the certificate's key
        // signed the request; the control plane checks the rest.
        let Ok(text) = certificate.to_openssh() else {
            return Ok(self.reject());
        };
        Ok(self
            .login(user, login_request::Credential::Certificate(text))
            .await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        const MAX_ANSWERS: usize = 32;
        const MAX_ANSWER_LEN: usize = 4096;
        let answers: Option<Vec<String>> = response.map(|response| {
            response
                .take(MAX_ANSWERS)
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(MAX_ANSWER_LEN)]).into_owned())
                .collect()
        });
        let hook = self
            .ctx
            .config
            .borrow()
            .as_ref()
            .is_some_and(|c| c.keyboard_interactive_hook);
        if hook {
            return Ok(self.ki_hook_round(user, answers).await);
        }
        let (answers, state) = match answers {
            None => (Vec::new(), String::new()),
            Some(answers) => (answers, std::mem::take(&mut self.ki_state)),
        };
        Ok(self
            .login(
                user,
                login_request::Credential::KeyboardInteractive(
                    ferry_proto::edge::v1::KeyboardInteractive { answers, state },
                ),
            )
            .await)
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.client_version = String::from_utf8_lossy(session.remote_sshid()).into_owned();
        if let Some(auth) = &self.auth {
            self.ctx.registry.add_session(
                self.session_no,
                &auth.policy.username,
                &auth.lease_id,
                session.handle(),
            );
        }
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.budget.channel() {
            Ok(slot) => {
                self.channels.insert(channel.id(), (channel, slot));
                reply.accept().await;
            }
            Err(e) => {
                e.record();
                reply
                    .reject(russh::ChannelOpenFailure::ResourceShortage)
                    .await;
            }
        }
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name != "sftp" {
            debug!(name, "unsupported subsystem refused");
            session.channel_failure(channel_id)?;
            return Ok(());
        }
        let Some((channel, slot)) = self.channels.remove(&channel_id) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        match self.start_sftp(channel, slot).await {
            Ok(()) => session.channel_success(channel_id)?,
            Err(e) => {
                warn!(error = e, "cannot start sftp");
                session.channel_failure(channel_id)?;
            }
        }
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel_id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some((channel, slot)) = self.channels.remove(&channel_id) else {
            session.channel_failure(channel_id)?;
            return Ok(());
        };
        let command = self.ctx.commands.filter(crate::commands::parse(data));
        info!(
            sender = "SSHCommand",
            username = self
                .auth
                .as_ref()
                .map(|a| a.policy.username.as_str())
                .unwrap_or_default(),
            ssh_command = String::from_utf8_lossy(data).as_ref(),
            remote_addr = %self.peer,
            accepted = !matches!(command, crate::commands::Command::Unsupported { .. }),
            "ssh command"
        );
        crate::metrics::METRICS.ssh_commands.inc();
        if matches!(command, crate::commands::Command::Unsupported { .. }) {
            crate::metrics::METRICS.ssh_command_errors.inc();
        }
        match self.start_command(channel, slot, command).await {
            Ok(()) => session.channel_success(channel_id)?,
            Err(e) => {
                crate::metrics::METRICS.ssh_command_errors.inc();
                warn!(error = e, "cannot start ssh command");
                session.channel_failure(channel_id)?;
            }
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel_id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel_id)?;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}
