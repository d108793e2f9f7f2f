//! Object-storage settings over REST (SFTPGo's `filesystem`: S3, Google
//! Cloud Storage, Azure Blob) on a real `ferry serve`: users, folders and
//! group templates are validated field by field, their secrets are stored
//! sealed and shown redacted, a redacted secret sent back keeps the stored
//! one, and backups carry them sealed. Portable mode refuses bad storage
//! flags the same way.

use std::path::Path;
use std::process::Command;

use diesel::prelude::*;
use ferry_tests::*;
use serde_json::{Value, json};

/// Associated data Ferry seals object secrets with.
const SECRET_NAME: &str = "ferry object secret";

fn plain(payload: &str) -> Value {
    json!({"status": "Plain", "payload": payload})
}

fn redacted() -> Value {
    json!({"status": "Redacted"})
}

/// Opens a secret as stored in a JSON column with the server's generated
/// master key: what an edge will be given at login.
fn stored_secret(data: &Path, column: &str, pointer: &str) -> String {
    let v: Value = serde_json::from_str(column).unwrap();
    let secret = v
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{pointer} in {v}"));
    assert_eq!(secret["status"], "AES-256-GCM", "sealed: {secret}");
    let master = std::fs::read_to_string(data.join("master-key")).unwrap();
    open_sealed(&master, secret["payload"].as_str().unwrap(), SECRET_NAME).unwrap()
}

fn db(data: &Path) -> SqliteConnection {
    SqliteConnection::establish(data.join("ferry.db").to_str().unwrap()).unwrap()
}

fn user_filesystem(data: &Path, name: &str) -> String {
    use ferry_schema::users;
    users::table
        .filter(users::username.eq(name))
        .select(users::filesystem)
        .first(&mut db(data))
        .unwrap()
}

fn folder_filesystem(data: &Path, name: &str) -> String {
    use ferry_schema::folders;
    folders::table
        .filter(folders::name.eq(name))
        .select(folders::filesystem)
        .first(&mut db(data))
        .unwrap()
}

fn group_settings(data: &Path, name: &str) -> String {
    use ferry_schema::user_groups;
    user_groups::table
        .filter(user_groups::name.eq(name))
        .select(user_groups::user_settings)
        .first(&mut db(data))
        .unwrap()
}

/// GET `path`, change it with `edit`, PUT it back; returns the GET body.
fn get_modify_put(api: &Api, path: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let got = api.call("GET", path, None);
    assert_eq!(got.status, 200, "{:?}", got.body);
    let mut body = got.body.clone();
    edit(&mut body);
    let r = api.call("PUT", path, Some(&body));
    assert_eq!(r.status, 200, "PUT {path}: {:?}", r.body);
    got.body
}

