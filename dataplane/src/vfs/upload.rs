//! One upload, whatever the protocol (SFTP handle, SCP file): the safe
//! open, temporary names of the atomic modes, ownership and umask of what
//! it creates, writes admitted against the quota reservation with checked
//! offsets, and the end: commit (rename into place) or abort (per upload
//! mode), each followed by one settle of the real change.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_proto::edge::v1::UploadRecovery;
use rustix::fs::{AtFlags, OFlags, RenameFlags};

use super::object::ObjectWriter;
use super::ops::{
    FileReader, Meta, ObjectFile, apply_umask, chmod_entry, chown_entry, copy_data, open_regular,
};
use super::scan::{register_temp, unregister_temp};
use super::tree::Entry;
use super::{CHMOD_MASK, FsError, TEMP_PREFIX, UploadMode, blocking};
use crate::quota::{QuotaAgent, QuotaError, UploadQuota};

/// How a file is opened for writing (SFTP's open flags, SCP's sink).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenWrite {
    /// Also open for reading (such opens always write in place).
    pub read: bool,
    /// Create the file when missing.
    pub create: bool,
    /// Fail when the file exists.
    pub exclusive: bool,
    pub truncate: bool,
    /// Writes below the size at open are refused (OpenSSH resumes with
    /// APPEND; files are never opened with `O_APPEND`, which would reorder
    /// concurrent positional writes).
    pub append: bool,
    /// Permission bits of a new file, before the umask.
    pub mode: u32,
}

/// Why an upload step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Storage(#[from] FsError),
    #[error("{0}")]
    Quota(#[from] QuotaError),
}

/// The temporary file of an atomic upload, beside its target.
#[derive(Debug)]
struct Temp {
    name: Vec<u8>,
    meta: Meta,
}

/// An upload in progress.
pub struct Upload {
    target: Entry,
    temp: Option<Temp>,
    file: FileReader,
    /// Set when the target is in an object store: data goes to a
    /// multipart upload that appears at the commit.
    object: Option<Arc<ObjectWriter>>,
    mode: UploadMode,
    quota: UploadQuota,
    append_floor: Option<u64>,
    /// The target existed and its data is kept (no truncation).
    keep_existing: bool,
    old_size: Option<u64>,
    exclusive: bool,
    finished: AtomicBool,
}

/// A temporary name for `name` that fits in one component.
fn temp_name(name: &[u8]) -> Vec<u8> {
    let mut out = format!("{TEMP_PREFIX}{:016x}.", rand::random::<u64>()).into_bytes();
    let room = 255 - out.len();
    let mut keep = name.len().min(room);
    // Cut on a character boundary when the name is UTF-8.
    while keep > 0
        && std::str::from_utf8(&name[..keep]).is_err()
        && std::str::from_utf8(name).is_ok()
    {
        keep -= 1;
    }
    out.extend_from_slice(&name[..keep]);
    out
}

