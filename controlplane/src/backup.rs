//! Backups in SFTPGo's format (`dumpdata`/`loaddata`): users, folders,
//! admins and API keys with their password and key hashes, so a dump loads
//! back into Ferry or into SFTPGo. Restoring reads SFTPGo v2 backups and
//! 1.x ones (users and folders, folders keyed by `mapped_path`); every object
//! is validated by the same rules as the REST API before anything is written,
//! and the write is one transaction, so a restore applies all or nothing.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::admins::AdminInput;
use crate::apikeys::ApiKeyInput;
use crate::folders::FolderInput;
use crate::store::{DumpRows, RestorePlan};
use crate::users::UserInput;

/// The dump format version written (SFTPGo 2.6's).
pub const DUMP_VERSION: i64 = 17;

/// Sections of an SFTPGo backup Ferry has no objects for yet; a backup with
/// any of them non-empty is refused rather than restored in part.
const UNSUPPORTED: &[&str] = &[
    "shares",
    "event_actions",
    "event_rules",
    "roles",
    "ip_lists",
];

/// Admin permissions SFTPGo dropped in v2.7 (they folded into `*`); an older
/// backup's admin keeps the rest of its permissions, never gains `*`.
const RETIRED_ADMIN_PERMISSIONS: &[&str] = &[
    "manage_admins",
    "manage_apikeys",
    "manage_system",
    "retention_checks",
    "manage_event_rules",
    "manage_roles",
    "manage_ip_lists",
    "metadata_checks",
];

/// Restore modes (SFTPGo's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 0: add new objects, replace existing ones.
    AddAndUpdate,
    /// 1: add new objects only.
    AddOnly,
    /// 2: as 0, and disconnect the users that were replaced.
    AddUpdateDisconnect,
}

impl Mode {
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v.map(str::trim) {
            None | Some("") | Some("0") => Ok(Mode::AddAndUpdate),
            Some("1") => Ok(Mode::AddOnly),
            Some("2") => Ok(Mode::AddUpdateDisconnect),
            Some(o) => Err(format!("invalid mode {o:?}: use 0, 1 or 2")),
        }
    }
}

/// Quota scans after a restore (SFTPGo's `scan-quota`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanQuota {
    /// 0: no scan; new objects take the usage recorded in the backup.
    No,
    /// 1: scan every restored user.
    All,
    /// 2: scan restored users with quota limits.
    WithLimits,
}

impl ScanQuota {
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v.map(str::trim) {
            None | Some("") | Some("0") => Ok(ScanQuota::No),
            Some("1") => Ok(ScanQuota::All),
            Some("2") => Ok(ScanQuota::WithLimits),
            Some(o) => Err(format!("invalid scan-quota {o:?}: use 0, 1 or 2")),
        }
    }
}

/// Renders a backup from the stored rows. Ids are left out (they are local
/// to one database and every restore matches objects by name), so dumping,
/// restoring into an empty store and dumping again gives the same document.
pub fn render(rows: &DumpRows) -> Value {
    let strip_id = |mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            o.shift_remove("id");
        }
        v
    };
    let users: Vec<Value> = rows
        .users
        .iter()
        .map(|(row, maps, groups)| {
            let mut v = serde_json::to_value(crate::users::UserView::full(row, maps, groups))
                .unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.shift_remove("id");
                o.shift_remove("has_password");
                if let Some(p) = row.data.password.as_ref().filter(|p| !p.is_empty()) {
                    o.insert("password".into(), Value::String(p.clone()));
                }
                if let Some(Value::Array(vfs)) = o.get_mut("virtual_folders") {
                    for f in vfs.iter_mut() {
                        *f = strip_id(f.take());
                    }
                }
            }
            v
        })
        .collect();
    let groups: Vec<Value> = rows
        .groups
        .iter()
        .map(|(row, maps, members)| {
            let mut v = strip_id(
                serde_json::to_value(crate::groups::GroupView::new(row, maps, members.clone()))
                    .unwrap_or_default(),
            );
            if let Some(Value::Array(vfs)) = v.get_mut("virtual_folders") {
                for f in vfs.iter_mut() {
                    *f = strip_id(f.take());
                }
            }
            v
        })
        .collect();
    let folders: Vec<Value> = rows
        .folders
        .iter()
        .map(|(row, names)| {
            strip_id(
                serde_json::to_value(crate::folders::FolderView::new(row, names.clone()))
                    .unwrap_or_default(),
            )
        })
        .collect();
    let admins: Vec<Value> = rows
        .admins
        .iter()
        .map(|row| {
            let mut v = strip_id(
                serde_json::to_value(crate::admins::AdminView::from(row)).unwrap_or_default(),
            );
            if let Some(o) = v.as_object_mut() {
                o.insert("password".into(), Value::String(row.data.password.clone()));
            }
            v
        })
        .collect();
    let api_keys: Vec<Value> = rows
        .api_keys
        .iter()
        .map(|row| {
            let mut v =
                serde_json::to_value(crate::apikeys::ApiKeyView::from(row)).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("key".into(), Value::String(row.data.api_key.clone()));
            }
            v
        })
        .collect();
    json!({
        "users": users,
        "groups": groups,
        "folders": folders,
        "admins": admins,
        "api_keys": api_keys,
        "shares": [],
        "event_actions": [],
        "event_rules": [],
        "roles": [],
        "ip_lists": [],
        "configs": {},
        "version": DUMP_VERSION,
    })
}

