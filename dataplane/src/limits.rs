//! Connection limits of one edge (SFTPGo's `common.max_total_connections`
//! and `common.max_per_host_connections`): a connection holds a [`Slot`]
//! from the moment its client address is known (after the PROXY header)
//! until it ends; one over a limit is closed before the SSH handshake.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The limits and what holds them now.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// 0: unlimited.
    total: u32,
    /// 0: unlimited.
    per_host: u32,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: u32,
    hosts: HashMap<IpAddr, u32>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total(u32),
    PerHost(u32),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Total(n) => write!(f, "too many connections ({n}, max_total_connections)"),
            Refusal::PerHost(n) => write!(
                f,
                "too many connections from this address ({n}, max_per_host_connections)"
            ),
        }
    }
}

/// A connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(total: u32, per_host: u32) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_host,
            held: Mutex::new(Held::default()),
        })
    }

    /// Takes a place for a connection from `ip`, or says which limit it is
    /// over.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if self.total > 0 && held.total >= self.total {
            return Err(Refusal::Total(self.total));
        }
        let from_host = held.hosts.get(&ip).copied().unwrap_or(0);
        if self.per_host > 0 && from_host >= self.per_host {
            return Err(Refusal::PerHost(self.per_host));
        }
        held.total += 1;
        held.hosts.insert(ip, from_host + 1);
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.limits.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.hosts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.hosts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_and_free_places() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let limits = ConnectionLimits::new(3, 2);
        let a1 = limits.acquire(a).unwrap();
        let _a2 = limits.acquire(a).unwrap();
        assert_eq!(limits.acquire(a).unwrap_err(), Refusal::PerHost(2));
        let _b1 = limits.acquire(b).unwrap();
        assert_eq!(limits.acquire(c).unwrap_err(), Refusal::Total(3));
        drop(a1);
        let _c1 = limits.acquire(c).unwrap();
        assert!(limits.acquire(a).is_err());
        let unlimited = ConnectionLimits::new(0, 0);
        let many: Vec<Slot> = (0..100).map(|_| unlimited.acquire(a).unwrap()).collect();
        drop(many);
        assert!(unlimited.held.lock().unwrap().hosts.is_empty());
    }
}
