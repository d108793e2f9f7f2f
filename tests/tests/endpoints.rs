//! Every REST endpoint, one table: success, a validation failure, the
//! missing permission (403 naming it) and not-found, against a real
//! `ferry serve`.

use ferry_tests::*;
use serde_json::{Value, json};

/// One endpoint case.
struct Case {
    method: &'static str,
    path: String,
    body: Option<Value>,
    ok: u16,
    /// The permission it needs (None: any admin).
    perm: Option<&'static str>,
    /// A request that fails validation, and a word the message must hold.
    invalid: Option<(String, Option<Value>, &'static str)>,
    /// A request for something that does not exist.
    missing: Option<(String, Option<Value>)>,
}

fn case(
    method: &'static str,
    path: &str,
    body: Option<Value>,
    ok: u16,
    perm: &'static str,
) -> Case {
    Case {
        method,
        path: path.to_string(),
        body,
        ok,
        perm: (!perm.is_empty()).then_some(perm),
        invalid: None,
        missing: None,
    }
}

impl Case {
    fn invalid(mut self, path: &str, body: Option<Value>, word: &'static str) -> Self {
        self.invalid = Some((path.to_string(), body, word));
        self
    }
    fn missing(mut self, path: &str, body: Option<Value>) -> Self {
        self.missing = Some((path.to_string(), body));
        self
    }
}

#[test]
fn every_endpoint_checks_permission_validates_and_reports_not_found() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let user = |name: &str| user_json(name, "pw-1", &t.home(name));
    let folder = |name: &str| json!({"name": name, "mapped_path": t.dir.path().join(name)});
    // Fixtures the cases read, change and delete.
    api.add_user(user("u1"));
    assert_eq!(
        api.call("POST", "/api/v2/folders", Some(&folder("f1")))
            .status,
        201
    );
    assert_eq!(
        api.call("POST", "/api/v2/groups", Some(&json!({"name": "g1"})))
            .status,
        201
    );
    let admin = |name: &str, perms: Value| json!({"username": name, "password": "pw-12345", "permissions": perms});
    for (name, perms) in [
        ("a1", json!(["view_users"])),
        ("status_only", json!(["view_status"])),
        ("users_only", json!(["view_users"])),
    ] {
        assert_eq!(
            api.call("POST", "/api/v2/admins", Some(&admin(name, perms)))
                .status,
            201
        );
    }
    let r = api.call(
        "POST",
        "/api/v2/apikeys",
        Some(&json!({"name": "k1", "scope": 1})),
    );
    assert_eq!(r.status, 201);
    let key_id = r.body["key"]
        .as_str()
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let status_only = Api::login(&t.base(), "status_only", "pw-12345").unwrap();
    let users_only = Api::login(&t.base(), "users_only", "pw-12345").unwrap();
    let usage = json!({"used_quota_size": 1234, "used_quota_files": 5});

