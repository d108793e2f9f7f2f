//! SFTPGo's login hooks, run by the control plane for every edge, with
//! SFTPGo's environment variable and JSON field names so existing hook
//! programs work unchanged: external authentication, pre-login,
//! check-password, post-login and post-connect.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tracing::{info, warn};

use crate::AppState;
use crate::hooks::{Answer, Hook, call_http, json as parse_json, run_program};
use crate::provider::DataProviderConfig;
use crate::store::{StoreError, UserRow};
use crate::users::{UserInput, UserView};

const AUTH_TIMEOUT: Duration = Duration::from_secs(30);
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(20);

/// The configured hooks.
#[derive(Debug, Default)]
pub struct LoginHooks {
    pub external_auth: Option<Hook>,
    external_auth_scope: u8,
    pub pre_login: Option<Hook>,
    check_password: Option<Hook>,
    check_password_scope: u8,
    post_login: Option<Hook>,
    post_login_scope: u8,
    pub post_connect: Option<Hook>,
}

impl LoginHooks {
    pub fn from_config(dp: &DataProviderConfig, post_connect: &str) -> anyhow::Result<Self> {
        let hooks = Self {
            external_auth: Hook::parse("data_provider.external_auth_hook", &dp.external_auth_hook)?,
            external_auth_scope: dp.external_auth_scope,
            pre_login: Hook::parse("data_provider.pre_login_hook", &dp.pre_login_hook)?,
            check_password: Hook::parse(
                "data_provider.check_password_hook",
                &dp.check_password_hook,
            )?,
            check_password_scope: dp.check_password_scope,
            post_login: Hook::parse("data_provider.post_login_hook", &dp.post_login_hook)?,
            post_login_scope: dp.post_login_scope,
            post_connect: Hook::parse("common.post_connect_hook", post_connect)?,
        };
        anyhow::ensure!(
            hooks.external_auth.is_none() || hooks.pre_login.is_none(),
            "data_provider.external_auth_hook and data_provider.pre_login_hook cannot both be set"
        );
        anyhow::ensure!(
            dp.post_login_scope <= 2,
            "data_provider.post_login_scope must be 0, 1 or 2"
        );
        Ok(hooks)
    }

    /// Whether the external hook decides logins with `method`
    /// (`password` or `publickey`).
    pub fn external_auth_for(&self, method: &str) -> Option<&Hook> {
        let bit = match method {
            "password" => 1,
            "publickey" => 2,
            _ => return None,
        };
        let scope = self.external_auth_scope;
        self.external_auth
            .as_ref()
            .filter(|_| scope == 0 || scope & bit != 0)
    }
}

/// The stored user as hooks see it (SFTPGo's JSON, without the password).
async fn user_json(state: &AppState, user: Option<&UserRow>, username: &str) -> Value {
    match user {
        Some(row) => {
            let folders = state.store.user_folders(row.id).await.unwrap_or_default();
            let groups = state.store.user_groups(row.id).await.unwrap_or_default();
            serde_json::to_value(UserView::full(row, &folders, &groups).redacted())
                .unwrap_or(Value::Null)
        }
        None => json!({"id": 0, "username": username}),
    }
}

async fn run(
    name: &str,
    hook: &Hook,
    env: Vec<(&str, String)>,
    query: Vec<(&str, String)>,
    body: Option<Value>,
    timeout: Duration,
) -> Result<Answer, String> {
    match hook {
        Hook::Program(path) => run_program(name, path, &env, timeout).await,
        Hook::Http(url) => call_http(name, url, &query, body.as_ref(), timeout).await,
    }
}

