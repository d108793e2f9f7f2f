//! Connection limits of one edge (SFTPGo's `common.max_total_connections`
//! and `common.max_per_host_connections`): a connection holds a [`Slot`]
//! from the moment its client address is known (after the PROXY header)
//! until it ends; one over a limit is closed before the SSH handshake.
//!
//! Inside a connection, [`SessionLimits`] bound what one client controls:
//! channels (`sftpd.max_channels_per_connection`), open SFTP handles per
//! connection and per user on this edge (`sftpd.max_handles_per_connection`,
//! `sftpd.max_handles_per_user`) and bytes of READ replies waiting for the
//! client's window (`sftpd.max_queued_reply_bytes`). Each is a semaphore
//! whose permits are freed by drop, so a vanished client frees them all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The limits and what holds them now.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// 0: unlimited.
    total: u32,
    /// 0: unlimited.
    per_host: u32,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: u32,
    hosts: HashMap<IpAddr, u32>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total(u32),
    PerHost(u32),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Total(n) => write!(f, "too many connections ({n}, max_total_connections)"),
            Refusal::PerHost(n) => write!(
                f,
                "too many connections from this address ({n}, max_per_host_connections)"
            ),
        }
    }
}

/// A connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(total: u32, per_host: u32) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_host,
            held: Mutex::new(Held::default()),
        })
    }

    /// Takes a place for a connection from `ip`, or says which limit it is
    /// over.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if self.total > 0 && held.total >= self.total {
            return Err(Refusal::Total(self.total));
        }
        let from_host = held.hosts.get(&ip).copied().unwrap_or(0);
        if self.per_host > 0 && from_host >= self.per_host {
            return Err(Refusal::PerHost(self.per_host));
        }
        held.total += 1;
        held.hosts.insert(ip, from_host + 1);
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.limits.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.hosts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.hosts.remove(&self.ip);
            }
        }
    }
}

/// Per-connection limits, from `sftpd` (validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimitSettings {
    pub channels: u32,
    pub handles_per_connection: u32,
    pub handles_per_user: u32,
    pub queued_reply_bytes: u32,
}

impl Default for SessionLimitSettings {
    fn default() -> Self {
        Self {
            channels: 10,
            handles_per_connection: 512,
            handles_per_user: 2048,
            queued_reply_bytes: 16 << 20,
        }
    }
}

/// The edge's per-user handle counts and the settings every connection
/// starts from.
#[derive(Debug, Default)]
pub struct SessionLimits {
    pub settings: SessionLimitSettings,
    /// A user's handle semaphore lives while one of their connections does.
    users: Mutex<HashMap<String, std::sync::Weak<Semaphore>>>,
}

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What one SSH connection may hold; shared by its channels.
#[derive(Debug)]
pub struct ConnectionBudget {
    pub settings: SessionLimitSettings,
    channels: Arc<Semaphore>,
    handles: Arc<Semaphore>,
    /// Set once the user is known.
    user_handles: std::sync::OnceLock<Arc<Semaphore>>,
    replies: Arc<Semaphore>,
}

/// Which per-connection limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Channels(u32),
    ConnectionHandles(u32),
    UserHandles(u32),
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exceeded::Channels(n) => write!(
                f,
                "too many channels on this connection (limit {n}, sftpd.max_channels_per_connection)"
            ),
            Exceeded::ConnectionHandles(n) => write!(
                f,
                "too many open handles on this connection (limit {n}, sftpd.max_handles_per_connection)"
            ),
            Exceeded::UserHandles(n) => write!(
                f,
                "too many open handles for this user (limit {n}, sftpd.max_handles_per_user)"
            ),
        }
    }
}

impl Exceeded {
    /// Counts the refusal, by limit, and logs it.
    pub fn record(self) {
        let which = match self {
            Exceeded::Channels(_) => "channels_per_connection",
            Exceeded::ConnectionHandles(_) => "handles_per_connection",
            Exceeded::UserHandles(_) => "handles_per_user",
        };
        crate::metrics::METRICS
            .limit_refusals
            .with_label_values(&[which])
            .inc();
        tracing::warn!(limit = which, reason = %self, "limit reached, request refused");
    }
}

