//! The fleet-wide quota ledger. Used counters live in the database and change
//! only by atomic increments; reservations of uploads in progress live with
//! the session leases in [`crate::fleet::Fleet`]. A user's reserve and settle
//! steps run one at a time (a per-user lock), so a grant always sees the
//! usage and reservations that precede it: two edges writing for one user can
//! never be granted more than the quota together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_proto::edge::v1::{QuotaStatusResponse, ReserveRequest, ReserveResponse, SettleRequest};

use crate::AppState;
use crate::store::{StoreError, now_ms};

/// Per-user serialisation of quota decisions.
#[derive(Default)]
pub struct QuotaLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl QuotaLocks {
    async fn lock(&self, username: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Drop locks nobody holds, so the map does not grow forever.
            if locks.len() > 1024 {
                locks.retain(|_, m| Arc::strong_count(m) > 1);
            }
            locks.entry(username.to_string()).or_default().clone()
        };
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
    let _guard = state.quota_locks.lock(&req.username).await;
    let user = state.store.user(req.username.clone()).await?;
    let d = &user.data;
    let (reserved_bytes, reserved_files) = state.fleet.reserved(&req.username);
    if req.files > 0
        && d.quota_files > 0
        && d.used_quota_files + reserved_files + req.files > d.quota_files
    {
        return Ok(refused(QUOTA_EXCEEDED));
    }
    let granted = if d.quota_size > 0 {
        // What the edge holds already but we lost (a restart) counts too.
        let lost = match req.reservation_id.as_str() {
            "" => 0,
            id if state.fleet.has_reservation(id) => 0,
            _ => req.bytes_held.max(0),
        };
        let available = d.quota_size - d.used_quota_size - reserved_bytes - lost;
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

/// Applies a usage change and releases the reservation behind it.
pub async fn settle(state: &AppState, req: SettleRequest) -> Result<(), StoreError> {
    let _guard = state.quota_locks.lock(&req.username).await;
    if req.size_delta != 0 || req.files_delta != 0 {
        state
            .store
            .add_quota_usage(
                req.username.clone(),
                req.size_delta,
                req.files_delta,
                now_ms(),
            )
            .await?;
    }
    // Only after the usage is in the database, so no grant in between sees
    // neither.
    if !req.reservation_id.is_empty() {
        state.fleet.release_reservation(&req.reservation_id);
    }
    Ok(())
}

/// Usage changes of users without limits, batched by an edge.
pub async fn apply_batch(state: &AppState, username: String, size_delta: i64, files_delta: i64) {
    let _guard = state.quota_locks.lock(&username).await;
    if let Err(e) = state
        .store
        .add_quota_usage(username.clone(), size_delta, files_delta, now_ms())
        .await
    {
        tracing::warn!(username, error = %e, "cannot apply a batched quota update");
    }
}

pub async fn status(state: &AppState, username: String) -> Result<QuotaStatusResponse, StoreError> {
    let user = state.store.user(username.clone()).await?;
    let (reserved_size, reserved_files) = state.fleet.reserved(&username);
    let d = &user.data;
    Ok(QuotaStatusResponse {
        quota_size: d.quota_size,
        quota_files: d.quota_files,
        used_size: d.used_quota_size,
        used_files: d.used_quota_files,
        reserved_size,
        reserved_files,
    })
}
