//! The one path resolver for local storage. Every client path is cleaned into
//! a virtual path (`ferry_proto::vpath`) and only then mapped under the user's
//! home here, where symlinks are resolved and the result must stay inside the
//! home. No other code turns client input into a filesystem path.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Why a path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("permission denied")]
    PermissionDenied,
    #[error("{0}")]
    Failure(String),
    #[error("operation unsupported: {0}")]
    Unsupported(&'static str),
}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => FsError::NotFound,
            io::ErrorKind::PermissionDenied => FsError::PermissionDenied,
            _ => FsError::Failure(e.to_string()),
        }
    }
}

/// A user's home on local disk.
#[derive(Debug, Clone)]
pub struct LocalFs {
    /// Canonical (symlink-free) absolute home path.
    root: PathBuf,
}

impl LocalFs {
    /// Creates the home when missing (owned by `owner` when set) and
    /// canonicalises it.
    pub fn open(home: &Path, owner: Option<(u32, u32)>) -> io::Result<Self> {
        if !home.is_absolute() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "home directory must be absolute",
            ));
        }
        if !home.exists() {
            std::fs::create_dir_all(home)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(home, Some(uid), Some(gid))?;
            }
        }
        let root = home.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::other("home is not a directory"));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn joined(&self, vpath: &str) -> PathBuf {
        debug_assert!(
            vpath.starts_with('/'),
            "virtual paths are clean and absolute"
        );
        let mut p = self.root.clone();
        for comp in Path::new(vpath).components() {
            if let Component::Normal(c) = comp {
                p.push(c);
            }
        }
        p
    }

    fn inside(&self, real: &Path) -> Result<(), FsError> {
        if real.starts_with(&self.root) {
            Ok(())
        } else {
            Err(FsError::PermissionDenied)
        }
    }

    /// Maps a clean virtual path to a real path with every symlink resolved,
    /// refusing anything that resolves outside the home. For a path that does
    /// not exist yet, its nearest existing ancestor is resolved and checked
    /// and the missing tail appended.
    pub fn resolve(&self, vpath: &str) -> Result<PathBuf, FsError> {
        let joined = self.joined(vpath);
        let mut existing = joined.as_path();
        let mut tail: Vec<&std::ffi::OsStr> = Vec::new();
        loop {
            match existing.canonicalize() {
                Ok(real) => {
                    self.inside(&real)?;
                    let mut out = real;
                    for t in tail.iter().rev() {
                        out.push(t);
                    }
                    return Ok(out);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A dangling symlink is not a missing path: refuse it
                    // rather than creating through it.
                    if existing.symlink_metadata().is_ok() {
                        return Err(FsError::PermissionDenied);
                    }
                    match (existing.parent(), existing.file_name()) {
                        (Some(parent), Some(name)) if existing != self.root => {
                            tail.push(name);
                            existing = parent;
                        }
                        _ => return Err(FsError::NotFound),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Like [`LocalFs::resolve`] but the last component is not followed: for
    /// lstat, readlink, remove, rename and symlink creation, which act on a
    /// link itself.
    pub fn resolve_nofollow(&self, vpath: &str) -> Result<PathBuf, FsError> {
        if vpath == "/" {
            return Ok(self.root.clone());
        }
        let parent = self.resolve(ferry_proto::vpath::parent(vpath))?;
        Ok(parent.join(ferry_proto::vpath::base_name(vpath)))
    }

    /// The virtual path of a real path inside the home.
    pub fn to_virtual(&self, real: &Path) -> Option<String> {
        let rel = real.strip_prefix(&self.root).ok()?;
        let mut out = String::new();
        for comp in rel.components() {
            match comp {
                Component::Normal(c) => {
                    out.push('/');
                    out.push_str(c.to_str()?);
                }
                _ => return None,
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        Some(out)
    }

    /// The virtual target of the symlink at `link_real`, if it points inside
    /// the home.
    pub fn read_link_virtual(&self, link_real: &Path) -> Result<String, FsError> {
        let target = std::fs::read_link(link_real)?;
        let relative = target.is_relative().then(|| target.clone());
        let absolute = if target.is_absolute() {
            target
        } else {
            link_real.parent().unwrap_or(&self.root).join(target)
        };
        // Normalise lexically: the target need not exist.
        let mut norm = PathBuf::new();
        for comp in absolute.components() {
            match comp {
                Component::ParentDir => {
                    norm.pop();
                }
                Component::CurDir => {}
                c => norm.push(c),
            }
        }
        let virtual_target = self.to_virtual(&norm).ok_or(FsError::PermissionDenied)?;
        // A relative link inside the home reads back as written.
        Ok(
            match relative.and_then(|r| r.to_str().map(str::to_string)) {
                Some(r) => r,
                None => virtual_target,
            },
        )
    }
}

/// A virtual folder mounted into a user's tree.
#[derive(Debug, Clone)]
pub struct Mount {
    pub name: String,
    /// Clean, absolute, never `/`.
    pub virtual_path: String,
    pub fs: LocalFs,
    /// True when its usage counts in the user's quota (quota -1); otherwise
    /// the folder keeps its own counters, with these limits (0: none).
    pub in_user_quota: bool,
    pub quota_size: i64,
    pub quota_files: i64,
}

/// Where a virtual path's usage is counted.
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

/// A user's whole tree: the home plus virtual folders, each confined to its
/// own root. The longest mounted virtual path that holds a path wins.
#[derive(Debug, Clone)]
pub struct UserFs {
    home: LocalFs,
    /// Longest virtual path first.
    mounts: std::sync::Arc<Vec<Mount>>,
}

impl UserFs {
    /// Opens the home and every folder (creating missing directories, owned
    /// by `owner`), and creates the mount points (and their parents) in the
    /// home so listings show them.
    pub fn open(
        home: &Path,
        owner: Option<(u32, u32)>,
        folders: &[ferry_proto::edge::v1::VirtualFolder],
    ) -> io::Result<Self> {
        let home = LocalFs::open(home, owner)?;
        let mut mounts = Vec::with_capacity(folders.len());
        for f in folders {
            let virtual_path = ferry_proto::vpath::clean("/", &f.virtual_path);
            if virtual_path == "/" {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("folder {:?} cannot be mounted on /", f.name),
                ));
            }
            let fs = LocalFs::open(Path::new(&f.mapped_path), owner).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("folder {:?} at {}: {e}", f.name, f.mapped_path),
                )
            })?;
            // The mount point in the home: created only where nothing is.
            let point = home.joined(&virtual_path);
            if point.symlink_metadata().is_err() {
                std::fs::create_dir_all(&point)?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(&point, Some(uid), Some(gid))?;
                }
            }
            mounts.push(Mount {
                name: f.name.clone(),
                virtual_path,
                fs,
                in_user_quota: f.quota_size < 0 && f.quota_files < 0,
                quota_size: f.quota_size.max(0),
                quota_files: f.quota_files.max(0),
            });
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.virtual_path.len()));
        Ok(Self {
            home,
            mounts: std::sync::Arc::new(mounts),
        })
    }

    /// The mount holding `vpath` (None: the home) and the path inside it.
    pub fn locate<'a>(&self, vpath: &'a str) -> (Option<&Mount>, &'a str) {
        for m in self.mounts.iter() {
            if vpath == m.virtual_path {
                return (Some(m), "/");
            }
            if let Some(rest) = vpath.strip_prefix(m.virtual_path.as_str())
                && rest.starts_with('/')
            {
                return (Some(m), rest);
            }
        }
        (None, vpath)
    }

    fn fs_of<'a>(&'a self, mount: Option<&'a Mount>) -> &'a LocalFs {
        mount.map_or(&self.home, |m| &m.fs)
    }

    pub fn resolve(&self, vpath: &str) -> Result<PathBuf, FsError> {
        let (m, inner) = self.locate(vpath);
        self.fs_of(m).resolve(inner)
    }

    pub fn resolve_nofollow(&self, vpath: &str) -> Result<PathBuf, FsError> {
        let (m, inner) = self.locate(vpath);
        self.fs_of(m).resolve_nofollow(inner)
    }

    /// Where usage under `vpath` is counted.
    pub fn domain(&self, vpath: &str) -> QuotaDomain {
        match self.locate(vpath).0 {
            Some(m) if !m.in_user_quota => QuotaDomain::Folder {
                name: m.name.clone(),
                quota_size: m.quota_size,
                quota_files: m.quota_files,
            },
            _ => QuotaDomain::User,
        }
    }

    /// The name of the mount holding `vpath` (None: the home).
    pub fn mount_name(&self, vpath: &str) -> Option<&str> {
        self.locate(vpath).0.map(|m| m.name.as_str())
    }

    /// True when `vpath` is `/`, a mount point, or a directory holding one:
    /// such paths cannot be removed, renamed or replaced.
    pub fn holds_mount(&self, vpath: &str) -> bool {
        vpath == "/"
            || self.mounts.iter().any(|m| {
                m.virtual_path == vpath
                    || m.virtual_path
                        .strip_prefix(vpath)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }

    /// True when `vpath` is exactly a mount point.
    pub fn is_mount_point(&self, vpath: &str) -> bool {
        self.mounts.iter().any(|m| m.virtual_path == vpath)
    }

    /// The virtual path of a real path (mounts first, then the home).
    pub fn to_virtual(&self, real: &Path) -> Option<String> {
        for m in self.mounts.iter() {
            if let Some(inner) = m.fs.to_virtual(real) {
                return Some(if inner == "/" {
                    m.virtual_path.clone()
                } else {
                    format!("{}{inner}", m.virtual_path)
                });
            }
        }
        self.home.to_virtual(real)
    }

    /// The target of the symlink at `link_real` as the user sees it.
    pub fn read_link_virtual(&self, link_real: &Path) -> Result<String, FsError> {
        for m in self.mounts.iter() {
            if link_real.starts_with(m.fs.root()) {
                let t = m.fs.read_link_virtual(link_real)?;
                return Ok(match t.as_str() {
                    "/" => m.virtual_path.clone(),
                    abs if abs.starts_with('/') => format!("{}{abs}", m.virtual_path),
                    _ => t,
                });
            }
        }
        self.home.read_link_virtual(link_real)
    }
}

/// (bytes, regular files) under a real path, for moving usage between quota
/// domains.
pub fn usage_of(real: &Path, is_dir: bool) -> (i64, i64) {
    if !is_dir {
        return file_size(real).map_or((0, 0), |s| (s as i64, 1));
    }
    let mut total = (0, 0);
    let Ok(rd) = std::fs::read_dir(real) else {
        return total;
    };
    for entry in rd.flatten() {
        // Atomic uploads in progress are counted when they complete.
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(crate::sftp::TEMP_PREFIX)
        {
            continue;
        }
        let Ok(m) = entry.path().symlink_metadata() else {
            continue;
        };
        let (b, f) = if m.is_dir() {
            usage_of(&entry.path(), true)
        } else if m.is_file() {
            (m.len() as i64, 1)
        } else {
            (0, 0)
        };
        total = (total.0 + b, total.1 + f);
    }
    total
}

/// Size of the regular file at a real path; None when there is none (quota
/// counts regular files only).
pub fn file_size(real: &Path) -> Option<u64> {
    std::fs::symlink_metadata(real)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, LocalFs, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        let fs = LocalFs::open(&home, None).unwrap();
        (dir, fs, outside)
    }

    #[test]
    fn paths_stay_inside_home() {
        let (_d, fs, outside) = setup();
        std::fs::create_dir(fs.root().join("sub")).unwrap();
        assert_eq!(fs.resolve("/sub").unwrap(), fs.root().join("sub"));
        assert_eq!(
            fs.resolve("/sub/new/file").unwrap(),
            fs.root().join("sub/new/file")
        );
        std::os::unix::fs::symlink(&outside, fs.root().join("escape")).unwrap();
        assert!(matches!(
            fs.resolve("/escape"),
            Err(FsError::PermissionDenied)
        ));
        assert!(matches!(
            fs.resolve("/escape/secret"),
            Err(FsError::PermissionDenied)
        ));
        assert!(matches!(
            fs.resolve("/escape/newfile"),
            Err(FsError::PermissionDenied)
        ));
        // The link itself can be looked at (lstat), not followed.
        assert_eq!(
            fs.resolve_nofollow("/escape").unwrap(),
            fs.root().join("escape")
        );
        assert!(matches!(
            fs.read_link_virtual(&fs.root().join("escape")),
            Err(FsError::PermissionDenied)
        ));
    }

    #[test]
    fn links_inside_home_work_and_map_back() {
        let (_d, fs, _outside) = setup();
        std::fs::write(fs.root().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink(fs.root().join("f"), fs.root().join("abs")).unwrap();
        std::os::unix::fs::symlink("f", fs.root().join("rel")).unwrap();
        assert_eq!(fs.resolve("/abs").unwrap(), fs.root().join("f"));
        assert_eq!(fs.read_link_virtual(&fs.root().join("abs")).unwrap(), "/f");
        // A relative link reads back as written.
        assert_eq!(fs.read_link_virtual(&fs.root().join("rel")).unwrap(), "f");
    }

    #[test]
    fn dangling_links_are_not_created_through() {
        let (_d, fs, outside) = setup();
        std::os::unix::fs::symlink(outside.join("nothing"), fs.root().join("dangle")).unwrap();
        assert!(matches!(
            fs.resolve("/dangle"),
            Err(FsError::PermissionDenied)
        ));
    }

    #[test]
    fn mounts_resolve_by_longest_prefix_and_stay_confined() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let vf =
            |name: &str, vp: &str, path: &Path, quota: i64| ferry_proto::edge::v1::VirtualFolder {
                name: name.into(),
                virtual_path: vp.into(),
                mapped_path: path.display().to_string(),
                quota_size: quota,
                quota_files: quota,
            };
        let fs = UserFs::open(
            &home,
            None,
            &[vf("a", "/m", &a, -1), vf("b", "/m/inner", &b, 0)],
        )
        .unwrap();
        // Mount points appear in the home; mapped directories are created.
        assert!(home.join("m/inner").is_dir() && a.is_dir() && b.is_dir());
        let a = a.canonicalize().unwrap();
        let b = b.canonicalize().unwrap();
        assert_eq!(fs.resolve("/m/x").unwrap(), a.join("x"));
        assert_eq!(fs.resolve("/m/inner/y").unwrap(), b.join("y"));
        assert_eq!(fs.resolve("/m/inner").unwrap(), b);
        assert_eq!(
            fs.resolve("/mx").unwrap(),
            home.canonicalize().unwrap().join("mx")
        );
        assert_eq!(fs.domain("/m/x"), QuotaDomain::User);
        assert_eq!(fs.domain("/m/inner/y").folder(), "b");
        assert!(fs.holds_mount("/m") && fs.holds_mount("/") && fs.holds_mount("/m/inner"));
        assert!(!fs.holds_mount("/m/x") && !fs.holds_mount("/mx"));
        assert_eq!(fs.to_virtual(&b.join("z")).as_deref(), Some("/m/inner/z"));
        // `..` cannot leave a folder through its own root.
        std::os::unix::fs::symlink("../../home", b.join("up")).unwrap();
        assert!(matches!(
            fs.resolve("/m/inner/up/f"),
            Err(FsError::PermissionDenied)
        ));
        std::os::unix::fs::symlink("y", b.join("rel")).unwrap();
        assert_eq!(fs.read_link_virtual(&b.join("rel")).unwrap(), "y");
    }
}
