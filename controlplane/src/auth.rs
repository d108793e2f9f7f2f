//! Login decisions for every edge: which SSH methods are on
//! (`sftpd.password_authentication`, `keyboard_interactive_authentication`),
//! multi-step logins (`publickey+password`, `publickey+keyboard-interactive`
//! with SSH partial success), user certificates (`trusted_user_ca_keys`,
//! revocation), the built-in keyboard-interactive password prompt, account
//! and filter checks, the defender's scores, session leases.
//!
//! Edges relay each attempt as one `Login` call; tokens that carry state
//! between calls (partial success, keyboard-interactive rounds) are HMACs
//! under the key every control-plane replica shares, bound to the user and
//! the SSH connection, so any replica can continue a login.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use ferry_dataplane::settings::SftpdConfig;
use ferry_proto::edge::v1::{
    Challenge, KeyboardInteractive, LoginOutcome, LoginRequest, LoginResponse, Prompt,
    SessionLease, login_request,
};
use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::{Certificate, HashAlg, PublicKey};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::AppState;
use crate::defender::Event;
use crate::store::{StoreError, UserRow, now_ms};

/// Authentication settings of the fleet (from `sftpd`).
pub struct AuthSettings {
    pub password_authentication: bool,
    pub keyboard_interactive_authentication: bool,
    /// `sftpd.keyboard_interactive_auth_hook`.
    pub keyboard_interactive_hook: Option<crate::hooks::Hook>,
    /// Failed attempts per connection edges allow (0: unlimited).
    pub max_auth_tries: u32,
    trusted_cas: Vec<PublicKey>,
    revoked: Option<RevokedList>,
    /// External auth, pre-login, check-password, post-login, post-connect.
    pub hooks: crate::login_hooks::LoginHooks,
}

/// `revoked_user_certs_file`, re-read when its modification time changes.
struct RevokedList {
    path: PathBuf,
    cache: Mutex<(Option<std::time::SystemTime>, HashSet<String>)>,
}

impl RevokedList {
    fn load(path: &std::path::Path) -> anyhow::Result<HashSet<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "sftpd.revoked_user_certs_file: cannot read {}: {e}",
                path.display()
            )
        })?;
        let list: Vec<String> = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "sftpd.revoked_user_certs_file {}: expected a JSON list of fingerprints: {e}",
                path.display()
            )
        })?;
        Ok(list.into_iter().collect())
    }

    /// Whether any of `fingerprints` is listed; a file that became
    /// unreadable keeps the last good list (and says so).
    fn contains_any(&self, fingerprints: &[String]) -> bool {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if mtime != cache.0 {
            match Self::load(&self.path) {
                Ok(list) => *cache = (mtime, list),
                Err(e) => warn!(
                    error = format!("{e:#}"),
                    "keeping the previous revoked list"
                ),
            }
        }
        fingerprints.iter().any(|f| cache.1.contains(f))
    }
}

