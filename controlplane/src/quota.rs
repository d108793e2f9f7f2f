//! The fleet-wide quota ledger. Used counters live in the database and change
//! only by atomic increments; reservations of uploads in progress live with
//! the session leases in [`crate::fleet::Fleet`]. A user's reserve and settle
//! steps run one at a time (a per-user lock), so a grant always sees the
//! usage and reservations that precede it: two edges writing for one user can
//! never be granted more than the quota together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_proto::edge::v1::{
    ControlMessage, QuotaScanned, QuotaStatusResponse, RecoverUploads, ReserveRequest,
    ReserveResponse, ScanQuota, SettleRequest, Storage, UsageDelta, control_message,
};

use crate::AppState;
use crate::store::{StoreError, now_ms};

/// How long an upload id is remembered as settled: far longer than any
/// recovery takes (twice the lease TTL).
const SETTLED_MEMORY: Duration = Duration::from_secs(3600);

/// Per-user serialisation of quota decisions, the uploads already settled
/// (each is counted once, by its edge or by a recovery), and running scans.
#[derive(Default)]
pub struct QuotaLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    settled: Mutex<HashMap<String, Instant>>,
    scans: Mutex<HashMap<String, Scan>>,
}

/// A quota scan handed to an edge.
#[derive(Debug, Clone)]
pub struct Scan {
    pub scan_id: String,
    /// Empty for a folder scan.
    pub username: String,
    /// Empty for a user scan.
    pub folder: String,
    pub start_time_ms: i64,
    started: Instant,
}

/// Scans whose edge never answered are forgotten after this.
const SCAN_TIMEOUT: Duration = Duration::from_secs(3600);

impl QuotaLocks {
    /// Marks an upload settled; false when it already was.
    fn first_settle(&self, upload_id: &str) -> bool {
        if upload_id.is_empty() {
            return true;
        }
        let mut settled = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if settled.len() > 4096 {
            settled.retain(|_, at| now.duration_since(*at) < SETTLED_MEMORY);
        }
        settled.insert(upload_id.to_string(), now).is_none()
    }

    fn unsettle(&self, upload_id: &str) {
        if !upload_id.is_empty() {
            self.settled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(upload_id);
        }
    }

    async fn lock(&self, username: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Drop locks nobody holds, so the map does not grow forever.
            if locks.len() > 1024 {
                locks.retain(|_, m| Arc::strong_count(m) > 1);
            }
            locks.entry(username.to_string()).or_default().clone()
        };
        let kind = if username.starts_with("folder:") {
            "folder"
        } else {
            "user"
        };
        let _timer = crate::metrics::METRICS
            .reserve_wait
            .with_label_values(&[kind])
            .start_timer();
        m.lock_owned().await
    }
}

/// The text SFTPGo uses for a write refused by quota.
pub const QUOTA_EXCEEDED: &str = "denying write due to space limit";

fn refused(message: &str) -> ReserveResponse {
    ReserveResponse {
        granted: false,
        reservation_id: String::new(),
        bytes_granted: 0,
        message: message.to_string(),
    }
}

