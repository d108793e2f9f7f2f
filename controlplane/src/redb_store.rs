//! The redb provider: users, groups, folders, admins and API keys in one
//! embedded redb file (the role bbolt plays for SFTPGo), with the same rules
//! as the SQL store: unique names, mappings that follow their objects,
//! cascades where SQL has `ON DELETE CASCADE`, all-or-nothing writes.
//!
//! Layout (version 1): every table maps `&str` keys to bytes. Objects are
//! JSON under a 20-digit zero-padded id (`users`, `folders`, `groups`,
//! `admins`), with a name → id index beside each (`*_names`), so lists come
//! out ordered by name as SQL's `ORDER BY` gives them. Relations are
//! `"{left}/{right}"` keys in both directions (`user_folders` and
//! `folder_users`, …) so either side is one prefix scan. API keys are keyed by
//! their public id. `meta` holds the layout version and the id sequences.
//!
//! redb serialises write transactions, so a counter update (quota usage) is
//! a read and a write inside one write transaction: exact under any
//! concurrency, without the application ever holding a stale value. A redb
//! file has one owner process: a second process opening it gets a clear
//! error instead of sharing it.

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;

use redb::{
    Database, DatabaseError, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::{
    AdminData, AdminRow, ApiKeyData, ApiKeyRow, DumpRows, FolderData, FolderRow, GroupData,
    GroupRef, GroupRow, Mapping, MemberGroup, Mounts, NewApiKey, NewMapping, Order, RestorePlan,
    RestoreReport, StoreError, UserData, UserRow, UserWrite, about, now_ms,
};

type Def = TableDefinition<'static, &'static str, &'static [u8]>;
type R<T> = Result<T, StoreError>;

const META: Def = TableDefinition::new("meta");
const USERS: Def = TableDefinition::new("users");
const USER_NAMES: Def = TableDefinition::new("user_names");
const FOLDERS: Def = TableDefinition::new("folders");
const FOLDER_NAMES: Def = TableDefinition::new("folder_names");
const GROUPS: Def = TableDefinition::new("groups");
const GROUP_NAMES: Def = TableDefinition::new("group_names");
const ADMINS: Def = TableDefinition::new("admins");
const ADMIN_NAMES: Def = TableDefinition::new("admin_names");
/// `"{user}/{folder}"` → [`Link`]; `folder_users` is the reverse index.
const USER_FOLDERS: Def = TableDefinition::new("user_folders");
const FOLDER_USERS: Def = TableDefinition::new("folder_users");
/// `"{group}/{folder}"` → [`Link`]; `folder_groups` is the reverse index.
const GROUP_FOLDERS: Def = TableDefinition::new("group_folders");
const FOLDER_GROUPS: Def = TableDefinition::new("folder_groups");
/// `"{user}/{group}"` → group type; `group_users` is the reverse index.
const USER_GROUPS: Def = TableDefinition::new("user_groups");
const GROUP_USERS: Def = TableDefinition::new("group_users");
/// key id → [`ApiKeyData`]; `"{owner}/{key id}"` indexes for cascades.
const API_KEYS: Def = TableDefinition::new("api_keys");
const ADMIN_KEYS: Def = TableDefinition::new("admin_keys");
const USER_KEYS: Def = TableDefinition::new("user_keys");
/// token id → expiry (seconds, decimal).
const REVOKED: Def = TableDefinition::new("revoked_tokens");
/// fleet settings: name → value.
const CONFIGS: Def = TableDefinition::new("configs");

const ALL_TABLES: [Def; 20] = [
    META,
    USERS,
    USER_NAMES,
    FOLDERS,
    FOLDER_NAMES,
    GROUPS,
    GROUP_NAMES,
    ADMINS,
    ADMIN_NAMES,
    USER_FOLDERS,
    FOLDER_USERS,
    GROUP_FOLDERS,
    FOLDER_GROUPS,
    USER_GROUPS,
    GROUP_USERS,
    API_KEYS,
    ADMIN_KEYS,
    USER_KEYS,
    REVOKED,
    CONFIGS,
];

/// Layout upgrades, applied in order, one write transaction each; the layout
/// version is the number applied.
const STEPS: &[(&str, Step)] = &[("create tables", create_tables)];

/// One layout upgrade, run inside its write transaction.
type Step = fn(&WriteTransaction) -> R<()>;

fn create_tables(tx: &WriteTransaction) -> R<()> {
    for t in ALL_TABLES {
        tx.open_table(t).map_err(ie)?;
    }
    Ok(())
}

/// Any redb failure: the store's view of it.
fn ie(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("redb: {e}"))
}

fn id_key(id: i64) -> String {
    format!("{id:020}")
}

fn pair(a: i64, b: i64) -> String {
    format!("{a:020}/{b:020}")
}

/// The numbers in a `"{a}/{b}"` relation key.
fn split_pair(key: &str) -> R<(i64, i64)> {
    let bad = || StoreError::Internal(format!("redb: malformed relation key {key:?}"));
    let (a, b) = key.split_once('/').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}

fn to_json<T: Serialize>(v: &T) -> R<Vec<u8>> {
    serde_json::to_vec(v).map_err(ie)
}

fn from_json<T: DeserializeOwned>(b: &[u8]) -> R<T> {
    serde_json::from_slice(b).map_err(ie)
}

/// Reads shared by read and write transactions.
trait Kv {
    fn get(&self, t: Def, key: &str) -> R<Option<Vec<u8>>>;
    /// Entries whose key starts with `prefix`, in key order (reversed with
    /// `rev`), after skipping `skip`, at most `take`.
    fn scan(
        &self,
        t: Def,
        prefix: &str,
        rev: bool,
        skip: usize,
        take: usize,
    ) -> R<Vec<(String, Vec<u8>)>>;
    fn count(&self, t: Def) -> R<u64>;
}

