//! `ferry import-system-users`: Linux accounts (passwd + shadow) become Ferry
//! users with the same home, uid and gid. Password hashes Ferry can verify
//! (sha512crypt, sha256crypt, md5crypt, yescrypt, bcrypt) are kept as they
//! are; `~/.ssh/authorized_keys` keys are imported too. Accounts that would
//! end up with neither are reported and left out, as are system accounts
//! (uid outside the given range).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::json;

/// What to read and which accounts count.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub passwd: PathBuf,
    pub shadow: PathBuf,
    pub min_uid: u32,
    pub max_uid: u32,
}

/// One account that will be imported.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub username: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub password: Option<String>,
    pub keys: Vec<String>,
    /// False for accounts locked with `!` in shadow.
    pub enabled: bool,
    /// What was kept or dropped, for the report.
    pub notes: Vec<String>,
}

impl Candidate {
    /// The user as the REST API / backup speaks it.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "username": self.username,
            "status": i64::from(self.enabled),
            "password": self.password,
            "public_keys": self.keys,
            "home_dir": self.home,
            "uid": self.uid,
            "gid": self.gid,
            "permissions": {"/": ["*"]},
            "description": "imported from the system accounts",
        })
    }
}

/// The outcome of reading the account files.
#[derive(Debug, Default)]
pub struct Scan {
    pub candidates: Vec<Candidate>,
    /// Accounts in range left out, with the reason.
    pub left_out: Vec<String>,
    /// How many accounts were outside the uid range.
    pub system_accounts: usize,
}

/// The name of a hash format, or None when Ferry cannot verify it.
fn hash_kind(hash: &str) -> Option<&'static str> {
    let kind = if hash.starts_with("$6$") {
        "sha512crypt"
    } else if hash.starts_with("$5$") {
        "sha256crypt"
    } else if hash.starts_with("$1$") {
        "md5crypt"
    } else if hash.starts_with("$y$") {
        "yescrypt"
    } else if hash.starts_with("$2") {
        "bcrypt"
    } else {
        return None;
    };
    crate::passwords::validate_prehashed(hash)
        .ok()
        .map(|_| kind)
}

/// Keys of an `authorized_keys` file; lines with options keep the key and
/// lose the options (reported).
fn authorized_keys(home: &Path, notes: &mut Vec<String>) -> Vec<String> {
    let path = home.join(".ssh/authorized_keys");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Ok(k) = crate::users::parse_public_key(line) {
            if let Ok(s) = k.to_openssh() {
                keys.push(s);
            }
            continue;
        }
        // `from="…",command="…" ssh-ed25519 AAAA… comment`: options first.
        let start = line
            .split_whitespace()
            .position(|t| t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-"));
        let parsed = start.and_then(|i| {
            let rest: Vec<&str> = line.split_whitespace().skip(i).collect();
            crate::users::parse_public_key(&rest.join(" ")).ok()
        });
        match parsed.and_then(|k| k.to_openssh().ok()) {
            Some(k) => {
                notes.push(format!("{}:{}: key options dropped", path.display(), n + 1));
                keys.push(k);
            }
            None => notes.push(format!("{}:{}: not a key, skipped", path.display(), n + 1)),
        }
    }
    keys
}

