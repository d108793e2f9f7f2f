//! The `ferry.edge.v1` service edges call: Attach (config out, events in)
//! and Login (credential checks; success returns policy and a lease).

use std::pin::Pin;
use std::sync::Arc;

use ferry_proto::edge::v1::edge_control_server::EdgeControl;
use ferry_proto::edge::v1::{
    ConnectionCheck, ConnectionVerdict, ControlMessage, EdgeConfig, EdgeMessage, KiControlMessage,
    KiEdgeMessage, LoginRequest, LoginResponse, QuotaStatusRequest, QuotaStatusResponse,
    ReserveRequest, ReserveResponse, SettleRequest, SettleResponse, control_message, edge_message,
};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::AppState;
use crate::store::StoreError;

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

/// Refused edge calls are logged once a second at most.
static REFUSED_LOG: crate::log_throttle::LogThrottle = crate::log_throttle::LogThrottle::new();

/// Builds the interceptor that checks the edge token on every call (there
/// is always one: configured, or generated into the data directory).
pub fn token_interceptor(
    expected: Arc<String>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |req: Request<()>| {
        let presented = req
            .metadata()
            .get(ferry_proto::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.as_bytes()))) {
            return Ok(req);
        }
        let reason = if presented.is_none() {
            "missing edge token: start the edge with the control plane's token \
             (--edge-token-file, FERRY_EDGE_TOKEN; generated in the control plane's data directory \
             as edge-token when none is configured)"
        } else {
            "invalid edge token"
        };
        if let Some(suppressed) = REFUSED_LOG.admit() {
            let remote = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
            warn!(
                remote_address = remote,
                reason, suppressed, "edge call refused"
            );
        }
        Err(Status::unauthenticated(reason))
    }
}

type ControlStream = Pin<Box<dyn Stream<Item = Result<ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl EdgeControl for EdgeService {
    type AttachStream = ControlStream;
    type KeyboardInteractiveStream =
        Pin<Box<dyn Stream<Item = Result<KiControlMessage, Status>> + Send>>;

    async fn keyboard_interactive(
        &self,
        request: Request<Streaming<KiEdgeMessage>>,
    ) -> Result<Response<Self::KeyboardInteractiveStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(crate::ki_hook::serve(self.state.clone(), inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

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
                password_authentication: self.state.auth.password_authentication,
                keyboard_interactive_authentication: self
                    .state
                    .auth
                    .keyboard_interactive_authentication,
                max_auth_tries: self.state.auth.max_auth_tries,
                post_connect_hook: self.state.auth.hooks.post_connect.is_some(),
                keyboard_interactive_hook: self.state.auth.keyboard_interactive_hook.is_some(),
                login_banner: self.state.login_banner.clone(),
            })),
        };
        for msg in [config, self.state.defender.bans_message()] {
            tx.send(msg)
                .await
                .map_err(|_| Status::internal("edge stream closed"))?;
        }
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
        let reply = crate::auth::login(&self.state, req)
            .await
            .map_err(|e| match e {
                StoreError::Unavailable(m) => Status::unavailable(m),
                other => Status::internal(other.to_string()),
            })?;
        Ok(Response::new(reply))
    }

    async fn check_connection(
        &self,
        request: Request<ConnectionCheck>,
    ) -> Result<Response<ConnectionVerdict>, Status> {
        let req = request.into_inner();
        let ip = crate::auth::client_ip(&req.remote_address)
            .map(|i| i.to_string())
            .unwrap_or_default();
        let verdict = match crate::login_hooks::post_connect(&self.state, &ip).await {
            Ok(()) => ConnectionVerdict {
                allowed: true,
                message: String::new(),
            },
            Err(e) => {
                info!(
                    sender = "post_connect_hook",
                    remote_address = req.remote_address,
                    reason = e,
                    "connection refused"
                );
                ConnectionVerdict {
                    allowed: false,
                    message: e,
                }
            }
        };
        Ok(Response::new(verdict))
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
        Some(edge_message::Kind::NoAuth(n)) => crate::auth::no_auth(state, &n),
        Some(edge_message::Kind::QuotaScanned(done)) => {
            let state = state.clone();
            tokio::spawn(async move { crate::quota::scan_done(&state, done).await });
        }
        Some(edge_message::Kind::Hello(_)) | None => {
            warn!(edge_id, "unexpected message on attach stream")
        }
    }
}