fn scan_table<T: ReadableTable<&'static str, &'static [u8]>>(
    table: &T,
    prefix: &str,
    rev: bool,
    skip: usize,
    take: usize,
) -> R<Vec<(String, Vec<u8>)>> {
    // The first key after every key starting with `prefix`.
    let end = prefix.chars().last().map(|c| {
        let mut e = prefix[..prefix.len() - c.len_utf8()].to_string();
        e.push(char::from_u32(c as u32 + 1).unwrap_or(char::MAX));
        e
    });
    let range: (Bound<&str>, Bound<&str>) = match &end {
        None => (Bound::Unbounded, Bound::Unbounded),
        Some(e) => (Bound::Included(prefix), Bound::Excluded(e.as_str())),
    };
    let iter = table.range::<&str>(range).map_err(ie)?;
    let pick = |item: Result<_, redb::StorageError>| -> R<(String, Vec<u8>)> {
        let (k, v): (
            redb::AccessGuard<&'static str>,
            redb::AccessGuard<&'static [u8]>,
        ) = item.map_err(ie)?;
        Ok((k.value().to_string(), v.value().to_vec()))
    };
    if rev {
        iter.rev().skip(skip).take(take).map(pick).collect()
    } else {
        iter.skip(skip).take(take).map(pick).collect()
    }
}

/// Both transaction kinds read alike (a write transaction sees its own
/// writes).
macro_rules! impl_kv {
    ($tx:ty) => {
        impl Kv for $tx {
            fn get(&self, t: Def, key: &str) -> R<Option<Vec<u8>>> {
                let table = self.open_table(t).map_err(ie)?;
                Ok(table.get(key).map_err(ie)?.map(|v| v.value().to_vec()))
            }
            fn scan(
                &self,
                t: Def,
                prefix: &str,
                rev: bool,
                skip: usize,
                take: usize,
            ) -> R<Vec<(String, Vec<u8>)>> {
                scan_table(&self.open_table(t).map_err(ie)?, prefix, rev, skip, take)
            }
            fn count(&self, t: Def) -> R<u64> {
                self.open_table(t).map_err(ie)?.len().map_err(ie)
            }
        }
    };
}

impl_kv!(ReadTransaction);
impl_kv!(WriteTransaction);

/// A stored decimal number (ids, sequences, group types, expiries).
fn decimal(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn put(tx: &WriteTransaction, t: Def, key: &str, value: &[u8]) -> R<()> {
    tx.open_table(t)
        .map_err(ie)?
        .insert(key, value)
        .map_err(ie)?;
    Ok(())
}

fn del(tx: &WriteTransaction, t: Def, key: &str) -> R<bool> {
    Ok(tx
        .open_table(t)
        .map_err(ie)?
        .remove(key)
        .map_err(ie)?
        .is_some())
}

/// Removes every entry whose key starts with `prefix`; returns their keys.
fn del_prefix(tx: &WriteTransaction, t: Def, prefix: &str) -> R<Vec<String>> {
    let keys: Vec<String> = tx
        .scan(t, prefix, false, 0, usize::MAX)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut table = tx.open_table(t).map_err(ie)?;
    for k in &keys {
        table.remove(k.as_str()).map_err(ie)?;
    }
    Ok(keys)
}

/// A named object kind: rows by id, an index by name, an id sequence.
struct Kind {
    rows: Def,
    names: Def,
    seq: &'static str,
    /// What a duplicate name violates, for the error.
    unique: &'static str,
}

const USER: Kind = Kind {
    rows: USERS,
    names: USER_NAMES,
    seq: "seq/users",
    unique: "users.username",
};
const FOLDER: Kind = Kind {
    rows: FOLDERS,
    names: FOLDER_NAMES,
    seq: "seq/folders",
    unique: "folders.name",
};
const GROUP: Kind = Kind {
    rows: GROUPS,
    names: GROUP_NAMES,
    seq: "seq/groups",
    unique: "user_groups.name",
};
const ADMIN: Kind = Kind {
    rows: ADMINS,
    names: ADMIN_NAMES,
    seq: "seq/admins",
    unique: "admins.username",
};

fn id_of(kv: &impl Kv, kind: &Kind, name: &str) -> R<Option<i64>> {
    match kv.get(kind.names, name)? {
        None => Ok(None),
        Some(b) => Ok(Some(
            decimal(&b).ok_or_else(|| ie(format!("malformed id for {name:?}")))?,
        )),
    }
}

fn row<T: DeserializeOwned>(kv: &impl Kv, kind: &Kind, id: i64) -> R<Option<T>> {
    kv.get(kind.rows, &id_key(id))?
        .map(|b| from_json(&b))
        .transpose()
}

fn by_name<T: DeserializeOwned>(kv: &impl Kv, kind: &Kind, name: &str) -> R<Option<(i64, T)>> {
    let Some(id) = id_of(kv, kind, name)? else {
        return Ok(None);
    };
    let data = row(kv, kind, id)?.ok_or_else(|| ie(format!("index names missing row {id}")))?;
    Ok(Some((id, data)))
}

/// The next id of a kind (1, 2, …; never reused).
fn next_id(tx: &WriteTransaction, kind: &Kind) -> R<i64> {
    let last: i64 = match tx.get(META, kind.seq)? {
        Some(b) => decimal(&b).ok_or_else(|| ie("malformed sequence"))?,
        None => 0,
    };
    let id = last + 1;
    put(tx, META, kind.seq, id.to_string().as_bytes())?;
    Ok(id)
}

fn insert<T: Serialize>(tx: &WriteTransaction, kind: &Kind, name: &str, data: &T) -> R<i64> {
    if id_of(tx, kind, name)?.is_some() {
        return Err(StoreError::AlreadyExists(format!(
            "{} {name:?} is taken",
            kind.unique
        )));
    }
    let id = next_id(tx, kind)?;
    put(tx, kind.rows, &id_key(id), &to_json(data)?)?;
    put(tx, kind.names, name, id.to_string().as_bytes())?;
    Ok(id)
}

/// Replaces a stored object, renaming its index entry when the name
/// changed (refused when the new name is taken).
fn replace<T: Serialize>(
    tx: &WriteTransaction,
    kind: &Kind,
    id: i64,
    old_name: &str,
    name: &str,
    data: &T,
) -> R<()> {
    if old_name != name {
        if id_of(tx, kind, name)?.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "{} {name:?} is taken",
                kind.unique
            )));
        }
        del(tx, kind.names, old_name)?;
        put(tx, kind.names, name, id.to_string().as_bytes())?;
    }
    put(tx, kind.rows, &id_key(id), &to_json(data)?)
}

