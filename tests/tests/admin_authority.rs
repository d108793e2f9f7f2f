//! What an admin's token and permissions reach, against a real `ferry
//! serve`: tokens follow the admin as stored now (demoted, disabled, deleted
//! → refused at once), homes and folders never reach Ferry's own files, the
//! signing key is never stored in clear, usernames cannot name directories.

use std::path::Path;

use ferry_tests::*;
use serde_json::json;

fn message(r: &Reply) -> String {
    r.body["message"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_demoted_disabled_or_deleted_admins_token_is_refused_at_once() {
    let t = Topology::serve().unwrap();
    let root = t.api();
    let base = t.base();
    let ann = json!({"username": "ann", "password": "ann-pw",
                     "permissions": ["view_users", "add_users"],
                     "filters": {"allow_api_key_auth": true}});
    assert_eq!(root.call("POST", "/api/v2/admins", Some(&ann)).status, 201);
    let token = Api::login(&base, "ann", "ann-pw").unwrap();
    assert_eq!(token.call("GET", "/api/v2/users", None).status, 200);

    // Demoted: the token issued with the old permissions is void.
    let demoted = json!({"permissions": ["view_conns"], "filters": {"allow_api_key_auth": true}});
    assert_eq!(
        root.call("PUT", "/api/v2/admins/ann", Some(&demoted))
            .status,
        200
    );
    let r = token.call("GET", "/api/v2/users", None);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        message(&r).contains("changed after this token was issued"),
        "{r:?}"
    );
    // A new token carries what the admin holds now.
    let fresh = Api::login(&base, "ann", "ann-pw").unwrap();
    assert_eq!(fresh.call("GET", "/api/v2/users", None).status, 403);
    assert_eq!(fresh.call("GET", "/api/v2/connections", None).status, 200);

    // Disabled, then deleted: refused at once, saying why.
    let disabled = json!({"status": 0, "permissions": ["view_conns"]});
    assert_eq!(
        root.call("PUT", "/api/v2/admins/ann", Some(&disabled))
            .status,
        200
    );
    let r = fresh.call("GET", "/api/v2/connections", None);
    assert_eq!(r.status, 401);
    assert!(message(&r).contains("disabled"), "{r:?}");
    assert_eq!(root.call("DELETE", "/api/v2/admins/ann", None).status, 200);
    let r = fresh.call("GET", "/api/v2/connections", None);
    assert_eq!(r.status, 401);
    assert!(message(&r).contains("no longer exists"), "{r:?}");
    // The root's own token was never affected.
    assert_eq!(root.call("GET", "/api/v2/admins", None).status, 200);
}

/// A symlink at `link` to `target`.
fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn a_limited_admin_cannot_reach_ferrys_files() {
    let t = Topology::serve().unwrap();
    let root = t.api();
    let base = t.base();
    let lim = json!({"username": "lim", "password": "lim-pw", "permissions": ["add_users"]});
    assert_eq!(root.call("POST", "/api/v2/admins", Some(&lim)).status, 201);
    let lim = Api::login(&base, "lim", "lim-pw").unwrap();
    let tmp = t.dir.path();
    let data = tmp.join("data");
    symlink(&data, &tmp.join("innocent"));

    let add = |api: &Api, name: &str, home: &Path| {
        api.call("POST", "/api/v2/users", Some(&user_json(name, "pw", home)))
    };
    // Inside the data directory, however spelled: refused, naming the field.
    for (i, home) in [
        data.clone(),
        data.join("u"),
        tmp.join("homes/../data/x"),
        tmp.join("innocent/x"),
        data.join("backups/new"),
    ]
    .iter()
    .enumerate()
    {
        let r = add(&lim, &format!("in{i}"), home);
        assert_eq!(r.status, 400, "{home:?}: {r:?}");
        let m = message(&r);
        assert!(
            m.contains("home_dir") && m.contains("inside Ferry's"),
            "{m}"
        );
        assert!(!m.contains("ferry.db"), "{m}");
    }
    // Containing it (a parent, "/"): refused for a limited admin.
    for home in [tmp.to_path_buf(), Path::new("/").to_path_buf()] {
        let r = add(&lim, "above", &home);
        assert_eq!(r.status, 400, "{home:?}: {r:?}");
        assert!(
            message(&r).contains("contains Ferry's data directory"),
            "{r:?}"
        );
    }
    // A folder mapped into it, created on the way.
    let mut u = user_json("folded", "pw", &t.home("folded"));
    u["virtual_folders"] = json!([{"name": "f1", "virtual_path": "/f",
                                   "mapped_path": data.join("f")}]);
    let r = lim.call("POST", "/api/v2/users", Some(&u));
    assert_eq!(r.status, 400, "{r:?}");
    assert!(message(&r).contains("mapped_path"), "{r:?}");
    // An ordinary home is fine.
    assert_eq!(add(&lim, "fine", &t.home("fine")).status, 201);
    // Even an admin with "*" cannot put a home inside; it may choose "/".
    assert_eq!(add(&root, "deep", &data.join("deep")).status, 400);
    assert_eq!(add(&root, "everything", Path::new("/")).status, 201);

    // A group's home template that lands on the data directory for one
    // member: the login is refused, and the log says why.
    let g = json!({"name": "g1", "user_settings": {"home_dir": format!("{}/%username%", tmp.display())}});
    assert_eq!(root.call("POST", "/api/v2/groups", Some(&g)).status, 201);
    let mut member = user_json("data", "data-pw", &t.home("data"));
    member["groups"] = json!([{"name": "g1", "type": 1}]);
    assert_eq!(
        root.call("POST", "/api/v2/users", Some(&member)).status,
        201
    );
    let (ok, out) = sftp1(t.sftp_port(), "data", &pw("data-pw"), "ls");
    assert!(!ok, "{out}");
    assert!(
        t.logs()
            .contains("the home or a folder reaches Ferry's own files"),
        "{}",
        t.logs()
    );
    assert!(!data.join("ferry.db").is_dir() && data.join("ferry.db").is_file());

    // The signing key is stored sealed: no file under the test's tree holds
    // it in clear (hex or raw), nor a private host key.
    let key = jwt_key(&data);
    let hex_key = hex::encode(&key);
    let mut files = vec![tmp.to_path_buf()];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        let Ok(meta) = p.symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else if meta.is_file() {
            seen += 1;
            let bytes = std::fs::read(&p).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(&hex_key),
                "{} holds the signing key",
                p.display()
            );
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_slice()),
                "{} holds the raw signing key",
                p.display()
            );
            assert!(!text.contains("OPENSSH PRIVATE KEY"), "{}", p.display());
        }
    }
    assert!(seen >= 3, "the scan saw the database and the key files");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("master-key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn usernames_cannot_name_directories() {
    let bases = tempfile::tempdir().unwrap();
    let base_dir = bases.path().join("homes");
    let t = Topology::serve_with(&[(
        "FERRY_DATA_PROVIDER__USERS_BASE_DIR".into(),
        base_dir.to_str().unwrap().into(),
    )])
    .unwrap();
    let api = t.api();
    let user =
        |name: &str| json!({"username": name, "password": "pw", "permissions": {"/": ["*"]}});
    for (name, rule) in [
        ("..", "\"..\" are not allowed"),
        (".", "\"..\" are not allowed"),
        ("~root", "cannot start with \"~\""),
    ] {
        let r = api.call("POST", "/api/v2/users", Some(&user(name)));
        assert_eq!(r.status, 400, "{name}: {r:?}");
        assert!(message(&r).contains(rule), "{name}: {r:?}");
    }
    let r = api.call("POST", "/api/v2/users", Some(&user("dot.ted")));
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.body["home_dir"],
        base_dir.join("dot.ted").to_str().unwrap()
    );
    // A restore names the object and the rule, and stores nothing.
    let r = api.call(
        "POST",
        "/api/v2/loaddata",
        Some(&json!({"users": [user("ok1"), user("..")]})),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        message(&r).contains("users[1]") && message(&r).contains("\"..\""),
        "{r:?}"
    );
    assert_eq!(api.call("GET", "/api/v2/users/ok1", None).status, 404);
}
