//! Every way to log in, with real clients: multi-step logins with SSH
//! partial success (paramiko, which shows each step's answer, and OpenSSH),
//! the built-in keyboard-interactive prompt, the global password switch,
//! max_auth_tries, user certificates signed with `ssh-keygen -s`, and the
//! defender banning an address on every edge.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_tests::*;
use serde_json::{Value, json};

/// Runs `tests/py/ssh_auth.py`: one JSON object per step.
fn auth_steps(port: u16, user: &str, steps: &[String], src: Option<&str>) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/ssh_auth.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(port.to_string()).arg(user).args(steps);
    if let Some(src) = src {
        cmd.env("SRC", src);
    }
    let out = cmd.output().expect("python3 with paramiko");
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn key(path: &Path) -> String {
    format!("key:{}", path.display())
}

fn password(p: &str) -> String {
    format!("password:{p}")
}

fn ki(p: &str) -> String {
    format!("ki:{p}")
}

fn results(steps: &[Value]) -> Vec<String> {
    steps
        .iter()
        .map(|s| {
            let r = s["result"].as_str().unwrap_or("");
            match s["next"].as_array() {
                Some(next) if r == "partial" => {
                    let names: Vec<&str> = next.iter().filter_map(Value::as_str).collect();
                    format!("partial:{}", names.join(","))
                }
                _ => r.to_string(),
            }
        })
        .collect()
}

fn authenticated(steps: &[Value]) -> bool {
    steps.last().is_some_and(|s| s["authenticated"] == true)
}

