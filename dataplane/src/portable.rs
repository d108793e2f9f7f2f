//! Portable mode (`ferry-edge portable`): share one directory (or an object
//! store: SFTPGo's `--fs-provider` and `--s3-*`, `--gcs-*`, `--az-*` flags)
//! with one user and no control plane. A fixed policy source serves the same gRPC contract
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
    SessionPolicy, SettleRequest, SettleResponse, Storage, control_message, login_request,
};
use ferry_proto::storage;
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
    /// Boxed: the storage flags would make every `ferry-edge` command as
    /// large as portable mode's.
    #[command(flatten)]
    pub storage: Box<StorageArgs>,
}

/// Where the shared files live (SFTPGo's portable-mode flags): the local
/// `--directory` by default, or an object store, whose settings are checked
/// by the rules the REST API applies. Part sizes are in MB, as in SFTPGo.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// 0 or osfs (the local --directory), 1 or s3fs, 2 or gcsfs, 3 or azblobfs
    /// (local, s3, gcs and azblob are accepted too).
    #[arg(long, default_value = "osfs")]
    pub fs_provider: String,
    #[arg(long, default_value = "")]
    pub s3_bucket: String,
    #[arg(long, default_value = "")]
    pub s3_region: String,
    #[arg(long, default_value = "")]
    pub s3_access_key: String,
    #[arg(
        long,
        env = "FERRY_PORTABLE_S3_ACCESS_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub s3_access_secret: String,
    #[arg(long, default_value = "")]
    pub s3_role_arn: String,
    /// S3-compatible server's URL (e.g. http://127.0.0.1:9000).
    #[arg(long, default_value = "")]
    pub s3_endpoint: String,
    #[arg(long, default_value = "")]
    pub s3_storage_class: String,
    #[arg(long, default_value = "")]
    pub s3_acl: String,
    /// Only objects under this prefix are shared (e.g. `users/ann/`).
    #[arg(long, default_value = "")]
    pub s3_key_prefix: String,
    /// MB per multipart part (0: the default; at least 5).
    #[arg(long, default_value_t = 5)]
    pub s3_upload_part_size: i64,
    /// Parts uploaded at once (0: the default).
    #[arg(long, default_value_t = 2)]
    pub s3_upload_concurrency: i32,
    /// Path-style requests (most S3-compatible servers need them).
    #[arg(long)]
    pub s3_force_path_style: bool,
    /// Accept any TLS certificate from the endpoint (tests only).
    #[arg(long)]
    pub s3_skip_tls_verify: bool,
    #[arg(long, default_value = "")]
    pub gcs_bucket: String,
    /// Service account key (JSON) file; implies --gcs-automatic-credentials 0.
    #[arg(long)]
    pub gcs_credentials_file: Option<PathBuf>,
    /// 1: the environment's credentials (application default credentials);
    /// 0: the key in --gcs-credentials-file.
    #[arg(long, default_value_t = 1)]
    pub gcs_automatic_credentials: i64,
    #[arg(long, default_value = "")]
    pub gcs_storage_class: String,
    #[arg(long, default_value = "")]
    pub gcs_key_prefix: String,
    #[arg(long, default_value = "")]
    pub az_container: String,
    #[arg(long, default_value = "")]
    pub az_account_name: String,
    #[arg(
        long,
        env = "FERRY_PORTABLE_AZ_ACCOUNT_KEY",
        default_value = "",
        hide_env_values = true
    )]
    pub az_account_key: String,
    /// Shared access signature URL, instead of an account key.
    #[arg(
        long,
        env = "FERRY_PORTABLE_AZ_SAS_URL",
        default_value = "",
        hide_env_values = true
    )]
    pub az_sas_url: String,
    /// Domain (default blob.core.windows.net), or the emulator's URL.
    #[arg(long, default_value = "")]
    pub az_endpoint: String,
    /// "", Archive, Hot or Cool.
    #[arg(long, default_value = "")]
    pub az_access_tier: String,
    #[arg(long, default_value = "")]
    pub az_key_prefix: String,
    /// MB per block (0: the default; at most 100).
    #[arg(long, default_value_t = 5)]
    pub az_upload_part_size: i64,
    #[arg(long, default_value_t = 5)]
    pub az_upload_concurrency: i32,
    #[arg(long, default_value_t = 5)]
    pub az_download_part_size: i64,
    #[arg(long, default_value_t = 5)]
    pub az_download_concurrency: i32,
    /// Azurite's URL layout (the account in the path).
    #[arg(long)]
    pub az_use_emulator: bool,
}