/// A channel's place on its connection.
#[derive(Debug)]
pub struct ChannelSlot(#[allow(dead_code)] OwnedSemaphorePermit);

/// An open handle's places on its connection and its user.
#[derive(Debug)]
pub struct HandleSlot {
    _connection: OwnedSemaphorePermit,
    _user: Option<OwnedSemaphorePermit>,
}

impl SessionLimits {
    pub fn new(settings: SessionLimitSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            users: Mutex::new(HashMap::new()),
        })
    }

    /// The budget of a new SSH connection.
    pub fn connection(&self) -> Arc<ConnectionBudget> {
        let s = self.settings;
        Arc::new(ConnectionBudget {
            settings: s,
            channels: Arc::new(Semaphore::new(s.channels as usize)),
            handles: Arc::new(Semaphore::new(s.handles_per_connection as usize)),
            user_handles: std::sync::OnceLock::new(),
            replies: Arc::new(Semaphore::new(s.queued_reply_bytes as usize)),
        })
    }

    /// Gives `budget` the handle count of `user` (shared by all their
    /// connections on this edge).
    pub fn attach_user(&self, budget: &ConnectionBudget, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.retain(|_, w| w.strong_count() > 0);
        let sem = match users.get(user).and_then(std::sync::Weak::upgrade) {
            Some(s) => s,
            None => {
                let s = Arc::new(Semaphore::new(self.settings.handles_per_user as usize));
                users.insert(user.to_string(), Arc::downgrade(&s));
                s
            }
        };
        let _ = budget.user_handles.set(sem);
    }
}

impl ConnectionBudget {
    pub fn channel(&self) -> Result<ChannelSlot, Exceeded> {
        self.channels
            .clone()
            .try_acquire_owned()
            .map(ChannelSlot)
            .map_err(|_| Exceeded::Channels(self.settings.channels))
    }

    pub fn handle(&self) -> Result<HandleSlot, Exceeded> {
        let connection = self
            .handles
            .clone()
            .try_acquire_owned()
            .map_err(|_| Exceeded::ConnectionHandles(self.settings.handles_per_connection))?;
        let user = match self.user_handles.get() {
            Some(u) => Some(
                u.clone()
                    .try_acquire_owned()
                    .map_err(|_| Exceeded::UserHandles(self.settings.handles_per_user))?,
            ),
            None => None,
        };
        Ok(HandleSlot {
            _connection: connection,
            _user: user,
        })
    }

    /// Room for `bytes` of replies, waited for in request order (the
    /// semaphore is fair); freed when the reply has been handed to SSH.
    pub async fn reply_bytes(&self, bytes: u32) -> OwnedSemaphorePermit {
        let n = bytes.min(self.settings.queued_reply_bytes);
        self.replies
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the reply semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_and_free_places() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let limits = ConnectionLimits::new(3, 2);
        let a1 = limits.acquire(a).unwrap();
        let _a2 = limits.acquire(a).unwrap();
        assert_eq!(limits.acquire(a).unwrap_err(), Refusal::PerHost(2));
        let _b1 = limits.acquire(b).unwrap();
        assert_eq!(limits.acquire(c).unwrap_err(), Refusal::Total(3));
        drop(a1);
        let _c1 = limits.acquire(c).unwrap();
        assert!(limits.acquire(a).is_err());
        let unlimited = ConnectionLimits::new(0, 0);
        let many: Vec<Slot> = (0..100).map(|_| unlimited.acquire(a).unwrap()).collect();
        drop(many);
        assert!(unlimited.held.lock().unwrap().hosts.is_empty());
    }

    #[test]
    fn session_limits_count_channels_and_handles() {
        let limits = SessionLimits::new(SessionLimitSettings {
            channels: 2,
            handles_per_connection: 3,
            handles_per_user: 4,
            queued_reply_bytes: 1 << 20,
        });
        let a = limits.connection();
        let b = limits.connection();
        limits.attach_user(&a, "u");
        limits.attach_user(&b, "u");
        let c1 = a.channel().unwrap();
        let _c2 = a.channel().unwrap();
        assert_eq!(a.channel().unwrap_err(), Exceeded::Channels(2));
        drop(c1);
        assert!(a.channel().is_ok());
        let ha: Vec<HandleSlot> = (0..3).map(|_| a.handle().unwrap()).collect();
        assert_eq!(a.handle().unwrap_err(), Exceeded::ConnectionHandles(3));
        let _hb = b.handle().unwrap();
        // The user's fourth handle is the last, on any connection.
        assert_eq!(b.handle().unwrap_err(), Exceeded::UserHandles(4));
        drop(ha);
        assert!(b.handle().is_ok());
        let other = limits.connection();
        limits.attach_user(&other, "v");
        assert!(other.handle().is_ok());
    }
}
