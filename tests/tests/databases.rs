//! `ferry serve` on each backend: the same admin, user and SFTP flow on
//! SQLite (the other suites), PostgreSQL, MariaDB and redb.

use std::time::Duration;

use ferry_tests::*;
use serde_json::json;

fn login_and_transfer(t: &Topology) {
    let api = t.api();
    let home = t.home("dora");
    api.add_user(user_json("dora", "dora-pw", &home));
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("f.bin");
    random_file(&src, 3 * 1024 * 1024 + 7);
    let back = work.path().join("back.bin");
    let out = sftp_batch(
        t.sftp_port(),
        "dora",
        &Cred::Password("dora-pw".into()),
        &format!(
            "put {} f.bin\nget f.bin {}\n",
            src.display(),
            back.display()
        ),
        &[],
    );
    assert!(out.status.success(), "{}\n{}", describe(&out), t.logs());
    assert_eq!(sha256_file(&back), sha256_file(&src));
    let out = sftp_batch(
        t.sftp_port(),
        "dora",
        &Cred::Password("nope".into()),
        "pwd\n",
        &[],
    );
    assert!(!out.status.success());
    let r = api.call("GET", "/api/v2/users/dora", None);
    assert!(
        r.body["last_login"].as_i64().unwrap() > 0,
        "last login recorded: {r:?}"
    );
}

#[test]
fn serve_on_postgresql() {
    let db = TempDatabase::postgres();
    let t = Topology::serve_with(&db.env()).unwrap();
    assert!(t.logs().contains("Postgresql"), "{}", t.logs());
    login_and_transfer(&t);
    drop(t);
}

#[test]
fn serve_on_mariadb() {
    let db = TempDatabase::mysql();
    let t = Topology::serve_with(&db.env()).unwrap();
    assert!(t.logs().contains("Mysql"), "{}", t.logs());
    login_and_transfer(&t);
    drop(t);
}

