//! Groups (SFTPGo v2.3+): settings and folders users inherit. A user has at
//! most one primary group, any number of secondary ones, and membership-only
//! groups that bring nothing. The merge happens in the control plane when a
//! login builds the session policy and when quota limits are looked up
//! ([`effective`]), so every edge enforces the merged user:
//!
//! - primary only: `home_dir` (replaces the user's; `%username%` is replaced),
//!   a non-local `filesystem` (replaces the user's; `%username%` is replaced
//!   in its key prefix), numeric limits where the user has 0,
//!   `max_upload_file_size` where unset;
//! - primary and secondary: virtual folders on virtual paths the user does
//!   not use, permissions for paths the user does not define (`/` only from
//!   the primary), file patterns, bandwidth limits per source, allowed and
//!   denied addresses, denied login methods and protocols appended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::folders::VirtualFolderInput;
use crate::store::{
    FolderRow, GroupData, GroupRef, GroupRow, Mapping, MemberGroup, Store, StoreError, UserRow,
    now_ms,
};

pub const PRIMARY: i64 = 1;
pub const SECONDARY: i64 = 2;
pub const MEMBERSHIP: i64 = 3;

/// Numeric settings a primary group gives users that have 0.
const LIMITS: &[&str] = &[
    "max_sessions",
    "quota_size",
    "quota_files",
    "upload_bandwidth",
    "download_bandwidth",
    "upload_data_transfer",
    "download_data_transfer",
    "total_data_transfer",
];

/// Keys `user_settings` may hold.
const SETTINGS: &[&str] = &[
    "home_dir",
    "max_sessions",
    "quota_size",
    "quota_files",
    "permissions",
    "upload_bandwidth",
    "download_bandwidth",
    "upload_data_transfer",
    "download_data_transfer",
    "total_data_transfer",
    "expires_in",
    "filters",
    "filesystem",
];

/// Filter lists every inheriting group appends to.
const APPENDED_FILTERS: &[&str] = &[
    "allowed_ip",
    "denied_ip",
    "denied_login_methods",
    "denied_protocols",
    "file_patterns",
    "bandwidth_limits",
];

/// A group as clients send it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct GroupInput {
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._~ -]{1,255}$")]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub user_settings: Option<Value>,
    #[serde(default)]
    pub virtual_folders: Vec<VirtualFolderInput>,
}

/// A group as the API returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupView {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub created_at: i64,
    pub updated_at: i64,
    #[schema(value_type = Object)]
    pub user_settings: Value,
    #[schema(value_type = Vec<Object>)]
    pub virtual_folders: Vec<Value>,
    pub users: Vec<String>,
}

impl GroupView {
    /// The view with secrets hidden.
    pub fn redacted(mut self) -> Self {
        crate::confidential::redact(&mut self.user_settings);
        for f in &mut self.virtual_folders {
            crate::confidential::redact(f);
        }
        self
    }

    pub fn new(row: &GroupRow, folders: &[(FolderRow, Mapping)], users: Vec<String>) -> Self {
        GroupView {
            id: row.id,
            name: row.data.name.clone(),
            description: row.data.description.clone(),
            created_at: row.data.created_at,
            updated_at: row.data.updated_at,
            user_settings: serde_json::from_str(&row.data.user_settings)
                .unwrap_or(Value::Object(Map::new())),
            virtual_folders: folders
                .iter()
                .map(|(f, m)| crate::folders::mapping_view(f, m))
                .collect(),
            users,
        }
    }
}

/// A user's reference to a group as clients send it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct GroupRefInput {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub group_type: i64,
}

/// Validates a user's `groups`: known types, one primary at most, no
/// group twice.
pub fn validate_refs(refs: Vec<GroupRefInput>) -> Result<Vec<GroupRef>, String> {
    let mut out: Vec<GroupRef> = Vec::new();
    for g in refs {
        crate::folders::validate_name(&g.name).map_err(|e| format!("groups: {e}"))?;
        if !(PRIMARY..=MEMBERSHIP).contains(&g.group_type) {
            return Err(format!(
                "groups: invalid type {} for {:?}: use 1 (primary), 2 (secondary) or 3 (membership)",
                g.group_type, g.name
            ));
        }
        if out.iter().any(|o| o.name == g.name) {
            return Err(format!("groups: {:?} is listed twice", g.name));
        }
        if g.group_type == PRIMARY && out.iter().any(|o| o.group_type == PRIMARY) {
            return Err("groups: a user can have only one primary group".into());
        }
        out.push(GroupRef {
            name: g.name,
            group_type: g.group_type,
        });
    }
    out.sort_by(|a, b| (a.group_type, &a.name).cmp(&(b.group_type, &b.name)));
    Ok(out)
}

