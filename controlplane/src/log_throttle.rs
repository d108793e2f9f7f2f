//! One warning per second at most for events an attacker can repeat at will
//! (refused connections, busy password slots): the first occurrence is
//! logged, later ones within the second are counted and reported with the
//! next line, so a flood cannot fill the disk through the log.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::store::now_ms;

/// Minimum time between two lines of one throttle.
const INTERVAL_MS: i64 = 1000;

#[derive(Default)]
pub struct LogThrottle {
    last_ms: AtomicI64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub const fn new() -> Self {
        Self {
            last_ms: AtomicI64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many events
    /// went unlogged since the last line; `None` when this one is only
    /// counted.
    pub fn admit(&self) -> Option<u64> {
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now - last >= INTERVAL_MS
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_then_counts() {
        let t = LogThrottle::new();
        assert_eq!(t.admit(), Some(0));
        assert_eq!(t.admit(), None);
        assert_eq!(t.admit(), None);
        t.last_ms.store(0, Ordering::Relaxed);
        assert_eq!(t.admit(), Some(2), "the next line reports what was skipped");
    }
}
