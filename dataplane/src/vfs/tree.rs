//! A user's tree of roots (home and virtual folders, each an open directory
//! handle) and the confined walk that turns a virtual path into an [`Entry`].

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::object::ObjectRoot;
use super::ops::Meta;
use super::{FsError, FsSettings, MAX_SYMLINKS, blocking, is_temp_name};
use crate::quota::QuotaDomain;

/// Flags of every step of a walk: a handle on the entry itself, never
/// following a link.
pub(super) const STEP: OFlags = OFlags::PATH.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// A virtual folder's accounting.
#[derive(Debug, Clone)]
pub(super) struct MountInfo {
    pub name: String,
    /// Usage counts in the user's quota (quota -1); otherwise the folder
    /// keeps its own counters with these limits (0: none).
    pub in_user_quota: bool,
    pub quota_size: i64,
    pub quota_files: i64,
}

/// Where a root's data lives.
#[derive(Debug)]
pub(super) enum Backing {
    Local {
        /// `O_PATH` handle on the root directory.
        fd: OwnedFd,
        /// Canonical real path (absolute link targets are mapped against it).
        real: PathBuf,
    },
    /// A bucket and key prefix: no handle, no real path, no links.
    Object(Arc<ObjectRoot>),
}

/// One root of a user's tree.
#[derive(Debug)]
pub(super) struct Root {
    pub backing: Backing,
    /// Where it appears in the virtual tree (`/` for the home).
    pub vpath: String,
    /// None for the home.
    pub mount: Option<MountInfo>,
}

impl Backing {
    /// A root's store when `storage` names one, else the directory at
    /// `path` (created when missing, owned by `owner`).
    fn open(
        path: &Path,
        storage: Option<&ferry_proto::edge::v1::Storage>,
        owner: Option<(u32, u32)>,
        user: &str,
    ) -> std::io::Result<Self> {
        Ok(match storage {
            Some(s) => Backing::Object(Arc::new(ObjectRoot::open(s, user)?)),
            None => {
                let (fd, real) = open_root(path, owner)?;
                Backing::Local { fd, real }
            }
        })
    }
}

impl Root {
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.backing {
            Backing::Local { fd, .. } => Some(fd.as_fd()),
            Backing::Object(_) => None,
        }
    }

    pub fn real(&self) -> Option<&Path> {
        match &self.backing {
            Backing::Local { real, .. } => Some(real),
            Backing::Object(_) => None,
        }
    }

    pub fn object(&self) -> Option<&Arc<ObjectRoot>> {
        match &self.backing {
            Backing::Object(o) => Some(o),
            Backing::Local { .. } => None,
        }
    }
}

#[derive(Debug)]
pub(super) struct Tree {
    /// `[0]` is the home; then the mounts, longest virtual path first.
    pub roots: Vec<Root>,
    /// uid/gid given to what is created (only when running as root).
    pub owner: Option<(u32, u32)>,
    pub settings: FsSettings,
}

/// How the last component of a path is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// A link at the end is followed (open, stat, setstat, opendir).
    All,
    /// A link at the end is the entry itself (lstat, readlink, remove,
    /// rename, symlink, mkdir); links before it are followed.
    NotLast,
}

/// A user's whole tree: the home plus virtual folders.
#[derive(Debug, Clone)]
pub struct UserFs {
    pub(super) tree: Arc<Tree>,
}

/// The directory handle an entry hangs off.
#[derive(Debug, Clone)]
pub(super) enum DirFd {
    Root(usize),
    Dir(Arc<OwnedFd>),
    /// An entry of an object-store root: `name` is its path inside the
    /// root (empty for the root itself).
    Object,
}

/// A resolved path: the handle of the directory holding the entry, the
/// entry's name in it (`.` when the entry is that directory itself), and the
/// virtual path it was reached at after following links.
#[derive(Debug, Clone)]
pub struct Entry {
    pub(super) tree: Arc<Tree>,
    pub(super) dir: DirFd,
    pub(super) name: Vec<u8>,
    /// The root the entry lives in.
    pub(super) root: usize,
    pub(super) vpath: String,
    pub(super) meta: Option<Meta>,
}

impl Entry {
    /// The virtual path reached (links followed): permissions and filters
    /// are decided on it.
    pub fn vpath(&self) -> &str {
        &self.vpath
    }

