//! The edge's side of the fleet-wide quota. For a user with limits every
//! upload holds a reservation in the control plane's ledger: a file (when it
//! creates one) and bytes, asked for in growing chunks before they are
//! written and settled with the real change when the upload ends. Writes
//! past what the reservation covers wait for a bigger one or fail with
//! SFTPGo's quota error. Users without limits skip reservations; their usage
//! changes travel in batches with the heartbeats.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferry_proto::edge::v1::{
    QuotaStatusResponse, ReserveRequest, SettleRequest, UploadRecovery, UsageDelta,
};
use tracing::warn;

use crate::control::ControlClient;
use crate::registry::Registry;

/// The message SFTPGo sends when quota refuses a write.
pub const QUOTA_EXCEEDED: &str = "denying write due to space limit";
/// First reservation chunk; each further one doubles, up to [`MAX_CHUNK`].
const FIRST_CHUNK: i64 = 1 << 20;
const MAX_CHUNK: i64 = 64 << 20;

/// Where a path's usage is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaDomain {
    User,
    /// A folder's own counters, with the user's mapping limits (0: none).
    Folder {
        name: String,
        quota_size: i64,
        quota_files: i64,
    },
}

impl QuotaDomain {
    /// The folder name for the control plane ("" for the user's quota).
    pub fn folder(&self) -> &str {
        match self {
            QuotaDomain::User => "",
            QuotaDomain::Folder { name, .. } => name,
        }
    }
}

/// Usage deltas waiting for the next heartbeat: changes without an upload id
/// add up per user; the end of an upload stays one entry (counted once by id).
#[derive(Default)]
pub struct UsageBatch {
    pending: Mutex<Pending>,
}

/// (sums of changes without an upload id per (user, folder), ends of uploads)
type Pending = (HashMap<(String, String), (i64, i64)>, Vec<UsageDelta>);

impl UsageBatch {
    /// A change of `username`'s usage, or of `folder`'s when not empty.
    pub fn add(&self, username: &str, folder: &str, size: i64, files: i64, upload_id: &str) {
        if size == 0 && files == 0 {
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if upload_id.is_empty() {
            let e =
                p.0.entry((username.to_string(), folder.to_string()))
                    .or_default();
            e.0 += size;
            e.1 += files;
        } else {
            p.1.push(UsageDelta {
                username: username.to_string(),
                size_delta: size,
                files_delta: files,
                upload_id: upload_id.to_string(),
                folder: folder.to_string(),
            });
        }
    }

    pub fn drain(&self) -> Vec<UsageDelta> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<UsageDelta> =
            p.0.drain()
                .filter(|(_, (s, f))| *s != 0 || *f != 0)
                .map(
                    |((username, folder), (size_delta, files_delta))| UsageDelta {
                        username,
                        size_delta,
                        files_delta,
                        upload_id: String::new(),
                        folder,
                    },
                )
                .collect();
        out.append(&mut p.1);
        out
    }

    pub fn restore(&self, deltas: Vec<UsageDelta>) {
        for d in deltas {
            self.add(
                &d.username,
                &d.folder,
                d.size_delta,
                d.files_delta,
                &d.upload_id,
            );
        }
    }
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaError {
    /// Over quota or over `max_upload_file_size`.
    Exceeded,
    /// The control plane could not be asked.
    Unavailable(String),
}

impl std::error::Error for QuotaError {}

impl std::fmt::Display for QuotaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuotaError::Exceeded => f.write_str(QUOTA_EXCEEDED),
            QuotaError::Unavailable(m) => write!(f, "quota check failed: {m}"),
        }
    }
}

/// One user's quota on one SSH connection.
pub struct QuotaAgent {
    control: ControlClient,
    registry: Arc<Registry>,
    pub username: String,
    lease_id: String,
    pub quota_size: i64,
    pub quota_files: i64,
    /// Largest file one upload may produce (0: no limit).
    pub max_file_size: u64,
}

impl QuotaAgent {
    pub fn new(
        control: ControlClient,
        registry: Arc<Registry>,
        username: String,
        lease_id: String,
        quota_size: i64,
        quota_files: i64,
        max_file_size: i64,
    ) -> Self {
        Self {
            control,
            registry,
            username,
            lease_id,
            quota_size: quota_size.max(0),
            quota_files: quota_files.max(0),
            max_file_size: u64::try_from(max_file_size).unwrap_or(0),
        }
    }

    /// True when the user has a size or files limit (and so reserves).
    pub fn limited(&self) -> bool {
        self.quota_size > 0 || self.quota_files > 0
    }

    /// True when changes in `domain` need reservations: the user's own
    /// quota with limits (folders with their own counters have no limits).
    fn reserves(&self, domain: &QuotaDomain) -> bool {
        self.size_limit(domain) > 0 || self.files_limit(domain) > 0
    }

