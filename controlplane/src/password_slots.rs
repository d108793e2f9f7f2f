//! Bounds the memory and CPU password hashing may take at once. Every hash
//! computation — password logins of every kind, REST tokens and API keys, the
//! dummy check run for unknown names, new hashes — holds slots of one
//! semaphore while it runs. A slot is sized for one hash with the configured
//! argon2 memory; a stored hash that needs more (an imported argon2 hash with
//! a larger `m`, yescrypt) takes as many slots as its memory needs, so the
//! peak is `slots × slot size` whatever the hashes are.
//!
//! Verifications wait at most `max_wait_ms` for their slots and then fail
//! fast with [`Busy`]: a flood of bad logins is refused rather than queued.
//! Hashing a new password (an admin's request, an upgrade after a login)
//! waits longer ([`HASH_WAIT`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long hashing a new password may wait for a slot.
pub const HASH_WAIT: Duration = Duration::from_secs(30);
/// Share of the memory available at start that hashing may use when the
/// slot count is automatic.
const MEMORY_SHARE: u64 = 4;
/// Upper bound of the automatic slot count.
const MAX_AUTO_SLOTS: u64 = 64;

/// All slots were taken for longer than the wait allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many password checks in progress (data_provider.password_hashing.max_concurrent): try again shortly"
)]
pub struct Busy;

/// Why no permit was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot stayed taken for the whole wait.
    Busy,
    /// The hash needs more memory than all slots together.
    TooLarge,
}

pub struct HashSlots {
    semaphore: Arc<Semaphore>,
    slots: u32,
    slot_bytes: u64,
    /// How long a verification waits for its slots.
    pub max_wait: Duration,
}

impl HashSlots {
    /// `slots` slots of `slot_bytes` each (at least one slot and 1 MiB).
    pub fn new(slots: u32, slot_bytes: u64, max_wait: Duration) -> Self {
        let slots = slots.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(slots as usize)),
            slots,
            slot_bytes: slot_bytes.max(1 << 20),
            max_wait,
        }
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    pub fn slot_bytes(&self) -> u64 {
        self.slot_bytes
    }

    /// Slots needed by a hash computation using `bytes` of memory.
    fn permits_for(&self, bytes: u64) -> Option<u32> {
        let n = bytes.div_ceil(self.slot_bytes).max(1);
        u32::try_from(n).ok().filter(|n| *n <= self.slots)
    }

    /// Takes the slots a computation of `bytes` needs, waiting at most
    /// `wait`. The permit is moved into the blocking task that computes, so
    /// the slots stay taken until the computation really ends (even when
    /// the request that asked for it is gone).
    pub async fn acquire(
        &self,
        bytes: u64,
        wait: Duration,
    ) -> Result<OwnedSemaphorePermit, Refusal> {
        let permits = self.permits_for(bytes).ok_or(Refusal::TooLarge)?;
        match tokio::time::timeout(wait, self.semaphore.clone().acquire_many_owned(permits)).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; a timeout is the only refusal.
            Ok(Err(_)) | Err(_) => Err(Refusal::Busy),
        }
    }

    /// Slots in use now.
    pub fn in_use(&self) -> u32 {
        self.slots
            .saturating_sub(self.semaphore.available_permits() as u32)
    }
}

/// The automatic slot count: one per CPU, lowered so that the slots fit in a
/// quarter of the memory available now (the cgroup's limit when lower).
pub fn automatic_slots(slot_bytes: u64) -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let by_memory = available_memory()
        .map(|m| m / MEMORY_SHARE / slot_bytes.max(1))
        .unwrap_or(cpus);
    cpus.min(by_memory).clamp(1, MAX_AUTO_SLOTS) as u32
}

/// Memory available to this process: the kernel's `MemAvailable`, or what
/// is left under the cgroup's limit when that is lower.
fn available_memory() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let number = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
    let meminfo = read("/proc/meminfo").and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    // cgroup v2, then v1 (whose "no limit" is a huge number).
    let cgroup = match number(read("/sys/fs/cgroup/memory.max")) {
        Some(max) => {
            Some(max.saturating_sub(number(read("/sys/fs/cgroup/memory.current")).unwrap_or(0)))
        }
        None => number(read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
            .filter(|max| *max < 1 << 60)
            .map(|max| {
                max.saturating_sub(
                    number(read("/sys/fs/cgroup/memory/memory.usage_in_bytes")).unwrap_or(0),
                )
            }),
    };
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_bound_concurrency_and_large_hashes_take_more() {
        let slots = HashSlots::new(2, 64 << 20, Duration::from_millis(50));
        let a = slots.acquire(64 << 20, slots.max_wait).await.unwrap();
        let b = slots.acquire(1, slots.max_wait).await.unwrap();
        assert_eq!(slots.in_use(), 2);
        assert_eq!(
            slots.acquire(1, slots.max_wait).await.unwrap_err(),
            Refusal::Busy,
            "a third waits, then fails fast"
        );
        drop((a, b));
        let big = slots.acquire(100 << 20, slots.max_wait).await.unwrap();
        assert_eq!(slots.in_use(), 2, "a 100 MiB hash takes both 64 MiB slots");
        drop(big);
        assert_eq!(
            slots.acquire(200 << 20, slots.max_wait).await.unwrap_err(),
            Refusal::TooLarge
        );
    }

    #[test]
    fn automatic_count_is_positive_and_bounded() {
        let n = automatic_slots(64 << 20);
        assert!((1..=MAX_AUTO_SLOTS as u32).contains(&n));
        assert_eq!(automatic_slots(u64::MAX), 1, "memory lowers the count");
    }
}
