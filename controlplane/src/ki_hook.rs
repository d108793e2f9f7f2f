//! Keyboard-interactive through `sftpd.keyboard_interactive_auth_hook`, with
//! SFTPGo's protocol. A program prints one JSON line per round
//! (`instruction`, `questions`, `echos`, `check_password`, `auth_result`) and
//! reads the client's answers on stdin, one per line; an HTTP hook gets one
//! POST per round (`request_id`, `step`, `username`, `ip`, `password`,
//! `answers`, `questions`) and answers with the same JSON. `check_password`
//! 1 means the one answer is the user's password: it is verified here and the
//! hook gets `OK` instead. `auth_result` 1 ends with success, anything but 0
//! with failure. The whole exchange has 60 s.
//!
//! The edge relays rounds over one `KeyboardInteractive` stream per attempt.

use std::sync::Arc;
use std::time::Duration;

use ferry_proto::edge::v1::{
    Challenge, KiControlMessage, KiEdgeMessage, LoginRequest, Prompt, ki_control_message,
    ki_edge_message,
};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};
use tracing::warn;

use crate::AppState;
use crate::hooks::Hook;
use crate::store::{StoreError, UserRow};

const EXCHANGE_LIMIT: Duration = Duration::from_secs(60);
/// Longest line a program hook may print.
const MAX_LINE: usize = 64 * 1024;
const MAX_QUESTIONS: usize = 32;

/// One round as the hook writes it.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Round {
    instruction: String,
    questions: Vec<String>,
    echos: Vec<bool>,
    check_password: i64,
    auth_result: i64,
}

type Outbound = mpsc::Sender<Result<KiControlMessage, Status>>;

/// Serves one `KeyboardInteractive` stream to its end.
pub async fn serve(state: Arc<AppState>, mut inbound: Streaming<KiEdgeMessage>, tx: Outbound) {
    let start = match inbound.message().await {
        Ok(Some(KiEdgeMessage {
            kind: Some(ki_edge_message::Kind::Start(req)),
        })) => req,
        _ => {
            let _ = tx
                .send(Err(Status::invalid_argument(
                    "the first message must be start",
                )))
                .await;
            return;
        }
    };
    let outcome = match &state.auth.keyboard_interactive_hook {
        None => Err("no keyboard-interactive hook configured"),
        Some(hook) => {
            match tokio::time::timeout(
                EXCHANGE_LIMIT,
                exchange(&state, hook, &start, &mut inbound, &tx),
            )
            .await
            {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    warn!(
                        sender = "keyboard_interactive_auth_hook",
                        username = start.username,
                        error = e,
                        "login refused"
                    );
                    Err("keyboard-interactive hook refused the login")
                }
                Err(_) => {
                    warn!(
                        sender = "keyboard_interactive_auth_hook",
                        username = start.username,
                        "exchange took longer than 60 s"
                    );
                    Err("keyboard-interactive exchange timed out")
                }
            }
        }
    };
    let reply = match crate::auth::login_with(&state, start, Some(outcome)).await {
        Ok(r) => Ok(KiControlMessage {
            kind: Some(ki_control_message::Kind::Result(r)),
        }),
        Err(StoreError::Unavailable(m)) => Err(Status::unavailable(m)),
        Err(e) => Err(Status::internal(e.to_string())),
    };
    let _ = tx.send(reply).await;
}

/// Relays one round to the client; returns its answers.
async fn ask(
    round: &Round,
    inbound: &mut Streaming<KiEdgeMessage>,
    tx: &Outbound,
) -> Result<Vec<String>, String> {
    if round.questions.len() > MAX_QUESTIONS {
        return Err(format!("more than {MAX_QUESTIONS} questions in one round"));
    }
    let prompts = round
        .questions
        .iter()
        .enumerate()
        .map(|(i, q)| Prompt {
            text: q.clone(),
            echo: round.echos.get(i).copied().unwrap_or(false),
        })
        .collect();
    let challenge = KiControlMessage {
        kind: Some(ki_control_message::Kind::Challenge(Challenge {
            name: String::new(),
            instruction: round.instruction.clone(),
            prompts,
            state: String::new(),
        })),
    };
    tx.send(Ok(challenge))
        .await
        .map_err(|_| "the edge went away".to_string())?;
    match inbound.message().await {
        Ok(Some(KiEdgeMessage {
            kind: Some(ki_edge_message::Kind::Answers(a)),
        })) => {
            if a.answers.len() != round.questions.len() {
                return Err(format!(
                    "{} answers to {} questions",
                    a.answers.len(),
                    round.questions.len()
                ));
            }
            Ok(a.answers)
        }
        _ => Err("the client gave no answers".into()),
    }
}

