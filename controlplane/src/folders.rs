//! Virtual folders as the REST API speaks them (SFTPGo v2: `name`,
//! `mapped_path`, `description`, quota counters, `users`) and the
//! `virtual_folders` of a user: folders mounted at virtual paths, with the
//! mapping's own quota (-1: counted in the user's quota).

use ferry_proto::vpath;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{FolderData, FolderRow, Mapping, NewMapping};

fn empty_object_filesystem() -> Value {
    crate::storage::local()
}

/// A folder as clients send it; counters and `users` may be present (GET-
/// modify-PUT) and are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct FolderInput {
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._~ -]{1,255}$")]
    pub name: String,
    #[serde(default)]
    #[schema(required, pattern = "^/")]
    pub mapped_path: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filesystem: Option<Value>,
}

/// A folder as the API returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FolderView {
    pub id: i64,
    pub name: String,
    pub mapped_path: String,
    pub description: String,
    pub used_quota_size: i64,
    pub used_quota_files: i64,
    pub last_quota_update: i64,
    #[schema(value_type = Object)]
    pub filesystem: Value,
    pub users: Vec<String>,
}

impl FolderView {
    /// The view with secrets hidden.
    pub fn redacted(mut self) -> Self {
        crate::confidential::redact(&mut self.filesystem);
        self
    }

    pub fn new(row: &FolderRow, users: Vec<String>) -> Self {
        let d = &row.data;
        Self {
            id: row.id,
            name: d.name.clone(),
            mapped_path: d.path.clone(),
            description: d.description.clone(),
            used_quota_size: d.used_quota_size,
            used_quota_files: d.used_quota_files,
            last_quota_update: d.last_quota_update,
            filesystem: serde_json::from_str(&d.filesystem)
                .unwrap_or_else(|_| empty_object_filesystem()),
            users,
        }
    }
}

/// Folder names: what SFTPGo accepts in URLs and paths, without `/`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the folder name is mandatory".into());
    }
    if name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | ' '))
    {
        return Err(format!(
            "folder name {name:?} is not valid: only letters, digits, spaces and \"-_.~\" are allowed"
        ));
    }
    Ok(())
}

fn validate_mapped_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("mapped_path is mandatory".into());
    }
    if !std::path::Path::new(path).is_absolute() {
        return Err(format!("mapped_path {path:?} must be an absolute path"));
    }
    crate::server_paths::check_inside("mapped_path", path)
}

impl FolderInput {
    /// The row to store; on update the name cannot change and the counters
    /// carry over.
    pub fn validate(self, existing: Option<&FolderRow>) -> Result<FolderData, String> {
        let name = match existing {
            Some(row) if !self.name.is_empty() && self.name != row.data.name => {
                return Err("the folder name cannot be changed".into());
            }
            Some(row) => row.data.name.clone(),
            None => {
                validate_name(&self.name)?;
                self.name
            }
        };
        let mut filesystem = crate::storage::normalize(self.filesystem)?;
        // SFTPGo's rule: a folder in an object store needs no mapped_path
        // (one given is still checked like a local one).
        if crate::storage::provider_of(&filesystem) == 0 || !self.mapped_path.is_empty() {
            validate_mapped_path(&self.mapped_path)?;
        }
        crate::confidential::prepare(
            &mut filesystem,
            existing
                .and_then(|r| serde_json::from_str::<Value>(&r.data.filesystem).ok())
                .as_ref(),
            "filesystem",
        )?;
        // Checks the values, and that every secret opens for the edge.
        crate::storage::storage_of(&filesystem)?;
        let carried = existing.map(|r| &r.data);
        Ok(FolderData {
            name,
            description: self.description,
            path: self.mapped_path,
            used_quota_size: carried.map_or(0, |c| c.used_quota_size),
            used_quota_files: carried.map_or(0, |c| c.used_quota_files),
            last_quota_update: carried.map_or(0, |c| c.last_quota_update),
            filesystem: filesystem.to_string(),
        })
    }
}

fn minus_one() -> i64 {
    -1
}

/// One entry of a user's `virtual_folders`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct VirtualFolderInput {
    #[serde(default)]
    pub name: String,
    /// Creates the folder when it does not exist yet.
    #[serde(default)]
    pub mapped_path: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub virtual_path: String,
    /// -1: counted in the user's quota; 0: no limit of its own.
    #[serde(default = "minus_one")]
    pub quota_size: i64,
    #[serde(default = "minus_one")]
    pub quota_files: i64,
}

