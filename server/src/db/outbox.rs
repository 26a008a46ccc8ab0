//! The webhook outbox and the per-conversation event log. An event is
//! recorded in one transaction: in the event log (for `?verbose=true`) and,
//! when there is a callback URL, in the outbox that the deliverer drains.

use sqlx::Row;

use super::{Db, DbError, now_us, rfc3339};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    Pending,
    Delivered,
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// Also the delivery id receivers de-duplicate by.
    pub id: String,
    pub subject_id: String,
    pub seq: i64,
    pub url: String,
    pub event_type: String,
    pub body: String,
    pub status: String,
    pub attempts: i32,
    pub created_us: i64,
    pub next_attempt_us: i64,
    pub last_error: Option<String>,
    /// When the first attempt was made (None before it).
    pub first_attempt_us: Option<i64>,
}

fn row(r: &sqlx::any::AnyRow) -> Result<OutboxRow, DbError> {
    Ok(OutboxRow {
        id: r.try_get("id")?,
        subject_id: r.try_get("subject_id")?,
        seq: r.try_get("seq")?,
        url: r.try_get("url")?,
        event_type: r.try_get("event_type")?,
        body: r.try_get("body")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        created_us: r.try_get("created_us")?,
        next_attempt_us: r.try_get("next_attempt_us")?,
        last_error: r.try_get("last_error")?,
        first_attempt_us: r.try_get("first_attempt_us")?,
    })
}

impl Db {
    /// Records an event of a conversation (or replica) and queues its webhook.
    /// `body` is the full webhook envelope.
    pub async fn record_event(
        &self,
        subject_id: &str,
        log_in_conversation: bool,
        event_type: &str,
        body: &serde_json::Value,
        url: Option<&str>,
    ) -> Result<(), DbError> {
        super::retry_on_conflict(|| async {
            let mut tx = self.write_tx().await?;
            insert_event(&mut tx, subject_id, log_in_conversation, event_type, body, url).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Pending deliveries due at `now_us`, at most one per subject: the
    /// oldest pending one, so a subject's events arrive in order.
    pub async fn due_deliveries(&self, now_us: i64, limit: i64) -> Result<Vec<OutboxRow>, DbError> {
        let rows = sqlx::query(
            "SELECT o.id, o.subject_id, o.seq, o.url, o.event_type, o.body, o.status, o.attempts, o.created_us, o.next_attempt_us, o.last_error, o.first_attempt_us \
             FROM webhook_outbox o WHERE o.status = 'pending' AND o.next_attempt_us <= $1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.subject_id = o.subject_id AND p.status = 'pending' AND p.seq < o.seq) \
             ORDER BY o.created_us, o.seq LIMIT $2",
        )
        .bind(now_us)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(row).collect()
    }

    /// The earliest time a pending delivery falls due, if any.
    pub async fn next_delivery_us(&self) -> Result<Option<i64>, DbError> {
        // Only the oldest pending event of each subject can be sent next: a
        // later one waiting behind it must not make the deliverer wake early.
        let r = sqlx::query(
            "SELECT MIN(o.next_attempt_us) AS t FROM webhook_outbox o WHERE o.status = 'pending' \
             AND NOT EXISTS (SELECT 1 FROM webhook_outbox p WHERE p.subject_id = o.subject_id AND p.status = 'pending' AND p.seq < o.seq)",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(r.try_get::<Option<i64>, _>("t")?)
    }

    /// Claims a delivery for `lease_us` (so another host, or this one after
    /// a crash, retries it only once the lease has run out). False when
    /// someone else claimed it first.
    pub async fn claim_delivery(&self, row: &OutboxRow, until_us: i64) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE webhook_outbox SET next_attempt_us = $1, attempts = attempts + 1, first_attempt_us = COALESCE(first_attempt_us, $2) \
             WHERE id = $3 AND status = 'pending' AND next_attempt_us = $4",
        )
        .bind(until_us)
        .bind(now_us())
        .bind(&row.id)
        .bind(row.next_attempt_us)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delivery_succeeded(&self, id: &str) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE webhook_outbox SET status = 'delivered', delivered_us = $1, last_error = NULL WHERE id = $2 AND status = 'pending'",
        )
        .bind(now_us())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `next_us`, or (None) given up.
    pub async fn delivery_failed(&self, id: &str, error: &str, next_us: Option<i64>) -> Result<(), DbError> {
        match next_us {
            Some(next) => sqlx::query(
                "UPDATE webhook_outbox SET next_attempt_us = $1, last_error = $2 WHERE id = $3 AND status = 'pending'",
            )
            .bind(next)
            .bind(error)
            .bind(id)
            .execute(self.pool())
            .await?,
            None => {
                sqlx::query(
                    "UPDATE webhook_outbox SET status = 'failed', last_error = $1 WHERE id = $2 AND status = 'pending'",
                )
                .bind(error)
                .bind(id)
                .execute(self.pool())
                .await?
            }
        };
        Ok(())
    }

    /// Deliveries, newest first, optionally of one status and/or subject.
    pub async fn deliveries(
        &self,
        status: Option<OutboxStatus>,
        subject_id: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<OutboxRow>, i64), DbError> {
        let status = status.map(OutboxStatus::as_str);
        let rows = sqlx::query(
            "SELECT id, subject_id, seq, url, event_type, body, status, attempts, created_us, next_attempt_us, last_error, first_attempt_us FROM webhook_outbox \
             WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR subject_id = $2) ORDER BY created_us DESC, seq DESC LIMIT $3 OFFSET $4",
        )
        .bind(status)
        .bind(subject_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        let total: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM webhook_outbox WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR subject_id = $2)",
        )
        .bind(status)
        .bind(subject_id)
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        Ok((rows.iter().map(row).collect::<Result<_, _>>()?, total))
    }
}

/// Inserts an event into the log and, with a URL, into the outbox, inside
/// the caller's transaction.
pub(crate) async fn insert_event(
    conn: &mut sqlx::AnyConnection,
    subject_id: &str,
    log_in_conversation: bool,
    event_type: &str,
    body: &serde_json::Value,
    url: Option<&str>,
) -> Result<(), DbError> {
    let us = now_us();
    let text = body.to_string();
    if log_in_conversation {
        let seq = super::next_seq(
            conn,
            "SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM conversation_events WHERE conversation_id = $1",
            subject_id,
        )
        .await?;
        sqlx::query(
            "INSERT INTO conversation_events (conversation_id, seq, event_type, document, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(subject_id)
        .bind(seq)
        .bind(event_type)
        .bind(&text)
        .bind(rfc3339(us))
        .execute(&mut *conn)
        .await?;
    }
    if let Some(url) = url {
        let seq = super::next_seq(
            conn,
            "SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM webhook_outbox WHERE subject_id = $1",
            subject_id,
        )
        .await?;
        sqlx::query(
            "INSERT INTO webhook_outbox (id, subject_id, seq, url, event_type, body, status, attempts, created_us, next_attempt_us) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8)",
        )
        .bind(crate::ids::new_id("d"))
        .bind(subject_id)
        .bind(seq)
        .bind(url)
        .bind(event_type)
        .bind(&text)
        .bind(us)
        .bind(us)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