/// A backup checked and converted, ready for [`crate::store::Store::restore`].
pub struct Prepared {
    pub plan: RestorePlan,
    /// Things changed on the way in (retired admin permissions), for the reply.
    pub notes: Vec<String>,
}

fn section<'a>(top: &'a Map<String, Value>, name: &str) -> Result<&'a [Value], String> {
    match top.get(name) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("{name} must be a list")),
    }
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// The name a 1.x folder (keyed by its mapped path) gets: the path without
/// its leading slash, other characters a folder name cannot hold as `_`.
pub fn folder_name_from_path(path: &str) -> String {
    let name: String = path
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.~ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() { "root".into() } else { name }
}

fn parse_item<T: serde::de::DeserializeOwned>(what: &str, v: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let path = e.path().to_string();
        if path.is_empty() || path == "." {
            format!("{what}: {}", e.into_inner())
        } else {
            format!("{what}: {path}: {}", e.into_inner())
        }
    })
}

/// Checks a whole backup and converts it into rows. Nothing is written.
pub async fn prepare(backup: &Value) -> Result<Prepared, String> {
    let top = backup
        .as_object()
        .ok_or("the backup must be a JSON object with users, folders, admins…")?;
    if let Some(v) = top.get("version")
        && !v.is_null()
        && !v.as_i64().is_some_and(|n| (1..=DUMP_VERSION).contains(&n))
    {
        return Err(format!(
            "unsupported backup version {v}: Ferry reads SFTPGo backups up to version {DUMP_VERSION} and 1.x backups"
        ));
    }
    let unsupported: Vec<&str> = UNSUPPORTED
        .iter()
        .copied()
        .filter(|s| section(top, s).is_ok_and(|l| !l.is_empty()))
        .collect();
    if !unsupported.is_empty() {
        return Err(format!(
            "this backup holds {} which Ferry does not support yet; nothing was restored \
             (remove those sections to restore the rest)",
            unsupported.join(", ")
        ));
    }
    let mut notes = Vec::new();
    let mut plan = RestorePlan::default();

    // Folders first: 1.x folders have no name, users refer to them by path.
    let mut names_by_path: HashMap<String, String> = HashMap::new();
    for (i, f) in section(top, "folders")?.iter().enumerate() {
        let mut f = f.clone();
        let obj = f
            .as_object_mut()
            .ok_or_else(|| format!("folders[{i}] must be an object"))?;
        let name = match obj.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => {
                let path = obj.get("mapped_path").and_then(Value::as_str).unwrap_or("");
                let n = folder_name_from_path(path);
                obj.insert("name".into(), Value::String(n.clone()));
                n
            }
        };
        let what = format!("folders[{i}] ({name:?})");
        if let Some(p) = obj.get("mapped_path").and_then(Value::as_str) {
            names_by_path.insert(p.to_string(), name.clone());
        }
        let input: FolderInput = parse_item(&what, &f)?;
        let mut data = input.validate(None).map_err(|e| format!("{what}: {e}"))?;
        data.used_quota_size = int(&f, "used_quota_size").unwrap_or(0);
        data.used_quota_files = int(&f, "used_quota_files").unwrap_or(0);
        data.last_quota_update = int(&f, "last_quota_update").unwrap_or(0);
        plan.folders.push(data);
    }

    for (i, g) in section(top, "groups")?.iter().enumerate() {
        let name = g
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let what = format!("groups[{i}] ({name:?})");
        let input: crate::groups::GroupInput = parse_item(&what, g)?;
        let (mut data, mappings) = input.validate(None).map_err(|e| format!("{what}: {e}"))?;
        for (key, slot) in [
            ("created_at", &mut data.created_at),
            ("updated_at", &mut data.updated_at),
        ] {
            if let Some(v) = int(g, key) {
                *slot = v;
            }
        }
        plan.groups.push((data, mappings));
    }

    for (i, a) in section(top, "admins")?.iter().enumerate() {
        let mut a = a.clone();
        let name = a
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let what = format!("admins[{i}] ({name:?})");
        if a.get("role")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty())
        {
            return Err(format!(
                "{what}: roles are not supported yet, and dropping the role would let this admin see every user"
            ));
        }
        if let Some(Value::Array(perms)) = a.get_mut("permissions") {
            let before = perms.len();
            perms.retain(|p| {
                !p.as_str()
                    .is_some_and(|p| RETIRED_ADMIN_PERMISSIONS.contains(&p))
            });
            if perms.len() != before {
                notes.push(format!(
                    "admin {name:?}: permissions SFTPGo 2.7 retired were dropped (they need \"*\" now)"
                ));
            }
            if perms.is_empty() {
                return Err(format!(
                    "{what}: only retired permissions are left; grant \"*\" or specific ones in the backup"
                ));
            }
        }
        let input: AdminInput = parse_item(&what, &a)?;
        let valid = input.validate(None).map_err(|e| format!("{what}: {e}"))?;
        let mut data = valid
            .into_data()
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        for (key, slot) in [
            ("created_at", &mut data.created_at),
            ("updated_at", &mut data.updated_at),
            ("last_login", &mut data.last_login),
        ] {
            if let Some(v) = int(&a, key) {
                *slot = v;
            }
        }
        plan.admins.push(data);
    }

    for (i, u) in section(top, "users")?.iter().enumerate() {
        let mut u = u.clone();
        let name = u
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let what = format!("users[{i}] ({name:?})");
        if u.get("role")
            .and_then(Value::as_str)
            .is_some_and(|r| !r.is_empty())
        {
            return Err(format!("{what}: roles are not supported yet"));
        }
        if let Some(Value::Array(vfs)) = u.get_mut("virtual_folders") {
            for vf in vfs.iter_mut() {
                let Some(o) = vf.as_object_mut() else {
                    continue;
                };
                if o.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    let path = o.get("mapped_path").and_then(Value::as_str).unwrap_or("");
                    let n = names_by_path
                        .get(path)
                        .cloned()
                        .unwrap_or_else(|| folder_name_from_path(path));
                    o.insert("name".into(), Value::String(n));
                }
            }
        }
        let input: UserInput = parse_item(&what, &u)?;
        let valid = input.validate(None).map_err(|e| format!("{what}: {e}"))?;
        let mut write = valid
            .into_data()
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let data = &mut write.data;
        for (key, slot) in [
            ("used_quota_size", &mut data.used_quota_size),
            ("used_quota_files", &mut data.used_quota_files),
            ("last_quota_update", &mut data.last_quota_update),
            (
                "used_upload_data_transfer",
                &mut data.used_upload_data_transfer,
            ),
            (
                "used_download_data_transfer",
                &mut data.used_download_data_transfer,
            ),
            ("last_login", &mut data.last_login),
            ("first_download", &mut data.first_download),
            ("first_upload", &mut data.first_upload),
            ("last_password_change", &mut data.last_password_change),
            ("created_at", &mut data.created_at),
            ("updated_at", &mut data.updated_at),
        ] {
            if let Some(v) = int(&u, key) {
                *slot = v;
            }
        }
        plan.users.push(write);
    }

    for (i, k) in section(top, "api_keys")?.iter().enumerate() {
        let key_id = k
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let what = format!("api_keys[{i}] ({key_id:?})");
        if key_id.is_empty()
            || !key_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "{what}: id must be letters, digits, \"-\" or \"_\""
            ));
        }
        let hash = k.get("key").and_then(Value::as_str).unwrap_or("");
        if !crate::passwords::is_prehashed(hash) {
            return Err(format!("{what}: key must be the stored hash of the key"));
        }
        crate::passwords::validate_prehashed(hash).map_err(|e| format!("{what}: {e}"))?;
        let input: ApiKeyInput = parse_item(&what, k)?;
        let mut key = input.validate(None).map_err(|e| format!("{what}: {e}"))?;
        key.data.key_id = key_id;
        key.data.api_key = hash.to_string();
        for (name, slot) in [
            ("created_at", &mut key.data.created_at),
            ("updated_at", &mut key.data.updated_at),
            ("last_use_at", &mut key.data.last_use_at),
        ] {
            if let Some(v) = int(k, name) {
                *slot = v;
            }
        }
        plan.api_keys.push(key);
    }
    Ok(Prepared { plan, notes })
}