/// Runs `sftp -b` with both a key and a password (sshpass), with the given
/// preferred methods.
fn sftp_key_and_password(port: u16, user: &str, key: &Path, pw: &str, methods: &str) -> bool {
    let out = Command::new("sshpass")
        .arg("-p")
        .arg(pw)
        .arg("sftp")
        .args([
            "-oStrictHostKeyChecking=no",
            "-oUserKnownHostsFile=/dev/null",
            "-oLogLevel=ERROR",
            "-oIdentitiesOnly=yes",
            "-oBatchMode=no",
            "-oNumberOfPasswordPrompts=1",
            &format!("-oPreferredAuthentications={methods}"),
            "-i",
        ])
        .arg(key)
        .arg("-b")
        .arg("-")
        .arg("-P")
        .arg(port.to_string())
        .arg(format!("{user}@127.0.0.1"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    out.status.success()
}

const ONLY_KEY_THEN_PASSWORD: &[&str] = &[
    "publickey",
    "password",
    "keyboard-interactive",
    "publickey+keyboard-interactive",
];

#[test]
fn multi_step_logins_need_the_key_first() {
    let t = Topology::serve().unwrap();
    let api = t.api();
    let mia_key = t.keypair("mia");
    let mut mia = user_json("mia", "mia-pw", &t.home("mia"));
    mia["public_keys"] = json!([public_key(&mia_key)]);
    mia["filters"] = json!({"denied_login_methods": ONLY_KEY_THEN_PASSWORD});
    api.add_user(mia);
    let port = t.sftp_port();

    // The password alone is refused, even the right one.
    let s = auth_steps(port, "mia", &[password("mia-pw")], None);
    assert!(!authenticated(&s), "{s:?}");
    // Key: partial success offering only the password; a wrong password
    // keeps the login at that step; the right one completes it.
    let s = auth_steps(
        port,
        "mia",
        &[key(&mia_key), password("nope"), password("mia-pw")],
        None,
    );
    assert_eq!(
        results(&s),
        ["ok", "partial:password", "failed", "ok", ""],
        "{s:?}"
    );
    assert!(authenticated(&s));
    // OpenSSH does the same with both credentials at hand.
    assert!(sftp_key_and_password(
        port,
        "mia",
        &mia_key,
        "mia-pw",
        "publickey,password"
    ));
    assert!(!sftp_key_and_password(
        port,
        "mia",
        &mia_key,
        "wrong",
        "publickey,password"
    ));
    assert!(!sftp_key_and_password(
        port, "mia", &mia_key, "mia-pw", "password"
    ));

    // publickey+keyboard-interactive: the second step is the prompt.
    let kai_key = t.keypair("kai");
    let mut kai = user_json("kai", "kai-pw", &t.home("kai"));
    kai["public_keys"] = json!([public_key(&kai_key)]);
    kai["filters"] = json!({"denied_login_methods":
        ["publickey", "password", "keyboard-interactive", "publickey+password"]});
    api.add_user(kai);
    let s = auth_steps(
        port,
        "kai",
        &[key(&kai_key), password("kai-pw"), ki("kai-pw")],
        None,
    );
    assert_eq!(
        results(&s),
        ["ok", "partial:keyboard-interactive", "denied", "ok", ""],
        "{s:?}"
    );
    // A key of another user does not start kai's login.
    let s = auth_steps(port, "kai", &[key(&mia_key), ki("kai-pw")], None);
    assert!(!authenticated(&s), "{s:?}");

    // A user who may use the key alone is in at once.
    let solo_key = t.keypair("solo");
    let mut solo = user_json("solo", "solo-pw", &t.home("solo"));
    solo["public_keys"] = json!([public_key(&solo_key)]);
    api.add_user(solo);
    let s = auth_steps(port, "solo", &[key(&solo_key)], None);
    assert_eq!(results(&s), ["ok", "ok", ""], "{s:?}");
}

#[test]
fn password_switch_keyboard_interactive_and_max_auth_tries() {
    let env = [
        ("FERRY_SFTPD__PASSWORD_AUTHENTICATION", "false"),
        ("FERRY_SFTPD__MAX_AUTH_TRIES", "2"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let t = Topology::serve_with(&env).unwrap();
    let api = t.api();
    api.add_user(user_json("pia", "pia-pw", &t.home("pia")));
    let port = t.sftp_port();
    // Password is not offered; the keyboard-interactive prompt still is.
    let s = auth_steps(port, "pia", &[password("pia-pw"), ki("pia-pw")], None);
    assert_eq!(results(&s), ["ok", "denied", "ok", ""], "{s:?}");
    // Password logins are off: the server does not offer the method.
    let out = refused_login(port, "pia", &pw("pia-pw"));
    let offered = out
        .split("Permission denied (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_default();
    assert!(
        offered.contains("publickey") && !offered.split(',').any(|m| m == "password"),
        "{out}"
    );
    let out = Command::new("sshpass")
        .args(["-p", "pia-pw", "sftp"])
        .args([
            "-oStrictHostKeyChecking=no",
            "-oUserKnownHostsFile=/dev/null",
            "-oLogLevel=ERROR",
            "-oPubkeyAuthentication=no",
            "-oBatchMode=no",
            "-oPreferredAuthentications=keyboard-interactive",
            "-b",
            "-",
            "-P",
        ])
        .arg(port.to_string())
        .arg("pia@127.0.0.1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "OpenSSH keyboard-interactive: {}",
        describe(&out)
    );
    // Two failures, then the connection is closed: the right answer comes
    // too late.
    let s = auth_steps(port, "pia", &[ki("x"), ki("y"), ki("pia-pw")], None);
    assert_eq!(results(&s)[..3], ["ok", "failed", "failed"], "{s:?}");
    assert!(!authenticated(&s), "{s:?}");
    // An unknown user gets the same prompt, and fails only at the answer.
    let s = auth_steps(port, "nobody", &[ki("pia-pw")], None);
    assert_eq!(results(&s), ["ok", "failed", ""], "{s:?}");
}

/// `ssh-keygen` in `dir`.
fn keygen(dir: &Path, args: &[&str]) {
    let out = Command::new("ssh-keygen")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        describe(&out)
    );
}

/// A fresh key `name` in `dir`, with a certificate signed by `ca` using
/// `sign` options (e.g. `-n cleo -V +1h`).
fn signed_key(dir: &Path, name: &str, ca: &str, sign: &[&str]) -> PathBuf {
    keygen(dir, &["-q", "-t", "ed25519", "-N", "", "-f", name]);
    let mut args = vec!["-q", "-s", ca, "-I", name];
    args.extend_from_slice(sign);
    let public = format!("{name}.pub");
    args.push(&public);
    keygen(dir, &args);
    dir.join(name)
}

#[test]
fn user_certificates_signed_by_a_trusted_ca() {
    let keys = tempfile::tempdir().unwrap();
    let dir = keys.path();
    keygen(dir, &["-q", "-t", "ed25519", "-N", "", "-f", "ca"]);
    keygen(dir, &["-q", "-t", "ed25519", "-N", "", "-f", "rogue-ca"]);
    let revoked = dir.join("revoked.json");
    std::fs::write(&revoked, "[]").unwrap();
    let env = [
        (
            "FERRY_SFTPD__TRUSTED_USER_CA_KEYS".to_string(),
            dir.join("ca.pub").display().to_string(),
        ),
        (
            "FERRY_SFTPD__REVOKED_USER_CERTS_FILE".to_string(),
            revoked.display().to_string(),
        ),
    ];
    let t = Topology::serve_with(&env).unwrap();
    // cleo has no public key of her own: certificates alone let her in.
    t.api()
        .add_user(user_json("cleo", "cleo-pw", &t.home("cleo")));
    let port = t.sftp_port();
    let login = |k: &Path| sftp1(port, "cleo", &Cred::Key(k.to_path_buf()), "pwd").0;

    let good = signed_key(dir, "good", "ca", &["-n", "cleo,other", "-V", "-5m:+1h"]);
    assert!(login(&good), "a certificate from the trusted CA logs in");
    let s = auth_steps(port, "cleo", &[key(&good)], None);
    assert_eq!(
        results(&s),
        ["ok", "ok", ""],
        "paramiko with the certificate: {s:?}"
    );
    let wrong_principal = signed_key(dir, "principal", "ca", &["-n", "someone", "-V", "+1h"]);
    assert!(!login(&wrong_principal), "principal must be the login name");
    let expired = signed_key(
        dir,
        "expired",
        "ca",
        &["-n", "cleo", "-V", "20200101:20200102"],
    );
    assert!(!login(&expired), "expired certificates are refused");
    let rogue = signed_key(dir, "rogue", "rogue-ca", &["-n", "cleo", "-V", "+1h"]);
    assert!(!login(&rogue), "certificates from other CAs are refused");
    let host = signed_key(dir, "host", "ca", &["-h", "-n", "cleo", "-V", "+1h"]);
    assert!(!login(&host), "host certificates are refused");
    let elsewhere = signed_key(
        dir,
        "elsewhere",
        "ca",
        &["-n", "cleo", "-V", "+1h", "-O", "source-address=10.0.0.0/8"],
    );
    assert!(!login(&elsewhere), "source-address must hold the client");
    let here = signed_key(
        dir,
        "here",
        "ca",
        &[
            "-n",
            "cleo",
            "-V",
            "+1h",
            "-O",
            "source-address=127.0.0.0/8,10.0.0.1",
        ],
    );
    assert!(login(&here), "source-address holding the client");

    // A certificate is a public key for multi-step logins too.
    let mut cora = user_json("cora", "cora-pw", &t.home("cora"));
    cora["filters"] = json!({"denied_login_methods": ONLY_KEY_THEN_PASSWORD});
    t.api().add_user(cora);
    let cora_cert = signed_key(dir, "cora", "ca", &["-n", "cora", "-V", "+1h"]);
    let s = auth_steps(port, "cora", &[key(&cora_cert), password("cora-pw")], None);
    assert_eq!(results(&s), ["ok", "partial:password", "ok", ""], "{s:?}");

    // Revoking by the fingerprint `ssh-keygen -l` prints for the
    // certificate; the file is re-read when it changes.
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(dir.join("good-cert.pub"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    let fingerprint = listing
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no fingerprint in {listing}"))
        .to_string();
    std::fs::write(&revoked, json!([fingerprint]).to_string()).unwrap();
    // The file is re-read when it changes: the refusal follows shortly.
    assert!(
        wait_for(Duration::from_secs(10), || (!login(&good)).then_some(())).is_some(),
        "a revoked certificate is refused"
    );
    assert!(login(&here), "other certificates still work");

    // A plain key that is nobody's: the server's answer to the offer
    // (OpenSSH prints "Server accepts key" on PK_OK) is the same for an
    // existing name and an unknown one, and the login fails for both.
    keygen(dir, &["-q", "-t", "ed25519", "-N", "", "-f", "stray"]);
    let offer = |user: &str| {
        let out = Command::new("ssh")
            .args([
                "-v",
                "-oBatchMode=yes",
                "-oStrictHostKeyChecking=no",
                "-oUserKnownHostsFile=/dev/null",
                "-oIdentitiesOnly=yes",
                "-oPreferredAuthentications=publickey",
                "-i",
            ])
            .arg(dir.join("stray"))
            .args(["-p", &port.to_string(), &format!("{user}@127.0.0.1"), "pwd"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.success(), err.contains("Server accepts key"))
    };
    let (cleo_ok, cleo_pk_ok) = offer("cleo");
    let (ghost_ok, ghost_pk_ok) = offer("no-such-user");
    assert!(!cleo_ok && !ghost_ok);
    assert_eq!(
        cleo_pk_ok, ghost_pk_ok,
        "the offer tells nothing about accounts"
    );
}

#[test]
fn defender_bans_an_address_on_every_edge() {
    let cfg = tempfile::tempdir().unwrap();
    let file = cfg.path().join("ferry.toml");
    std::fs::write(
        &file,
        "[common.defender]\nenabled = true\nthreshold = 4\nscore_invalid = 2\nban_time = 1\n",
    )
    .unwrap();
    let t = Topology::split_with(2, &["--config-file", file.to_str().unwrap()]).unwrap();
    let api = t.api();
    api.add_user(user_json("dora", "dora-pw", &t.home("dora")));
    let (edge0, edge1) = (t.sftp_ports[0], t.sftp_ports[1]);
    let bad = "127.0.0.2";

    // Two logins for a user that does not exist: 2 + 2 reaches 4.
    let s = auth_steps(edge0, "ghost", &[password("a"), password("b")], Some(bad));
    assert_eq!(results(&s)[..3], ["ok", "failed", "failed"], "{s:?}");
    // The other edge drops the address before the SSH handshake.
    let refused = wait_for(Duration::from_secs(10), || {
        let s = auth_steps(edge1, "dora", &[password("dora-pw")], Some(bad));
        (s[0]["result"] == "closed").then_some(())
    });
    assert!(refused.is_some(), "the ban reached the second edge");
    // Other addresses still get in.
    let s = auth_steps(edge1, "dora", &[password("dora-pw")], Some("127.0.0.3"));
    assert!(authenticated(&s), "{s:?}");

    let hosts = api.call("GET", "/api/v2/defender/hosts", None);
    assert_eq!(hosts.status, 200);
    let list = hosts.body.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["ip"], bad);
    assert!(list[0]["ban_time"].as_str().is_some_and(|s| !s.is_empty()));
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(id, "3132372e302e302e32");
    assert_eq!(
        api.call("GET", &format!("/api/v2/defender/hosts/{id}"), None)
            .status,
        200
    );
    let status = api.call("GET", "/api/v2/status", None);
    assert_eq!(status.body["defender"]["is_active"], true);

    // Lifting the ban opens every edge again.
    let del = api.call("DELETE", &format!("/api/v2/defender/hosts/{id}"), None);
    assert_eq!(del.status, 200, "{:?}", del.body);
    assert_eq!(
        api.call("GET", &format!("/api/v2/defender/hosts/{id}"), None)
            .status,
        404
    );
    assert_eq!(
        api.call("DELETE", &format!("/api/v2/defender/hosts/{id}"), None)
            .status,
        404
    );
    let back = wait_for(Duration::from_secs(10), || {
        let s = auth_steps(edge1, "dora", &[password("dora-pw")], Some(bad));
        authenticated(&s).then_some(())
    });
    assert!(back.is_some(), "the lifted ban reached the edge");
}

/// Handshake and authentication must be done within 2 minutes: a client
/// that never authenticates is disconnected then.
#[test]
fn unauthenticated_connections_end_after_two_minutes() {
    let t = Topology::serve().unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import sys, time, paramiko
t = paramiko.Transport(("127.0.0.1", int(sys.argv[1])))
t.start_client(timeout=30)
start = time.time()
while t.is_active() and time.time() - start < 200:
    time.sleep(0.5)
print(round(time.time() - start), t.is_active())
"#,
        )
        .arg(t.sftp_port().to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = text.split_whitespace();
    let secs: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    assert_eq!(parts.next(), Some("False"), "{}", describe(&out));
    assert!((110..=130).contains(&secs), "closed after {secs} s");
}

/// `common.max_per_host_connections` and `common.max_total_connections`: a
/// connection over either limit is closed before the SSH handshake, and a
/// place frees when a connection ends.
#[test]
fn connection_limits_per_address_and_in_total() {
    let env = [
        ("FERRY_COMMON__MAX_PER_HOST_CONNECTIONS", "2"),
        ("FERRY_COMMON__MAX_TOTAL_CONNECTIONS", "3"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let t = Topology::serve_with(&env).unwrap();
    t.api()
        .add_user(user_json("dora", "dora-pw", &t.home("dora")));
    let port = t.sftp_port();
    let cred = pw("dora-pw");
    let open = |src: &str| {
        let mut s = OpenSftp::start_with(port, "dora", &cred, &[&format!("-oBindAddress={src}")]);
        assert!(s.run_until("pwd", "Remote working directory", Duration::from_secs(30)));
        s
    };
    let first = open("127.0.0.2");
    let _second = open("127.0.0.2");
    let attempt = |src: &str| auth_steps(port, "dora", &[password("dora-pw")], Some(src));
    let s = attempt("127.0.0.2");
    assert_eq!(s[0]["result"], "closed", "a third from one address: {s:?}");
    let _third = open("127.0.0.3");
    let s = attempt("127.0.0.4");
    assert_eq!(s[0]["result"], "closed", "a fourth in all: {s:?}");
    assert!(t.logs().contains("max_total_connections"), "{}", t.logs());
    assert!(t.logs().contains("max_per_host_connections"));
    // A connection that ends gives its place back.
    drop(first);
    let back = wait_for(Duration::from_secs(10), || {
        authenticated(&attempt("127.0.0.4")).then_some(())
    });
    assert!(back.is_some(), "{}", t.logs());
}

/// `common.server_version` replaces the identification clients see, and
/// `sftpd.login_banner_file` is shown before authentication; a version that
/// SSH cannot carry stops the start.
#[test]
fn server_version_and_login_banner() {
    let dir = tempfile::tempdir().unwrap();
    let banner = dir.path().join("banner.txt");
    std::fs::write(&banner, "Authorized use only.\nActivity is logged.\n").unwrap();
    let env = [
        ("FERRY_COMMON__SERVER_VERSION", "Acme_SFTP_2"),
        ("FERRY_SFTPD__LOGIN_BANNER_FILE", banner.to_str().unwrap()),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let t = Topology::serve_with(&env).unwrap();
    t.api()
        .add_user(user_json("dora", "dora-pw", &t.home("dora")));
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            r#"
import socket, sys, paramiko
t = paramiko.Transport(socket.create_connection(("127.0.0.1", int(sys.argv[1])), 30))
t.start_client(timeout=30)
print(t.remote_version)
t.auth_password("dora", "dora-pw")
print(repr((t.get_banner() or b"").decode()))
print(t.is_authenticated())
"#,
        )
        .arg(t.sftp_port().to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", describe(&out));
    assert_eq!(lines[0], "SSH-2.0-Acme_SFTP_2");
    assert_eq!(lines[1], r"'Authorized use only.\nActivity is logged.\n'");
    assert_eq!(lines[2], "True");
    drop(t);

    let out = serve_with_setting("FERRY_COMMON__SERVER_VERSION", "Acme SFTP-2");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("common.server_version"), "{err}");
}
