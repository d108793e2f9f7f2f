//! Virtual folders: the REST objects (SFTPGo v2 `/api/v2/folders`), users'
//! `virtual_folders`, and what an SFTP client sees: folders mounted into the
//! tree, confined to their own roots, protected mount points, and usage
//! counted where it belongs (the folder's own counters, or the user's
//! quota for quota -1), moving with renames.

use std::time::Duration;

use ferry_tests::*;
use serde_json::json;

fn folder_usage(api: &Api, name: &str) -> (i64, i64) {
    let r = api.call("GET", &format!("/api/v2/folders/{name}"), None);
    assert_eq!(r.status, 200, "{r:?}");
    (
        r.body["used_quota_size"].as_i64().unwrap(),
        r.body["used_quota_files"].as_i64().unwrap(),
    )
}

#[test]
fn folders_rest_objects() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let dir = t.dir.path().join("f1");
    let r = api.call(
        "POST",
        "/api/v2/folders",
        Some(&json!({"name": "f1", "mapped_path": dir, "description": "first"})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["mapped_path"], json!(dir));
    let again = api.call(
        "POST",
        "/api/v2/folders",
        Some(&json!({"name": "f1", "mapped_path": dir})),
    );
    assert_eq!(again.status, 409, "{again:?}");
    for (body, needle) in [
        (json!({"name": "f2", "mapped_path": "relative"}), "absolute"),
        (json!({"name": "f/2", "mapped_path": "/x"}), "not valid"),
        (json!({"name": "f2"}), "mapped_path is mandatory"),
    ] {
        let r = api.call("POST", "/api/v2/folders", Some(&body));
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{r:?}"
        );
    }
    let r = api.call(
        "PUT",
        "/api/v2/folders/f1",
        Some(&json!({"mapped_path": dir, "description": "changed"})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = api.call("GET", "/api/v2/folders/f1", None);
    assert_eq!(r.body["description"], "changed");
    assert_eq!(
        api.call("GET", "/api/v2/folders", None)
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(api.call("GET", "/api/v2/folders/nope", None).status, 404);

    // Users map folders; mapping problems are refused and nothing is stored.
    let home = t.home("mia");
    for (folders, needle) in [
        (
            json!([{"name": "missing", "virtual_path": "/m"}]),
            "does not exist",
        ),
        (
            json!([{"name": "f1", "virtual_path": "/a"}, {"name": "g", "mapped_path": "/tmp/g", "virtual_path": "/a/b"}]),
            "overlap",
        ),
        (
            json!([{"name": "f1", "virtual_path": "/"}]),
            "cannot be mounted",
        ),
    ] {
        let mut u = user_json("mia", "mia-pw", &home);
        u["virtual_folders"] = folders;
        let r = api.call("POST", "/api/v2/users", Some(&u));
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{r:?}"
        );
        assert_eq!(api.call("GET", "/api/v2/users/mia", None).status, 404);
    }
    let mut u = user_json("mia", "mia-pw", &home);
    u["virtual_folders"] = json!([{"name": "f1", "virtual_path": "/docs"}]);
    let created = api.add_user(u);
    assert_eq!(created["virtual_folders"][0]["name"], "f1");
    assert_eq!(created["virtual_folders"][0]["virtual_path"], "/docs");
    assert_eq!(created["virtual_folders"][0]["quota_size"], -1);
    assert_eq!(
        api.call("GET", "/api/v2/folders/f1", None).body["users"],
        json!(["mia"])
    );
    // Deleting the folder unmaps it; the user stays.
    assert_eq!(api.call("DELETE", "/api/v2/folders/f1", None).status, 200);
    let r = api.call("GET", "/api/v2/users/mia", None);
    assert_eq!(r.body["virtual_folders"], json!([]), "{r:?}");
}

#[test]
fn virtual_folders_over_sftp() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("vic");
    let shared = t.dir.path().join("shared-data");
    let inc = t.dir.path().join("inc-data");
    std::fs::create_dir_all(&shared).unwrap();
    let r = api.call(
        "POST",
        "/api/v2/folders",
        Some(&json!({"name": "shared", "mapped_path": shared})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    // A symlink inside the folder pointing out of it.
    std::os::unix::fs::symlink("/etc", shared.join("escape")).unwrap();
    let mut u = user_json("vic", "vic-pw", &home);
    u["quota_size"] = json!(100_000);
    u["virtual_folders"] = json!([
        // Own counters, no limit.
        {"name": "shared", "virtual_path": "/shared", "quota_size": 0, "quota_files": 0},
        // Created with the user; counted in the user's quota.
        {"name": "inc", "mapped_path": inc, "virtual_path": "/deep/inc"}
    ]);
    api.add_user(u);
    let (port, c) = (t.sftp_port(), pw("vic-pw"));
    let src = tempfile::tempdir().unwrap();
    let f5 = src.path().join("f5");
    random_file(&f5, 5_000);
    let f3 = src.path().join("f3");
    random_file(&f3, 3_000);

    let (ok, out) = sftp1(port, "vic", &c, "ls -1");
    assert!(
        ok && out.contains("shared") && out.contains("deep"),
        "{out}"
    );
    assert!(sftp1(port, "vic", &c, &format!("put {} shared/f", f5.display())).0);
    assert_eq!(
        sha256_file(&shared.join("f")),
        sha256_file(&f5),
        "stored in the folder"
    );
    assert!(!home.join("shared/f").exists());
    assert!(sftp1(port, "vic", &c, &format!("put {} deep/inc/g", f3.display())).0);
    assert_eq!(sha256_file(&inc.join("g")), sha256_file(&f3));
    assert_eq!(
        api.usage("vic"),
        (3_000, 1),
        "quota -1 counts in the user's quota"
    );
    let counted = wait_for(Duration::from_secs(20), || {
        (folder_usage(&api, "shared") == (5_000, 1)).then_some(())
    });
    assert!(
        counted.is_some(),
        "folder usage {:?}",
        folder_usage(&api, "shared")
    );

    // Confined to the folder's root.
    let (_, out) = sftp1(port, "vic", &c, "ls -1 shared/escape/");
    assert!(!out.contains("passwd"), "{out}");
    let (ok, out) = sftp1(
        port,
        "vic",
        &c,
        &format!("get shared/escape/passwd {}/p", src.path().display()),
    );
    assert!(!ok, "{out}");
    assert!(!src.path().join("p").exists());
    // Mount points cannot be removed, renamed or replaced.
    assert!(!sftp1(port, "vic", &c, "rmdir shared").0);
    assert!(!sftp1(port, "vic", &c, "rename shared other").0);
    assert!(
        !sftp1(port, "vic", &c, "rename deep elsewhere").0,
        "holds a mount"
    );
    assert!(!sftp1(port, "vic", &c, "ln -s /tmp shared").0);
    assert!(shared.join("f").exists() && home.join("shared").is_dir());

    // A rename out of the folder moves its usage into the user's quota.
    assert!(sftp1(port, "vic", &c, "rename shared/f moved").0);
    assert_eq!(api.usage("vic"), (8_000, 2));
    let moved = wait_for(Duration::from_secs(20), || {
        (folder_usage(&api, "shared") == (0, 0)).then_some(())
    });
    assert!(
        moved.is_some(),
        "folder usage {:?}",
        folder_usage(&api, "shared")
    );
    assert_eq!(disk_usage(&home).0 + disk_usage(&inc).0, 8_000);

    // A folder with limits of its own: its counters and the mapping's
    // limits apply, whoever else maps the folder.
    let capped = t.dir.path().join("capped-data");
    let r = api.call(
        "PUT",
        "/api/v2/users/vic",
        Some(
            &json!({"home_dir": home, "permissions": {"/": ["*"]}, "quota_size": 100_000,
            "virtual_folders": [
                {"name": "shared", "virtual_path": "/shared", "quota_size": 0, "quota_files": 0},
                {"name": "capped", "mapped_path": capped, "virtual_path": "/capped",
                 "quota_size": 10_000, "quota_files": 2}
            ]}),
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let f6 = src.path().join("f6");
    random_file(&f6, 6_000);
    let f1 = src.path().join("f1");
    random_file(&f1, 1_000);
    assert!(sftp1(port, "vic", &c, &format!("put {} capped/a", f6.display())).0);
    assert_eq!(folder_usage(&api, "capped"), (6_000, 1), "settled at once");
    let (ok, out) = sftp1(port, "vic", &c, &format!("put {} capped/b", f6.display()));
    assert!(!ok, "over the folder's size limit: {out}");
    assert!(!capped.join("b").exists());
    assert!(sftp1(port, "vic", &c, &format!("put {} capped/c", f1.display())).0);
    assert!(
        !sftp1(port, "vic", &c, &format!("put {} capped/d", f1.display())).0,
        "files limit"
    );
    assert_eq!(folder_usage(&api, "capped"), (7_000, 2));
    // df inside the folder shows what its limits leave: 10 000 bytes = 2 blocks.
    let (ok, out) = sftp1(port, "vic", &c, "df capped");
    assert!(ok, "{out}");
    let nums: Vec<&str> = out
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(nums.first(), Some(&"8"), "{out}");
    // Moving a file in needs room there; moving one out frees it.
    assert!(
        !sftp1(port, "vic", &c, "rename moved capped/moved").0,
        "no file slot left"
    );
    assert!(home.join("moved").exists());
    assert!(sftp1(port, "vic", &c, "rename capped/a out").0);
    assert_eq!(folder_usage(&api, "capped"), (1_000, 1));
    assert_eq!(api.usage("vic"), (14_000, 3));
}
