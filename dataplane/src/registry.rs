//! What is live on this edge: SSH sessions (with the russh handle that can
//! end them and their lease) and the connections (channels) inside them,
//! with activity and transfers for the control plane's connection list.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_proto::edge::v1::{ConnectionOpened, ConnectionStatus, Transfer, UploadRecovery};
use russh::Disconnect;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Session {
    username: String,
    lease_id: String,
    handle: russh::server::Handle,
    started_ms: i64,
}

/// One transfer in progress.
pub struct TransferState {
    pub operation: &'static str,
    pub path: String,
    pub start_ms: i64,
    pub size: AtomicI64,
    /// For uploads: how to recover it if this edge dies.
    pub recovery: Option<UploadRecovery>,
}

/// A live connection (one SFTP channel).
pub struct Connection {
    pub session: u64,
    pub opened: ConnectionOpened,
    last_activity: AtomicI64,
    transfers: Mutex<HashMap<u64, Arc<TransferState>>>,
    next_transfer: AtomicU64,
}

impl Connection {
    pub fn touch(&self) {
        self.last_activity.store(now_ms(), Ordering::Relaxed);
    }

    /// Records a transfer; it is listed until [`Connection::end_transfer`].
    pub fn begin_transfer(
        &self,
        operation: &'static str,
        path: String,
        recovery: Option<UploadRecovery>,
    ) -> (u64, Arc<TransferState>) {
        let id = self.next_transfer.fetch_add(1, Ordering::Relaxed);
        let t = Arc::new(TransferState {
            operation,
            path,
            start_ms: now_ms(),
            size: AtomicI64::new(0),
            recovery,
        });
        lock(&self.transfers).insert(id, t.clone());
        crate::metrics::METRICS.active_transfers.inc();
        (id, t)
    }

    /// Ends a transfer that completed.
    pub fn end_transfer(&self, id: u64) {
        self.finish_transfer(id, true);
    }

    /// Ends a transfer: counted in the metrics and logged as SFTPGo's
    /// transfer lines (sender `Upload`/`Download`).
    pub fn finish_transfer(&self, id: u64, ok: bool) {
        let Some(t) = lock(&self.transfers).remove(&id) else {
            return;
        };
        let m = &crate::metrics::METRICS;
        m.active_transfers.dec();
        let size = t.size.load(Ordering::Relaxed).max(0);
        let upload = t.operation == "upload";
        let (count, errors, bytes, sender) = if upload {
            (&m.uploads, &m.upload_errors, &m.upload_bytes, "Upload")
        } else {
            (
                &m.downloads,
                &m.download_errors,
                &m.download_bytes,
                "Download",
            )
        };
        bytes.inc_by(size as u64);
        crate::metrics::user_bytes(&self.opened.username, upload, size as u64);
        if ok {
            count.inc();
        } else {
            errors.inc();
        }
        tracing::info!(
            sender,
            elapsed_ms = now_ms() - t.start_ms,
            size_bytes = size,
            username = self.opened.username,
            file_path = t.path,
            connection_id = self.opened.connection_id,
            protocol = self.opened.protocol,
            remote_addr = self.opened.remote_address,
            ok,
            "transfer finished"
        );
    }