    let cases = vec![
        case("GET", "/api/v2/users", None, 200, "view_users").invalid(
            "/api/v2/users?limit=0",
            None,
            "limit",
        ),
        case("POST", "/api/v2/users", Some(user("u2")), 201, "add_users").invalid(
            "/api/v2/users",
            Some(
                json!({"username": "u3", "password": "p", "home_dir": "relative",
                        "permissions": {"/": ["*"]}}),
            ),
            "home_dir",
        ),
        case("GET", "/api/v2/users/u1", None, 200, "view_users")
            .missing("/api/v2/users/nope", None),
        case(
            "PUT",
            "/api/v2/users/u1",
            Some(user("u1")),
            200,
            "edit_users",
        )
        .invalid(
            "/api/v2/users/u1",
            Some(json!({"status": 7, "home_dir": "/x"})),
            "status",
        )
        .missing("/api/v2/users/nope", Some(user("nope"))),
        case("DELETE", "/api/v2/users/u2", None, 200, "del_users")
            .missing("/api/v2/users/u2", None),
        case("GET", "/api/v2/groups", None, 200, "manage_groups").invalid(
            "/api/v2/groups?order=UP",
            None,
            "order",
        ),
        case(
            "POST",
            "/api/v2/groups",
            Some(json!({"name": "g2"})),
            201,
            "manage_groups",
        )
        .invalid("/api/v2/groups", Some(json!({"name": "g/2"})), "name"),
        case("GET", "/api/v2/groups/g1", None, 200, "manage_groups")
            .missing("/api/v2/groups/nope", None),
        case(
            "PUT",
            "/api/v2/groups/g1",
            Some(json!({"description": "d"})),
            200,
            "manage_groups",
        )
        .invalid(
            "/api/v2/groups/g1",
            Some(json!({"user_settings": {"x": 1}})),
            "x",
        )
        .missing("/api/v2/groups/nope", Some(json!({}))),
        case("DELETE", "/api/v2/groups/g2", None, 200, "manage_groups")
            .missing("/api/v2/groups/g2", None),
        case("GET", "/api/v2/folders", None, 200, "manage_folders").invalid(
            "/api/v2/folders?offset=-1",
            None,
            "offset",
        ),
        case(
            "POST",
            "/api/v2/folders",
            Some(folder("f2")),
            201,
            "manage_folders",
        )
        .invalid(
            "/api/v2/folders",
            Some(json!({"name": "f3", "mapped_path": "rel"})),
            "mapped_path",
        ),
        case("GET", "/api/v2/folders/f1", None, 200, "manage_folders")
            .missing("/api/v2/folders/nope", None),
        case(
            "PUT",
            "/api/v2/folders/f1",
            Some(folder("f1")),
            200,
            "manage_folders",
        )
        .invalid(
            "/api/v2/folders/f1",
            Some(json!({"mapped_path": 5})),
            "mapped_path",
        )
        .missing("/api/v2/folders/nope", Some(folder("nope"))),
        case("DELETE", "/api/v2/folders/f2", None, 200, "manage_folders")
            .missing("/api/v2/folders/f2", None),
        case("GET", "/api/v2/admins", None, 200, "*").invalid(
            "/api/v2/admins?limit=501",
            None,
            "limit",
        ),
        case(
            "POST",
            "/api/v2/admins",
            Some(admin("a2", json!(["view_users"]))),
            201,
            "*",
        )
        .invalid("/api/v2/admins", Some(admin("a3", json!(["fly"]))), "fly"),
        case("GET", "/api/v2/admins/a1", None, 200, "*").missing("/api/v2/admins/nope", None),
        case(
            "PUT",
            "/api/v2/admins/a1",
            Some(json!({"permissions": ["view_conns"]})),
            200,
            "*",
        )
        .invalid(
            "/api/v2/admins/a1",
            Some(json!({"permissions": []})),
            "permission",
        )
        .missing("/api/v2/admins/nope", Some(json!({"permissions": ["*"]}))),
        case("DELETE", "/api/v2/admins/a2", None, 200, "*").missing("/api/v2/admins/a2", None),
        case("GET", "/api/v2/apikeys", None, 200, "*").invalid(
            "/api/v2/apikeys?order=x",
            None,
            "order",
        ),
        case(
            "POST",
            "/api/v2/apikeys",
            Some(json!({"name": "k2", "scope": 1})),
            201,
            "*",
        )
        .invalid(
            "/api/v2/apikeys",
            Some(json!({"name": "k3", "scope": 9})),
            "scope",
        ),
        case("GET", &format!("/api/v2/apikeys/{key_id}"), None, 200, "*")
            .missing("/api/v2/apikeys/nope", None),
        case(
            "PUT",
            &format!("/api/v2/apikeys/{key_id}"),
            Some(json!({"name": "k1b", "scope": 1})),
            200,
            "*",
        )
        .invalid(
            &format!("/api/v2/apikeys/{key_id}"),
            Some(json!({"name": "", "scope": 1})),
            "name",
        )
        .missing(
            "/api/v2/apikeys/nope",
            Some(json!({"name": "k", "scope": 1})),
        ),
        case(
            "DELETE",
            &format!("/api/v2/apikeys/{key_id}"),
            None,
            200,
            "*",
        )
        .missing(&format!("/api/v2/apikeys/{key_id}"), None),
        case(
            "PUT",
            "/api/v2/quotas/users/u1/usage",
            Some(usage.clone()),
            200,
            "quota_scans",
        )
        .invalid(
            "/api/v2/quotas/users/u1/usage?mode=double",
            Some(usage.clone()),
            "mode",
        )
        .missing("/api/v2/quotas/users/nope/usage", Some(usage.clone())),
        case(
            "PUT",
            "/api/v2/quotas/folders/f1/usage",
            Some(usage.clone()),
            200,
            "quota_scans",
        )
        .invalid(
            "/api/v2/quotas/folders/f1/usage",
            Some(json!({"used_quota_size": "lots"})),
            "used_quota_size",
        )
        .missing("/api/v2/quotas/folders/nope/usage", Some(usage.clone())),
        case(
            "POST",
            "/api/v2/quotas/users/u1/scan",
            None,
            202,
            "quota_scans",
        )
        .missing("/api/v2/quotas/users/nope/scan", None),
        case(
            "POST",
            "/api/v2/quotas/folders/f1/scan",
            None,
            202,
            "quota_scans",
        )
        .missing("/api/v2/quotas/folders/nope/scan", None),
        case(
            "GET",
            "/api/v2/quotas/users/scans",
            None,
            200,
            "quota_scans",
        ),
        case(
            "GET",
            "/api/v2/quotas/folders/scans",
            None,
            200,
            "quota_scans",
        ),
        case(
            "GET",
            "/api/v2/dumpdata?output-file=saved.json",
            None,
            200,
            "*",
        )
        .invalid("/api/v2/dumpdata?output-file=../x", None, "output-file"),
        case(
            "POST",
            "/api/v2/loaddata",
            Some(json!({"users": []})),
            200,
            "*",
        )
        .invalid(
            "/api/v2/loaddata",
            Some(json!({"users": [{"username": "x"}]})),
            "users[0]",
        ),
        case(
            "GET",
            "/api/v2/loaddata?input-file=saved.json",
            None,
            200,
            "*",
        )
        .invalid(
            "/api/v2/loaddata?input-file=/etc/passwd",
            None,
            "backups directory",
        )
        .missing("/api/v2/loaddata?input-file=nope.json", None),
        case("GET", "/api/v2/status", None, 200, "view_status"),
        case("GET", "/api/v2/connections", None, 200, "view_conns"),
        case(
            "DELETE",
            "/api/v2/connections/nope",
            None,
            404,
            "close_conns",
        ),
        case("GET", "/api/v2/defender/hosts", None, 200, "view_defender"),
        case(
            "GET",
            "/api/v2/defender/hosts/7f000001",
            None,
            404,
            "view_defender",
        ),
        case(
            "DELETE",
            "/api/v2/defender/hosts/7f000001",
            None,
            404,
            "manage_defender",
        ),
        case(
            "PUT",
            "/api/v2/admin/changepwd",
            Some(json!({"current_password": ADMIN_PASSWORD, "new_password": ADMIN_PASSWORD})),
            200,
            "",
        )
        .invalid(
            "/api/v2/admin/changepwd",
            Some(json!({"current_password": ADMIN_PASSWORD, "new_password": ""})),
            "empty",
        ),
    ];