/// Grants between `bytes_needed` and `bytes_wanted` bytes (and `files`
/// files) when they fit in what the user's limits leave after used and
/// reserved quota; nothing otherwise.
pub async fn reserve(state: &AppState, req: ReserveRequest) -> Result<ReserveResponse, StoreError> {
    if req.bytes_needed < 0 || req.bytes_wanted < req.bytes_needed || req.files < 0 {
        return Ok(refused("invalid reservation request"));
    }
    let _guard = state
        .quota_locks
        .lock(&domain_key(&req.username, &req.folder))
        .await;
    let limits = domain_limits(state, &req.username, &req.folder).await?;
    let (reserved_bytes, reserved_files) = reserved_in(state, &req.username, &req.folder);
    if req.files > 0
        && limits.quota_files > 0
        && limits.used_files + reserved_files + req.files > limits.quota_files
    {
        return Ok(refused(QUOTA_EXCEEDED));
    }
    let granted = if limits.quota_size > 0 {
        // What the edge holds already but we lost (a restart) counts too.
        let lost = match req.reservation_id.as_str() {
            "" => 0,
            id if state.fleet.has_reservation(id) => 0,
            _ => req.bytes_held.max(0),
        };
        let available = limits.quota_size - limits.used_size - reserved_bytes - lost;
        if available < req.bytes_needed {
            return Ok(refused(QUOTA_EXCEEDED));
        }
        req.bytes_wanted.min(available.max(0))
    } else {
        req.bytes_wanted
    };
    let id = (!req.reservation_id.is_empty()).then_some(req.reservation_id.as_str());
    match state.fleet.reserve(
        &req.username,
        &req.lease_id,
        &req.folder,
        id,
        req.bytes_held,
        granted,
        req.files,
    ) {
        Some(reservation_id) => Ok(ReserveResponse {
            granted: true,
            reservation_id,
            bytes_granted: granted,
            message: String::new(),
        }),
        None => Ok(refused("the session lease has expired")),
    }
}

/// The lock key of a quota domain: the user, or a folder (shared by every
/// user mapping it). Usernames cannot hold `:`.
fn domain_key(username: &str, folder: &str) -> String {
    if folder.is_empty() {
        username.to_string()
    } else {
        format!("folder:{folder}")
    }
}

/// Bytes and files reserved in a quota domain.
fn reserved_in(state: &AppState, username: &str, folder: &str) -> (i64, i64) {
    if folder.is_empty() {
        state.fleet.reserved(username)
    } else {
        state.fleet.reserved_in_folder(folder)
    }
}

/// Limits and usage of a quota domain.
struct Limits {
    quota_size: i64,
    quota_files: i64,
    used_size: i64,
    used_files: i64,
}

/// The user's own limits and usage, or for a folder its counters with the
/// limits of this user's mapping.
async fn domain_limits(
    state: &AppState,
    username: &str,
    folder: &str,
) -> Result<Limits, StoreError> {
    let user = state.store.user(username.to_string()).await?;
    let (user, mapped) = crate::groups::effective(&state.store, user).await?;
    if folder.is_empty() {
        let d = &user.data;
        return Ok(Limits {
            quota_size: d.quota_size,
            quota_files: d.quota_files,
            used_size: d.used_quota_size,
            used_files: d.used_quota_files,
        });
    }
    let (f, m) = mapped
        .into_iter()
        .find(|(f, _)| f.data.name == folder)
        .ok_or(StoreError::NotFound)?;
    Ok(Limits {
        quota_size: m.quota_size.max(0),
        quota_files: m.quota_files.max(0),
        used_size: f.data.used_quota_size,
        used_files: f.data.used_quota_files,
    })
}

/// Applies a usage change and releases the reservation behind it. A change
/// carrying an upload id that was settled before changes nothing.
pub async fn settle(state: &AppState, req: SettleRequest) -> Result<(), StoreError> {
    let locks = &state.quota_locks;
    let _guard = locks.lock(&domain_key(&req.username, &req.folder)).await;
    let changes = req.size_delta != 0 || req.files_delta != 0;
    if changes && locks.first_settle(&req.upload_id) {
        let added = if req.folder.is_empty() {
            state
                .store
                .add_quota_usage(
                    req.username.clone(),
                    req.size_delta,
                    req.files_delta,
                    now_ms(),
                )
                .await
        } else {
            state
                .store
                .add_folder_quota_usage(
                    req.folder.clone(),
                    req.size_delta,
                    req.files_delta,
                    now_ms(),
                )
                .await
        };
        if let Err(e) = added {
            locks.unsettle(&req.upload_id);
            return Err(e);
        }
    }
    // Only after the usage is in the database, so no grant in between sees
    // neither.
    if !req.reservation_id.is_empty() {
        state.fleet.release_reservation(&req.reservation_id);
    }
    Ok(())
}

