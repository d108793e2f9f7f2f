//! Store benchmark, run on demand (not a test): the login path's user read
//! and the quota path's counter update on the embedded backends, each in a
//! fresh temp directory, printed as operations per second and as a ratio to
//! SQLite measured in the same run.
//!
//!     cargo run -p ferry-controlplane --example store_bench [OPS]
//!
//! PostgreSQL/MariaDB are left out: their figures measure the server and the
//! network stack more than Ferry.

use std::time::Instant;

use ferry_controlplane::provider::DataProviderConfig;
use ferry_controlplane::store::{Store, UserData};

const TASKS: usize = 8;

fn user(name: &str) -> UserData {
    UserData {
        password: Some("$argon2id$v=19$m=65536,t=1,p=2$c2FsdHNhbHQ$aGFzaA".into()),
        ..UserData::new(name, &format!("/srv/{name}"))
    }
}

/// Runs `ops` calls of `f` spread over TASKS tasks; operations per second.
async fn rate<F, Fut>(store: &Store, ops: usize, f: F) -> f64
where
    F: Fn(Store, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (s, f) = (store.clone(), f.clone());
            tokio::spawn(async move {
                for i in (t..ops).step_by(TASKS) {
                    f(s.clone(), i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let ops: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2000);
    let mut baseline: Option<(f64, f64)> = None;
    println!(
        "backend   user reads/s  (vs sqlite)   quota updates/s  (vs sqlite)   [{ops} ops, {TASKS} tasks]"
    );
    for driver in ["sqlite", "redb", "memory"] {
        let dir = tempfile::tempdir()?;
        let cfg = DataProviderConfig {
            driver: driver.into(),
            ..Default::default()
        };
        let store = Store::open(&cfg, dir.path())?;
        for i in 0..100 {
            store.add_user(user(&format!("u{i}")), vec![]).await?;
        }
        let reads = rate(&store, ops, |s, i| async move {
            s.user(format!("u{}", i % 100)).await.expect("read");
        })
        .await;
        let writes = rate(&store, ops, |s, i| async move {
            s.add_quota_usage(format!("u{}", i % 100), 4096, 1, 0)
                .await
                .expect("update");
        })
        .await;
        let (r0, w0) = *baseline.get_or_insert((reads, writes));
        println!(
            "{driver:<8} {reads:>13.0}  ({:>5.2}x)     {writes:>15.0}  ({:>5.2}x)",
            reads / r0,
            writes / w0
        );
    }
    Ok(())
}
