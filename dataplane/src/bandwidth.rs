//! Bandwidth limits as token buckets, one per user, direction and limit on
//! this edge: every connection of a user draws from the same bucket, so
//! opening more channels does not multiply the limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

/// Largest burst a bucket saves up: a tenth of a second of its rate, so a
/// transfer's average never beats the limit by more than that.
const BURST: Duration = Duration::from_millis(100);

pub struct TokenBucket {
    /// Bytes per second.
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A bucket for `kbps` KB/s (SFTPGo's unit: 1 KB = 1024 bytes); starts
    /// empty, so a transfer never starts with a free burst.
    pub fn new(kbps: i64) -> Self {
        Self {
            rate: kbps.max(1) as f64 * 1024.0,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Takes `n` bytes' worth of tokens, sleeping while the bucket is in debt.
    pub async fn consume(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let cap = self.rate * BURST.as_secs_f64();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(cap) - n as f64;
            s.1 = now;
            if s.0 < 0.0 {
                Duration::from_secs_f64(-s.0 / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The buckets of this edge, shared while any connection uses them.
#[derive(Default)]
pub struct Buckets {
    map: Mutex<HashMap<(String, bool, i64), Weak<TokenBucket>>>,
}

impl Buckets {
    /// The bucket for `username`'s uploads (`upload`) or downloads at
    /// `kbps`; None when unlimited (0).
    pub fn get(&self, username: &str, upload: bool, kbps: i64) -> Option<Arc<TokenBucket>> {
        if kbps <= 0 {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        let key = (username.to_string(), upload, kbps);
        if let Some(b) = map.get(&key).and_then(Weak::upgrade) {
            return Some(b);
        }
        let b = Arc::new(TokenBucket::new(kbps));
        map.insert(key, Arc::downgrade(&b));
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_paces_to_its_rate() {
        let b = TokenBucket::new(100);
        let start = tokio::time::Instant::now();
        for _ in 0..10 {
            b.consume(100 * 1024).await;
        }
        // 1000 KB at 100 KB/s: ten seconds (the bucket starts empty).
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(10), "{took:?}");
        assert!(took < Duration::from_millis(10_050), "{took:?}");
    }

    #[test]
    fn buckets_are_shared_per_user_and_limit() {
        let buckets = Buckets::default();
        let a = buckets.get("u", true, 10).unwrap();
        let b = buckets.get("u", true, 10).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &buckets.get("u", false, 10).unwrap()));
        assert!(buckets.get("u", true, 0).is_none());
    }
}
