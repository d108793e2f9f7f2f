//! Backups as `loaddata` reads them (`ferry loaddata`, `POST
//! /api/v2/loaddata`, the memory provider's file): JSON text, then
//! `ferry_controlplane::backup::prepare`, which checks every object with the
//! REST API's rules and converts it into rows. Nothing is written: no
//! database is involved. New passwords are hashed with the cheapest argon2id
//! parameters so a backup with clear passwords costs microseconds, not 64 MiB.
#![no_main]

use std::sync::LazyLock;

use ferry_controlplane::backup::{Mode, ScanQuota, prepare};
use ferry_controlplane::passwords::{Argon2Options, HashingConfig};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    HashingConfig {
        argon2_options: Argon2Options {
            memory: 8,
            iterations: 1,
            parallelism: 1,
        },
        max_concurrent: 2,
        max_wait_ms: 60_000,
        ..HashingConfig::default()
    }
    .install()
    .expect("cheap hashing settings are valid");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
});

fuzz_target!(|data: &[u8]| {
    let runtime = &*RUNTIME;
    if let Ok(text) = std::str::from_utf8(data) {
        let first = text.lines().next();
        let _ = Mode::parse(first);
        let _ = ScanQuota::parse(first);
    }
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match runtime.block_on(prepare(&doc)) {
        Ok(prepared) => {
            let plan = &prepared.plan;
            for u in &plan.users {
                assert!(
                    !u.data.username.is_empty(),
                    "a user without a name was accepted"
                );
            }
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