impl AuthSettings {
    pub fn from_config(
        cfg: &SftpdConfig,
        data_provider: &crate::provider::DataProviderConfig,
        post_connect_hook: &str,
    ) -> anyhow::Result<Self> {
        let hooks = crate::login_hooks::LoginHooks::from_config(data_provider, post_connect_hook)?;
        let mut trusted_cas = Vec::new();
        for path in &cfg.trusted_user_ca_keys {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "sftpd.trusted_user_ca_keys: cannot read {}: {e}",
                    path.display()
                )
            })?;
            let before = trusted_cas.len();
            for line in text.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                trusted_cas.push(PublicKey::from_openssh(line).map_err(|e| {
                    anyhow::anyhow!(
                        "sftpd.trusted_user_ca_keys: {} holds a line that is not a public key: {e}",
                        path.display()
                    )
                })?);
            }
            anyhow::ensure!(
                trusted_cas.len() > before,
                "sftpd.trusted_user_ca_keys: {} holds no public key",
                path.display()
            );
        }
        let revoked = if cfg.revoked_user_certs_file.as_os_str().is_empty() {
            None
        } else {
            let path = cfg.revoked_user_certs_file.clone();
            let list = RevokedList::load(&path)?;
            let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
            Some(RevokedList {
                path,
                cache: Mutex::new((mtime, list)),
            })
        };
        Ok(Self {
            password_authentication: cfg.password_authentication,
            keyboard_interactive_authentication: cfg.keyboard_interactive_authentication,
            keyboard_interactive_hook: crate::hooks::Hook::parse(
                "sftpd.keyboard_interactive_auth_hook",
                &cfg.keyboard_interactive_auth_hook,
            )?,
            max_auth_tries: match cfg.max_auth_tries {
                0 => 6,
                n if n < 0 => 0,
                n => n as u32,
            },
            trusted_cas,
            revoked,
            hooks,
        })
    }

    /// Checks a user certificate for `username` connecting from `ip`;
    /// returns its key (which the edge saw sign the request).
    fn check_certificate(
        &self,
        text: &str,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), &'static str> {
        if self.trusted_cas.is_empty() {
            return Err("certificate login without trusted_user_ca_keys");
        }
        let cert = Certificate::from_openssh(text).map_err(|_| "unparsable certificate")?;
        if cert.cert_type() != CertType::User {
            return Err("not a user certificate");
        }
        let cas: Vec<_> = self
            .trusted_cas
            .iter()
            .map(|k| k.fingerprint(HashAlg::Sha256))
            .collect();
        cert.validate(cas.iter())
            .map_err(|_| "certificate not signed by a trusted CA, or not valid now")?;
        if !cert.valid_principals().iter().any(|p| p == username) {
            return Err("no certificate principal matches the user");
        }
        for (name, value) in cert.critical_options().iter() {
            if name != "source-address" {
                return Err("unsupported critical option in certificate");
            }
            let ip = ip.ok_or("unknown client address")?;
            let allowed = value.split(',').map(str::trim).any(|item| {
                item.parse::<IpNet>()
                    .ok()
                    .or_else(|| item.parse::<IpAddr>().ok().map(IpNet::from))
                    .is_some_and(|net| net.contains(&ip))
            });
            if !allowed {
                return Err("client address not in the certificate's source-address");
            }
        }
        if let Some(revoked) = &self.revoked {
            let blob = cert.to_bytes().map_err(|_| "unparsable certificate")?;
            use base64::Engine;
            let cert_fp = format!(
                "SHA256:{}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&blob))
            );
            let key_fp = cert.public_key().fingerprint(HashAlg::Sha256).to_string();
            if revoked.contains_any(&[cert_fp, key_fp]) {
                return Err("certificate revoked");
            }
        }
        Ok(())
    }
}

/// An HMAC over `parts` with the shared key.
fn sign(key: &[u8], parts: &[&str]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p.as_bytes());
        mac.update(&[0]);
    }
    hex::encode(mac.finalize().into_bytes())
}

fn signed(key: &[u8], parts: &[&str], token: &str) -> bool {
    bool::from(sign(key, parts).as_bytes().ct_eq(token.as_bytes()))
}

/// The method an attempt uses, as SFTPGo names it.
fn method_of(credential: &Option<login_request::Credential>) -> &'static str {
    match credential {
        Some(login_request::Credential::Password(_)) => "password",
        Some(login_request::Credential::PublicKey(_))
        | Some(login_request::Credential::Certificate(_)) => "publickey",
        Some(login_request::Credential::KeyboardInteractive(_)) => "keyboard-interactive",
        None => "none",
    }
}

fn reply(outcome: LoginOutcome, message: &str) -> LoginResponse {
    LoginResponse {
        outcome: outcome as i32,
        message: message.to_string(),
        ..Default::default()
    }
}

pub fn rejected(message: &str) -> LoginResponse {
    reply(LoginOutcome::Rejected, message)
}

