//! SFTPGo's login hooks, written as small shell scripts and an HTTP
//! service, driven with real clients: external authentication, pre-login,
//! check-password, post-login and post-connect; a hook that hangs refuses
//! its login and holds up no other.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::*;
use serde_json::{Value, json};

/// Writes an executable `#!/bin/sh` script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn env(pairs: &[(&str, &Path)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.display().to_string()))
        .collect()
}

fn login(port: u16, user: &str, password: &str) -> bool {
    sftp1(port, user, &pw(password), "pwd").0
}

/// Whether paramiko's keyboard-interactive login with `answers` (in order,
/// across rounds) succeeds.
fn ki_login(port: u16, user: &str, answers: &str) -> bool {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/ssh_auth.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(user)
        .arg(format!("ki:{answers}"))
        .output()
        .unwrap();
    // The script reaches a verdict either way; a crash is not a refusal.
    assert!(out.status.success(), "ssh_auth.py: {}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let end: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["step"] == "end")
        .unwrap_or_else(|| panic!("no verdict from ssh_auth.py: {}", describe(&out)));
    end["authenticated"] == true
}

/// Starts tests/py/hook_server.py; returns it and its base URL.
fn hook_server(dir: &Path, record: &Path) -> (std::process::Child, String) {
    hook_server_tls(dir, record, None)
}

/// The hook server, over HTTPS with `(cert, key)`.
fn hook_server_tls(
    dir: &Path,
    record: &Path,
    tls: Option<(&Path, &Path)>,
) -> (std::process::Child, String) {
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/hook_server.py");
    let mut cmd = Command::new("python3");
    cmd.arg(server).arg(dir.join("homes")).arg(record);
    if let Some((cert, key)) = tls {
        cmd.arg(cert).arg(key);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    (child, format!("{scheme}://127.0.0.1:{}", first.trim()))
}

/// A certificate authority and a server certificate for 127.0.0.1 signed
/// by it, made with openssl: returns (ca.pem, server cert, server key).
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &str| {
        let out = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args}: {}", describe(&out));
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    run(&format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=ferry-test-ca"
    ));
    run(&format!(
        "req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"
    ));
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
         -days 2 -extfile san.ext",
    );
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// Steps with paramiko (tests/py/ssh_auth.py), optionally from `src`.
fn connect_from(port: u16, src: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/ssh_auth.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg("nobody")
        .env("SRC", src)
        .output()
        .unwrap();
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("{}")
        .to_string();
    serde_json::from_str(&first).unwrap()
}

#[test]
fn external_auth_program_creates_maps_and_refuses() {
    let hooks = tempfile::tempdir().unwrap();
    let homes = hooks.path().join("homes");
    let auth = script(
        hooks.path(),
        "auth.sh",
        &format!(
            r#"user='{{"username":"ext","home_dir":"{h}/ext","permissions":{{"/":["*"]}}}}'
case "$SFTPGO_AUTHD_USERNAME:$SFTPGO_AUTHD_PASSWORD:$SFTPGO_AUTHD_PROTOCOL" in
  ext:ext-secret:SSH|alias:alias-secret:SSH) echo "$user" ;;
  empty:*) echo '{{"username":""}}' ;;
  garbage:*) echo 'this is not JSON' ;;
  local:*) [ -n "$SFTPGO_AUTHD_USER" ] || exit 1 ;;
  keyuser::SSH)
    [ -n "$SFTPGO_AUTHD_PUBLIC_KEY" ] || exit 1
    echo '{{"username":"keyuser","home_dir":"{h}/keyuser","permissions":{{"/":["*"]}}}}' ;;
  *) exit 1 ;;
