//! Storage through sqlx's `Any` driver: SQLite embedded by default (a file
//! in `$TETE_HOME`), PostgreSQL for several hosts sharing state. The schema
//! (`server/migrations/`) and every query are written once for both.

pub mod conversations;
pub mod keys;
mod outbox;
mod personas;
pub mod replicas;

pub use conversations::{ConversationRow, EventRow, UtteranceRow};
pub use keys::ApiKeyRow;
pub use outbox::{OutboxRow, OutboxStatus};
pub use personas::PersonaRow;
pub use replicas::ReplicaRow;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL scheme {0:?}: use sqlite://PATH or postgres://…")]
    Url(String),
    #[error("stored {what} is damaged: {detail}")]
    Corrupt { what: String, detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool with the schema migrated.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Connects and runs pending migrations.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::Url(url.split(':').next().unwrap_or_default().to_string()));
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match backend {
            // SQLite: one writer at a time; WAL lets readers go on, and a busy
            // timeout makes a second writer wait instead of failing.
            Backend::Sqlite => {
                options
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => options.max_connections(8).connect(url).await?,
        };
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, backend })
    }

    /// The URL of the embedded SQLite database in a tete home folder.
    pub fn sqlite_url(home: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", home.join("tete.db").display())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a write transaction. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`): a deferred transaction that reads and then
    /// writes fails with "database is locked" when another writer got in
    /// between, where an immediate one waits its turn (busy timeout).
    pub async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, DbError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Current wall-clock time in microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// RFC 3339 with microseconds, UTC: `2026-02-10T21:15:09.860974Z`.
pub fn rfc3339(us: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

/// Runs a transaction again (up to 5 times) when it lost a race for a
/// unique key, e.g. two writers taking the same next sequence number.
pub(crate) async fn retry_on_conflict<T, F, Fut>(mut attempt: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(DbError::Sqlx(e)) if tries < 4 && e.as_database_error().is_some_and(|d| d.is_unique_violation()) => {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// The next sequence number of a subject, by a `SELECT COALESCE(MAX(seq), 0) + 1 AS n … = $1` query,
/// inside the caller's transaction (a race is caught by the primary key and [`retry_on_conflict`]).
pub(crate) async fn next_seq(
    conn: &mut sqlx::AnyConnection,
    sql: &'static str,
    subject_id: &str,
) -> Result<i64, DbError> {
    use sqlx::Row;
    Ok(sqlx::query(sql).bind(subject_id).fetch_one(conn).await?.try_get("n")?)
}

pub(crate) fn json_column<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, DbError> {
    serde_json::from_str(text).map_err(|e| DbError::Corrupt { what: what.to_string(), detail: e.to_string() })
}
