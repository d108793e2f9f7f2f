//! The `ferry.edge.v1` service edges call: Attach (config out, events in)
//! and Login (credential checks; success returns policy and a lease).

use std::pin::Pin;
use std::sync::Arc;

use ferry_proto::edge::v1::edge_control_server::EdgeControl;
use ferry_proto::edge::v1::{
    ControlMessage, EdgeConfig, EdgeMessage, LoginOutcome, LoginRequest, LoginResponse,
    QuotaStatusRequest, QuotaStatusResponse, ReserveRequest, ReserveResponse, SessionLease,
    SettleRequest, SettleResponse, control_message, edge_message, login_request,
};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::AppState;
use crate::store::{StoreError, now_ms};

/// Longest edge id we accept (it is echoed in REST and logs).
const MAX_EDGE_ID_LEN: usize = 128;
/// Commands queued per edge before new ones are dropped with a warning.
const EDGE_COMMAND_QUEUE: usize = 256;

pub struct EdgeService {
    state: Arc<AppState>,
}

impl EdgeService {
    pub fn new(state: Arc<AppState>) -> Self {
        Self { state }
    }
}

/// Builds the interceptor that checks the edge token on every call. `None`
/// means no token is configured (only allowed on loopback binds).
pub fn token_interceptor(
    expected: Option<Arc<String>>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |req: Request<()>| {
        let Some(expected) = expected.as_ref() else {
            return Ok(req);
        };
        let presented = req
            .metadata()
            .get(ferry_proto::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("invalid edge token"))
        }
    }
}

fn rejected(message: impl Into<String>) -> LoginResponse {
    LoginResponse {
        outcome: LoginOutcome::Rejected as i32,
        message: message.into(),
        policy: None,
        lease: None,
    }
}

type ControlStream = Pin<Box<dyn Stream<Item = Result<ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl EdgeControl for EdgeService {
    type AttachStream = ControlStream;

    async fn attach(
        &self,
        request: Request<Streaming<EdgeMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(EdgeMessage {
                kind: Some(edge_message::Kind::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
        };
        if hello.edge_id.is_empty() || hello.edge_id.len() > MAX_EDGE_ID_LEN {
            return Err(Status::invalid_argument(format!(
                "edge_id must be 1 to {MAX_EDGE_ID_LEN} bytes"
            )));
        }
        let (tx, rx) = mpsc::channel(EDGE_COMMAND_QUEUE);
        let config = ControlMessage {
            kind: Some(control_message::Kind::Config(EdgeConfig {
                host_keys: self.state.host_keys.clone(),
                server_version: self.state.server_version.clone(),
                lease_ttl_seconds: self.state.fleet.lease_ttl().as_secs() as u32,
                heartbeat_interval_ms: self.state.fleet.heartbeat_interval().as_millis() as u32,
            })),
        };
        tx.send(config)
            .await
            .map_err(|_| Status::internal("edge stream closed"))?;
        let edge_id = hello.edge_id.clone();
        let generation = self
            .state
            .fleet
            .attach(&edge_id, &hello.version, &hello.instance_id, tx);
        info!(
            edge_id,
            version = hello.version,
            sftp = hello.sftp_address,
            "edge attached"
        );
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(msg)) => handle_edge_message(&state, &edge_id, msg),
                    Ok(None) => break,
                    Err(e) => {
                        warn!(edge_id, error = %e, "edge stream failed");
                        break;
                    }
                }
            }
            state.fleet.detach(&edge_id, generation);
            info!(edge_id, "edge detached");
        });
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            ReceiverStream::new(rx),
            Ok,
        ))))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let req = request.into_inner();
        let reply = login(&self.state, req).await.map_err(|e| match e {
            StoreError::Unavailable(m) => Status::unavailable(m),
            other => Status::internal(other.to_string()),
        })?;
        Ok(Response::new(reply))
    }

    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        let req = request.into_inner();
        let reply = crate::quota::reserve(&self.state, req)
            .await
            .map_err(store_status)?;
        Ok(Response::new(reply))
    }

    async fn settle(
        &self,
        request: Request<SettleRequest>,
    ) -> Result<Response<SettleResponse>, Status> {
        let req = request.into_inner();
        crate::quota::settle(&self.state, req)
            .await
            .map_err(store_status)?;
        Ok(Response::new(SettleResponse {}))
    }

    async fn quota_status(
        &self,
        request: Request<QuotaStatusRequest>,
    ) -> Result<Response<QuotaStatusResponse>, Status> {
        let req = request.into_inner();
        let reply = crate::quota::status(&self.state, req.username, req.folder)
            .await
            .map_err(store_status)?;
        Ok(Response::new(reply))
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(m) => Status::unavailable(m),
        StoreError::NotFound => Status::not_found("no such user"),
        other => Status::internal(other.to_string()),
    }
}