esac"#,
            h = homes.display()
        ),
    );
    let t =
        Topology::serve_with(&env(&[("FERRY_DATA_PROVIDER__EXTERNAL_AUTH_HOOK", &auth)])).unwrap();
    let api = t.api();
    let port = t.sftp_port();

    // A valid answer creates the user, with the password used.
    assert!(login(port, "ext", "ext-secret"));
    let stored = api.call("GET", "/api/v2/users/ext", None);
    assert_eq!(stored.status, 200);
    assert_eq!(stored.body["home_dir"], json!(homes.join("ext")));
    assert_eq!(stored.body["has_password"], true);
    // Another login name mapped to that user by the hook.
    let (ok, out) = sftp1(port, "alias", &pw("alias-secret"), "pwd");
    assert!(ok, "{out}");
    assert_eq!(api.call("GET", "/api/v2/users/alias", None).status, 404);
    // Refusals: wrong password, empty username, not JSON.
    assert!(!login(port, "ext", "wrong"));
    assert!(!login(port, "empty", "x"));
    assert!(!login(port, "garbage", "x"));
    // An empty answer accepts an existing user unchanged (the hook decided).
    api.add_user(user_json("local", "local-pw", &t.home("local")));
    assert!(login(port, "local", "another-pw"));
    // Keys: the hook sees the key and the key is stored with the user.
    let key = t.keypair("keyuser");
    let (ok, out) = sftp1(port, "keyuser", &Cred::Key(key.clone()), "pwd");
    assert!(ok, "{out}");
    let stored = api.call("GET", "/api/v2/users/keyuser", None);
    let mine: Vec<String> = public_key(&key)
        .split_whitespace()
        .take(2)
        .map(str::to_string)
        .collect();
    let theirs: Vec<String> = stored.body["public_keys"][0]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .take(2)
        .map(str::to_string)
        .collect();
    assert_eq!(mine, theirs, "the key used is stored");
    assert!(
        t.logs().contains("external_auth_hook"),
        "refusals are logged with the hook named"
    );
}

#[test]
fn pre_login_and_check_password_hooks() {
    let hooks = tempfile::tempdir().unwrap();
    let homes = hooks.path().join("homes");
    let pre = script(
        hooks.path(),
        "pre.sh",
        &format!(
            r#"[ "$SFTPGO_LOGIND_PROTOCOL" = SSH ] || exit 1
case "$SFTPGO_LOGIND_USER" in
  *'"username":"frozen"'*) echo '{{"status":0}}' ;;
  '{{"id":0,"username":"newbie"}}') echo '{{"home_dir":"{h}/newbie","password":"newbie-pw","permissions":{{"/":["*"]}}}}' ;;
  *'"username":"broken"'*) echo 'not JSON' ;;
esac"#,
            h = homes.display()
        ),
    );
    let check = script(
        hooks.path(),
        "check.sh",
        r#"case "$SFTPGO_AUTHD_USERNAME:$SFTPGO_AUTHD_PASSWORD" in
  otp:master) echo '{"status":1}' ;;
  otp:*123456) echo "{\"status\":2,\"to_verify\":\"${SFTPGO_AUTHD_PASSWORD%123456}\"}" ;;
  otp:*) echo '{"status":0}' ;;
  *) printf '{"status":2,"to_verify":"%s"}' "$SFTPGO_AUTHD_PASSWORD" ;;
