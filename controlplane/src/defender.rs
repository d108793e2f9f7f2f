//! The defender (`common.defender`): failed logins are scored per client
//! address (the real one under PROXY protocol, as edges report it); an
//! address whose score within the observation window reaches the threshold
//! is banned. Bans live here, in the control plane, and every change is
//! pushed to every edge, so a banned address is dropped before the SSH
//! handshake on all of them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use ferry_dataplane::settings::DefenderConfig;
use ferry_proto::edge::v1::{BannedHost, ControlMessage, DefenderBans, control_message};

use crate::store::now_ms;

/// What happened, with the score it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Login for a user that does not exist.
    NoSuchUser,
    /// Wrong credentials (or a refused login) for an existing user.
    LoginFailed,
    /// A limit such as max_sessions was reached.
    LimitExceeded,
    /// A connection ended without trying to log in.
    NoAuth,
}

#[derive(Debug, Default)]
struct Host {
    /// (time ms, score) within the observation window.
    events: VecDeque<(i64, u32)>,
    ban_until_ms: i64,
    /// How many times the address was banned (for the increment).
    bans: u32,
    last_seen_ms: i64,
}

impl Host {
    fn score(&self) -> u32 {
        self.events.iter().map(|(_, s)| s).sum()
    }
}

/// One host as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub ip: IpAddr,
    pub score: u32,
    /// 0 when not banned.
    pub ban_until_ms: i64,
}

pub struct Defender {
    cfg: DefenderConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    hosts: HashMap<IpAddr, Host>,
    /// Connections whose public-key failure was already scored (clients
    /// try many keys), with when.
    key_failures: HashSet<String>,
    key_failures_order: VecDeque<String>,
}

const KEY_FAILURES_KEPT: usize = 10_000;

