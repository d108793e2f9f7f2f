//! Admins as the REST API speaks them (SFTPGo v2 field names): validation,
//! conversion to rows, and the permission names of §1.9.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{AdminData, AdminRow, now_ms};

/// Admin permissions (SFTPGo v2.7: the coarse ones fold into `*`).
pub const ADMIN_PERMISSIONS: &[&str] = &[
    "*",
    "add_users",
    "edit_users",
    "del_users",
    "view_users",
    "view_conns",
    "close_conns",
    "view_status",
    "manage_folders",
    "manage_groups",
    "quota_scans",
    "manage_defender",
    "view_defender",
    "view_events",
    "disable_mfa",
];

/// An admin as clients send it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AdminInput {
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._~-]{1,255}$")]
    pub username: String,
    #[serde(default = "one")]
    #[schema(minimum = 0, maximum = 1)]
    pub status: i64,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    #[schema(required, min_items = 1)]
    pub permissions: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filters: Option<Value>,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub additional_info: String,
}

fn one() -> i64 {
    1
}

/// An admin as the API returns it: never the password.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminView {
    pub id: i64,
    pub status: i64,
    pub username: String,
    pub permissions: Vec<String>,
    #[schema(value_type = Object)]
    pub filters: Value,
    pub email: String,
    pub description: String,
    pub additional_info: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login: i64,
}

impl AdminView {
    /// The view with secrets hidden.
    pub fn redacted(mut self) -> Self {
        crate::confidential::redact(&mut self.filters);
        self
    }
}

impl From<&AdminRow> for AdminView {
    fn from(row: &AdminRow) -> Self {
        let d = &row.data;
        AdminView {
            id: row.id,
            status: d.status,
            username: d.username.clone(),
            permissions: serde_json::from_str(&d.permissions).unwrap_or_default(),
            filters: serde_json::from_str(&d.filters).unwrap_or(Value::Object(Default::default())),
            email: d.email.clone(),
            description: d.description.clone(),
            additional_info: d.additional_info.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            last_login: d.last_login,
        }
    }
}

/// The admin's `filters.allow_list`, parsed (validated on input).
pub fn allow_list(filters: &Value) -> Result<Vec<ipnet::IpNet>, String> {
    let items = match filters.get("allow_list") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err("filters.allow_list must be a list of strings".into()),
    };
    items
        .iter()
        .map(|v| {
            let s = v
                .as_str()
                .ok_or("filters.allow_list must be a list of strings")?;
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("invalid address or CIDR {s:?} in filters.allow_list"))
        })
        .collect()
}

/// What a token's authority rests on: the admin's password hash, status,
/// permissions and allow list, as an HMAC under the token signing key (the
/// token can be read by whoever holds it). Tokens carry it; a request whose
/// admin no longer gives the same value — password, status, permissions or
/// allow list changed since the token was issued — is refused.
pub fn authority(key: &[u8], d: &AdminData) -> String {
    use hmac::{KeyInit, Mac};
    // Compared as meaning, not as stored text: a restore or an update that
    // writes the same values differently (`[]` for no allow list, another
    // order) keeps tokens valid.
    let filters: Value = serde_json::from_str(&d.filters).unwrap_or_default();
    let mut allow: Vec<String> = allow_list(&filters)
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    allow.sort();
    let mut perms: Vec<String> = serde_json::from_str(&d.permissions).unwrap_or_default();
    perms.sort();
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    for part in [
        "admin authority v1",
        &d.password,
        &d.status.to_string(),
        &perms.join(","),
        &allow.join(","),
    ] {
        mac.update(part.as_bytes());
        mac.update(&[0]);
    }
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// A validated admin; the password still to settle.
pub struct ValidAdmin {
    pub data: AdminData,
    pub password: crate::users::PasswordChange,
}

impl AdminInput {
    /// Validates against the stored admin on update (username fixed, missing
    /// password keeps the stored hash).
    pub fn validate(self, existing: Option<&AdminRow>) -> Result<ValidAdmin, String> {
        let username = crate::users::settle_username(
            self.username,
            existing.map(|r| r.data.username.as_str()),
        )?;
        crate::users::validate_status(self.status)?;
        if self.permissions.is_empty() {
            return Err("please grant at least one permission".into());
        }
        let mut perms: Vec<String> = Vec::new();
        for p in self.permissions {
            if !ADMIN_PERMISSIONS.contains(&p.as_str()) {
                return Err(format!(
                    "invalid permission {p:?} (valid: {})",
                    ADMIN_PERMISSIONS.join(", ")
                ));
            }
            if !perms.contains(&p) {
                perms.push(p);
            }
        }
        if perms.iter().any(|p| p == "*") {
            perms = vec!["*".into()];
        }
        let mut filters = match self.filters {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err("filters must be a JSON object".into()),
        };
        crate::confidential::prepare(
            &mut filters,
            existing
                .and_then(|r| serde_json::from_str::<Value>(&r.data.filters).ok())
                .as_ref(),
            "filters",
        )?;
        allow_list(&filters)?;
        match filters.get("allow_api_key_auth") {
            None | Some(Value::Null) | Some(Value::Bool(_)) => {}
            Some(_) => return Err("filters.allow_api_key_auth must be true or false".into()),
        }
        let password = crate::users::PasswordChange::from_input(self.password)?;
        if existing.is_none() && matches!(password, crate::users::PasswordChange::Keep) {
            return Err("password is mandatory".into());
        }
        let now = now_ms();
        let data = AdminData {
            username,
            status: self.status,
            password: existing
                .map(|r| r.data.password.clone())
                .unwrap_or_default(),
            permissions: serde_json::to_string(&perms).map_err(|e| e.to_string())?,
            filters: filters.to_string(),
            email: self.email,
            description: self.description,
            additional_info: self.additional_info,
            created_at: existing.map_or(now, |r| r.data.created_at),
            updated_at: now,
            last_login: existing.map_or(0, |r| r.data.last_login),
        };
        Ok(ValidAdmin { data, password })
    }
}

impl ValidAdmin {
    pub async fn into_data(self) -> Result<AdminData, String> {
        let mut data = self.data;
        if let Some(hash) = self.password.resolve().await? {
            data.password = hash;
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let v = |j: Value| {
            serde_json::from_value::<AdminInput>(j)
                .unwrap()
                .validate(None)
        };
        assert!(
            v(serde_json::json!({"username": "a", "password": "p", "permissions": ["view_users"]}))
                .is_ok()
        );
        let err = |j: Value| v(j).err().unwrap();
        assert!(
            err(serde_json::json!({"username": "a", "password": "p", "permissions": ["fly"]}))
                .contains("fly")
        );
        assert!(
            err(serde_json::json!({"username": "a", "password": "p", "permissions": []}))
                .contains("at least one")
        );
        assert!(
            err(serde_json::json!({"username": "a", "permissions": ["*"]})).contains("password")
        );
        assert!(
            err(
                serde_json::json!({"username": "a", "password": "p", "permissions": ["*"],
                                   "filters": {"allow_list": ["999.1.1.1"]}})
            )
            .contains("allow_list")
        );
    }
}