esac"#,
    );
    let t = Topology::serve_with(&env(&[
        ("FERRY_DATA_PROVIDER__PRE_LOGIN_HOOK", &pre),
        ("FERRY_DATA_PROVIDER__CHECK_PASSWORD_HOOK", &check),
    ]))
    .unwrap();
    let api = t.api();
    let port = t.sftp_port();
    api.add_user(user_json("frozen", "frozen-pw", &t.home("frozen")));
    api.add_user(user_json("broken", "broken-pw", &t.home("broken")));
    api.add_user(user_json("same", "same-pw", &t.home("same")));
    api.add_user(user_json("otp", "otp-pw", &t.home("otp")));

    // Partial JSON merged over the stored user: disabled, so refused.
    assert!(!login(port, "frozen", "frozen-pw"));
    assert_eq!(
        api.call("GET", "/api/v2/users/frozen", None).body["status"],
        0
    );
    // A full user for one that does not exist creates it.
    assert!(login(port, "newbie", "newbie-pw"));
    assert_eq!(api.call("GET", "/api/v2/users/newbie", None).status, 200);
    // Garbage refuses; no output leaves the user as stored.
    assert!(!login(port, "broken", "broken-pw"));
    assert!(login(port, "same", "same-pw"));
    assert!(!login(port, "same", "other-pw"));

    // check-password: 1 accepts, 0 refuses, 2 verifies the part it returns.
    assert!(login(port, "otp", "otp-pw123456"));
    assert!(!login(port, "otp", "otp-pw"));
    assert!(!login(port, "otp", "wrong123456"));
    assert!(login(port, "otp", "master"));
}

#[test]
fn post_login_and_post_connect_hooks() {
    let hooks = tempfile::tempdir().unwrap();
    let record = hooks.path().join("logins.txt");
    let post_login = script(
        hooks.path(),
        "post-login.sh",
        &format!(
            r#"name=$(printf '%s' "$SFTPGO_LOGIND_USER" | sed 's/.*"username":"\([^"]*\)".*/\1/')
echo "$SFTPGO_LOGIND_STATUS $SFTPGO_LOGIND_METHOD $SFTPGO_LOGIND_IP $SFTPGO_LOGIND_PROTOCOL $name" >> {}"#,
            record.display()
        ),
    );
    let post_connect = script(
        hooks.path(),
        "post-connect.sh",
        r#"[ "$SFTPGO_CONNECTION_PROTOCOL" = SSH ] && [ "$SFTPGO_CONNECTION_IP" != 127.0.0.2 ]"#,
    );
    let t = Topology::serve_with(&env(&[
        ("FERRY_DATA_PROVIDER__POST_LOGIN_HOOK", &post_login),
        ("FERRY_COMMON__POST_CONNECT_HOOK", &post_connect),
    ]))
    .unwrap();
    t.api()
        .add_user(user_json("polly", "polly-pw", &t.home("polly")));
    let port = t.sftp_port();
    assert!(login(port, "polly", "polly-pw"));
    assert!(!login(port, "polly", "wrong"));
    let lines = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        (text.lines().count() >= 2).then_some(text)
    })
    .expect("the post-login hook ran for both logins");
    assert!(lines.contains("1 password 127.0.0.1 SSH polly"), "{lines}");
    assert!(lines.contains("0 password 127.0.0.1 SSH polly"), "{lines}");

    // The post-connect hook refuses 127.0.0.2 before the handshake.
    assert_eq!(connect_from(port, "127.0.0.2")["result"], "closed");
    assert_eq!(connect_from(port, "127.0.0.3")["result"], "ok");
}