    /// What was found at resolution time (`lstat` of the entry; None when
    /// nothing is there yet).
    pub fn meta(&self) -> Option<&Meta> {
        self.meta.as_ref()
    }

    pub fn exists(&self) -> bool {
        self.meta.is_some()
    }

    pub fn is_dir(&self) -> bool {
        self.meta.as_ref().is_some_and(Meta::is_dir)
    }

    /// Where usage of this entry is counted (by the root it lives in).
    pub fn domain(&self) -> QuotaDomain {
        domain_of(&self.tree.roots[self.root])
    }

    /// The name of the virtual folder holding the entry (None: the home).
    pub fn mount_name(&self) -> Option<&str> {
        self.tree.roots[self.root]
            .mount
            .as_ref()
            .map(|m| m.name.as_str())
    }

    /// The handle of the directory holding a local entry. Object entries
    /// have none: every operation checks [`Entry::object`] first.
    pub(super) fn dirfd(&self) -> BorrowedFd<'_> {
        match &self.dir {
            DirFd::Root(i) => self.tree.roots[*i]
                .fd()
                .expect("a local root (object entries are handled before)"),
            DirFd::Dir(fd) => fd.as_fd(),
            DirFd::Object => unreachable!("object entries are handled before"),
        }
    }

    /// The object root and the path inside it, for an object-store entry.
    pub(super) fn object(&self) -> Option<(&Arc<ObjectRoot>, &str)> {
        match self.dir {
            DirFd::Object => Some((
                self.tree.roots[self.root].object()?,
                std::str::from_utf8(&self.name).unwrap_or_default(),
            )),
            _ => None,
        }
    }

    /// Fills in what is at an object entry (the walk itself never waits
    /// on a store).
    pub(super) async fn stat_object(&mut self) -> Result<(), FsError> {
        if let Some((o, inner)) = self.object() {
            let (o, inner) = (o.clone(), inner.to_string());
            self.meta = o.stat(&inner).await?;
        }
        Ok(())
    }

    /// First components of the mount points below this directory (they
    /// show in its listing even where nothing is stored for them).
    pub(super) fn mounts_under(&self) -> Vec<String> {
        let dir = if self.vpath == "/" {
            "/".to_string()
        } else {
            format!("{}/", self.vpath)
        };
        let mut names: Vec<String> = self.tree.roots[1..]
            .iter()
            .filter_map(|m| m.vpath.strip_prefix(dir.as_str()))
            .filter_map(|rest| rest.split('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// True when the entry lives in an object store.
    pub fn is_object(&self) -> bool {
        matches!(self.dir, DirFd::Object)
    }

    /// True when the entry is a directory reached as itself (a root, or
    /// through `.`/`..`): it cannot be removed, renamed or replaced here.
    pub(super) fn is_self(&self) -> bool {
        self.name == b"." || (self.is_object() && self.name.is_empty())
    }
}

fn domain_of(root: &Root) -> QuotaDomain {
    match &root.mount {
        Some(m) if !m.in_user_quota => QuotaDomain::Folder {
            name: m.name.clone(),
            quota_size: m.quota_size,
            quota_files: m.quota_files,
        },
        _ => QuotaDomain::User,
    }
}

/// One directory on the walk's stack.
struct Frame {
    fd: DirFd,
    root: usize,
    vpath: String,
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// Opens (creating when missing, owned by `owner`) an admin-configured
/// directory and returns its handle and canonical path.
fn open_root(path: &Path, owner: Option<(u32, u32)>) -> std::io::Result<(OwnedFd, PathBuf)> {
    if !path.is_absolute() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "home directory must be absolute",
        ));
    }
    if std::fs::symlink_metadata(path).is_err() {
        std::fs::create_dir_all(path)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
    }
    let real = std::fs::canonicalize(path)?;
    let fd = rustix::fs::open(
        &real,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        if e == Errno::NOTDIR {
            std::io::Error::other("not a directory")
        } else {
            std::io::Error::from(e)
        }
    })?;
    Ok((fd, real))
}