    for c in &cases {
        let what = format!("{} {}", c.method, c.path);
        // Missing permission first: nothing may happen.
        if let Some(perm) = c.perm {
            let limited = if perm == "view_status" {
                &users_only
            } else {
                &status_only
            };
            let r = limited.call(c.method, &c.path, c.body.as_ref());
            assert_eq!(r.status, 403, "{what} without {perm}: {:?}", r.body);
            let m = r.body["message"].as_str().unwrap_or_default();
            assert!(m.contains(&format!("{perm:?}")), "{what}: {m}");
        }
        if let Some((path, body, word)) = &c.invalid {
            let r = api.call(c.method, path, body.as_ref());
            assert_eq!(r.status, 400, "{} {path} invalid: {:?}", c.method, r.body);
            let m = r.body["message"].as_str().unwrap_or_default();
            assert!(
                m.contains(word),
                "{} {path}: {m:?} names {word:?}",
                c.method
            );
            assert_eq!(r.body["error"], "Bad Request");
        }
        let r = api.call(c.method, &c.path, c.body.as_ref());
        assert_eq!(r.status, c.ok, "{what}: {:?}", r.body);
        if r.status == 404 {
            assert!(r.body["message"].is_string(), "{what}: {:?}", r.body);
        } else {
            verify(&api, c, &r.body);
        }
        if let Some((path, body)) = &c.missing {
            let r = api.call(c.method, path, body.as_ref());
            assert_eq!(r.status, 404, "{} {path} missing: {:?}", c.method, r.body);
            assert_eq!(r.body["error"], "Not Found");
        }
    }
    // The limited admins changed nothing. (The password change above voids
    // the tokens issued before it: log in again.)
    let api = t.api();
    assert_eq!(api.call("GET", "/api/v2/users/u1", None).status, 200);
    assert_eq!(api.call("GET", "/api/v2/users/u2", None).status, 404);
}