/// A connection that ends without trying to log in (a scanner, a
/// handshake-only client) is SFTPGo's `no_auth_tried`: logged as a failed
/// connection, counted, scored by the defender (`score_no_auth`) and passed
/// to the post-login hook with an empty user.
#[test]
fn connections_without_a_login_attempt() {
    let hooks = tempfile::tempdir().unwrap();
    let record = hooks.path().join("logins.txt");
    let post_login = script(
        hooks.path(),
        "post-login.sh",
        &format!(
            r#"echo "$SFTPGO_LOGIND_STATUS $SFTPGO_LOGIND_METHOD $SFTPGO_LOGIND_IP $SFTPGO_LOGIND_USER" >> {}"#,
            record.display()
        ),
    );
    let mut vars = env(&[("FERRY_DATA_PROVIDER__POST_LOGIN_HOOK", &post_login)]);
    for (k, v) in [
        ("FERRY_COMMON__DEFENDER__ENABLED", "true"),
        ("FERRY_COMMON__DEFENDER__THRESHOLD", "10"),
        ("FERRY_COMMON__DEFENDER__SCORE_NO_AUTH", "5"),
    ] {
        vars.push((k.to_string(), v.to_string()));
    }
    let t = Topology::serve_with(&vars).unwrap();
    let port = t.sftp_port();
    // A handshake and nothing else, twice: 5 + 5 reaches the threshold.
    assert_eq!(connect_from(port, "127.0.0.4")["result"], "ok");
    assert_eq!(connect_from(port, "127.0.0.4")["result"], "ok");
    // A TCP connection that never speaks SSH.
    let raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    drop(raw);
    let lines = wait_for(Duration::from_secs(15), || {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        (text.lines().count() >= 3).then_some(text)
    })
    .unwrap_or_else(|| panic!("post-login hook calls\n{}", t.logs()));
    assert!(lines.contains("0 no_auth_tried 127.0.0.4 "), "{lines}");
    assert!(lines.contains("0 no_auth_tried 127.0.0.1 "), "{lines}");
    assert!(lines.contains(r#""username":"""#), "{lines}");
    let logs = t.logs();
    assert!(
        logs.contains(r#""sender":"connection_failed""#)
            && logs.contains(r#""login_type":"no_auth_tried""#)
            && logs.contains(r#""client_ip":"127.0.0.4""#),
        "{logs}"
    );
    assert!(logs.contains("ssh handshake failed"), "{logs}");
    let api = t.api();
    let banned = wait_for(Duration::from_secs(10), || {
        let hosts = api.call("GET", "/api/v2/defender/hosts", None).body;
        hosts
            .as_array()
            .is_some_and(|l| l.iter().any(|h| h["ip"] == "127.0.0.4"))
            .then_some(())
    });
    assert!(banned.is_some(), "{logs}");
    assert_eq!(connect_from(port, "127.0.0.4")["result"], "closed");
    let metrics = reqwest::blocking::get(format!("{}/metrics", t.base()))
        .unwrap()
        .text()
        .unwrap();
    let count: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferry_no_auth_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(count >= 3.0, "{metrics}");
}

/// The HTTP variants, against a small Python service.
#[test]
fn hooks_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("logins.txt");
    let (mut child, base) = hook_server(dir.path(), &record);
    let vars = [
        (
            "FERRY_DATA_PROVIDER__EXTERNAL_AUTH_HOOK",
            format!("{base}/auth"),
        ),
        (
            "FERRY_DATA_PROVIDER__POST_LOGIN_HOOK",
            format!("{base}/login"),
        ),
        ("FERRY_COMMON__POST_CONNECT_HOOK", format!("{base}/connect")),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let t = Topology::serve_with(&vars).unwrap();
    let port = t.sftp_port();
    assert!(login(port, "web", "web-pw"));
    assert!(!login(port, "web", "nope"));
    assert_eq!(t.api().call("GET", "/api/v2/users/web", None).status, 200);
    let lines = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&record).unwrap_or_default();
        (text.lines().count() >= 2).then_some(text)
    })
    .expect("post-login calls");
    assert!(
        lines.contains("1 password web") && lines.contains("0 password web"),
        "{lines}"
    );
    assert_eq!(connect_from(port, "127.0.0.2")["result"], "closed");
    assert_eq!(connect_from(port, "127.0.0.3")["result"], "ok");
    let _ = child.kill();
    let _ = child.wait();
}

/// https hooks: trusted through `http.ca_certificates`, refused (and the
/// login with them) when the certificate is not trusted, accepted blindly
/// with `http.skip_tls_verify`.
#[test]
fn hooks_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = tls_files(dir.path());
    let record = dir.path().join("logins.txt");
    let (mut child, base) = hook_server_tls(dir.path(), &record, Some((&cert, &key)));
    assert!(base.starts_with("https://"));
    let hook = (
        "FERRY_DATA_PROVIDER__EXTERNAL_AUTH_HOOK".to_string(),
        format!("{base}/auth"),
    );
    let trusted = [
        hook.clone(),
        (
            "FERRY_HTTP__CA_CERTIFICATES".to_string(),
            ca.display().to_string(),
        ),
    ];
    let t = Topology::serve_with(&trusted).unwrap();
    assert!(login(t.sftp_port(), "web", "web-pw"), "{}", t.logs());
    assert!(!login(t.sftp_port(), "web", "nope"));
    drop(t);

    // Without the CA the hook's certificate is unknown: no login, and the
    // log says why.
    let t = Topology::serve_with(std::slice::from_ref(&hook)).unwrap();
    assert!(!login(t.sftp_port(), "web", "web-pw"));
    let logs = t.logs();
    assert!(logs.contains("UnknownIssuer"), "{logs}");
    drop(t);

    let blind = [
        hook,
        (
            "FERRY_HTTP__SKIP_TLS_VERIFY".to_string(),
            "true".to_string(),
        ),
    ];
    let t = Topology::serve_with(&blind).unwrap();
    assert!(login(t.sftp_port(), "web", "web-pw"), "{}", t.logs());
    assert!(t.logs().contains("skip_tls_verify is on"));
    drop(t);

    // A CA file that is not one stops the start with its name.
    let not_pem = dir.path().join("san.ext");
    let out = serve_with_setting("FERRY_HTTP__CA_CERTIFICATES", not_pem.to_str().unwrap());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.ca_certificates"), "{err}");
    let _ = child.kill();
    let _ = child.wait();
}

/// A hook that never answers refuses that login after its timeout (30 s),
/// while other logins go through meanwhile.
#[test]
fn a_hanging_hook_refuses_its_login_and_blocks_no_other() {
    let hooks = tempfile::tempdir().unwrap();
    let homes = hooks.path().join("homes");
    let auth = script(
        hooks.path(),
        "auth.sh",
        &format!(
            r#"case "$SFTPGO_AUTHD_USERNAME" in
  slow) touch {}/slow-started; sleep 120 ;;
  quick) echo '{{"username":"quick","home_dir":"{}/quick","permissions":{{"/":["*"]}}}}' ;;
  *) exit 1 ;;
esac"#,
            hooks.path().display(),
            homes.display()
        ),
    );
    let t =
        Topology::serve_with(&env(&[("FERRY_DATA_PROVIDER__EXTERNAL_AUTH_HOOK", &auth)])).unwrap();
    let port = t.sftp_port();
    let started = Instant::now();
    let slow = std::thread::spawn(move || login(port, "slow", "x"));
    let marker = hooks.path().join("slow-started");
    assert!(
        wait_for(Duration::from_secs(20), || marker.exists().then_some(())).is_some(),
        "the slow hook never started"
    );
    assert!(login(port, "quick", "quick-pw"));
    assert!(
        !slow.is_finished(),
        "the quick login finished while the slow hook still runs"
    );
    assert!(!slow.join().unwrap(), "a hanging hook refuses the login");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(29),
        "refused only at the timeout: {took:?}"
    );
    assert!(t.logs().contains("timed out"), "the log says why");
}