impl UserFs {
    /// Opens the home and every folder (creating missing roots, owned by
    /// `owner`) and creates the mount points in their parent root so
    /// listings show them, without following any link on the way.
    pub async fn open(
        home: &Path,
        owner: Option<(u32, u32)>,
        folders: &[ferry_proto::edge::v1::VirtualFolder],
        settings: FsSettings,
    ) -> std::io::Result<Self> {
        Self::open_with("", home, None, owner, folders, settings).await
    }

    /// [`UserFs::open`] with the home in an object store when `storage`
    /// names one.
    pub async fn open_with(
        user: &str,
        home: &Path,
        storage: Option<&ferry_proto::edge::v1::Storage>,
        owner: Option<(u32, u32)>,
        folders: &[ferry_proto::edge::v1::VirtualFolder],
        settings: FsSettings,
    ) -> std::io::Result<Self> {
        let (home, folders) = (home.to_path_buf(), folders.to_vec());
        let storage = storage.filter(|s| s.provider != 0).cloned();
        let user = user.to_string();
        tokio::task::spawn_blocking(move || {
            Self::open_blocking_with(&user, &home, storage.as_ref(), owner, &folders, settings)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// [`UserFs::open`] for code already off the async threads.
    pub fn open_blocking(
        home: &Path,
        owner: Option<(u32, u32)>,
        folders: &[ferry_proto::edge::v1::VirtualFolder],
        settings: FsSettings,
    ) -> std::io::Result<Self> {
        Self::open_blocking_with("", home, None, owner, folders, settings)
    }

    fn open_blocking_with(
        user: &str,
        home: &Path,
        storage: Option<&ferry_proto::edge::v1::Storage>,
        owner: Option<(u32, u32)>,
        folders: &[ferry_proto::edge::v1::VirtualFolder],
        settings: FsSettings,
    ) -> std::io::Result<Self> {
        let backing = Backing::open(home, storage, owner, user)?;
        let mut roots = vec![Root {
            backing,
            vpath: "/".into(),
            mount: None,
        }];
        let mut mounts = Vec::with_capacity(folders.len());
        for f in folders {
            let vpath = ferry_proto::vpath::clean("/", &f.virtual_path);
            if vpath == "/" {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("folder {:?} cannot be mounted on /", f.name),
                ));
            }
            let storage = f.storage.as_ref().filter(|s| s.provider != 0);
            let backing = Backing::open(Path::new(&f.mapped_path), storage, owner, user)
                .map_err(|e| std::io::Error::new(e.kind(), format!("folder {:?}: {e}", f.name)))?;
            mounts.push(Root {
                backing,
                vpath,
                mount: Some(MountInfo {
                    name: f.name.clone(),
                    in_user_quota: f.quota_size < 0 && f.quota_files < 0,
                    quota_size: f.quota_size.max(0),
                    quota_files: f.quota_files.max(0),
                }),
            });
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.vpath.len()));
        roots.extend(mounts);
        let fs = Self {
            tree: Arc::new(Tree {
                roots,
                owner,
                settings,
            }),
        };
        // Shortest first, so a mount inside another lands in its root.
        let mut order: Vec<usize> = (1..fs.tree.roots.len()).collect();
        order.sort_by_key(|i| fs.tree.roots[*i].vpath.len());
        for i in order {
            fs.make_mount_point(i);
        }
        Ok(fs)
    }