    fn size_limit(&self, domain: &QuotaDomain) -> i64 {
        match domain {
            QuotaDomain::User => self.quota_size,
            QuotaDomain::Folder { quota_size, .. } => *quota_size,
        }
    }

    fn files_limit(&self, domain: &QuotaDomain) -> i64 {
        match domain {
            QuotaDomain::User => self.quota_files,
            QuotaDomain::Folder { quota_files, .. } => *quota_files,
        }
    }

    async fn reserve(
        &self,
        domain: &QuotaDomain,
        id: Option<String>,
        held: i64,
        wanted: i64,
        needed: i64,
        files: i64,
    ) -> Result<(String, i64), QuotaError> {
        let _timer = crate::metrics::METRICS.reserve_seconds.start_timer();
        let resp = self
            .control
            .reserve(ReserveRequest {
                username: self.username.clone(),
                lease_id: self.lease_id.clone(),
                reservation_id: id.unwrap_or_default(),
                bytes_held: held,
                bytes_wanted: wanted,
                bytes_needed: needed,
                files,
                folder: domain.folder().to_string(),
            })
            .await
            .map_err(|s| QuotaError::Unavailable(s.message().to_string()))?;
        if resp.granted {
            Ok((resp.reservation_id, resp.bytes_granted))
        } else {
            Err(QuotaError::Exceeded)
        }
    }

    /// Records a usage change: at once in the ledger for a user with limits
    /// (releasing `reservation`), batched otherwise.
    async fn settle(
        &self,
        domain: &QuotaDomain,
        reservation: Option<String>,
        size: i64,
        files: i64,
        upload_id: &str,
    ) {
        let folder = domain.folder();
        if !self.reserves(domain) {
            self.registry
                .usage
                .add(&self.username, folder, size, files, upload_id);
            return;
        }
        if reservation.is_none() && size == 0 && files == 0 {
            return;
        }
        let req = SettleRequest {
            username: self.username.clone(),
            reservation_id: reservation.unwrap_or_default(),
            size_delta: size,
            files_delta: files,
            upload_id: upload_id.to_string(),
            folder: folder.to_string(),
        };
        if let Err(e) = self.control.settle(req).await {
            // The change still reaches the ledger with a heartbeat; the
            // reservation expires with the lease.
            warn!(username = self.username, error = %e, "cannot settle quota, batching it");
            self.registry
                .usage
                .add(&self.username, folder, size, files, upload_id);
        }
    }

    /// A change that needs no reservation (deletes, overwriting renames).
    pub async fn release(&self, domain: &QuotaDomain, size: i64, files: i64) {
        self.settle(domain, None, size, files, "").await;
    }

    /// A change that may grow usage (truncate up, hard link): reserved
    /// first, so it is refused when it does not fit.
    pub async fn grow(
        &self,
        domain: &QuotaDomain,
        size: i64,
        files: i64,
    ) -> Result<(), QuotaError> {
        if !self.reserves(domain) || (size <= 0 && files <= 0) {
            self.settle(domain, None, size, files, "").await;
            return Ok(());
        }
        let bytes = if self.size_limit(domain) > 0 {
            size.max(0)
        } else {
            0
        };
        let (id, _) = self
            .reserve(domain, None, 0, bytes, bytes, files.max(0))
            .await?;
        self.settle(domain, Some(id), size, files, "").await;
        Ok(())
    }

    /// Starts an upload to a target that held `old_size` bytes (`existed`)
    /// and whose file starts at `start_size` bytes (0 when truncated).
    pub async fn begin_upload(
        self: &Arc<Self>,
        domain: QuotaDomain,
        existed: bool,
        old_size: u64,
        start_size: u64,
    ) -> Result<UploadQuota, QuotaError> {
        let mut reservation = None;
        let mut reserved = 0;
        if self.reserves(&domain) && !existed {
            // A new file needs a free file slot and, with a size limit, room
            // for at least one byte (SFTPGo refuses new files at the limit).
            let (wanted, needed) = if self.size_limit(&domain) > 0 {
                (FIRST_CHUNK, 1)
            } else {
                (0, 0)
            };
            let (id, granted) = self.reserve(&domain, None, 0, wanted, needed, 1).await?;
            reservation = Some(id);
            reserved = granted;
        }
        Ok(UploadQuota {
            upload_id: self.control.next_upload_id(),
            limited_size: self.size_limit(&domain) > 0,
            domain,
            agent: self.clone(),
            existed,
            old_size: i64::try_from(old_size).unwrap_or(i64::MAX),
            high_water: AtomicU64::new(start_size),
            reserved: AtomicI64::new(reserved),
            reservation: Mutex::new(reservation),
            grow: tokio::sync::Mutex::new(FIRST_CHUNK),
            exceeded: AtomicBool::new(false),
            settled: AtomicBool::new(false),
        })
    }

