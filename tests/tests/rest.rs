//! REST API behaviour against a real `ferry serve` process.

use ferry_tests::*;
use serde_json::json;

#[test]
fn token_and_auth_errors() {
    let t = Topology::serve().unwrap();
    let http = reqwest::blocking::Client::new();
    let base = t.base();
    let r = http
        .get(format!("{base}/api/v2/token"))
        .basic_auth("admin", Some("nope"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http.get(format!("{base}/api/v2/users")).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: serde_json::Value = r.json().unwrap();
    assert!(
        body["message"].is_string() && body["error"].is_string(),
        "{body}"
    );
    let r = http
        .get(format!("{base}/api/v2/users"))
        .bearer_auth("forged.token.here")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // A token signed with another key is refused.
    let api = t.api();
    let mut parts: Vec<String> = api.token().split('.').map(str::to_string).collect();
    parts[2] = "AAAA".repeat(10);
    let r = http
        .get(format!("{base}/api/v2/users"))
        .bearer_auth(parts.join("."))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Unauthenticated health and version.
    let r = http.get(format!("{base}/healthz")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = api.call("GET", "/api/v2/version", None);
    assert_eq!(r.status, 200);
    assert!(r.body["version"].is_string());
}

#[test]
fn user_crud_and_validation() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let home = t.home("gina");
    let created = api.add_user(user_json("gina", "pw", &home));
    assert!(created.get("password").is_none(), "password never returned");
    assert_eq!(created["has_password"], true);

    let r = api.call("GET", "/api/v2/users/gina", None);
    assert_eq!(r.status, 200);
    assert!(r.body.get("password").is_none());
    assert_eq!(r.body["permissions"]["/"], json!(["*"]));

    // Duplicate, unknown, bad bodies.
    let r = api.call(
        "POST",
        "/api/v2/users",
        Some(&user_json("gina", "pw", &home)),
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(api.call("GET", "/api/v2/users/nobody", None).status, 404);
    assert_eq!(api.call("DELETE", "/api/v2/users/nobody", None).status, 404);
    let bad = [
        (
            json!({"username": "x y", "password": "p", "home_dir": "/tmp/x", "permissions": {"/": ["*"]}}),
            "not valid",
        ),
        (
            json!({"username": "h", "password": "p", "home_dir": "relative", "permissions": {"/": ["*"]}}),
            "absolute",
        ),
        (
            json!({"username": "h", "password": "p", "home_dir": "/tmp/h", "permissions": {"/": ["fly"]}}),
            "invalid permission",
        ),
        (
            json!({"username": "h", "password": "p", "home_dir": "/tmp/h", "permissions": {"/": ["*"]}, "quota_size": "big"}),
            "quota_size",
        ),
        (
            json!({"username": "h", "home_dir": "/tmp/h", "permissions": {"/": ["*"]}}),
            "password",
        ),
    ];
    for (body, needle) in bad {
        let r = api.call("POST", "/api/v2/users", Some(&body));
        assert_eq!(r.status, 400, "{body} -> {r:?}");
        let msg = r.body["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        assert_eq!(
            api.call("GET", "/api/v2/users/h", None).status,
            404,
            "nothing stored"
        );
    }
    // Malformed JSON.
    let http = reqwest::blocking::Client::new();
    let r = http
        .post(format!("{}/api/v2/users", t.base()))
        .bearer_auth(api.token())
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // List with pagination and order.
    api.add_user(user_json("hank", "pw", &t.home("hank")));
    let r = api.call("GET", "/api/v2/users?order=DESC&limit=1", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    assert_eq!(r.body[0]["username"], "hank");
    assert_eq!(api.call("GET", "/api/v2/users?limit=501", None).status, 400);

    // Update keeps created_at, delete removes.
    let r = api.call(
        "PUT",
        "/api/v2/users/gina",
        Some(&json!({"home_dir": home, "permissions": {"/": ["list"]}})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = api.call("GET", "/api/v2/users/gina", None);
    assert_eq!(r.body["permissions"]["/"], json!(["list"]));
    assert_eq!(r.body["created_at"], created["created_at"]);
    assert_eq!(api.call("DELETE", "/api/v2/users/gina", None).status, 200);
    assert_eq!(api.call("GET", "/api/v2/users/gina", None).status, 404);

    // 404 and 405 are JSON too.
    let r = api.call("GET", "/api/v2/nowhere", None);
    assert_eq!(r.status, 404);
    assert!(r.body["message"].is_string());
    let r = api.call("PATCH", "/api/v2/users", None);
    assert_eq!(r.status, 405);
    assert!(r.body["message"].is_string());
}

#[test]
fn first_admin_gets_a_random_password_saved_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = ferry_serve(&dir.path().join("data"));
    cmd.env_remove("FERRY_DEFAULT_ADMIN_PASSWORD")
        .env_remove("FERRY_DEFAULT_ADMIN_USERNAME");
    let (p, bound) = start_bound(cmd, dir.path(), "ferry").unwrap();
    let file = dir.path().join("data/initial-admin-password");
    let password = wait_for(std::time::Duration::from_secs(60), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|s| !s.trim().is_empty())
    })
    .unwrap_or_else(|| panic!("password file not written:\n{}", p.log_text()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let api = wait_for(std::time::Duration::from_secs(30), || {
        Api::login(&bound.base(), "admin", password.trim()).ok()
    });
    assert!(api.is_some(), "admin can log in with the saved password");
    // stdout is a file here, not a terminal: the password stays out of it
    // (and out of the log), which names the file instead.
    let log = p.log_text();
    assert!(!log.contains(password.trim()), "{log}");
    assert!(log.contains("initial-admin-password"), "{log}");
}

#[test]
fn grpc_always_needs_the_edge_token() {
    // No token configured: the control plane generates one (0600) and
    // requires it.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = ferry_controlplane(&data);
    cmd.env_remove("FERRY_EDGE_TOKEN")
        .env("FERRY_DEFAULT_ADMIN_PASSWORD", ADMIN_PASSWORD);
    let (cp, cp_addrs) = start_bound(cmd, dir.path(), "cp").unwrap();
    let grpc = cp_addrs.addr("grpc");
    let token_file = data.join("edge-token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap_or_else(|e| panic!("no edge token generated ({e}):\n{}", cp.log_text()));
    assert!(token.trim().len() >= 32);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !cp.log_text().contains(token.trim()),
        "the token is not logged"
    );

    // Without the token, and with a wrong one: refused, the reason in the
    // edge's log (and the control plane's), no SSH served.
    let mut cmd = ferry_edge(grpc);
    cmd.env_remove("FERRY_EDGE_TOKEN");
    let (anonymous, anonymous_addrs) = start_bound(cmd, dir.path(), "anonymous").unwrap();
    let wrong_file = dir.path().join("wrong-token");
    std::fs::write(&wrong_file, "wrong-token-wrong-token-wrong-token").unwrap();
    let mut cmd = ferry_edge(grpc);
    cmd.env_remove("FERRY_EDGE_TOKEN")
        .arg("--edge-token-file")
        .arg(&wrong_file);
    let (wrong, wrong_addrs) = start_bound(cmd, dir.path(), "wrong").unwrap();
    for (proc, reason) in [
        (&anonymous, "missing edge token"),
        (&wrong, "invalid edge token"),
    ] {
        let seen = wait_for(std::time::Duration::from_secs(30), || {
            proc.log_text().contains(reason).then_some(())
        });
        assert!(seen.is_some(), "{reason}:\n{}", proc.log_text());
    }
    assert!(
        cp.log_text().contains("edge call refused"),
        "{}",
        cp.log_text()
    );
    assert!(
        !ssh_ready(anonymous_addrs.port("sftp")) && !ssh_ready(wrong_addrs.port("sftp")),
        "unauthenticated edges serve no SSH"
    );

    // With the generated file, an edge attaches and serves.
    let mut cmd = ferry_edge(grpc);
    cmd.env_remove("FERRY_EDGE_TOKEN")
        .arg("--edge-token-file")
        .arg(&token_file);
    let (good, good_addrs) = start_bound(cmd, dir.path(), "good").unwrap();
    let attached = wait_for(std::time::Duration::from_secs(60), || {
        good.log_text()
            .contains("configuration received from the control plane")
            .then_some(())
    });
    assert!(attached.is_some(), "{}", good.log_text());
    assert!(
        wait_for(std::time::Duration::from_secs(20), || ssh_ready(
            good_addrs.port("sftp")
        )
        .then_some(()))
        .is_some()
    );
}

#[test]
fn expired_tokens_are_refused() {
    use base64::Engine;
    let t = Topology::serve().unwrap();
    let api = t.api();
    // Re-sign the server's own claims with its key (opened from the
    // database with the generated master key), with other lifetimes.
    let key = jwt_key(&t.dir.path().join("data"));
    let payload = api.token().split('.').nth(1).unwrap();
    let real: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = |exp: i64| {
        let mut c = real.clone();
        c["exp"] = exp.into();
        c["iat"] = (exp - 1200).into();
        c["nbf"] = (exp - 1200).into();
        c
    };
    let sign = |c: serde_json::Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &c,
            &jsonwebtoken::EncodingKey::from_secret(&key),
        )
        .unwrap()
    };
    let http = reqwest::blocking::Client::new();
    let get = |token: &str| {
        http.get(format!("{}/api/v2/users", t.base()))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        get(&sign(claims(now + 600))),
        200,
        "a fresh token signed with the key works"
    );
    assert_eq!(
        get(&sign(claims(now - 60))),
        401,
        "an expired token is refused"
    );
    assert_eq!(get(api.token()), 200);
}

#[test]
fn admins_permissions_password_change_and_status() {
    let t = Topology::serve().unwrap();
    let root = t.api();
    let base = t.base();
    let ops = json!({"username": "ops", "password": "ops-pw", "permissions": ["view_users", "view_conns"]});
    let r = root.call("POST", "/api/v2/admins", Some(&ops));
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.body.get("password").is_none());
    assert_eq!(root.call("POST", "/api/v2/admins", Some(&ops)).status, 409);
    let r = root.call(
        "POST",
        "/api/v2/admins",
        Some(&json!({"username": "x", "password": "p", "permissions": ["fly"]})),
    );
    assert_eq!(r.status, 400);
    assert!(r.body["message"].as_str().unwrap().contains("fly"));

    // A limited admin: reads users, cannot add them nor manage admins.
    let limited = Api::login(&base, "ops", "ops-pw").unwrap();
    assert_eq!(limited.call("GET", "/api/v2/users", None).status, 200);
    let r = limited.call(
        "POST",
        "/api/v2/users",
        Some(&user_json("w", "p", &t.home("w"))),
    );
    assert_eq!(r.status, 403);
    assert!(
        r.body["message"].as_str().unwrap().contains("add_users"),
        "{r:?}"
    );
    assert_eq!(limited.call("GET", "/api/v2/admins", None).status, 403);
    assert_eq!(limited.call("GET", "/api/v2/status", None).status, 403);

    // Password change by the admin itself.
    let r = limited.call(
        "PUT",
        "/api/v2/admin/changepwd",
        Some(&json!({"current_password": "wrong", "new_password": "ops-pw-2"})),
    );
    assert_eq!(r.status, 400);
    let r = limited.call(
        "PUT",
        "/api/v2/admin/changepwd",
        Some(&json!({"current_password": "ops-pw", "new_password": "ops-pw-2"})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = limited.call("GET", "/api/v2/users", None);
    assert_eq!(
        r.status, 401,
        "tokens from before the change are void: {r:?}"
    );
    assert!(
        Api::login(&base, "ops", "ops-pw").is_err(),
        "old password refused"
    );
    assert!(Api::login(&base, "ops", "ops-pw-2").is_ok());

    // Nobody removes their own powers or themselves.
    let r = root.call(
        "PUT",
        "/api/v2/admins/admin",
        Some(&json!({"permissions": ["view_users"]})),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        root.call("DELETE", "/api/v2/admins/admin", None).status,
        400
    );

    // Allow lists are checked when a token is requested.
    let r = root.call(
        "POST",
        "/api/v2/admins",
        Some(&json!({"username": "far", "password": "far-pw", "permissions": ["*"], "filters": {"allow_list": ["10.0.0.0/8"]}})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert!(
        Api::login(&base, "far", "far-pw").is_err(),
        "127.0.0.1 is not in the allow list"
    );
    let r = root.call(
        "PUT",
        "/api/v2/admins/far",
        Some(&json!({"permissions": ["*"], "filters": {"allow_list": ["127.0.0.1/32"]}})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(Api::login(&base, "far", "far-pw").is_ok());

    let list = root.call("GET", "/api/v2/admins", None);
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "far", "ops"]);
    assert_eq!(root.call("DELETE", "/api/v2/admins/far", None).status, 200);
    assert_eq!(root.call("GET", "/api/v2/admins/far", None).status, 404);

    let r = root.call("GET", "/api/v2/status", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data_provider"]["is_active"], true);
    assert_eq!(r.body["data_provider"]["driver"], "sqlite");
    assert_eq!(r.body["edges"].as_array().unwrap().len(), 1, "{r:?}");
    let r = reqwest::blocking::get(format!("{base}/readyz")).unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

fn with_key(
    base: &str,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Reply {
    let mut req = reqwest::blocking::Client::new()
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .header("X-SFTPGO-API-KEY", key);
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    Reply {
        status,
        body: r.json().unwrap_or(serde_json::Value::Null),
    }
}

#[test]
fn api_keys_impersonation_rules() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let base = t.base();
    for (name, perms, allow) in [
        ("ops", json!(["view_users"]), true),
        ("boss", json!(["*"]), true),
        ("nokeys", json!(["*"]), false),
    ] {
        let r = api.call(
            "POST",
            "/api/v2/admins",
            Some(
                &json!({"username": name, "password": "pw-12345", "permissions": perms,
                         "filters": {"allow_api_key_auth": allow}}),
            ),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let create = |body: serde_json::Value| {
        let r = api.call("POST", "/api/v2/apikeys", Some(&body));
        assert_eq!(r.status, 201, "{:?}", r.body);
        r.body["key"].as_str().unwrap().to_string()
    };
    let bound = create(json!({"name": "bound", "scope": 1, "admin": "ops"}));
    let unbound = create(json!({"name": "unbound", "scope": 1, "description": "any admin"}));
    let (bound_id, bound_secret) = bound.split_once('.').unwrap();

    // The key is shown once: reads never return it.
    let r = api.call("GET", &format!("/api/v2/apikeys/{bound_id}"), None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["admin"], "ops");
    assert!(r.body.get("key").is_none() && !r.body.to_string().contains(bound_secret));
    let r = api.call("GET", "/api/v2/apikeys", None);
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    let r = api.call("GET", "/api/v2/apikeys/nope", None);
    assert_eq!(r.status, 404);
    let r = api.call(
        "POST",
        "/api/v2/apikeys",
        Some(&json!({"name": "x", "scope": 7})),
    );
    assert_eq!(r.status, 400);
    assert!(r.body["message"].as_str().unwrap().contains("scope"));
    let r = api.call(
        "POST",
        "/api/v2/apikeys",
        Some(&json!({"name": "x", "scope": 1, "admin": "ghost"})),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);

    // A bound key acts as its admin, with that admin's permissions.
    assert_eq!(
        with_key(&base, &bound, "GET", "/api/v2/users", None).status,
        200
    );
    let r = with_key(&base, &bound, "POST", "/api/v2/users", Some(&json!({})));
    assert_eq!(r.status, 403);
    assert!(r.body["message"].as_str().unwrap().contains("add_users"));
    assert_eq!(
        with_key(
            &base,
            &format!("{bound}.boss"),
            "GET",
            "/api/v2/users",
            None
        )
        .status,
        401,
        "a bound key cannot name another admin"
    );
    assert_eq!(
        with_key(
            &base,
            &format!("{bound_id}.wrongsecret"),
            "GET",
            "/api/v2/users",
            None
        )
        .status,
        401
    );
    // An unbound key needs an admin name, and that admin's consent.
    assert_eq!(
        with_key(&base, &unbound, "GET", "/api/v2/users", None).status,
        401
    );
    assert_eq!(
        with_key(
            &base,
            &format!("{unbound}.ops"),
            "GET",
            "/api/v2/users",
            None
        )
        .status,
        200
    );
    let r = with_key(
        &base,
        &format!("{unbound}.nokeys"),
        "GET",
        "/api/v2/users",
        None,
    );
    assert_eq!(r.status, 401);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("allow_api_key_auth")
    );
    // With a key: no key management, no password change, no logout, and
    // the impersonated admin cannot be changed; other admins can.
    let boss = format!("{unbound}.boss");
    for (method, path) in [("GET", "/api/v2/apikeys"), ("GET", "/api/v2/logout")] {
        let r = with_key(&base, &boss, method, path, None);
        assert_eq!(r.status, 403, "{method} {path}: {:?}", r.body);
    }
    let r = with_key(
        &base,
        &boss,
        "PUT",
        "/api/v2/admin/changepwd",
        Some(&json!({"current_password": "pw-12345", "new_password": "x"})),
    );
    assert_eq!(r.status, 403);
    let r = with_key(
        &base,
        &boss,
        "PUT",
        "/api/v2/admins/boss",
        Some(&json!({"permissions": ["*"], "description": "me"})),
    );
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("impersonated"));
    let r = with_key(
        &base,
        &boss,
        "PUT",
        "/api/v2/admins/ops",
        Some(&json!({"permissions": ["view_users", "view_conns"]})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Expired and user-scope keys are refused on the admin API.
    let r = api.call(
        "PUT",
        &format!("/api/v2/apikeys/{bound_id}"),
        Some(&json!({"name": "bound", "scope": 1, "admin": "ops", "expires_at": 1000})),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = with_key(&base, &bound, "GET", "/api/v2/users", None);
    assert_eq!(r.status, 401);
    assert!(r.body["message"].as_str().unwrap().contains("expired"));
    api.add_user(user_json("gus", "gus-pw", &t.home("gus")));
    let user_key = create(json!({"name": "u", "scope": 2, "user": "gus"}));
    assert_eq!(
        with_key(&base, &user_key, "GET", "/api/v2/users", None).status,
        401
    );
    // Deleting a key ends it; deleting its admin deletes it.
    let r = api.call("DELETE", &format!("/api/v2/apikeys/{bound_id}"), None);
    assert_eq!(r.status, 200);
    assert_eq!(
        api.call("GET", &format!("/api/v2/apikeys/{bound_id}"), None)
            .status,
        404
    );
    let r = api.call("DELETE", "/api/v2/users/gus", None);
    assert_eq!(r.status, 200);
    let r = api.call("GET", "/api/v2/apikeys", None);
    assert_eq!(r.body.as_array().unwrap().len(), 1, "{:?}", r.body);

    // Keys are stored hashed.
    use diesel::prelude::*;
    let db = t.dir.path().join("data/ferry.db");
    let mut conn = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    let hashes: Vec<String> = ferry_schema::api_keys::table
        .select(ferry_schema::api_keys::api_key)
        .load(&mut conn)
        .unwrap();
    let unbound_secret = unbound.split('.').nth(1).unwrap();
    assert!(
        hashes
            .iter()
            .all(|h| h.starts_with("$argon2id$") && !h.contains(unbound_secret))
    );
}

#[test]
fn logout_revokes_the_token_on_every_replica() {
    let t = Topology::serve().unwrap();
    // A second control plane on the same database: tokens work on both.
    let mut cmd = ferry_controlplane(&t.dir.path().join("data"));
    cmd.env_remove("FERRY_EDGE_TOKEN");
    let (mut second, bound) = start_bound(cmd, t.dir.path(), "second").unwrap();
    let base2 = bound.base();
    let up = wait_for(std::time::Duration::from_secs(30), || {
        reqwest::blocking::get(format!("{base2}/healthz"))
            .ok()
            .filter(|r| r.status().is_success())
    });
    assert!(up.is_some(), "{}", second.log_text());
    let api = t.api();
    let get = |base: &str, token: &str| {
        reqwest::blocking::Client::new()
            .get(format!("{base}/api/v2/users"))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(get(&t.base(), api.token()), 200);
    assert_eq!(
        get(&base2, api.token()),
        200,
        "a token works on every replica"
    );
    let r = api.call("GET", "/api/v2/logout", None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(get(&t.base(), api.token()), 401);
    assert_eq!(
        get(&base2, api.token()),
        401,
        "revoked on the other replica too"
    );
    let again = t.api();
    assert_eq!(get(&base2, again.token()), 200, "a new token works");
    second.kill();
}

#[test]
fn body_limit_and_token_lifetime_are_configurable() {
    let t = Topology::serve_with(&[
        ("FERRY_HTTPD__MAX_REQUEST_SIZE".into(), "2048".into()),
        ("FERRY_HTTPD__JWT_LIFETIME".into(), "2".into()),
    ])
    .unwrap();
    let api = t.api();
    let mut user = user_json("big", "pw", &t.home("big"));
    user["description"] = json!("x".repeat(4096));
    let r = api.call("POST", "/api/v2/users", Some(&user));
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("2048"));
    assert_eq!(api.call("GET", "/api/v2/users/big", None).status, 404);
    user["description"] = json!("small");
    api.add_user(user);
    // The token lives two minutes.
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/api/v2/token", t.base()))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .unwrap();
    let body: serde_json::Value = r.json().unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    let left = expires.timestamp() - chrono::Utc::now().timestamp();
    assert!((100..=121).contains(&left), "{left} s");
    let out = serve_with_setting("FERRY_HTTPD__MAX_REQUEST_SIZE", "10");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("httpd.max_request_size"));
}

/// `data_provider.users_base_dir`: a user created without `home_dir` lives
/// in `<base>/<username>` and can log in and upload there; a relative base
/// stops the start.
#[test]
fn users_base_dir_gives_homes_to_users_without_one() {
    let keep = tempfile::tempdir().unwrap();
    let base = keep.path().join("base");
    let t = Topology::serve_with(&[(
        "FERRY_DATA_PROVIDER__USERS_BASE_DIR".to_string(),
        base.display().to_string(),
    )])
    .unwrap();
    let api = t.api();
    let r = api.call(
        "POST",
        "/api/v2/users",
        Some(&json!({"username": "basil", "password": "basil-pw",
                     "permissions": {"/": ["*"]}})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["home_dir"], base.join("basil").display().to_string());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("f.txt");
    std::fs::write(&src, "hello").unwrap();
    let out = sftp_batch(
        t.sftp_port(),
        "basil",
        &pw("basil-pw"),
        &format!("put {} f.txt\n", src.display()),
        &[],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(base.join("basil/f.txt")).unwrap(),
        "hello"
    );

    let out = serve_with_setting("FERRY_DATA_PROVIDER__USERS_BASE_DIR", "relative/base");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("users_base_dir"), "{err}");
}
