//! Users as the REST API speaks them (SFTPGo v2 field names), their
//! validation, and their conversion to stored rows and to the session policy
//! an edge receives at login.

use std::collections::BTreeMap;

use ferry_proto::edge::v1::{FilePatterns, PermissionList, SessionPolicy, VirtualFolder};
use ferry_proto::permissions::PermissionMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{UserData, UserRow, now_ms};

/// A user as clients send it (POST/PUT). Server-maintained fields (id, used
/// quota, timestamps) may be present — GET-modify-PUT is the common flow —
/// and are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UserInput {
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._~-]{1,255}$")]
    pub username: String,
    #[serde(default = "default_status")]
    #[schema(minimum = 0, maximum = 1)]
    pub status: i64,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub public_keys: Vec<String>,
    #[serde(default)]
    #[schema(required, pattern = "^/")]
    pub home_dir: String,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub uid: i64,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 4294967295.0)]
    pub gid: i64,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub max_sessions: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub quota_size: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub quota_files: i64,
    #[serde(default)]
    #[schema(required)]
    pub permissions: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub upload_bandwidth: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub download_bandwidth: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub upload_data_transfer: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub download_data_transfer: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub total_data_transfer: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub expiration_date: i64,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filters: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filesystem: Option<Value>,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub additional_info: String,
    #[serde(default)]
    pub virtual_folders: Vec<crate::folders::VirtualFolderInput>,
    /// `[{"name", "type"}]`: 1 primary, 2 secondary, 3 membership.
    #[serde(default)]
    pub groups: Vec<crate::groups::GroupRefInput>,
}

fn default_status() -> i64 {
    1
}

/// A user as the API returns it: never the password.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: i64,
    pub status: i64,
    pub username: String,
    pub expiration_date: i64,
    pub has_password: bool,
    pub public_keys: Vec<String>,
    pub home_dir: String,
    pub uid: i64,
    pub gid: i64,
    pub max_sessions: i64,
    pub quota_size: i64,
    pub quota_files: i64,
    pub permissions: BTreeMap<String, Vec<String>>,
    pub used_quota_size: i64,
    pub used_quota_files: i64,
    pub last_quota_update: i64,
    pub upload_bandwidth: i64,
    pub download_bandwidth: i64,
    pub upload_data_transfer: i64,
    pub download_data_transfer: i64,
    pub total_data_transfer: i64,
    pub used_upload_data_transfer: i64,
    pub used_download_data_transfer: i64,
    pub last_login: i64,
    pub first_download: i64,
    pub first_upload: i64,
    pub last_password_change: i64,
    #[schema(value_type = Object)]
    pub filters: Value,
    #[schema(value_type = Object)]
    pub filesystem: Value,
    pub email: String,
    pub description: String,
    pub additional_info: String,
    pub created_at: i64,
    pub updated_at: i64,
    #[schema(value_type = Vec<Object>)]
    pub virtual_folders: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    pub groups: Vec<Value>,
}

/// What the password column becomes after validation.
pub enum PasswordChange {
    /// Keep what is stored (update without a password).
    Keep,
    /// Store this hash (already hashed, or given pre-hashed).
    Set(String),
    /// A plain password that must be hashed before storing.
    HashPlain(String),
}

impl PasswordChange {
    /// What a password field of a REST body means: absent or empty keeps the
    /// stored one; a hash in a known format is stored as given (after a
    /// parse check); anything else is a plain password to hash.
    pub fn from_input(given: Option<String>) -> Result<Self, String> {
        Ok(match given.filter(|p| !p.is_empty()) {
            Some(p) if crate::passwords::is_prehashed(&p) => {
                crate::passwords::validate_prehashed(&p)?;
                PasswordChange::Set(p)
            }
            Some(p) => PasswordChange::HashPlain(p),
            None => PasswordChange::Keep,
        })
    }