    /// Limits, usage and reservations of a quota domain; None when it has
    /// no limits.
    pub async fn status(
        &self,
        domain: &QuotaDomain,
    ) -> Result<Option<QuotaStatusResponse>, QuotaError> {
        if !self.reserves(domain) {
            return Ok(None);
        }
        self.control
            .quota_status(&self.username, domain.folder())
            .await
            .map(Some)
            .map_err(|s| QuotaError::Unavailable(s.message().to_string()))
    }
}

/// The quota side of one upload (one open file handle or SCP file).
pub struct UploadQuota {
    /// Fleet-unique; the ledger counts each upload's settle once.
    pub upload_id: String,
    domain: QuotaDomain,
    /// Bytes need a reservation (user domain with a size limit).
    limited_size: bool,
    agent: Arc<QuotaAgent>,
    existed: bool,
    old_size: i64,
    /// Highest end offset the file may have reached.
    high_water: AtomicU64,
    /// Bytes the reservation holds.
    reserved: AtomicI64,
    reservation: Mutex<Option<String>>,
    /// Serialises growth; holds the next chunk size.
    grow: tokio::sync::Mutex<i64>,
    exceeded: AtomicBool,
    settled: AtomicBool,
}

impl UploadQuota {
    /// What the control plane needs to recover this upload if the edge dies.
    pub fn recovery(&self, target: &str, temp: Option<&str>, resume: bool) -> UploadRecovery {
        UploadRecovery {
            folder: self.domain.folder().to_string(),
            upload_id: self.upload_id.clone(),
            target_path: target.to_string(),
            temp_path: temp.unwrap_or_default().to_string(),
            resume,
            old_size: if self.existed { self.old_size } else { -1 },
        }
    }

    /// True once a write was refused: the upload is removed when it ends.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    fn refuse(&self) -> QuotaError {
        self.exceeded.store(true, Ordering::Relaxed);
        QuotaError::Exceeded
    }

    /// Admits a write that ends at `end`: within `max_upload_file_size` and
    /// covered by the reservation (grown when needed).
    pub async fn admit(&self, end: u64) -> Result<(), QuotaError> {
        let agent = &self.agent;
        if agent.max_file_size > 0 && end > agent.max_file_size {
            return Err(self.refuse());
        }
        if end <= self.high_water.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.limited_size {
            // Offsets past i64::MAX were refused by the storage layer; a
            // bad one here is refused rather than wrapped.
            let Ok(end_signed) = i64::try_from(end) else {
                return Err(self.refuse());
            };
            let need = end_signed - self.old_size;
            if need > self.reserved.load(Ordering::Acquire) {
                let mut chunk = self.grow.lock().await;
                let held = self.reserved.load(Ordering::Acquire);
                if need > held {
                    let missing = need - held;
                    let wanted = missing.max(*chunk);
                    let id = self
                        .reservation
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    match agent
                        .reserve(&self.domain, id, held, wanted, missing, 0)
                        .await
                    {
                        Ok((id, granted)) => {
                            *self.reservation.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
                            self.reserved.fetch_add(granted, Ordering::AcqRel);
                            *chunk = (*chunk * 2).min(MAX_CHUNK);
                        }
                        Err(QuotaError::Exceeded) => return Err(self.refuse()),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        self.high_water.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    /// Settles the upload once: `final_size` is the target's size after it
    /// ended (None when no file is left).
    pub async fn finish(&self, final_size: Option<u64>) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        let size_delta =
            final_size.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX)) - self.old_size;
        let files_delta = i64::from(final_size.is_some()) - i64::from(self.existed);
        let reservation = self
            .reservation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.agent
            .settle(
                &self.domain,
                reservation,
                size_delta,
                files_delta,
                &self.upload_id,
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_add_up_and_survive_a_failed_send() {
        let b = UsageBatch::default();
        b.add("a", "", 10, 1, "");
        b.add("a", "", -4, 0, "");
        b.add("b", "", 0, 0, "");
        let d = b.drain();
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].size_delta, d[0].files_delta), (6, 1));
        assert!(b.drain().is_empty());
        b.restore(d);
        b.add("a", "", 1, 0, "");
        // Ends of uploads stay apart, with their ids.
        b.add("a", "", 5, 1, "i:1");
        b.add("a", "", 5, 1, "i:2");
        let d = b.drain();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].size_delta, 7);
        assert_eq!(d[2].upload_id, "i:2");
    }
}
