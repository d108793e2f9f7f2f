//! The permission engine: per-directory permission maps as SFTPGo defines them
//! (`/` mandatory, nearest configured ancestor wins), validated the same way in
//! the control plane and evaluated on every request at the edge.

use std::collections::BTreeMap;

/// Every permission name a user's map may contain.
pub const ALL: &[&str] = &[
    "*",
    "list",
    "download",
    "upload",
    "overwrite",
    "delete",
    "delete_files",
    "delete_dirs",
    "rename",
    "rename_files",
    "rename_dirs",
    "create_dirs",
    "create_symlinks",
    "chmod",
    "chown",
    "chtimes",
    "copy",
];

/// Why a permission map is invalid; the text is shown to REST clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionError {
    #[error("permissions for the root directory \"/\" are required")]
    MissingRoot,
    #[error("permission path {0:?} must be absolute")]
    RelativePath(String),
    #[error("no permissions granted for the directory {0:?}")]
    Empty(String),
    #[error("invalid permission {perm:?} for the directory {path:?}")]
    Unknown { path: String, perm: String },
    #[error("duplicate permission path {0:?} after cleaning")]
    Duplicate(String),
}

/// A validated map: clean virtual directory -> permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionMap {
    dirs: BTreeMap<String, Vec<String>>,
}

impl PermissionMap {
    /// Validates and normalises a map as given by an admin: paths absolute and
    /// cleaned, `/` present, only known names, `*` collapses the list.
    pub fn validate(raw: &BTreeMap<String, Vec<String>>) -> Result<Self, PermissionError> {
        let mut dirs = BTreeMap::new();
        for (path, perms) in raw {
            if !path.starts_with('/') {
                return Err(PermissionError::RelativePath(path.clone()));
            }
            let clean = crate::vpath::clean("/", path);
            if perms.is_empty() {
                return Err(PermissionError::Empty(clean));
            }
            let mut list: Vec<String> = Vec::new();
            for p in perms {
                if !ALL.contains(&p.as_str()) {
                    return Err(PermissionError::Unknown {
                        path: clean,
                        perm: p.clone(),
                    });
                }
                if !list.contains(p) {
                    list.push(p.clone());
                }
            }
            if list.iter().any(|p| p == "*") {
                list = vec!["*".to_string()];
            }
            if dirs.insert(clean.clone(), list).is_some() {
                return Err(PermissionError::Duplicate(clean));
            }
        }
        if !dirs.contains_key("/") {
            return Err(PermissionError::MissingRoot);
        }
        Ok(Self { dirs })
    }

    /// The stored form (clean path -> names).
    pub fn as_map(&self) -> &BTreeMap<String, Vec<String>> {
        &self.dirs
    }

    /// Permissions in force for a virtual directory: the exact entry, else the
    /// nearest configured ancestor, else `/`.
    pub fn for_dir(&self, dir: &str) -> &[String] {
        let mut cur = dir;
        loop {
            if let Some(p) = self.dirs.get(cur) {
                return p;
            }
            if cur == "/" {
                return &[];
            }
            cur = crate::vpath::parent(cur);
        }
    }

    /// True when `perm` (or `*`) holds in the virtual directory `dir`.
    pub fn has(&self, dir: &str, perm: &str) -> bool {
        self.for_dir(dir).iter().any(|p| p == "*" || p == perm)
    }

    /// True when any of `perms` holds in `dir`.
    pub fn has_any(&self, dir: &str, perms: &[&str]) -> bool {
        perms.iter().any(|p| self.has(dir, p))
    }
}

/// An SFTP operation to authorise, on clean virtual paths.
#[derive(Debug, Clone, Copy)]
pub enum Operation<'a> {
    /// Read a directory's entries.
    List {
        dir: &'a str,
    },
    /// stat/lstat/realpath/readlink of a path.
    Stat {
        path: &'a str,
    },
    Download {
        path: &'a str,
    },
    /// Create a new file.
    Upload {
        path: &'a str,
    },
    /// Write to an existing file.
    Overwrite {
        path: &'a str,
    },
    RemoveFile {
        path: &'a str,
    },
    RemoveDir {
        path: &'a str,
    },
    Mkdir {
        path: &'a str,
    },
    Symlink {
        link: &'a str,
    },
    Rename {
        from: &'a str,
        to: &'a str,
        is_dir: bool,
        target_exists: bool,
    },
    Chmod {
        path: &'a str,
    },
    Chown {
        path: &'a str,
    },
    Chtimes {
        path: &'a str,
    },
}

