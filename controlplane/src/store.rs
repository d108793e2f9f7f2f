//! The store: users, groups, folders, admins, API keys and fleet settings.
//! [`Store`] forwards each operation to the configured backend: [`SqlStore`]
//! (SQLite, PostgreSQL, MySQL/MariaDB and the in-memory SQLite of the memory
//! provider, through diesel and an r2d2 pool) or the redb file
//! ([`crate::redb_store`]). Both are synchronous underneath, so every
//! operation runs on the blocking pool; async code never touches a
//! connection or transaction directly.

use std::path::Path;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::Pool;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use ferry_schema::{
    admins, api_keys, configs, folders, groups_folders_mapping, revoked_tokens, user_groups, users,
    users_folders_mapping, users_groups_mapping,
};

pub use crate::provider::{Backend, DataProviderConfig};

/// A failure of the store, already classified for the API layers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Internal(String),
    /// A request that contradicts what is stored (e.g. a mapping to a folder
    /// that does not exist); the text is for the client.
    #[error("{0}")]
    Invalid(String),
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::NotFound => StoreError::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                StoreError::AlreadyExists(info.message().to_string())
            }
            other => StoreError::Internal(other.to_string()),
        }
    }
}

/// The columns of a user except its id, as stored.
#[derive(
    Debug,
    Clone,
    Queryable,
    Selectable,
    Insertable,
    AsChangeset,
    serde::Serialize,
    serde::Deserialize,
)]
#[diesel(table_name = users, treat_none_as_null = true)]
pub struct UserData {
    pub username: String,
    pub status: i64,
    pub password: Option<String>,
    pub public_keys: String,
    pub home_dir: String,
    pub uid: i64,
    pub gid: i64,
    pub max_sessions: i64,
    pub quota_size: i64,
    pub quota_files: i64,
    pub permissions: String,
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
    pub expiration_date: i64,
    pub last_login: i64,
    pub first_download: i64,
    pub first_upload: i64,
    pub last_password_change: i64,
    pub filters: String,
    pub filesystem: String,
    pub email: String,
    pub description: String,
    pub additional_info: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserData {
    /// An active user with no password, keys or limits, every permission on
    /// `/` and empty filters: a base for tests and tools to adjust.
    pub fn new(username: &str, home_dir: &str) -> UserData {
        UserData {
            username: username.into(),
            status: 1,
            password: None,
            public_keys: "[]".into(),
            home_dir: home_dir.into(),
            uid: 0,
            gid: 0,
            max_sessions: 0,
            quota_size: 0,
            quota_files: 0,
            permissions: r#"{"/":["*"]}"#.into(),
            used_quota_size: 0,
            used_quota_files: 0,
            last_quota_update: 0,
            upload_bandwidth: 0,
            download_bandwidth: 0,
            upload_data_transfer: 0,
            download_data_transfer: 0,
            total_data_transfer: 0,
            used_upload_data_transfer: 0,
            used_download_data_transfer: 0,
            expiration_date: 0,
            last_login: 0,
            first_download: 0,
            first_upload: 0,
            last_password_change: 0,
            filters: "{}".into(),
            filesystem: r#"{"provider":0}"#.into(),
            email: String::new(),
            description: String::new(),
            additional_info: String::new(),
            created_at: 0,
            updated_at: 0,
        }
    }

    /// This user with `live`'s usage counters (a restore replacing a user
    /// keeps what it has used).
    pub fn with_usage_of(&self, live: &UserData) -> UserData {
        UserData {
            used_quota_size: live.used_quota_size,
            used_quota_files: live.used_quota_files,
            last_quota_update: live.last_quota_update,
            used_upload_data_transfer: live.used_upload_data_transfer,
            used_download_data_transfer: live.used_download_data_transfer,
            ..self.clone()
        }
    }
}

/// A stored user.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: i64,
    #[diesel(embed)]
    pub data: UserData,
}

/// The columns of an admin except its id.
#[derive(
    Debug,
    Clone,
    Queryable,
    Selectable,
    Insertable,
    AsChangeset,
    serde::Serialize,
    serde::Deserialize,
)]
#[diesel(table_name = admins)]
pub struct AdminData {
    pub username: String,
    pub status: i64,
    pub password: String,
    pub permissions: String,
    pub filters: String,
    pub email: String,
    pub description: String,
    pub additional_info: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login: i64,
}

/// A stored admin.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = admins)]
pub struct AdminRow {
    pub id: i64,
    #[diesel(embed)]
    pub data: AdminData,
}

/// The columns of a virtual folder except its id.
#[derive(
    Debug,
    Clone,
    Queryable,
    Selectable,
    Insertable,
    AsChangeset,
    serde::Serialize,
    serde::Deserialize,
)]
#[diesel(table_name = folders)]
pub struct FolderData {
    pub name: String,
    pub description: String,
    /// SFTPGo's `mapped_path`.
    pub path: String,
    pub used_quota_size: i64,
    pub used_quota_files: i64,
    pub last_quota_update: i64,
    pub filesystem: String,
}

/// A stored virtual folder.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = folders)]
pub struct FolderRow {
    pub id: i64,
    #[diesel(embed)]
    pub data: FolderData,
}

/// The columns of an API key except its id; `api_key` is the hash.
#[derive(
    Debug,
    Clone,
    Queryable,
    Selectable,
    Insertable,
    AsChangeset,
    serde::Serialize,
    serde::Deserialize,
)]
#[diesel(table_name = api_keys, treat_none_as_null = true)]
pub struct ApiKeyData {
    pub key_id: String,
    pub name: String,
    pub api_key: String,
    pub scope: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_use_at: i64,
    pub expires_at: i64,
    pub description: String,
    pub admin_id: Option<i64>,
    pub user_id: Option<i64>,
}

/// A stored API key with the names of the admin or user it is bound to.
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub data: ApiKeyData,
    pub admin: Option<String>,
    pub user: Option<String>,
}

/// An API key as stored plus the owner names to resolve to ids.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub data: ApiKeyData,
    pub admin: Option<String>,
    pub user: Option<String>,
}

/// Resolves a key's owner names to ids (inside the caller's transaction).
fn api_key_owner_ids(c: &mut DbConnection, key: &mut NewApiKey) -> Result<(), StoreError> {
    key.data.admin_id = match &key.admin {
        None => None,
        Some(name) => Some(
            admins::table
                .filter(admins::username.eq(name))
                .select(admins::id)
                .first(c)
                .optional()?
                .ok_or_else(|| StoreError::Invalid(format!("admin {name:?} does not exist")))?,
        ),
    };
    key.data.user_id = match &key.user {
        None => None,
        Some(name) => Some(
            users::table
                .filter(users::username.eq(name))
                .select(users::id)
                .first(c)
                .optional()?
                .ok_or_else(|| StoreError::Invalid(format!("user {name:?} does not exist")))?,
        ),
    };
    Ok(())
}