/// What one attempt came to before leases and policy.
enum Verdict {
    /// Credentials and rules hold: grant a session.
    Accept,
    /// A key offer the user may prove.
    KeyAcceptable,
    /// First step done: go on with these methods.
    Partial(Vec<&'static str>),
    /// Ask these prompts (keyboard-interactive).
    Challenge,
    /// Refused; whether it counts as a failure for the defender.
    Reject(&'static str, Option<Event>),
}

const KI_PROMPT: &str = "Password: ";
/// Why a password login was refused when no hashing slot freed up in time.
pub const BUSY: &str = "server busy: too many password checks in progress";

/// Checks one authentication attempt.
pub async fn login(
    state: &std::sync::Arc<AppState>,
    req: LoginRequest,
) -> Result<LoginResponse, StoreError> {
    login_with(state, req, None).await
}

/// The attempt's credential was already decided by a hook exchange
/// (keyboard-interactive): `Ok` verified, `Err` refused with that reason.
pub type HookOutcome = Result<(), &'static str>;

/// Like [`login`]; `decided` carries a keyboard-interactive hook's result,
/// in place of checking the credential.
pub async fn login_with(
    state: &std::sync::Arc<AppState>,
    req: LoginRequest,
    decided: Option<HookOutcome>,
) -> Result<LoginResponse, StoreError> {
    let ip = client_ip(&req.remote_address);
    let method = method_of(&req.credential);
    let second_step = !req.partial_token.is_empty();
    let method_name = if second_step {
        format!("publickey+{method}")
    } else {
        method.to_string()
    };
    let mut user = match state.store.user(req.username.clone()).await {
        Ok(u) => Some(u),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e),
    };
    let offer =
        matches!(&req.credential, Some(login_request::Credential::PublicKey(k)) if !k.verified);
    let ki_start = matches!(&req.credential, Some(login_request::Credential::KeyboardInteractive(k)) if k.state.is_empty());
    let banned = ip.is_some_and(|ip| state.defender.is_banned(ip));
    let hooks = &state.auth.hooks;
    // Hooks: pre-login may change or create the user; external auth decides
    // the credential and returns the user.
    let mut hook_failure = decided.and_then(Result::err);
    let mut verified_by_hook = decided.is_some_and(|d| d.is_ok());
    if !banned && !ki_start && method != "none" && decided.is_none() {
        if let Some(hook) = &hooks.pre_login {
            match crate::login_hooks::pre_login(state, hook, &req.username, user.take(), method, ip)
                .await
            {
                Ok(u) => user = u,
                Err(e) => {
                    warn!(
                        sender = "pre_login_hook",
                        username = req.username,
                        error = e,
                        "login refused"
                    );
                    hook_failure = Some("pre-login hook failed");
                }
            }
        }
        let external = match &req.credential {
            Some(login_request::Credential::Password(p)) => hooks
                .external_auth_for("password")
                .map(|h| (h, crate::login_hooks::ExternalCredential::Password(p))),
            Some(login_request::Credential::PublicKey(k)) if k.verified => {
                hooks.external_auth_for("publickey").map(|h| {
                    (
                        h,
                        crate::login_hooks::ExternalCredential::PublicKey(&k.public_key),
                    )
                })
            }
            _ => None,
        };
        if let Some((hook, credential)) = external {
            match crate::login_hooks::external_auth(
                state,
                hook,
                &req.username,
                user.take(),
                credential,
                ip,
            )
            .await
            {
                Ok(row) => {
                    user = Some(row);
                    verified_by_hook = true;
                }
                Err(e) => {
                    warn!(
                        sender = "external_auth_hook",
                        username = req.username,
                        error = e,
                        "login refused"
                    );
                    hook_failure = Some("external authentication refused the login");
                }
            }
        }
    }
    // Groups merged into the user: limits, filters, home and folders as the
    // edge will enforce them.
    let mut folders = Vec::new();
    if let Some(row) = user.take() {
        let (row, merged) = crate::groups::effective(&state.store, row).await?;
        folders = merged;
        user = Some(row);
    }
    let verdict = match hook_failure {
        _ if banned => Verdict::Reject("client address banned by the defender", None),
        Some(reason) => Verdict::Reject(reason, Some(Event::LoginFailed)),
        None => decide(state, &req, user.as_ref(), ip, verified_by_hook).await,
    };
    let username = req.username.as_str();
    let remote_address = req.remote_address.as_str();
    match verdict {
        Verdict::Reject(reason, event) => {
            let counted = match (event, &req.credential) {
                // Clients try many keys: one failure per connection.
                (Some(_), Some(login_request::Credential::PublicKey(_))) => {
                    state.defender.key_failure_is_new(&req.session_id)
                }
                (Some(_), _) => true,
                (None, _) => false,
            };
            if let (true, Some(event), Some(ip)) = (counted, event, ip)
                && state.defender.record(ip, event)
            {
                warn!(remote_address, "client address banned by the defender");
                state.fleet.broadcast(&state.defender.bans_message());
            }
            if !offer {
                crate::metrics::login(&method_name, false);
                crate::login_hooks::post_login(
                    state,
                    username,
                    user.as_ref(),
                    &method_name,
                    ip,
                    false,
                );
                // SFTPGo's failed-connection line (what fail2ban matches).
                info!(
                    sender = "connection_failed",
                    client_ip = ip.map(|i| i.to_string()).unwrap_or_default(),
                    username,
                    login_type = method_name,
                    protocol = "SSH",
                    error = reason,
                    remote_address,
                    "login failed"
                );
            }
            Ok(rejected(reason))
        }
        Verdict::KeyAcceptable => Ok(reply(LoginOutcome::KeyAcceptable, "")),
        Verdict::Challenge => {
            let state_token = sign(&state.jwt_key, &["ki", username, &req.session_id, "1"]);
            Ok(LoginResponse {
                outcome: LoginOutcome::Challenge as i32,
                challenge: Some(Challenge {
                    name: String::new(),
                    instruction: String::new(),
                    prompts: vec![Prompt {
                        text: KI_PROMPT.into(),
                        echo: false,
                    }],
                    state: state_token,
                }),
                ..Default::default()
            })
        }
        Verdict::Partial(next) => {
            info!(
                username,
                method = method_name,
                remote_address,
                next = next.join(","),
                "first login step done"
            );
            Ok(LoginResponse {
                outcome: LoginOutcome::Partial as i32,
                next_methods: next.iter().map(|m| m.to_string()).collect(),
                partial_token: sign(&state.jwt_key, &["partial", username, &req.session_id]),
                ..Default::default()
            })
        }
        Verdict::Accept => {
            let user = user.expect("accepted logins have a user");
            let reply = grant(state, &req, &user, folders, &method_name, ip).await?;
            let success = reply.outcome == LoginOutcome::Accepted as i32;
            crate::metrics::login(&method_name, success);
            crate::login_hooks::post_login(state, username, Some(&user), &method_name, ip, success);
            Ok(reply)
        }
    }
}

/// A connection that ended without trying a credential (SFTPGo's
/// `no_auth_tried`): the failed-connection line, the metric, the defender's
/// `score_no_auth`, and the post-login hook with an empty user.
pub fn no_auth(state: &std::sync::Arc<AppState>, n: &ferry_proto::edge::v1::ConnectionWithoutAuth) {
    const METHOD: &str = "no_auth_tried";
    let ip = client_ip(&n.remote_address);
    crate::metrics::METRICS.no_auth.inc();
    info!(
        sender = "connection_failed",
        client_ip = ip.map(|i| i.to_string()).unwrap_or_default(),
        username = "",
        login_type = METHOD,
        protocol = "SSH",
        error = n.reason,
        remote_address = n.remote_address,
        "login failed"
    );
    if let Some(ip) = ip
        && state.defender.record(ip, crate::defender::Event::NoAuth)
    {
        warn!(
            remote_address = n.remote_address,
            "client address banned by the defender"
        );
        state.fleet.broadcast(&state.defender.bans_message());
    }
    crate::login_hooks::post_login(state, "", None, METHOD, ip, false);
}

/// The rules, in order (the caller has refused banned addresses): method
/// switches, the user, their filters and methods, the credential, the
/// account.
async fn decide(
    state: &AppState,
    req: &LoginRequest,
    user: Option<&UserRow>,
    ip: Option<IpAddr>,
    verified_by_hook: bool,
) -> Verdict {
    use Verdict::Reject;
    let auth = &state.auth;
    let fail = Some(Event::LoginFailed);
    let method = method_of(&req.credential);
    let second_step = !req.partial_token.is_empty();
    if second_step
        && !signed(
            &state.jwt_key,
            &["partial", &req.username, &req.session_id],
            &req.partial_token,
        )
    {
        return Reject("invalid partial-authentication token", fail);
    }
    if method == "password" && !auth.password_authentication {
        return Reject("password authentication is disabled", None);
    }
    if method == "keyboard-interactive" && !auth.keyboard_interactive_authentication {
        return Reject("keyboard-interactive authentication is disabled", None);
    }
    if second_step && method == "publickey" {
        return Reject("public key already verified for this login", fail);
    }
    // With external authentication for keys, the hook decides once the
    // client has proven the key: let it go on.
    if matches!(&req.credential, Some(login_request::Credential::PublicKey(k)) if !k.verified)
        && auth.hooks.external_auth_for("publickey").is_some()
    {
        return Verdict::KeyAcceptable;
    }
    // The first keyboard-interactive round asks for the password whether or
    // not the user exists, so the prompt does not tell.
    if let Some(login_request::Credential::KeyboardInteractive(ki)) = &req.credential
        && ki.state.is_empty()
        && !verified_by_hook
    {
        return Verdict::Challenge;
    }
    // A certificate's offer reaches us as its bare key (the edge cannot
    // tell it from a plain key), so with trusted CAs an unknown key is let on
    // to present its certificate — for every name alike, existing or not,
    // disabled or not, so the answer tells nothing about accounts. The
    // signed attempt that follows is checked in full.
    if let Some(login_request::Credential::PublicKey(k)) = &req.credential
        && !k.verified
        && !auth.trusted_cas.is_empty()
        && !user.is_some_and(|u| key_is_users(u, &k.public_key))
    {
        return Verdict::KeyAcceptable;
    }
    let Some(user) = user else {
        if let Some(plain) = typed_password(&req.credential) {
            // Spend the same work as for a real user so timing does not tell
            // which usernames exist.
            // Busy or not, the name is unknown: the verdict is the same.
            let _ = crate::passwords::verify(plain, state.dummy_hash.clone()).await;
        }
        return Reject("no such user", Some(Event::NoSuchUser));
    };
    let filters = match crate::users::login_filters(user) {
        Ok(f) => f,
        Err(_) => return Reject("the user's filters are invalid", fail),
    };
    if !filters.protocol_allowed("SSH") {
        return Reject("protocol SSH is denied for this user", fail);
    }
    match ip {
        Some(ip) if filters.ip_allowed(ip) => {}
        Some(_) => return Reject("client address not allowed for this user", fail),
        None => return Reject("unknown client address", fail),
    }
    // Second factors this user may complete after a public key.
    let mut second = Vec::new();
    if auth.password_authentication && filters.ssh_method_allowed("publickey+password") {
        second.push("password");
    }
    if auth.keyboard_interactive_authentication
        && filters.ssh_method_allowed("publickey+keyboard-interactive")
    {
        second.push("keyboard-interactive");
    }
    let key_alone = filters.ssh_method_allowed("publickey");
    let allowed = match (method, second_step) {
        ("publickey", false) => key_alone || !second.is_empty(),
        (m, true) => second.contains(&m),
        (m, false) => filters.ssh_method_allowed(m),
    };
    if !allowed {
        return Reject("login method denied for this user", fail);
    }
    match &req.credential {
        _ if verified_by_hook => {}
        Some(login_request::Credential::Password(p)) => {
            if let Err(reason) = check_password(state, user, p.clone(), ip).await {
                return Reject(reason, failure(reason));
            }
        }
        Some(login_request::Credential::KeyboardInteractive(KeyboardInteractive {
            answers,
            state: token,
        })) => {
            if !signed(
                &state.jwt_key,
                &["ki", &req.username, &req.session_id, "1"],
                token,
            ) {
                return Reject("invalid keyboard-interactive state", fail);
            }
            let [answer] = answers.as_slice() else {
                return Reject("expected one answer", fail);
            };
            if let Err(reason) = check_password(state, user, answer.clone(), ip).await {
                return Reject(reason, failure(reason));
            }
        }
        Some(login_request::Credential::PublicKey(k)) => {
            if PublicKey::from_openssh(&k.public_key).is_err() {
                return Reject("unparsable public key", fail);
            }
            let known = key_is_users(user, &k.public_key);
            if !k.verified {
                // Unknown keys with trusted CAs were answered above.
                if !known {
                    return Reject("unknown public key", fail);
                }
                return match check_account(user) {
                    Ok(()) => Verdict::KeyAcceptable,
                    Err(reason) => Reject(reason, fail),
                };
            }
            if !known {
                return Reject("unknown public key", fail);
            }
        }
        Some(login_request::Credential::Certificate(text)) => {
            if let Err(reason) = auth.check_certificate(text, &req.username, ip) {
                return Reject(reason, fail);
            }
        }
        None => return Reject("no credential", fail),
    }
    if let Err(reason) = check_account(user) {
        return Reject(reason, fail);
    }
    if method == "publickey" && !key_alone {
        return Verdict::Partial(second);
    }
    Verdict::Accept
}

/// The defender event of a refused password: none when the server was too
/// busy to check it (the client did nothing wrong).
fn failure(reason: &str) -> Option<Event> {
    (reason != BUSY).then_some(Event::LoginFailed)
}

/// Whether `key` (authorized_keys form) is one of the user's keys.
fn key_is_users(user: &UserRow, key: &str) -> bool {
    let Ok(offered) = PublicKey::from_openssh(key) else {
        return false;
    };
    crate::users::public_keys(user)
        .iter()
        .any(|k| k.key_data() == offered.key_data())
}

fn typed_password(credential: &Option<login_request::Credential>) -> Option<String> {
    match credential {
        Some(login_request::Credential::Password(p)) => Some(p.clone()),
        Some(login_request::Credential::KeyboardInteractive(ki)) => ki.answers.first().cloned(),
        _ => None,
    }
}

async fn check_password(
    state: &AppState,
    user: &UserRow,
    mut plain: String,
    ip: Option<IpAddr>,
) -> Result<(), &'static str> {
    let username = user.data.username.clone();
    use crate::login_hooks::PasswordCheck;
    match crate::login_hooks::check_password(state, &username, &plain, ip).await {
        None => {}
        Some(Ok(PasswordCheck::Accept)) => return Ok(()),
        Some(Ok(PasswordCheck::Refuse)) => return Err("refused by the check-password hook"),
        Some(Ok(PasswordCheck::Verify(part))) => plain = part,
        Some(Err(e)) => {
            warn!(
                sender = "check_password_hook",
                username,
                error = e,
                "login refused"
            );
            return Err("check-password hook failed");
        }
    }
    let Some(hash) = user.data.password.clone().filter(|h| !h.is_empty()) else {
        return Err("the user has no password");
    };
    match state
        .verified
        .verify(&username, plain.clone(), hash.clone())
        .await
    {
        Ok(true) => {
            if crate::passwords::needs_upgrade(&hash) {
                upgrade_hash(state, username, plain, hash);
            }
            Ok(())
        }
        Ok(false) => Err("invalid password"),
        Err(_) => Err(BUSY),
    }
}

