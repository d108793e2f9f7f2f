//! The fleet: which edges are attached, the live connections they report, and
//! the session leases the control plane handed out. REST reads it to list and
//! close connections; the gRPC Attach stream keeps it current.
//!
//! Leases live in memory here for the single-replica case; a lease whose edge
//! stops renewing it expires after the lease TTL ([`DEFAULT_LEASE_TTL`]
//! unless configured).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_proto::edge::v1::{
    ConnectionOpened, ConnectionStatus, ControlMessage, DisconnectConnection, DisconnectUser,
    UploadRecovery, control_message,
};
use tokio::sync::mpsc;

/// How long a session lease lives without renewal, by default.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// Shortest lease TTL accepted (heartbeats must fit several times in it).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

struct Edge {
    version: String,
    instance_id: String,
    tx: mpsc::Sender<ControlMessage>,
    /// Distinguishes a re-attached edge from the stream it replaced.
    generation: u64,
}

/// A live connection as REST shows it.
#[derive(Debug, Clone)]
pub struct LiveConnection {
    pub edge_id: String,
    pub opened: ConnectionOpened,
    pub status: ConnectionStatus,
}

struct Lease {
    username: String,
    edge_id: String,
    expires: Instant,
}

/// Quota held by an upload in progress; lives as long as its lease.
struct Reservation {
    username: String,
    lease_id: String,
    /// Empty: the user's quota; else the virtual folder's own counters.
    folder: String,
    bytes: i64,
    files: i64,
}

/// An upload a vanished edge left open, to recover once `due`.
struct Orphan {
    edge_id: String,
    instance_id: String,
    due: Instant,
    username: String,
    upload: UploadRecovery,
}

struct State {
    edges: HashMap<String, Edge>,
    orphans: Vec<Orphan>,
    connections: HashMap<String, LiveConnection>,
    leases: HashMap<String, Lease>,
    reservations: HashMap<String, Reservation>,
    next_generation: u64,
}

impl State {
    /// Moves the open uploads of `edge_id`'s connections to the orphans.
    fn orphan_uploads(&mut self, edge_id: &str, instance_id: &str, due: Instant) {
        for c in self.connections.values().filter(|c| c.edge_id == edge_id) {
            for t in &c.status.active_transfers {
                if let Some(r) = &t.recovery {
                    self.orphans.push(Orphan {
                        edge_id: edge_id.to_string(),
                        instance_id: instance_id.to_string(),
                        due,
                        username: c.opened.username.clone(),
                        upload: r.clone(),
                    });
                }
            }
        }
    }

    fn drop_reservations_of_leases(&mut self) {
        let leases = &self.leases;
        self.reservations
            .retain(|_, r| leases.contains_key(&r.lease_id));
    }
}

/// Shared view of every attached edge.
pub struct Fleet {
    state: Mutex<State>,
    lease_ttl: Duration,
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new(DEFAULT_LEASE_TTL)
    }
}

/// An attached edge as `/api/v2/status` would show it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct EdgeSummary {
    pub edge_id: String,
    pub version: String,
    pub connections: usize,
}