    /// Creates the directories of mount `i`'s virtual path inside the root
    /// that holds its parent. A link or file in the way is left alone (the
    /// folder is still reached by its virtual path).
    fn make_mount_point(&self, i: usize) {
        let target = &self.tree.roots[i].vpath;
        let (root, inner) = self.locate_excluding(target, i);
        // In an object store, the mount point shows as long as the mount is
        // there (listings add it); nothing is written for it.
        let Some(root_fd) = self.tree.roots[root].fd() else {
            return;
        };
        let mut cur: Option<OwnedFd> = None;
        for name in components(inner) {
            let dir = match &cur {
                Some(fd) => fd.as_fd(),
                None => root_fd,
            };
            let step =
                rustix::fs::openat(dir, name.as_str(), STEP | OFlags::DIRECTORY, Mode::empty());
            let fd = match step {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    let made = rustix::fs::mkdirat(dir, name.as_str(), Mode::from_raw_mode(0o755))
                        .and_then(|()| {
                            if let Some((uid, gid)) = self.tree.owner {
                                rustix::fs::chownat(
                                    dir,
                                    name.as_str(),
                                    Some(rustix::fs::Uid::from_raw(uid)),
                                    Some(rustix::fs::Gid::from_raw(gid)),
                                    AtFlags::SYMLINK_NOFOLLOW,
                                )?;
                            }
                            rustix::fs::openat(
                                dir,
                                name.as_str(),
                                STEP | OFlags::DIRECTORY,
                                Mode::empty(),
                            )
                        });
                    match made {
                        Ok(fd) => fd,
                        Err(e) => {
                            tracing::warn!(mount_point = %target, error = %e, "cannot create a virtual folder's mount point");
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(mount_point = %target, error = %e, "a virtual folder's mount point is not a directory; the folder is still reachable by its path");
                    return;
                }
            };
            cur = Some(fd);
        }
    }

    /// The root holding `vpath` (longest mounted path first) and the path
    /// inside it.
    fn locate<'a>(&self, vpath: &'a str) -> (usize, &'a str) {
        self.locate_excluding(vpath, usize::MAX)
    }