    /// The hash to store, hashing a plain password off the async threads;
    /// None keeps the stored one.
    pub async fn resolve(self) -> Result<Option<String>, String> {
        match self {
            PasswordChange::Keep => Ok(None),
            PasswordChange::Set(hash) => Ok(Some(hash)),
            PasswordChange::HashPlain(plain) => crate::passwords::hash(plain).await.map(Some),
        }
    }
}

/// The username of an object being added (validated) or updated (must stay
/// the stored one).
pub fn settle_username(given: String, stored: Option<&str>) -> Result<String, String> {
    match stored {
        Some(stored) => {
            if !given.is_empty() && given != stored {
                return Err("the username cannot be changed".into());
            }
            Ok(stored.to_string())
        }
        None if given.is_empty() => Err("username is mandatory".into()),
        None => match username_rule_broken(&given) {
            Some(rule) => Err(format!("username {given:?} is not valid: {rule}")),
            None => Ok(given),
        },
    }
}

/// `status`: 1 active, 0 disabled.
pub fn validate_status(status: i64) -> Result<(), String> {
    if (0..=1).contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "invalid status {status}: use 1 (active) or 0 (disabled)"
        ))
    }
}

/// A validated user, ready to store once the password is settled.
pub struct ValidUser {
    pub data: UserData,
    pub password: PasswordChange,
    pub mappings: Vec<crate::store::NewMapping>,
    pub groups: Vec<crate::store::GroupRef>,
}

pub fn is_valid_username(name: &str) -> bool {
    username_rule_broken(name).is_none()
}