/// The name field of each object collection.
fn key_of(collection: &str) -> Option<&'static str> {
    match collection {
        "users" | "admins" => Some("username"),
        "groups" | "folders" => Some("name"),
        "apikeys" => Some("id"),
        _ => None,
    }
}

/// Scalars of `sent` (passwords aside) as `stored` holds them.
fn assert_stored(what: &str, sent: &Value, stored: &Value) {
    for (k, v) in sent.as_object().into_iter().flatten() {
        if k.contains("password") || !(v.is_string() || v.is_number() || v.is_boolean()) {
            continue;
        }
        assert_eq!(&stored[k], v, "{what}: {k} as sent, in {stored}");
    }
}

/// A success did what it says: lists list, reads return the object asked
/// for, creates and updates are read back, deletes are gone, and the other
/// endpoints answer with their documented shape.
fn verify(api: &Api, c: &Case, body: &Value) {
    let what = format!("{} {}", c.method, c.path);
    let path = c.path.split('?').next().unwrap();
    let parts: Vec<&str> = path.trim_start_matches("/api/v2/").split('/').collect();
    match (c.method, parts.as_slice()) {
        ("GET", [coll]) if key_of(coll).is_some() => {
            let list = body.as_array().unwrap_or_else(|| panic!("{what}: {body}"));
            let key = key_of(coll).unwrap();
            assert!(
                !list.is_empty() && list.iter().all(|o| o[key].is_string()),
                "{what}: {body}"
            );
        }
        ("GET", [coll, id]) if key_of(coll).is_some() => {
            assert_eq!(body[key_of(coll).unwrap()], *id, "{what}: {body}");
        }
        ("POST", [coll]) if key_of(coll).is_some() => {
            let sent = c.body.as_ref().unwrap();
            let id = match *coll {
                "apikeys" => {
                    let key = body["key"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{what}: {body}"));
                    key.split('.').next().unwrap().to_string()
                }
                _ => sent[key_of(coll).unwrap()].as_str().unwrap().to_string(),
            };
            let back = api.call("GET", &format!("/api/v2/{coll}/{id}"), None);
            assert_eq!(back.status, 200, "{what}: read back {:?}", back.body);
            assert_stored(&what, sent, &back.body);
        }
        ("PUT", [coll, _]) if key_of(coll).is_some() => {
            let back = api.call("GET", path, None);
            assert_eq!(back.status, 200, "{what}: read back {:?}", back.body);
            assert_stored(&what, c.body.as_ref().unwrap(), &back.body);
        }
        ("DELETE", [coll, _]) if key_of(coll).is_some() => {
            assert_eq!(
                api.call("GET", path, None).status,
                404,
                "{what}: still there"
            );
        }
        ("PUT", ["quotas", coll, name, "usage"]) => {
            let back = api.call("GET", &format!("/api/v2/{coll}/{name}"), None);
            assert_stored(&what, c.body.as_ref().unwrap(), &back.body);
        }
        ("POST", ["quotas", _, _, "scan"])
        | ("GET", ["dumpdata"])
        | ("POST" | "GET", ["loaddata"]) => {
            assert!(body["message"].is_string(), "{what}: {body}");
        }
        ("GET", ["quotas", _, "scans"])
        | ("GET", ["connections"])
        | ("GET", ["defender", "hosts"]) => {
            assert!(body.is_array(), "{what}: {body}");
        }
        ("GET", ["status"]) => {
            assert!(
                body.is_object() && !body.as_object().unwrap().is_empty(),
                "{what}: {body}"
            );
        }
        ("PUT", ["admin", "changepwd"]) => {
            let new = c.body.as_ref().unwrap()["new_password"].as_str().unwrap();
            assert!(
                Api::login(api.base(), "admin", new).is_ok(),
                "{what}: the new password logs in"
            );
        }
        _ => panic!("{what}: no check for this success; add one"),
    }
}