/// The JSON view of a user's memberships.
pub fn refs_view(refs: &[GroupRef]) -> Vec<Value> {
    refs.iter()
        .map(|g| serde_json::json!({"name": g.name, "type": g.group_type}))
        .collect()
}

fn validate_settings(v: Option<Value>) -> Result<Map<String, Value>, String> {
    let mut obj = match v {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(o)) => o,
        Some(_) => return Err("user_settings must be a JSON object".into()),
    };
    for (k, v) in &obj {
        if !SETTINGS.contains(&k.as_str()) {
            return Err(format!(
                "user_settings.{k} is not a group setting (valid: {})",
                SETTINGS.join(", ")
            ));
        }
        if (LIMITS.contains(&k.as_str()) || k == "expires_in") && v.as_i64().is_none_or(|n| n < 0) {
            return Err(format!(
                "user_settings.{k} must be a number not below 0, got {v}"
            ));
        }
    }
    if let Some(home) = obj.get("home_dir") {
        let home = home
            .as_str()
            .ok_or("user_settings.home_dir must be a string")?;
        if !home.is_empty() && !home.starts_with('/') {
            return Err(format!(
                "user_settings.home_dir {home:?} must be an absolute path (%username% is replaced)"
            ));
        }
        // The template as written; each member's home is checked again at
        // login, once the name is in.
        if !home.is_empty() {
            crate::server_paths::check_inside("user_settings.home_dir", home)?;
        }
    }
    if let Some(p) = obj.get("permissions") {
        let mut perms: BTreeMap<String, Vec<String>> = serde_json::from_value(p.clone())
            .map_err(|e| format!("user_settings.permissions: {e}"))?;
        // Groups need not define "/": check the rest as a user's map would be.
        perms
            .entry("/".into())
            .or_insert_with(|| vec!["list".into()]);
        ferry_proto::permissions::PermissionMap::validate(&perms)
            .map_err(|e| format!("user_settings.permissions: {e}"))?;
    }
    if let Some(f) = obj.get("filters") {
        if !f.is_object() {
            return Err("user_settings.filters must be a JSON object".into());
        }
        crate::filters::LoginFilters::parse(f)
            .map_err(|e| format!("user_settings.filters: {e}"))?;
        crate::filters::SessionFilters::parse(f)
            .map_err(|e| format!("user_settings.filters: {e}"))?;
    }
    if let Some(fs) = obj.get("filesystem") {
        let fs = crate::storage::normalize(Some(fs.clone()))
            .map_err(|e| format!("user_settings.{e}"))?;
        obj.insert("filesystem".into(), fs);
    }
    Ok(obj)
}

impl GroupInput {
    /// Validates a group to add (`existing` None) or to update (the name
    /// cannot change).
    pub fn validate(
        self,
        existing: Option<&GroupRow>,
    ) -> Result<(GroupData, Vec<Mapping>), String> {
        let name = match existing {
            Some(row) if !self.name.is_empty() && self.name != row.data.name => {
                return Err("the group name cannot be changed".into());
            }
            Some(row) => row.data.name.clone(),
            None => {
                crate::folders::validate_name(&self.name)
                    .map_err(|e| e.replace("folder name", "group name"))?;
                self.name
            }
        };
        let mut settings = Value::Object(validate_settings(self.user_settings)?);
        crate::confidential::prepare(
            &mut settings,
            existing
                .and_then(|r| serde_json::from_str::<Value>(&r.data.user_settings).ok())
                .as_ref(),
            "user_settings",
        )?;
        // Checks the values (`%username%` stays in the prefix until login),
        // and that every secret opens for the edge.
        if let Some(fs) = settings.get("filesystem") {
            crate::storage::storage_of(fs).map_err(|e| format!("user_settings.{e}"))?;
        }
        let mappings = crate::folders::validate_mappings(self.virtual_folders)?
            .into_iter()
            .map(|m| m.mapping)
            .collect();
        let now = now_ms();
        Ok((
            GroupData {
                name,
                description: self.description,
                user_settings: settings.to_string(),
                created_at: existing.map_or(now, |r| r.data.created_at),
                updated_at: now,
            },
            mappings,
        ))
    }
}