fn remove(tx: &WriteTransaction, kind: &Kind, id: i64, name: &str) -> R<()> {
    del(tx, kind.rows, &id_key(id))?;
    del(tx, kind.names, name)?;
    Ok(())
}

/// A page of a kind ordered by name.
fn list<T: DeserializeOwned>(
    kv: &impl Kv,
    kind: &Kind,
    offset: i64,
    limit: i64,
    order: Order,
) -> R<Vec<(i64, T)>> {
    let names = kv.scan(
        kind.names,
        "",
        order == Order::Desc,
        offset.max(0) as usize,
        limit.max(0) as usize,
    )?;
    // The index entries hold the ids: one row read per object.
    names
        .into_iter()
        .map(|(name, id)| {
            let id = decimal(&id).ok_or_else(|| ie(format!("malformed id for {name:?}")))?;
            let data = row(kv, kind, id)?
                .ok_or_else(|| ie(format!("{name:?} is indexed but has no row")))?;
            Ok((id, data))
        })
        .collect()
}

/// A mapping's own columns.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Link {
    virtual_path: String,
    quota_size: i64,
    quota_files: i64,
}

/// Mounts of a user (`USER_FOLDERS`) or group (`GROUP_FOLDERS`), by virtual
/// path.
fn mounts_of(kv: &impl Kv, t: Def, owner: i64) -> R<Mounts> {
    let mut out = Vec::new();
    for (key, value) in kv.scan(t, &format!("{}/", id_key(owner)), false, 0, usize::MAX)? {
        let (_, folder_id) = split_pair(&key)?;
        let link: Link = from_json(&value)?;
        let data: FolderData =
            row(kv, &FOLDER, folder_id)?.ok_or_else(|| ie("mapping to a missing folder"))?;
        let folder = data.name.clone();
        out.push((
            FolderRow {
                id: folder_id,
                data,
            },
            Mapping {
                folder,
                virtual_path: link.virtual_path,
                quota_size: link.quota_size,
                quota_files: link.quota_files,
            },
        ));
    }
    out.sort_by(|a, b| a.1.virtual_path.cmp(&b.1.virtual_path));
    Ok(out)
}

/// The right-hand ids of `"{left}/{right}"` keys under `left`.
fn related(kv: &impl Kv, t: Def, left: i64) -> R<Vec<i64>> {
    kv.scan(t, &format!("{}/", id_key(left)), false, 0, usize::MAX)?
        .iter()
        .map(|(k, _)| split_pair(k).map(|(_, r)| r))
        .collect()
}

/// Usernames of user ids, sorted.
fn usernames(kv: &impl Kv, ids: Vec<i64>) -> R<Vec<String>> {
    let mut names = ids
        .into_iter()
        .map(|id| {
            row::<UserData>(kv, &USER, id)?
                .map(|u| u.username)
                .ok_or_else(|| ie(format!("relation to missing user {id}")))
        })
        .collect::<R<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Removes a relation in both directions (`"{a}/{b}"` in `t`, `"{b}/{a}"` in
/// `reverse`) for every `b` under `a`.
fn unlink_all(tx: &WriteTransaction, t: Def, reverse: Def, a: i64) -> R<()> {
    for key in del_prefix(tx, t, &format!("{}/", id_key(a)))? {
        let (_, b) = split_pair(&key)?;
        del(tx, reverse, &pair(b, a))?;
    }
    Ok(())
}

fn set_mappings(tx: &WriteTransaction, user_id: i64, wanted: &[NewMapping]) -> R<()> {
    unlink_all(tx, USER_FOLDERS, FOLDER_USERS, user_id)?;
    for m in wanted {
        let folder_id = match (id_of(tx, &FOLDER, &m.mapping.folder)?, &m.create) {
            (Some(id), _) => id,
            (None, Some(data)) => insert(tx, &FOLDER, &data.name, data)?,
            (None, None) => {
                return Err(StoreError::Invalid(format!(
                    "virtual folder {:?} does not exist (give mapped_path to create it)",
                    m.mapping.folder
                )));
            }
        };
        link(
            tx,
            (USER_FOLDERS, FOLDER_USERS),
            user_id,
            folder_id,
            &m.mapping,
            "users_folders_mapping",
        )?;
    }
    Ok(())
}

fn link(
    tx: &WriteTransaction,
    (t, reverse): (Def, Def),
    owner: i64,
    folder_id: i64,
    m: &Mapping,
    what: &str,
) -> R<()> {
    let key = pair(owner, folder_id);
    if tx.get(t, &key)?.is_some() {
        return Err(StoreError::AlreadyExists(format!(
            "{what}: folder {:?} is mapped twice",
            m.folder
        )));
    }
    let l = Link {
        virtual_path: m.virtual_path.clone(),
        quota_size: m.quota_size,
        quota_files: m.quota_files,
    };
    put(tx, t, &key, &to_json(&l)?)?;
    put(tx, reverse, &pair(folder_id, owner), b"")
}

fn set_group_folders(tx: &WriteTransaction, group_id: i64, wanted: &[Mapping]) -> R<()> {
    unlink_all(tx, GROUP_FOLDERS, FOLDER_GROUPS, group_id)?;
    for m in wanted {
        let folder_id = id_of(tx, &FOLDER, &m.folder)?.ok_or_else(|| {
            StoreError::Invalid(format!("virtual folder {:?} does not exist", m.folder))
        })?;
        link(
            tx,
            (GROUP_FOLDERS, FOLDER_GROUPS),
            group_id,
            folder_id,
            m,
            "groups_folders_mapping",
        )?;
    }
    Ok(())
}

fn set_user_groups(tx: &WriteTransaction, user_id: i64, wanted: &[GroupRef]) -> R<()> {
    unlink_all(tx, USER_GROUPS, GROUP_USERS, user_id)?;
    for g in wanted {
        let group_id = id_of(tx, &GROUP, &g.name)?
            .ok_or_else(|| StoreError::Invalid(format!("group {:?} does not exist", g.name)))?;
        let key = pair(user_id, group_id);
        if tx.get(USER_GROUPS, &key)?.is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "users_groups_mapping: group {:?} is listed twice",
                g.name
            )));
        }
        put(tx, USER_GROUPS, &key, g.group_type.to_string().as_bytes())?;
        put(tx, GROUP_USERS, &pair(group_id, user_id), b"")?;
    }
    Ok(())
}