#[test]
fn object_storage_settings_are_sealed_redacted_and_kept() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let data = t.dir.path().join("data");

    // An S3 user: only s3config is kept (SFTPGo's rule), the prefix in
    // SFTPGo's form, the secret redacted in the reply.
    let mut u = user_json("s3user", "pw-1", &t.home("s3user"));
    u["filesystem"] = json!({"provider": 1,
        "s3config": {"bucket": "b1", "region": "eu-west-1", "access_key": "AK",
                     "access_secret": plain("s3-secret-1"), "key_prefix": "users/s3user",
                     "upload_part_size": 10, "upload_concurrency": 4},
        "gcsconfig": {"bucket": "ignored"}});
    let created = api.add_user(u);
    let fs = &created["filesystem"];
    assert_eq!(fs["s3config"]["access_secret"], redacted(), "{fs}");
    assert_eq!(fs["s3config"]["key_prefix"], "users/s3user/");
    assert!(
        fs.get("gcsconfig").is_none(),
        "other providers dropped: {fs}"
    );
    let column = user_filesystem(&data, "s3user");
    assert!(!column.contains("s3-secret-1"), "{column}");
    assert_eq!(
        stored_secret(&data, &column, "/s3config/access_secret"),
        "s3-secret-1"
    );
    // GET-modify-PUT sends the redacted secret back: the stored one stays.
    let got = get_modify_put(&api, "/api/v2/users/s3user", |b| {
        b["filesystem"]["s3config"]["bucket"] = json!("b2");
    });
    assert_eq!(got["filesystem"]["s3config"]["access_secret"], redacted());
    let column = user_filesystem(&data, "s3user");
    assert!(column.contains("\"b2\""), "{column}");
    assert_eq!(
        stored_secret(&data, &column, "/s3config/access_secret"),
        "s3-secret-1"
    );
    let clear = api.call("GET", "/api/v2/users/s3user?confidential_data=1", None);
    assert_eq!(
        clear.body["filesystem"]["s3config"]["access_secret"],
        plain("s3-secret-1")
    );
    // A new plain secret replaces it.
    get_modify_put(&api, "/api/v2/users/s3user", |b| {
        b["filesystem"]["s3config"]["access_secret"] = plain("s3-secret-2");
    });
    assert_eq!(
        stored_secret(
            &data,
            &user_filesystem(&data, "s3user"),
            "/s3config/access_secret"
        ),
        "s3-secret-2"
    );

    // A GCS folder needs no mapped_path; its credentials are kept the same way.
    let key = r#"{"type": "service_account", "project_id": "p"}"#;
    let r = api.call(
        "POST",
        "/api/v2/folders",
        Some(&json!({"name": "gcs-folder", "filesystem": {"provider": 2,
            "gcsconfig": {"bucket": "g1", "credentials": plain(key)}}})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["filesystem"]["gcsconfig"]["credentials"], redacted());
    assert_eq!(r.body["mapped_path"], "");
    get_modify_put(&api, "/api/v2/folders/gcs-folder", |b| {
        b["description"] = json!("changed");
        b["filesystem"]["gcsconfig"]["storage_class"] = json!("NEARLINE");
    });
    let column = folder_filesystem(&data, "gcs-folder");
    assert!(column.contains("NEARLINE"), "{column}");
    assert_eq!(stored_secret(&data, &column, "/gcsconfig/credentials"), key);
    // A user maps it; the view of the user's folders redacts it too.
    let mut m = user_json("mapper", "pw-1", &t.home("mapper"));
    m["virtual_folders"] = json!([{"name": "gcs-folder", "virtual_path": "/cloud"}]);
    let mapper = api.add_user(m);
    assert_eq!(
        mapper["virtual_folders"][0]["filesystem"]["gcsconfig"]["credentials"],
        redacted()
    );

    // An Azure group template.
    let r = api.call(
        "POST",
        "/api/v2/groups",
        Some(
            &json!({"name": "az-group", "user_settings": {"filesystem": {"provider": 3,
            "azblobconfig": {"container": "c1", "account_name": "acct",
                             "account_key": plain("az-key-1"),
                             "key_prefix": "home/%username%/"}}}}),
        ),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let az = &r.body["user_settings"]["filesystem"]["azblobconfig"];
    assert_eq!(az["account_key"], redacted(), "{az}");
    assert_eq!(az["key_prefix"], "home/%username%/");
    get_modify_put(&api, "/api/v2/groups/az-group", |b| {
        b["user_settings"]["filesystem"]["azblobconfig"]["access_tier"] = json!("Cool");
    });
    let column = group_settings(&data, "az-group");
    assert!(column.contains("Cool"), "{column}");
    assert_eq!(
        stored_secret(&data, &column, "/filesystem/azblobconfig/account_key"),
        "az-key-1"
    );

    // Backups carry the secrets sealed, and load back into this server.
    let dump = api.call("GET", "/api/v2/dumpdata?output-data=1", None).body;
    let text = dump.to_string();
    for clear in ["s3-secret-2", "service_account", "az-key-1"] {
        assert!(!text.contains(clear), "{clear} in the dump");
    }
    let r = api.call("POST", "/api/v2/loaddata?mode=0", Some(&dump));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        stored_secret(
            &data,
            &user_filesystem(&data, "s3user"),
            "/s3config/access_secret"
        ),
        "s3-secret-2"
    );
    // Another server's key does not open them: the restore is refused,
    // naming the object, rather than storing secrets no edge could use.
    let other = Topology::serve().unwrap();
    let r = other
        .api()
        .call("POST", "/api/v2/loaddata?mode=0", Some(&dump));
    assert_eq!(r.status, 400, "{:?}", r.body);
    let message = r.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("filesystem.gcsconfig.credentials cannot be opened")
            && message.contains("another master key"),
        "{message}"
    );
}