fn append_unique(target: &mut Vec<Value>, extra: &[Value]) {
    for v in extra {
        if !target.contains(v) {
            target.push(v.clone());
        }
    }
}

/// Applies the user's groups to the user's row and folder list in memory.
pub fn merge(row: &mut UserRow, folders: &mut Vec<(FolderRow, Mapping)>, groups: &[MemberGroup]) {
    let d = &mut row.data;
    let mut perms: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&d.permissions).unwrap_or_default();
    let mut filters: Map<String, Value> = serde_json::from_str(&d.filters).unwrap_or_default();
    for g in groups {
        let primary = match g.group_type {
            PRIMARY => true,
            SECONDARY => false,
            _ => continue,
        };
        let settings: Map<String, Value> =
            serde_json::from_str(&g.group.data.user_settings).unwrap_or_default();
        if primary {
            if let Some(home) = settings.get("home_dir").and_then(Value::as_str)
                && !home.is_empty()
            {
                d.home_dir = home.replace("%username%", &d.username);
            }
            // A non-local filesystem replaces the user's (SFTPGo's rule).
            if let Some(fs) = settings.get("filesystem")
                && crate::storage::provider_of(fs) != 0
            {
                d.filesystem = crate::storage::for_member(fs, &d.username).to_string();
            }
            for key in LIMITS {
                let Some(v) = settings.get(*key).and_then(Value::as_i64) else {
                    continue;
                };
                let slot = match *key {
                    "max_sessions" => &mut d.max_sessions,
                    "quota_size" => &mut d.quota_size,
                    "quota_files" => &mut d.quota_files,
                    "upload_bandwidth" => &mut d.upload_bandwidth,
                    "download_bandwidth" => &mut d.download_bandwidth,
                    "upload_data_transfer" => &mut d.upload_data_transfer,
                    "download_data_transfer" => &mut d.download_data_transfer,
                    _ => &mut d.total_data_transfer,
                };
                if *slot == 0 {
                    *slot = v;
                }
            }
        }
        if let Some(Value::Object(gp)) = settings.get("permissions") {
            for (path, list) in gp {
                if path == "/" && !primary {
                    continue;
                }
                let clean = ferry_proto::vpath::clean("/", path);
                if !perms.contains_key(&clean)
                    && let Ok(list) = serde_json::from_value::<Vec<String>>(list.clone())
                {
                    perms.insert(clean, list);
                }
            }
        }
        if let Some(Value::Object(gf)) = settings.get("filters") {
            for key in APPENDED_FILTERS {
                if let Some(Value::Array(extra)) = gf.get(*key) {
                    let entry = filters
                        .entry(key.to_string())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(list) = entry {
                        append_unique(list, extra);
                    }
                }
            }
            if primary
                && filters
                    .get("max_upload_file_size")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    == 0
                && let Some(v) = gf.get("max_upload_file_size")
            {
                filters.insert("max_upload_file_size".into(), v.clone());
            }
            // start_directory: the primary group's, when the user has none.
            if primary
                && filters
                    .get("start_directory")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                && let Some(v) = gf.get("start_directory")
            {
                filters.insert("start_directory".into(), v.clone());
            }
        }
        for (f, m) in &g.folders {
            if !folders
                .iter()
                .any(|(_, um)| um.virtual_path == m.virtual_path)
            {
                folders.push((f.clone(), m.clone()));
            }
        }
    }
    folders.sort_by(|a, b| a.1.virtual_path.cmp(&b.1.virtual_path));
    d.permissions = serde_json::to_string(&perms).unwrap_or_else(|_| d.permissions.clone());
    d.filters = Value::Object(filters).to_string();
}

/// The user as logins and quota see it: groups merged, with its folders.
pub async fn effective(
    store: &Store,
    mut row: UserRow,
) -> Result<(UserRow, Vec<(FolderRow, Mapping)>), StoreError> {
    let mut folders = store.user_folders(row.id).await?;
    let groups = store.member_groups(row.id).await?;
    if !groups.is_empty() {
        merge(&mut row, &mut folders, &groups);
    }
    Ok((row, folders))
}