/// redb: the flow, the file kept across a hard kill, and a second process
/// refused while the server owns the file.
#[test]
fn serve_on_redb() {
    let keep = tempfile::tempdir().unwrap();
    let file = keep.path().join("fleet.redb");
    let env = vec![
        (
            "FERRY_DATA_PROVIDER__DRIVER".to_string(),
            "redb".to_string(),
        ),
        (
            "FERRY_DATA_PROVIDER__NAME".to_string(),
            file.display().to_string(),
        ),
        // The file moves to servers with other data directories: they need
        // the key its secrets are sealed with.
        (
            "FERRY_KMS__SECRETS__MASTER_KEY".to_string(),
            "a master key shared by the servers of this file".to_string(),
        ),
    ];
    let dump = |data_dir: &std::path::Path| {
        std::process::Command::new(bin("ferry"))
            .arg("dumpdata")
            .arg("--data-dir")
            .arg(data_dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    };
    let t = Topology::serve_with(&env).unwrap();
    let r = t.api().call("GET", "/api/v2/status", None);
    assert_eq!(r.body["data_provider"]["driver"], "redb", "{:?}", r.body);
    login_and_transfer(&t);
    assert!(file.exists() && !t.dir.path().join("data/ferry.db").exists());
    let out = dump(&t.dir.path().join("data"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("open in another process"), "{err}");
    let before = t.api().call("GET", "/api/v2/users/dora", None).body;
    let mut first = t;
    first.procs[0].kill(); // SIGKILL: no clean shutdown; the homes stay

    // Everything committed survived; the next server serves it.
    let t = Topology::serve_with(&env).unwrap();
    let after = t.api().call("GET", "/api/v2/users/dora", None).body;
    assert!(before["last_login"].as_i64().unwrap() > 0, "{before}");
    assert_eq!(after, before);
    let (ok, out) = sftp1(t.sftp_port(), "dora", &pw("dora-pw"), "ls -l");
    assert!(ok && out.contains("f.bin"), "{out}");
    let data_dir = t.dir.path().join("data");
    let mut t = t;
    t.procs[0].terminate();
    assert!(t.procs[0].wait_exit(Duration::from_secs(20)).is_some());
    let out = dump(&data_dir);
    assert!(out.status.success(), "{}", describe(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["users"][0]["username"], "dora", "{doc}");
    drop(first);
}

#[test]
fn initprovider_explains_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("ferry"))
        .arg("initprovider")
        .arg("--data-dir")
        .arg(dir.path())
        .env("FERRY_DATA_PROVIDER__DRIVER", "postgresql")
        .env("FERRY_DATA_PROVIDER__USERNAME", "postgres")
        .env("FERRY_DATA_PROVIDER__NAME", "ferry_no_such_database")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist") && err.contains("the database must exist"),
        "{err}"
    );
    // And creates the schema of one that exists, twice without harm.
    let db = TempDatabase::mysql();
    for _ in 0..2 {
        let out = std::process::Command::new(bin("ferry"))
            .arg("initprovider")
            .arg("--data-dir")
            .arg(dir.path())
            .envs(db.env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
    }
}

#[test]
fn memory_provider_loads_a_backup_and_reloads_it_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.json");
    let user = |name: &str| {
        json!({"username": name, "password": format!("{name}-pw"),
               "home_dir": dir.path().join("homes").join(name), "permissions": {"/": ["*"]}})
    };
    std::fs::write(&file, json!({"users": [user("mem1")]}).to_string()).unwrap();
    let env = [
        (
            "FERRY_DATA_PROVIDER__DRIVER".to_string(),
            "memory".to_string(),
        ),
        (
            "FERRY_DATA_PROVIDER__NAME".to_string(),
            file.display().to_string(),
        ),
    ];
    let t = Topology::serve_with(&env).unwrap();
    let api = t.api();
    let r = api.call("GET", "/api/v2/status", None);
    assert_eq!(r.body["data_provider"]["driver"], "memory", "{:?}", r.body);
    let (ok, out) = sftp1(t.sftp_port(), "mem1", &pw("mem1-pw"), "pwd");
    assert!(ok, "{out}");
    api.add_user(user_json("viaapi", "pw", &t.home("viaapi")));
    assert!(
        !t.dir.path().join("data/ferry.db").exists(),
        "nothing is written to disk"
    );

    // SIGHUP: the file's content replaces what is in memory.
    std::fs::write(&file, json!({"users": [user("mem2")]}).to_string()).unwrap();
    t.procs[0].signal("HUP");
    let reloaded = wait_for(Duration::from_secs(15), || {
        (api.call("GET", "/api/v2/users/mem2", None).status == 200).then_some(())
    });
    assert!(reloaded.is_some(), "{}", t.logs());
    assert_eq!(api.call("GET", "/api/v2/users/mem1", None).status, 404);
    assert_eq!(api.call("GET", "/api/v2/users/viaapi", None).status, 404);
    let (ok, out) = sftp1(t.sftp_port(), "mem2", &pw("mem2-pw"), "pwd");
    assert!(ok, "{out}");
    // A broken file changes nothing.
    std::fs::write(&file, "{\"users\": [{\"username\": \"x\"}]}").unwrap();
    t.procs[0].signal("HUP");
    let logged = wait_for(Duration::from_secs(15), || {
        t.logs()
            .contains("memory provider reload failed")
            .then_some(())
    });
    assert!(logged.is_some(), "{}", t.logs());
    assert_eq!(api.call("GET", "/api/v2/users/mem2", None).status, 200);
    // A bad file at start stops the start, naming it.
    let out = std::process::Command::new(bin("ferry"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data2"))
        .args(["--http-bind", "127.0.0.1:0", "--grpc-bind", "127.0.0.1:0"])
        .args(["--sftp-bind", "127.0.0.1:0"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("memory provider") && err.contains("users.json"),
        "{err}"
    );
}

#[test]
fn a_database_outage_gives_503_and_the_service_recovers() {
    use diesel::Connection;
    use diesel::connection::SimpleConnection;
    let db = TempDatabase::postgres();
    let t = Topology::serve_with(&db.env()).unwrap();
    let api = t.api();
    api.add_user(user_json("outage", "pw", &t.home("outage")));
    let admin =
        || diesel::PgConnection::establish("postgres://postgres@127.0.0.1:5432/test").unwrap();
    // Cut the control plane off: no new connections, existing ones killed.
    admin()
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}';",
            db.name
        ))
        .unwrap();
    let r = api.call("GET", "/api/v2/users/outage", None);
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.body["error"], "Service Unavailable");
    assert_eq!(r.body["message"], "the database is unavailable");
    let health = reqwest::blocking::get(format!("{}/healthz", t.base())).unwrap();
    assert_eq!(health.status().as_u16(), 503);
    // Back: the next requests succeed without a restart.
    admin()
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            db.name
        ))
        .unwrap();
    let back = wait_for(Duration::from_secs(30), || {
        (api.call("GET", "/api/v2/users/outage", None).status == 200).then_some(())
    });
    assert!(back.is_some(), "{}", t.logs());
    assert!(!t.logs().contains("panicked"), "{}", t.logs());
}