    fn status(&self) -> ConnectionStatus {
        ConnectionStatus {
            connection_id: self.opened.connection_id.clone(),
            last_activity_ms: self.last_activity.load(Ordering::Relaxed),
            active_transfers: lock(&self.transfers)
                .values()
                .map(|t| Transfer {
                    operation_type: t.operation.to_string(),
                    path: t.path.clone(),
                    start_time_ms: t.start_ms,
                    size: t.size.load(Ordering::Relaxed),
                    recovery: t.recovery.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u64, Session>>,
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    /// Usage of users without limits, sent with the next heartbeat.
    pub usage: crate::quota::UsageBatch,
    /// Bandwidth buckets per user.
    pub buckets: crate::bandwidth::Buckets,
    /// Client addresses the defender banned, with when each ban ends (ms).
    bans: Mutex<HashMap<std::net::IpAddr, i64>>,
}

impl Registry {
    /// Replaces the ban list with the control plane's.
    pub fn set_bans(&self, hosts: &[ferry_proto::edge::v1::BannedHost]) {
        let bans = hosts
            .iter()
            .filter_map(|h| Some((h.ip.parse::<std::net::IpAddr>().ok()?, h.ban_until_ms)))
            .collect();
        *self.bans.lock().unwrap_or_else(|e| e.into_inner()) = bans;
    }

    /// Whether connections from `ip` are refused.
    pub fn is_banned(&self, ip: std::net::IpAddr) -> bool {
        self.bans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip.to_canonical())
            .is_some_and(|until| *until > now_ms())
    }

    pub fn add_session(
        &self,
        id: u64,
        username: &str,
        lease_id: &str,
        handle: russh::server::Handle,
    ) {
        crate::metrics::METRICS.ssh_sessions.inc();
        lock(&self.sessions).insert(
            id,
            Session {
                username: username.to_string(),
                lease_id: lease_id.to_string(),
                handle,
                started_ms: now_ms(),
            },
        );
    }

    /// Forgets a session and its connections; returns the closed connection ids.
    pub fn remove_session(&self, id: u64) -> Vec<String> {
        if lock(&self.sessions).remove(&id).is_some() {
            crate::metrics::METRICS.ssh_sessions.dec();
        }
        let mut conns = lock(&self.connections);
        let closed: Vec<String> = conns
            .iter()
            .filter(|(_, c)| c.session == id)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &closed {
            if conns.remove(k).is_some() {
                crate::metrics::METRICS.active_connections.dec();
            }
        }
        closed
    }

    pub fn add_connection(&self, session: u64, opened: ConnectionOpened) -> Arc<Connection> {
        let conn = Arc::new(Connection {
            session,
            last_activity: AtomicI64::new(opened.connection_time_ms),
            opened,
            transfers: Mutex::new(HashMap::new()),
            next_transfer: AtomicU64::new(0),
        });
        if lock(&self.connections)
            .insert(conn.opened.connection_id.clone(), conn.clone())
            .is_none()
        {
            crate::metrics::METRICS.active_connections.inc();
        }
        conn
    }

    pub fn remove_connection(&self, connection_id: &str) -> bool {
        let removed = lock(&self.connections).remove(connection_id).is_some();
        if removed {
            crate::metrics::METRICS.active_connections.dec();
        }
        removed
    }

    /// Transfers in progress on this edge.
    pub fn active_transfers(&self) -> usize {
        lock(&self.connections)
            .values()
            .map(|c| lock(&c.transfers).len())
            .sum()
    }

    /// Authenticated SSH sessions on this edge.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    pub fn opened_connections(&self) -> Vec<ConnectionOpened> {
        lock(&self.connections)
            .values()
            .map(|c| c.opened.clone())
            .collect()
    }

    /// Connection states and the leases in use, for a heartbeat.
    pub fn heartbeat_snapshot(&self) -> (Vec<ConnectionStatus>, Vec<String>) {
        let statuses = lock(&self.connections)
            .values()
            .map(|c| c.status())
            .collect();
        let leases = lock(&self.sessions)
            .values()
            .map(|s| s.lease_id.clone())
            .collect();
        (statuses, leases)
    }

    /// Sessions with no request and no transfer on any of their channels for
    /// longer than `timeout` (SSH keepalives do not count).
    pub fn idle_sessions(&self, timeout: std::time::Duration) -> Vec<u64> {
        let now = now_ms();
        let mut last: HashMap<u64, i64> = lock(&self.sessions)
            .iter()
            .map(|(id, s)| (*id, s.started_ms))
            .collect();
        for c in lock(&self.connections).values() {
            let active = if lock(&c.transfers).is_empty() {
                c.last_activity.load(Ordering::Relaxed)
            } else {
                now
            };
            if let Some(l) = last.get_mut(&c.session) {
                *l = (*l).max(active);
            }
        }
        let limit = timeout.as_millis() as i64;
        last.into_iter()
            .filter(|(_, l)| now - l > limit)
            .map(|(id, _)| id)
            .collect()
    }

    /// Ends the idle sessions (SFTPGo's `idle_timeout`).
    pub fn disconnect_idle(&self, timeout: std::time::Duration) {
        let ids = self.idle_sessions(timeout);
        if !ids.is_empty() {
            tracing::info!(sessions = ids.len(), "closing idle sessions");
            self.disconnect_sessions_with(ids, "idle timeout");
        }
    }

    fn disconnect_sessions(&self, ids: Vec<u64>) {
        self.disconnect_sessions_with(ids, "disconnected by an administrator");
    }

    fn disconnect_sessions_with(&self, ids: Vec<u64>, reason: &'static str) {
        let handles: Vec<russh::server::Handle> = {
            let sessions = lock(&self.sessions);
            ids.iter()
                .filter_map(|id| sessions.get(id).map(|s| s.handle.clone()))
                .collect()
        };
        for h in handles {
            tokio::spawn(async move {
                let _ = h
                    .disconnect(Disconnect::ByApplication, reason.into(), "en".into())
                    .await;
            });
        }
    }

    /// Ends the SSH connection holding `connection_id`.
    pub fn disconnect_connection(&self, connection_id: &str) {
        let session = lock(&self.connections)
            .get(connection_id)
            .map(|c| c.session);
        if let Some(s) = session {
            self.disconnect_sessions(vec![s]);
        }
    }

    /// Ends every SSH connection of `username`.
    pub fn disconnect_user(&self, username: &str) {
        let ids: Vec<u64> = lock(&self.sessions)
            .iter()
            .filter(|(_, s)| s.username == username)
            .map(|(id, _)| *id)
            .collect();
        self.disconnect_sessions(ids);
    }

    /// Ends every SSH session on this edge; returns how many.
    pub fn disconnect_all(&self, reason: &'static str) -> usize {
        let ids: Vec<u64> = lock(&self.sessions).keys().copied().collect();
        let n = ids.len();
        self.disconnect_sessions_with(ids, reason);
        n
    }
}