impl Upload {
    /// Opens `target` (resolved with links followed) for writing after the
    /// quota admits it: a new file needs a file slot and room; an upload
    /// that keeps the existing data starts from its size.
    pub async fn begin(
        target: Entry,
        opts: OpenWrite,
        agent: &Arc<QuotaAgent>,
    ) -> Result<Self, UploadError> {
        let existing = target.meta().copied();
        if let Some(m) = &existing {
            if m.is_dir() {
                return Err(FsError::IsADirectory.into());
            }
            if !m.is_file() {
                return Err(FsError::NotRegular.into());
            }
            if opts.exclusive {
                return Err(FsError::Exists.into());
            }
        } else if !opts.create {
            return Err(FsError::NotFound.into());
        }
        if target.is_self() {
            return Err(FsError::IsADirectory.into());
        }
        if target.is_object() {
            return Self::begin_object(target, opts, agent).await;
        }
        let settings = target.tree.settings;
        let mode = if opts.read {
            UploadMode::Direct
        } else {
            settings.upload_mode
        };
        let old_size = existing.map(|m| m.size);
        let keep_existing = existing.is_some() && !opts.truncate;
        let start = if keep_existing {
            old_size.unwrap_or(0)
        } else {
            0
        };
        let quota = agent
            .begin_upload(
                target.domain(),
                existing.is_some(),
                old_size.unwrap_or(0),
                start,
            )
            .await?;
        let t = target.clone();
        let opened = blocking(move || {
            let dir = t.dirfd();
            let perm = opts.mode & 0o777;
            if mode == UploadMode::Direct {
                let mut flags = if opts.read {
                    OFlags::RDWR
                } else {
                    OFlags::WRONLY
                };
                if opts.create {
                    flags |= OFlags::CREATE;
                }
                if opts.exclusive {
                    flags |= OFlags::EXCL;
                }
                if opts.truncate {
                    flags |= OFlags::TRUNC;
                }
                let (file, meta) = open_regular(dir, &t.name, flags, perm)?;
                if existing.is_none() {
                    apply_umask(dir, &t.name, perm, settings.umask);
                    chown_entry(dir, &t.name, t.tree.owner);
                }
                return Ok((file, meta, None));
            }
            let name = temp_name(&t.name);
            let (file, meta) = open_regular(
                dir,
                &name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                perm,
            )?;
            register_temp(&meta);
            let temp = Temp { name, meta };
            let prepared = (|| {
                if keep_existing {
                    // The original stays untouched until the commit: the
                    // upload continues on a copy of it.
                    let (orig, orig_meta) = open_regular(dir, &t.name, OFlags::RDONLY, 0)?;
                    copy_data(&orig, &file, orig_meta.size, &|| {})?;
                    chmod_entry(dir, &temp.name, orig_meta.mode & CHMOD_MASK)?;
                } else if existing.is_some() {
                    chmod_entry(
                        dir,
                        &temp.name,
                        existing.map_or(perm, |m| m.mode) & CHMOD_MASK,
                    )?;
                } else {
                    apply_umask(dir, &temp.name, perm, settings.umask);
                }
                chown_entry(dir, &temp.name, t.tree.owner);
                Ok::<_, FsError>(())
            })();
            if let Err(e) = prepared {
                let _ = rustix::fs::unlinkat(dir, temp.name.as_slice(), AtFlags::empty());
                unregister_temp(&temp.meta);
                return Err(e);
            }
            Ok((file, meta, Some(temp)))
        })
        .await;
        let (file, meta, temp) = match opened {
            Ok(o) => o,
            Err(e) => {
                quota.finish(old_size).await;
                return Err(e.into());
            }
        };
        let append_floor = opts
            .append
            .then_some(if temp.is_some() { start } else { meta.size });
        Ok(Self {
            target,
            temp,
            file: FileReader::new(file),
            object: None,
            mode,
            quota,
            append_floor,
            keep_existing,
            old_size,
            exclusive: opts.exclusive,
            finished: AtomicBool::new(false),
        })
    }

    /// An upload into an object store: always the whole object, replaced
    /// at the commit (nothing visible before); resumes, appends and
    /// read-write opens cannot be done on an object.
    async fn begin_object(
        target: Entry,
        opts: OpenWrite,
        agent: &Arc<QuotaAgent>,
    ) -> Result<Self, UploadError> {
        if opts.read || opts.append {
            return Err(FsError::Unsupported(
                "resuming, appending to or reading and writing an object",
            )
            .into());
        }
        let existing = target.meta().copied();
        let old_size = existing.map(|m| m.size);
        let quota = agent
            .begin_upload(
                target.domain(),
                existing.is_some(),
                old_size.unwrap_or(0),
                0,
            )
            .await?;
        let writer = target
            .object()
            .map(|(o, inner)| o.writer(inner))
            .expect("an object entry");
        let writer = match writer {
            Ok(w) => Arc::new(w),
            Err(e) => {
                quota.finish(old_size).await;
                return Err(e.into());
            }
        };
        let file = FileReader::for_object(ObjectFile::Write(
            writer.clone(),
            target.tree.settings.setstat_mode,
        ));
        Ok(Self {
            target,
            temp: None,
            file,
            object: Some(writer),
            mode: UploadMode::Atomic,
            quota,
            append_floor: None,
            keep_existing: false,
            old_size,
            exclusive: opts.exclusive,
            finished: AtomicBool::new(false),
        })
    }