/// The naming rule `name` breaks, if any. Names become path components
/// (`users_base_dir/<name>`, `%username%` in group homes), so `.`, `..` and
/// a leading `~` (a home directory to shells and rsync) are refused.
pub fn username_rule_broken(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 255 {
        Some("1 to 255 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
    {
        Some("only letters, digits and \"-_.~\" are allowed")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not allowed (they name directories)")
    } else if name.starts_with('~') {
        Some("a name cannot start with \"~\" (a home directory to shells)")
    } else {
        None
    }
}

/// Parses one authorized_keys line, returning it normalised.
pub fn parse_public_key(line: &str) -> Result<russh::keys::PublicKey, String> {
    russh::keys::PublicKey::from_openssh(line.trim())
        .map_err(|e| format!("could not parse public key {:?}: {e}", abbreviate(line)))
}

fn abbreviate(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

static USERS_BASE_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Sets `data_provider.users_base_dir` for this process (the first call
/// wins); empty leaves `home_dir` mandatory.
pub fn install_users_base_dir(dir: &str) -> Result<(), String> {
    if dir.is_empty() {
        return Ok(());
    }
    let path = std::path::PathBuf::from(dir);
    if !path.is_absolute() {
        return Err(format!(
            "data_provider.users_base_dir {dir:?} must be an absolute path"
        ));
    }
    let _ = USERS_BASE_DIR.set(path);
    Ok(())
}

impl UserInput {
    /// Validates the input. `existing` is the stored user on update: the
    /// username cannot change, a missing password keeps the stored hash, and
    /// server-maintained fields carry over.
    pub fn validate(self, existing: Option<&UserRow>) -> Result<ValidUser, String> {
        let username = settle_username(self.username, existing.map(|r| r.data.username.as_str()))?;
        validate_status(self.status)?;
        let mut home_dir = self.home_dir;
        if home_dir.is_empty()
            && let Some(base) = USERS_BASE_DIR.get()
        {
            home_dir = base.join(&username).to_string_lossy().into_owned();
        }
        if home_dir.is_empty() {
            return Err("home_dir is mandatory (or set data_provider.users_base_dir)".into());
        }
        if !std::path::Path::new(&home_dir).is_absolute() {
            return Err(format!("home_dir {home_dir:?} must be an absolute path"));
        }
        crate::server_paths::check_inside("home_dir", &home_dir)?;
        for (name, v) in [
            ("uid", self.uid),
            ("gid", self.gid),
            ("max_sessions", self.max_sessions),
            ("quota_size", self.quota_size),
            ("quota_files", self.quota_files),
            ("upload_bandwidth", self.upload_bandwidth),
            ("download_bandwidth", self.download_bandwidth),
            ("upload_data_transfer", self.upload_data_transfer),
            ("download_data_transfer", self.download_data_transfer),
            ("total_data_transfer", self.total_data_transfer),
            ("expiration_date", self.expiration_date),
        ] {
            if v < 0 {
                return Err(format!("{name} must not be negative, got {v}"));
            }
        }
        if self.uid > i64::from(u32::MAX) || self.gid > i64::from(u32::MAX) {
            return Err("uid and gid must fit in 32 bits".into());
        }
        if self.max_sessions > i64::from(i32::MAX) {
            return Err("max_sessions is too large".into());
        }
        let permissions = PermissionMap::validate(&self.permissions).map_err(|e| e.to_string())?;
        let mut keys = Vec::with_capacity(self.public_keys.len());
        for line in &self.public_keys {
            let key = parse_public_key(line)?;
            keys.push(key.to_openssh().map_err(|e| e.to_string())?);
        }
        let mut filters = match self.filters {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err("filters must be a JSON object".into()),
        };
        let stored = |text: &str| serde_json::from_str::<Value>(text).ok();
        crate::confidential::prepare(
            &mut filters,
            existing.and_then(|r| stored(&r.data.filters)).as_ref(),
            "filters",
        )?;
        crate::filters::LoginFilters::parse(&filters)?;
        crate::filters::SessionFilters::parse(&filters)?;
        let mut filesystem = crate::storage::normalize(self.filesystem)?;
        crate::confidential::prepare(
            &mut filesystem,
            existing.and_then(|r| stored(&r.data.filesystem)).as_ref(),
            "filesystem",
        )?;
        // Checks the values, and that every secret opens for the edge.
        crate::storage::storage_of(&filesystem)?;
        let mappings = crate::folders::validate_mappings(self.virtual_folders)?;
        let groups = crate::groups::validate_refs(self.groups)?;
        let password = PasswordChange::from_input(self.password)?;
        let has_stored_password = existing
            .and_then(|r| r.data.password.as_deref())
            .is_some_and(|p| !p.is_empty());
        if matches!(password, PasswordChange::Keep) && !has_stored_password && keys.is_empty() {
            return Err("please set a password or at least one public key".into());
        }
        let now = now_ms();
        let carried = existing.map(|r| r.data.clone());
        let data = UserData {
            username,
            status: self.status,
            password: carried.as_ref().and_then(|c| c.password.clone()),
            public_keys: serde_json::to_string(&keys).map_err(|e| e.to_string())?,
            home_dir,
            uid: self.uid,
            gid: self.gid,
            max_sessions: self.max_sessions,
            quota_size: self.quota_size,
            quota_files: self.quota_files,
            permissions: serde_json::to_string(permissions.as_map()).map_err(|e| e.to_string())?,
            used_quota_size: carried.as_ref().map_or(0, |c| c.used_quota_size),
            used_quota_files: carried.as_ref().map_or(0, |c| c.used_quota_files),
            last_quota_update: carried.as_ref().map_or(0, |c| c.last_quota_update),
            upload_bandwidth: self.upload_bandwidth,
            download_bandwidth: self.download_bandwidth,
            upload_data_transfer: self.upload_data_transfer,
            download_data_transfer: self.download_data_transfer,
            total_data_transfer: self.total_data_transfer,
            used_upload_data_transfer: carried.as_ref().map_or(0, |c| c.used_upload_data_transfer),
            used_download_data_transfer: carried
                .as_ref()
                .map_or(0, |c| c.used_download_data_transfer),
            expiration_date: self.expiration_date,
            last_login: carried.as_ref().map_or(0, |c| c.last_login),
            first_download: carried.as_ref().map_or(0, |c| c.first_download),
            first_upload: carried.as_ref().map_or(0, |c| c.first_upload),
            last_password_change: carried.as_ref().map_or(0, |c| c.last_password_change),
            filters: filters.to_string(),
            filesystem: filesystem.to_string(),
            email: self.email,
            description: self.description,
            additional_info: self.additional_info,
            created_at: carried.as_ref().map_or(now, |c| c.created_at),
            updated_at: now,
        };
        Ok(ValidUser {
            data,
            password,
            mappings,
            groups,
        })
    }
}

impl ValidUser {
    /// Settles the password (hashing off the async threads) into the row.
    pub async fn into_data(self) -> Result<crate::store::UserWrite, String> {
        let mut data = self.data;
        if let Some(hash) = self.password.resolve().await? {
            data.password = Some(hash);
            data.last_password_change = data.updated_at;
        }
        Ok(crate::store::UserWrite {
            data,
            mappings: self.mappings,
            groups: self.groups,
        })
    }
}

fn json_or<T: serde::de::DeserializeOwned>(text: &str, fallback: T) -> T {
    serde_json::from_str(text).unwrap_or(fallback)
}

impl From<&UserRow> for UserView {
    fn from(row: &UserRow) -> Self {
        let d = &row.data;
        UserView {
            id: row.id,
            status: d.status,
            username: d.username.clone(),
            expiration_date: d.expiration_date,
            has_password: d.password.as_deref().is_some_and(|p| !p.is_empty()),
            public_keys: json_or(&d.public_keys, Vec::new()),
            home_dir: d.home_dir.clone(),
            uid: d.uid,
            gid: d.gid,
            max_sessions: d.max_sessions,
            quota_size: d.quota_size,
            quota_files: d.quota_files,
            permissions: json_or(&d.permissions, BTreeMap::new()),
            used_quota_size: d.used_quota_size,
            used_quota_files: d.used_quota_files,
            last_quota_update: d.last_quota_update,
            upload_bandwidth: d.upload_bandwidth,
            download_bandwidth: d.download_bandwidth,
            upload_data_transfer: d.upload_data_transfer,
            download_data_transfer: d.download_data_transfer,
            total_data_transfer: d.total_data_transfer,
            used_upload_data_transfer: d.used_upload_data_transfer,
            used_download_data_transfer: d.used_download_data_transfer,
            last_login: d.last_login,
            first_download: d.first_download,
            first_upload: d.first_upload,
            last_password_change: d.last_password_change,
            filters: json_or(&d.filters, Value::Object(Default::default())),
            filesystem: json_or(&d.filesystem, serde_json::json!({"provider": 0})),
            email: d.email.clone(),
            description: d.description.clone(),
            additional_info: d.additional_info.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            virtual_folders: Vec::new(),
            groups: Vec::new(),
        }
    }
}

impl UserView {
    /// The view with the user's folder mappings filled in.
    pub fn with_folders(
        row: &UserRow,
        folders: &[(crate::store::FolderRow, crate::store::Mapping)],
    ) -> Self {
        let mut v = Self::from(row);
        v.virtual_folders = folders
            .iter()
            .map(|(f, m)| crate::folders::mapping_view(f, m))
            .collect();
        v
    }

    /// The view with secrets hidden (what replies show).
    pub fn redacted(mut self) -> Self {
        crate::confidential::redact(&mut self.filters);
        crate::confidential::redact(&mut self.filesystem);
        for f in &mut self.virtual_folders {
            crate::confidential::redact(f);
        }
        self
    }

    /// The view with secrets sealed by Ferry shown in the clear
    /// (`confidential_data=1`).
    pub fn revealed(mut self) -> Self {
        crate::confidential::reveal(&mut self.filters);
        crate::confidential::reveal(&mut self.filesystem);
        for f in &mut self.virtual_folders {
            crate::confidential::reveal(f);
        }
        self
    }

    /// The view with the user's own folders and its groups.
    pub fn full(
        row: &UserRow,
        folders: &[(crate::store::FolderRow, crate::store::Mapping)],
        groups: &[crate::store::GroupRef],
    ) -> Self {
        let mut v = Self::with_folders(row, folders);
        v.groups = crate::groups::refs_view(groups);
        v
    }
}

/// A user's folder mappings as edges get them, with the object storage of
/// folders that have one (secrets opened).
pub fn virtual_folders(
    folders: &[(crate::store::FolderRow, crate::store::Mapping)],
) -> Result<Vec<VirtualFolder>, String> {
    folders
        .iter()
        .map(|(f, m)| {
            let storage = crate::storage::stored_storage(&f.data.filesystem)
                .map_err(|e| format!("folder {:?}: {e}", f.data.name))?;
            Ok(VirtualFolder {
                name: f.data.name.clone(),
                virtual_path: m.virtual_path.clone(),
                mapped_path: f.data.path.clone(),
                quota_size: m.quota_size,
                quota_files: m.quota_files,
                storage,
            })
        })
        .collect()
}

/// The policy an edge enforces for one session of this user (groups already
/// merged: a primary group's object storage is in `row`). Fails when a
/// storage cannot be used (a secret that no longer opens).
pub fn session_policy(
    row: &UserRow,
    folders: &[(crate::store::FolderRow, crate::store::Mapping)],
    client_ip: Option<std::net::IpAddr>,
) -> Result<SessionPolicy, String> {
    let d = &row.data;
    let storage = crate::storage::stored_storage(&d.filesystem)?;
    let virtual_folders = virtual_folders(folders)?;
    let perms: BTreeMap<String, Vec<String>> = json_or(&d.permissions, BTreeMap::new());
    // Validated when stored; a row that no longer parses gets no extras.
    let filters = serde_json::from_str::<Value>(&d.filters)
        .ok()
        .and_then(|v| crate::filters::SessionFilters::parse(&v).ok())
        .unwrap_or_default();
    let (upload_bandwidth, download_bandwidth) =
        filters.bandwidth_for(client_ip, d.upload_bandwidth, d.download_bandwidth);
    Ok(SessionPolicy {
        username: d.username.clone(),
        home_dir: d.home_dir.clone(),
        uid: u32::try_from(d.uid).unwrap_or(0),
        gid: u32::try_from(d.gid).unwrap_or(0),
        permissions: perms
            .into_iter()
            .map(|(k, v)| (k, PermissionList { permissions: v }))
            .collect(),
        quota_size: d.quota_size,
        quota_files: d.quota_files,
        upload_bandwidth,
        download_bandwidth,
        max_sessions: i32::try_from(d.max_sessions).unwrap_or(i32::MAX),
        file_patterns: filters
            .file_patterns
            .into_iter()
            .map(|p| FilePatterns {
                path: p.path,
                allowed_patterns: p.allowed_patterns,
                denied_patterns: p.denied_patterns,
                deny_policy: p.deny_policy,
            })
            .collect(),
        max_upload_file_size: filters.max_upload_file_size,
        virtual_folders,
        start_directory: filters.start_directory,
        storage,
    })
}

/// The user's login filters (validated when stored; a row that no longer
/// parses denies every login rather than allowing one).
pub fn login_filters(row: &UserRow) -> Result<crate::filters::LoginFilters, String> {
    let v: Value = serde_json::from_str(&row.data.filters).map_err(|e| e.to_string())?;
    crate::filters::LoginFilters::parse(&v)
}

/// The user's public keys, parsed.
pub fn public_keys(row: &UserRow) -> Vec<russh::keys::PublicKey> {
    json_or::<Vec<String>>(&row.data.public_keys, Vec::new())
        .iter()
        .filter_map(|l| russh::keys::PublicKey::from_openssh(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(v: Value) -> UserInput {
        serde_json::from_value(v).unwrap()
    }

    fn check_err(v: Value, needle: &str) {
        match input(v).validate(None) {
            Ok(_) => panic!("expected an error containing {needle:?}"),
            Err(e) => assert!(e.contains(needle), "{e:?} does not contain {needle:?}"),
        }
    }

    #[test]
    fn validation_messages() {
        let base = || serde_json::json!({"username":"u1","password":"p","home_dir":"/srv/u1","permissions":{"/":["*"]}});
        assert!(input(base()).validate(None).is_ok());
        let mut v = base();
        v["username"] = "bad name".into();
        check_err(v, "is not valid");
        for (name, rule) in [
            (".", "\"..\" are not allowed"),
            ("..", "\"..\" are not allowed"),
            ("~root", "cannot start with \"~\""),
        ] {
            let mut v = base();
            v["username"] = name.into();
            check_err(v, rule);
        }
        for fine in ["a.b", "x~", "..a", "a..", "._"] {
            assert!(is_valid_username(fine), "{fine}");
        }
        let mut v = base();
        v["home_dir"] = "rel/dir".into();
        check_err(v, "absolute");
        let mut v = base();
        v["permissions"] = serde_json::json!({"/sub":["list"]});
        check_err(v, "root directory");
        let mut v = base();
        v["permissions"] = serde_json::json!({"/":["teleport"]});
        check_err(v, "invalid permission");
        let mut v = base();
        v["password"] = Value::Null;
        check_err(v, "password or at least one public key");
        let mut v = base();
        v["public_keys"] = serde_json::json!(["ssh-ed25519 notbase64"]);
        check_err(v, "could not parse public key");
        let mut v = base();
        v["quota_size"] = (-1).into();
        check_err(v, "quota_size must not be negative");
        let mut v = base();
        v["filesystem"] = serde_json::json!({"provider": 1});
        check_err(v, "filesystem.s3config.bucket is required");
        let mut v = base();
        v["filesystem"] = serde_json::json!({"provider": 4});
        check_err(
            v,
            "filesystem.provider 4 (local encrypted) is not supported",
        );
    }
}

#[cfg(test)]
mod storage_tests {
    use super::*;
    use serde_json::json;

    fn validate(body: Value, existing: Option<&UserRow>) -> Result<UserRow, String> {
        let valid = serde_json::from_value::<UserInput>(body)
            .unwrap()
            .validate(existing)?;
        Ok(UserRow {
            id: 1,
            data: valid.data,
        })
    }

    /// An S3 user: stored sealed, shown redacted, and a GET-modify-PUT that
    /// sends the redacted secret back keeps it: the edge still gets it.
    #[test]
    fn a_redacted_secret_sent_back_keeps_the_stored_one() {
        crate::confidential::install_test_keys();
        let body = json!({"username": "s3u", "password": "pw", "home_dir": "/srv/s3u",
            "permissions": {"/": ["*"]},
            "filesystem": {"provider": 1, "s3config": {"bucket": "b", "region": "r",
                "access_key": "AK", "access_secret": {"status": "Plain", "payload": "SK-1"},
                "upload_part_size": 10}}});
        let row = validate(body, None).unwrap();
        assert!(!row.data.filesystem.contains("SK-1"), "sealed when stored");
        let view = serde_json::to_value(UserView::from(&row).redacted()).unwrap();
        assert_eq!(
            view["filesystem"]["s3config"]["access_secret"],
            json!({"status": "Redacted"})
        );
        let mut back = view.clone();
        back["filesystem"]["s3config"]["bucket"] = json!("b2");
        // (No hash is computed here, so the row holds no password to keep.)
        back["password"] = json!("pw");
        let updated = validate(back, Some(&row)).unwrap();
        let policy = session_policy(&updated, &[], None).unwrap();
        let storage = policy.storage.unwrap();
        assert_eq!(
            (storage.bucket.as_str(), storage.secret.as_str()),
            ("b2", "SK-1")
        );
        assert_eq!(storage.upload_part_size, 10 * ferry_proto::storage::MB);
        // A redacted secret where none is stored is refused.
        let mut fresh = view;
        fresh["username"] = json!("other");
        let err = validate(fresh, None).unwrap_err();
        assert!(err.contains("redacted"), "{err}");
        // A local user's policy carries no storage.
        let local = validate(
            json!({"username": "loc", "password": "pw", "home_dir": "/srv/loc",
                   "permissions": {"/": ["*"]}}),
            None,
        )
        .unwrap();
        assert_eq!(session_policy(&local, &[], None).unwrap().storage, None);
    }
}