/// Every invalid field is a 400 naming it; nothing is stored.
#[test]
fn invalid_object_storage_settings_name_their_field() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let s3 = |extra: Value| {
        let mut c = json!({"bucket": "b", "region": "r"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"provider": 1, "s3config": c})
    };
    let user_cases = [
        (
            json!({"provider": 4}),
            "filesystem.provider 4 (local encrypted) is not supported: Ferry stores files on the \
             local disk (0), S3 (1), Google Cloud Storage (2) or Azure Blob (3)",
        ),
        (
            json!({"provider": 6}),
            "filesystem.provider 6 (HTTP) is not supported",
        ),
        (
            json!({"provider": 1}),
            "filesystem.s3config.bucket is required",
        ),
        (
            s3(json!({"region": ""})),
            "filesystem.s3config.region is required (unless an endpoint is set)",
        ),
        (
            s3(json!({"key_prefix": "/abs/"})),
            "filesystem.s3config.key_prefix must not start with \"/\" and must end with \"/\"",
        ),
        (
            s3(json!({"upload_part_size": 2})),
            "filesystem.s3config.upload_part_size must be at least 5 (MB)",
        ),
        (
            s3(json!({"upload_concurrency": 100})),
            "filesystem.s3config.upload_concurrency must be between 0 (the default) and 64",
        ),
        (
            s3(json!({"endpoint": "127.0.0.1:9000"})),
            "filesystem.s3config.endpoint must be an http:// or https:// URL",
        ),
        (
            s3(json!({"access_key": "AK"})),
            "filesystem.s3config.access_secret is required with access_key",
        ),
        (
            s3(json!({"access_key": "AK", "access_secret": "$aes$00aa"})),
            "filesystem.s3config.access_secret is a value SFTPGo 1.x encrypted",
        ),
        (
            json!({"provider": 2, "gcsconfig": {"bucket": "g"}}),
            "filesystem.gcsconfig.credentials is required when automatic_credentials is 0",
        ),
        (
            json!({"provider": 2, "gcsconfig": {"bucket": "g", "automatic_credentials": 3}}),
            "filesystem.gcsconfig.automatic_credentials must be 0",
        ),
        (
            json!({"provider": 3, "azblobconfig": {"account_name": "a",
                   "account_key": plain("k")}}),
            "filesystem.azblobconfig.container is required",
        ),
        (
            json!({"provider": 3, "azblobconfig": {"container": "c"}}),
            "filesystem.azblobconfig.account_name is required (or a sas_url, or use_emulator)",
        ),
        (
            json!({"provider": 3, "azblobconfig": {"container": "c", "use_emulator": true,
                   "access_tier": "Frozen"}}),
            "filesystem.azblobconfig.access_tier must be one of \"\", \"Archive\", \"Hot\" or \"Cool\"",
        ),
    ];
    for (i, (fs, want)) in user_cases.iter().enumerate() {
        let name = format!("bad{i}");
        let mut u = user_json(&name, "pw-1", &t.home(&name));
        u["filesystem"] = fs.clone();
        let r = api.call("POST", "/api/v2/users", Some(&u));
        assert_eq!(r.status, 400, "{fs}: {:?}", r.body);
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(want),
            "{fs}: {message:?} is not {want:?}…"
        );
        let gone = api.call("GET", &format!("/api/v2/users/{name}"), None);
        assert_eq!(gone.status, 404, "nothing stored for {fs}");
    }
    // Folders and group templates say the same.
    let r = api.call(
        "POST",
        "/api/v2/folders",
        Some(&json!({"name": "f", "filesystem": {"provider": 2, "gcsconfig": {}}})),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["message"], "filesystem.gcsconfig.bucket is required");
    let r = api.call(
        "POST",
        "/api/v2/folders",
        Some(&json!({"name": "f", "filesystem": {"provider": 0}})),
    );
    assert_eq!(r.status, 400, "a local folder still needs its path");
    assert_eq!(r.body["message"], "mapped_path is mandatory");
    let r = api.call(
        "POST",
        "/api/v2/groups",
        Some(&json!({"name": "g", "user_settings": {"filesystem": {"provider": 5}}})),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("user_settings.filesystem.provider 5 (SFTP) is not supported"),
        "{:?}",
        r.body
    );
}

/// `ferry-edge portable` checks its storage flags before it binds anything,
/// naming the flag and the rule.
#[test]
fn portable_mode_refuses_bad_storage_flags() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |args: &[&str]| {
        let out = Command::new(bin("ferry-edge"))
            .arg("portable")
            .arg("--directory")
            .arg(dir.path())
            .args(["--sftp-bind", ANY_PORT])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} was accepted");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = refused(&["--fs-provider", "s3fs"]);
    assert!(
        err.contains("--s3-bucket: filesystem.s3config.bucket is required"),
        "{err}"
    );
    let err = refused(&[
        "--fs-provider",
        "1",
        "--s3-bucket",
        "b",
        "--s3-region",
        "r",
        "--s3-upload-part-size",
        "1",
    ]);
    assert!(
        err.contains(
            "--s3-upload-part-size: filesystem.s3config.upload_part_size must be at least 5 (MB)"
        ),
        "{err}"
    );
    let err = refused(&["--fs-provider", "sftpfs"]);
    assert!(
        err.contains("--fs-provider: filesystem.provider 5 (SFTP) is not supported"),
        "{err}"
    );
}