    fn locate_excluding<'a>(&self, vpath: &'a str, skip: usize) -> (usize, &'a str) {
        for (i, r) in self.tree.roots.iter().enumerate().skip(1) {
            if i == skip {
                continue;
            }
            if vpath == r.vpath {
                return (i, "/");
            }
            if let Some(rest) = vpath.strip_prefix(r.vpath.as_str())
                && rest.starts_with('/')
            {
                return (i, rest);
            }
        }
        (0, vpath)
    }

    /// The mount mounted exactly at `vpath`.
    fn mount_at(&self, vpath: &str) -> Option<usize> {
        (1..self.tree.roots.len()).find(|i| self.tree.roots[*i].vpath == vpath)
    }

    /// Where usage under the virtual path `vpath` is counted.
    pub fn domain(&self, vpath: &str) -> QuotaDomain {
        domain_of(&self.tree.roots[self.locate(vpath).0])
    }

    /// The name of the mount holding `vpath` (None: the home).
    pub fn mount_name(&self, vpath: &str) -> Option<&str> {
        self.tree.roots[self.locate(vpath).0]
            .mount
            .as_ref()
            .map(|m| m.name.as_str())
    }

    /// True when `vpath` is inside a virtual folder (or is one).
    pub fn in_mount(&self, vpath: &str) -> bool {
        self.locate(vpath).0 != 0
    }

    /// True when `vpath` is `/`, a mount point, or a directory holding one:
    /// such paths cannot be removed, renamed or replaced.
    pub fn holds_mount(&self, vpath: &str) -> bool {
        vpath == "/"
            || self.tree.roots[1..].iter().any(|m| {
                m.vpath == vpath
                    || m.vpath
                        .strip_prefix(vpath)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }

    /// True when `vpath` is exactly a mount point.
    pub fn is_mount_point(&self, vpath: &str) -> bool {
        self.mount_at(vpath).is_some()
    }

    pub fn settings(&self) -> FsSettings {
        self.tree.settings
    }

    pub fn owner(&self) -> Option<(u32, u32)> {
        self.tree.owner
    }

    /// The home's real path, for programs that run on it (rsync, git);
    /// None when the home is in an object store.
    pub fn home_real(&self) -> Option<&Path> {
        self.tree.roots[0].real()
    }

    /// True when anything of the user's tree lives in an object store.
    pub fn has_object_roots(&self) -> bool {
        self.tree.roots.iter().any(|r| r.object().is_some())
    }

    /// Resolves a client's (clean, absolute) virtual path. A last component
    /// that is a temporary upload name is refused.
    pub async fn resolve(&self, vpath: &str, follow: Follow) -> Result<Entry, FsError> {
        if is_temp_name(ferry_proto::vpath::base_name(vpath)) {
            return Err(FsError::Reserved);
        }
        let (this, vpath) = (self.clone(), vpath.to_string());
        let mut e = blocking(move || {
            let e = this.walk(&vpath, follow)?;
            if is_temp_name(&String::from_utf8_lossy(&e.name)) {
                return Err(FsError::Reserved);
            }
            Ok(e)
        })
        .await?;
        e.stat_object().await?;
        Ok(e)
    }

    /// The confined walk (blocking). `vpath` is clean and absolute.
    pub(super) fn walk(&self, vpath: &str, follow: Follow) -> Result<Entry, FsError> {
        let mut links = 0u32;
        let mut todo: VecDeque<String> = components(vpath).collect();
        let mut stack = self.start(&mut todo);
        loop {
            let top = stack.last().expect("the stack holds a root");
            if self.tree.roots[top.root].object().is_some() {
                // The rest lies in an object store: no links there, so `.`
                // and `..` are taken lexically.
                let rest: Vec<String> = todo.drain(..).collect();
                let full =
                    ferry_proto::vpath::clean("/", &format!("{}/{}", top.vpath, rest.join("/")));
                let (root, inner) = self.locate(&full);
                if self.tree.roots[root].object().is_some() {
                    return Ok(Entry {
                        tree: self.tree.clone(),
                        dir: DirFd::Object,
                        name: inner.trim_matches('/').as_bytes().to_vec(),
                        root,
                        vpath: full,
                        meta: None,
                    });
                }
                // `..` led out of the store: go on from there.
                todo = components(&full).collect();
                stack = self.start(&mut todo);
                continue;
            }
            let Some(name) = todo.pop_front() else {
                break;
            };
            let last = todo.is_empty();
            match name.as_str() {
                "." => {}
                ".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    } else {
                        let top = &stack[0];
                        if top.vpath == "/" {
                            // Above the root of the user's tree.
                            return Err(FsError::Outside);
                        }
                        // Above a folder's root: continue from its parent in
                        // the virtual tree.
                        let parent = ferry_proto::vpath::parent(&top.vpath).to_string();
                        for c in components(&parent).collect::<Vec<_>>().into_iter().rev() {
                            todo.push_front(c);
                        }
                        stack = self.start(&mut todo);
                    }
                }
                _ => {
                    let top = stack.last().expect("the stack holds a root");
                    let next = join(&top.vpath, &name);
                    if let Some(m) = self.mount_at(&next) {
                        stack.push(Frame {
                            fd: DirFd::Root(m),
                            root: m,
                            vpath: next,
                        });
                        continue;
                    }
                    let dir = self.frame_fd(top);
                    let fd = match rustix::fs::openat(dir, name.as_str(), STEP, Mode::empty()) {
                        Ok(fd) => fd,
                        Err(Errno::NOENT) if last => {
                            return Ok(self.entry(top, name.into_bytes(), next, None));
                        }
                        Err(e) => return Err(e.into()),
                    };
                    let st = rustix::fs::fstat(&fd)?;
                    let meta = Meta::from_stat(&st);
                    match FileType::from_raw_mode(st.st_mode) {
                        FileType::Symlink if !(last && follow == Follow::NotLast) => {
                            links += 1;
                            if links > MAX_SYMLINKS {
                                return Err(FsError::Loop);
                            }
                            let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
                            let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                            let rest: Vec<String> = if target.is_absolute() {
                                let (root, inner) =
                                    self.real_to_root(target).ok_or(FsError::Outside)?;
                                let mut v =
                                    components(&self.tree.roots[root].vpath).collect::<Vec<_>>();
                                v.extend(inner);
                                stack.clear();
                                v
                            } else {
                                target
                                    .to_str()
                                    .ok_or(FsError::NotFound)?
                                    .split('/')
                                    .filter(|c| !c.is_empty())
                                    .map(str::to_string)
                                    .collect()
                            };
                            for c in rest.into_iter().rev() {
                                todo.push_front(c);
                            }
                            if stack.is_empty() {
                                stack = self.start(&mut todo);
                            }
                        }
                        FileType::Directory if !last => stack.push(Frame {
                            fd: DirFd::Dir(Arc::new(fd)),
                            root: top.root,
                            vpath: next,
                        }),
                        _ if last => {
                            return Ok(self.entry(top, name.into_bytes(), next, Some(meta)));
                        }
                        _ => return Err(FsError::NotADirectory),
                    }
                }
            }
        }
        // The path ends on a directory reached as itself.
        let top = stack.pop().expect("the stack holds a root");
        let st = rustix::fs::statat(self.frame_fd(&top), ".", AtFlags::empty())?;
        Ok(Entry {
            tree: self.tree.clone(),
            dir: top.fd,
            name: b".".to_vec(),
            root: top.root,
            vpath: top.vpath,
            meta: Some(Meta::from_stat(&st)),
        })
    }

    fn frame_fd<'a>(&'a self, f: &'a Frame) -> BorrowedFd<'a> {
        match &f.fd {
            DirFd::Root(i) => self.tree.roots[*i]
                .fd()
                .expect("object roots end the walk before"),
            DirFd::Dir(fd) => fd.as_fd(),
            DirFd::Object => unreachable!("object roots end the walk before"),
        }
    }

    fn entry(&self, top: &Frame, name: Vec<u8>, vpath: String, meta: Option<Meta>) -> Entry {
        Entry {
            tree: self.tree.clone(),
            dir: top.fd.clone(),
            name,
            root: top.root,
            vpath,
            meta,
        }
    }

    /// The stack a walk starts from: the root of the longest mount holding
    /// the leading plain components of `todo` (which are consumed).
    fn start(&self, todo: &mut VecDeque<String>) -> Vec<Frame> {
        let plain = todo
            .iter()
            .take_while(|c| c.as_str() != "." && c.as_str() != "..")
            .count();
        let prefix = format!(
            "/{}",
            todo.iter()
                .take(plain)
                .cloned()
                .collect::<Vec<_>>()
                .join("/")
        );
        let (root, inner) = self.locate(&prefix);
        let consumed = plain - components(inner).count();
        todo.drain(..consumed);
        vec![Frame {
            fd: DirFd::Root(root),
            root,
            vpath: self.tree.roots[root].vpath.clone(),
        }]
    }

    /// The root an absolute real path lies under (longest first) and the
    /// components after it; None when it is outside every root.
    fn real_to_root(&self, real: &Path) -> Option<(usize, Vec<String>)> {
        let mut best: Option<(usize, usize)> = None;
        for (i, r) in self.tree.roots.iter().enumerate() {
            let Some(root_real) = r.real() else { continue };
            if real.starts_with(root_real) {
                let len = root_real.components().count();
                if best.is_none_or(|(_, l)| len > l) {
                    best = Some((i, len));
                }
            }
        }
        let (root, len) = best?;
        let rest = real
            .components()
            .skip(len)
            .map(|c| match c {
                Component::Normal(n) => n.to_str().map(str::to_string),
                Component::ParentDir => Some("..".into()),
                _ => Some(".".into()),
            })
            .collect::<Option<Vec<_>>>()?;
        Some((root, rest))
    }

    /// The real path a new symlink stores for the virtual target `vtarget`
    /// (clean, absolute): the target's place under its root, so tools that
    /// read the link outside Ferry find the same file.
    pub(super) fn link_text(&self, vtarget: &str) -> Result<PathBuf, FsError> {
        let (root, inner) = self.locate(vtarget);
        let mut p = self.tree.roots[root]
            .real()
            .ok_or(FsError::Unsupported("links into object storage"))?
            .to_path_buf();
        for c in components(inner) {
            p.push(c);
        }
        Ok(p)
    }

    /// The virtual form of a link's stored target, read at the link's
    /// virtual path `link_vpath`: absolute targets under a root become
    /// virtual paths; relative ones read back as written when they stay
    /// inside the tree. None: the link points outside.
    pub(super) fn link_virtual(&self, link_vpath: &str, target: &Path) -> Option<String> {
        if target.is_absolute() {
            let (root, rest) = self.real_to_root(target)?;
            let base = &self.tree.roots[root].vpath;
            let joined = rest.iter().fold(base.clone(), |acc, c| join(&acc, c));
            // Lexically, for display: `..` in a stored real path is rare.
            if rest.iter().any(|c| c == "..") {
                return None;
            }
            return Some(ferry_proto::vpath::clean("/", &joined));
        }
        let text = target.to_str()?;
        let mut depth = components(ferry_proto::vpath::parent(link_vpath)).count();
        for c in text.split('/') {
            match c {
                "" | "." => {}
                ".." => depth = depth.checked_sub(1)?,
                _ => depth += 1,
            }
        }
        Some(text.to_string())
    }
}