/// Checks an `output-file` name: a plain file name, written inside the
/// backups directory.
pub fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("missing output-file: give a file name (written to the backups directory) or output-data=1".into());
    }
    if name.starts_with('.') || name.contains(['/', '\\', '\0']) || name.len() > 255 {
        return Err(format!(
            "invalid output-file {name:?}: give a plain file name, it is written to the backups directory"
        ));
    }
    Ok(())
}

/// Writes a backup file (mode 0600: it holds password hashes) atomically:
/// a temporary file renamed over the target.
pub fn write_file(
    dir: &std::path::Path,
    name: &str,
    text: &[u8],
) -> Result<std::path::PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the backups directory {}: {e}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", crate::random_token(4)));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })?;
    Ok(path)
}

/// Reads a backup file and writes it: added to what is stored, or (for the
/// memory provider's reload) replacing it.
pub async fn load_file(
    store: &crate::store::Store,
    path: &std::path::Path,
    replace: bool,
) -> Result<crate::store::RestoreReport, String> {
    let text = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    let prepared = prepare(&doc)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let result = if replace {
        store.replace_all(prepared.plan).await
    } else {
        store.restore(prepared.plan, false).await
    };
    result.map_err(|e| format!("{}: {e}", path.display()))
}

/// Why a restore did not happen.
#[derive(Debug)]
pub enum RestoreError {
    /// The backup is malformed or holds something Ferry cannot take.
    Invalid(String),
    Store(crate::store::StoreError),
}

