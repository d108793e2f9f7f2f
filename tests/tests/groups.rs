//! Groups: REST CRUD with validation, and the merge rules seen by a real
//! OpenSSH client on a split control plane + edge.

use ferry_tests::*;
use serde_json::json;

#[test]
fn groups_crud_and_validation() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let r = api.call(
        "POST",
        "/api/v2/groups",
        Some(&json!({"name": "staff", "description": "office",
                     "user_settings": {"quota_files": 10, "permissions": {"/pub": ["list"]}}})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["user_settings"]["quota_files"], 10);
    let r = api.call("GET", "/api/v2/groups/staff", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["description"], "office");
    assert_eq!(r.body["users"], json!([]));
    assert_eq!(
        api.call("GET", "/api/v2/groups", None)
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(api.call("GET", "/api/v2/groups/nope", None).status, 404);
    for (body, expected) in [
        (json!({"name": "staff"}), "already exists"),
        (json!({"name": "a/b"}), "not valid"),
        (
            json!({"name": "g", "user_settings": {"quota_size": -5}}),
            "quota_size",
        ),
        (
            json!({"name": "g", "user_settings": {"shell": "/bin/sh"}}),
            "shell",
        ),
        (
            json!({"name": "g", "user_settings": {"permissions": {"/x": ["fly"]}}}),
            "fly",
        ),
        (
            json!({"name": "g", "virtual_folders": [{"name": "missing", "virtual_path": "/m"}]}),
            "missing",
        ),
    ] {
        let r = api.call("POST", "/api/v2/groups", Some(&body));
        assert!(r.status == 400 || r.status == 409, "{body}: {:?}", r.body);
        let msg = r.body["message"].as_str().unwrap_or_default();
        assert!(msg.contains(expected), "{body}: {msg}");
    }
    assert_eq!(
        api.call("GET", "/api/v2/groups/g", None).status,
        404,
        "nothing stored"
    );

    // Users refer to groups by name and type.
    let mut u = user_json("gwen", "pw", &t.home("gwen"));
    u["groups"] = json!([{"name": "staff", "type": 1}, {"name": "staff2", "type": 2}]);
    let r = api.call("POST", "/api/v2/users", Some(&u));
    assert_eq!(r.status, 400, "unknown group: {:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("staff2"));
    u["groups"] = json!([{"name": "staff", "type": 1}, {"name": "staff", "type": 2}]);
    assert_eq!(api.call("POST", "/api/v2/users", Some(&u)).status, 400);
    u["groups"] = json!([{"name": "staff", "type": 1}]);
    let created = api.add_user(u);
    assert_eq!(created["groups"], json!([{"name": "staff", "type": 1}]));
    // A group with members cannot be deleted; without, it can.
    let r = api.call("DELETE", "/api/v2/groups/staff", None);
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("member"));
    let r = api.call(
        "PUT",
        "/api/v2/groups/staff",
        Some(&json!({"description": "changed", "user_settings": {}})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = api.call(
        "PUT",
        "/api/v2/groups/staff",
        Some(&json!({"name": "renamed"})),
    );
    assert_eq!(r.status, 400);
    let mut u = api.call("GET", "/api/v2/users/gwen", None).body;
    u["groups"] = json!([]);
    assert_eq!(api.call("PUT", "/api/v2/users/gwen", Some(&u)).status, 200);
    assert_eq!(api.call("DELETE", "/api/v2/groups/staff", None).status, 200);
    assert_eq!(api.call("GET", "/api/v2/groups/staff", None).status, 404);

    // Permission: manage_groups.
    let r = api.call(
        "POST",
        "/api/v2/admins",
        Some(&json!({"username": "viewer", "password": "pw-12345", "permissions": ["view_users"]})),
    );
    assert_eq!(r.status, 201);
    let viewer = Api::login(&t.base(), "viewer", "pw-12345").unwrap();
    let r = viewer.call("GET", "/api/v2/groups", None);
    assert_eq!(r.status, 403);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("manage_groups")
    );
}

#[test]
fn group_settings_reach_sessions_on_every_edge() {
    let t = Topology::split(1).unwrap();
    let api = t.api();
    let base = t.dir.path().join("groupdata");
    let team = t.dir.path().join("team");
    std::fs::create_dir_all(&team).unwrap();
    std::fs::write(team.join("plan.txt"), b"team plan\n").unwrap();
    let r = api.call(
        "POST",
        "/api/v2/folders",
        Some(&json!({"name": "team", "mapped_path": team})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = api.call(
        "POST",
        "/api/v2/groups",
        Some(&json!({"name": "primary",
        "user_settings": {
            "home_dir": format!("{}/%username%", base.display()),
            "quota_files": 2,
            "permissions": {"/ro": ["list", "download"]}
        }})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = api.call(
        "POST",
        "/api/v2/groups",
        Some(&json!({"name": "teams",
                     "user_settings": {"quota_files": 100, "filters": {"denied_ip": ["10.9.9.9/32"]}},
                     "virtual_folders": [{"name": "team", "virtual_path": "/team",
                                          "quota_size": 0, "quota_files": 0}]})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let mut u = user_json("hal", "hal-pw", &t.home("hal"));
    u["groups"] = json!([{"name": "primary", "type": 1}, {"name": "teams", "type": 2}]);
    api.add_user(u);
    // The stored user is unchanged; the session sees the merged one.
    let r = api.call("GET", "/api/v2/users/hal", None);
    assert_eq!(r.body["quota_files"], 0);
    assert_eq!(r.body["virtual_folders"], json!([]));

    let port = t.sftp_ports[0];
    let local = t.dir.path().join("plan-copy.txt");
    let out = sftp_batch(
        port,
        "hal",
        &pw("hal-pw"),
        &format!(
            "get /team/plan.txt {}\nput /etc/hostname /one\nput /etc/hostname /two\n-put /etc/hostname /three\nmkdir /ro\n",
            local.display()
        ),
        &[],
    );
    assert_eq!(
        std::fs::read(&local).unwrap_or_default(),
        b"team plan\n",
        "the secondary group's folder: {}",
        describe(&out)
    );
    let home = base.join("hal");
    assert!(
        home.join("one").is_file(),
        "home from the primary group: {}",
        describe(&out)
    );
    assert!(home.join("two").is_file());
    assert!(
        !home.join("three").exists(),
        "quota_files 2 from the primary group (the secondary's is ignored): {}",
        describe(&out)
    );
    assert!(!t.home("hal").join("one").exists());
    // "/ro" is list+download only: mkdir there is refused.
    let (ok, out) = sftp1(port, "hal", &pw("hal-pw"), "mkdir /ro/sub");
    assert!(!ok, "{out}");
    assert!(!home.join("ro/sub").exists());
}