/// A user's groups with their types, primary first, then by name.
fn memberships(kv: &impl Kv, user_id: i64) -> R<Vec<(GroupRow, i64)>> {
    let mut out = Vec::new();
    for (key, value) in kv.scan(
        USER_GROUPS,
        &format!("{}/", id_key(user_id)),
        false,
        0,
        usize::MAX,
    )? {
        let (_, group_id) = split_pair(&key)?;
        let group_type = decimal(&value).ok_or_else(|| ie("malformed group type"))?;
        let data: GroupData =
            row(kv, &GROUP, group_id)?.ok_or_else(|| ie("membership of a missing group"))?;
        out.push((GroupRow { id: group_id, data }, group_type));
    }
    out.sort_by(|a, b| (a.1, &a.0.data.name).cmp(&(b.1, &b.0.data.name)));
    Ok(out)
}

fn group_refs(kv: &impl Kv, user_id: i64) -> R<Vec<GroupRef>> {
    Ok(memberships(kv, user_id)?
        .into_iter()
        .map(|(g, group_type)| GroupRef {
            name: g.data.name,
            group_type,
        })
        .collect())
}

/// Resolves a key's owner names to ids.
fn api_key_owner_ids(kv: &impl Kv, key: &mut NewApiKey) -> R<()> {
    key.data.admin_id = match &key.admin {
        None => None,
        Some(name) => Some(
            id_of(kv, &ADMIN, name)?
                .ok_or_else(|| StoreError::Invalid(format!("admin {name:?} does not exist")))?,
        ),
    };
    key.data.user_id = match &key.user {
        None => None,
        Some(name) => Some(
            id_of(kv, &USER, name)?
                .ok_or_else(|| StoreError::Invalid(format!("user {name:?} does not exist")))?,
        ),
    };
    Ok(())
}

fn api_key_row(kv: &impl Kv, data: ApiKeyData) -> R<ApiKeyRow> {
    let admin = match data.admin_id {
        Some(id) => Some(
            row::<AdminData>(kv, &ADMIN, id)?
                .ok_or_else(|| ie("API key of a missing admin"))?
                .username,
        ),
        None => None,
    };
    let user = match data.user_id {
        Some(id) => Some(
            row::<UserData>(kv, &USER, id)?
                .ok_or_else(|| ie("API key of a missing user"))?
                .username,
        ),
        None => None,
    };
    Ok(ApiKeyRow { data, admin, user })
}

/// Writes a key and its owner index entries, replacing the old ones.
fn put_api_key(tx: &WriteTransaction, old: Option<&ApiKeyData>, data: &ApiKeyData) -> R<()> {
    if let Some(old) = old {
        if let Some(a) = old.admin_id {
            del(tx, ADMIN_KEYS, &format!("{}/{}", id_key(a), old.key_id))?;
        }
        if let Some(u) = old.user_id {
            del(tx, USER_KEYS, &format!("{}/{}", id_key(u), old.key_id))?;
        }
    }
    put(tx, API_KEYS, &data.key_id, &to_json(data)?)?;
    if let Some(a) = data.admin_id {
        put(
            tx,
            ADMIN_KEYS,
            &format!("{}/{}", id_key(a), data.key_id),
            b"",
        )?;
    }
    if let Some(u) = data.user_id {
        put(
            tx,
            USER_KEYS,
            &format!("{}/{}", id_key(u), data.key_id),
            b"",
        )?;
    }
    Ok(())
}

fn stored_key(kv: &impl Kv, key_id: &str) -> R<Option<ApiKeyData>> {
    kv.get(API_KEYS, key_id)?.map(|b| from_json(&b)).transpose()
}

/// Deletes a stored key and its owner index entries.
fn drop_api_key(tx: &WriteTransaction, data: &ApiKeyData) -> R<()> {
    for (index, owner) in [(ADMIN_KEYS, data.admin_id), (USER_KEYS, data.user_id)] {
        if let Some(o) = owner {
            del(tx, index, &format!("{}/{}", id_key(o), data.key_id))?;
        }
    }
    del(tx, API_KEYS, &data.key_id)?;
    Ok(())
}

/// Deletes the API keys listed under an owner (`"{owner}/{key id}"`).
fn delete_owned_keys(tx: &WriteTransaction, index: Def, owner: i64) -> R<()> {
    for (key, _) in tx.scan(index, &format!("{}/", id_key(owner)), false, 0, usize::MAX)? {
        // 20 digits and a slash, then the key id.
        if let Some(data) = stored_key(tx, &key[21..])? {
            drop_api_key(tx, &data)?;
        }
    }
    Ok(())
}

fn delete_user_in(tx: &WriteTransaction, id: i64, username: &str) -> R<()> {
    unlink_all(tx, USER_FOLDERS, FOLDER_USERS, id)?;
    unlink_all(tx, USER_GROUPS, GROUP_USERS, id)?;
    delete_owned_keys(tx, USER_KEYS, id)?;
    remove(tx, &USER, id, username)
}

/// Replaces every entry of the listed tables with nothing.
fn clear(tx: &WriteTransaction, tables: &[Def]) -> R<()> {
    for t in tables {
        tx.open_table(*t)
            .map_err(ie)?
            .retain(|_, _| false)
            .map_err(ie)?;
    }
    Ok(())
}

/// Handle to a redb file; cheap to clone.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

