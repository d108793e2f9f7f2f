//! One authenticated user's rules as the edge applies them to every request
//! of every protocol (SFTP, SCP, commands): permissions, file filters,
//! quota and bandwidth, built once per SSH connection from the session
//! policy the control plane sent at login.

use std::sync::Arc;

use ferry_proto::edge::v1::SessionPolicy;
use ferry_proto::filters::{Access, FileFilters, PatternsSpec};
use ferry_proto::permissions::{Operation, PermissionMap};

use crate::bandwidth::TokenBucket;
use crate::quota::QuotaAgent;

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Permission denied.
    Denied,
    /// Hidden by a filter: answered as if the path did not exist.
    Hidden,
}

pub struct UserPolicy {
    pub perms: PermissionMap,
    pub files: FileFilters,
    pub quota: Arc<QuotaAgent>,
    pub upload_bucket: Option<Arc<TokenBucket>>,
    pub download_bucket: Option<Arc<TokenBucket>>,
    /// filters.start_directory, cleaned ("/" when unset).
    pub start_dir: String,
}

impl UserPolicy {
    /// Validates what the control plane sent (it validated it on input;
    /// a mismatch means an older or newer peer and refuses the session).
    pub fn from_session(
        policy: &SessionPolicy,
        quota: QuotaAgent,
        registry: &crate::registry::Registry,
    ) -> Result<Self, String> {
        let raw = policy
            .permissions
            .iter()
            .map(|(k, v)| (k.clone(), v.permissions.clone()))
            .collect();
        let perms =
            PermissionMap::validate(&raw).map_err(|e| format!("invalid permissions: {e}"))?;
        let specs: Vec<PatternsSpec> = policy
            .file_patterns
            .iter()
            .map(|p| PatternsSpec {
                path: p.path.clone(),
                allowed_patterns: p.allowed_patterns.clone(),
                denied_patterns: p.denied_patterns.clone(),
                deny_policy: p.deny_policy,
            })
            .collect();
        let files = FileFilters::new(&specs).map_err(|e| format!("invalid filters: {e}"))?;
        Ok(Self {
            perms,
            files,
            upload_bucket: registry
                .buckets
                .get(&policy.username, true, policy.upload_bandwidth),
            download_bucket: registry.buckets.get(
                &policy.username,
                false,
                policy.download_bandwidth,
            ),
            quota: Arc::new(quota),
            start_dir: ferry_proto::vpath::clean("/", &policy.start_directory),
        })
    }

    /// A client's path as a clean virtual path: relative ones start at the
    /// start directory.
    pub fn resolve(&self, path: &str) -> String {
        ferry_proto::vpath::clean(&self.start_dir, path)
    }

    /// The permission check of one operation.
    pub fn allows(&self, op: Operation<'_>) -> Result<(), Denial> {
        if self.perms.allows(op) {
            Ok(())
        } else {
            Err(Denial::Denied)
        }
    }

    /// The file filters for a path the request names.
    pub fn path(&self, vpath: &str) -> Result<(), Denial> {
        match self.files.check(vpath) {
            Access::Allowed => Ok(()),
            Access::Denied => Err(Denial::Denied),
            Access::Hidden => Err(Denial::Hidden),
        }
    }

    /// Only hiding applies (stat, listing a directory): a denied but
    /// visible name can still be looked at.
    pub fn visible(&self, vpath: &str) -> Result<(), Denial> {
        match self.files.check(vpath) {
            Access::Hidden => Err(Denial::Hidden),
            _ => Ok(()),
        }
    }

    /// Whether a directory entry is listed.
    pub fn listed(&self, dir: &str, name: &str) -> bool {
        self.files.is_empty() || self.files.visible_in(dir, name)
    }

    pub async fn throttle_upload(&self, n: usize) {
        if let Some(b) = &self.upload_bucket {
            b.consume(n).await;
        }
    }

    pub async fn throttle_download(&self, n: usize) {
        if let Some(b) = &self.download_bucket {
            b.consume(n).await;
        }
    }
}