/// The `--fs-provider` values: SFTPGo's numbers and names.
fn parse_provider(v: &str) -> anyhow::Result<i32> {
    let n = match v.trim().to_ascii_lowercase().as_str() {
        "0" | "osfs" | "local" => 0,
        "1" | "s3fs" | "s3" => 1,
        "2" | "gcsfs" | "gcs" => 2,
        "3" | "azblobfs" | "azblob" => 3,
        "4" | "cryptfs" => 4,
        "5" | "sftpfs" => 5,
        "6" | "httpfs" => 6,
        _ => {
            anyhow::bail!("--fs-provider {v:?}: use 0 (osfs), 1 (s3fs), 2 (gcsfs) or 3 (azblobfs)")
        }
    };
    storage::check_provider(n).map_err(|e| anyhow::anyhow!("--fs-provider: {e}"))
}

/// The portable flag that sets a storage field (SFTPGo's flag names).
fn flag_for(e: &storage::InvalidStorage) -> String {
    let prefix = match e.section {
        None => return "--fs-provider".into(),
        Some("s3config") => "s3",
        Some("gcsconfig") => "gcs",
        _ => "az",
    };
    match e.key {
        "credentials" => "--gcs-credentials-file".into(),
        key => format!("--{prefix}-{}", key.replace('_', "-")),
    }
}

/// SFTPGo's MB to bytes; an overflow stays too large for the checks.
fn mb(n: i64) -> i64 {
    n.saturating_mul(storage::MB)
}

