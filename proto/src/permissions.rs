//! The permission engine: per-directory permission maps as SFTPGo defines them
//! (`/` mandatory, nearest configured ancestor wins), validated the same way in
//! the control plane and evaluated on every request at the edge.

use std::collections::BTreeMap;

use crate::pattern::{Pattern, has_meta};

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
    #[error("invalid permission path: {0}")]
    BadPattern(String),
}

/// A validated map: clean virtual directory (or directory pattern such as
/// `/shared/*`) -> permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionMap {
    dirs: BTreeMap<String, Vec<String>>,
    /// The keys holding pattern syntax, compiled, in key order.
    patterns: Vec<Pattern>,
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
        let patterns = dirs
            .keys()
            .filter(|k| has_meta(k))
            .map(|k| Pattern::new(k).map_err(PermissionError::BadPattern))
            .collect::<Result<_, _>>()?;
        Ok(Self { dirs, patterns })
    }

    /// The stored form (clean path -> names).
    pub fn as_map(&self) -> &BTreeMap<String, Vec<String>> {
        &self.dirs
    }

    /// Permissions in force for a virtual directory: walking from the
    /// directory up to `/`, the first level with an exact entry or a matching
    /// pattern key wins (exact before pattern; patterns in key order).
    pub fn for_dir(&self, dir: &str) -> &[String] {
        if self.dirs.len() == 1 {
            return self.dirs.values().next().map_or(&[], Vec::as_slice);
        }
        let mut cur = dir;
        loop {
            if let Some(p) = self.dirs.get(cur) {
                return p;
            }
            if let Some(p) = self.patterns.iter().find(|p| p.is_match(cur)) {
                return self.dirs.get(p.as_str()).map_or(&[], Vec::as_slice);
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
    /// Create the symlink `link` pointing at `target`.
    Symlink {
        link: &'a str,
        target: &'a str,
    },
    /// Create the hard link `link` to the existing file `target`: a new name
    /// (upload where it appears) for data that can then be read and written
    /// through it (download and overwrite where the target lives).
    Hardlink {
        link: &'a str,
        target: &'a str,
    },
    /// Server-side copy of `from` (a file or a tree) to `to`.
    Copy {
        from: &'a str,
        to: &'a str,
        is_dir: bool,
        target_exists: bool,
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
            Operation::Symlink { link, target } => {
                self.has(parent(link), "create_symlinks")
                    && self.has(parent(target), "create_symlinks")
            }
            Operation::Hardlink { link, target } => {
                self.has(parent(link), "upload")
                    && self.has(parent(target), "download")
                    && self.has(parent(target), "overwrite")
            }
            Operation::Copy {
                from,
                to,
                is_dir,
                target_exists,
            } => {
                let (src, dst) = (parent(from), parent(to));
                let create = if is_dir { "create_dirs" } else { "upload" };
                let direct = self.has(src, "copy") && self.has(dst, "copy");
                let fallback =
                    self.has(src, "list") && self.has(src, "download") && self.has(dst, create);
                (direct || fallback) && (!target_exists || self.has(dst, "overwrite"))
            }
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
    fn pattern_keys_apply_per_ancestor() {
        let m = map(&[
            ("/", &["list", "download"]),
            ("/shared/*", &["*"]),
            ("/shared/locked", &["list"]),
        ]);
        // "/shared/*" matches the directories inside /shared, not /shared itself.
        check(&m, Operation::Upload { path: "/shared/f" }, false);
        check(
            &m,
            Operation::Upload {
                path: "/shared/a/f",
            },
            true,
        );
        check(
            &m,
            Operation::Upload {
                path: "/shared/a/b/c/f",
            },
            true,
        );
        // An exact key beats a pattern at the same level.
        check(
            &m,
            Operation::Upload {
                path: "/shared/locked/f",
            },
            false,
        );
        check(
            &m,
            Operation::Download {
                path: "/shared/locked/f",
            },
            false,
        );
        check(
            &m,
            Operation::List {
                dir: "/shared/locked",
            },
            true,
        );
        let bad: BTreeMap<String, Vec<String>> = [
            ("/".to_string(), vec!["*".to_string()]),
            ("/x/[a-".to_string(), vec!["*".to_string()]),
        ]
        .into();
        assert!(matches!(
            PermissionMap::validate(&bad),
            Err(PermissionError::BadPattern(_))
        ));
    }

    #[test]
    fn root_only_map_applies_everywhere() {
        let m = map(&[("/", &["list", "upload"])]);
        check(&m, Operation::Upload { path: "/a/b/c" }, true);
        check(&m, Operation::Download { path: "/a/b/c" }, false);
    }

    #[test]
    fn links_and_copies() {
        let m = map(&[
            ("/", &["*"]),
            ("/ro", &["list", "download"]),
            ("/nolinks", &["list", "download", "upload", "overwrite"]),
        ]);
        let symlink = |link, target| Operation::Symlink { link, target };
        check(&m, symlink("/l", "/f"), true);
        check(&m, symlink("/l", "/nolinks/f"), false);
        check(&m, symlink("/nolinks/l", "/f"), false);
        let hardlink = |link, target| Operation::Hardlink { link, target };
        check(&m, hardlink("/l", "/f"), true);
        // Writing through the link would change a file of a read-only directory.
        check(&m, hardlink("/l", "/ro/f"), false);
        check(&m, hardlink("/ro/l", "/f"), false);
        let copy = |from, to, target_exists| Operation::Copy {
            from,
            to,
            is_dir: false,
            target_exists,
        };
        check(&m, copy("/ro/f", "/g", false), true);
        check(&m, copy("/f", "/ro/g", false), false);
        let only_copy = map(&[("/", &["copy"])]);
        check(&only_copy, copy("/f", "/g", false), true);
        check(&only_copy, copy("/f", "/g", true), false);
    }

    #[test]
    fn setstat_parts() {
        let m = map(&[("/", &["chmod"]), ("/d", &["chtimes", "overwrite"])]);
        check(&m, Operation::Chmod { path: "/f" }, true);
        check(&m, Operation::Chmod { path: "/d/f" }, false);
        check(&m, Operation::Chtimes { path: "/d/f" }, true);
        // A directory's attributes are checked on its parent.
        check(&m, Operation::Chmod { path: "/d" }, true);
        check(&m, Operation::Chown { path: "/d/f" }, false);
        check(&m, Operation::Overwrite { path: "/d/f" }, true);
    }

    #[test]
    fn delete_variants() {
        let files_only = map(&[("/", &["delete_files"])]);
        check(&files_only, Operation::RemoveFile { path: "/f" }, true);
        check(&files_only, Operation::RemoveDir { path: "/d" }, false);
    }
}