impl RedbStore {
    /// Opens (creating when absent) the file and brings its layout to this
    /// binary's version, refusing a newer one.
    pub fn open(path: PathBuf, describe: &str) -> anyhow::Result<Self> {
        let db = Database::create(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
                "{describe} is open in another process: a redb file has one owner, so stop the \
                 other ferry (or use its REST API) first"
            ),
            other => anyhow::anyhow!("cannot open {describe}: {other}"),
        })?;
        let store = Self { db: Arc::new(db) };
        store
            .upgrade()
            .map_err(|e| anyhow::anyhow!("{describe}: {e}"))?;
        Ok(store)
    }

    fn version(tx: &impl Kv) -> R<usize> {
        match tx.get(META, "schema_version")? {
            None => Ok(0),
            Some(b) => decimal(&b)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| ie("malformed schema_version")),
        }
    }

    fn upgrade(&self) -> R<()> {
        loop {
            let tx = self.db.begin_write().map_err(ie)?;
            // A new file has no tables yet: `meta` is created by the first
            // step, and reading it in a write transaction creates it empty.
            let version = Self::version(&tx)?;
            if version > STEPS.len() {
                return Err(StoreError::Internal(format!(
                    "the database schema is newer than this binary (redb layout version \
                     {version}, this binary knows {}): run a newer ferry, or restore a backup \
                     made with this version",
                    STEPS.len()
                )));
            }
            let Some((what, step)) = STEPS.get(version) else {
                return Ok(());
            };
            step(&tx).map_err(|e| ie(format!("layout step {} ({what}): {e}", version + 1)))?;
            put(
                &tx,
                META,
                "schema_version",
                (version + 1).to_string().as_bytes(),
            )?;
            tx.commit().map_err(ie)?;
            tracing::info!(version = version + 1, step = what, "redb layout upgraded");
        }
    }

    async fn read<T, F>(&self, f: F) -> R<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> R<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(ie)?;
            f(&tx)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    /// Runs `f` in one write transaction, committed when it succeeds and
    /// aborted (nothing written) when it fails.
    async fn write<T, F>(&self, f: F) -> R<T>
    where
        T: Send + 'static,
        F: FnOnce(&WriteTransaction) -> R<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_write().map_err(ie)?;
            match f(&tx) {
                Ok(v) => {
                    tx.commit().map_err(ie)?;
                    Ok(v)
                }
                Err(e) => {
                    tx.abort().map_err(ie)?;
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    /// One object by name, as its row type.
    async fn one<T, Row>(&self, kind: &'static Kind, name: String, mk: fn(i64, T) -> Row) -> R<Row>
    where
        T: DeserializeOwned + 'static,
        Row: Send + 'static,
    {
        self.read(move |tx| {
            let (id, data) = by_name(tx, kind, &name)?.ok_or(StoreError::NotFound)?;
            Ok(mk(id, data))
        })
        .await
    }

    /// A page of objects ordered by name, as their row type.
    async fn page<T, Row>(
        &self,
        kind: &'static Kind,
        offset: i64,
        limit: i64,
        order: Order,
        mk: fn(i64, T) -> Row,
    ) -> R<Vec<Row>>
    where
        T: DeserializeOwned + 'static,
        Row: Send + 'static,
    {
        self.read(move |tx| {
            Ok(list(tx, kind, offset, limit, order)?
                .into_iter()
                .map(|(id, data)| mk(id, data))
                .collect())
        })
        .await
    }

    pub async fn ping(&self) -> R<()> {
        self.read(|_| Ok(())).await
    }

    pub async fn user(&self, username: String) -> R<UserRow> {
        self.one(&USER, username, |id, data| UserRow { id, data })
            .await
    }

    pub async fn users(&self, offset: i64, limit: i64, order: Order) -> R<Vec<UserRow>> {
        self.page(&USER, offset, limit, order, |id, data| UserRow { id, data })
            .await
    }

    pub async fn add_user(&self, data: UserData, mappings: Vec<NewMapping>) -> R<UserRow> {
        self.add_user_full(UserWrite {
            data,
            mappings,
            groups: Vec::new(),
        })
        .await
    }

    pub async fn update_user(&self, id: i64, data: UserData, mappings: Vec<NewMapping>) -> R<()> {
        self.write(move |tx| {
            let old: UserData = row(tx, &USER, id)?.ok_or(StoreError::NotFound)?;
            replace(tx, &USER, id, &old.username, &data.username, &data)?;
            set_mappings(tx, id, &mappings)
        })
        .await
    }

    pub async fn add_user_full(&self, w: UserWrite) -> R<UserRow> {
        self.write(move |tx| {
            let id = insert(tx, &USER, &w.data.username, &w.data)?;
            set_mappings(tx, id, &w.mappings)?;
            set_user_groups(tx, id, &w.groups)?;
            Ok(UserRow { id, data: w.data })
        })
        .await
    }

    pub async fn update_user_full(&self, id: i64, w: UserWrite) -> R<()> {
        self.write(move |tx| {
            let old: UserData = row(tx, &USER, id)?.ok_or(StoreError::NotFound)?;
            replace(tx, &USER, id, &old.username, &w.data.username, &w.data)?;
            set_mappings(tx, id, &w.mappings)?;
            set_user_groups(tx, id, &w.groups)
        })
        .await
    }

    pub async fn user_groups(&self, user_id: i64) -> R<Vec<GroupRef>> {
        self.read(move |tx| group_refs(tx, user_id)).await
    }

    pub async fn member_groups(&self, user_id: i64) -> R<Vec<MemberGroup>> {
        self.read(move |tx| {
            memberships(tx, user_id)?
                .into_iter()
                .map(|(group, group_type)| {
                    let folders = mounts_of(tx, GROUP_FOLDERS, group.id)?;
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

    pub async fn group(&self, name: String) -> R<GroupRow> {
        self.one(&GROUP, name, |id, data| GroupRow { id, data })
            .await
    }

    pub async fn groups(&self, offset: i64, limit: i64, order: Order) -> R<Vec<GroupRow>> {
        self.page(&GROUP, offset, limit, order, |id, data| GroupRow {
            id,
            data,
        })
        .await
    }

    pub async fn group_details(&self, group_id: i64) -> R<(Mounts, Vec<String>)> {
        self.read(move |tx| {
            let folders = mounts_of(tx, GROUP_FOLDERS, group_id)?;
            let users = usernames(tx, related(tx, GROUP_USERS, group_id)?)?;
            Ok((folders, users))
        })
        .await
    }

    pub async fn add_group(&self, data: GroupData, mappings: Vec<Mapping>) -> R<GroupRow> {
        self.write(move |tx| {
            let id = insert(tx, &GROUP, &data.name, &data)?;
            set_group_folders(tx, id, &mappings)?;
            Ok(GroupRow { id, data })
        })
        .await
    }

    pub async fn update_group(&self, id: i64, data: GroupData, mappings: Vec<Mapping>) -> R<()> {
        self.write(move |tx| {
            let old: GroupData = row(tx, &GROUP, id)?.ok_or(StoreError::NotFound)?;
            replace(tx, &GROUP, id, &old.name, &data.name, &data)?;
            set_group_folders(tx, id, &mappings)
        })
        .await
    }

    pub async fn delete_group(&self, name: String) -> R<()> {
        self.write(move |tx| {
            let id = id_of(tx, &GROUP, &name)?.ok_or(StoreError::NotFound)?;
            let members = related(tx, GROUP_USERS, id)?.len();
            if members > 0 {
                return Err(StoreError::Invalid(format!(
                    "group {name:?} has {members} member(s): remove it from its users first"
                )));
            }
            unlink_all(tx, GROUP_FOLDERS, FOLDER_GROUPS, id)?;
            remove(tx, &GROUP, id, &name)
        })
        .await
    }

    pub async fn user_folders(&self, user_id: i64) -> R<Mounts> {
        self.read(move |tx| mounts_of(tx, USER_FOLDERS, user_id))
            .await
    }

    pub async fn folder(&self, name: String) -> R<FolderRow> {
        self.one(&FOLDER, name, |id, data| FolderRow { id, data })
            .await
    }

    pub async fn folders(&self, offset: i64, limit: i64, order: Order) -> R<Vec<FolderRow>> {
        self.page(&FOLDER, offset, limit, order, |id, data| FolderRow {
            id,
            data,
        })
        .await
    }

    pub async fn folder_users(&self, folder_id: i64) -> R<Vec<String>> {
        self.read(move |tx| usernames(tx, related(tx, FOLDER_USERS, folder_id)?))
            .await
    }

    pub async fn add_folder(&self, data: FolderData) -> R<FolderRow> {
        self.write(move |tx| {
            let id = insert(tx, &FOLDER, &data.name, &data)?;
            Ok(FolderRow { id, data })
        })
        .await
    }

    pub async fn update_folder(
        &self,
        id: i64,
        description: String,
        path: String,
        filesystem: String,
    ) -> R<()> {
        self.write(move |tx| {
            let mut data: FolderData = row(tx, &FOLDER, id)?.ok_or(StoreError::NotFound)?;
            data.description = description;
            data.path = path;
            data.filesystem = filesystem;
            put(tx, FOLDERS, &id_key(id), &to_json(&data)?)
        })
        .await
    }

    pub async fn delete_folder(&self, name: String) -> R<()> {
        self.write(move |tx| {
            let id = id_of(tx, &FOLDER, &name)?.ok_or(StoreError::NotFound)?;
            for (index, mappings) in [(FOLDER_USERS, USER_FOLDERS), (FOLDER_GROUPS, GROUP_FOLDERS)]
            {
                unlink_all(tx, index, mappings, id)?;
            }
            remove(tx, &FOLDER, id, &name)
        })
        .await
    }

    pub async fn set_quota_usage(
        &self,
        username: String,
        folder: String,
        size: i64,
        files: i64,
        when_ms: i64,
    ) -> R<()> {
        self.write(move |tx| {
            if folder.is_empty() {
                let (id, mut u): (i64, UserData) =
                    by_name(tx, &USER, &username)?.ok_or(StoreError::NotFound)?;
                u.used_quota_size = size;
                u.used_quota_files = files;
                u.last_quota_update = when_ms;
                put(tx, USERS, &id_key(id), &to_json(&u)?)
            } else {
                let (id, mut f): (i64, FolderData) =
                    by_name(tx, &FOLDER, &folder)?.ok_or(StoreError::NotFound)?;
                f.used_quota_size = size;
                f.used_quota_files = files;
                f.last_quota_update = when_ms;
                put(tx, FOLDERS, &id_key(id), &to_json(&f)?)
            }
        })
        .await
    }

    /// Adds to a folder's used quota inside one write transaction (redb
    /// runs one writer at a time, so no update is lost).
    pub async fn add_folder_quota_usage(
        &self,
        name: String,
        size_delta: i64,
        files_delta: i64,
        when_ms: i64,
    ) -> R<()> {
        self.write(move |tx| {
            let (id, mut f): (i64, FolderData) =
                by_name(tx, &FOLDER, &name)?.ok_or(StoreError::NotFound)?;
            f.used_quota_size += size_delta;
            f.used_quota_files += files_delta;
            f.last_quota_update = when_ms;
            put(tx, FOLDERS, &id_key(id), &to_json(&f)?)
        })
        .await
    }

    pub async fn delete_user(&self, username: String) -> R<()> {
        self.write(move |tx| {
            let id = id_of(tx, &USER, &username)?.ok_or(StoreError::NotFound)?;
            delete_user_in(tx, id, &username)
        })
        .await
    }

    pub async fn set_last_login(&self, username: String, when_ms: i64) -> R<()> {
        self.write(move |tx| {
            if let Some((id, mut u)) = by_name::<UserData>(tx, &USER, &username)? {
                u.last_login = when_ms;
                put(tx, USERS, &id_key(id), &to_json(&u)?)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn replace_password(&self, username: String, old: String, new: String) -> R<bool> {
        self.write(move |tx| match by_name::<UserData>(tx, &USER, &username)? {
            Some((id, mut u)) if u.password.as_deref() == Some(old.as_str()) => {
                u.password = Some(new);
                put(tx, USERS, &id_key(id), &to_json(&u)?)?;
                Ok(true)
            }
            _ => Ok(false),
        })
        .await
    }

    /// Adds to a user's used quota inside one write transaction (exact under
    /// concurrency: redb serialises writers).
    pub async fn add_quota_usage(
        &self,
        username: String,
        size_delta: i64,
        files_delta: i64,
        when_ms: i64,
    ) -> R<()> {
        self.write(move |tx| {
            let (id, mut u): (i64, UserData) =
                by_name(tx, &USER, &username)?.ok_or(StoreError::NotFound)?;
            u.used_quota_size += size_delta;
            u.used_quota_files += files_delta;
            u.last_quota_update = when_ms;
            put(tx, USERS, &id_key(id), &to_json(&u)?)
        })
        .await
    }

    pub async fn admin(&self, username: String) -> R<AdminRow> {
        self.one(&ADMIN, username, |id, data| AdminRow { id, data })
            .await
    }

    pub async fn count_admins(&self) -> R<i64> {
        self.read(|tx| Ok(tx.count(ADMINS)? as i64)).await
    }

    pub async fn add_admin(&self, data: AdminData) -> R<()> {
        self.write(move |tx| insert(tx, &ADMIN, &data.username, &data).map(|_| ()))
            .await
    }

    pub async fn admins(&self, offset: i64, limit: i64, order: Order) -> R<Vec<AdminRow>> {
        self.page(&ADMIN, offset, limit, order, |id, data| AdminRow {
            id,
            data,
        })
        .await
    }

    pub async fn update_admin(&self, id: i64, data: AdminData) -> R<()> {
        self.write(move |tx| {
            let old: AdminData = row(tx, &ADMIN, id)?.ok_or(StoreError::NotFound)?;
            replace(tx, &ADMIN, id, &old.username, &data.username, &data)
        })
        .await
    }

    pub async fn delete_admin(&self, username: String) -> R<()> {
        self.write(move |tx| {
            let id = id_of(tx, &ADMIN, &username)?.ok_or(StoreError::NotFound)?;
            delete_owned_keys(tx, ADMIN_KEYS, id)?;
            remove(tx, &ADMIN, id, &username)
        })
        .await
    }

    pub async fn set_admin_last_login(&self, username: String, when_ms: i64) -> R<()> {
        self.write(move |tx| {
            if let Some((id, mut a)) = by_name::<AdminData>(tx, &ADMIN, &username)? {
                a.last_login = when_ms;
                put(tx, ADMINS, &id_key(id), &to_json(&a)?)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn api_key(&self, key_id: String) -> R<ApiKeyRow> {
        self.read(move |tx| {
            let data = stored_key(tx, &key_id)?.ok_or(StoreError::NotFound)?;
            api_key_row(tx, data)
        })
        .await
    }

    pub async fn api_keys(&self, offset: i64, limit: i64, order: Order) -> R<Vec<ApiKeyRow>> {
        self.read(move |tx| {
            tx.scan(
                API_KEYS,
                "",
                order == Order::Desc,
                offset.max(0) as usize,
                limit.max(0) as usize,
            )?
            .into_iter()
            .map(|(_, b)| api_key_row(tx, from_json(&b)?))
            .collect()
        })
        .await
    }

    pub async fn add_api_key(&self, mut key: NewApiKey) -> R<()> {
        self.write(move |tx| {
            api_key_owner_ids(tx, &mut key)?;
            if stored_key(tx, &key.data.key_id)?.is_some() {
                return Err(StoreError::AlreadyExists(format!(
                    "api_keys.key_id {:?} is taken",
                    key.data.key_id
                )));
            }
            put_api_key(tx, None, &key.data)
        })
        .await
    }

    pub async fn update_api_key(&self, mut key: NewApiKey) -> R<()> {
        self.write(move |tx| {
            api_key_owner_ids(tx, &mut key)?;
            let old = stored_key(tx, &key.data.key_id)?.ok_or(StoreError::NotFound)?;
            let d = &key.data;
            let new = ApiKeyData {
                name: d.name.clone(),
                scope: d.scope,
                expires_at: d.expires_at,
                description: d.description.clone(),
                admin_id: d.admin_id,
                user_id: d.user_id,
                updated_at: d.updated_at,
                ..old.clone()
            };
            put_api_key(tx, Some(&old), &new)
        })
        .await
    }

    pub async fn delete_api_key(&self, key_id: String) -> R<()> {
        self.write(move |tx| {
            let old = stored_key(tx, &key_id)?.ok_or(StoreError::NotFound)?;
            drop_api_key(tx, &old)
        })
        .await
    }

    pub async fn touch_api_key(&self, key_id: String, when_ms: i64) -> R<()> {
        self.write(move |tx| {
            if let Some(mut k) = stored_key(tx, &key_id)? {
                k.last_use_at = when_ms;
                put(tx, API_KEYS, &key_id, &to_json(&k)?)?;
            }
            Ok(())
        })
        .await
    }

    /// Every object a backup holds, from one read transaction (a consistent
    /// snapshot), ordered by name.
    pub async fn dump(&self) -> R<DumpRows> {
        self.read(|tx| {
            let all = usize::MAX;
            let users = list::<UserData>(tx, &USER, 0, i64::MAX, Order::Asc)?
                .into_iter()
                .map(|(id, data)| {
                    Ok((
                        UserRow { id, data },
                        mounts_of(tx, USER_FOLDERS, id)?,
                        group_refs(tx, id)?,
                    ))
                })
                .collect::<R<Vec<_>>>()?;
            let groups = list::<GroupData>(tx, &GROUP, 0, i64::MAX, Order::Asc)?
                .into_iter()
                .map(|(id, data)| {
                    Ok((
                        GroupRow { id, data },
                        mounts_of(tx, GROUP_FOLDERS, id)?,
                        usernames(tx, related(tx, GROUP_USERS, id)?)?,
                    ))
                })
                .collect::<R<Vec<_>>>()?;
            let folders = list::<FolderData>(tx, &FOLDER, 0, i64::MAX, Order::Asc)?
                .into_iter()
                .map(|(id, data)| {
                    Ok((
                        FolderRow { id, data },
                        usernames(tx, related(tx, FOLDER_USERS, id)?)?,
                    ))
                })
                .collect::<R<Vec<_>>>()?;
            let admins = list::<AdminData>(tx, &ADMIN, 0, i64::MAX, Order::Asc)?
                .into_iter()
                .map(|(id, data)| AdminRow { id, data })
                .collect();
            let api_keys = tx
                .scan(API_KEYS, "", false, 0, all)?
                .into_iter()
                .map(|(_, b)| api_key_row(tx, from_json(&b)?))
                .collect::<R<Vec<_>>>()?;
            Ok(DumpRows {
                users,
                groups,
                folders,
                admins,
                api_keys,
            })
        })
        .await
    }

    pub async fn restore(&self, plan: RestorePlan, add_only: bool) -> R<RestoreReport> {
        self.write(move |tx| restore_in(tx, &plan, add_only)).await
    }

    /// Replaces every user, group, folder and API key (and the admins, when
    /// the plan has some) with the plan's, in one transaction.
    pub async fn replace_all(&self, plan: RestorePlan) -> R<RestoreReport> {
        self.write(move |tx| {
            clear(
                tx,
                &[
                    API_KEYS,
                    ADMIN_KEYS,
                    USER_KEYS,
                    USER_GROUPS,
                    GROUP_USERS,
                    USER_FOLDERS,
                    FOLDER_USERS,
                    GROUP_FOLDERS,
                    FOLDER_GROUPS,
                    USERS,
                    USER_NAMES,
                    GROUPS,
                    GROUP_NAMES,
                    FOLDERS,
                    FOLDER_NAMES,
                ],
            )?;
            if !plan.admins.is_empty() {
                clear(tx, &[ADMINS, ADMIN_NAMES])?;
            }
            restore_in(tx, &plan, false)
        })
        .await
    }

    pub async fn revoke_token(&self, jti: String, expires_at: i64) -> R<()> {
        self.write(move |tx| {
            let now = now_ms() / 1000;
            let expired: Vec<String> = tx
                .scan(REVOKED, "", false, 0, usize::MAX)?
                .into_iter()
                .filter(|(_, v)| decimal(v).is_some_and(|e| e < now))
                .map(|(k, _)| k)
                .collect();
            for k in expired {
                del(tx, REVOKED, &k)?;
            }
            if tx.get(REVOKED, &jti)?.is_none() {
                put(tx, REVOKED, &jti, expires_at.to_string().as_bytes())?;
            }
            Ok(())
        })
        .await
    }

    pub async fn is_token_revoked(&self, jti: String) -> R<bool> {
        self.read(move |tx| Ok(tx.get(REVOKED, &jti)?.is_some()))
            .await
    }

    pub async fn replace_config(&self, name: &'static str, old: String, new: String) -> R<bool> {
        self.write(move |tx| {
            if tx.get(CONFIGS, name)?.as_deref() != Some(old.as_bytes()) {
                return Ok(false);
            }
            put(tx, CONFIGS, name, new.as_bytes())?;
            Ok(true)
        })
        .await
    }

    /// redb writes replaced pages afresh; nothing to fold.
    pub async fn checkpoint(&self) -> R<()> {
        Ok(())
    }

    pub async fn config_or_insert<F>(&self, name: &'static str, make: F) -> R<String>
    where
        F: FnOnce() -> R<String> + Send + 'static,
    {
        // One writer at a time: the check and the insert cannot race.
        self.write(move |tx| {
            if let Some(v) = tx.get(CONFIGS, name)? {
                return String::from_utf8(v).map_err(ie);
            }
            let value = make()?;
            put(tx, CONFIGS, name, value.as_bytes())?;
            Ok(value)
        })
        .await
    }
}

/// Writes a validated backup inside the caller's transaction (the SQL
/// store's rules: add-only skips existing objects; replaced users keep their
/// live usage counters).
fn restore_in(tx: &WriteTransaction, plan: &RestorePlan, add_only: bool) -> R<RestoreReport> {
    let mut report = RestoreReport::default();
    for f in &plan.folders {
        let what = format!("folder {:?}", f.name);
        match by_name::<FolderData>(tx, &FOLDER, &f.name)? {
            Some(_) if add_only => report.skipped += 1,
            Some((id, mut data)) => {
                data.description = f.description.clone();
                data.path = f.path.clone();
                data.filesystem = f.filesystem.clone();
                put(tx, FOLDERS, &id_key(id), &to_json(&data)?)?;
                report.updated += 1;
            }
            None => {
                insert(tx, &FOLDER, &f.name, f).map_err(|e| about(&what, e))?;
                report.added += 1;
            }
        }
    }
    for (g, maps) in &plan.groups {
        let what = format!("group {:?}", g.name);
        let id = match id_of(tx, &GROUP, &g.name)? {
            Some(_) if add_only => {
                report.skipped += 1;
                continue;
            }
            Some(id) => {
                put(tx, GROUPS, &id_key(id), &to_json(g)?)?;
                report.updated += 1;
                id
            }
            None => {
                report.added += 1;
                insert(tx, &GROUP, &g.name, g).map_err(|e| about(&what, e))?
            }
        };
        set_group_folders(tx, id, maps).map_err(|e| about(&what, e))?;
    }
    for a in &plan.admins {
        let what = format!("admin {:?}", a.username);
        match id_of(tx, &ADMIN, &a.username)? {
            Some(_) if add_only => report.skipped += 1,
            Some(id) => {
                put(tx, ADMINS, &id_key(id), &to_json(a)?)?;
                report.updated += 1;
            }
            None => {
                insert(tx, &ADMIN, &a.username, a).map_err(|e| about(&what, e))?;
                report.added += 1;
            }
        }
    }
    for w in &plan.users {
        let u = &w.data;
        let what = format!("user {:?}", u.username);
        let id = match by_name::<UserData>(tx, &USER, &u.username)? {
            Some(_) if add_only => {
                report.skipped += 1;
                continue;
            }
            Some((id, old)) => {
                let data = u.with_usage_of(&old);
                put(tx, USERS, &id_key(id), &to_json(&data)?)?;
                report.updated += 1;
                report.updated_users.push(u.username.clone());
                id
            }
            None => {
                report.added += 1;
                insert(tx, &USER, &u.username, u).map_err(|e| about(&what, e))?
            }
        };
        set_mappings(tx, id, &w.mappings).map_err(|e| about(&what, e))?;
        set_user_groups(tx, id, &w.groups).map_err(|e| about(&what, e))?;
        report.restored_users.push(u.username.clone());
    }
    for k in &plan.api_keys {
        let what = format!("API key {:?}", k.data.key_id);
        let mut k = k.clone();
        api_key_owner_ids(tx, &mut k).map_err(|e| about(&what, e))?;
        match stored_key(tx, &k.data.key_id)? {
            Some(_) if add_only => report.skipped += 1,
            Some(old) => {
                put_api_key(tx, Some(&old), &k.data)?;
                report.updated += 1;
            }
            None => {
                put_api_key(tx, None, &k.data)?;
                report.added += 1;
            }
        }
    }
    Ok(report)
}
