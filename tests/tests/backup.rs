//! Backup and restore: `GET /api/v2/dumpdata`, `POST /api/v2/loaddata`,
//! `ferry dumpdata`/`ferry loaddata`, SFTPGo v2 and 1.x backups, against real
//! `ferry serve` processes and OpenSSH's sftp.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_tests::*;
use serde_json::{Value, json};

/// Posts a backup document; returns (status, body).
fn load(api: &Api, query: &str, doc: &Value) -> Reply {
    api.call("POST", &format!("/api/v2/loaddata{query}"), Some(doc))
}

fn dump(api: &Api) -> Value {
    let r = api.call("GET", "/api/v2/dumpdata?output-data=1", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

/// A fixture with `@BASE@` replaced by `base`.
fn fixture(name: &str, base: &Path) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text.replace("@BASE@", base.to_str().unwrap())).unwrap()
}

fn api_key_get(base: &str, key: &str, path: &str) -> u16 {
    reqwest::blocking::Client::new()
        .get(format!("{base}{path}"))
        .header("X-SFTPGO-API-KEY", key)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn dump_load_round_trip_is_identical_and_keeps_credentials() {
    let a = Topology::serve().unwrap();
    let api = a.api();
    let shared = a.dir.path().join("shared");
    let r = api.call(
        "POST",
        "/api/v2/folders",
        Some(&json!({"name": "shared", "mapped_path": shared, "description": "team"})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let key = a.keypair("ann");
    let mut ann = user_json("ann", "ann-pw", &a.home("ann"));
    ann["public_keys"] = json!([public_key(&key)]);
    ann["quota_size"] = json!(10_000_000);
    ann["virtual_folders"] =
        json!([{"name": "shared", "virtual_path": "/shared", "quota_size": -1, "quota_files": -1}]);
    ann["filters"] = json!({"denied_login_methods": ["keyboard-interactive"]});
    api.add_user(ann);
    let r = api.call(
        "PUT",
        "/api/v2/quotas/users/ann/usage",
        Some(&json!({"used_quota_size": 1234, "used_quota_files": 3})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = api.call(
        "POST",
        "/api/v2/admins",
        Some(
            &json!({"username": "ops", "password": "ops-pw", "permissions": ["view_users"],
                     "filters": {"allow_api_key_auth": true}}),
        ),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = api.call(
        "POST",
        "/api/v2/apikeys",
        Some(&json!({"name": "ci", "scope": 1, "admin": "ops"})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let api_key = r.body["key"].as_str().unwrap().to_string();

    let doc = dump(&api);
    assert_eq!(doc["version"], 17);
    let users = doc["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert!(users[0].get("id").is_none(), "ids are local to a database");
    assert!(
        users[0]["password"]
            .as_str()
            .unwrap()
            .starts_with("$argon2id$"),
        "the dump carries the hash: {}",
        users[0]["password"]
    );
    assert_eq!(users[0]["used_quota_size"], 1234);
    assert_eq!(users[0]["virtual_folders"][0]["name"], "shared");
    assert_eq!(doc["folders"][0]["users"], json!(["ann"]));
    let keys = doc["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let stored = keys[0]["key"].as_str().unwrap();
    let secret = api_key.split('.').nth(1).unwrap();
    assert!(
        stored.starts_with("$argon2id$") && !stored.contains(secret),
        "API keys are stored hashed"
    );

    // The same backup written to the backups directory, mode 0600.
    let r = api.call("GET", "/api/v2/dumpdata?output-file=nightly.json", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let file = a.dir.path().join("data/backups/nightly.json");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(on_disk, doc);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for bad in ["../escape.json", ".hidden", ""] {
        let r = api.call("GET", &format!("/api/v2/dumpdata?output-file={bad}"), None);
        assert_eq!(r.status, 400, "{bad:?}: {:?}", r.body);
    }
    assert!(!a.dir.path().join("data/escape.json").exists());
    // GET loaddata reads backups from that directory only.
    let r = api.call(
        "GET",
        "/api/v2/loaddata?input-file=nightly.json&mode=1",
        None,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.body["added"].as_u64(), r.body["skipped"].as_u64()),
        (Some(0), Some(5))
    );
    let r = api.call(
        "GET",
        &format!("/api/v2/loaddata?input-file={}&mode=1", file.display()),
        None,
    );
    assert_eq!(r.status, 200, "an absolute path inside works: {:?}", r.body);
    for bad in ["/etc/passwd", "../ferry.db", ""] {
        let r = api.call("GET", &format!("/api/v2/loaddata?input-file={bad}"), None);
        assert_eq!(r.status, 400, "{bad:?}: {:?}", r.body);
    }
    assert_eq!(
        api.call("GET", "/api/v2/loaddata?input-file=none.json", None)
            .status,
        404
    );

    // Restore into a fresh instance: the dump comes back identical.
    let b = Topology::serve().unwrap();
    let api_b = b.api();
    let r = load(&api_b, "", &doc);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["added"], 4, "folder, ops, ann, key: {:?}", r.body);
    assert_eq!(r.body["updated"], 1, "the bootstrap admin: {:?}", r.body);
    // The restore replaced the calling admin's password hash: tokens issued
    // before are void, the restored password logs in.
    assert_eq!(api_b.call("GET", "/api/v2/users", None).status, 401);
    let api_b = b.api();
    let mut again = dump(&api_b);
    // That new login is the one change since the restore.
    assert!(again["admins"][0]["last_login"].as_i64() > doc["admins"][0]["last_login"].as_i64());
    again["admins"][0]["last_login"] = doc["admins"][0]["last_login"].clone();
    assert_eq!(again, doc);

    // Credentials work on the new instance: password, key, API key.
    let (ok, out) = sftp1(b.sftp_port(), "ann", &pw("ann-pw"), "ls /");
    assert!(ok, "{out}");
    let (ok, out) = sftp1(b.sftp_port(), "ann", &Cred::Key(key), "ls /shared");
    assert!(ok, "{out}");
    assert_eq!(api_key_get(&b.base(), &api_key, "/api/v2/users"), 200);

    // Mode 1 adds only: an existing user is left alone.
    let mut changed = doc.clone();
    changed["users"][0]["description"] = json!("changed");
    let r = load(&api_b, "?mode=1", &changed);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["added"], 0);
    let r = api_b.call("GET", "/api/v2/users/ann", None);
    assert_eq!(r.body["description"], "");
    // Mode 0 replaces, keeping the usage the ledger has now.
    let r = api_b.call(
        "PUT",
        "/api/v2/quotas/users/ann/usage",
        Some(&json!({"used_quota_size": 777, "used_quota_files": 1})),
    );
    assert_eq!(r.status, 200);
    let r = load(&api_b, "?mode=0", &changed);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = api_b.call("GET", "/api/v2/users/ann", None);
    assert_eq!(r.body["description"], "changed");
    assert_eq!(r.body["used_quota_size"], 777, "live usage is kept");

    // Bad parameters are refused before anything happens.
    for q in ["?mode=5", "?scan-quota=9"] {
        assert_eq!(load(&api_b, q, &doc).status, 400, "{q}");
    }
}

#[test]
fn restore_is_all_or_nothing() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let before = dump(&api);
    // The second user maps a folder that exists nowhere: the database
    // refuses it after the folder and the first user were written.
    let doc = json!({
        "folders": [{"name": "newf", "mapped_path": t.dir.path().join("newf")}],
        "users": [
            {"username": "zed", "password": "zed-pw", "home_dir": t.home("zed"),
             "permissions": {"/": ["*"]}},
            {"username": "yan", "password": "yan-pw", "home_dir": t.home("yan"),
             "permissions": {"/": ["*"]},
             "virtual_folders": [{"name": "ghost", "virtual_path": "/g"}]}
        ],
        "version": 17
    });
    let r = load(&api, "", &doc);
    assert_eq!(r.status, 400, "{:?}", r.body);
    let msg = r.body["message"].as_str().unwrap();
    assert!(msg.contains("yan") && msg.contains("ghost"), "{msg}");
    assert_eq!(api.call("GET", "/api/v2/users/zed", None).status, 404);
    assert_eq!(api.call("GET", "/api/v2/folders/newf", None).status, 404);
    assert_eq!(dump(&api), before, "nothing was written");

    // Validation errors name the object and the field.
    let r = load(
        &api,
        "",
        &json!({"users": [{"username": "v", "password": "p", "home_dir": "relative",
                           "permissions": {"/": ["*"]}}]}),
    );
    assert_eq!(r.status, 400);
    let msg = r.body["message"].as_str().unwrap();
    assert!(
        msg.contains("users[0]") && msg.contains("home_dir"),
        "{msg}"
    );
    // Sections Ferry does not have are refused, not dropped.
    let r = load(
        &api,
        "",
        &json!({"users": [], "shares": [{"id": "s"}], "version": 16}),
    );
    assert_eq!(r.status, 400);
    assert!(r.body["message"].as_str().unwrap().contains("shares"));
    // Not JSON.
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/v2/loaddata", t.base()))
        .bearer_auth(api.token())
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(dump(&api), before);
}

#[test]
fn sftpgo_v2_and_v1_backups_restore_and_their_users_log_in() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let base = t.dir.path().join("sftpgo");
    std::fs::create_dir_all(base.join("docs")).unwrap();
    std::fs::write(base.join("docs/readme.txt"), b"from sftpgo\n").unwrap();

    let v2 = fixture("sftpgo-v2-backup.json", &base);
    let r = load(&api, "", &v2);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let notes = r.body["notes"].to_string();
    assert!(
        notes.contains("legacy"),
        "retired permissions noted: {notes}"
    );
    // The user: sha512crypt password, folder, permissions, usage, times.
    let r = api.call("GET", "/api/v2/users/carol", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["used_quota_size"], 4096);
    assert_eq!(r.body["created_at"], 1731000000000i64);
    assert_eq!(r.body["email"], "carol@example.com");
    assert_eq!(r.body["groups"], json!([{"name": "staff", "type": 2}]));
    let r = api.call("GET", "/api/v2/groups/staff", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["users"], json!(["carol"]));
    assert_eq!(r.body["updated_at"], 1730600000000i64);
    let local = t.dir.path().join("readme-copy.txt");
    let out = sftp_batch(
        t.sftp_port(),
        "carol",
        &pw("carol-pw"),
        &format!("ls /docs\nget /docs/readme.txt {}\n", local.display()),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&local).unwrap(), b"from sftpgo\n");
    // The admin: bcrypt password, retired permission dropped, never `*`.
    let legacy = Api::login(&t.base(), "legacy", "legacy-pw").unwrap();
    let r = legacy.call("GET", "/api/v2/users", None);
    assert_eq!(r.status, 200);
    let r = api.call("GET", "/api/v2/admins/legacy", None);
    assert_eq!(r.body["permissions"], json!(["view_users", "view_conns"]));
    // SFTPGo's API key keeps working.
    assert_eq!(
        api_key_get(
            &t.base(),
            "2pQvTQm3Xy8sftpgo.sftpgokeysecret0001",
            "/api/v2/users"
        ),
        200
    );
    assert_eq!(
        api_key_get(&t.base(), "2pQvTQm3Xy8sftpgo.wrong", "/api/v2/users"),
        401
    );

    // A 1.x backup: folders keyed by mapped path, md5crypt password.
    let v1 = fixture("sftpgo-v1-backup.json", &base);
    let r = load(&api, "", &v1);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = api.call("GET", "/api/v2/users/dave", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let folder = r.body["virtual_folders"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(folder.ends_with("sftpgo_exchange"), "{folder}");
    let r = api.call("GET", &format!("/api/v2/folders/{folder}"), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["users"], json!(["dave"]));
    let out = sftp_batch(
        t.sftp_port(),
        "dave",
        &pw("dave-pw"),
        "mkdir /exchange/in\nls /exchange\n",
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(base.join("exchange/in").is_dir());

    // Sections Ferry does not have yet are refused with the reason.
    let mut with_rules = v2.clone();
    with_rules["event_rules"] = json!([{"name": "r"}]);
    let r = load(&api, "", &with_rules);
    assert_eq!(r.status, 400);
    assert!(r.body["message"].as_str().unwrap().contains("event_rules"));
}

#[test]
fn cli_dumpdata_and_loaddata() {
    let a = Topology::serve().unwrap();
    let api = a.api();
    api.add_user(user_json("cli", "cli-pw", &a.home("cli")));
    let file = a.dir.path().join("out/backup.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let out = Command::new(bin("ferry"))
        .arg("dumpdata")
        .arg("--data-dir")
        .arg(a.dir.path().join("data"))
        .arg("--output")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let from_cli: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(from_cli, dump(&api), "the CLI writes what the API returns");

    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("data");
    let bad = fresh.path().join("bad.json");
    std::fs::write(&bad, r#"{"users": [{"username": "x"}]}"#).unwrap();
    let out = Command::new(bin("ferry"))
        .arg("loaddata")
        .arg("--data-dir")
        .arg(&data)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing was restored"),
        "{}",
        describe(&out)
    );
    let out = Command::new(bin("ferry"))
        .arg("loaddata")
        .arg("--data-dir")
        .arg(&data)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 added"));
    // The restored store serves the user.
    drop(a);
    let (proc, bound) = start_bound(ferry_serve(&data), fresh.path(), "ferry").unwrap();
    let port = bound.port("sftp");
    let ready = wait_for(std::time::Duration::from_secs(60), || {
        proc.log_text()
            .contains("configuration received from the control plane")
            .then_some(())
    });
    assert!(ready.is_some(), "{}", proc.log_text());
    let (ok, out) = sftp1(port, "cli", &pw("cli-pw"), "ls /");
    assert!(ok, "{out}");
}

#[test]
fn import_system_users_keeps_verifiable_hashes_and_keys() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let key = t.keypair("carl");
    let carl_home = t.home("carl");
    std::fs::create_dir_all(carl_home.join(".ssh")).unwrap();
    std::fs::write(
        carl_home.join(".ssh/authorized_keys"),
        format!("no-pty,from=\"127.0.0.1\" {}\n", public_key(&key)),
    )
    .unwrap();
    let etc = t.dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let line = |name: &str, uid: u32| {
        format!(
            "{name}:x:{uid}:{uid}::{}:/bin/bash\n",
            t.home(name).display()
        )
    };
    std::fs::write(
        etc.join("passwd"),
        [
            "root:x:0:0:root:/root:/bin/bash\n".to_string(),
            "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n".to_string(),
            line("alice", 1000),
            line("bob", 1001),
            line("carl", 1002),
            line("dave", 1003),
        ]
        .concat(),
    )
    .unwrap();
    std::fs::write(
        etc.join("shadow"),
        "root:$6$Ferry0salt$uPkYkaFjfn/bsaO3B4weGX5Mixl/QC2JuJ/J.fzxf7yJhid/WLF3n0JAG.UswctFYOgsZpNUVCTQ4n6wlMjpO1:19000:0:99999:7:::\n\
         daemon:*:19000:0:99999:7:::\n\
         alice:$6$Ferry0salt$uPkYkaFjfn/bsaO3B4weGX5Mixl/QC2JuJ/J.fzxf7yJhid/WLF3n0JAG.UswctFYOgsZpNUVCTQ4n6wlMjpO1:19000:0:99999:7:::\n\
         bob:$y$j9T$F5Jx5fExrKuPp53xLKQ..1$Z7xAk5Ismpvhp14D.dW5xF00qGij/7kv3VLVB02Ken9:19000:0:99999:7:::\n\
         carl:*:19000:0:99999:7:::\n\
         dave:$7$CU..../....unsupported:19000:0:99999:7:::\n",
    )
    .unwrap();
    let import = |extra: &[&str]| {
        let out = Command::new(bin("ferry"))
            .arg("import-system-users")
            .arg("--data-dir")
            .arg(t.dir.path().join("data"))
            .arg("--passwd")
            .arg(etc.join("passwd"))
            .arg("--shadow")
            .arg(etc.join("shadow"))
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let dry = import(&["--dry-run"]);
    for expected in [
        "would import alice",
        "sha512crypt",
        "would import bob",
        "yescrypt",
        "would import carl",
        "key options dropped",
        "left out dave",
        "2 account(s) outside uid",
        "nothing written",
    ] {
        assert!(dry.contains(expected), "{expected:?} in:\n{dry}");
    }
    assert_eq!(api.call("GET", "/api/v2/users/alice", None).status, 404);

    let out = import(&[]);
    assert!(out.contains("3 user(s) imported"), "{out}");
    let r = api.call("GET", "/api/v2/users/bob", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.body["uid"].as_i64(), r.body["gid"].as_i64()),
        (Some(1001), Some(1001))
    );
    assert_eq!(api.call("GET", "/api/v2/users/dave", None).status, 404);
    let again = import(&[]);
    assert!(
        again.contains("0 user(s) imported, 3 already existed"),
        "{again}"
    );

    // Their old credentials log in over SFTP.
    for (name, password) in [("alice", "carol-pw"), ("bob", "tom-pw")] {
        let (ok, out) = sftp1(t.sftp_port(), name, &pw(password), "pwd");
        assert!(ok, "{name}: {out}");
    }
    let (ok, out) = sftp1(t.sftp_port(), "carl", &Cred::Key(key), "pwd");
    assert!(ok, "carl: {out}");
    refused_login(t.sftp_port(), "alice", &pw("wrong"));
    let logs = wait_for(Duration::from_secs(10), || {
        let l = t.logs();
        refusal_logged(&l, "alice", "invalid password").then_some(l)
    });
    assert!(logs.is_some(), "no refusal logged:\n{}", t.logs());
}