impl Fleet {
    pub fn new(lease_ttl: Duration) -> Self {
        Self {
            state: Mutex::new(State {
                edges: HashMap::new(),
                orphans: Vec::new(),
                connections: HashMap::new(),
                leases: HashMap::new(),
                reservations: HashMap::new(),
                next_generation: 0,
            }),
            lease_ttl: lease_ttl.max(MIN_LEASE_TTL),
        }
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// How often edges should renew: six times per TTL.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.lease_ttl / 6).max(Duration::from_millis(500))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an edge's command channel; returns its generation.
    pub fn attach(
        &self,
        edge_id: &str,
        version: &str,
        instance_id: &str,
        tx: mpsc::Sender<ControlMessage>,
    ) -> u64 {
        let mut s = self.lock();
        s.next_generation += 1;
        let generation = s.next_generation;
        // The same process back: its uploads are its own again. A new
        // process under the same id: the old one's uploads are orphans now.
        s.orphans
            .retain(|o| !(o.edge_id == edge_id && o.instance_id == instance_id));
        let previous = s
            .edges
            .get(edge_id)
            .map(|e| e.instance_id.clone())
            .filter(|old| old != instance_id);
        if let Some(old) = previous {
            s.orphan_uploads(edge_id, &old, Instant::now());
        }
        // The edge re-announces what is live right after its hello; anything
        // remembered from an earlier stream may have closed meanwhile.
        s.connections.retain(|_, c| c.edge_id != edge_id);
        s.edges.insert(
            edge_id.to_string(),
            Edge {
                version: version.to_string(),
                instance_id: instance_id.to_string(),
                tx,
                generation,
            },
        );
        generation
    }

    /// Forgets an edge's stream and its connections. Its leases are left to
    /// expire, so a short network blip does not free session slots early.
    ///
    /// Uploads it had open are recovered after twice the lease TTL unless the
    /// same process attaches again first: by then its sessions are gone.
    pub fn detach(&self, edge_id: &str, generation: u64) {
        let mut s = self.lock();
        if let Some(e) = s.edges.get(edge_id)
            && e.generation == generation
        {
            let instance = e.instance_id.clone();
            s.orphan_uploads(edge_id, &instance, Instant::now() + 2 * self.lease_ttl);
            s.edges.remove(edge_id);
            s.connections.retain(|_, c| c.edge_id != edge_id);
        }
    }

    /// Orphaned uploads that are due, grouped by user.
    pub fn due_orphans(&self) -> Vec<(String, Vec<UploadRecovery>)> {
        let now = Instant::now();
        let mut s = self.lock();
        let (due, keep): (Vec<Orphan>, Vec<Orphan>) =
            s.orphans.drain(..).partition(|o| o.due <= now);
        s.orphans = keep;
        let mut by_user: HashMap<String, Vec<UploadRecovery>> = HashMap::new();
        for o in due {
            by_user.entry(o.username).or_default().push(o.upload);
        }
        by_user.into_iter().collect()
    }

    /// Puts back orphans that could not be sent to any edge.
    pub fn retry_orphans(&self, username: &str, uploads: Vec<UploadRecovery>) {
        let mut s = self.lock();
        let due = Instant::now();
        for upload in uploads {
            s.orphans.push(Orphan {
                edge_id: String::new(),
                instance_id: String::new(),
                due,
                username: username.to_string(),
                upload,
            });
        }
    }

    /// Sends a command to some attached edge; false when none took it.
    /// Base names of the temporary files of every atomic upload in progress
    /// (on live edges, or left by vanished ones and not recovered yet).
    pub fn temp_names_in_progress(&self) -> Vec<String> {
        let state = self.lock();
        let live = state
            .connections
            .values()
            .flat_map(|c| c.status.active_transfers.iter())
            .filter_map(|t| t.recovery.as_ref());
        let orphaned = state.orphans.iter().map(|o| &o.upload);
        live.chain(orphaned)
            .filter(|r| !r.temp_path.is_empty())
            .map(|r| ferry_proto::vpath::base_name(&r.temp_path).to_string())
            .collect()
    }

    pub fn send_to_any_edge(&self, msg: ControlMessage) -> bool {
        let txs: Vec<_> = self.lock().edges.values().map(|e| e.tx.clone()).collect();
        txs.into_iter().any(|tx| tx.try_send(msg.clone()).is_ok())
    }

    /// Sends `msg` to every attached edge (best effort: a full queue drops it).
    pub fn broadcast(&self, msg: &ControlMessage) {
        let txs: Vec<_> = self.lock().edges.values().map(|e| e.tx.clone()).collect();
        for tx in txs {
            if tx.try_send(msg.clone()).is_err() {
                tracing::warn!("edge command queue full, message dropped");
            }
        }
    }

    /// Ends every edge's command stream (at shutdown), so edges see the
    /// control plane go away at once and graceful shutdown is not held up.
    pub fn close_all(&self) {
        let mut s = self.lock();
        s.edges.clear();
        s.connections.clear();
    }

    pub fn edges(&self) -> Vec<EdgeSummary> {
        let s = self.lock();
        let mut out: Vec<EdgeSummary> = s
            .edges
            .iter()
            .map(|(id, e)| EdgeSummary {
                edge_id: id.clone(),
                version: e.version.clone(),
                connections: s.connections.values().filter(|c| &c.edge_id == id).count(),
            })
            .collect();
        out.sort_by(|a, b| a.edge_id.cmp(&b.edge_id));
        out
    }

    pub fn connection_opened(&self, edge_id: &str, opened: ConnectionOpened) {
        let status = ConnectionStatus {
            connection_id: opened.connection_id.clone(),
            last_activity_ms: opened.connection_time_ms,
            active_transfers: Vec::new(),
        };
        let mut s = self.lock();
        // An edge re-announcing its connections after this control plane
        // restarted: their leases count again.
        if !opened.lease_id.is_empty() && !s.leases.contains_key(&opened.lease_id) {
            s.leases.insert(
                opened.lease_id.clone(),
                Lease {
                    username: opened.username.clone(),
                    edge_id: edge_id.to_string(),
                    expires: Instant::now() + self.lease_ttl,
                },
            );
        }
        s.connections.insert(
            opened.connection_id.clone(),
            LiveConnection {
                edge_id: edge_id.to_string(),
                opened,
                status,
            },
        );
    }

    pub fn connection_closed(&self, connection_id: &str) {
        self.lock().connections.remove(connection_id);
    }

    /// Applies a heartbeat: fresh connection state and lease renewals.
    pub fn heartbeat(&self, edge_id: &str, statuses: Vec<ConnectionStatus>, lease_ids: &[String]) {
        let mut s = self.lock();
        for st in statuses {
            if let Some(c) = s.connections.get_mut(&st.connection_id)
                && c.edge_id == edge_id
            {
                c.status = st;
            }
        }
        let expires = Instant::now() + self.lease_ttl;
        for id in lease_ids {
            if let Some(l) = s.leases.get_mut(id)
                && l.edge_id == edge_id
            {
                l.expires = expires;
            }
        }
    }

    pub fn connections(&self) -> Vec<LiveConnection> {
        let mut out: Vec<LiveConnection> = self.lock().connections.values().cloned().collect();
        out.sort_by(|a, b| a.opened.connection_id.cmp(&b.opened.connection_id));
        out
    }

    /// Asks the edge holding `connection_id` to close it. False when no
    /// attached edge holds such a connection.
    pub fn disconnect(&self, connection_id: &str) -> bool {
        let tx = {
            let s = self.lock();
            let Some(conn) = s.connections.get(connection_id) else {
                return false;
            };
            match s.edges.get(&conn.edge_id) {
                Some(e) => e.tx.clone(),
                None => return false,
            }
        };
        let msg = ControlMessage {
            kind: Some(control_message::Kind::DisconnectConnection(
                DisconnectConnection {
                    connection_id: connection_id.to_string(),
                },
            )),
        };
        tx.try_send(msg).is_ok()
    }

    /// Asks every edge to end all sessions of `username`.
    pub fn disconnect_user(&self, username: &str) {
        let txs: Vec<_> = self.lock().edges.values().map(|e| e.tx.clone()).collect();
        for tx in txs {
            let msg = ControlMessage {
                kind: Some(control_message::Kind::DisconnectUser(DisconnectUser {
                    username: username.to_string(),
                })),
            };
            if tx.try_send(msg).is_err() {
                tracing::warn!(
                    username,
                    "edge command queue full, disconnect not delivered"
                );
            }
        }
    }

    /// Grants a session lease to a login on `edge_id`, unless the user
    /// already holds `max_sessions` live leases across the fleet (0: no
    /// limit). Check and grant happen under one lock, so concurrent logins
    /// on different edges cannot both take the last slot.
    pub fn try_grant_lease(
        &self,
        username: &str,
        edge_id: &str,
        max_sessions: i64,
    ) -> Option<(String, Instant)> {
        let now = Instant::now();
        let mut s = self.lock();
        if max_sessions > 0 {
            let live = s
                .leases
                .values()
                .filter(|l| l.username == username && l.expires > now)
                .count() as i64;
            if live >= max_sessions {
                return None;
            }
        }
        let id = crate::random_token(16);
        let expires = now + self.lease_ttl;
        s.leases.insert(
            id.clone(),
            Lease {
                username: username.to_string(),
                edge_id: edge_id.to_string(),
                expires,
            },
        );
        Some((id, expires))
    }

    /// Ends a lease and whatever quota its uploads still held.
    pub fn release_lease(&self, lease_id: &str) {
        let mut s = self.lock();
        s.leases.remove(lease_id);
        s.reservations.retain(|_, r| r.lease_id != lease_id);
    }

    /// Bytes and files reserved for `username` across the fleet.
    pub fn reserved(&self, username: &str) -> (i64, i64) {
        self.lock()
            .reservations
            .values()
            .filter(|r| r.username == username && r.folder.is_empty())
            .fold((0, 0), |(b, f), r| (b + r.bytes, f + r.files))
    }

    /// Bytes and files reserved in a virtual folder's own counters, by
    /// every user mapping it.
    pub fn reserved_in_folder(&self, folder: &str) -> (i64, i64) {
        self.lock()
            .reservations
            .values()
            .filter(|r| r.folder == folder)
            .fold((0, 0), |(b, f), r| (b + r.bytes, f + r.files))
    }

    /// Adds to a reservation (creating it when `id` is None or unknown, with
    /// `held` as what the edge believes it already holds). Returns its id, or
    /// None when the lease is not live (the session is over).
    #[allow(clippy::too_many_arguments)]
    pub fn reserve(
        &self,
        username: &str,
        lease_id: &str,
        folder: &str,
        id: Option<&str>,
        held: i64,
        bytes: i64,
        files: i64,
    ) -> Option<String> {
        let mut s = self.lock();
        if !s.leases.contains_key(lease_id) {
            return None;
        }
        let id = id.map_or_else(|| crate::random_token(16), str::to_string);
        let r = s
            .reservations
            .entry(id.clone())
            .or_insert_with(|| Reservation {
                username: username.to_string(),
                lease_id: lease_id.to_string(),
                folder: folder.to_string(),
                bytes: held.max(0),
                files: 0,
            });
        r.bytes += bytes;
        r.files += files;
        Some(id)
    }

    pub fn has_reservation(&self, id: &str) -> bool {
        self.lock().reservations.contains_key(id)
    }

    pub fn release_reservation(&self, id: &str) {
        self.lock().reservations.remove(id);
    }

    /// Live leases of a user, fleet-wide (for `max_sessions`).
    pub fn leases_of(&self, username: &str) -> usize {
        let now = Instant::now();
        self.lock()
            .leases
            .values()
            .filter(|l| l.username == username && l.expires > now)
            .count()
    }

    /// Drops expired leases; run periodically.
    pub fn expire_leases(&self) {
        let now = Instant::now();
        let mut s = self.lock();
        s.leases.retain(|_, l| l.expires > now);
        s.drop_reservations_of_leases();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(id: &str, user: &str) -> ConnectionOpened {
        ConnectionOpened {
            connection_id: id.into(),
            username: user.into(),
            protocol: "SFTP".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn disconnect_reaches_the_edge_holding_the_connection() {
        let fleet = Fleet::default();
        let (tx_a, mut rx_a) = mpsc::channel(4);
        let (tx_b, mut rx_b) = mpsc::channel(4);
        fleet.attach("a", "1", "i1", tx_a);
        fleet.attach("b", "1", "i1", tx_b);
        fleet.connection_opened("b", opened("c1", "u"));
        assert!(fleet.disconnect("c1"));
        assert!(!fleet.disconnect("nope"));
        assert!(rx_a.try_recv().is_err());
        match rx_b.try_recv().unwrap().kind {
            Some(control_message::Kind::DisconnectConnection(d)) => {
                assert_eq!(d.connection_id, "c1")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn detach_forgets_connections_but_not_a_newer_stream() {
        let fleet = Fleet::default();
        let (tx, _rx) = mpsc::channel(1);
        let old = fleet.attach("a", "1", "i1", tx.clone());
        fleet.connection_opened("a", opened("c1", "u"));
        let new = fleet.attach("a", "1", "i1", tx);
        fleet.detach("a", old);
        assert_eq!(fleet.edges().len(), 1);
        fleet.detach("a", new);
        assert!(fleet.edges().is_empty());
        assert!(fleet.connections().is_empty());
    }

    fn uploading(fleet: &Fleet, edge: &str, conn: &str, upload_id: &str) {
        fleet.connection_opened(edge, opened(conn, "u"));
        let status = ConnectionStatus {
            connection_id: conn.into(),
            last_activity_ms: 0,
            active_transfers: vec![ferry_proto::edge::v1::Transfer {
                operation_type: "upload".into(),
                path: "/f".into(),
                recovery: Some(UploadRecovery {
                    upload_id: upload_id.into(),
                    target_path: "/f".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        };
        fleet.heartbeat(edge, vec![status], &[]);
    }

    #[test]
    fn uploads_of_a_vanished_edge_are_recovered_unless_it_returns() {
        let fleet = Fleet::new(Duration::from_secs(3));
        let (tx, _rx) = mpsc::channel(4);
        // Detached: due after twice the TTL, not before.
        let g = fleet.attach("a", "1", "i1", tx.clone());
        uploading(&fleet, "a", "c1", "i1:1");
        fleet.detach("a", g);
        assert!(fleet.due_orphans().is_empty());
        // The same process attaching again takes its uploads back.
        let g = fleet.attach("a", "1", "i1", tx.clone());
        assert!(fleet.lock().orphans.is_empty());
        // A new process under the same id: the old one's uploads are due now.
        uploading(&fleet, "a", "c2", "i1:2");
        fleet.attach("a", "1", "i2", tx);
        let due = fleet.due_orphans();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "u");
        assert_eq!(due[0].1[0].upload_id, "i1:2");
        assert!(fleet.due_orphans().is_empty(), "handed out once");
        let _ = g;
    }

    #[test]
    fn reservations_end_with_their_lease() {
        let fleet = Fleet::default();
        let (lease, _) = fleet.try_grant_lease("u", "a", 0).unwrap();
        assert!(fleet.reserve("u", "nope", "", None, 0, 10, 1).is_none());
        let r = fleet.reserve("u", &lease, "", None, 0, 10, 1).unwrap();
        fleet.reserve("u", &lease, "", Some(&r), 10, 5, 0).unwrap();
        assert_eq!(fleet.reserved("u"), (15, 1));
        // Folder reservations count apart, for every user of the folder.
        fleet.reserve("u", &lease, "f", None, 0, 3, 1).unwrap();
        assert_eq!(fleet.reserved("u"), (15, 1));
        assert_eq!(fleet.reserved_in_folder("f"), (3, 1));
        // A reservation the control plane lost is rebuilt from what the edge holds.
        fleet
            .reserve("u", &lease, "", Some("lost"), 7, 1, 0)
            .unwrap();
        assert_eq!(fleet.reserved("u"), (23, 1));
        fleet.release_reservation(&r);
        assert_eq!(fleet.reserved("u"), (8, 0));
        fleet.release_lease(&lease);
        assert_eq!(fleet.reserved("u"), (0, 0));
    }

    #[test]
    fn leases_count_until_released() {
        let fleet = Fleet::default();
        let (l1, _) = fleet.try_grant_lease("u", "a", 0).unwrap();
        let (_l2, _) = fleet.try_grant_lease("u", "b", 2).unwrap();
        assert_eq!(fleet.leases_of("u"), 2);
        assert!(
            fleet.try_grant_lease("u", "c", 2).is_none(),
            "limit reached fleet-wide"
        );
        fleet.release_lease(&l1);
        assert_eq!(fleet.leases_of("u"), 1);
        assert!(fleet.try_grant_lease("u", "c", 2).is_some());
        assert_eq!(fleet.leases_of("other"), 0);
    }
}