/// Adds the owner names to stored keys.
fn api_key_rows(c: &mut DbConnection, keys: Vec<ApiKeyData>) -> Result<Vec<ApiKeyRow>, StoreError> {
    keys.into_iter()
        .map(|data| {
            let admin = match data.admin_id {
                Some(id) => Some(admins::table.find(id).select(admins::username).first(c)?),
                None => None,
            };
            let user = match data.user_id {
                Some(id) => Some(users::table.find(id).select(users::username).first(c)?),
                None => None,
            };
            Ok(ApiKeyRow { data, admin, user })
        })
        .collect()
}

/// The columns of a group except its id.
#[derive(
    Debug,
    Clone,
    Queryable,
    Selectable,
    Insertable,
    AsChangeset,
    serde::Serialize,
    serde::Deserialize,
)]
#[diesel(table_name = user_groups)]
pub struct GroupData {
    pub name: String,
    pub description: String,
    /// JSON object: SFTPGo's `user_settings`.
    pub user_settings: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A stored group.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = user_groups)]
pub struct GroupRow {
    pub id: i64,
    #[diesel(embed)]
    pub data: GroupData,
}

/// A user's membership: group name and type (1 primary, 2 secondary, 3
/// membership only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub name: String,
    pub group_type: i64,
}

/// A group a user belongs to, with what it brings.
#[derive(Debug, Clone)]
pub struct MemberGroup {
    pub group: GroupRow,
    pub group_type: i64,
    pub folders: Vec<(FolderRow, Mapping)>,
}

/// Everything written for one user: the row, its folders and its groups.
#[derive(Debug, Clone)]
pub struct UserWrite {
    pub data: UserData,
    pub mappings: Vec<NewMapping>,
    pub groups: Vec<GroupRef>,
}

/// Replaces a user's group memberships (inside the caller's transaction).
fn set_user_groups(
    c: &mut DbConnection,
    user_id: i64,
    wanted: &[GroupRef],
) -> Result<(), StoreError> {
    diesel::delete(users_groups_mapping::table.filter(users_groups_mapping::user_id.eq(user_id)))
        .execute(c)?;
    for g in wanted {
        let group_id: i64 = user_groups::table
            .filter(user_groups::name.eq(&g.name))
            .select(user_groups::id)
            .first(c)
            .optional()?
            .ok_or_else(|| StoreError::Invalid(format!("group {:?} does not exist", g.name)))?;
        diesel::insert_into(users_groups_mapping::table)
            .values((
                users_groups_mapping::user_id.eq(user_id),
                users_groups_mapping::group_id.eq(group_id),
                users_groups_mapping::group_type.eq(g.group_type),
            ))
            .execute(c)?;
    }
    Ok(())
}

/// Replaces a group's folder mappings (inside the caller's transaction);
/// the folders must exist.
fn set_group_folders(
    c: &mut DbConnection,
    group_id: i64,
    wanted: &[Mapping],
) -> Result<(), StoreError> {
    diesel::delete(
        groups_folders_mapping::table.filter(groups_folders_mapping::group_id.eq(group_id)),
    )
    .execute(c)?;
    for m in wanted {
        let folder_id: i64 = folders::table
            .filter(folders::name.eq(&m.folder))
            .select(folders::id)
            .first(c)
            .optional()?
            .ok_or_else(|| {
                StoreError::Invalid(format!("virtual folder {:?} does not exist", m.folder))
            })?;
        diesel::insert_into(groups_folders_mapping::table)
            .values((
                groups_folders_mapping::group_id.eq(group_id),
                groups_folders_mapping::folder_id.eq(folder_id),
                groups_folders_mapping::virtual_path.eq(&m.virtual_path),
                groups_folders_mapping::quota_size.eq(m.quota_size),
                groups_folders_mapping::quota_files.eq(m.quota_files),
            ))
            .execute(c)?;
    }
    Ok(())
}

/// A group's folder mappings with their folders.
fn group_folders_of(
    c: &mut DbConnection,
    group_id: i64,
) -> Result<Vec<(FolderRow, Mapping)>, StoreError> {
    let rows: Vec<(FolderRow, (String, i64, i64))> = groups_folders_mapping::table
        .inner_join(folders::table)
        .filter(groups_folders_mapping::group_id.eq(group_id))
        .order(groups_folders_mapping::virtual_path.asc())
        .select((
            FolderRow::as_select(),
            (
                groups_folders_mapping::virtual_path,
                groups_folders_mapping::quota_size,
                groups_folders_mapping::quota_files,
            ),
        ))
        .load(c)?;
    Ok(mounts(rows))
}

/// A mapping row as queried (folder, then virtual path and limits) as a
/// mount.
fn mount(
    f: FolderRow,
    (virtual_path, quota_size, quota_files): (String, i64, i64),
) -> (FolderRow, Mapping) {
    let folder = f.data.name.clone();
    (
        f,
        Mapping {
            folder,
            virtual_path,
            quota_size,
            quota_files,
        },
    )
}

fn mounts(rows: Vec<(FolderRow, (String, i64, i64))>) -> Mounts {
    rows.into_iter().map(|(f, m)| mount(f, m)).collect()
}

/// A user's memberships, primary first.
fn user_group_refs(c: &mut DbConnection, user_id: i64) -> Result<Vec<GroupRef>, StoreError> {
    let rows: Vec<(String, i64)> = users_groups_mapping::table
        .inner_join(user_groups::table)
        .filter(users_groups_mapping::user_id.eq(user_id))
        .order((
            users_groups_mapping::group_type.asc(),
            user_groups::name.asc(),
        ))
        .select((user_groups::name, users_groups_mapping::group_type))
        .load(c)?;
    Ok(rows
        .into_iter()
        .map(|(name, group_type)| GroupRef { name, group_type })
        .collect())
}

/// A folder mounted into a user's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub folder: String,
    pub virtual_path: String,
    /// -1: counted in the user's quota.
    pub quota_size: i64,
    pub quota_files: i64,
}

/// A mapping as a user add/update asks for it: the folder is created when
/// it does not exist and `create` says how.
#[derive(Debug, Clone)]
pub struct NewMapping {
    pub mapping: Mapping,
    pub create: Option<FolderData>,
}

#[derive(Insertable)]
#[diesel(table_name = users_folders_mapping)]
struct MappingInsert {
    user_id: i64,
    folder_id: i64,
    virtual_path: String,
    quota_size: i64,
    quota_files: i64,
}

