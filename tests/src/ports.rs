//! Ports for programs that must be told theirs in advance: HAProxy, OpenSSH's
//! sshd, emulators, and Ferry started from a configuration file (where port
//! 0 means "off"). Ferry started with flags never needs one: it binds port 0
//! and reports what it bound (`--addr-file`).
//!
//! Each test process owns a block of ports outside the kernel's ephemeral
//! range, so no port-0 bind and no outgoing connection on the machine is ever
//! given one of them. A block is claimed with an exclusive `flock` on its own
//! file in the temp directory: the test processes of every run on the machine
//! (parallel nextest runs of several engineers too) hold different blocks, and
//! the kernel releases a block when its process exits, however it exits. The
//! search starts at nextest's slot for this test, so concurrent tests of one
//! run rarely try the same lock. A port is checked free before it is handed
//! out (a program outside the tests may hold it); a program that still fails
//! to bind is started again on new ports ([`crate::start_on_claimed_ports`]).

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::OnceLock;

/// Ports per test process: the most a test starts (four HAProxy frontends,
/// four configured listeners) with room for retries.
const BLOCK_LEN: u16 = 32;
/// Lowest port handed out: above the well-known and usual service ports of
/// this machine kind (databases, 8080, 10000).
const LOWEST: u16 = 20000;
/// Fewest blocks worth using: below that, tests would wait on each other.
const MIN_BLOCKS: u16 = 16;

struct Block {
    /// Held for the life of the process: the lock is the claim.
    _lock: File,
    first: u16,
    /// Offset of the next port to try.
    next: Mutex<u16>,
}

static BLOCK: OnceLock<Block> = OnceLock::new();

/// The kernel's ephemeral port range (`ip_local_port_range`).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// The ports blocks come from: the larger gap beside the ephemeral range,
/// as `(first port, number of blocks)`.
fn block_range() -> (u16, u16) {
    let (low, high) = ephemeral_range();
    let below = (LOWEST, low.saturating_sub(LOWEST) / BLOCK_LEN);
    let above_first = high.saturating_add(1).max(LOWEST);
    let above = (above_first, (u16::MAX - above_first) / BLOCK_LEN);
    let best = if below.1 >= above.1 { below } else { above };
    assert!(
        best.1 >= MIN_BLOCKS,
        "no room for test ports outside the ephemeral port range {low}-{high}"
    );
    best
}

/// Where this process starts looking for a free block.
fn start_hint(blocks: u16) -> u16 {
    let slot = std::env::var("NEXTEST_TEST_GLOBAL_SLOT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    // Several runs at once (other engineers, CI) start at different places.
    let run = std::env::var("NEXTEST_RUN_ID").map_or(0, |id| {
        id.bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
    });
    let seed = match slot {
        Some(slot) => run.wrapping_add(slot),
        None => u64::from(std::process::id()),
    };
    u16::try_from(seed % u64::from(blocks)).expect("below the block count")
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("ferry-test-ports")
}

fn claim_block() -> Block {
    let (first_port, blocks) = block_range();
    let dir = lock_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let start = start_hint(blocks);
    for i in 0..blocks {
        let index = (start + i) % blocks;
        let Ok(file) = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("block-{index}")))
        else {
            continue;
        };
        if file.try_lock().is_ok() {
            return Block {
                _lock: file,
                first: first_port + index * BLOCK_LEN,
                next: Mutex::new(0),
            };
        }
    }
    panic!(
        "every one of the {blocks} test port blocks is held by another process (locks in {})",
        dir.display()
    );
}

/// True when nothing listens on `port` on loopback now.
fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port of this test process's own block that is free now, for a program
/// that must be told its port in advance. Successive calls give different
/// ports until the block wraps around.
pub fn claim_port() -> u16 {
    let block = BLOCK.get_or_init(claim_block);
    let mut next = block.next.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..BLOCK_LEN {
        let port = block.first + *next;
        *next = (*next + 1) % BLOCK_LEN;
        if is_free(port) {
            return port;
        }
    }
    panic!(
        "no free port left in this test's block {}-{}",
        block.first,
        block.first + BLOCK_LEN - 1
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_ports_are_distinct_free_and_outside_the_ephemeral_range() {
        let (low, high) = ephemeral_range();
        let ports: Vec<u16> = (0..8).map(|_| claim_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!(
                !(low..=high).contains(&p),
                "{p} is ephemeral ({low}-{high})"
            );
            assert!(p >= LOWEST);
        }
        // The block is this process's: another lock on it is refused.
        let block = BLOCK.get().unwrap();
        let index = (block.first - block_range().0) / BLOCK_LEN;
        let other = File::options()
            .write(true)
            .open(lock_dir().join(format!("block-{index}")))
            .unwrap();
        assert!(other.try_lock().is_err());
    }
}