fn handle_edge_message(state: &Arc<AppState>, edge_id: &str, msg: EdgeMessage) {
    match msg.kind {
        Some(edge_message::Kind::Heartbeat(hb)) => {
            state
                .fleet
                .heartbeat(edge_id, hb.connections, &hb.lease_ids);
            for u in hb.usage {
                let state = state.clone();
                tokio::spawn(async move { crate::quota::apply_batch(&state, u).await });
            }
        }
        Some(edge_message::Kind::ConnectionOpened(c)) => {
            info!(
                edge_id,
                connection_id = c.connection_id,
                username = c.username,
                remote_address = c.remote_address,
                protocol = c.protocol,
                "connection opened"
            );
            state.fleet.connection_opened(edge_id, c)
        }
        Some(edge_message::Kind::ConnectionClosed(c)) => {
            info!(
                edge_id,
                connection_id = c.connection_id,
                "connection closed"
            );
            state.fleet.connection_closed(&c.connection_id)
        }
        Some(edge_message::Kind::SessionEnded(s)) => state.fleet.release_lease(&s.lease_id),
        Some(edge_message::Kind::QuotaScanned(done)) => {
            let state = state.clone();
            tokio::spawn(async move { crate::quota::scan_done(&state, done).await });
        }
        Some(edge_message::Kind::Hello(_)) | None => {
            warn!(edge_id, "unexpected message on attach stream")
        }
    }
}