/// `sftpd.keyboard_interactive_auth_hook` as a program: the password round
/// (`check_password: 1`), then a code round; `auth_result` decides.
#[test]
fn keyboard_interactive_hook_program() {
    let hooks = tempfile::tempdir().unwrap();
    let ki = script(
        hooks.path(),
        "ki.sh",
        r#"case "$SFTPGO_AUTHD_USERNAME" in garbled) echo 'not JSON'; exit 0 ;; esac
case "$SFTPGO_AUTHD_PASSWORD" in '$argon2id$'*) ;; *) exit 1 ;; esac
echo '{"questions":["Password: "],"check_password":1}'
read ok
[ "$ok" = OK ] || exit 1
echo '{"instruction":"one-time code","questions":["Code: "],"echos":[true]}'
read code
if [ "$code" = 424242 ]; then echo '{"auth_result":1}'; else echo '{"auth_result":-1}'; fi"#,
    );
    // The pre-login hook runs before the exchange, as in SFTPGo: it can
    // create the user the exchange checks the password of, or disable one.
    let pre = script(
        hooks.path(),
        "pre.sh",
        &format!(
            r#"[ "$SFTPGO_LOGIND_METHOD" = keyboard-interactive ] || exit 1
case "$SFTPGO_LOGIND_USER" in
  '{{"id":0,"username":"late"}}') echo '{{"home_dir":"{h}/late","password":"late-pw","permissions":{{"/":["*"]}}}}' ;;
  *'"username":"frozen"'*) echo '{{"status":0}}' ;;