impl StorageArgs {
    /// The object store the flags describe, checked; None for the local
    /// directory. Errors name the flag and the rule (the REST API's words).
    pub fn storage(&self) -> anyhow::Result<Option<Storage>> {
        let provider = parse_provider(&self.fs_provider)?;
        let prefix = |flag: &str, p: &str| {
            storage::normalize_key_prefix(p).map_err(|problem| {
                let section = storage::section(provider).unwrap_or_default();
                anyhow::anyhow!("{flag}: filesystem.{section}.key_prefix {problem}")
            })
        };
        let mut s = match provider {
            storage::S3 => Storage {
                bucket: self.s3_bucket.clone(),
                region: self.s3_region.clone(),
                access_key: self.s3_access_key.clone(),
                secret: self.s3_access_secret.clone(),
                role_arn: self.s3_role_arn.clone(),
                endpoint: self.s3_endpoint.clone(),
                storage_class: self.s3_storage_class.trim().to_string(),
                acl: self.s3_acl.trim().to_string(),
                key_prefix: prefix("--s3-key-prefix", &self.s3_key_prefix)?,
                upload_part_size: mb(self.s3_upload_part_size),
                upload_concurrency: self.s3_upload_concurrency,
                force_path_style: self.s3_force_path_style,
                skip_tls_verify: self.s3_skip_tls_verify,
                ..Default::default()
            },
            storage::GCS => {
                let automatic = match (&self.gcs_credentials_file, self.gcs_automatic_credentials) {
                    (Some(_), _) | (None, 0) => false,
                    (None, 1) => true,
                    (None, n) => anyhow::bail!(
                        "--gcs-automatic-credentials {n}: use 1 (the environment's credentials) \
                         or 0 (with --gcs-credentials-file)"
                    ),
                };
                let secret = match &self.gcs_credentials_file {
                    Some(path) => std::fs::read_to_string(path).with_context(|| {
                        format!("--gcs-credentials-file: cannot read {}", path.display())
                    })?,
                    None => String::new(),
                };
                Storage {
                    bucket: self.gcs_bucket.clone(),
                    secret,
                    automatic_credentials: automatic,
                    storage_class: self.gcs_storage_class.trim().to_string(),
                    key_prefix: prefix("--gcs-key-prefix", &self.gcs_key_prefix)?,
                    ..Default::default()
                }
            }
            storage::AZURE_BLOB => Storage {
                bucket: self.az_container.clone(),
                access_key: self.az_account_name.clone(),
                secret: self.az_account_key.clone(),
                sas_url: self.az_sas_url.clone(),
                endpoint: self.az_endpoint.clone(),
                storage_class: self.az_access_tier.trim().to_string(),
                key_prefix: prefix("--az-key-prefix", &self.az_key_prefix)?,
                upload_part_size: mb(self.az_upload_part_size),
                upload_concurrency: self.az_upload_concurrency,
                download_part_size: mb(self.az_download_part_size),
                download_concurrency: self.az_download_concurrency,
                use_emulator: self.az_use_emulator,
                ..Default::default()
            },
            _ => return Ok(None),
        };
        s.provider = provider;
        storage::complete_azure(&mut s)
            .and_then(|()| storage::validate(&s))
            .map_err(|e| anyhow::anyhow!("{}: {e}", flag_for(&e)))?;
        Ok(Some(s))
    }
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
    let storage = args.storage.storage()?;
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
        storage,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        storage: StorageArgs,
    }

    fn storage(args: &[&str]) -> anyhow::Result<Option<Storage>> {
        let flags = Flags::try_parse_from(std::iter::once("portable").chain(args.iter().copied()))?;
        flags.storage.storage()
    }

    #[test]
    fn flags_give_the_storage() {
        assert_eq!(storage(&[]).unwrap(), None, "the local directory");
        assert_eq!(storage(&["--fs-provider", "0"]).unwrap(), None);
        let s3 = storage(&[
            "--fs-provider",
            "s3fs",
            "--s3-bucket",
            "b",
            "--s3-region",
            "eu-west-1",
            "--s3-access-key",
            "AK",
            "--s3-access-secret",
            "SK",
            "--s3-endpoint",
            "http://127.0.0.1:9000",
            "--s3-key-prefix",
            "share",
            "--s3-upload-part-size",
            "8",
            "--s3-force-path-style",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            s3,
            Storage {
                provider: storage::S3,
                bucket: "b".into(),
                region: "eu-west-1".into(),
                access_key: "AK".into(),
                secret: "SK".into(),
                endpoint: "http://127.0.0.1:9000".into(),
                key_prefix: "share/".into(),
                upload_part_size: 8 * storage::MB,
                upload_concurrency: 2,
                force_path_style: true,
                ..Default::default()
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("sa.json");
        std::fs::write(&key, r#"{"type": "service_account"}"#).unwrap();
        let gcs = storage(&[
            "--fs-provider",
            "2",
            "--gcs-bucket",
            "g",
            "--gcs-credentials-file",
            key.to_str().unwrap(),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                gcs.bucket.as_str(),
                gcs.automatic_credentials,
                gcs.secret.as_str()
            ),
            ("g", false, r#"{"type": "service_account"}"#)
        );
        let auto = storage(&["--fs-provider", "gcs", "--gcs-bucket", "g"])
            .unwrap()
            .unwrap();
        assert!(auto.automatic_credentials && auto.secret.is_empty());
        let az = storage(&[
            "--fs-provider",
            "azblobfs",
            "--az-container",
            "c",
            "--az-account-name",
            "acct",
            "--az-account-key",
            "K",
            "--az-endpoint",
            "blob.core.windows.net",
            "--az-access-tier",
            "Hot",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                az.bucket.as_str(),
                az.endpoint.as_str(),
                az.storage_class.as_str(),
                az.upload_part_size,
                az.upload_concurrency
            ),
            (
                "c",
                "https://acct.blob.core.windows.net",
                "Hot",
                5 * storage::MB,
                5
            )
        );
    }

    /// Bad flags fail naming the flag and the rule, in the REST API's words.
    #[test]
    fn bad_flags_are_named() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--fs-provider", "s3"],
                "--s3-bucket: filesystem.s3config.bucket is required",
            ),
            (
                &["--fs-provider", "s3", "--s3-bucket", "b"],
                "--s3-region: filesystem.s3config.region is required (unless an endpoint is set)",
            ),
            (
                &[
                    "--fs-provider",
                    "s3",
                    "--s3-bucket",
                    "b",
                    "--s3-region",
                    "r",
                    "--s3-upload-part-size",
                    "4",
                ],
                "--s3-upload-part-size: filesystem.s3config.upload_part_size must be at least 5 (MB)",
            ),
            (
                &[
                    "--fs-provider",
                    "s3",
                    "--s3-bucket",
                    "b",
                    "--s3-region",
                    "r",
                    "--s3-key-prefix",
                    "/abs",
                ],
                "--s3-key-prefix: filesystem.s3config.key_prefix must not start with \"/\" and must end with \"/\"",
            ),
            (
                &[
                    "--fs-provider",
                    "s3",
                    "--s3-bucket",
                    "b",
                    "--s3-region",
                    "r",
                    "--s3-access-key",
                    "AK",
                ],
                "--s3-access-secret: filesystem.s3config.access_secret is required with access_key",
            ),
            (
                &[
                    "--fs-provider",
                    "gcsfs",
                    "--gcs-bucket",
                    "g",
                    "--gcs-automatic-credentials",
                    "0",
                ],
                "--gcs-credentials-file: filesystem.gcsconfig.credentials is required when automatic_credentials is 0",
            ),
            (
                &["--fs-provider", "azblob", "--az-container", "c"],
                "--az-account-name: filesystem.azblobconfig.account_name is required (or a sas_url, or use_emulator)",
            ),
            (
                &[
                    "--fs-provider",
                    "azblob",
                    "--az-container",
                    "c",
                    "--az-use-emulator",
                    "--az-upload-concurrency",
                    "65",
                ],
                "--az-upload-concurrency: filesystem.azblobconfig.upload_concurrency must be between 0 (the default) and 64",
            ),
            (
                &["--fs-provider", "cryptfs"],
                "--fs-provider: filesystem.provider 4 (local encrypted) is not supported",
            ),
            (
                &["--fs-provider", "ftp"],
                "--fs-provider \"ftp\": use 0 (osfs), 1 (s3fs), 2 (gcsfs) or 3 (azblobfs)",
            ),
        ];
        for (args, want) in cases {
            let err = storage(args).unwrap_err().to_string();
            assert!(err.starts_with(want), "{args:?}: {err:?} is not {want:?}…");
        }
    }
}
