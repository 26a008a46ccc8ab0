//! Replicas: the face and voice, with their training state.

use sqlx::Row;

use super::{Db, DbError, now_us, rfc3339};

#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaRow {
    pub id: String,
    pub replica_name: String,
    pub status: String,
    pub training_progress: String,
    pub error_message: Option<String>,
    pub source_kind: String,
    pub source: String,
    pub voice_name: Option<String>,
    pub callback_url: Option<String>,
    pub stock: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// `SELECT <every column> FROM replicas <tail>`, as one static string.
macro_rules! select_replicas {
    ($tail:literal) => {
        concat!(
            "SELECT id, replica_name, status, training_progress, error_message, source_kind, source, voice_name, callback_url, stock, created_at, updated_at FROM replicas ",
            $tail
        )
    };
}

fn row(r: &sqlx::any::AnyRow) -> Result<ReplicaRow, DbError> {
    Ok(ReplicaRow {
        id: r.try_get("id")?,
        replica_name: r.try_get("replica_name")?,
        status: r.try_get("status")?,
        training_progress: r.try_get("training_progress")?,
        error_message: r.try_get("error_message")?,
        source_kind: r.try_get("source_kind")?,
        source: r.try_get("source")?,
        voice_name: r.try_get("voice_name")?,
        callback_url: r.try_get("callback_url")?,
        stock: r.try_get::<i32, _>("stock")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// What a new replica is made from.
#[derive(Debug, Clone)]
pub struct NewReplica<'a> {
    pub id: Option<&'a str>,
    pub replica_name: &'a str,
    pub status: &'a str,
    pub source_kind: &'a str,
    pub source: &'a str,
    pub voice_name: Option<&'a str>,
    pub callback_url: Option<&'a str>,
    pub stock: bool,
}

impl Db {
    pub async fn insert_replica(&self, new: NewReplica<'_>) -> Result<ReplicaRow, DbError> {
        let id = new.id.map(str::to_string).unwrap_or_else(|| crate::ids::new_id("r"));
        let now = rfc3339(now_us());
        sqlx::query(
            "INSERT INTO replicas (id, replica_name, status, training_progress, error_message, source_kind, source, voice_name, callback_url, stock, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(new.replica_name)
        .bind(new.status)
        .bind("0/100")
        .bind(new.source_kind)
        .bind(new.source)
        .bind(new.voice_name)
        .bind(new.callback_url)
        .bind(i32::from(new.stock))
        .bind(&now)
        .bind(&now)
        .execute(self.pool())
        .await?;
        self.replica(&id)
            .await?
            .ok_or_else(|| DbError::Corrupt { what: format!("replica {id}"), detail: "vanished after insert".into() })
    }

    pub async fn replica(&self, id: &str) -> Result<Option<ReplicaRow>, DbError> {
        let r = sqlx::query(select_replicas!("WHERE id = $1")).bind(id).fetch_optional(self.pool()).await?;
        r.as_ref().map(row).transpose()
    }

    pub async fn list_replicas(&self, limit: i64, offset: i64) -> Result<(Vec<ReplicaRow>, i64), DbError> {
        let rows = sqlx::query(select_replicas!("ORDER BY created_at DESC, id LIMIT $1 OFFSET $2"))
            .bind(limit)
            .bind(offset)
            .fetch_all(self.pool())
            .await?;
        let total: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM replicas").fetch_one(self.pool()).await?.try_get("n")?;
        Ok((rows.iter().map(row).collect::<Result<_, _>>()?, total))
    }

    pub async fn rename_replica(&self, id: &str, name: &str) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE replicas SET replica_name = $1, updated_at = $2 WHERE id = $3")
            .bind(name)
            .bind(rfc3339(now_us()))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records training progress or its end (`completed` / `error`).
    pub async fn set_replica_training(
        &self,
        id: &str,
        status: &str,
        progress: &str,
        error: Option<&str>,
    ) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE replicas SET status = $1, training_progress = $2, error_message = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(status)
        .bind(progress)
        .bind(error)
        .bind(rfc3339(now_us()))
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replicas whose training has not ended, oldest first.
    pub async fn replicas_in_training(&self) -> Result<Vec<String>, DbError> {
        let rows = sqlx::query("SELECT id FROM replicas WHERE status = 'started' ORDER BY created_at")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    pub async fn delete_replica(&self, id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM replicas WHERE id = $1").bind(id).execute(self.pool()).await?;
        Ok(done.rows_affected() == 1)
    }
}