esac"#,
            h = hooks.path().join("homes").display()
        ),
    );
    let t = Topology::serve_with(&env(&[
        ("FERRY_SFTPD__KEYBOARD_INTERACTIVE_AUTH_HOOK", &ki),
        ("FERRY_DATA_PROVIDER__PRE_LOGIN_HOOK", &pre),
    ]))
    .unwrap();
    let api = t.api();
    api.add_user(user_json("kira", "kira-pw", &t.home("kira")));
    api.add_user(user_json("garbled", "garbled-pw", &t.home("garbled")));
    api.add_user(user_json("frozen", "frozen-pw", &t.home("frozen")));
    let port = t.sftp_port();
    assert!(ki_login(port, "late", "late-pw|424242"), "{}", t.logs());
    assert!(!ki_login(port, "frozen", "frozen-pw|424242"));
    assert_eq!(
        api.call("GET", "/api/v2/users/frozen", None).body["status"],
        0
    );
    assert!(ki_login(port, "kira", "kira-pw|424242"));
    assert!(!ki_login(port, "kira", "kira-pw|000000"), "wrong code");
    assert!(!ki_login(port, "kira", "wrong|424242"), "wrong password");
    assert!(
        !ki_login(port, "garbled", "garbled-pw"),
        "a hook printing garbage"
    );
    assert!(!ki_login(port, "nobody", "x|424242"));
    assert!(t.logs().contains("keyboard_interactive_auth_hook"));
}

/// The same exchange over HTTP: one POST per round with a constant
/// request_id, answers replaced by OK after the password check.
#[test]
fn keyboard_interactive_hook_http() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = hook_server(dir.path(), &dir.path().join("record"));
    let vars = [(
        "FERRY_SFTPD__KEYBOARD_INTERACTIVE_AUTH_HOOK".to_string(),
        format!("{base}/ki"),
    )];
    let t = Topology::serve_with(&vars).unwrap();
    t.api()
        .add_user(user_json("kira", "kira-pw", &t.home("kira")));
    let port = t.sftp_port();
    assert!(ki_login(port, "kira", "kira-pw|424242"));
    assert!(!ki_login(port, "kira", "kira-pw|1"));
    assert!(!ki_login(port, "kira", "bad|424242"));
    let _ = child.kill();
    let _ = child.wait();
}

/// Pre-login over HTTP: 204 leaves the user as stored, 200 with JSON
/// changes it.
#[test]
fn pre_login_hook_http() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = hook_server(dir.path(), &dir.path().join("record"));
    let vars = [(
        "FERRY_DATA_PROVIDER__PRE_LOGIN_HOOK".to_string(),
        format!("{base}/pre"),
    )];
    let t = Topology::serve_with(&vars).unwrap();
    let api = t.api();
    api.add_user(user_json("same", "same-pw", &t.home("same")));
    api.add_user(user_json("frozen", "frozen-pw", &t.home("frozen")));
    let port = t.sftp_port();
    assert!(login(port, "same", "same-pw"));
    assert!(!login(port, "frozen", "frozen-pw"));
    assert_eq!(
        api.call("GET", "/api/v2/users/frozen", None).body["status"],
        0
    );
    let _ = child.kill();
    let _ = child.wait();
}