/// Takes a session lease and builds the session policy.
async fn grant(
    state: &AppState,
    req: &LoginRequest,
    user: &UserRow,
    folders: Vec<(crate::store::FolderRow, crate::store::Mapping)>,
    method: &str,
    ip: Option<IpAddr>,
) -> Result<LoginResponse, StoreError> {
    // The stored name: an external hook may map a login name to another user.
    let username = user.data.username.clone();
    // Homes from group templates (and rows stored before the check existed)
    // are checked as the edge would open them. Roots kept in an object store
    // are never opened on disk: their paths are only names.
    let local = |fs: &str| !crate::storage::is_object_backed(fs);
    let home = if local(&user.data.filesystem) {
        crate::server_paths::check_inside("home_dir", &user.data.home_dir)
    } else {
        Ok(())
    };
    let reach = home.and_then(|()| {
        folders
            .iter()
            .filter(|(f, _)| local(&f.data.filesystem))
            .try_for_each(|(f, _)| crate::server_paths::check_inside("mapped_path", &f.data.path))
    });
    if let Err(e) = reach {
        warn!(
            username,
            error = e,
            "login refused: the home or a folder reaches Ferry's own files"
        );
        return Ok(rejected(
            "the home or a virtual folder is inside Ferry's own directories",
        ));
    }
    // Before the lease: a storage that cannot be used (a secret that no
    // longer opens) refuses the login without holding a session slot.
    let policy = match crate::users::session_policy(user, &folders, ip) {
        Ok(policy) => policy,
        Err(e) => {
            warn!(
                username,
                error = e,
                "login refused: the user's storage settings cannot be used"
            );
            return Ok(rejected("the user's storage settings cannot be used"));
        }
    };
    let Some((lease_id, expires)) =
        state
            .fleet
            .try_grant_lease(&username, &req.edge_id, user.data.max_sessions)
    else {
        info!(
            username,
            method,
            remote_address = req.remote_address,
            max_sessions = user.data.max_sessions,
            "login refused: too many open sessions"
        );
        if let Some(ip) = ip
            && state.defender.record(ip, Event::LimitExceeded)
        {
            state.fleet.broadcast(&state.defender.bans_message());
        }
        return Ok(rejected("too many open sessions"));
    };
    let expires_at_ms = now_ms()
        + expires
            .saturating_duration_since(std::time::Instant::now())
            .as_millis() as i64;
    if let Err(e) = state.store.set_last_login(username.clone(), now_ms()).await {
        warn!(username, error = %e, "cannot record last login");
    }
    info!(
        sender = "login",
        ip = ip.map(|i| i.to_string()).unwrap_or_default(),
        username,
        method,
        protocol = "SSH",
        session_id = req.session_id,
        remote_address = req.remote_address,
        edge_id = req.edge_id,
        "login accepted"
    );
    Ok(LoginResponse {
        outcome: LoginOutcome::Accepted as i32,
        policy: Some(policy),
        lease: Some(SessionLease {
            lease_id,
            expires_at_ms,
        }),
        ..Default::default()
    })
}

/// Re-hashes a password that verified against another format with the configured algorithm,
/// in the background: the login does not wait for it.
fn upgrade_hash(state: &AppState, username: String, plain: String, old: String) {
    let store = state.store.clone();
    tokio::spawn(async move {
        match crate::passwords::hash(plain).await {
            Ok(new) => match store.replace_password(username.clone(), old, new).await {
                Ok(true) => info!(username, "password hash upgraded"),
                Ok(false) => {}
                Err(e) => warn!(username, error = %e, "cannot upgrade password hash"),
            },
            Err(e) => warn!(username, error = e, "cannot upgrade password hash"),
        }
    });
}

/// The client's IP from an edge-reported `ip:port` (or bare IP).
pub fn client_ip(remote_address: &str) -> Option<IpAddr> {
    remote_address
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| remote_address.parse::<IpAddr>())
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Account-level checks that apply to every method.
fn check_account(user: &UserRow) -> Result<(), &'static str> {
    if user.data.status != 1 {
        return Err("user disabled");
    }
    if user.data.expiration_date > 0 && user.data.expiration_date < now_ms() {
        return Err("user expired");
    }
    Ok(())
}