impl PermissionMap {
    /// The permission check of SFTPGo's table (§1.4): most operations are
    /// checked on the parent directory of their target.
    pub fn allows(&self, op: Operation<'_>) -> bool {
        use crate::vpath::parent;
        match op {
            Operation::List { dir } => self.has(dir, "list"),
            Operation::Stat { path } => self.has(parent(path), "list"),
            Operation::Download { path } => self.has(parent(path), "download"),
            Operation::Upload { path } => self.has(parent(path), "upload"),
            Operation::Overwrite { path } => self.has(parent(path), "overwrite"),
            Operation::RemoveFile { path } => {
                self.has_any(parent(path), &["delete", "delete_files"])
            }
            Operation::RemoveDir { path } => self.has_any(parent(path), &["delete", "delete_dirs"]),
            Operation::Mkdir { path } => self.has(parent(path), "create_dirs"),
            Operation::Symlink { link } => self.has(parent(link), "create_symlinks"),
            Operation::Chmod { path } => self.has(parent(path), "chmod"),
            Operation::Chown { path } => self.has(parent(path), "chown"),
            Operation::Chtimes { path } => self.has(parent(path), "chtimes"),
            Operation::Rename {
                from,
                to,
                is_dir,
                target_exists,
            } => {
                let (src, dst) = (parent(from), parent(to));
                let specific = if is_dir {
                    "rename_dirs"
                } else {
                    "rename_files"
                };
                let direct = self.has_any(src, &["rename", specific])
                    && self.has_any(dst, &["rename", specific]);
                let fallback = {
                    let delete_specific = if is_dir {
                        "delete_dirs"
                    } else {
                        "delete_files"
                    };
                    let create = if is_dir { "create_dirs" } else { "upload" };
                    self.has_any(src, &["delete", delete_specific]) && self.has(dst, create)
                };
                (direct || fallback) && (!target_exists || self.has(dst, "overwrite"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &[&str])]) -> PermissionMap {
        let raw: BTreeMap<String, Vec<String>> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect();
        PermissionMap::validate(&raw).expect("valid map")
    }

    fn check(m: &PermissionMap, op: Operation<'_>, expected: bool) {
        assert_eq!(m.allows(op), expected, "{op:?}");
    }

    #[test]
    fn validation_errors_name_the_problem() {
        let bad = |entries: &[(&str, &[&str])]| {
            let raw: BTreeMap<String, Vec<String>> = entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect();
            PermissionMap::validate(&raw).unwrap_err()
        };
        assert_eq!(bad(&[("/a", &["list"])]), PermissionError::MissingRoot);
        assert_eq!(
            bad(&[("/", &["list"]), ("rel", &["list"])]),
            PermissionError::RelativePath("rel".into())
        );
        assert_eq!(bad(&[("/", &[])]), PermissionError::Empty("/".into()));
        assert!(matches!(
            bad(&[("/", &["fly"])]),
            PermissionError::Unknown { .. }
        ));
        assert_eq!(
            map(&[("/", &["list", "*", "upload"])]).for_dir("/"),
            &["*".to_string()]
        );
    }

    #[test]
    fn nearest_ancestor_wins() {
        let m = map(&[("/", &["*"]), ("/ro", &["list", "download"])]);
        check(&m, Operation::Upload { path: "/f" }, true);
        check(&m, Operation::Upload { path: "/ro/f" }, false);
        check(
            &m,
            Operation::Upload {
                path: "/ro/deep/er/f",
            },
            false,
        );
        check(&m, Operation::Download { path: "/ro/deep/f" }, true);
        check(&m, Operation::List { dir: "/ro/deep" }, true);
        check(&m, Operation::Mkdir { path: "/ro/x" }, false);
        check(&m, Operation::Mkdir { path: "/x" }, true);
    }

    #[test]
    fn rename_rules() {
        let only_delete_upload = map(&[("/", &["list", "delete", "upload"])]);
        let rename = |m: &PermissionMap, is_dir, target_exists| {
            m.allows(Operation::Rename {
                from: "/a",
                to: "/b",
                is_dir,
                target_exists,
            })
        };
        assert!(rename(&only_delete_upload, false, false));
        assert!(!rename(&only_delete_upload, true, false));
        assert!(!rename(&only_delete_upload, false, true));
        let full = map(&[("/", &["rename", "overwrite"])]);
        assert!(rename(&full, false, true));
        let split = map(&[("/", &["rename_files"])]);
        assert!(rename(&split, false, false));
        assert!(!rename(&split, true, false));
    }

    #[test]
    fn delete_variants() {
        let files_only = map(&[("/", &["delete_files"])]);
        check(&files_only, Operation::RemoveFile { path: "/f" }, true);
        check(&files_only, Operation::RemoveDir { path: "/d" }, false);
    }
}