/// A new user whose primary group sets `expires_in` (days) and who has no
/// expiration of its own expires that many days from now.
pub async fn apply_expires_in(
    store: &Store,
    w: &mut crate::store::UserWrite,
) -> Result<(), StoreError> {
    if w.data.expiration_date != 0 {
        return Ok(());
    }
    let Some(primary) = w.groups.iter().find(|g| g.group_type == PRIMARY) else {
        return Ok(());
    };
    let group = match store.group(primary.name.clone()).await {
        Ok(g) => g,
        // Reported by the write itself.
        Err(StoreError::NotFound) => return Ok(()),
        Err(e) => return Err(e),
    };
    let settings: Value = serde_json::from_str(&group.data.user_settings).unwrap_or_default();
    if let Some(days) = settings.get("expires_in").and_then(Value::as_i64)
        && days > 0
    {
        w.data.expiration_date = now_ms() + days * 86_400_000;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserData;

    fn group(name: &str, settings: Value) -> GroupRow {
        GroupRow {
            id: 1,
            data: GroupData {
                name: name.into(),
                description: String::new(),
                user_settings: settings.to_string(),
                created_at: 0,
                updated_at: 0,
            },
        }
    }

    fn folder(name: &str, vp: &str) -> (FolderRow, Mapping) {
        (
            FolderRow {
                id: 1,
                data: crate::store::FolderData {
                    name: name.into(),
                    description: String::new(),
                    path: format!("/srv/{name}"),
                    used_quota_size: 0,
                    used_quota_files: 0,
                    last_quota_update: 0,
                    filesystem: "{}".into(),
                },
            },
            Mapping {
                folder: name.into(),
                virtual_path: vp.into(),
                quota_size: -1,
                quota_files: -1,
            },
        )
    }

    #[test]
    fn merge_rules() {
        let mut row = UserRow {
            id: 1,
            data: UserData {
                max_sessions: 2,
                permissions: r#"{"/":["list"],"/docs":["*"]}"#.into(),
                filters: r#"{"denied_ip":["10.0.0.1/32"]}"#.into(),
                filesystem: "{}".into(),
                ..UserData::new("ann", "/home/ann")
            },
        };
        let mut folders = vec![folder("mine", "/shared")];
        let groups = vec![
            MemberGroup {
                group: group(
                    "staff",
                    serde_json::json!({
                        "home_dir": "/data/%username%",
                        "max_sessions": 9, "quota_size": 1000,
                        "permissions": {"/": ["*"], "/docs": ["list"], "/pub": ["list", "download"]},
                        "filters": {"denied_ip": ["10.0.0.2/32"], "denied_protocols": ["SSH"],
                                    "start_directory": "/inbox"}
                    }),
                ),
                group_type: PRIMARY,
                folders: vec![folder("theirs", "/shared"), folder("team", "/team")],
            },
            MemberGroup {
                group: group(
                    "extra",
                    serde_json::json!({"home_dir": "/nope", "quota_files": 5,
                                       "permissions": {"/": ["*"], "/x": ["list"]},
                                       "filters": {"denied_ip": ["10.0.0.2/32", "10.0.0.3/32"],
                                                   "start_directory": "/not-from-a-secondary"}}),
                ),
                group_type: SECONDARY,
                folders: vec![folder("x", "/x")],
            },
            MemberGroup {
                group: group("club", serde_json::json!({"quota_files": 7})),
                group_type: MEMBERSHIP,
                folders: vec![folder("club", "/club")],
            },
        ];
        merge(&mut row, &mut folders, &groups);
        let d = &row.data;
        assert_eq!(d.home_dir, "/data/ann", "primary home with the placeholder");
        assert_eq!(d.max_sessions, 2, "the user's own limit wins");
        assert_eq!(d.quota_size, 1000, "0 takes the primary's");
        assert_eq!(
            d.quota_files, 0,
            "secondaries and memberships give no limits"
        );
        let perms: Value = serde_json::from_str(&d.permissions).unwrap();
        assert_eq!(
            perms,
            serde_json::json!({"/": ["list"], "/docs": ["*"], "/pub": ["list", "download"], "/x": ["list"]})
        );
        let filters: Value = serde_json::from_str(&d.filters).unwrap();
        assert_eq!(
            filters["denied_ip"],
            serde_json::json!(["10.0.0.1/32", "10.0.0.2/32", "10.0.0.3/32"])
        );
        assert_eq!(
            filters["start_directory"], "/inbox",
            "the primary's, the user had none"
        );
        assert_eq!(filters["denied_protocols"], serde_json::json!(["SSH"]));
        let mounted: Vec<(&str, &str)> = folders
            .iter()
            .map(|(f, m)| (f.data.name.as_str(), m.virtual_path.as_str()))
            .collect();
        assert_eq!(
            mounted,
            [("mine", "/shared"), ("team", "/team"), ("x", "/x")],
            "the user's own mount wins; memberships bring nothing"
        );
    }

    /// A primary group's object storage replaces the member's filesystem,
    /// `%username%` in its prefix; a secondary's, or a local one, does not.
    #[test]
    fn object_storage_is_inherited_from_the_primary_group() {
        crate::confidential::install_test_keys();
        let settings = |fs: Value| {
            let (data, _) = serde_json::from_value::<GroupInput>(
                serde_json::json!({"name": "g", "user_settings": {"filesystem": fs}}),
            )
            .unwrap()
            .validate(None)
            .unwrap();
            GroupRow { id: 1, data }
        };
        let s3 = settings(
            serde_json::json!({"provider": 1, "s3config": {"bucket": "shared",
            "region": "r", "key_prefix": "users/%username%", "access_key": "AK",
            "access_secret": {"status": "Plain", "payload": "SK"}}}),
        );
        assert!(
            !s3.data.user_settings.contains("\"SK\""),
            "sealed: {}",
            s3.data.user_settings
        );
        let azure = settings(serde_json::json!({"provider": 3, "azblobconfig": {
            "container": "c", "use_emulator": true}}));
        let member = |groups: Vec<MemberGroup>| {
            let mut row = UserRow {
                id: 1,
                data: UserData::new("ann", "/home/ann"),
            };
            merge(&mut row, &mut Vec::new(), &groups);
            crate::users::session_policy(&row, &[], None)
                .unwrap()
                .storage
        };
        let as_type = |group: &GroupRow, group_type| MemberGroup {
            group: group.clone(),
            group_type,
            folders: Vec::new(),
        };
        let got = member(vec![as_type(&s3, PRIMARY)]).unwrap();
        assert_eq!(
            (
                got.provider,
                got.bucket.as_str(),
                got.key_prefix.as_str(),
                got.secret.as_str()
            ),
            (1, "shared", "users/ann/", "SK")
        );
        assert_eq!(member(vec![as_type(&azure, SECONDARY)]), None);
        let local = settings(serde_json::json!({"provider": 0}));
        assert_eq!(member(vec![as_type(&local, PRIMARY)]), None);
        // Bad templates are refused naming the field.
        let err = serde_json::from_value::<GroupInput>(serde_json::json!({"name": "g",
            "user_settings": {"filesystem": {"provider": 3, "azblobconfig": {}}}}))
        .unwrap()
        .validate(None)
        .unwrap_err();
        assert!(
            err.starts_with("user_settings.filesystem.azblobconfig.container is required"),
            "{err}"
        );
    }

    #[test]
    fn validation() {
        let v = |j: Value| {
            serde_json::from_value::<GroupInput>(j)
                .unwrap()
                .validate(None)
                .err()
                .unwrap_or_default()
        };
        assert_eq!(
            v(serde_json::json!({"name": "g", "user_settings": {"quota_size": 5}})),
            ""
        );
        assert!(v(serde_json::json!({"name": ""})).contains("mandatory"));
        assert!(
            v(serde_json::json!({"name": "g", "user_settings": {"colour": 1}})).contains("colour")
        );
        assert!(
            v(serde_json::json!({"name": "g", "user_settings": {"quota_size": -1}}))
                .contains("quota_size")
        );
        assert!(
            v(serde_json::json!({"name": "g", "user_settings": {"home_dir": "rel"}}))
                .contains("absolute")
        );
        assert!(
            v(serde_json::json!({"name": "g", "user_settings": {"permissions": {"/a": ["fly"]}}}))
                .contains("fly")
        );
        let refs = |j: Value| validate_refs(serde_json::from_value(j).unwrap());
        assert!(
            refs(serde_json::json!([{"name": "a", "type": 1}, {"name": "b", "type": 1}])).is_err()
        );
        assert!(refs(serde_json::json!([{"name": "a", "type": 4}])).is_err());
        assert!(
            refs(serde_json::json!([{"name": "a", "type": 2}, {"name": "a", "type": 3}])).is_err()
        );
        assert_eq!(
            refs(serde_json::json!([{"name": "b", "type": 2}, {"name": "a", "type": 1}])).unwrap()
                [0]
            .name,
            "a",
            "primary first"
        );
    }
}