/// Checks one authentication attempt.
async fn login(state: &AppState, req: LoginRequest) -> Result<LoginResponse, StoreError> {
    let username = req.username.clone();
    let user = match state.store.user(username.clone()).await {
        Ok(u) => Some(u),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e),
    };
    let method = match &req.credential {
        Some(login_request::Credential::Password(_)) => "password",
        Some(login_request::Credential::PublicKey(_)) => "publickey",
        None => "none",
    };
    let Some(user) = user else {
        if let Some(login_request::Credential::Password(p)) = req.credential {
            // Spend the same work as for a real user so timing does not tell
            // which usernames exist.
            crate::passwords::verify(p, state.dummy_hash.clone()).await;
        }
        info!(
            username,
            method,
            remote_address = req.remote_address,
            "login refused: no such user"
        );
        return Ok(rejected("no such user"));
    };
    // Who may log in from where, how: checked before any credential work.
    if let Err(reason) = check_filters(&user, method, &req.remote_address) {
        info!(
            username,
            method,
            remote_address = req.remote_address,
            reason,
            "login refused"
        );
        return Ok(rejected(reason));
    }
    let verdict = match req.credential {
        Some(login_request::Credential::Password(p)) => match user.data.password.clone() {
            Some(hash) if !hash.is_empty() => {
                if state
                    .verified
                    .verify(&username, p.clone(), hash.clone())
                    .await
                {
                    if crate::passwords::needs_upgrade(&hash) {
                        upgrade_hash(state, username.clone(), p, hash);
                    }
                    Ok(())
                } else {
                    Err("invalid password")
                }
            }
            _ => Err("the user has no password"),
        },
        Some(login_request::Credential::PublicKey(k)) => {
            match russh::keys::PublicKey::from_openssh(&k.public_key) {
                Err(_) => Err("unparsable public key"),
                Ok(offered) => {
                    let known = crate::users::public_keys(&user)
                        .iter()
                        .any(|key| key.key_data() == offered.key_data());
                    if !known {
                        Err("unknown public key")
                    } else if !k.verified {
                        // Only an offer: tell the edge to ask for the signature.
                        if let Err(reason) = check_account(&user) {
                            Err(reason)
                        } else {
                            return Ok(LoginResponse {
                                outcome: LoginOutcome::KeyAcceptable as i32,
                                message: String::new(),
                                policy: None,
                                lease: None,
                            });
                        }
                    } else {
                        Ok(())
                    }
                }
            }
        }
        None => Err("no credential"),
    };
    if let Err(reason) = verdict.and_then(|()| check_account(&user)) {
        info!(
            username,
            method,
            remote_address = req.remote_address,
            reason,
            "login refused"
        );
        return Ok(rejected(reason));
    }
    let Some((lease_id, expires)) =
        state
            .fleet
            .try_grant_lease(&username, &req.edge_id, user.data.max_sessions)
    else {
        info!(
            username,
            method,
            remote_address = req.remote_address,
            max_sessions = user.data.max_sessions,
            "login refused: too many open sessions"
        );
        return Ok(rejected("too many open sessions"));
    };
    let folders = match state.store.user_folders(user.id).await {
        Ok(f) => f,
        Err(e) => {
            state.fleet.release_lease(&lease_id);
            return Err(e);
        }
    };
    let expires_at_ms = now_ms()
        + expires
            .saturating_duration_since(std::time::Instant::now())
            .as_millis() as i64;
    if let Err(e) = state.store.set_last_login(username.clone(), now_ms()).await {
        warn!(username, error = %e, "cannot record last login");
    }
    info!(
        username,
        method,
        remote_address = req.remote_address,
        edge_id = req.edge_id,
        "login accepted"
    );
    Ok(LoginResponse {
        outcome: LoginOutcome::Accepted as i32,
        message: String::new(),
        policy: Some(crate::users::session_policy(
            &user,
            &folders,
            client_ip(&req.remote_address),
        )),
        lease: Some(SessionLease {
            lease_id,
            expires_at_ms,
        }),
    })
}

/// Re-hashes a password that verified against a legacy format with argon2id,
/// in the background: the login does not wait for it.
fn upgrade_hash(state: &AppState, username: String, plain: String, old: String) {
    let store = state.store.clone();
    tokio::spawn(async move {
        match crate::passwords::hash(plain).await {
            Ok(new) => match store.replace_password(username.clone(), old, new).await {
                Ok(true) => info!(username, "password hash upgraded to argon2id"),
                Ok(false) => {}
                Err(e) => warn!(username, error = %e, "cannot upgrade password hash"),
            },
            Err(e) => warn!(username, error = e, "cannot upgrade password hash"),
        }
    });
}

/// The user's login filters: protocol, method and source address.
fn check_filters(
    user: &crate::store::UserRow,
    method: &str,
    remote_address: &str,
) -> Result<(), &'static str> {
    let filters =
        crate::users::login_filters(user).map_err(|_| "the user's filters are invalid")?;
    if !filters.protocol_allowed("SSH") {
        return Err("protocol SSH is denied for this user");
    }
    if !filters.ssh_method_allowed(method) {
        return Err("login method denied for this user");
    }
    let ip = client_ip(remote_address).ok_or("unknown client address")?;
    if !filters.ip_allowed(ip) {
        return Err("client address not allowed for this user");
    }
    Ok(())
}

/// The client's IP from an edge-reported `ip:port` (or bare IP).
fn client_ip(remote_address: &str) -> Option<std::net::IpAddr> {
    remote_address
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| remote_address.parse::<std::net::IpAddr>())
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Account-level checks that apply to every method.
fn check_account(user: &crate::store::UserRow) -> Result<(), &'static str> {
    if user.data.status != 1 {
        return Err("user disabled");
    }
    if user.data.expiration_date > 0 && user.data.expiration_date < now_ms() {
        return Err("user expired");
    }
    Ok(())
}