/// Replaces a user's mappings (inside the caller's transaction), creating
/// folders where asked.
fn set_mappings(
    c: &mut DbConnection,
    user_id: i64,
    wanted: &[NewMapping],
) -> Result<(), StoreError> {
    diesel::delete(users_folders_mapping::table.filter(users_folders_mapping::user_id.eq(user_id)))
        .execute(c)?;
    for m in wanted {
        let existing: Option<i64> = folders::table
            .filter(folders::name.eq(&m.mapping.folder))
            .select(folders::id)
            .first(c)
            .optional()?;
        let folder_id = match (existing, &m.create) {
            (Some(id), _) => id,
            (None, Some(data)) => {
                diesel::insert_into(folders::table)
                    .values(data)
                    .execute(c)?;
                folders::table
                    .filter(folders::name.eq(&data.name))
                    .select(folders::id)
                    .first(c)?
            }
            (None, None) => {
                return Err(StoreError::Invalid(format!(
                    "virtual folder {:?} does not exist (give mapped_path to create it)",
                    m.mapping.folder
                )));
            }
        };
        diesel::insert_into(users_folders_mapping::table)
            .values(MappingInsert {
                user_id,
                folder_id,
                virtual_path: m.mapping.virtual_path.clone(),
                quota_size: m.mapping.quota_size,
                quota_files: m.mapping.quota_files,
            })
            .execute(c)?;
    }
    Ok(())
}

/// Folders mounted into a user's or group's tree.
pub type Mounts = Vec<(FolderRow, Mapping)>;

/// Everything a backup holds, read in one transaction.
pub struct DumpRows {
    /// Users with their own folders and their groups.
    pub users: Vec<(UserRow, Mounts, Vec<GroupRef>)>,
    /// Groups with their folders and member names.
    pub groups: Vec<(GroupRow, Mounts, Vec<String>)>,
    pub folders: Vec<(FolderRow, Vec<String>)>,
    pub admins: Vec<AdminRow>,
    pub api_keys: Vec<ApiKeyRow>,
}

/// What a restore writes, validated beforehand.
#[derive(Default)]
pub struct RestorePlan {
    pub folders: Vec<FolderData>,
    pub groups: Vec<(GroupData, Vec<Mapping>)>,
    pub admins: Vec<AdminData>,
    pub users: Vec<UserWrite>,
    pub api_keys: Vec<NewApiKey>,
}

/// What a restore did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    pub added: usize,
    pub updated: usize,
    pub skipped: usize,
    /// Users that existed and were replaced.
    #[serde(skip)]
    pub updated_users: Vec<String>,
    /// Users added or replaced.
    #[serde(skip)]
    pub restored_users: Vec<String>,
}

/// Prefixes a store error with the object it concerns.
pub(crate) fn about(what: &str, e: StoreError) -> StoreError {
    match e {
        StoreError::Invalid(m) => StoreError::Invalid(format!("{what}: {m}")),
        StoreError::AlreadyExists(m) => {
            StoreError::Invalid(format!("{what}: already exists ({m})"))
        }
        StoreError::Internal(m) => StoreError::Internal(format!("{what}: {m}")),
        other => other,
    }
}

/// Sort order of list endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// A connection to whichever SQL backend is configured. diesel's derive
/// would try every variant in `establish` and hide the real error, so
/// connections are made by [`Manager`], which knows the backend.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(diesel::SqliteConnection),
    Postgresql(diesel::PgConnection),
    Mysql(diesel::MysqlConnection),
}

/// r2d2 manager that establishes the configured backend directly.
struct Manager {
    backend: Backend,
    url: String,
}

impl diesel::r2d2::ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        let conn = match self.backend {
            Backend::Sqlite => {
                let mut c = diesel::SqliteConnection::establish(&self.url)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                // WAL lets REST reads run while a login writes last_login;
                // busy_timeout turns short write contention into waiting
                // (set first: switching to WAL needs a lock another
                // process starting at the same time may hold).
                // secure_delete: replaced values (a secret sealed in place)
                // do not linger in free space.
                c.batch_execute(
                    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                     PRAGMA secure_delete = ON;",
                )
                .map_err(diesel::r2d2::Error::QueryError)?;
                DbConnection::Sqlite(c)
            }
            Backend::Memory => {
                // A shared-cache in-memory database: every pooled connection
                // sees the same data while the store's anchor keeps it alive.
                let mut c = diesel::SqliteConnection::establish(&self.url)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                c.batch_execute("PRAGMA foreign_keys = ON;")
                    .map_err(diesel::r2d2::Error::QueryError)?;
                DbConnection::Sqlite(c)
            }
            Backend::Postgresql => DbConnection::Postgresql(
                diesel::PgConnection::establish(&self.url)
                    .map_err(diesel::r2d2::Error::ConnectionError)?,
            ),
            Backend::Mysql => DbConnection::Mysql(
                diesel::MysqlConnection::establish(&self.url)
                    .map_err(diesel::r2d2::Error::ConnectionError)?,
            ),
            Backend::Redb => {
                return Err(diesel::r2d2::Error::ConnectionError(
                    diesel::ConnectionError::BadConnection("redb is not an SQL backend".into()),
                ));
            }
        };
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        use diesel::r2d2::R2D2Connection;
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        use diesel::r2d2::R2D2Connection;
        std::thread::panicking() || conn.is_broken()
    }
}

/// The SQL backends (and the memory provider) through diesel; cheap to
/// clone.
#[derive(Clone)]
pub struct SqlStore {
    pool: Pool<Manager>,
    backend: Backend,
    /// The memory provider's first connection, held so the in-memory
    /// database lives as long as the store.
    _anchor: Option<std::sync::Arc<std::sync::Mutex<DbConnection>>>,
}

impl SqlStore {
    /// Connects to the configured database and brings its schema to this
    /// binary's version (refusing a schema newer than the binary).
    fn open(target: crate::provider::Target) -> anyhow::Result<Self> {
        let manager = Manager {
            backend: target.backend,
            url: target.url,
        };
        // Connect once outside the pool: r2d2 retries silently until its
        // timeout, while the first error is what an operator needs to see.
        let mut first = diesel::r2d2::ManageConnection::connect(&manager).map_err(|e| {
            let hint = match target.backend {
                Backend::Sqlite | Backend::Memory => "",
                _ => " (the database must exist: ferry creates the schema, not the database)",
            };
            anyhow::anyhow!(
                "cannot connect to {}: {}{hint}",
                target.describe,
                e.to_string().trim_end()
            )
        })?;
        crate::migrate::migrate(&mut first)
            .map_err(|e| anyhow::anyhow!("{}: {e}", target.describe))?;
        let anchor = match target.backend {
            Backend::Memory => Some(std::sync::Arc::new(std::sync::Mutex::new(first))),
            _ => None,
        };
        let pool = Pool::builder()
            .max_size(target.pool_size)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", target.describe))?;
        Ok(Self {
            pool,
            backend: target.backend,
            _anchor: anchor,
        })
    }

