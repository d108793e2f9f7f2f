//! Schema lifecycle: bring the database to this binary's schema version one
//! migration at a time (each in a transaction where the backend allows DDL in
//! transactions: SQLite and PostgreSQL), refuse a schema newer than the
//! binary, and hold a database-wide lock so two control planes starting at
//! once do not both migrate.

use std::collections::HashSet;

use diesel::RunQueryDsl;
use diesel::backend::Backend as DieselBackend;
use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use crate::store::DbConnection;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Advisory lock id used on PostgreSQL ("ferry" in ASCII).
const PG_LOCK_ID: i64 = 0x0066_6572_7279;
const MYSQL_LOCK_NAME: &str = "ferry_schema_migrations";
/// How long a starting control plane waits for another one's migration.
const MYSQL_LOCK_WAIT_SECS: i64 = 300;

const NEWER: &str = "the database schema is newer than this binary";

/// Applies pending migrations; returns the versions applied.
pub fn migrate(conn: &mut DbConnection) -> Result<Vec<String>, BoxError> {
    match conn {
        DbConnection::Sqlite(c) => {
            // SQLite has no advisory lock. Each migration is a transaction,
            // so of two control planes starting at once the loser of a step
            // fails it whole (its CREATE finds the winner's table, or its
            // snapshot is stale) and changes nothing; it then reads again
            // what is applied and goes on from there.
            let mut attempts = 0;
            loop {
                match apply(c, ferry_schema::SQLITE_MIGRATIONS) {
                    Ok(applied) => return Ok(applied),
                    Err(e) if e.to_string().contains(NEWER) => return Err(e),
                    Err(e) if attempts >= 10 => return Err(e),
                    Err(_) => attempts += 1,
                }
            }
        }
        DbConnection::Postgresql(c) => {
            c.batch_execute(&format!("SELECT pg_advisory_lock({PG_LOCK_ID})"))?;
            let result = apply(c, ferry_schema::POSTGRES_MIGRATIONS);
            let unlocked = c.batch_execute(&format!("SELECT pg_advisory_unlock({PG_LOCK_ID})"));
            let applied = result?;
            unlocked?;
            Ok(applied)
        }
        DbConnection::Mysql(c) => {
            #[derive(diesel::QueryableByName)]
            struct Locked {
                #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
                locked: Option<i64>,
            }
            let got: Locked = diesel::sql_query(format!(
                "SELECT GET_LOCK('{MYSQL_LOCK_NAME}', {MYSQL_LOCK_WAIT_SECS}) AS locked"
            ))
            .get_result(c)?;
            if got.locked != Some(1) {
                return Err(
                    "timed out waiting for another control plane's schema migration".into(),
                );
            }
            let result = apply(c, ferry_schema::MYSQL_MIGRATIONS);
            let unlocked = c.batch_execute(&format!("DO RELEASE_LOCK('{MYSQL_LOCK_NAME}')"));
            let applied = result?;
            unlocked?;
            Ok(applied)
        }
    }
}

fn apply<C, DB>(conn: &mut C, migrations: EmbeddedMigrations) -> Result<Vec<String>, BoxError>
where
    DB: DieselBackend,
    C: MigrationHarness<DB>,
    EmbeddedMigrations: MigrationSource<DB>,
{
    let known: HashSet<String> = MigrationSource::<DB>::migrations(&migrations)?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    let applied = conn.applied_migrations()?;
    if let Some(unknown) = applied.iter().find(|v| !known.contains(&v.to_string())) {
        return Err(format!(
            "{NEWER} (it has migration {unknown}, unknown here): \
             run a newer ferry, or restore a backup made with this version"
        )
        .into());
    }
    let done = conn.run_pending_migrations(migrations)?;
    Ok(done.iter().map(|v| v.to_string()).collect())
}
