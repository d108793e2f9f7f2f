//! File-name filters (SFTPGo's `filters.file_patterns`, and the older
//! `file_extensions` turned into patterns): per directory, allowed and denied
//! shell patterns matched case-insensitively on a name; the filter of the
//! nearest configured ancestor directory applies. `deny_policy` 1 also hides
//! what it denies (listings, stat, and everything below a hidden directory).
//!
//! Validated in the control plane, evaluated by the edge on every path a
//! request names.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::pattern::Pattern;
use crate::vpath::{base_name, parent};

/// `deny_policy` values.
pub const DENY_POLICY_DEFAULT: i32 = 0;
pub const DENY_POLICY_HIDE: i32 = 1;

/// One filter as stored and sent to edges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct PatternsSpec {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub allowed_patterns: Vec<String>,
    #[serde(default)]
    pub denied_patterns: Vec<String>,
    #[serde(default)]
    pub deny_policy: i32,
}

/// SFTPGo 1.x `file_extensions` entry; converted to patterns (`.jpg` ⇒ `*.jpg`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExtensionsSpec {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub allowed_extensions: Vec<String>,
    #[serde(default)]
    pub denied_extensions: Vec<String>,
}

impl ExtensionsSpec {
    pub fn into_patterns(self) -> PatternsSpec {
        let conv = |exts: Vec<String>| {
            exts.into_iter()
                .map(|e| format!("*{}", e.to_lowercase()))
                .collect()
        };
        PatternsSpec {
            path: self.path,
            allowed_patterns: conv(self.allowed_extensions),
            denied_patterns: conv(self.denied_extensions),
            deny_policy: DENY_POLICY_DEFAULT,
        }
    }
}

/// What the filters say about one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// Visible but unusable: permission denied.
    Denied,
    /// Denied and hidden: behaves as if it did not exist.
    Hidden,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Filter {
    allowed: Vec<Pattern>,
    denied: Vec<Pattern>,
    hide: bool,
}

impl Filter {
    /// Newest SFTPGo order: an allowed match wins, then a denied match
    /// refuses, else allowed only when there is no allow list.
    fn allows(&self, name: &str) -> bool {
        let lower = name.to_lowercase();
        if self.allowed.iter().any(|p| p.is_match(&lower)) {
            return true;
        }
        if self.denied.iter().any(|p| p.is_match(&lower)) {
            return false;
        }
        self.allowed.is_empty()
    }
}

/// A user's validated file filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileFilters {
    by_dir: BTreeMap<String, Filter>,
}

impl FileFilters {
    /// Validates specs: absolute paths (cleaned), at least one pattern,
    /// patterns that compile, a known deny policy, no directory twice.
    pub fn new(specs: &[PatternsSpec]) -> Result<Self, String> {
        let mut by_dir = BTreeMap::new();
        for spec in specs {
            if !spec.path.starts_with('/') {
                return Err(format!(
                    "file_patterns: path {:?} must be absolute",
                    spec.path
                ));
            }
            let dir = crate::vpath::clean("/", &spec.path);
            if spec.allowed_patterns.is_empty() && spec.denied_patterns.is_empty() {
                return Err(format!(
                    "file_patterns: no allowed or denied patterns for {dir:?}"
                ));
            }
            if !matches!(spec.deny_policy, DENY_POLICY_DEFAULT | DENY_POLICY_HIDE) {
                return Err(format!(
                    "file_patterns: invalid deny_policy {} for {dir:?} (0 or 1)",
                    spec.deny_policy
                ));
            }
            let compile = |list: &[String]| -> Result<Vec<Pattern>, String> {
                list.iter()
                    .map(|p| {
                        Pattern::new(&p.to_lowercase())
                            .map_err(|e| format!("file_patterns for {dir:?}: {e}"))
                    })
                    .collect()
            };
            let filter = Filter {
                allowed: compile(&spec.allowed_patterns)?,
                denied: compile(&spec.denied_patterns)?,
                hide: spec.deny_policy == DENY_POLICY_HIDE,
            };
            if by_dir.insert(dir.clone(), filter).is_some() {
                return Err(format!("file_patterns: duplicate path {dir:?}"));
            }
        }
        Ok(Self { by_dir })
    }

    pub fn is_empty(&self) -> bool {
        self.by_dir.is_empty()
    }

    /// The filter of the nearest configured ancestor of `dir` (itself included).
    fn for_dir(&self, dir: &str) -> Option<&Filter> {
        let mut cur = dir;
        loop {
            if let Some(f) = self.by_dir.get(cur) {
                return Some(f);
            }
            if cur == "/" {
                return None;
            }
            cur = parent(cur);
        }
    }