    /// Which SQL backend this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .get()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    /// Cheap round trip used by `/healthz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| {
            c.batch_execute("SELECT 1")?;
            Ok(())
        })
        .await
    }

    pub async fn user(&self, username: String) -> Result<UserRow, StoreError> {
        self.run(move |c| {
            Ok(users::table
                .filter(users::username.eq(username))
                .select(UserRow::as_select())
                .first(c)?)
        })
        .await
    }

    pub async fn users(
        &self,
        offset: i64,
        limit: i64,
        order: Order,
    ) -> Result<Vec<UserRow>, StoreError> {
        self.run(move |c| {
            let q = users::table
                .select(UserRow::as_select())
                .offset(offset)
                .limit(limit);
            Ok(match order {
                Order::Asc => q.order(users::username.asc()).load(c)?,
                Order::Desc => q.order(users::username.desc()).load(c)?,
            })
        })
        .await
    }

    /// Adds a user and its folder mappings (no groups), all or nothing.
    pub async fn add_user(
        &self,
        data: UserData,
        mappings: Vec<NewMapping>,
    ) -> Result<UserRow, StoreError> {
        self.add_user_full(UserWrite {
            data,
            mappings,
            groups: Vec::new(),
        })
        .await
    }

    /// Replaces every column of an existing user and its folder mappings.
    pub async fn update_user(
        &self,
        id: i64,
        data: UserData,
        mappings: Vec<NewMapping>,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                let n = diesel::update(users::table.find(id))
                    .set(&data)
                    .execute(c)?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                set_mappings(c, id, &mappings)
            })
        })
        .await
    }

    /// Adds a user with its folders and groups, all or nothing.
    pub async fn add_user_full(&self, w: UserWrite) -> Result<UserRow, StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                diesel::insert_into(users::table)
                    .values(&w.data)
                    .execute(c)?;
                let row: UserRow = users::table
                    .filter(users::username.eq(&w.data.username))
                    .select(UserRow::as_select())
                    .first(c)?;
                set_mappings(c, row.id, &w.mappings)?;
                set_user_groups(c, row.id, &w.groups)?;
                Ok(row)
            })
        })
        .await
    }

    /// Replaces a user, its folders and its groups.
    pub async fn update_user_full(&self, id: i64, w: UserWrite) -> Result<(), StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                let n = diesel::update(users::table.find(id))
                    .set(&w.data)
                    .execute(c)?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                set_mappings(c, id, &w.mappings)?;
                set_user_groups(c, id, &w.groups)
            })
        })
        .await
    }

    /// A user's group memberships, primary first.
    pub async fn user_groups(&self, user_id: i64) -> Result<Vec<GroupRef>, StoreError> {
        self.run(move |c| user_group_refs(c, user_id)).await
    }

    /// The groups a user belongs to with their settings and folders, primary
    /// first, then secondaries and memberships by name.
    pub async fn member_groups(&self, user_id: i64) -> Result<Vec<MemberGroup>, StoreError> {
        self.run(move |c| {
            let rows: Vec<(GroupRow, i64)> = users_groups_mapping::table
                .inner_join(user_groups::table)
                .filter(users_groups_mapping::user_id.eq(user_id))
                .order((
                    users_groups_mapping::group_type.asc(),
                    user_groups::name.asc(),
                ))
                .select((GroupRow::as_select(), users_groups_mapping::group_type))
                .load(c)?;
            rows.into_iter()
                .map(|(group, group_type)| {
                    let folders = group_folders_of(c, group.id)?;
                    Ok(MemberGroup {
                        group,
                        group_type,
                        folders,
                    })
                })
                .collect()
        })
        .await
    }

    pub async fn group(&self, name: String) -> Result<GroupRow, StoreError> {
        self.run(move |c| {
            Ok(user_groups::table
                .filter(user_groups::name.eq(name))
                .select(GroupRow::as_select())
                .first(c)?)
        })
        .await
    }

    pub async fn groups(
        &self,
        offset: i64,
        limit: i64,
        order: Order,
    ) -> Result<Vec<GroupRow>, StoreError> {
        self.run(move |c| {
            let q = user_groups::table
                .select(GroupRow::as_select())
                .offset(offset)
                .limit(limit);
            Ok(match order {
                Order::Asc => q.order(user_groups::name.asc()).load(c)?,
                Order::Desc => q.order(user_groups::name.desc()).load(c)?,
            })
        })
        .await
    }

    /// A group's folder mappings and member usernames.
    pub async fn group_details(
        &self,
        group_id: i64,
    ) -> Result<(Vec<(FolderRow, Mapping)>, Vec<String>), StoreError> {
        self.run(move |c| {
            let folders = group_folders_of(c, group_id)?;
            let users = users_groups_mapping::table
                .inner_join(users::table)
                .filter(users_groups_mapping::group_id.eq(group_id))
                .order(users::username.asc())
                .select(users::username)
                .load(c)?;
            Ok((folders, users))
        })
        .await
    }

    pub async fn add_group(
        &self,
        data: GroupData,
        mappings: Vec<Mapping>,
    ) -> Result<GroupRow, StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                diesel::insert_into(user_groups::table)
                    .values(&data)
                    .execute(c)?;
                let row: GroupRow = user_groups::table
                    .filter(user_groups::name.eq(&data.name))
                    .select(GroupRow::as_select())
                    .first(c)?;
                set_group_folders(c, row.id, &mappings)?;
                Ok(row)
            })
        })
        .await
    }

    pub async fn update_group(
        &self,
        id: i64,
        data: GroupData,
        mappings: Vec<Mapping>,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                let n = diesel::update(user_groups::table.find(id))
                    .set(&data)
                    .execute(c)?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                set_group_folders(c, id, &mappings)
            })
        })
        .await
    }

    /// Deletes a group nobody belongs to (users keep their settings only
    /// while their groups exist, so members must be moved first).
    pub async fn delete_group(&self, name: String) -> Result<(), StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                let id: i64 = user_groups::table
                    .filter(user_groups::name.eq(&name))
                    .select(user_groups::id)
                    .first(c)?;
                let members: i64 = users_groups_mapping::table
                    .filter(users_groups_mapping::group_id.eq(id))
                    .count()
                    .get_result(c)?;
                if members > 0 {
                    return Err(StoreError::Invalid(format!(
                        "group {name:?} has {members} member(s): remove it from its users first"
                    )));
                }
                diesel::delete(
                    groups_folders_mapping::table.filter(groups_folders_mapping::group_id.eq(id)),
                )
                .execute(c)?;
                diesel::delete(user_groups::table.find(id)).execute(c)?;
                Ok(())
            })
        })
        .await
    }

    /// A user's folder mappings with their folders, by virtual path.
    pub async fn user_folders(
        &self,
        user_id: i64,
    ) -> Result<Vec<(FolderRow, Mapping)>, StoreError> {
        self.run(move |c| {
            let rows: Vec<(FolderRow, (String, i64, i64))> = users_folders_mapping::table
                .inner_join(folders::table)
                .filter(users_folders_mapping::user_id.eq(user_id))
                .order(users_folders_mapping::virtual_path.asc())
                .select((
                    FolderRow::as_select(),
                    (
                        users_folders_mapping::virtual_path,
                        users_folders_mapping::quota_size,
                        users_folders_mapping::quota_files,
                    ),
                ))
                .load(c)?;
            Ok(mounts(rows))
        })
        .await
    }

    pub async fn folder(&self, name: String) -> Result<FolderRow, StoreError> {
        self.run(move |c| {
            Ok(folders::table
                .filter(folders::name.eq(name))
                .select(FolderRow::as_select())
                .first(c)?)
        })
        .await
    }

    pub async fn folders(
        &self,
        offset: i64,
        limit: i64,
        order: Order,
    ) -> Result<Vec<FolderRow>, StoreError> {
        self.run(move |c| {
            let q = folders::table
                .select(FolderRow::as_select())
                .offset(offset)
                .limit(limit);
            Ok(match order {
                Order::Asc => q.order(folders::name.asc()).load(c)?,
                Order::Desc => q.order(folders::name.desc()).load(c)?,
            })
        })
        .await
    }

    /// Usernames mapping a folder.
    pub async fn folder_users(&self, folder_id: i64) -> Result<Vec<String>, StoreError> {
        self.run(move |c| {
            Ok(users_folders_mapping::table
                .inner_join(users::table)
                .filter(users_folders_mapping::folder_id.eq(folder_id))
                .order(users::username.asc())
                .select(users::username)
                .load(c)?)
        })
        .await
    }

    pub async fn add_folder(&self, data: FolderData) -> Result<FolderRow, StoreError> {
        self.run(move |c| {
            let name = data.name.clone();
            c.transaction(|c| {
                diesel::insert_into(folders::table)
                    .values(&data)
                    .execute(c)?;
                Ok(folders::table
                    .filter(folders::name.eq(name))
                    .select(FolderRow::as_select())
                    .first(c)?)
            })
        })
        .await
    }

    /// Updates what an admin may change; usage counters are kept.
    pub async fn update_folder(
        &self,
        id: i64,
        description: String,
        path: String,
        filesystem: String,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            let n = diesel::update(folders::table.find(id))
                .set((
                    folders::description.eq(description),
                    folders::path.eq(path),
                    folders::filesystem.eq(filesystem),
                ))
                .execute(c)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    /// Deletes a folder and its mappings (never files).
    pub async fn delete_folder(&self, name: String) -> Result<(), StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                let id: i64 = folders::table
                    .filter(folders::name.eq(&name))
                    .select(folders::id)
                    .first(c)?;
                diesel::delete(
                    users_folders_mapping::table.filter(users_folders_mapping::folder_id.eq(id)),
                )
                .execute(c)?;
                diesel::delete(folders::table.find(id)).execute(c)?;
                Ok(())
            })
        })
        .await
    }

    /// Sets a user's (empty `folder`) or a folder's used quota.
    pub async fn set_quota_usage(
        &self,
        username: String,
        folder: String,
        size: i64,
        files: i64,
        when_ms: i64,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            let n = if folder.is_empty() {
                diesel::update(users::table.filter(users::username.eq(username)))
                    .set((
                        users::used_quota_size.eq(size),
                        users::used_quota_files.eq(files),
                        users::last_quota_update.eq(when_ms),
                    ))
                    .execute(c)?
            } else {
                diesel::update(folders::table.filter(folders::name.eq(folder)))
                    .set((
                        folders::used_quota_size.eq(size),
                        folders::used_quota_files.eq(files),
                        folders::last_quota_update.eq(when_ms),
                    ))
                    .execute(c)?
            };
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    /// Adds to a folder's used quota with one atomic UPDATE.
    pub async fn add_folder_quota_usage(
        &self,
        name: String,
        size_delta: i64,
        files_delta: i64,
        when_ms: i64,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            let n = diesel::update(folders::table.filter(folders::name.eq(name)))
                .set((
                    folders::used_quota_size.eq(folders::used_quota_size + size_delta),
                    folders::used_quota_files.eq(folders::used_quota_files + files_delta),
                    folders::last_quota_update.eq(when_ms),
                ))
                .execute(c)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    /// Deletes a user and its folder mappings (the folders stay).
    pub async fn delete_user(&self, username: String) -> Result<(), StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                let id: i64 = users::table
                    .filter(users::username.eq(&username))
                    .select(users::id)
                    .first(c)?;
                diesel::delete(
                    users_folders_mapping::table.filter(users_folders_mapping::user_id.eq(id)),
                )
                .execute(c)?;
                diesel::delete(users::table.find(id)).execute(c)?;
                Ok(())
            })
        })
        .await
    }

    pub async fn set_last_login(&self, username: String, when_ms: i64) -> Result<(), StoreError> {
        self.run(move |c| {
            diesel::update(users::table.filter(users::username.eq(username)))
                .set(users::last_login.eq(when_ms))
                .execute(c)?;
            Ok(())
        })
        .await
    }

    /// Replaces a user's password hash only if it is still `old` (a login
    /// upgrading the hash must not undo an admin's concurrent change).
    /// Returns whether it was replaced.
    pub async fn replace_password(
        &self,
        username: String,
        old: String,
        new: String,
    ) -> Result<bool, StoreError> {
        self.run(move |c| {
            let n = diesel::update(
                users::table
                    .filter(users::username.eq(username))
                    .filter(users::password.eq(old)),
            )
            .set(users::password.eq(new))
            .execute(c)?;
            Ok(n == 1)
        })
        .await
    }

    /// Adds to a user's used quota (negative deltas subtract) with one atomic
    /// `UPDATE … SET used = used + delta` in the database: never a
    /// read-modify-write in the application, so concurrent control planes
    /// and edges cannot lose updates.
    pub async fn add_quota_usage(
        &self,
        username: String,
        size_delta: i64,
        files_delta: i64,
        when_ms: i64,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            let n = diesel::update(users::table.filter(users::username.eq(username)))
                .set((
                    users::used_quota_size.eq(users::used_quota_size + size_delta),
                    users::used_quota_files.eq(users::used_quota_files + files_delta),
                    users::last_quota_update.eq(when_ms),
                ))
                .execute(c)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    pub async fn admin(&self, username: String) -> Result<AdminRow, StoreError> {
        self.run(move |c| {
            Ok(admins::table
                .filter(admins::username.eq(username))
                .select(AdminRow::as_select())
                .first(c)?)
        })
        .await
    }

    pub async fn count_admins(&self) -> Result<i64, StoreError> {
        self.run(|c| Ok(admins::table.count().get_result(c)?)).await
    }

    pub async fn add_admin(&self, data: AdminData) -> Result<(), StoreError> {
        self.run(move |c| {
            diesel::insert_into(admins::table)
                .values(&data)
                .execute(c)?;
            Ok(())
        })
        .await
    }

    pub async fn admins(
        &self,
        offset: i64,
        limit: i64,
        order: Order,
    ) -> Result<Vec<AdminRow>, StoreError> {
        self.run(move |c| {
            let q = admins::table
                .select(AdminRow::as_select())
                .offset(offset)
                .limit(limit);
            Ok(match order {
                Order::Asc => q.order(admins::username.asc()).load(c)?,
                Order::Desc => q.order(admins::username.desc()).load(c)?,
            })
        })
        .await
    }

    /// Replaces every column of an existing admin.
    pub async fn update_admin(&self, id: i64, data: AdminData) -> Result<(), StoreError> {
        self.run(move |c| {
            let n = diesel::update(admins::table.find(id))
                .set(&data)
                .execute(c)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    pub async fn delete_admin(&self, username: String) -> Result<(), StoreError> {
        self.run(move |c| {
            let n =
                diesel::delete(admins::table.filter(admins::username.eq(username))).execute(c)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    pub async fn set_admin_last_login(
        &self,
        username: String,
        when_ms: i64,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            diesel::update(admins::table.filter(admins::username.eq(username)))
                .set(admins::last_login.eq(when_ms))
                .execute(c)?;
            Ok(())
        })
        .await
    }

    pub async fn api_key(&self, key_id: String) -> Result<ApiKeyRow, StoreError> {
        self.run(move |c| {
            let data = api_keys::table
                .filter(api_keys::key_id.eq(key_id))
                .select(ApiKeyData::as_select())
                .first(c)?;
            Ok(api_key_rows(c, vec![data])?.remove(0))
        })
        .await
    }

    pub async fn api_keys(
        &self,
        offset: i64,
        limit: i64,
        order: Order,
    ) -> Result<Vec<ApiKeyRow>, StoreError> {
        self.run(move |c| {
            let q = api_keys::table
                .select(ApiKeyData::as_select())
                .offset(offset)
                .limit(limit);
            let keys = match order {
                Order::Asc => q.order(api_keys::key_id.asc()).load(c)?,
                Order::Desc => q.order(api_keys::key_id.desc()).load(c)?,
            };
            api_key_rows(c, keys)
        })
        .await
    }

    pub async fn add_api_key(&self, mut key: NewApiKey) -> Result<(), StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                api_key_owner_ids(c, &mut key)?;
                diesel::insert_into(api_keys::table)
                    .values(&key.data)
                    .execute(c)?;
                Ok(())
            })
        })
        .await
    }

    /// Replaces what an admin may change of a key (not the key itself).
    pub async fn update_api_key(&self, mut key: NewApiKey) -> Result<(), StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                api_key_owner_ids(c, &mut key)?;
                let d = &key.data;
                let n = diesel::update(api_keys::table.filter(api_keys::key_id.eq(&d.key_id)))
                    .set((
                        api_keys::name.eq(&d.name),
                        api_keys::scope.eq(d.scope),
                        api_keys::expires_at.eq(d.expires_at),
                        api_keys::description.eq(&d.description),
                        api_keys::admin_id.eq(d.admin_id),
                        api_keys::user_id.eq(d.user_id),
                        api_keys::updated_at.eq(d.updated_at),
                    ))
                    .execute(c)?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
        })
        .await
    }

    pub async fn delete_api_key(&self, key_id: String) -> Result<(), StoreError> {
        self.run(move |c| {
            let n =
                diesel::delete(api_keys::table.filter(api_keys::key_id.eq(key_id))).execute(c)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    pub async fn touch_api_key(&self, key_id: String, when_ms: i64) -> Result<(), StoreError> {
        self.run(move |c| {
            diesel::update(api_keys::table.filter(api_keys::key_id.eq(key_id)))
                .set(api_keys::last_use_at.eq(when_ms))
                .execute(c)?;
            Ok(())
        })
        .await
    }

    /// Reads every object a backup holds in one transaction (a consistent
    /// snapshot), ordered by name.
    pub async fn dump(&self) -> Result<DumpRows, StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                let user_rows: Vec<UserRow> = users::table
                    .order(users::username.asc())
                    .select(UserRow::as_select())
                    .load(c)?;
                let mappings: Vec<(i64, FolderRow, (String, i64, i64))> =
                    users_folders_mapping::table
                        .inner_join(folders::table)
                        .order(users_folders_mapping::virtual_path.asc())
                        .select((
                            users_folders_mapping::user_id,
                            FolderRow::as_select(),
                            (
                                users_folders_mapping::virtual_path,
                                users_folders_mapping::quota_size,
                                users_folders_mapping::quota_files,
                            ),
                        ))
                        .load(c)?;
                let folder_rows: Vec<FolderRow> = folders::table
                    .order(folders::name.asc())
                    .select(FolderRow::as_select())
                    .load(c)?;
                let admins = admins::table
                    .order(admins::username.asc())
                    .select(AdminRow::as_select())
                    .load(c)?;
                let keys = api_keys::table
                    .order(api_keys::key_id.asc())
                    .select(ApiKeyData::as_select())
                    .load(c)?;
                let api_keys = api_key_rows(c, keys)?;
                let name_of: std::collections::HashMap<i64, String> = user_rows
                    .iter()
                    .map(|u| (u.id, u.data.username.clone()))
                    .collect();
                let mut folder_users: std::collections::HashMap<i64, Vec<String>> =
                    Default::default();
                let mut user_maps: std::collections::HashMap<i64, Vec<(FolderRow, Mapping)>> =
                    Default::default();
                for (user_id, f, m) in mappings {
                    if let Some(n) = name_of.get(&user_id) {
                        folder_users.entry(f.id).or_default().push(n.clone());
                    }
                    user_maps.entry(user_id).or_default().push(mount(f, m));
                }
                let users = user_rows
                    .into_iter()
                    .map(|u| {
                        let maps = user_maps.remove(&u.id).unwrap_or_default();
                        let refs = user_group_refs(c, u.id)?;
                        Ok((u, maps, refs))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                let group_rows: Vec<GroupRow> = user_groups::table
                    .order(user_groups::name.asc())
                    .select(GroupRow::as_select())
                    .load(c)?;
                let groups = group_rows
                    .into_iter()
                    .map(|g| {
                        let folders = group_folders_of(c, g.id)?;
                        let members: Vec<String> = users_groups_mapping::table
                            .inner_join(users::table)
                            .filter(users_groups_mapping::group_id.eq(g.id))
                            .order(users::username.asc())
                            .select(users::username)
                            .load(c)?;
                        Ok((g, folders, members))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                let folders = folder_rows
                    .into_iter()
                    .map(|f| {
                        let mut names = folder_users.remove(&f.id).unwrap_or_default();
                        names.sort();
                        (f, names)
                    })
                    .collect();
                Ok(DumpRows {
                    users,
                    groups,
                    folders,
                    admins,
                    api_keys,
                })
            })
        })
        .await
    }

    /// Writes a validated backup in one transaction: everything or nothing.
    /// `add_only` (mode 1) skips objects that exist; otherwise they are
    /// replaced, keeping the usage counters they have now.
    pub async fn restore(
        &self,
        plan: RestorePlan,
        add_only: bool,
    ) -> Result<RestoreReport, StoreError> {
        self.run(move |c| c.transaction(|c| restore_in(c, &plan, add_only)))
            .await
    }

    /// Replaces every user, group, folder and API key (and the admins, when
    /// the plan has some) with the plan's, in one transaction: the memory
    /// provider's reload.
    pub async fn replace_all(&self, plan: RestorePlan) -> Result<RestoreReport, StoreError> {
        self.run(move |c| {
            c.transaction(|c| {
                diesel::delete(api_keys::table).execute(c)?;
                diesel::delete(users_groups_mapping::table).execute(c)?;
                diesel::delete(users_folders_mapping::table).execute(c)?;
                diesel::delete(groups_folders_mapping::table).execute(c)?;
                diesel::delete(users::table).execute(c)?;
                diesel::delete(user_groups::table).execute(c)?;
                diesel::delete(folders::table).execute(c)?;
                if !plan.admins.is_empty() {
                    diesel::delete(admins::table).execute(c)?;
                }
                restore_in(c, &plan, false)
            })
        })
        .await
    }

    /// Records a revoked token id until `expires_at` (seconds), dropping
    /// entries whose tokens have expired anyway.
    pub async fn revoke_token(&self, jti: String, expires_at: i64) -> Result<(), StoreError> {
        self.run(move |c| {
            let now = now_ms() / 1000;
            diesel::delete(revoked_tokens::table.filter(revoked_tokens::expires_at.lt(now)))
                .execute(c)?;
            match diesel::insert_into(revoked_tokens::table)
                .values((
                    revoked_tokens::jti.eq(&jti),
                    revoked_tokens::expires_at.eq(expires_at),
                ))
                .execute(c)
            {
                Ok(_) | Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    pub async fn is_token_revoked(&self, jti: String) -> Result<bool, StoreError> {
        self.run(move |c| {
            let n: i64 = revoked_tokens::table
                .filter(revoked_tokens::jti.eq(jti))
                .count()
                .get_result(c)?;
            Ok(n > 0)
        })
        .await
    }

    /// Replaces a fleet setting only if it still holds `old` (replicas
    /// sealing the same clear value at once agree on one).
    pub async fn replace_config(
        &self,
        name: &'static str,
        old: String,
        new: String,
    ) -> Result<bool, StoreError> {
        self.run(move |c| {
            let n = diesel::update(
                configs::table
                    .filter(configs::name.eq(name))
                    .filter(configs::value.eq(old)),
            )
            .set(configs::value.eq(new))
            .execute(c)?;
            Ok(n == 1)
        })
        .await
    }

    /// SQLite: moves the write-ahead log into the database file and empties
    /// it, so pages holding replaced values are gone from disk.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.backend != Backend::Sqlite {
            return Ok(());
        }
        self.run(|c| {
            c.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)")?;
            Ok(())
        })
        .await
    }

    /// Returns the stored value of a fleet setting, creating it with `make`
    /// when absent. Racing replicas agree: the first insert wins and everyone
    /// reads it back.
    pub async fn config_or_insert<F>(
        &self,
        name: &'static str,
        make: F,
    ) -> Result<String, StoreError>
    where
        F: FnOnce() -> Result<String, StoreError> + Send + 'static,
    {
        self.run(move |c| {
            let read = |c: &mut DbConnection| -> Result<Option<String>, StoreError> {
                Ok(configs::table
                    .find(name)
                    .select(configs::value)
                    .first(c)
                    .optional()?)
            };
            if let Some(v) = read(c)? {
                return Ok(v);
            }
            let value = make()?;
            match diesel::insert_into(configs::table)
                .values((configs::name.eq(name), configs::value.eq(&value)))
                .execute(c)
            {
                Ok(_) => Ok(value),
                // Another replica inserted first: use its value.
                Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                    read(c)?.ok_or(StoreError::NotFound)
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }
}

/// Handle to the configured database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Sql(SqlStore),
    Redb(crate::redb_store::RedbStore),
}

impl Store {
    /// Connects to the configured database and brings its schema to this
    /// binary's version (refusing a schema newer than the binary).
    pub fn open(cfg: &DataProviderConfig, data_dir: &Path) -> anyhow::Result<Self> {
        let target = cfg.target(data_dir)?;
        if matches!(target.backend, Backend::Sqlite | Backend::Redb) {
            create_private(Path::new(&target.url))?;
        }
        let inner = match target.backend {
            Backend::Redb => Inner::Redb(crate::redb_store::RedbStore::open(
                target.url.into(),
                &target.describe,
            )?),
            _ => Inner::Sql(SqlStore::open(target)?),
        };
        Ok(Self { inner })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        match &self.inner {
            Inner::Sql(s) => s.backend(),
            Inner::Redb(_) => Backend::Redb,
        }
    }

    /// Returns the stored value of a fleet setting, creating it with `make`
    /// when absent. Racing replicas agree: the first insert wins and everyone
    /// reads it back.
    pub async fn config_or_insert<F>(
        &self,
        name: &'static str,
        make: F,
    ) -> Result<String, StoreError>
    where
        F: FnOnce() -> Result<String, StoreError> + Send + 'static,
    {
        match &self.inner {
            Inner::Sql(s) => s.config_or_insert(name, make).await,
            Inner::Redb(s) => s.config_or_insert(name, make).await,
        }
    }
}

/// Creates a database file that does not exist yet as an empty file only
/// its owner may read (it holds password hashes and, without a master key,
/// host keys); both SQLite and redb start a new database in an empty file.
/// An existing file keeps its mode.
fn create_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot create the database file {}: {e}",
            path.display()
        )),
    }
}

