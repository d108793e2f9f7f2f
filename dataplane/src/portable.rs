//! Portable mode (`ferry-edge portable`): share one directory with one user
//! and no control plane. A fixed policy source serves the same gRPC contract
//! (`ferry.edge.v1.EdgeControl`) a control plane serves, in-process on a
//! loopback port with a random token, so the edge runs unchanged.
// Portable mode reads its own key files and checks the shared directory
// it was started with (an operator's path) before handing it to the storage layer.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use anyhow::Context;
use ferry_proto::edge::v1::edge_control_server::{EdgeControl, EdgeControlServer};
use ferry_proto::edge::v1::{
    Challenge, ConnectionCheck, ConnectionVerdict, ControlMessage, EdgeConfig, EdgeMessage,
    KiControlMessage, KiEdgeMessage, LoginOutcome, LoginRequest, LoginResponse, PermissionList,
    Prompt, QuotaStatusRequest, QuotaStatusResponse, ReserveRequest, ReserveResponse, SessionLease,
    SessionPolicy, SettleRequest, SettleResponse, control_message, login_request,
};
use russh::keys::{Algorithm, PrivateKey, PublicKey};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// `ferry-edge portable` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PortableArgs {
    /// The directory to share (the user's home).
    #[arg(long)]
    pub directory: PathBuf,
    /// Login name.
    #[arg(long, default_value = "user")]
    pub username: String,
    /// Password; without it and without keys, one is generated and printed.
    #[arg(long, env = "FERRY_PORTABLE_PASSWORD")]
    pub password: Option<String>,
    /// Public key (authorized_keys line, or a file holding such lines); repeatable.
    #[arg(long = "public-key")]
    pub public_keys: Vec<String>,
    /// Permissions on `/`, comma separated (`*` for all; e.g. list,download).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub permissions: Vec<String>,
    /// Address the SFTP listener binds to (port 0: any free port; see
    /// --addr-file).
    #[arg(long, default_value = "0.0.0.0:2022")]
    pub sftp_bind: SocketAddr,
}

/// The one user portable mode serves.
struct PortableUser {
    username: String,
    password: Option<String>,
    keys: Vec<PublicKey>,
    policy: SessionPolicy,
}

struct PortableControl {
    host_key: String,
    user: PortableUser,
}

/// What portable mode prints and serves.
pub struct Portable {
    pub edge: crate::RunningEdge,
    /// The in-process policy source's gRPC listener (loopback).
    pub policy_addr: SocketAddr,
    pub username: String,
    /// Set when generated (printed for the operator).
    pub generated_password: Option<String>,
    pub host_key_fingerprint: String,
}

fn parse_keys(items: &[String]) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for item in items {
        let text = if std::path::Path::new(item).is_file() {
            std::fs::read_to_string(item)
                .with_context(|| format!("--public-key: cannot read {item}"))?
        } else {
            item.clone()
        };
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            keys.push(
                PublicKey::from_openssh(line).map_err(|e| {
                    anyhow::anyhow!("--public-key: {line:?} is not a public key: {e}")
                })?,
            );
        }
    }
    Ok(keys)
}