/// Validates a user's folder list: names given, virtual paths absolute, not
/// `/`, not nested in one another, quota -1 or 0.
pub fn validate_mappings(list: Vec<VirtualFolderInput>) -> Result<Vec<NewMapping>, String> {
    let mut out: Vec<NewMapping> = Vec::with_capacity(list.len());
    for v in list {
        validate_name(&v.name).map_err(|e| format!("virtual_folders: {e}"))?;
        if !v.virtual_path.starts_with('/') {
            return Err(format!(
                "virtual_folders: virtual_path {:?} of folder {:?} must be absolute",
                v.virtual_path, v.name
            ));
        }
        let virtual_path = vpath::clean("/", &v.virtual_path);
        if virtual_path == "/" {
            return Err(format!(
                "virtual_folders: folder {:?} cannot be mounted on \"/\"",
                v.name
            ));
        }
        let in_user_quota = (v.quota_size == -1, v.quota_files == -1);
        if v.quota_size < -1 || v.quota_files < -1 || in_user_quota.0 != in_user_quota.1 {
            return Err(format!(
                "virtual_folders: quota_size and quota_files of folder {:?} must both be -1 \
                 (counted in the user's quota) or both 0 or more (the folder's own limits, 0: none)",
                v.name
            ));
        }
        for other in &out {
            let o = &other.mapping;
            if o.folder == v.name {
                return Err(format!(
                    "virtual_folders: folder {:?} is mapped twice",
                    v.name
                ));
            }
            let nested = |a: &str, b: &str| a == b || b.starts_with(&format!("{a}/"));
            if nested(&o.virtual_path, &virtual_path) || nested(&virtual_path, &o.virtual_path) {
                return Err(format!(
                    "virtual_folders: virtual paths {:?} and {:?} overlap",
                    o.virtual_path, virtual_path
                ));
            }
        }
        let create = if v.mapped_path.is_empty() {
            None
        } else {
            validate_mapped_path(&v.mapped_path).map_err(|e| format!("virtual_folders: {e}"))?;
            Some(FolderData {
                name: v.name.clone(),
                description: v.description.clone(),
                path: v.mapped_path.clone(),
                used_quota_size: 0,
                used_quota_files: 0,
                last_quota_update: 0,
                filesystem: empty_object_filesystem().to_string(),
            })
        };
        out.push(NewMapping {
            mapping: Mapping {
                folder: v.name,
                virtual_path,
                quota_size: v.quota_size,
                quota_files: v.quota_files,
            },
            create,
        });
    }
    Ok(out)
}

/// A user's `virtual_folders` entry as the API returns it.
pub fn mapping_view(folder: &FolderRow, m: &Mapping) -> Value {
    let d = &folder.data;
    serde_json::json!({
        "id": folder.id,
        "name": d.name,
        "mapped_path": d.path,
        "description": d.description,
        "used_quota_size": d.used_quota_size,
        "used_quota_files": d.used_quota_files,
        "last_quota_update": d.last_quota_update,
        "filesystem": serde_json::from_str::<Value>(&d.filesystem).unwrap_or_else(|_| empty_object_filesystem()),
        "virtual_path": m.virtual_path,
        "quota_size": m.quota_size,
        "quota_files": m.quota_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vf(name: &str, vp: &str) -> VirtualFolderInput {
        VirtualFolderInput {
            name: name.into(),
            mapped_path: String::new(),
            description: String::new(),
            virtual_path: vp.into(),
            quota_size: -1,
            quota_files: -1,
        }
    }

    #[test]
    fn mapping_validation() {
        let err = |l: Vec<VirtualFolderInput>| validate_mappings(l).unwrap_err();
        assert!(err(vec![vf("a", "rel")]).contains("must be absolute"));
        assert!(err(vec![vf("a", "/")]).contains("cannot be mounted"));
        assert!(err(vec![vf("a", "/x"), vf("a", "/y")]).contains("mapped twice"));
        assert!(err(vec![vf("a", "/x"), vf("b", "/x/y")]).contains("overlap"));
        assert!(err(vec![vf("a", "/x/y/"), vf("b", "/x/y")]).contains("overlap"));
        assert!(err(vec![vf("a/b", "/x")]).contains("not valid"));
        let mut q = vf("a", "/x");
        q.quota_size = 100;
        assert!(err(vec![q]).contains("must both be -1"));
        let mut q = vf("a", "/x");
        q.quota_size = -2;
        q.quota_files = -2;
        assert!(err(vec![q]).contains("must both be -1"));
        let mut bad = vf("a", "/x");
        bad.mapped_path = "rel".into();
        assert!(err(vec![bad]).contains("absolute"));
        let ok = validate_mappings(vec![vf("a", "/x/../y/"), vf("b", "/xy")]).unwrap();
        assert_eq!(ok[0].mapping.virtual_path, "/y");
        assert!(ok[0].create.is_none());
    }
}