    /// The file being written (reads of a read-write open go here too).
    pub fn file(&self) -> &FileReader {
        &self.file
    }

    /// The virtual path the upload lands at.
    pub fn vpath(&self) -> &str {
        self.target.vpath()
    }

    /// True once a write was refused by the quota: the upload is removed
    /// when it ends.
    pub fn exceeded(&self) -> bool {
        self.quota.exceeded()
    }

    /// What the control plane needs to recover this upload if the edge dies.
    pub fn recovery(&self) -> UploadRecovery {
        let temp = self.temp.as_ref().map(|t| {
            let name = String::from_utf8_lossy(&t.name);
            ferry_proto::vpath::clean(ferry_proto::vpath::parent(self.target.vpath()), &name)
        });
        self.quota.recovery(
            self.target.vpath(),
            temp.as_deref(),
            self.mode == UploadMode::AtomicResume && temp.is_some(),
        )
    }

    fn check_end(&self, offset: u64, len: u64) -> Result<u64, UploadError> {
        if self.finished.load(Ordering::Acquire) {
            return Err(FsError::Failure("the upload has ended").into());
        }
        if self.append_floor.is_some_and(|floor| offset < floor) {
            return Err(FsError::Failure("invalid offset: the file was opened for append").into());
        }
        offset
            .checked_add(len)
            .filter(|end| i64::try_from(*end).is_ok())
            .ok_or(UploadError::Storage(FsError::Invalid))
    }

    /// Reserves quota for the file to reach `end` bytes before any data
    /// arrives (SCP knows the size up front).
    pub async fn admit(&self, end: u64) -> Result<(), UploadError> {
        let end = self.check_end(end, 0)?;
        self.quota.admit(end).await?;
        Ok(())
    }

    /// Writes `data` at `offset` once the quota admits the new end.
    pub async fn write_at(&self, offset: u64, data: Vec<u8>) -> Result<(), UploadError> {
        let end = self.check_end(offset, data.len() as u64)?;
        self.quota.admit(end).await?;
        if let Some(w) = &self.object {
            return Ok(w.write_at(offset, data.into()).await?);
        }
        let file = self.file.local()?;
        blocking(move || Ok(file.write_all_at(&data, offset)?)).await?;
        Ok(())
    }

    /// Sets the file's length (a truncation, or SCP's cut to the announced
    /// size), growth admitted by the quota first.
    pub async fn set_len(&self, size: u64) -> Result<(), UploadError> {
        let end = self.check_end(size, 0)?;
        self.quota.admit(end).await?;
        if let Some(w) = &self.object {
            if w.written().await != size {
                return Err(FsError::Unsupported("truncating an object").into());
            }
            return Ok(());
        }
        let file = self.file.local()?;
        blocking(move || Ok(rustix::fs::ftruncate(&*file, size)?)).await?;
        Ok(())
    }

    /// Ends the upload as the client asked (CLOSE, end of an SCP file): an
    /// atomic upload moves into place; over quota the upload is undone and
    /// the quota error returned.
    pub async fn commit(&self) -> Result<(), UploadError> {
        if self.finished.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let over = self.exceeded();
        let (done, left) = self
            .finish_files(if over { End::Undo } else { End::Commit })
            .await;
        self.quota.finish(left).await;
        if over {
            return Err(QuotaError::Exceeded.into());
        }
        done.map_err(UploadError::Storage)
    }

