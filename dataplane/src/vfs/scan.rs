//! Usage walks (quota scans, moves between quota domains, rsync/git
//! re-scans) and the recovery of uploads a vanished edge left behind. Walks
//! go through directory handles and never follow links. Temporary files of
//! uploads in progress are left out (each upload settles its own change):
//! those of this edge are registered by device and inode when created, those
//! of other edges come by name with the control plane's scan request (random,
//! unguessable names). A user cannot hide a file from the quota by giving it
//! a temporary-looking name: it counts unless an upload in progress owns it.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::{LazyLock, Mutex};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::ops::Meta;
use super::tree::{Follow, UserFs};
use super::{FsError, is_temp_name};

/// (device, inode) of every temporary upload file in progress on this edge.
static IN_PROGRESS: LazyLock<Mutex<HashSet<(u64, u64)>>> = LazyLock::new(Default::default);

pub(super) fn register_temp(meta: &Meta) {
    IN_PROGRESS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((meta.dev, meta.ino));
}

pub(super) fn unregister_temp(meta: &Meta) {
    IN_PROGRESS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(meta.dev, meta.ino));
}

pub(super) fn in_progress(name: &[u8], meta: &Meta, elsewhere: &HashSet<String>) -> bool {
    let name = String::from_utf8_lossy(name);
    is_temp_name(&name)
        && (elsewhere.contains(name.as_ref())
            || IN_PROGRESS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(meta.dev, meta.ino)))
}

/// Usage at or under `name` in `dir`; `elsewhere` names the temporary
/// files of uploads in progress on other edges.
pub(super) fn usage_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    elsewhere: &HashSet<String>,
) -> (i64, i64) {
    let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return (0, 0);
    };
    let meta = Meta::from_stat(&st);
    if meta.is_file() {
        if in_progress(name, &meta, elsewhere) {
            return (0, 0);
        }
        return (i64::try_from(meta.size).unwrap_or(i64::MAX), 1);
    }
    if !meta.is_dir() {
        return (0, 0);
    }
    let Ok(fd) = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return (0, 0);
    };
    let mut total = (0i64, 0i64);
    let Ok(mut d) = rustix::fs::Dir::read_from(&fd) else {
        return total;
    };
    while let Some(entry) = d.read() {
        let Ok(entry) = entry else { continue };
        let n = entry.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        // d_type saves a stat for what is neither a file nor a directory.
        if !matches!(
            entry.file_type(),
            FileType::Directory | FileType::RegularFile | FileType::Unknown
        ) {
            continue;
        }
        let (b, f) = usage_at(fd.as_fd(), n, elsewhere);
        total = (total.0.saturating_add(b), total.1 + f);
    }
    total
}

/// A quota scan of the directories the control plane names (a user's home
/// and folders, or one folder): (bytes, regular files). A directory that
/// does not exist yet holds nothing. `in_progress`: base names of temporary
/// upload files in progress on other edges.
pub async fn scan_usage(
    paths: Vec<String>,
    stores: Vec<ferry_proto::edge::v1::Storage>,
    in_progress: Vec<String>,
) -> Result<(i64, i64), String> {
    let mut objects = (0i64, 0i64);
    for s in &stores {
        let root = super::object::ObjectRoot::open(s, "(quota scan)").map_err(|e| e.to_string())?;
        let (b, f) = root
            .usage("")
            .await
            .map_err(|e| format!("{}: {e}", root.label))?;
        objects = (objects.0.saturating_add(b), objects.1 + f);
    }
    let elsewhere: HashSet<String> = in_progress.into_iter().collect();
    let local = tokio::task::spawn_blocking(move || {
        let mut total = (0i64, 0i64);
        for p in &paths {
            let path = Path::new(p);
            if !path.is_absolute() {
                return Err(format!("{p} is not an absolute path"));
            }
            match rustix::fs::open(
                path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    let (b, f) = usage_at(fd.as_fd(), b".", &elsewhere);
                    total = (total.0.saturating_add(b), total.1 + f);
                }
                Err(rustix::io::Errno::NOENT) => {}
                Err(rustix::io::Errno::NOTDIR) => return Err(format!("{p} is not a directory")),
                Err(e) => return Err(format!("{p}: {}", FsError::from(e))),
            }
        }
        Ok(total)
    })
    .await
    .unwrap_or_else(|e| Err(format!("scan failed: {e}")))?;
    Ok((local.0.saturating_add(objects.0), local.1 + objects.1))
}

/// What recovering one upload left under its target name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadRecoveryOutcome {
    /// Size of the regular file at the target afterwards (None: none).
    pub final_size: Option<u64>,
}

/// The file side of recovering an upload of a vanished edge: its temporary
/// file (only ever one of our temporary names) is removed, or moved onto the
/// target in resume mode.
pub async fn recover_upload(
    fs: &UserFs,
    target: &str,
    temp: &str,
    resume: bool,
) -> Result<UploadRecoveryOutcome, FsError> {
    let fs = fs.clone();
    let (target, temp) = (target.to_string(), temp.to_string());
    {
        // An object upload left nothing but (at most) a pending multipart
        // upload, which the store expires; the target is what it was.
        let probe = fs.clone();
        let t = target.clone();
        let mut entry = super::blocking(move || probe.walk(&t, Follow::NotLast)).await?;
        if entry.is_object() {
            entry.stat_object().await?;
            return Ok(UploadRecoveryOutcome {
                final_size: entry.meta().filter(|m| m.is_file()).map(|m| m.size),
            });
        }
    }
    super::blocking(move || {
        let target = fs.walk(&target, Follow::NotLast)?;
        if !temp.is_empty() {
            if !is_temp_name(ferry_proto::vpath::base_name(&temp)) {
                return Err(FsError::Reserved);
            }
            let temp = fs.walk(&temp, Follow::NotLast)?;
            if temp.exists() {
                let done = if resume {
                    rustix::fs::renameat(
                        temp.dirfd(),
                        temp.name.as_slice(),
                        target.dirfd(),
                        target.name.as_slice(),
                    )
                } else {
                    rustix::fs::unlinkat(temp.dirfd(), temp.name.as_slice(), AtFlags::empty())
                };
                match done {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let final_size = rustix::fs::statat(
            target.dirfd(),
            target.name.as_slice(),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .ok()
        .map(|st| Meta::from_stat(&st))
        .filter(Meta::is_file)
        .map(|m| m.size);
        Ok(UploadRecoveryOutcome { final_size })
    })
    .await
}
