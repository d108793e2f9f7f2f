//! Secrets at rest: the host keys and the token signing key are always
//! stored sealed, with `kms.secrets.master_key` or a key generated into the
//! data directory; clear values are sealed at the next start, and a key that
//! does not open them stops the start with a message.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use diesel::prelude::*;
use ferry_schema::configs;
use ferry_tests::*;

const KEY: &str = "correct horse battery staple, 32+ chars";

/// `ferry serve` on `data` with `env`; returns the process, its REST base
/// URL and its SFTP port once the embedded edge is serving.
fn serve(dir: &Path, data: &Path, env: &[(&str, &str)], log: &str) -> (Proc, String, u16) {
    let mut cmd = ferry_serve(data);
    cmd.env("FERRY_DEFAULT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .envs(env.iter().copied());
    let name = log.strip_suffix(".log").unwrap_or(log);
    let (proc, bound) = start_bound(cmd, dir, name).unwrap();
    let ready = wait_for(Duration::from_secs(60), || {
        proc.log_text()
            .contains("configuration received from the control plane")
            .then_some(())
    });
    assert!(ready.is_some(), "{}", proc.log_text());
    (proc, bound.base(), bound.port("sftp"))
}

/// `ferry serve` that must fail at start; returns its stderr.
fn refused(data: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(bin("ferry"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--http-bind", "127.0.0.1:0", "--grpc-bind", "127.0.0.1:0"])
        .args(["--sftp-bind", "127.0.0.1:0"])
        .env_remove("FERRY_EDGE_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the start was refused");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn stored(data: &Path) -> Vec<(String, String)> {
    let mut c = SqliteConnection::establish(data.join("ferry.db").to_str().unwrap()).unwrap();
    configs::table
        .select((configs::name, configs::value))
        .load(&mut c)
        .unwrap()
}

fn host_key_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("fingerprint"))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["fingerprint"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A new OpenSSH private key of `kind` at `path` (no passphrase).
fn host_key(kind: &str, path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen -t {kind}");
}

const NAMES: [&str; 4] = [
    "host_key_ed25519",
    "host_key_rsa",
    "host_key_ecdsa",
    "jwt_signing_key",
];

/// No clear private key anywhere in the database file (nor its WAL).
fn assert_no_clear_key(data: &Path) {
    for f in ["ferry.db", "ferry.db-wal"] {
        let bytes = std::fs::read(data.join(f)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("OPENSSH PRIVATE KEY"),
            "a clear private key is left in {f}"
        );
    }
}

#[test]
fn secrets_are_always_sealed_with_a_configured_or_generated_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // No master key configured: one is generated (0600) and seals everything.
    let (mut first, _, _) = serve(dir.path(), &data, &[], "generated.log");
    let prints = host_key_lines(&first.log_text());
    assert_eq!(prints.len(), 3);
    first.kill();
    let generated = std::fs::read_to_string(data.join("master-key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("master-key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let values = stored(&data);
    for name in NAMES {
        let v = &values.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(v.starts_with("$aes-256-gcm$v1$"), "{name} sealed: {v}");
        open_sealed(&generated, v, name).unwrap();
    }
    assert_no_clear_key(&data);

    // A configured key takes over: the values are sealed again with it.
    let env = [("FERRY_KMS__SECRETS__MASTER_KEY", KEY)];
    let (mut sealed, base, port) = serve(dir.path(), &data, &env, "sealed.log");
    assert_eq!(host_key_lines(&sealed.log_text()), prints, "same host keys");
    for (name, v) in stored(&data)
        .iter()
        .filter(|(n, _)| NAMES.contains(&n.as_str()))
    {
        open_sealed(KEY, v, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            open_sealed(&generated, v, name).is_err(),
            "{name} re-sealed"
        );
    }
    assert_no_clear_key(&data);
    // It serves: the edge got working host keys, tokens verify.
    let api = Api::login(&base, "admin", ADMIN_PASSWORD).unwrap();
    api.add_user(user_json("sealy", "pw-1", &dir.path().join("sealy")));
    let (ok, out) = sftp1(port, "sealy", &pw("pw-1"), "pwd");
    assert!(ok, "{out}");
    sealed.kill();

    // Without that key (the generated one does not open it), or with
    // another, the start stops and says why.
    let err = refused(&data, &[]);
    assert!(
        err.contains("not the one it was sealed with") && err.contains("master-key"),
        "{err}"
    );
    let err = refused(
        &data,
        &[(
            "FERRY_KMS__SECRETS__MASTER_KEY",
            "another key that is long enough!!",
        )],
    );
    assert!(err.contains("not the one it was sealed with"), "{err}");
    let err = refused(&data, &[("FERRY_KMS__SECRETS__MASTER_KEY", "short")]);
    assert!(err.contains("at least 32"), "{err}");
    // The key from a file works the same.
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let (again, _, _) = serve(
        dir.path(),
        &data,
        &[(
            "FERRY_KMS__SECRETS__MASTER_KEY_PATH",
            key_file.to_str().unwrap(),
        )],
        "file.log",
    );
    assert_eq!(host_key_lines(&again.log_text()), prints);
}

#[test]
fn a_database_with_clear_secrets_is_sealed_at_the_next_start() {
    // A database as older versions left it without a master key: the
    // secrets in the clear.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(bin("ferry"))
        .args(["initprovider", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let mut rows = Vec::new();
    let mut prints = Vec::new();
    for (name, kind) in [
        ("host_key_ed25519", "ed25519"),
        ("host_key_rsa", "rsa"),
        ("host_key_ecdsa", "ecdsa"),
    ] {
        let path = dir.path().join(kind);
        host_key(kind, &path);
        let listed = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&path)
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout).to_string();
        prints.push(listed.split_whitespace().nth(1).unwrap().to_string());
        rows.push((name, std::fs::read_to_string(&path).unwrap()));
    }
    let jwt = "ab".repeat(32);
    rows.push(("jwt_signing_key", jwt.clone()));
    {
        let mut c = SqliteConnection::establish(data.join("ferry.db").to_str().unwrap()).unwrap();
        for (name, value) in &rows {
            diesel::insert_into(configs::table)
                .values((configs::name.eq(*name), configs::value.eq(value)))
                .execute(&mut c)
                .unwrap();
        }
    }
    let (_p, _, _) = serve(dir.path(), &data, &[], "upgrade.log");
    let mut seen = host_key_lines(&_p.log_text());
    seen.sort();
    prints.sort();
    assert_eq!(seen, prints, "the stored keys are kept");
    let generated = std::fs::read_to_string(data.join("master-key")).unwrap();
    for (name, v) in stored(&data)
        .iter()
        .filter(|(n, _)| NAMES.contains(&n.as_str()))
    {
        let plain = open_sealed(&generated, v, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        if name == "jwt_signing_key" {
            assert_eq!(plain, jwt);
        }
    }
    assert_no_clear_key(&data);
}

#[test]
fn object_secrets_are_sealed_redacted_and_kept_on_update() {
    let t = Topology::serve_with(&[("FERRY_KMS__SECRETS__MASTER_KEY".into(), KEY.into())]).unwrap();
    let api = t.api();
    let mut u = user_json("tina", "pw-1", &t.home("tina"));
    u["filters"] = serde_json::json!({"totp_config": {"enabled": true, "config_name": "Default",
        "secret": {"status": "Plain", "payload": "JBSWY3DPEHPK3PXP"}}});
    let created = api.add_user(u);
    let redacted = serde_json::json!({"status": "Redacted"});
    assert_eq!(created["filters"]["totp_config"]["secret"], redacted);
    // Stored sealed, never in the clear.
    let db = t.dir.path().join("data/ferry.db");
    let mut c = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    let filters: String = ferry_schema::users::table
        .filter(ferry_schema::users::username.eq("tina"))
        .select(ferry_schema::users::filters)
        .first(&mut c)
        .unwrap();
    assert!(
        filters.contains("$aes-256-gcm$v1$") && !filters.contains("JBSWY3DPEHPK3PXP"),
        "{filters}"
    );
    // Replies redact; GET-modify-PUT keeps the secret.
    let mut got = api.call("GET", "/api/v2/users/tina", None).body;
    assert_eq!(got["filters"]["totp_config"]["secret"], redacted);
    let listed = api.call("GET", "/api/v2/users", None).body;
    assert!(!listed.to_string().contains("aes-256-gcm$v1"), "{listed}");
    got["description"] = serde_json::json!("changed");
    let r = api.call("PUT", "/api/v2/users/tina", Some(&got));
    assert_eq!(r.status, 200, "{:?}", r.body);
    // confidential_data=1: the secret in the clear, for "*" only.
    let r = api.call("GET", "/api/v2/users/tina?confidential_data=1", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body["filters"]["totp_config"]["secret"],
        serde_json::json!({"status": "Plain", "payload": "JBSWY3DPEHPK3PXP"})
    );
    assert_eq!(r.body["description"], "changed");
    let r = api.call(
        "POST",
        "/api/v2/admins",
        Some(
            &serde_json::json!({"username": "viewer", "password": "pw-12345",
                                 "permissions": ["view_users", "edit_users"]}),
        ),
    );
    assert_eq!(r.status, 201);
    let viewer = Api::login(&t.base(), "viewer", "pw-12345").unwrap();
    let r = viewer.call("GET", "/api/v2/users/tina?confidential_data=1", None);
    assert_eq!(r.status, 403);
    // A redacted secret where none is stored is refused.
    let mut other = user_json("omar", "pw-1", &t.home("omar"));
    other["filters"] = serde_json::json!({"totp_config": {"secret": {"status": "Redacted"}}});
    let r = api.call("POST", "/api/v2/users", Some(&other));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("redacted"));
    // Backups carry the sealed value (restorable with the same key).
    let dump = api.call("GET", "/api/v2/dumpdata?output-data=1", None).body;
    let secret = &dump["users"][0]["filters"]["totp_config"]["secret"];
    assert_eq!(secret["status"], "AES-256-GCM", "{secret}");
    assert!(!dump.to_string().contains("JBSWY3DPEHPK3PXP"));
}

#[test]
fn host_key_files_replace_the_generated_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for kind in ["ed25519", "ecdsa"] {
        let path = dir.path().join(format!("id_{kind}"));
        host_key(kind, &path);
        files.push(path);
    }
    let list = files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let (_proc, _, port) = serve(
        dir.path(),
        &dir.path().join("data"),
        &[("FERRY_SFTPD__HOST_KEYS", &list)],
        "files.log",
    );
    // What a client sees is exactly the keys of those files.
    let out = Command::new("ssh-keyscan")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "ed25519,ecdsa,rsa",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let seen = String::from_utf8_lossy(&out.stdout).to_string();
    for f in &files {
        let public = std::fs::read_to_string(format!("{}.pub", f.display())).unwrap();
        let blob = public.split_whitespace().nth(1).unwrap();
        assert!(seen.contains(blob), "{} offered: {seen}", f.display());
    }
    assert!(!seen.contains("ssh-rsa"), "no generated RSA key: {seen}");
    let err = refused(
        &dir.path().join("data2"),
        &[("FERRY_SFTPD__HOST_KEYS", "/nonexistent/id_rsa")],
    );
    assert!(
        err.contains("sftpd.host_keys") && err.contains("/nonexistent/id_rsa"),
        "{err}"
    );
}