/// Reads passwd and shadow and decides, account by account.
pub fn scan(opts: &ImportOptions) -> Result<Scan, String> {
    let passwd = std::fs::read_to_string(&opts.passwd)
        .map_err(|e| format!("cannot read {}: {e}", opts.passwd.display()))?;
    let shadow_text = std::fs::read_to_string(&opts.shadow).map_err(|e| {
        format!(
            "cannot read {}: {e} (password hashes live there: run as root or pass --shadow)",
            opts.shadow.display()
        )
    })?;
    let shadow: HashMap<&str, &str> = shadow_text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.next()?))
        })
        .collect();
    let mut out = Scan::default();
    for (n, line) in passwd.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') || line.starts_with(['+', '-']) {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 7 {
            out.left_out.push(format!(
                "{}:{}: not a passwd line (7 fields expected)",
                opts.passwd.display(),
                n + 1
            ));
            continue;
        }
        let (name, uid, gid, home) = (f[0], f[2], f[3], f[5]);
        let (Ok(uid), Ok(gid)) = (uid.parse::<u32>(), gid.parse::<u32>()) else {
            out.left_out
                .push(format!("{name}: uid or gid is not a number"));
            continue;
        };
        if uid < opts.min_uid || uid > opts.max_uid {
            out.system_accounts += 1;
            continue;
        }
        if let Some(rule) = crate::users::username_rule_broken(name) {
            out.left_out
                .push(format!("{name}: not a valid Ferry username: {rule}"));
            continue;
        }
        if !home.starts_with('/') {
            out.left_out
                .push(format!("{name}: home {home:?} is not an absolute path"));
            continue;
        }
        let mut notes = Vec::new();
        let mut enabled = true;
        let field = shadow.get(name).copied().unwrap_or_else(|| {
            // Old systems keep the hash in passwd itself.
            if f[1] == "x" { "" } else { f[1] }
        });
        let password = if let Some(locked) = field.strip_prefix('!') {
            enabled = false;
            notes.push("locked in shadow: imported disabled".to_string());
            hash_kind(locked).map(|_| locked.to_string())
        } else if field.is_empty() || field.starts_with('*') {
            None
        } else {
            match hash_kind(field) {
                Some(kind) => {
                    notes.push(format!("{kind} password kept"));
                    Some(field.to_string())
                }
                None => {
                    let prefix: String = field.chars().take(4).collect();
                    notes.push(format!(
                        "password hash {prefix}… cannot be verified by Ferry: not imported"
                    ));
                    None
                }
            }
        };
        let keys = authorized_keys(Path::new(home), &mut notes);
        if !keys.is_empty() {
            notes.push(format!("{} authorized key(s)", keys.len()));
        }
        if password.is_none() && keys.is_empty() {
            out.left_out.push(format!(
                "{name}: no password Ferry can verify and no authorized_keys ({})",
                if notes.is_empty() {
                    "no password set".to_string()
                } else {
                    notes.join("; ")
                }
            ));
            continue;
        }
        out.candidates.push(Candidate {
            username: name.to_string(),
            uid,
            gid,
            home: home.to_string(),
            password,
            keys,
            enabled,
            notes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_sorted_out() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("ann");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(
            home.join(".ssh/authorized_keys"),
            "# keys\nfrom=\"10.0.0.1\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINi7UHy2GLrU8yALcwtcT1rYk+1qxMmbW05hpdyXNZDU ann@box\ngarbage\n",
        )
        .unwrap();
        let passwd = dir.path().join("passwd");
        let shadow = dir.path().join("shadow");
        std::fs::write(
            &passwd,
            format!(
                "root:x:0:0:root:/root:/bin/bash\n\
                 ann:x:1000:1000:Ann:{}:/bin/bash\n\
                 bob:x:1001:1001::/home/bob:/usr/sbin/nologin\n\
                 cid:x:1002:1002::/home/cid:/bin/sh\n\
                 dot:x:1003:1003::relative:/bin/sh\n\
                 eve:x:1004:1004::/home/eve:/bin/sh\n\
                 nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n",
                home.display()
            ),
        )
        .unwrap();
        std::fs::write(
            &shadow,
            "root:$6$abc$def:1::::::\nann:*:1::::::\n\
             bob:$1$v1salt$ybj4zD8KsX9M0tp52ouZE/:1::::::\n\
             cid:$7$CU..../....abc:1::::::\n\
             eve:!$1$v1salt$ybj4zD8KsX9M0tp52ouZE/:1::::::\n",
        )
        .unwrap();
        let s = scan(&ImportOptions {
            passwd,
            shadow,
            min_uid: 1000,
            max_uid: 60000,
        })
        .unwrap();
        assert_eq!(s.system_accounts, 2, "root and nobody");
        let names: Vec<&str> = s.candidates.iter().map(|c| c.username.as_str()).collect();
        assert_eq!(names, ["ann", "bob", "eve"]);
        assert_eq!(s.candidates[0].keys.len(), 1, "{:?}", s.candidates[0].notes);
        assert!(s.candidates[0].password.is_none());
        assert!(
            s.candidates[1]
                .password
                .as_deref()
                .unwrap()
                .starts_with("$1$")
        );
        assert!(!s.candidates[2].enabled, "locked");
        let left = s.left_out.join("\n");
        assert!(left.contains("cid") && left.contains("$7$"), "{left}");
        assert!(left.contains("dot") && left.contains("absolute"), "{left}");
    }
}
