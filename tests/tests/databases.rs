//! `ferry serve` on each SQL backend: the same admin, user and SFTP flow on
//! SQLite (the other suites), PostgreSQL and MariaDB.

use ferry_tests::*;

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