/// A usage change batched by an edge (users without limits, or a settle
/// that could not be sent at the time).
pub async fn apply_batch(state: &AppState, u: UsageDelta) {
    let username = u.username.clone();
    let req = SettleRequest {
        username: u.username,
        reservation_id: String::new(),
        size_delta: u.size_delta,
        files_delta: u.files_delta,
        upload_id: u.upload_id,
        folder: u.folder,
    };
    if let Err(e) = settle(state, req).await {
        tracing::warn!(username, error = %e, "cannot apply a batched quota update");
    }
}

/// Sends the due uploads of vanished edges to a live edge for recovery;
/// run periodically.
pub async fn recover_orphans(state: &AppState) {
    for (username, uploads) in state.fleet.due_orphans() {
        let found = match state.store.user(username.clone()).await {
            Ok(u) => crate::groups::effective(&state.store, u).await,
            Err(e) => Err(e),
        };
        let (user, folders) = match found {
            Ok(found) => found,
            Err(StoreError::NotFound) => continue,
            Err(e) => {
                tracing::warn!(username, error = %e, "cannot recover uploads yet");
                state.fleet.retry_orphans(&username, uploads);
                continue;
            }
        };
        // Storage settings that cannot be used now will not be usable at
        // the next try either: the uploads are dropped, and said so.
        let roots = crate::storage::stored_storage(&user.data.filesystem)
            .and_then(|s| Ok((s, crate::users::virtual_folders(&folders)?)));
        let (storage, virtual_folders) = match roots {
            Ok(roots) => roots,
            Err(e) => {
                tracing::warn!(
                    username,
                    uploads = uploads.len(),
                    error = e,
                    "uploads of a vanished edge not recovered: the storage settings cannot be used"
                );
                continue;
            }
        };
        let home_dir = user.data.home_dir;
        let count = uploads.len();
        let msg = ControlMessage {
            kind: Some(control_message::Kind::RecoverUploads(RecoverUploads {
                username: username.clone(),
                home_dir,
                uploads: uploads.clone(),
                virtual_folders,
                storage,
            })),
        };
        if state.fleet.send_to_any_edge(msg) {
            tracing::info!(
                username,
                uploads = count,
                "uploads of a vanished edge sent for recovery"
            );
        } else {
            state.fleet.retry_orphans(&username, uploads);
        }
    }
}

/// An admin's change of usage (`PUT /api/v2/quotas/.../usage`): `reset`
/// sets the counters, otherwise the values are added. Serialised with
/// reservations of the same domain.
pub async fn admin_usage(
    state: &AppState,
    username: String,
    folder: String,
    size: i64,
    files: i64,
    reset: bool,
) -> Result<(), StoreError> {
    let _guard = state
        .quota_locks
        .lock(&domain_key(&username, &folder))
        .await;
    if reset {
        state
            .store
            .set_quota_usage(username, folder, size, files, now_ms())
            .await
    } else if folder.is_empty() {
        state
            .store
            .add_quota_usage(username, size, files, now_ms())
            .await
    } else {
        state
            .store
            .add_folder_quota_usage(folder, size, files, now_ms())
            .await
    }
}

/// Why a scan did not start.
#[derive(Debug)]
pub enum ScanError {
    /// One is running for this user or folder already.
    Running,
    /// No edge is attached to walk the storage.
    NoEdge,
    /// An object store's settings cannot be used (the text says which).
    Storage(String),
    Store(StoreError),
}

impl From<StoreError> for ScanError {
    fn from(e: StoreError) -> Self {
        ScanError::Store(e)
    }
}

/// A root a quota scan walks, as stored.
#[derive(Debug, Clone)]
struct ScanRoot {
    path: String,
    /// The stored `filesystem` (JSON text).
    filesystem: String,
    /// What to call it in errors.
    what: String,
}

impl ScanRoot {
    fn of_folder(f: &crate::store::FolderRow) -> Self {
        ScanRoot {
            path: f.data.path.clone(),
            filesystem: f.data.filesystem.clone(),
            what: format!("folder {:?}", f.data.name),
        }
    }
}