/// Stores `input` as the user it names (added, or replacing the stored one
/// except server-kept fields) and reads it back.
async fn save_user(state: &AppState, input: UserInput) -> Result<UserRow, String> {
    let existing = match state.store.user(input.username.clone()).await {
        Ok(row) => Some(row),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.to_string()),
    };
    let username = input.username.clone();
    let valid = input.validate(existing.as_ref())?;
    let write = valid.into_data().await?;
    match &existing {
        Some(row) => state
            .store
            .update_user_full(row.id, write)
            .await
            .map_err(|e| e.to_string())?,
        None => {
            state
                .store
                .add_user_full(write)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    state.verified.forget(&username);
    state.store.user(username).await.map_err(|e| e.to_string())
}

/// Pre-login: may change or create the user before credentials are
/// checked. Returns the user to go on with.
pub async fn pre_login(
    state: &AppState,
    hook: &Hook,
    username: &str,
    user: Option<UserRow>,
    method: &str,
    ip: Option<IpAddr>,
) -> Result<Option<UserRow>, String> {
    const NAME: &str = "pre_login_hook";
    let current = user_json(state, user.as_ref(), username).await;
    let ip = ip.map(|i| i.to_string()).unwrap_or_default();
    let env = vec![
        ("SFTPGO_LOGIND_USER", current.to_string()),
        ("SFTPGO_LOGIND_METHOD", method.to_string()),
        ("SFTPGO_LOGIND_IP", ip.clone()),
        ("SFTPGO_LOGIND_PROTOCOL", "SSH".to_string()),
    ];
    let query = vec![
        ("login_method", method.to_string()),
        ("ip", ip),
        ("protocol", "SSH".to_string()),
    ];
    let answer = run(NAME, hook, env, query, Some(current.clone()), AUTH_TIMEOUT).await?;
    let unchanged = match hook {
        Hook::Program(_) => {
            if answer.status != 0 {
                return Err(format!("{NAME}: exited with status {}", answer.status));
            }
            answer.body.iter().all(u8::is_ascii_whitespace)
        }
        Hook::Http(_) => match answer.status {
            204 => true,
            200 => false,
            other => return Err(format!("{NAME}: HTTP status {other}")),
        },
    };
    if unchanged {
        return Ok(user);
    }
    let Value::Object(changes) = parse_json(NAME, &answer.body)? else {
        return Err(format!("{NAME}: output is not a JSON object"));
    };
    let mut merged = match current {
        Value::Object(m) => m,
        _ => Default::default(),
    };
    for (k, v) in changes {
        merged.insert(k, v);
    }
    // The login name stays; a hook cannot log the client in as someone else.
    merged.insert("username".into(), Value::String(username.to_string()));
    let input: UserInput = serde_json::from_value(Value::Object(merged))
        .map_err(|e| format!("{NAME}: not a valid user: {e}"))?;
    let row = save_user(state, input)
        .await
        .map_err(|e| format!("{NAME}: cannot apply the user: {e}"))?;
    info!(username, "user updated by the pre-login hook");
    Ok(Some(row))
}

/// The credential an external hook decides.
pub enum ExternalCredential<'a> {
    Password(&'a str),
    PublicKey(&'a str),
}

/// External authentication: the hook decides and returns the user, which
/// is stored (created when missing). Returns the user to log in.
pub async fn external_auth(
    state: &AppState,
    hook: &Hook,
    username: &str,
    user: Option<UserRow>,
    credential: ExternalCredential<'_>,
    ip: Option<IpAddr>,
) -> Result<UserRow, String> {
    const NAME: &str = "external_auth_hook";
    let current = match &user {
        Some(_) => user_json(state, user.as_ref(), username).await,
        None => Value::Null,
    };
    let (password, public_key) = match credential {
        ExternalCredential::Password(p) => (p.to_string(), String::new()),
        ExternalCredential::PublicKey(k) => (String::new(), k.to_string()),
    };
    let ip = ip.map(|i| i.to_string()).unwrap_or_default();
    let env = vec![
        ("SFTPGO_AUTHD_USERNAME", username.to_string()),
        (
            "SFTPGO_AUTHD_USER",
            if current.is_null() {
                String::new()
            } else {
                current.to_string()
            },
        ),
        ("SFTPGO_AUTHD_IP", ip.clone()),
        ("SFTPGO_AUTHD_PROTOCOL", "SSH".to_string()),
        ("SFTPGO_AUTHD_PASSWORD", password.clone()),
        ("SFTPGO_AUTHD_PUBLIC_KEY", public_key.clone()),
        ("SFTPGO_AUTHD_KEYBOARD_INTERACTIVE", String::new()),
        ("SFTPGO_AUTHD_TLS_CERT", String::new()),
    ];
    let body = json!({
        "username": username,
        "password": password,
        "public_key": public_key,
        "keyboard_interactive": "",
        "ip": ip,
        "protocol": "SSH",
        "user": current,
        "tls_cert": "",
    });
    let answer = run(NAME, hook, env, vec![], Some(body), AUTH_TIMEOUT).await?;
    if answer.status != hook.success_status() {
        return Err(format!("{NAME}: refused (status {})", answer.status));
    }
    if answer.body.iter().all(u8::is_ascii_whitespace) {
        // Success without changes: only for a user that exists.
        let Some(row) = user else {
            return Err(format!(
                "{NAME}: empty answer for a user that does not exist"
            ));
        };
        if !password.is_empty() {
            keep_password(state, &row, &password).await?;
        }
        return Ok(row);
    }
    let Value::Object(mut returned) = parse_json(NAME, &answer.body)? else {
        return Err(format!("{NAME}: output is not a JSON object"));
    };
    let name = returned
        .get("username")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(format!("{NAME}: refused (empty username)"));
    }
    // The password used is stored; the key used is added if missing.
    if !password.is_empty() && returned.get("password").and_then(Value::as_str).is_none() {
        returned.insert("password".into(), Value::String(password.clone()));
    }
    let mut input: UserInput = serde_json::from_value(Value::Object(returned))
        .map_err(|e| format!("{NAME}: not a valid user: {e}"))?;
    if !public_key.is_empty() {
        let offered = russh::keys::PublicKey::from_openssh(&public_key).ok();
        let known = input.public_keys.iter().any(|k| {
            russh::keys::PublicKey::from_openssh(k)
                .ok()
                .zip(offered.as_ref())
                .is_some_and(|(a, b)| a.key_data() == b.key_data())
        });
        if !known {
            input.public_keys.push(public_key.clone());
        }
    }
    // Hashing a password that already verifies would cost argon2 on every
    // login: keep the stored hash then.
    if let (Some(p), Ok(stored)) = (&input.password, state.store.user(name.clone()).await)
        && stored
            .data
            .password
            .as_deref()
            .is_some_and(|h| !h.is_empty())
        && state
            .verified
            .verify(
                &name,
                p.clone(),
                stored.data.password.clone().unwrap_or_default(),
            )
            .await
            == Ok(true)
    {
        input.password = None;
    }
    let row = save_user(state, input)
        .await
        .map_err(|e| format!("{NAME}: cannot store the user: {e}"))?;
    info!(
        username,
        stored_as = name,
        "user stored from the external auth hook"
    );
    Ok(row)
}

/// After an empty external-auth answer: store the password used unless the
/// stored hash already matches.
async fn keep_password(state: &AppState, row: &UserRow, password: &str) -> Result<(), String> {
    let stored = row.data.password.clone().unwrap_or_default();
    if !stored.is_empty()
        && state
            .verified
            .verify(&row.data.username, password.to_string(), stored.clone())
            .await
            == Ok(true)
    {
        return Ok(());
    }
    let hash = crate::passwords::hash(password.to_string()).await?;
    state
        .store
        .replace_password(row.data.username.clone(), stored, hash)
        .await
        .map_err(|e| e.to_string())?;
    state.verified.forget(&row.data.username);
    Ok(())
}

/// What the check-password hook said.
pub enum PasswordCheck {
    Accept,
    Refuse,
    /// Verify this part against the stored hash.
    Verify(String),
}

/// Check-password hook for SSH logins, when configured for SSH.
pub async fn check_password(
    state: &AppState,
    username: &str,
    password: &str,
    ip: Option<IpAddr>,
) -> Option<Result<PasswordCheck, String>> {
    const NAME: &str = "check_password_hook";
    let hooks = &state.auth.hooks;
    let hook = hooks.check_password.as_ref()?;
    if hooks.check_password_scope != 0 && hooks.check_password_scope & 1 == 0 {
        return None;
    }
    let ip = ip.map(|i| i.to_string()).unwrap_or_default();
    let env = vec![
        ("SFTPGO_AUTHD_USERNAME", username.to_string()),
        ("SFTPGO_AUTHD_PASSWORD", password.to_string()),
        ("SFTPGO_AUTHD_IP", ip.clone()),
        ("SFTPGO_AUTHD_PROTOCOL", "SSH".to_string()),
    ];
    let body = json!({"username": username, "password": password, "ip": ip, "protocol": "SSH"});
    let result = async {
        let answer = run(NAME, hook, env, vec![], Some(body), AUTH_TIMEOUT).await?;
        if answer.status != hook.success_status() {
            return Err(format!("{NAME}: status {}", answer.status));
        }
        let v = parse_json(NAME, &answer.body)?;
        match v.get("status").and_then(Value::as_i64) {
            Some(1) => Ok(PasswordCheck::Accept),
            Some(0) => Ok(PasswordCheck::Refuse),
            Some(2) => Ok(PasswordCheck::Verify(
                v.get("to_verify")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )),
            _ => Err(format!("{NAME}: no status 0, 1 or 2 in its answer")),
        }
    }
    .await;
    Some(result)
}

/// Post-login notification, in the background.
pub fn post_login(
    state: &std::sync::Arc<AppState>,
    username: &str,
    user: Option<&UserRow>,
    method: &str,
    ip: Option<IpAddr>,
    success: bool,
) {
    const NAME: &str = "post_login_hook";
    let hooks = &state.auth.hooks;
    let Some(hook) = hooks.post_login.clone() else {
        return;
    };
    match (hooks.post_login_scope, success) {
        (1, true) | (2, false) => return,
        _ => {}
    }
    let (state, username, user, method) = (
        state.clone(),
        username.to_string(),
        user.cloned(),
        method.to_string(),
    );
    tokio::spawn(async move {
        let current = user_json(&state, user.as_ref(), &username).await;
        let ip = ip.map(|i| i.to_string()).unwrap_or_default();
        let status = if success { "1" } else { "0" };
        let env = vec![
            ("SFTPGO_LOGIND_USER", current.to_string()),
            ("SFTPGO_LOGIND_IP", ip.clone()),
            ("SFTPGO_LOGIND_METHOD", method.clone()),
            ("SFTPGO_LOGIND_STATUS", status.to_string()),
            ("SFTPGO_LOGIND_PROTOCOL", "SSH".to_string()),
        ];
        let query = vec![
            ("login_method", method),
            ("ip", ip),
            ("protocol", "SSH".to_string()),
            ("status", status.to_string()),
        ];
        if let Err(e) = run(NAME, &hook, env, query, Some(current), NOTIFY_TIMEOUT).await {
            warn!(sender = NAME, error = e, "post-login hook failed");
        }
    });
}

/// Post-connect: whether a client from `ip` may go on to the handshake.
pub async fn post_connect(state: &AppState, ip: &str) -> Result<(), String> {
    const NAME: &str = "post_connect_hook";
    let Some(hook) = &state.auth.hooks.post_connect else {
        return Ok(());
    };
    let env = vec![
        ("SFTPGO_CONNECTION_IP", ip.to_string()),
        ("SFTPGO_CONNECTION_PROTOCOL", "SSH".to_string()),
    ];
    let query = vec![("ip", ip.to_string()), ("protocol", "SSH".to_string())];
    let answer = run(NAME, hook, env, query, None, NOTIFY_TIMEOUT).await?;
    if answer.status == hook.success_status() {
        Ok(())
    } else {
        Err(format!("{NAME}: refused (status {})", answer.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(scope: u8) -> LoginHooks {
        let dp = DataProviderConfig {
            external_auth_hook: "/usr/local/bin/auth".into(),
            external_auth_scope: scope,
            ..Default::default()
        };
        LoginHooks::from_config(&dp, "").unwrap()
    }

    #[test]
    fn external_auth_scope_selects_methods() {
        let all = hooks(0);
        assert!(all.external_auth_for("password").is_some());
        assert!(all.external_auth_for("publickey").is_some());
        let pw = hooks(1);
        assert!(pw.external_auth_for("password").is_some());
        assert!(pw.external_auth_for("publickey").is_none());
        let keys = hooks(2);
        assert!(keys.external_auth_for("password").is_none());
        assert!(keys.external_auth_for("publickey").is_some());
        assert!(hooks(3).external_auth_for("keyboard-interactive").is_none());
        let both = DataProviderConfig {
            external_auth_hook: "/a".into(),
            pre_login_hook: "/b".into(),
            ..Default::default()
        };
        assert!(LoginHooks::from_config(&both, "").is_err());
    }
}