/// The store's operations, each forwarded to the backend in use (see the
/// SQL and redb implementations for what each does).
macro_rules! forward {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Store {
            $(
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    match &self.inner {
                        Inner::Sql(s) => s.$name($($arg),*).await,
                        Inner::Redb(s) => s.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

forward! {
    fn ping(&self) -> ();
    fn user(&self, username: String) -> UserRow;
    fn users(&self, offset: i64, limit: i64, order: Order) -> Vec<UserRow>;
    fn add_user(&self, data: UserData, mappings: Vec<NewMapping>) -> UserRow;
    fn update_user(&self, id: i64, data: UserData, mappings: Vec<NewMapping>) -> ();
    fn add_user_full(&self, w: UserWrite) -> UserRow;
    fn update_user_full(&self, id: i64, w: UserWrite) -> ();
    fn user_groups(&self, user_id: i64) -> Vec<GroupRef>;
    fn member_groups(&self, user_id: i64) -> Vec<MemberGroup>;
    fn group(&self, name: String) -> GroupRow;
    fn groups(&self, offset: i64, limit: i64, order: Order) -> Vec<GroupRow>;
    fn group_details(&self, group_id: i64) -> (Mounts, Vec<String>);
    fn add_group(&self, data: GroupData, mappings: Vec<Mapping>) -> GroupRow;
    fn update_group(&self, id: i64, data: GroupData, mappings: Vec<Mapping>) -> ();
    fn delete_group(&self, name: String) -> ();
    fn user_folders(&self, user_id: i64) -> Mounts;
    fn folder(&self, name: String) -> FolderRow;
    fn folders(&self, offset: i64, limit: i64, order: Order) -> Vec<FolderRow>;
    fn folder_users(&self, folder_id: i64) -> Vec<String>;
    fn add_folder(&self, data: FolderData) -> FolderRow;
    fn update_folder(&self, id: i64, description: String, path: String, filesystem: String) -> ();
    fn delete_folder(&self, name: String) -> ();
    fn set_quota_usage(&self, username: String, folder: String, size: i64, files: i64, when_ms: i64) -> ();
    fn add_folder_quota_usage(&self, name: String, size_delta: i64, files_delta: i64, when_ms: i64) -> ();
    fn delete_user(&self, username: String) -> ();
    fn set_last_login(&self, username: String, when_ms: i64) -> ();
    fn replace_password(&self, username: String, old: String, new: String) -> bool;
    fn add_quota_usage(&self, username: String, size_delta: i64, files_delta: i64, when_ms: i64) -> ();
    fn admin(&self, username: String) -> AdminRow;
    fn count_admins(&self) -> i64;
    fn add_admin(&self, data: AdminData) -> ();
    fn admins(&self, offset: i64, limit: i64, order: Order) -> Vec<AdminRow>;
    fn update_admin(&self, id: i64, data: AdminData) -> ();
    fn delete_admin(&self, username: String) -> ();
    fn set_admin_last_login(&self, username: String, when_ms: i64) -> ();
    fn api_key(&self, key_id: String) -> ApiKeyRow;
    fn api_keys(&self, offset: i64, limit: i64, order: Order) -> Vec<ApiKeyRow>;
    fn add_api_key(&self, key: NewApiKey) -> ();
    fn update_api_key(&self, key: NewApiKey) -> ();
    fn delete_api_key(&self, key_id: String) -> ();
    fn touch_api_key(&self, key_id: String, when_ms: i64) -> ();
    fn dump(&self) -> DumpRows;
    fn restore(&self, plan: RestorePlan, add_only: bool) -> RestoreReport;
    fn replace_all(&self, plan: RestorePlan) -> RestoreReport;
    fn revoke_token(&self, jti: String, expires_at: i64) -> ();
    fn is_token_revoked(&self, jti: String) -> bool;
    fn replace_config(&self, name: &'static str, old: String, new: String) -> bool;
    fn checkpoint(&self) -> ();
}

/// Writes a validated backup inside the caller's transaction.
fn restore_in(
    c: &mut DbConnection,
    plan: &RestorePlan,
    add_only: bool,
) -> Result<RestoreReport, StoreError> {
    let mut report = RestoreReport::default();
    for f in &plan.folders {
        let what = format!("folder {:?}", f.name);
        let existing: Option<i64> = folders::table
            .filter(folders::name.eq(&f.name))
            .select(folders::id)
            .first(c)
            .optional()?;
        match existing {
            Some(_) if add_only => report.skipped += 1,
            Some(id) => {
                diesel::update(folders::table.find(id))
                    .set((
                        folders::description.eq(&f.description),
                        folders::path.eq(&f.path),
                        folders::filesystem.eq(&f.filesystem),
                    ))
                    .execute(c)
                    .map_err(|e| about(&what, e.into()))?;
                report.updated += 1;
            }
            None => {
                diesel::insert_into(folders::table)
                    .values(f)
                    .execute(c)
                    .map_err(|e| about(&what, e.into()))?;
                report.added += 1;
            }
        }
    }
    for (g, maps) in &plan.groups {
        let what = format!("group {:?}", g.name);
        let existing: Option<i64> = user_groups::table
            .filter(user_groups::name.eq(&g.name))
            .select(user_groups::id)
            .first(c)
            .optional()?;
        let id = match existing {
            Some(_) if add_only => {
                report.skipped += 1;
                continue;
            }
            Some(id) => {
                diesel::update(user_groups::table.find(id))
                    .set(g)
                    .execute(c)
                    .map_err(|e| about(&what, e.into()))?;
                report.updated += 1;
                id
            }
            None => {
                diesel::insert_into(user_groups::table)
                    .values(g)
                    .execute(c)
                    .map_err(|e| about(&what, e.into()))?;
                report.added += 1;
                user_groups::table
                    .filter(user_groups::name.eq(&g.name))
                    .select(user_groups::id)
                    .first(c)?
            }
        };
        set_group_folders(c, id, maps).map_err(|e| about(&what, e))?;
    }
    for a in &plan.admins {
        let what = format!("admin {:?}", a.username);
        let existing: Option<i64> = admins::table
            .filter(admins::username.eq(&a.username))
            .select(admins::id)
            .first(c)
            .optional()?;
        match existing {
            Some(_) if add_only => report.skipped += 1,
            Some(id) => {
                diesel::update(admins::table.find(id))
                    .set(a)
                    .execute(c)
                    .map_err(|e| about(&what, e.into()))?;
                report.updated += 1;
            }
            None => {
                diesel::insert_into(admins::table)
                    .values(a)
                    .execute(c)
                    .map_err(|e| about(&what, e.into()))?;
                report.added += 1;
            }
        }
    }
    for w in &plan.users {
        let (u, maps) = (&w.data, &w.mappings);
        let what = format!("user {:?}", u.username);
        let existing: Option<UserRow> = users::table
            .filter(users::username.eq(&u.username))
            .select(UserRow::as_select())
            .first(c)
            .optional()?;
        let id = match existing {
            Some(_) if add_only => {
                report.skipped += 1;
                continue;
            }
            Some(old) => {
                let data = u.with_usage_of(&old.data);
                diesel::update(users::table.find(old.id))
                    .set(&data)
                    .execute(c)
                    .map_err(|e| about(&what, e.into()))?;
                report.updated += 1;
                report.updated_users.push(u.username.clone());
                old.id
            }
            None => {
                diesel::insert_into(users::table)
                    .values(u)
                    .execute(c)
                    .map_err(|e| about(&what, e.into()))?;
                report.added += 1;
                users::table
                    .filter(users::username.eq(&u.username))
                    .select(users::id)
                    .first(c)?
            }
        };
        set_mappings(c, id, maps).map_err(|e| about(&what, e))?;
        set_user_groups(c, id, &w.groups).map_err(|e| about(&what, e))?;
        report.restored_users.push(u.username.clone());
    }
    for k in &plan.api_keys {
        let what = format!("API key {:?}", k.data.key_id);
        let mut k = k.clone();
        api_key_owner_ids(c, &mut k).map_err(|e| about(&what, e))?;
        let existing: Option<i64> = api_keys::table
            .filter(api_keys::key_id.eq(&k.data.key_id))
            .select(api_keys::id)
            .first(c)
            .optional()?;
        match existing {
            Some(_) if add_only => report.skipped += 1,
            Some(id) => {
                diesel::update(api_keys::table.find(id))
                    .set(&k.data)
                    .execute(c)
                    .map_err(|e| about(&what, e.into()))?;
                report.updated += 1;
            }
            None => {
                diesel::insert_into(api_keys::table)
                    .values(&k.data)
                    .execute(c)
                    .map_err(|e| about(&what, e.into()))?;
                report.added += 1;
            }
        }
    }
    Ok(report)
}

/// Milliseconds since the Unix epoch, the unit of every timestamp we store.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