    /// Ends an upload the client left open (disconnect, channel closed):
    /// mode 1 leaves the target as it was, mode 2 keeps what arrived for a
    /// resume, in place writes stay (unless over quota).
    pub async fn abort(&self) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let end = if self.exceeded() {
            End::Undo
        } else if self.mode == UploadMode::AtomicResume {
            End::Commit
        } else {
            End::Discard
        };
        let (done, left) = self.finish_files(end).await;
        if let Err(e) = done {
            tracing::warn!(path = self.vpath(), error = %e, "cannot clean up an interrupted upload");
        }
        self.quota.finish(left).await;
    }

    /// Ends an upload refused before any data arrived: nothing of it stays
    /// (a new file goes, kept data is cut back to its size).
    pub async fn cancel(&self) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let (done, left) = self.finish_files(End::Undo).await;
        if let Err(e) = done {
            tracing::warn!(path = self.vpath(), error = %e, "cannot undo a refused upload");
        }
        self.quota.finish(left).await;
    }

    /// Applies the end to the files; returns its outcome and the size of
    /// the regular file left at the target.
    async fn finish_files(&self, end: End) -> (Result<(), FsError>, Option<u64>) {
        if let Some(w) = &self.object {
            // The old object (if any) stays unless a commit replaces it.
            return match end {
                End::Commit => match w.finish().await {
                    Ok(n) => (Ok(()), Some(n)),
                    Err(e) => (Err(e), self.old_size),
                },
                End::Discard | End::Undo => {
                    w.abort().await;
                    (Ok(()), self.old_size)
                }
            };
        }
        let target = self.target.clone();
        let temp = self.temp.as_ref().map(|t| (t.name.clone(), t.meta));
        let (keep_existing, old_size, exclusive) =
            (self.keep_existing, self.old_size, self.exclusive);
        let file = self.file.local();
        blocking(move || {
            let dir = target.dirfd();
            let done: Result<(), FsError> = match (&temp, end) {
                (Some((name, _)), End::Commit) => {
                    let flags = if exclusive {
                        RenameFlags::NOREPLACE
                    } else {
                        RenameFlags::empty()
                    };
                    rustix::fs::renameat_with(
                        dir,
                        name.as_slice(),
                        dir,
                        target.name.as_slice(),
                        flags,
                    )
                    .map_err(|e| {
                        let _ = rustix::fs::unlinkat(dir, name.as_slice(), AtFlags::empty());
                        FsError::from(e)
                    })
                }
                (Some((name, _)), End::Undo | End::Discard) => {
                    rustix::fs::unlinkat(dir, name.as_slice(), AtFlags::empty()).map_err(Into::into)
                }
                // In place and over quota: kept data goes back to its old
                // size, a new or truncated file goes away.
                (None, End::Undo) if keep_existing => {
                    file.and_then(|f| Ok(rustix::fs::ftruncate(&*f, old_size.unwrap_or(0))?))
                }
                (None, End::Undo) => {
                    rustix::fs::unlinkat(dir, target.name.as_slice(), AtFlags::empty())
                        .map_err(Into::into)
                }
                (None, End::Commit | End::Discard) => Ok(()),
            };
            if let Some((_, meta)) = &temp {
                unregister_temp(meta);
            }
            let left = rustix::fs::statat(dir, target.name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                .ok()
                .map(|st| Meta::from_stat(&st))
                .filter(Meta::is_file)
                .map(|m| m.size);
            Ok((done, left))
        })
        .await
        .unwrap_or_else(|e| (Err(e), None))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::Acquire) {
            // Every protocol ends its uploads; one dropped unended (a task
            // aborted mid-way) still leaves no temporary file registered.
            // (An object upload is aborted by its writer's own drop.)
            if let Some(t) = &self.temp {
                let _ =
                    rustix::fs::unlinkat(self.target.dirfd(), t.name.as_slice(), AtFlags::empty());
                unregister_temp(&t.meta);
            }
            tracing::warn!(path = self.vpath(), "upload dropped without an end");
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum End {
    /// Into place (atomic) or as it is (in place).
    Commit,
    /// Interrupted: an atomic upload's temporary file goes.
    Discard,
    /// Over quota: nothing of the upload stays.
    Undo,
}
