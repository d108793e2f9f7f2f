//! Login filters from the user's `filters` object, evaluated by the control
//! plane on the real client address: clients connect from 127.0.0.1 and
//! 127.0.0.2 (`-oBindAddress`).

use ferry_tests::*;
use serde_json::json;

fn login(t: &Topology, user: &str, cred: &Cred, from: &str) -> bool {
    let bind = format!("-oBindAddress={from}");
    sftp_batch(t.sftp_port(), user, cred, "pwd\n", &[&bind])
        .status
        .success()
}

#[test]
fn address_method_and_protocol_filters() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let pw = |p: &str| Cred::Password(p.into());

    let mut only2 = user_json("rita", "rita-pw", &t.home("rita"));
    only2["filters"] = json!({"allowed_ip": ["127.0.0.2/32"]});
    api.add_user(only2);
    assert!(
        !login(&t, "rita", &pw("rita-pw"), "127.0.0.1"),
        "not in allowed_ip"
    );
    assert!(login(&t, "rita", &pw("rita-pw"), "127.0.0.2"));

    let mut not2 = user_json("sam", "sam-pw", &t.home("sam"));
    not2["filters"] = json!({"denied_ip": ["127.0.0.2"]});
    api.add_user(not2);
    assert!(login(&t, "sam", &pw("sam-pw"), "127.0.0.1"));
    assert!(
        !login(&t, "sam", &pw("sam-pw"), "127.0.0.2"),
        "in denied_ip"
    );

    let key = t.keypair("tina");
    let mut keys_only = user_json("tina", "tina-pw", &t.home("tina"));
    keys_only["public_keys"] = json!([public_key(&key)]);
    keys_only["filters"] = json!({"denied_login_methods": ["password"]});
    api.add_user(keys_only);
    assert!(
        !login(&t, "tina", &pw("tina-pw"), "127.0.0.1"),
        "password denied"
    );
    assert!(login(&t, "tina", &Cred::Key(key.clone()), "127.0.0.1"));
    let r = api.call(
        "PUT",
        "/api/v2/users/tina",
        Some(&json!({"home_dir": t.home("tina"), "permissions": {"/": ["*"]}, "public_keys": [public_key(&key)],
                     "filters": {"denied_login_methods": ["publickey"]}})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        !login(&t, "tina", &Cred::Key(key), "127.0.0.1"),
        "publickey denied"
    );
    assert!(login(&t, "tina", &pw("tina-pw"), "127.0.0.1"));

    let mut no_ssh = user_json("uma", "uma-pw", &t.home("uma"));
    no_ssh["filters"] = json!({"denied_protocols": ["SSH"]});
    api.add_user(no_ssh);
    assert!(!login(&t, "uma", &pw("uma-pw"), "127.0.0.1"), "SSH denied");

    // Bad filters are refused with the field named, and nothing is stored.
    for (filters, needle) in [
        (
            json!({"allowed_ip": ["127.0.0.1/40"]}),
            "filters.allowed_ip",
        ),
        (json!({"denied_ip": ["localhost"]}), "filters.denied_ip"),
        (json!({"denied_login_methods": ["magic"]}), "magic"),
        (json!({"denied_protocols": ["GOPHER"]}), "GOPHER"),
    ] {
        let mut u = user_json("vic", "vic-pw", &t.home("vic"));
        u["filters"] = filters;
        let r = api.call("POST", "/api/v2/users", Some(&u));
        assert_eq!(r.status, 400, "{r:?}");
        assert!(
            r.body["message"].as_str().unwrap().contains(needle),
            "{r:?}"
        );
        assert_eq!(api.call("GET", "/api/v2/users/vic", None).status, 404);
    }
}
