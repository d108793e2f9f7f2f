//! One conformance suite for the store, run against every backend: SQLite in
//! a temp dir, the real PostgreSQL and MariaDB servers of this machine (each
//! in a fresh database created for the run and dropped after), the memory
//! provider, and a redb file in a temp dir.

use diesel::connection::SimpleConnection;
use diesel::{Connection, MysqlConnection, PgConnection};
use ferry_controlplane::provider::DataProviderConfig;
use ferry_controlplane::store::{
    AdminData, FolderData, Mapping, NewMapping, Order, Store, StoreError, UserData,
};

/// A database created for one test, dropped when the test ends.
struct TestDb {
    label: &'static str,
    cfg: DataProviderConfig,
    dir: tempfile::TempDir,
    drop_sql: Option<(&'static str, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.drop_sql {
            Some(("postgresql", name)) => {
                if let Ok(mut c) = PgConnection::establish(PG_ADMIN) {
                    let _ =
                        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
            Some((_, name)) => {
                if let Ok(mut c) = MysqlConnection::establish(MYSQL_ADMIN) {
                    let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"));
                }
            }
            None => {}
        }
    }
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
const MYSQL_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";

fn unique_name() -> String {
    format!("ferry_t_{:016x}", rand::random::<u64>())
}

fn databases() -> Vec<TestDb> {
    let sqlite = TestDb {
        label: "sqlite",
        cfg: DataProviderConfig::default(),
        dir: tempfile::tempdir().unwrap(),
        drop_sql: None,
    };
    let pg_name = unique_name();
    PgConnection::establish(PG_ADMIN)
        .expect("PostgreSQL on 127.0.0.1:5432")
        .batch_execute(&format!("CREATE DATABASE {pg_name}"))
        .unwrap();
    let pg = TestDb {
        label: "postgresql",
        cfg: DataProviderConfig {
            driver: "postgresql".into(),
            name: pg_name.clone(),
            username: "postgres".into(),
            ..Default::default()
        },
        dir: tempfile::tempdir().unwrap(),
        drop_sql: Some(("postgresql", pg_name)),
    };
    let my_name = unique_name();
    MysqlConnection::establish(MYSQL_ADMIN)
        .expect("MariaDB on 127.0.0.1:3306")
        .batch_execute(&format!("CREATE DATABASE {my_name}"))
        .unwrap();
    let my = TestDb {
        label: "mysql",
        cfg: DataProviderConfig {
            driver: "mysql".into(),
            name: my_name.clone(),
            username: "root".into(),
            ..Default::default()
        },
        dir: tempfile::tempdir().unwrap(),
        drop_sql: Some(("mysql", my_name)),
    };
    let memory = TestDb {
        label: "memory",
        cfg: DataProviderConfig {
            driver: "memory".into(),
            ..Default::default()
        },
        dir: tempfile::tempdir().unwrap(),
        drop_sql: None,
    };
    let redb = TestDb {
        label: "redb",
        cfg: DataProviderConfig {
            driver: "redb".into(),
            ..Default::default()
        },
        dir: tempfile::tempdir().unwrap(),
        drop_sql: None,
    };
    vec![sqlite, pg, my, memory, redb]
}

fn open(db: &TestDb) -> Store {
    Store::open(&db.cfg, db.dir.path()).unwrap_or_else(|e| panic!("{}: {e:#}", db.label))
}

fn user(name: &str) -> UserData {
    UserData {
        password: Some("$argon2id$v=19$m=65536,t=1,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into()),
        description: "héllo \u{1F600}".into(),
        created_at: 1,
        updated_at: 1,
        ..UserData::new(name, &format!("/srv/{name}"))
    }
}

fn admin(name: &str) -> AdminData {
    AdminData {
        username: name.into(),
        status: 1,
        password: "hash".into(),
        permissions: r#"["*"]"#.into(),
        filters: "{}".into(),
        email: String::new(),
        description: String::new(),
        additional_info: String::new(),
        created_at: 0,
        updated_at: 0,
        last_login: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_crud_on_every_backend() {
    use std::os::unix::fs::PermissionsExt;
    for db in databases() {
        let store = open(&db);
        let l = db.label;
        // Embedded database files are readable by their owner only.
        for file in ["ferry.db", "ferry.redb"] {
            if let Ok(meta) = std::fs::metadata(db.dir.path().join(file)) {
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{l}: {file}");
            }
        }
        let expected = match l {
            "sqlite" => Some("ferry.db"),
            "redb" => Some("ferry.redb"),
            _ => None,
        };
        if let Some(f) = expected {
            assert!(db.dir.path().join(f).exists(), "{l}");
        }
        let a = store.add_user(user("alice"), vec![]).await.unwrap();
        assert!(a.id >= 1, "{l}");
        assert_eq!(
            a.data.description, "héllo \u{1F600}",
            "{l}: UTF-8 round trip"
        );
        store.add_user(user("bob"), vec![]).await.unwrap();
        store.add_user(user("carol"), vec![]).await.unwrap();
        assert!(
            matches!(
                store.add_user(user("alice"), vec![]).await,
                Err(StoreError::AlreadyExists(_))
            ),
            "{l}: duplicate username"
        );
        let asc: Vec<String> = store
            .users(0, 10, Order::Asc)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.data.username)
            .collect();
        assert_eq!(asc, ["alice", "bob", "carol"], "{l}");
        let page: Vec<String> = store
            .users(1, 1, Order::Desc)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.data.username)
            .collect();
        assert_eq!(page, ["bob"], "{l}");

        let mut changed = a.data.clone();
        changed.home_dir = "/srv/elsewhere".into();
        changed.password = None;
        store.update_user(a.id, changed, vec![]).await.unwrap();
        let got = store.user("alice".into()).await.unwrap();
        assert_eq!(got.data.home_dir, "/srv/elsewhere", "{l}");
        assert_eq!(got.data.password, None, "{l}: NULL stored");
        assert!(
            matches!(
                store.update_user(999_999, user("x"), vec![]).await,
                Err(StoreError::NotFound)
            ),
            "{l}"
        );

        store.set_last_login("bob".into(), 42).await.unwrap();
        assert_eq!(
            store.user("bob".into()).await.unwrap().data.last_login,
            42,
            "{l}"
        );
        store.delete_user("bob".into()).await.unwrap();
        assert!(
            matches!(store.user("bob".into()).await, Err(StoreError::NotFound)),
            "{l}"
        );
        assert!(
            matches!(
                store.delete_user("bob".into()).await,
                Err(StoreError::NotFound)
            ),
            "{l}"
        );
        store.ping().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_and_settings_on_every_backend() {
    for db in databases() {
        let store = open(&db);
        let l = db.label;
        assert_eq!(store.count_admins().await.unwrap(), 0, "{l}");
        let admin = admin("root");
        store.add_admin(admin.clone()).await.unwrap();
        assert!(
            matches!(
                store.add_admin(admin).await,
                Err(StoreError::AlreadyExists(_))
            ),
            "{l}"
        );
        assert_eq!(store.count_admins().await.unwrap(), 1, "{l}");
        assert_eq!(
            store.admin("root".into()).await.unwrap().data.permissions,
            r#"["*"]"#,
            "{l}"
        );

        // Many racing writers agree on one value for a fleet setting.
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.config_or_insert("race", move || Ok(format!("value-{i}")))
                    .await
                    .unwrap()
            }));
        }
        let mut values = Vec::new();
        for t in tasks {
            values.push(t.await.unwrap());
        }
        values.dedup();
        assert_eq!(values.len(), 1, "{l}: {values:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_lifecycle_on_every_backend() {
    // The memory provider's schema lives and dies with its process: there is
    // nothing to upgrade or find newer.
    for db in databases().into_iter().filter(|d| d.label != "memory") {
        let l = db.label;
        // Two control planes starting at once: both succeed, the schema is
        // migrated once.
        let (a, b) = (db.cfg.clone(), db.cfg.clone());
        let (da, dbb) = (db.dir.path().to_path_buf(), db.dir.path().to_path_buf());
        let ta =
            std::thread::spawn(move || Store::open(&a, &da).map(|_| ()).map_err(|e| e.to_string()));
        let tb = std::thread::spawn(move || {
            Store::open(&b, &dbb).map(|_| ()).map_err(|e| e.to_string())
        });
        let (ra, rb) = (ta.join().unwrap(), tb.join().unwrap());
        // A redb file has one owner, so the loser is told so; SQLite (steps
        // retried), PostgreSQL and MySQL (database locks) must both pass.
        match l {
            "redb" => {
                for r in [&ra, &rb] {
                    if let Err(e) = r {
                        assert!(e.contains("open in another process"), "{l}: {e}");
                    }
                }
                assert!(ra.is_ok() || rb.is_ok(), "{l}: {ra:?} {rb:?}");
            }
            _ => {
                ra.unwrap_or_else(|e| panic!("{l}: {e}"));
                rb.unwrap_or_else(|e| panic!("{l}: {e}"));
            }
        }
        let store = open(&db);
        store
            .add_user(user("after-migration"), vec![])
            .await
            .unwrap();

        // A schema newer than the binary is refused with a clear message.
        let sql = "INSERT INTO __diesel_schema_migrations (version) VALUES ('99991231000000')";
        match db.label {
            "sqlite" => diesel::SqliteConnection::establish(
                db.dir.path().join("ferry.db").to_str().unwrap(),
            )
            .unwrap()
            .batch_execute(sql)
            .unwrap(),
            "postgresql" => PgConnection::establish(&format!(
                "postgres://postgres@127.0.0.1:5432/{}",
                db.cfg.name
            ))
            .unwrap()
            .batch_execute(sql)
            .unwrap(),
            "redb" => {
                // While the store is open the file is its own: a second
                // opener is refused with the reason.
                let err = Store::open(&db.cfg, db.dir.path()).err().unwrap();
                assert!(
                    err.to_string().contains("open in another process"),
                    "{l}: {err}"
                );
                drop(store);
                let path = db.dir.path().join("ferry.redb");
                let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
                let file = redb::Database::create(&path).unwrap();
                let tx = file.begin_write().unwrap();
                tx.open_table(meta)
                    .unwrap()
                    .insert("schema_version", b"99".as_slice())
                    .unwrap();
                tx.commit().unwrap();
                drop(file);
                let err = Store::open(&db.cfg, db.dir.path()).err().unwrap();
                assert!(
                    err.to_string().contains("newer than this binary"),
                    "{l}: {err}"
                );
                // Nothing was lost: the user is still there for a newer binary.
                let file = redb::Database::create(&path).unwrap();
                let tx = redb::ReadableDatabase::begin_read(&file).unwrap();
                let names: redb::TableDefinition<&str, &[u8]> =
                    redb::TableDefinition::new("user_names");
                assert!(
                    tx.open_table(names)
                        .unwrap()
                        .get("after-migration")
                        .unwrap()
                        .is_some(),
                    "{l}"
                );
                continue;
            }
            _ => {
                MysqlConnection::establish(&format!("mysql://root@127.0.0.1:3306/{}", db.cfg.name))
                    .unwrap()
                    .batch_execute(sql)
                    .unwrap()
            }
        }
        let err = match Store::open(&db.cfg, db.dir.path()) {
            Ok(_) => panic!("{l}: a newer schema must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("newer than this binary"), "{l}: {err}");
        // Nothing was lost: the data is still there for the newer binary.
        drop(store);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_counters_are_exact_under_concurrency_on_every_backend() {
    const TASKS: i64 = 24;
    const STEPS: i64 = 25;
    for db in databases() {
        let store = open(&db);
        let l = db.label;
        store.add_user(user("busy"), vec![]).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..STEPS {
                    // Uploads add, some deletes subtract.
                    let (size, files) = if (t + i) % 5 == 0 { (-3, -1) } else { (7, 1) };
                    s.add_quota_usage("busy".into(), size, files, i)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (mut size, mut files) = (0i64, 0i64);
        for t in 0..TASKS {
            for i in 0..STEPS {
                if (t + i) % 5 == 0 {
                    size -= 3;
                    files -= 1;
                } else {
                    size += 7;
                    files += 1;
                }
            }
        }
        let got = store.user("busy".into()).await.unwrap();
        assert_eq!(
            (got.data.used_quota_size, got.data.used_quota_files),
            (size, files),
            "{l}"
        );
        assert!(matches!(
            store.add_quota_usage("nobody".into(), 1, 1, 0).await,
            Err(StoreError::NotFound)
        ));
    }
}

fn folder(name: &str) -> FolderData {
    FolderData {
        name: name.into(),
        description: String::new(),
        path: format!("/srv/folders/{name}"),
        used_quota_size: 0,
        used_quota_files: 0,
        last_quota_update: 0,
        filesystem: r#"{"provider":0}"#.into(),
    }
}

fn mapping(folder_name: &str, virtual_path: &str, create: bool) -> NewMapping {
    NewMapping {
        mapping: Mapping {
            folder: folder_name.into(),
            virtual_path: virtual_path.into(),
            quota_size: -1,
            quota_files: -1,
        },
        create: create.then(|| folder(folder_name)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folders_and_mappings_on_every_backend() {
    for db in databases() {
        let store = open(&db);
        let l = db.label;
        let shared = store.add_folder(folder("shared")).await.unwrap();
        assert!(
            matches!(
                store.add_folder(folder("shared")).await,
                Err(StoreError::AlreadyExists(_))
            ),
            "{l}"
        );
        // A user mapping an existing folder and one created on the way.
        let alice = store
            .add_user(
                user("alice"),
                vec![
                    mapping("shared", "/s", false),
                    mapping("made", "/a/m", true),
                ],
            )
            .await
            .unwrap();
        let mapped = store.user_folders(alice.id).await.unwrap();
        let names: Vec<(&str, &str)> = mapped
            .iter()
            .map(|(f, m)| (f.data.name.as_str(), m.virtual_path.as_str()))
            .collect();
        assert_eq!(names, [("made", "/a/m"), ("shared", "/s")], "{l}");
        assert_eq!(
            store.folder("made".into()).await.unwrap().data.path,
            "/srv/folders/made"
        );
        // A mapping to a missing folder refuses the whole user: nothing stored.
        let refused = store
            .add_user(user("bob"), vec![mapping("nope", "/n", false)])
            .await;
        assert!(
            matches!(refused, Err(StoreError::Invalid(_))),
            "{l}: {refused:?}"
        );
        assert!(
            matches!(store.user("bob".into()).await, Err(StoreError::NotFound)),
            "{l}"
        );
        store
            .add_user(user("carol"), vec![mapping("shared", "/x", false)])
            .await
            .unwrap();
        assert_eq!(
            store.folder_users(shared.id).await.unwrap(),
            ["alice", "carol"],
            "{l}"
        );
        // Updating replaces the mappings.
        store
            .update_user(alice.id, user("alice"), vec![mapping("made", "/m", false)])
            .await
            .unwrap();
        assert_eq!(store.user_folders(alice.id).await.unwrap().len(), 1, "{l}");
        assert_eq!(
            store.folder_users(shared.id).await.unwrap(),
            ["carol"],
            "{l}"
        );
        // Counters change atomically and survive an admin's update.
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(
                    async move { s.add_folder_quota_usage("shared".into(), 10, 1, 5).await },
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        store
            .update_folder(
                shared.id,
                "new".into(),
                "/srv/elsewhere".into(),
                "{}".into(),
            )
            .await
            .unwrap();
        let f = store.folder("shared".into()).await.unwrap();
        assert_eq!(
            (f.data.used_quota_size, f.data.used_quota_files),
            (160, 16),
            "{l}"
        );
        assert_eq!(f.data.path, "/srv/elsewhere", "{l}");
        // Deleting a folder drops its mappings, never the users.
        store.delete_folder("shared".into()).await.unwrap();
        assert!(store.user("carol".into()).await.is_ok(), "{l}");
        let carol = store.user("carol".into()).await.unwrap();
        assert!(
            store.user_folders(carol.id).await.unwrap().is_empty(),
            "{l}"
        );
        // Deleting a user keeps its folders.
        store.delete_user("alice".into()).await.unwrap();
        assert!(store.folder("made".into()).await.is_ok(), "{l}");
        assert_eq!(
            store.folders(0, 10, Order::Asc).await.unwrap().len(),
            1,
            "{l}"
        );
    }
}

/// A database made by the previous schema version, with data, is upgraded
/// in place at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_the_previous_schema_version_on_every_backend() {
    use diesel_migrations::MigrationHarness;
    // The memory provider starts empty every time; redb has one layout
    // version so far (its upgrade from an empty file runs in every other
    // test), so there is no earlier redb layout to upgrade from yet.
    for db in databases()
        .into_iter()
        .filter(|d| d.label != "memory" && d.label != "redb")
    {
        let l = db.label;
        let insert = "INSERT INTO users (username, status, public_keys, home_dir, permissions, \
                      filters, filesystem, email, description, additional_info) VALUES \
                      ('old', 1, '[]', '/srv/old', '{\"/\":[\"*\"]}', '{}', '{}', '', '', '')";
        match l {
            "sqlite" => {
                let path = db.dir.path().join("ferry.db");
                let mut c = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
                c.run_next_migration(ferry_schema::SQLITE_MIGRATIONS)
                    .unwrap();
                c.batch_execute(insert).unwrap();
            }
            "postgresql" => {
                let mut c = PgConnection::establish(&format!(
                    "postgres://postgres@127.0.0.1:5432/{}",
                    db.cfg.name
                ))
                .unwrap();
                c.run_next_migration(ferry_schema::POSTGRES_MIGRATIONS)
                    .unwrap();
                c.batch_execute(insert).unwrap();
            }
            _ => {
                let mut c = MysqlConnection::establish(&format!(
                    "mysql://root@127.0.0.1:3306/{}",
                    db.cfg.name
                ))
                .unwrap();
                c.run_next_migration(ferry_schema::MYSQL_MIGRATIONS)
                    .unwrap();
                c.batch_execute(insert).unwrap();
            }
        }
        let store = open(&db);
        let old = store.user("old".into()).await.unwrap();
        assert_eq!(old.data.home_dir, "/srv/old", "{l}");
        store
            .update_user(old.id, old.data.clone(), vec![mapping("f", "/f", true)])
            .await
            .unwrap();
        assert_eq!(store.user_folders(old.id).await.unwrap().len(), 1, "{l}");
    }
}

/// API keys, revoked tokens, and a backup round trip: dump, restore into an
/// empty database of the same backend, dump again (identical); a restore
/// that fails half way leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_backup_round_trip_on_every_backend() {
    use ferry_controlplane::store::{ApiKeyData, GroupData, GroupRef, NewApiKey, UserWrite};
    let targets = databases();
    for (db, empty) in databases().iter().zip(targets.iter()) {
        let l = db.label;
        let store = open(db);
        store
            .add_folder(folder("shared"))
            .await
            .unwrap_or_else(|e| panic!("{l}: {e}"));
        let group = GroupData {
            name: "staff".into(),
            description: "d".into(),
            user_settings: r#"{"quota_size":100}"#.into(),
            created_at: 3,
            updated_at: 4,
        };
        let shared = Mapping {
            folder: "shared".into(),
            virtual_path: "/team".into(),
            quota_size: -1,
            quota_files: -1,
        };
        let g = store
            .add_group(group.clone(), vec![shared.clone()])
            .await
            .unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(
            matches!(
                store.add_group(group.clone(), vec![]).await,
                Err(StoreError::AlreadyExists(_))
            ),
            "{l}: group names are unique"
        );
        let mut u = user("kim");
        u.used_quota_size = 42;
        let kim = store
            .add_user_full(UserWrite {
                data: u,
                mappings: vec![mapping("shared", "/s", false)],
                groups: vec![GroupRef {
                    name: "staff".into(),
                    group_type: 1,
                }],
            })
            .await
            .unwrap();
        let member = store.member_groups(kim.id).await.unwrap();
        assert_eq!(member.len(), 1, "{l}");
        assert_eq!(member[0].folders[0].1, shared, "{l}");
        let (_, members) = store.group_details(g.id).await.unwrap();
        assert_eq!(members, ["kim"], "{l}");
        assert!(
            matches!(
                store.delete_group("staff".into()).await,
                Err(StoreError::Invalid(_))
            ),
            "{l}: a group with members stays"
        );
        assert!(
            matches!(
                store
                    .add_user_full(UserWrite {
                        data: user("lou"),
                        mappings: vec![],
                        groups: vec![GroupRef {
                            name: "ghost".into(),
                            group_type: 2
                        }],
                    })
                    .await,
                Err(StoreError::Invalid(_))
            ),
            "{l}: unknown group"
        );
        assert!(
            matches!(store.user("lou".into()).await, Err(StoreError::NotFound)),
            "{l}"
        );
        let admin = AdminData {
            username: "root".into(),
            status: 1,
            password: "$2a$10$oq9CI6y8u7ylHv28lvW06uocgAihFhqyVqKqg2J4N0hfkiA.2A5Ci".into(),
            permissions: r#"["*"]"#.into(),
            filters: r#"{"allow_api_key_auth":true}"#.into(),
            email: String::new(),
            description: String::new(),
            additional_info: String::new(),
            created_at: 5,
            updated_at: 6,
            last_login: 7,
        };
        store.add_admin(admin).await.unwrap();
        let key = |id: &str, admin: Option<&str>, user: Option<&str>| NewApiKey {
            data: ApiKeyData {
                key_id: id.into(),
                name: format!("key {id}"),
                api_key: "$argon2id$v=19$m=65536,t=1,p=2$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
                scope: if user.is_some() { 2 } else { 1 },
                created_at: 1,
                updated_at: 2,
                last_use_at: 0,
                expires_at: 0,
                description: String::new(),
                admin_id: None,
                user_id: None,
            },
            admin: admin.map(str::to_string),
            user: user.map(str::to_string),
        };
        store
            .add_api_key(key("k1", Some("root"), None))
            .await
            .unwrap();
        store
            .add_api_key(key("k2", None, Some("kim")))
            .await
            .unwrap();
        assert!(
            matches!(
                store.add_api_key(key("k3", Some("ghost"), None)).await,
                Err(StoreError::Invalid(_))
            ),
            "{l}: a key for a missing admin"
        );
        assert!(
            matches!(
                store.add_api_key(key("k1", None, None)).await,
                Err(StoreError::AlreadyExists(_))
            ),
            "{l}: key ids are unique"
        );
        let k = store.api_key("k1".into()).await.unwrap();
        assert_eq!(k.admin.as_deref(), Some("root"), "{l}");
        store.touch_api_key("k1".into(), 99).await.unwrap();
        assert_eq!(
            store.api_key("k1".into()).await.unwrap().data.last_use_at,
            99
        );
        assert_eq!(
            store.api_keys(0, 10, Order::Desc).await.unwrap()[0]
                .data
                .key_id,
            "k2"
        );

        // Revoked tokens: recorded once, expired entries purged.
        assert!(!store.is_token_revoked("j1".into()).await.unwrap(), "{l}");
        store.revoke_token("j1".into(), i64::MAX / 2).await.unwrap();
        store.revoke_token("j1".into(), i64::MAX / 2).await.unwrap();
        store.revoke_token("old".into(), 1).await.unwrap();
        assert!(store.is_token_revoked("j1".into()).await.unwrap(), "{l}");
        store.revoke_token("j2".into(), i64::MAX / 2).await.unwrap();
        assert!(
            !store.is_token_revoked("old".into()).await.unwrap(),
            "{l}: purged"
        );

        // Backup round trip into an empty database.
        let doc = ferry_controlplane::backup::render(&store.dump().await.unwrap());
        assert_eq!(doc["users"][0]["used_quota_size"], 42, "{l}");
        assert_eq!(doc["api_keys"].as_array().unwrap().len(), 2, "{l}");
        assert_eq!(doc["groups"][0]["users"], serde_json::json!(["kim"]), "{l}");
        assert_eq!(
            doc["users"][0]["groups"],
            serde_json::json!([{"name": "staff", "type": 1}]),
            "{l}"
        );
        let target = open(empty);
        let prepared = ferry_controlplane::backup::prepare(&doc).await.unwrap();
        let report = target.restore(prepared.plan, false).await.unwrap();
        assert_eq!(report.added, 6, "{l}: {report:?}");
        let again = ferry_controlplane::backup::render(&target.dump().await.unwrap());
        assert_eq!(again, doc, "{l}: round trip");
        // Restoring again adds nothing in mode 1 and replaces in mode 0.
        let prepared = ferry_controlplane::backup::prepare(&doc).await.unwrap();
        let report = target.restore(prepared.plan, true).await.unwrap();
        assert_eq!((report.added, report.skipped), (0, 6), "{l}");

        // A failure half way writes nothing.
        let mut plan = ferry_controlplane::backup::prepare(&doc)
            .await
            .unwrap()
            .plan;
        let mut extra = user("late");
        extra.home_dir = "/srv/late".into();
        plan.users.push(UserWrite {
            data: extra,
            mappings: vec![mapping("missing", "/m", false)],
            groups: vec![],
        });
        plan.folders.push(folder("fresh"));
        let err = target.restore(plan, false).await.unwrap_err();
        assert!(err.to_string().contains("late"), "{l}: {err}");
        assert!(
            matches!(target.user("late".into()).await, Err(StoreError::NotFound)),
            "{l}"
        );
        assert!(
            matches!(
                target.folder("fresh".into()).await,
                Err(StoreError::NotFound)
            ),
            "{l}"
        );
    }
}

/// What SQL's foreign keys and unique constraints do, every backend does:
/// deletes cascade to mappings, memberships and API keys; renames keep the
/// id and refuse a taken name; compare-and-set updates see concurrent
/// changes; a reload replaces everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascades_renames_and_compare_and_set_on_every_backend() {
    use ferry_controlplane::store::{
        ApiKeyData, GroupData, GroupRef, NewApiKey, RestorePlan, UserWrite,
    };
    for db in databases() {
        let store = open(&db);
        let l = db.label;
        let key = |id: &str, admin: Option<&str>, user: Option<&str>| NewApiKey {
            data: ApiKeyData {
                key_id: id.into(),
                name: id.into(),
                api_key: "hash".into(),
                scope: 1,
                created_at: 1,
                updated_at: 1,
                last_use_at: 0,
                expires_at: 0,
                description: String::new(),
                admin_id: None,
                user_id: None,
            },
            admin: admin.map(str::to_string),
            user: user.map(str::to_string),
        };
        store.add_admin(admin("root")).await.unwrap();
        store.add_admin(admin("ops")).await.unwrap();
        store.add_folder(folder("f")).await.unwrap();
        let g = store
            .add_group(
                GroupData {
                    name: "g".into(),
                    description: String::new(),
                    user_settings: "{}".into(),
                    created_at: 0,
                    updated_at: 0,
                },
                vec![Mapping {
                    folder: "f".into(),
                    virtual_path: "/gf".into(),
                    quota_size: 0,
                    quota_files: 0,
                }],
            )
            .await
            .unwrap();
        let u1 = store
            .add_user_full(UserWrite {
                data: user("u1"),
                mappings: vec![mapping("f", "/f", false)],
                groups: vec![GroupRef {
                    name: "g".into(),
                    group_type: 3,
                }],
            })
            .await
            .unwrap();
        store.add_user(user("u2"), vec![]).await.unwrap();
        store
            .add_api_key(key("k-admin", Some("root"), None))
            .await
            .unwrap();
        store
            .add_api_key(key("k-user", None, Some("u1")))
            .await
            .unwrap();
        store
            .add_api_key(key("k-ops", Some("ops"), None))
            .await
            .unwrap();

        // The same folder twice in one user is a uniqueness violation, and
        // the user is left as it was.
        let twice = store
            .update_user(
                u1.id,
                user("u1"),
                vec![mapping("f", "/a", false), mapping("f", "/b", false)],
            )
            .await;
        assert!(
            matches!(twice, Err(StoreError::AlreadyExists(_))),
            "{l}: {twice:?}"
        );
        assert_eq!(store.user_folders(u1.id).await.unwrap().len(), 1, "{l}");

        // Deleting a folder drops it from users and groups.
        store.delete_folder("f".into()).await.unwrap();
        assert!(store.user_folders(u1.id).await.unwrap().is_empty(), "{l}");
        let (gf, members) = store.group_details(g.id).await.unwrap();
        assert!(gf.is_empty(), "{l}");
        assert_eq!(members, ["u1"], "{l}");

        // Renaming keeps the id; a taken name is refused and changes nothing.
        let mut renamed = u1.data.clone();
        renamed.username = "u1b".into();
        store.update_user(u1.id, renamed, vec![]).await.unwrap();
        assert!(
            matches!(store.user("u1".into()).await, Err(StoreError::NotFound)),
            "{l}"
        );
        assert_eq!(store.user("u1b".into()).await.unwrap().id, u1.id, "{l}");
        assert_eq!(
            store
                .api_key("k-user".into())
                .await
                .unwrap()
                .user
                .as_deref(),
            Some("u1b"),
            "{l}: the key follows the rename"
        );
        let mut clash = user("u2");
        clash.home_dir = "/srv/clash".into();
        assert!(
            matches!(
                store.update_user(u1.id, clash, vec![]).await,
                Err(StoreError::AlreadyExists(_))
            ),
            "{l}"
        );
        assert_eq!(store.user("u1b".into()).await.unwrap().id, u1.id, "{l}");
        assert_eq!(
            store.user("u2".into()).await.unwrap().data.home_dir,
            "/srv/u2",
            "{l}"
        );

        // Deleting a user drops its keys and memberships; then the group
        // can go.
        store.delete_user("u1b".into()).await.unwrap();
        assert!(
            matches!(
                store.api_key("k-user".into()).await,
                Err(StoreError::NotFound)
            ),
            "{l}"
        );
        assert!(store.group_details(g.id).await.unwrap().1.is_empty(), "{l}");
        store.delete_group("g".into()).await.unwrap();
        assert!(
            matches!(store.group("g".into()).await, Err(StoreError::NotFound)),
            "{l}"
        );

        // A key moved to another owner follows that owner's deletion.
        store
            .update_api_key(key("k-ops", None, Some("u2")))
            .await
            .unwrap();
        store.delete_admin("ops".into()).await.unwrap();
        assert_eq!(
            store.api_key("k-ops".into()).await.unwrap().user.as_deref(),
            Some("u2"),
            "{l}"
        );
        store.delete_admin("root".into()).await.unwrap();
        assert!(
            matches!(
                store.api_key("k-admin".into()).await,
                Err(StoreError::NotFound)
            ),
            "{l}"
        );
        store.delete_user("u2".into()).await.unwrap();
        assert!(
            store.api_keys(0, 10, Order::Asc).await.unwrap().is_empty(),
            "{l}"
        );

        // Compare-and-set password replacement and usage overwrite.
        let hash = user("x").password.unwrap();
        store.add_user(user("cas"), vec![]).await.unwrap();
        assert!(
            !store
                .replace_password("cas".into(), "stale".into(), "new".into())
                .await
                .unwrap(),
            "{l}"
        );
        assert!(
            store
                .replace_password("cas".into(), hash, "new".into())
                .await
                .unwrap(),
            "{l}"
        );
        assert_eq!(
            store
                .user("cas".into())
                .await
                .unwrap()
                .data
                .password
                .as_deref(),
            Some("new"),
            "{l}"
        );
        store
            .set_quota_usage("cas".into(), String::new(), 5, 6, 7)
            .await
            .unwrap();
        let got = store.user("cas".into()).await.unwrap().data;
        assert_eq!(
            (
                got.used_quota_size,
                got.used_quota_files,
                got.last_quota_update
            ),
            (5, 6, 7),
            "{l}"
        );
        assert!(
            matches!(
                store
                    .set_quota_usage("cas".into(), "nofolder".into(), 1, 1, 1)
                    .await,
                Err(StoreError::NotFound)
            ),
            "{l}"
        );

        // A reload replaces users and folders, keeping admins when the plan
        // has none.
        store.add_admin(admin("stays")).await.unwrap();
        store.add_folder(folder("old")).await.unwrap();
        let report = store
            .replace_all(RestorePlan {
                users: vec![UserWrite {
                    data: user("fresh"),
                    mappings: vec![mapping("new", "/n", true)],
                    groups: vec![],
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(report.added, 1, "{l}");
        let names: Vec<String> = store
            .users(0, 10, Order::Asc)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.data.username)
            .collect();
        assert_eq!(names, ["fresh"], "{l}");
        let folders: Vec<String> = store
            .folders(0, 10, Order::Asc)
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.data.name)
            .collect();
        assert_eq!(folders, ["new"], "{l}");
        assert_eq!(store.count_admins().await.unwrap(), 1, "{l}");
    }
}