impl Defender {
    pub fn new(cfg: DefenderConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            cfg.driver == "memory" || cfg.driver.is_empty(),
            "common.defender.driver {:?} is not supported: use \"memory\"",
            cfg.driver
        );
        anyhow::ensure!(
            !cfg.enabled || cfg.threshold > 0,
            "common.defender.threshold must be above 0"
        );
        anyhow::ensure!(
            cfg.entries_soft_limit <= cfg.entries_hard_limit,
            "common.defender.entries_soft_limit must not exceed entries_hard_limit"
        );
        Ok(Self {
            cfg,
            state: Mutex::new(State::default()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip` is banned now.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.cfg.enabled
            && self
                .lock()
                .hosts
                .get(&ip.to_canonical())
                .is_some_and(|h| h.ban_until_ms > now_ms())
    }

    /// A failed public-key login scores once per connection.
    pub fn key_failure_is_new(&self, session_id: &str) -> bool {
        let mut s = self.lock();
        if s.key_failures.contains(session_id) {
            return false;
        }
        s.key_failures.insert(session_id.to_string());
        s.key_failures_order.push_back(session_id.to_string());
        while s.key_failures_order.len() > KEY_FAILURES_KEPT {
            if let Some(old) = s.key_failures_order.pop_front() {
                s.key_failures.remove(&old);
            }
        }
        true
    }

    /// Records `event` from `ip`; returns true when it banned the address
    /// (the caller pushes the new ban list).
    pub fn record(&self, ip: IpAddr, event: Event) -> bool {
        if !self.cfg.enabled {
            return false;
        }
        let score = match event {
            Event::NoSuchUser => self.cfg.score_invalid,
            Event::LoginFailed => self.cfg.score_valid,
            Event::LimitExceeded => self.cfg.score_limit_exceeded,
            Event::NoAuth => self.cfg.score_no_auth,
        };
        if score == 0 {
            return false;
        }
        let now = now_ms();
        let window = self.cfg.observation_time as i64 * 60_000;
        let mut s = self.lock();
        let host = s.hosts.entry(ip.to_canonical()).or_default();
        host.last_seen_ms = now;
        if host.ban_until_ms > now {
            return false;
        }
        while host.events.front().is_some_and(|(t, _)| *t < now - window) {
            host.events.pop_front();
        }
        host.events.push_back((now, score));
        let mut banned = false;
        if host.score() >= self.cfg.threshold {
            let base = self.cfg.ban_time as f64 * 60_000.0;
            let factor = (1.0 + self.cfg.ban_time_increment as f64 / 100.0).powi(host.bans as i32);
            host.ban_until_ms = now + (base * factor) as i64;
            host.bans += 1;
            host.events.clear();
            banned = true;
        }
        self.trim(&mut s, now);
        banned
    }

    /// Keeps the table within the configured limits: past the hard limit,
    /// expired and least recently seen entries go until the soft limit.
    fn trim(&self, s: &mut State, now: i64) {
        if s.hosts.len() <= self.cfg.entries_hard_limit {
            return;
        }
        let mut order: Vec<(bool, i64, IpAddr)> = s
            .hosts
            .iter()
            .map(|(ip, h)| (h.ban_until_ms > now, h.last_seen_ms, *ip))
            .collect();
        // Unbanned first, then the oldest.
        order.sort();
        let excess = s.hosts.len() - self.cfg.entries_soft_limit;
        for (_, _, ip) in order.into_iter().take(excess) {
            s.hosts.remove(&ip);
        }
    }

    /// Hosts with a score or a ban.
    pub fn hosts(&self) -> Vec<HostView> {
        let now = now_ms();
        let window = self.cfg.observation_time as i64 * 60_000;
        let s = self.lock();
        let mut out: Vec<HostView> = s
            .hosts
            .iter()
            .map(|(ip, h)| HostView {
                ip: *ip,
                score: h
                    .events
                    .iter()
                    .filter(|(t, _)| *t >= now - window)
                    .map(|(_, s)| s)
                    .sum(),
                ban_until_ms: if h.ban_until_ms > now {
                    h.ban_until_ms
                } else {
                    0
                },
            })
            .filter(|v| v.score > 0 || v.ban_until_ms > 0)
            .collect();
        out.sort_by_key(|v| v.ip);
        out
    }

    /// Forgets `ip` (lifts its ban); false when it was not tracked.
    pub fn remove(&self, ip: IpAddr) -> bool {
        self.lock().hosts.remove(&ip.to_canonical()).is_some()
    }

    /// The current bans as the message edges get.
    pub fn bans_message(&self) -> ControlMessage {
        let now = now_ms();
        let hosts = self
            .lock()
            .hosts
            .iter()
            .filter(|(_, h)| h.ban_until_ms > now)
            .map(|(ip, h)| BannedHost {
                ip: ip.to_string(),
                ban_until_ms: h.ban_until_ms,
            })
            .collect();
        ControlMessage {
            kind: Some(control_message::Kind::Bans(DefenderBans { hosts })),
        }
    }
}

/// SFTPGo's host id: the address's text, hex encoded.
pub fn host_id(ip: IpAddr) -> String {
    hex::encode(ip.to_string())
}

pub fn ip_of_id(id: &str) -> Option<IpAddr> {
    let bytes = hex::decode(id).ok()?;
    String::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DefenderConfig {
        DefenderConfig {
            enabled: true,
            threshold: 5,
            ..Default::default()
        }
    }

    #[test]
    fn scores_add_up_to_a_ban_that_grows() {
        let d = Defender::new(cfg()).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(!d.record(ip, Event::NoSuchUser)); // 2
        assert!(!d.record(ip, Event::LoginFailed)); // 3
        assert!(!d.is_banned(ip));
        assert!(d.record(ip, Event::NoSuchUser)); // 5: banned
        assert!(d.is_banned(ip));
        assert!(d.is_banned("::ffff:192.0.2.7".parse().unwrap()));
        let first = d.hosts()[0].ban_until_ms - now_ms();
        assert!((29 * 60_000..=30 * 60_000).contains(&first), "{first}");
        // Further failures while banned do not extend it.
        assert!(!d.record(ip, Event::NoSuchUser));
        assert!(d.remove(ip));
        assert!(!d.is_banned(ip));
        assert!(d.hosts().is_empty());
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(!d.is_banned(other));
        assert_eq!(host_id(ip), "3139322e302e322e37");
        assert_eq!(ip_of_id("3139322e302e322e37"), Some(ip));
    }

    #[test]
    fn disabled_records_nothing_and_limits_hold() {
        let d = Defender::new(DefenderConfig::default()).unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..20 {
            assert!(!d.record(ip, Event::NoSuchUser));
        }
        assert!(!d.is_banned(ip));
        let d = Defender::new(DefenderConfig {
            entries_soft_limit: 2,
            entries_hard_limit: 3,
            ..cfg()
        })
        .unwrap();
        for i in 1..=4u8 {
            d.record(IpAddr::from([10, 0, 0, i]), Event::LoginFailed);
        }
        assert_eq!(d.hosts().len(), 2);
        assert!(d.key_failure_is_new("s1"));
        assert!(!d.key_failure_is_new("s1"));
    }
}