/// What a user's scan counts: the home, and the folders counted in the
/// user's quota (-1); folders with their own quota are scanned on their own.
fn user_scan_roots(
    user: &crate::store::UserRow,
    folders: &[(crate::store::FolderRow, crate::store::Mapping)],
) -> Vec<ScanRoot> {
    let home = ScanRoot {
        path: user.data.home_dir.clone(),
        filesystem: user.data.filesystem.clone(),
        what: "the home".into(),
    };
    std::iter::once(home)
        .chain(
            folders
                .iter()
                .filter(|(_, m)| m.quota_size < 0)
                .map(|(f, _)| ScanRoot::of_folder(f)),
        )
        .collect()
}

/// `ScanQuota`'s `paths` (local roots) and `stores` (object-backed roots,
/// secrets opened): each root is one or the other, never both.
fn split_roots(roots: Vec<ScanRoot>) -> Result<(Vec<String>, Vec<Storage>), String> {
    let mut paths = Vec::new();
    let mut stores = Vec::new();
    for root in roots {
        match crate::storage::stored_storage(&root.filesystem) {
            Ok(Some(s)) => stores.push(s),
            Ok(None) => paths.push(root.path),
            Err(e) => return Err(format!("{}: {e}", root.what)),
        }
    }
    Ok((paths, stores))
}

/// Starts a quota scan of a user (empty `folder`: the home and the folders
/// counted in the user's quota) or of a folder, walked by an attached edge.
pub async fn start_scan(
    state: &AppState,
    username: String,
    folder: String,
) -> Result<(), ScanError> {
    let roots = if folder.is_empty() {
        let user = state.store.user(username.clone()).await?;
        let (user, folders) = crate::groups::effective(&state.store, user).await?;
        user_scan_roots(&user, &folders)
    } else {
        let f = state.store.folder(folder.clone()).await?;
        vec![ScanRoot::of_folder(&f)]
    };
    let (paths, stores) = split_roots(roots).map_err(ScanError::Storage)?;
    let key = domain_key(&username, &folder);
    let scan_id = crate::random_token(12);
    {
        let mut scans = state
            .quota_locks
            .scans
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        scans.retain(|_, s| s.started.elapsed() < SCAN_TIMEOUT);
        if scans
            .values()
            .any(|s| domain_key(&s.username, &s.folder) == key)
        {
            return Err(ScanError::Running);
        }
        scans.insert(
            scan_id.clone(),
            Scan {
                scan_id: scan_id.clone(),
                username: username.clone(),
                folder: folder.clone(),
                start_time_ms: now_ms(),
                started: Instant::now(),
            },
        );
    }
    let msg = ControlMessage {
        kind: Some(control_message::Kind::ScanQuota(ScanQuota {
            scan_id: scan_id.clone(),
            paths,
            uploads_in_progress: state.fleet.temp_names_in_progress(),
            stores,
        })),
    };
    if !state.fleet.send_to_any_edge(msg) {
        state
            .quota_locks
            .scans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&scan_id);
        return Err(ScanError::NoEdge);
    }
    Ok(())
}

/// Running scans (users, or folders).
pub fn scans(state: &AppState, folders: bool) -> Vec<Scan> {
    let scans = state
        .quota_locks
        .scans
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<Scan> = scans
        .values()
        .filter(|s| s.started.elapsed() < SCAN_TIMEOUT && s.folder.is_empty() != folders)
        .cloned()
        .collect();
    out.sort_by_key(|s| s.start_time_ms);
    out
}

