//! Ferry's own directories and files, which no user home or virtual folder
//! may reach: the data directory (the database, the master key, the edge
//! token), the backups directory and the configuration file's directory,
//! plus key and database files kept elsewhere. A home or `mapped_path`
//! inside one of the directories is refused for everyone (a user could read
//! the database and the keys over SFTP); one that contains a directory or
//! file of the list (`/`, a parent of the data directory) is refused unless
//! the admin holds `*`.
//!
//! Paths are compared canonicalised: symlinks resolved as far as the path
//! exists, the rest (a home created at first login) cleaned lexically, so
//! `/srv/../var/lib/ferry/x` or a symlink to the data directory is caught.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

/// A directory or file to keep out of reach, with the name used in errors
/// (never its path: error texts reach REST clients).
#[derive(Debug, Clone)]
struct Protected {
    label: &'static str,
    path: PathBuf,
    /// Homes inside it are refused (directories only).
    is_dir: bool,
}

/// The protected directories and files of this process.
#[derive(Debug, Clone, Default)]
pub struct ServerPaths {
    entries: Vec<Protected>,
}

static SERVER_PATHS: OnceLock<ServerPaths> = OnceLock::new();

impl ServerPaths {
    /// Adds a directory: homes inside it and homes containing it are refused.
    pub fn dir(self, label: &'static str, path: &Path) -> Self {
        self.add(label, path, true)
    }

    /// Adds a file: homes containing it are refused (unless the admin holds
    /// `*`).
    pub fn file(self, label: &'static str, path: &Path) -> Self {
        self.add(label, path, false)
    }

    fn add(mut self, label: &'static str, path: &Path, is_dir: bool) -> Self {
        if !path.as_os_str().is_empty() {
            self.entries.push(Protected {
                label,
                path: resolve(&absolute(path)),
                is_dir,
            });
        }
        self
    }

    /// Makes these the process's protected paths (the first call wins).
    pub fn install(self) {
        let _ = SERVER_PATHS.set(self);
    }
}

fn installed() -> &'static [Protected] {
    SERVER_PATHS.get().map_or(&[], |p| p.entries.as_slice())
}

/// `path` made absolute against the current directory (lexically).
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}

/// The path the kernel would reach: every existing prefix canonicalised
/// (symlinks followed), `.` and `..` applied, the part that does not exist
/// yet appended as written.
pub fn resolve(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if let Ok(real) = std::fs::canonicalize(&out) {
                    out = real;
                }
            }
        }
    }
    out
}

/// Refuses a home or folder path (`field` names it in the message) inside a
/// protected directory.
pub fn check_inside(field: &str, path: &str) -> Result<(), String> {
    inside(installed(), field, path)
}

fn inside(list: &[Protected], field: &str, path: &str) -> Result<(), String> {
    let real = resolve(Path::new(path));
    for p in list.iter().filter(|p| p.is_dir) {
        if real.starts_with(&p.path) {
            return Err(format!(
                "{field} {path:?} is inside Ferry's {}: homes and folders must not reach Ferry's own files",
                p.label
            ));
        }
    }
    Ok(())
}

/// Refuses a home or folder path that contains a protected directory or
/// file (for admins without `*`).
pub fn check_contains(field: &str, path: &str) -> Result<(), String> {
    contains(installed(), field, path)
}

fn contains(list: &[Protected], field: &str, path: &str) -> Result<(), String> {
    let real = resolve(Path::new(path));
    for p in list {
        if p.path.starts_with(&real) {
            return Err(format!(
                "{field} {path:?} contains Ferry's {}: only an admin with the \"*\" permission may set it",
                p.label
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_follows_links_and_cleans_the_missing_part() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(real.join("data")).unwrap();
        std::os::unix::fs::symlink(real.join("data"), real.join("link")).unwrap();
        assert_eq!(resolve(&real.join("link/new/x")), real.join("data/new/x"));
        assert_eq!(
            resolve(&real.join("missing/../data/./y")),
            real.join("data/y")
        );
        assert_eq!(resolve(&real.join("link/../z")), real.join("z"));
    }

    #[test]
    fn inside_and_containing_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let data = root.join("data");
        std::fs::create_dir(&data).unwrap();
        let paths = ServerPaths::default()
            .dir("data directory", &data)
            .file("master key file", &root.join("keys/master"));
        let check = |f: fn(&[Protected], &str, &str) -> Result<(), String>, p: &Path| {
            f(&paths.entries, "home_dir", p.to_str().unwrap())
        };
        let e = check(inside, &data.join("u1")).unwrap_err();
        assert!(
            e.contains("home_dir") && e.contains("data directory"),
            "{e}"
        );
        assert!(check(inside, &data.join("../data/x/../y")).is_err());
        assert!(check(inside, &root.join("homes/u1")).is_ok());
        assert!(check(inside, &root).is_ok(), "containing is not inside");
        let e = check(contains, &root).unwrap_err();
        assert!(e.contains("contains"), "{e}");
        assert!(check(contains, Path::new("/")).is_err());
        assert!(
            check(contains, &root.join("keys")).is_err(),
            "a key file's directory"
        );
        assert!(check(contains, &root.join("homes/u1")).is_ok());
    }
}