/// What a restore did.
pub struct Outcome {
    pub report: crate::store::RestoreReport,
    pub notes: Vec<String>,
}

/// Restores a backup into a running control plane: validate everything,
/// write in one transaction, then disconnect replaced users (mode 2) and
/// start the quota scans asked for.
pub async fn restore(
    state: &crate::AppState,
    doc: &Value,
    mode: Mode,
    scan: ScanQuota,
) -> Result<Outcome, RestoreError> {
    let prepared = prepare(doc).await.map_err(RestoreError::Invalid)?;
    let limits: HashMap<String, bool> = prepared
        .plan
        .users
        .iter()
        .map(|w| {
            (
                w.data.username.clone(),
                w.data.quota_size > 0 || w.data.quota_files > 0,
            )
        })
        .collect();
    let mut notes = prepared.notes;
    let report = state
        .store
        .restore(prepared.plan, mode == Mode::AddOnly)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Invalid(m) => RestoreError::Invalid(m),
            other => RestoreError::Store(other),
        })?;
    if mode == Mode::AddUpdateDisconnect {
        for u in &report.updated_users {
            state.fleet.disconnect_user(u);
        }
    }
    for u in &report.restored_users {
        let wanted = match scan {
            ScanQuota::No => false,
            ScanQuota::All => true,
            ScanQuota::WithLimits => limits.get(u).copied().unwrap_or(false),
        };
        if wanted && let Err(e) = crate::quota::start_scan(state, u.clone(), String::new()).await {
            let why = match e {
                crate::quota::ScanError::Running => "a scan is running already".to_string(),
                crate::quota::ScanError::NoEdge => {
                    "no edge is attached to walk the storage".to_string()
                }
                crate::quota::ScanError::Storage(e) => e,
                crate::quota::ScanError::Store(e) => e.to_string(),
            };
            notes.push(format!("user {u:?}: quota scan not started: {why}"));
        }
    }
    Ok(Outcome { report, notes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_from_paths() {
        assert_eq!(folder_name_from_path("/srv/data"), "srv_data");
        assert_eq!(folder_name_from_path("/"), "root");
        assert_eq!(folder_name_from_path("/a b/c:d"), "a b_c_d");
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::parse(None).unwrap(), Mode::AddAndUpdate);
        assert_eq!(Mode::parse(Some("1")).unwrap(), Mode::AddOnly);
        assert!(Mode::parse(Some("3")).is_err());
        assert_eq!(ScanQuota::parse(Some("2")).unwrap(), ScanQuota::WithLimits);
        assert!(ScanQuota::parse(Some("x")).is_err());
    }

    /// Cloud secrets Ferry cannot open (SFTPGo 1.x's `$aes$` strings, a v2
    /// backup's KMS-sealed secrets) refuse the object, naming it, rather
    /// than being stored unusable; plain ones are restored.
    #[tokio::test]
    async fn cloud_secrets_that_cannot_be_opened_refuse_the_import() {
        let user = |fs: Value| {
            json!({"users": [{"username": "s3u", "password": "p", "home_dir": "/srv/s3u",
                              "permissions": {"/": ["*"]}, "filesystem": fs}]})
        };
        let s3 = |secret: Value| {
            json!({"provider": 1, "s3config": {"bucket": "b", "region": "r",
                                               "access_key": "AK", "access_secret": secret}})
        };
        let e = prepare(&user(s3(json!("$aes$6c4f2b"))))
            .await
            .err()
            .unwrap();
        assert!(
            e.starts_with("users[0] (\"s3u\"): filesystem.s3config.access_secret is a value SFTPGo 1.x encrypted"),
            "{e}"
        );
        let sealed_by_sftpgo = json!({"status": "AES-256-GCM", "payload": "a1b2c3",
                                      "key": "d4e5f6", "additional_data": "s3u", "mode": 0});
        let e = prepare(&user(s3(sealed_by_sftpgo))).await.err().unwrap();
        assert!(
            e.contains(
                "filesystem.s3config.access_secret is encrypted by another key management service"
            ),
            "{e}"
        );
        let folder = json!({"folders": [{"name": "az", "filesystem": {"provider": 3,
            "azblobconfig": {"container": "c", "account_name": "a",
                             "account_key": {"status": "Secretbox", "payload": "x"}}}}]});
        let e = prepare(&folder).await.err().unwrap();
        assert!(
            e.starts_with("folders[0] (\"az\"): filesystem.azblobconfig.account_key is encrypted"),
            "{e}"
        );
        let ok = prepare(&user(s3(json!({"status": "Plain", "payload": "SK"}))))
            .await
            .unwrap();
        let stored: Value = serde_json::from_str(&ok.plan.users[0].data.filesystem).unwrap();
        assert_eq!(stored["s3config"]["bucket"], "b");
    }

    #[tokio::test]
    async fn unsupported_sections_and_bad_objects_are_refused() {
        let err = |v: Value| async move { prepare(&v).await.err().unwrap() };
        assert!(
            err(json!({"users": [], "shares": [{"id": "s"}]}))
                .await
                .contains("shares")
        );
        assert!(err(json!({"version": 99})).await.contains("version"));
        let e = err(json!({"users": [{"username": "a", "password": "p"}]})).await;
        assert!(e.contains("users[0]") && e.contains("home_dir"), "{e}");
        let e = err(json!({"admins": [{"username": "a", "password": "p", "permissions": ["manage_system"]}]})).await;
        assert!(e.contains("retired"), "{e}");
    }
}