    /// The verdict for a clean virtual path: hidden when any directory on
    /// the way is hidden by its parent's filter; otherwise the path's own
    /// name decides under its parent's filter.
    pub fn check(&self, vpath: &str) -> Access {
        if self.by_dir.is_empty() || vpath == "/" {
            return Access::Allowed;
        }
        let mut dir = parent(vpath);
        while dir != "/" {
            if let Some(f) = self.for_dir(parent(dir))
                && f.hide
                && !f.allows(base_name(dir))
            {
                return Access::Hidden;
            }
            dir = parent(dir);
        }
        match self.for_dir(parent(vpath)) {
            Some(f) if !f.allows(base_name(vpath)) => {
                if f.hide {
                    Access::Hidden
                } else {
                    Access::Denied
                }
            }
            _ => Access::Allowed,
        }
    }

    /// True when an entry `name` of the listed directory `dir` is shown.
    pub fn visible_in(&self, dir: &str, name: &str) -> bool {
        match self.for_dir(dir) {
            Some(f) if f.hide => f.allows(name),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, allowed: &[&str], denied: &[&str], deny_policy: i32) -> PatternsSpec {
        PatternsSpec {
            path: path.into(),
            allowed_patterns: allowed.iter().map(|s| s.to_string()).collect(),
            denied_patterns: denied.iter().map(|s| s.to_string()).collect(),
            deny_policy,
        }
    }

    fn check(filters: &FileFilters, path: &str, expected: Access) {
        assert_eq!(filters.check(path), expected, "{path}");
    }

    #[test]
    fn nearest_filter_and_order() {
        let f = FileFilters::new(&[
            spec("/", &[], &["*.exe", "*.zip"], 0),
            spec("/photos", &["*.jpg", "*.png"], &[], 0),
            spec("/mixed", &["keep.zip"], &["*.zip"], 0),
        ])
        .unwrap();
        check(&f, "/a.txt", Access::Allowed);
        check(&f, "/A.EXE", Access::Denied);
        check(&f, "/sub/dir/x.zip", Access::Denied);
        check(&f, "/photos/p.JPG", Access::Allowed);
        check(&f, "/photos/p.txt", Access::Denied);
        check(&f, "/photos/deep/p.txt", Access::Denied);
        // The /photos filter replaces the / one below /photos.
        check(&f, "/photos/x.exe", Access::Denied);
        check(&f, "/mixed/keep.zip", Access::Allowed);
        check(&f, "/mixed/other.zip", Access::Denied);
        // A non-empty allow list denies whatever it does not name.
        check(&f, "/mixed/other.txt", Access::Denied);
    }

    #[test]
    fn hidden_names_and_everything_below() {
        let f = FileFilters::new(&[spec("/", &[], &["private", "*.key"], 1)]).unwrap();
        check(&f, "/private", Access::Hidden);
        check(&f, "/private/readme.txt", Access::Hidden);
        check(&f, "/a/private/deeper/f", Access::Hidden);
        check(&f, "/a/id.key", Access::Hidden);
        check(&f, "/a/public", Access::Allowed);
        assert!(!f.visible_in("/a", "id.KEY"));
        assert!(f.visible_in("/a", "notes"));
    }

    #[test]
    fn denied_without_hiding_keeps_the_inside_reachable() {
        let f = FileFilters::new(&[spec("/", &[], &["private"], 0)]).unwrap();
        check(&f, "/private", Access::Denied);
        check(&f, "/private/readme.txt", Access::Allowed);
        assert!(f.visible_in("/", "private"));
    }

    #[test]
    fn extensions_become_patterns() {
        let ext = ExtensionsSpec {
            path: "/".into(),
            allowed_extensions: vec![".JPG".into()],
            denied_extensions: vec![],
        };
        let f = FileFilters::new(&[ext.into_patterns()]).unwrap();
        check(&f, "/x.jpg", Access::Allowed);
        check(&f, "/x.png", Access::Denied);
    }

    #[test]
    fn validation_messages() {
        let err = |specs: &[PatternsSpec]| FileFilters::new(specs).unwrap_err();
        assert!(err(&[spec("rel", &["*"], &[], 0)]).contains("must be absolute"));
        assert!(err(&[spec("/", &[], &[], 0)]).contains("no allowed or denied"));
        assert!(err(&[spec("/", &["[a-"], &[], 0)]).contains("invalid pattern"));
        assert!(err(&[spec("/", &["*"], &[], 7)]).contains("deny_policy"));
        assert!(
            err(&[spec("/a", &["*"], &[], 0), spec("/a/", &["*"], &[], 0)]).contains("duplicate")
        );
    }
}