/// `check_password: 1`: the one answer must be the user's password.
async fn check_password(
    state: &AppState,
    user: &UserRow,
    answers: &[String],
) -> Result<(), String> {
    let [answer] = answers else {
        return Err("check_password needs exactly one question".into());
    };
    let hash = user.data.password.clone().unwrap_or_default();
    if hash.is_empty() {
        return Err("wrong password".into());
    }
    match state
        .verified
        .verify(&user.data.username, answer.clone(), hash)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err("wrong password".into()),
        Err(busy) => Err(busy.to_string()),
    }
}

fn verdict(round: &Round) -> Option<Result<(), String>> {
    match round.auth_result {
        0 => None,
        1 => Some(Ok(())),
        n => Some(Err(format!("auth_result {n}"))),
    }
}

async fn exchange(
    state: &AppState,
    hook: &Hook,
    start: &LoginRequest,
    inbound: &mut Streaming<KiEdgeMessage>,
    tx: &Outbound,
) -> Result<(), String> {
    let stored = match state.store.user(start.username.clone()).await {
        Ok(u) => Some(u),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.to_string()),
    };
    let ip = crate::auth::client_ip(&start.remote_address);
    // As SFTPGo does, the pre-login hook runs before the exchange: it may
    // create, change or disable the user the exchange is about (a disabled
    // user is refused when the result is applied).
    let user = match &state.auth.hooks.pre_login {
        Some(pre) => crate::login_hooks::pre_login(
            state,
            pre,
            &start.username,
            stored,
            "keyboard-interactive",
            ip,
        )
        .await
        .map_err(|e| format!("pre-login hook: {e}"))?,
        None => stored,
    }
    .ok_or_else(|| "no such user".to_string())?;
    let ip = ip.map(|i| i.to_string()).unwrap_or_default();
    let hash = user.data.password.clone().unwrap_or_default();
    match hook {
        Hook::Program(path) => {
            let mut child = tokio::process::Command::new(path)
                .env("SFTPGO_AUTHD_USERNAME", &user.data.username)
                .env("SFTPGO_AUTHD_PASSWORD", &hash)
                .env("SFTPGO_AUTHD_IP", &ip)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
            let pid = child.id();
            let result = async {
                let mut stdin = child.stdin.take().expect("piped");
                let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
                loop {
                    let mut line = String::new();
                    let n = (&mut lines)
                        .take(MAX_LINE as u64)
                        .read_line(&mut line)
                        .await
                        .map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("the hook ended without a result".to_string());
                    }
                    if line.trim().is_empty() {
                        continue;
                    }
                    let round: Round = serde_json::from_str(line.trim())
                        .map_err(|e| format!("not a JSON round: {e}"))?;
                    if let Some(v) = verdict(&round) {
                        return v;
                    }
                    let answers = ask(&round, inbound, tx).await?;
                    let reply = if round.check_password == 1 {
                        check_password(state, &user, &answers).await?;
                        vec!["OK".to_string()]
                    } else {
                        answers
                    };
                    for a in reply {
                        stdin
                            .write_all(format!("{}\n", a.replace('\n', " ")).as_bytes())
                            .await
                            .map_err(|e| format!("cannot write to the hook: {e}"))?;
                    }
                    stdin.flush().await.map_err(|e| e.to_string())?;
                }
            }
            .await;
            crate::hooks::kill_group(pid);
            let _ = child.wait().await;
            result
        }
        Hook::Http(url) => {
            let request_id = crate::random_token(16);
            let mut answers: Option<Vec<String>> = None;
            let mut questions: Option<Vec<String>> = None;
            let mut step = 0u32;
            loop {
                step += 1;
                let body = json!({
                    "request_id": request_id,
                    "step": step,
                    "username": user.data.username,
                    "ip": ip,
                    "password": hash,
                    "answers": answers,
                    "questions": questions,
                });
                let answer = crate::hooks::call_http(
                    "keyboard_interactive_auth_hook",
                    url,
                    &[],
                    Some(&body),
                    EXCHANGE_LIMIT,
                )
                .await?;
                if answer.status != 200 {
                    return Err(format!("HTTP status {}", answer.status));
                }
                let round: Round = serde_json::from_slice(&answer.body)
                    .map_err(|e| format!("not a JSON round: {e}"))?;
                if let Some(v) = verdict(&round) {
                    return v;
                }
                let given = ask(&round, inbound, tx).await?;
                answers = Some(if round.check_password == 1 {
                    check_password(state, &user, &given).await?;
                    vec!["OK".to_string()]
                } else {
                    given
                });
                questions = Some(round.questions);
            }
        }
    }
}