/// An edge's scan result: the counters are set to what it found.
pub async fn scan_done(state: &AppState, done: QuotaScanned) {
    let scan = state
        .quota_locks
        .scans
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&done.scan_id);
    let Some(scan) = scan else { return };
    if !done.error.is_empty() {
        tracing::warn!(
            scan_id = scan.scan_id,
            error = done.error,
            "quota scan failed"
        );
        return;
    }
    match admin_usage(
        state,
        scan.username.clone(),
        scan.folder.clone(),
        done.size,
        done.files,
        true,
    )
    .await
    {
        Ok(()) => tracing::info!(
            username = scan.username,
            folder = scan.folder,
            size = done.size,
            files = done.files,
            "quota scan done"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot store a quota scan"),
    }
}

pub async fn status(
    state: &AppState,
    username: String,
    folder: String,
) -> Result<QuotaStatusResponse, StoreError> {
    let limits = domain_limits(state, &username, &folder).await?;
    let (reserved_size, reserved_files) = reserved_in(state, &username, &folder);
    Ok(QuotaStatusResponse {
        quota_size: limits.quota_size,
        quota_files: limits.quota_files,
        used_size: limits.used_size,
        used_files: limits.used_files,
        reserved_size,
        reserved_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FolderData, FolderRow, Mapping, UserData, UserRow};

    fn folder(name: &str, filesystem: serde_json::Value, quota: i64) -> (FolderRow, Mapping) {
        (
            FolderRow {
                id: 1,
                data: FolderData {
                    name: name.into(),
                    description: String::new(),
                    path: format!("/srv/{name}"),
                    used_quota_size: 0,
                    used_quota_files: 0,
                    last_quota_update: 0,
                    filesystem: filesystem.to_string(),
                },
            },
            Mapping {
                folder: name.into(),
                virtual_path: format!("/{name}"),
                quota_size: quota,
                quota_files: quota,
            },
        )
    }

    /// A user's scan lists local roots as paths and object-backed ones as
    /// stores, never a local path for an object-backed root; folders with
    /// their own quota are left to their own scans.
    #[test]
    fn scans_walk_local_paths_and_list_object_stores() {
        let s3 = |bucket: &str| serde_json::json!({"provider": 1, "s3config": {"bucket": bucket, "region": "r"}});
        let mut user = UserRow {
            id: 1,
            data: UserData::new("ann", "/home/ann"),
        };
        let folders = vec![
            folder("local", serde_json::json!({"provider": 0}), -1),
            folder("cloud", s3("in-quota"), -1),
            folder("own", s3("own-quota"), 0),
        ];
        let (paths, stores) = split_roots(user_scan_roots(&user, &folders)).unwrap();
        assert_eq!(paths, ["/home/ann", "/srv/local"]);
        let buckets: Vec<&str> = stores.iter().map(|s| s.bucket.as_str()).collect();
        assert_eq!(buckets, ["in-quota"]);
        user.data.filesystem = s3("home").to_string();
        let (paths, stores) = split_roots(user_scan_roots(&user, &folders)).unwrap();
        assert_eq!(
            paths,
            ["/srv/local"],
            "no local path for an object-backed home"
        );
        let buckets: Vec<&str> = stores.iter().map(|s| s.bucket.as_str()).collect();
        assert_eq!(buckets, ["home", "in-quota"]);
        let (paths, stores) = split_roots(vec![ScanRoot::of_folder(&folders[2].0)]).unwrap();
        assert!(paths.is_empty() && stores[0].bucket == "own-quota");
        // Settings that cannot be used name the root.
        user.data.filesystem = r#"{"provider": 1, "s3config": {"region": "r"}}"#.into();
        let err = split_roots(user_scan_roots(&user, &[])).unwrap_err();
        assert_eq!(err, "the home: filesystem.s3config.bucket is required");
    }

    #[test]
    fn an_upload_is_settled_once() {
        let locks = QuotaLocks::default();
        assert!(locks.first_settle("i:1"));
        assert!(!locks.first_settle("i:1"), "a second settle of one upload");
        assert!(locks.first_settle("i:2"));
        assert!(
            locks.first_settle("") && locks.first_settle(""),
            "no id: always"
        );
        locks.unsettle("i:1");
        assert!(locks.first_settle("i:1"), "a failed settle can be retried");
    }
}