/// Starts portable mode: the policy source, then the edge.
pub async fn start(
    args: PortableArgs,
    runtime: crate::settings::EdgeRuntime,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Portable> {
    let directory = std::fs::canonicalize(&args.directory)
        .with_context(|| format!("--directory {}", args.directory.display()))?;
    anyhow::ensure!(
        directory.is_dir(),
        "--directory {} is not a directory",
        directory.display()
    );
    anyhow::ensure!(
        !args.username.is_empty()
            && args
                .username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c)),
        "--username {:?}: only letters, digits and \"-_.~\" are allowed",
        args.username
    );
    let keys = parse_keys(&args.public_keys)?;
    let mut generated_password = None;
    let password = match (&args.password, keys.is_empty()) {
        (Some(p), _) if p.is_empty() => anyhow::bail!("--password must not be empty"),
        (Some(p), _) => Some(p.clone()),
        (None, false) => None,
        (None, true) => {
            let p = format!("{:032x}", rand::random::<u128>());
            generated_password = Some(p.clone());
            Some(p)
        }
    };
    ferry_proto::permissions::PermissionMap::validate(&std::collections::BTreeMap::from([(
        "/".to_string(),
        args.permissions.clone(),
    )]))
    .map_err(|e| anyhow::anyhow!("--permissions: {e}"))?;
    let host = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|e| anyhow::anyhow!("cannot generate a host key: {e}"))?;
    let host_key_fingerprint = host
        .public_key()
        .fingerprint(Default::default())
        .to_string();
    let host_key = host
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode the host key: {e}"))?
        .to_string();
    let policy = SessionPolicy {
        username: args.username.clone(),
        home_dir: directory.display().to_string(),
        permissions: HashMap::from([(
            "/".to_string(),
            PermissionList {
                permissions: args.permissions.clone(),
            },
        )]),
        ..Default::default()
    };
    let control = PortableControl {
        host_key,
        user: PortableUser {
            username: args.username.clone(),
            password,
            keys,
            policy,
        },
    };
    let token = format!("{:032x}", rand::random::<u128>());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the policy source's gRPC listener")?;
    let addr = listener.local_addr()?;
    tracing::info!(
        listener = crate::listeners::ListenerKind::Grpc.as_str(),
        %addr,
        "listening"
    );
    let expected = format!("Bearer {token}");
    let service = EdgeControlServer::with_interceptor(control, move |req: Request<()>| {
        let given = req
            .metadata()
            .get(ferry_proto::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("invalid token"))
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let edge = crate::start_edge(
        crate::EdgeOptions {
            control_plane: format!("http://{addr}"),
            token: Some(token),
            sftp_binds: vec![args.sftp_bind],
            edge_id: Some("portable".into()),
            runtime,
            telemetry_bind: None,
            enable_profiler: false,
        },
        shutdown,
    )
    .await?;
    Ok(Portable {
        edge,
        policy_addr: addr,
        username: args.username,
        generated_password,
        host_key_fingerprint,
    })
}

impl Portable {
    /// The bound listeners, for `--addr-file`.
    pub fn bound_addrs(&self) -> crate::listeners::BoundAddrs {
        let mut addrs = self.edge.bound_addrs();
        addrs.push(crate::listeners::ListenerKind::Grpc, self.policy_addr);
        addrs
    }
}

fn reply(outcome: LoginOutcome) -> LoginResponse {
    LoginResponse {
        outcome: outcome as i32,
        ..Default::default()
    }
}

impl PortableControl {
    fn password_ok(&self, given: &str) -> bool {
        self.user
            .password
            .as_ref()
            .is_some_and(|p| bool::from(p.as_bytes().ct_eq(given.as_bytes())))
    }

    fn accepted(&self) -> LoginResponse {
        LoginResponse {
            outcome: LoginOutcome::Accepted as i32,
            policy: Some(self.user.policy.clone()),
            lease: Some(SessionLease {
                lease_id: format!("{:016x}", rand::random::<u64>()),
                expires_at_ms: i64::MAX,
            }),
            ..Default::default()
        }
    }

    fn decide(&self, req: &LoginRequest) -> LoginResponse {
        let same_user = bool::from(req.username.as_bytes().ct_eq(self.user.username.as_bytes()));
        match &req.credential {
            Some(login_request::Credential::Password(p)) if same_user && self.password_ok(p) => {
                self.accepted()
            }
            Some(login_request::Credential::PublicKey(k)) if same_user => {
                let known = PublicKey::from_openssh(&k.public_key).is_ok_and(|offered| {
                    self.user
                        .keys
                        .iter()
                        .any(|key| key.key_data() == offered.key_data())
                });
                match (known, k.verified) {
                    (true, false) => reply(LoginOutcome::KeyAcceptable),
                    (true, true) => self.accepted(),
                    _ => reply(LoginOutcome::Rejected),
                }
            }
            Some(login_request::Credential::KeyboardInteractive(ki)) if ki.state.is_empty() => {
                LoginResponse {
                    outcome: LoginOutcome::Challenge as i32,
                    challenge: Some(Challenge {
                        name: String::new(),
                        instruction: String::new(),
                        prompts: vec![Prompt {
                            text: "Password: ".into(),
                            echo: false,
                        }],
                        state: "password".into(),
                    }),
                    ..Default::default()
                }
            }
            Some(login_request::Credential::KeyboardInteractive(ki))
                if same_user && ki.answers.len() == 1 && self.password_ok(&ki.answers[0]) =>
            {
                self.accepted()
            }
            _ => reply(LoginOutcome::Rejected),
        }
    }
}

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl EdgeControl for PortableControl {
    type AttachStream = Boxed<ControlMessage>;
    type KeyboardInteractiveStream = Boxed<KiControlMessage>;

    async fn attach(
        &self,
        request: Request<Streaming<EdgeMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let config = ControlMessage {
            kind: Some(control_message::Kind::Config(EdgeConfig {
                host_keys: vec![self.host_key.clone()],
                server_version: format!("Ferry_{}", ferry_proto::VERSION),
                lease_ttl_seconds: 3600,
                heartbeat_interval_ms: 10_000,
                password_authentication: self.user.password.is_some(),
                keyboard_interactive_authentication: self.user.password.is_some(),
                max_auth_tries: 6,
                post_connect_hook: false,
                keyboard_interactive_hook: false,
                login_banner: String::new(),
            })),
        };
        tx.send(Ok(config))
            .await
            .map_err(|_| Status::internal("edge stream closed"))?;
        // Events are not needed here; the stream stays open while the edge
        // sends them.
        tokio::spawn(async move {
            while let Ok(Some(_)) = inbound.message().await {}
            drop(tx);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        Ok(Response::new(self.decide(request.get_ref())))
    }

    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        // No quota in portable mode.
        let req = request.into_inner();
        Ok(Response::new(ReserveResponse {
            granted: true,
            reservation_id: if req.reservation_id.is_empty() {
                format!("{:016x}", rand::random::<u64>())
            } else {
                req.reservation_id
            },
            bytes_granted: req.bytes_wanted,
            message: String::new(),
        }))
    }

    async fn settle(
        &self,
        _request: Request<SettleRequest>,
    ) -> Result<Response<SettleResponse>, Status> {
        Ok(Response::new(SettleResponse {}))
    }

    async fn quota_status(
        &self,
        _request: Request<QuotaStatusRequest>,
    ) -> Result<Response<QuotaStatusResponse>, Status> {
        Ok(Response::new(QuotaStatusResponse::default()))
    }

    async fn check_connection(
        &self,
        _request: Request<ConnectionCheck>,
    ) -> Result<Response<ConnectionVerdict>, Status> {
        Ok(Response::new(ConnectionVerdict {
            allowed: true,
            message: String::new(),
        }))
    }

    async fn keyboard_interactive(
        &self,
        _request: Request<Streaming<KiEdgeMessage>>,
    ) -> Result<Response<Self::KeyboardInteractiveStream>, Status> {
        Err(Status::unimplemented(
            "no keyboard-interactive hook in portable mode",
        ))
    }
}
