//! git's side of the sandbox: the environment git's programs run with (no
//! system or global config, hooks, fsmonitor and auto-gc off by command-line
//! config) and the check of a repository's own config, refusing keys that
//! name a program or pull in other files. Runs in the launcher, inside the
//! sandbox.
// Runs inside the sandboxed launcher, where Landlock confines every path.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

/// Single keys that run a program in receive-pack, upload-pack or
/// upload-archive, set on the command line (which wins over the
/// repository's config).
const OVERRIDES: &[(&str, &str)] = &[
    // Hooks: pre-receive, update, post-receive, post-update,
    // push-to-checkout, proc-receive, reference-transaction…
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    // `git gc --auto` after a push.
    ("receive.autogc", "false"),
];

/// The environment git's programs run with: no system or global
/// config, the overrides, no lazy fetch from a promisor remote.
pub fn environment() -> Vec<(String, String)> {
    let mut env = vec![
        ("GIT_CONFIG_NOSYSTEM".to_string(), "1".to_string()),
        ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
        ("GIT_NO_LAZY_FETCH".into(), "1".into()),
        ("GIT_CONFIG_COUNT".into(), OVERRIDES.len().to_string()),
    ];
    for (i, (key, value)) in OVERRIDES.iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), key.to_string()));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), value.to_string()));
    }
    env
}

/// Why a repository config key is refused, for keys that can name a
/// program or pull in other config (`name` as `git config --list`
/// prints it: section and key lowercase).
pub fn refused_key(name: &str) -> Option<&'static str> {
    let section = name.split('.').next().unwrap_or_default();
    let key = name.rsplit('.').next().unwrap_or_default();
    let has_subsection = name.matches('.').count() >= 2;
    match (section, key) {
        ("include" | "includeif", _) => Some("it includes other config files"),
        ("filter", _) => Some("filters run programs"),
        ("tar", "command") if has_subsection => Some("archive formats run programs"),
        ("gpg", "program") => Some("it names a program"),
        // Every value runs, even an empty one, and receive-pack's
        // quarantine makes each repository its own alternate: refused
        // rather than overridden.
        ("core", "alternaterefscommand") => Some("it names a program"),
        _ => None,
    }
}

/// Refuses a repository whose config sets a refused key. Runs inside the
/// sandbox (so links out of the home are not followed) before the
/// program starts. The user can rewrite the config from another
/// connection between this check and the program's start: the check
/// gives a clear refusal, the real guarantee is the sandbox's EXECUTE
/// rule (no shell, nothing from the home can run).
pub fn check_repository(git: &Path, repo: &Path) -> Result<(), String> {
    for dir in candidate_git_dirs(repo) {
        let meta = match std::fs::metadata(&dir) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if meta.is_file() {
            return Err(format!(
                "{}: refused: a gitdir link file is not supported here",
                dir.display()
            ));
        }
        if !(dir.join("HEAD").exists() || dir.join("objects").is_dir()) {
            continue;
        }
        if dir.join("commondir").exists() {
            return Err(format!(
                "{}: refused: repositories sharing another's directory (commondir) are not supported here",
                dir.display()
            ));
        }
        for file in ["config", "config.worktree"] {
            let file = dir.join(file);
            if std::fs::symlink_metadata(&file).is_ok() {
                check_config(git, &file)?;
            }
        }
    }
    Ok(())
}

/// Where git's `enter_repo` looks for the repository of `path`, in its
/// order; every one that looks like a repository is checked.
fn candidate_git_dirs(path: &Path) -> Vec<std::path::PathBuf> {
    let base = path.as_os_str().to_owned();
    ["/.git", "", ".git/.git", ".git"]
        .iter()
        .map(|suffix| {
            let mut p = base.clone();
            p.push(suffix);
            p.into()
        })
        .collect()
}

fn check_config(git: &Path, file: &Path) -> Result<(), String> {
    // The target comes relative to the working directory (the home); git
    // runs from "/" so it finds no repository of its own there.
    let file = std::env::current_dir()
        .map_err(|e| format!("cannot check the repository's config: {e}"))?
        .join(file);
    // git's own parser: its reading and ours cannot differ.
    let out = std::process::Command::new(git)
        .args([
            "config",
            "--no-includes",
            "--list",
            "--name-only",
            "-z",
            "--file",
        ])
        .arg(&file)
        .current_dir("/")
        .env_clear()
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LANG", "C")
        .output()
        .map_err(|e| format!("cannot check the repository's config: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "refused: cannot read the repository's config ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name);
        if let Some(why) = refused_key(&name) {
            return Err(format!(
                "refused: the repository's config sets {name} ({why}); remove it to use git here"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_keys() {
        for name in [
            "include.path",
            "includeif.gitdir:/x/.path",
            "filter.lfs.smudge",
            "filter.x.process",
            "tar.x.command",
            "tar.tar.gz.command",
            "gpg.program",
            "gpg.ssh.program",
            "core.alternaterefscommand",
        ] {
            assert!(refused_key(name).is_some(), "{name}");
        }
        for name in [
            "core.bare",
            "core.hookspath",
            "tar.umask",
            "receive.denycurrentbranch",
            "remote.filter.url",
            "user.name",
        ] {
            assert!(refused_key(name).is_none(), "{name}");
        }
    }

    #[test]
    fn environment_counts_its_overrides() {
        let env = environment();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("GIT_CONFIG_COUNT"), Some("3"));
        assert_eq!(get("GIT_CONFIG_KEY_0"), Some("core.hooksPath"));
        assert_eq!(get("GIT_CONFIG_VALUE_0"), Some("/dev/null"));
        assert_eq!(get("GIT_CONFIG_GLOBAL"), Some("/dev/null"));
    }

    #[test]
    fn candidates_follow_enter_repo() {
        let c = candidate_git_dirs(Path::new("/h/repo"));
        let c: Vec<_> = c.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            c,
            ["/h/repo/.git", "/h/repo", "/h/repo.git/.git", "/h/repo.git"]
        );
    }
}
