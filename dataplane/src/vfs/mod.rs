//! The storage layer: the only code of the edge that touches user storage.
//!
//! A user's tree (home plus virtual folders) is a set of *roots*, each held
//! open as a directory handle. Every client path is cleaned into a virtual
//! path by the protocol code and then resolved here by a walk the kernel
//! confines: one component at a time with `openat(O_PATH | O_NOFOLLOW)`
//! relative to the directory handle before it, symlinks read from the handle
//! of the link itself and interpreted by us (`..` pops our own stack, an
//! absolute target must lie under one of the user's roots), so a concurrent
//! rename or a planted link can change *which* entry inside the tree is
//! reached, never make the walk leave it. The result ([`Entry`]) keeps the
//! handle of the directory holding the entry and the entry's name; every
//! operation is then a `*at()` call on that handle with `O_NOFOLLOW`, so the
//! path is never resolved again as a string. The walk also yields the
//! *resolved* virtual path, on which permissions and filters are decided.
//!
//! Uploads of every protocol go through one [`Upload`] object (temporary
//! names, upload modes, quota admission and settle, commit or abort).
//! Protocol code holds no real path: `clippy.toml` bans `std::fs`/`tokio::fs`
//! outside this module (see ARCHITECTURE.md).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

mod object;
mod ops;
mod scan;
mod tree;
mod upload;

pub use ops::{DirReader, FileReader, Meta, SetAttrs, StatVfs};
pub use scan::{UploadRecoveryOutcome, recover_upload, scan_usage};
pub use tree::{Entry, Follow, UserFs};
pub use upload::{OpenWrite, Upload, UploadError};

use rustix::io::Errno;

/// Prefix of temporary upload names (atomic upload modes). Client paths
/// whose last component starts with it are refused.
pub const TEMP_PREFIX: &str = ".ferry-upload.";

/// Symlinks followed in one resolution before giving up (as the kernel's
/// `MAXSYMLINKS`).
pub const MAX_SYMLINKS: u32 = 40;

/// Why a storage operation failed. The texts are short and meant for
/// clients: never an OS error string or a server path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("permission denied")]
    PermissionDenied,
    /// A path (or a link on it) leads outside the user's storage.
    #[error("permission denied")]
    Outside,
    #[error("file already exists")]
    Exists,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a symbolic link")]
    NotALink,
    /// FIFOs, sockets and devices are never opened.
    #[error("not a regular file")]
    NotRegular,
    #[error("too many levels of symbolic links")]
    Loop,
    #[error("cannot rename across filesystems")]
    CrossDevice,
    #[error("no space left on the storage")]
    NoSpace,
    #[error("file name too long")]
    NameTooLong,
    #[error("invalid argument")]
    Invalid,
    /// A name the server keeps for itself (temporary uploads).
    #[error("reserved file name")]
    Reserved,
    #[error("operation unsupported: {0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    Failure(&'static str),
}

impl From<Errno> for FsError {
    fn from(e: Errno) -> Self {
        match e {
            Errno::NOENT => FsError::NotFound,
            Errno::ACCESS | Errno::PERM | Errno::ROFS => FsError::PermissionDenied,
            Errno::EXIST => FsError::Exists,
            Errno::NOTDIR => FsError::NotADirectory,
            Errno::ISDIR => FsError::IsADirectory,
            Errno::NOTEMPTY => FsError::NotEmpty,
            Errno::LOOP => FsError::Loop,
            Errno::XDEV => FsError::CrossDevice,
            Errno::NOSPC | Errno::DQUOT | Errno::FBIG => FsError::NoSpace,
            Errno::NAMETOOLONG => FsError::NameTooLong,
            Errno::INVAL => FsError::Invalid,
            Errno::NXIO | Errno::NODEV => FsError::NotRegular,
            Errno::BUSY => FsError::Failure("resource busy"),
            Errno::MLINK => FsError::Failure("too many links"),
            Errno::IO => FsError::Failure("input/output error"),
            Errno::NOSYS | Errno::OPNOTSUPP => FsError::Unsupported("not supported by the storage"),
            _ => FsError::Failure("operation failed"),
        }
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(n) => Errno::from_raw_os_error(n).into(),
            None => match e.kind() {
                std::io::ErrorKind::NotFound => FsError::NotFound,
                std::io::ErrorKind::PermissionDenied => FsError::PermissionDenied,
                std::io::ErrorKind::UnexpectedEof => FsError::Failure("unexpected end of file"),
                _ => FsError::Failure("operation failed"),
            },
        }
    }
}

/// Runs storage work on the blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, FsError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, FsError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "storage task failed");
        Err(FsError::Failure("internal error"))
    })
}

/// How uploads land (SFTPGo's `common.upload_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UploadMode {
    /// 0: write to the target directly.
    #[default]
    Direct,
    /// 1: write to a temporary name in the same directory, rename into place
    /// on close; an interrupted upload leaves the target as it was.
    Atomic,
    /// 2: as 1, but an interrupted upload is renamed onto the target so the
    /// client can resume it.
    AtomicResume,
}

impl UploadMode {
    pub fn from_setting(v: u8) -> Result<Self, String> {
        match v {
            0 => Ok(UploadMode::Direct),
            1 => Ok(UploadMode::Atomic),
            2 => Ok(UploadMode::AtomicResume),
            n => Err(format!("upload_mode must be 0, 1 or 2, got {n}")),
        }
    }
}

/// SFTPGo's `common.setstat_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetstatMode {
    /// 0: chmod, chown and chtimes are applied.
    #[default]
    Apply,
    /// 1: they are accepted and silently ignored (truncation still applies).
    Ignore,
    /// 2: ignored only where the storage cannot do them; on local disk as 0.
    IgnoreUnsupported,
}

impl SetstatMode {
    pub fn from_setting(v: u8) -> Result<Self, String> {
        match v {
            0 => Ok(SetstatMode::Apply),
            1 => Ok(SetstatMode::Ignore),
            2 => Ok(SetstatMode::IgnoreUnsupported),
            n => Err(format!("setstat_mode must be 0, 1 or 2, got {n}")),
        }
    }
}

/// How an edge writes to storage (SFTPGo's `common` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsSettings {
    pub upload_mode: UploadMode,
    pub setstat_mode: SetstatMode,
    /// Bits cleared from the mode of new files and directories; None keeps
    /// the process umask.
    pub umask: Option<u32>,
}

/// Parses an octal umask such as `022` or `0077`.
pub fn parse_umask(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("umask must be octal between 000 and 777, got {text:?}"))
}

/// Mode bits a client may set: permissions and the sticky bit, never
/// setuid/setgid (the server may run as root and chown to the user's uid).
pub const CHMOD_MASK: u32 = 0o1777;

/// True when this process runs as root (new files then get the user's
/// uid/gid).
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// True when `name` (one path component) is a temporary upload name.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

#[cfg(test)]
mod tests;
