//! Conversations, their transcript (utterances) and their event log.

use sqlx::Row;

use super::{Db, DbError, json_column, now_us, retry_on_conflict, rfc3339};

#[derive(Debug, Clone)]
pub struct ConversationRow {
    pub id: String,
    /// The create request as accepted (with defaults filled in).
    pub document: serde_json::Value,
    pub status: String,
    pub replica_id: Option<String>,
    pub persona_id: Option<String>,
    pub callback_url: Option<String>,
    pub meeting_token_hash: Option<String>,
    pub created_at: String,
    pub created_us: i64,
    pub ended_at: Option<String>,
    pub shutdown_reason: Option<String>,
    /// The host that runs the conversation (several hosts may share a database).
    pub host: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UtteranceRow {
    pub seq: i64,
    pub role: String,
    pub content: String,
    pub started_at: String,
    pub ended_at: String,
    pub interrupted: bool,
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: i64,
    pub event_type: String,
    pub document: serde_json::Value,
    pub created_at: String,
}

/// `SELECT <every column> FROM conversations <tail>`, as one static string.
macro_rules! select_conversations {
    ($tail:literal) => {
        concat!(
            "SELECT id, document, status, replica_id, persona_id, callback_url, meeting_token_hash, created_at, created_us, ended_at, shutdown_reason, host FROM conversations ",
            $tail
        )
    };
}

fn row(r: &sqlx::any::AnyRow) -> Result<ConversationRow, DbError> {
    let id: String = r.try_get("id")?;
    let text: String = r.try_get("document")?;
    Ok(ConversationRow {
        document: json_column(&text, &format!("conversation {id}"))?,
        id,
        status: r.try_get("status")?,
        replica_id: r.try_get("replica_id")?,
        persona_id: r.try_get("persona_id")?,
        callback_url: r.try_get("callback_url")?,
        meeting_token_hash: r.try_get("meeting_token_hash")?,
        created_at: r.try_get("created_at")?,
        created_us: r.try_get("created_us")?,
        ended_at: r.try_get("ended_at")?,
        shutdown_reason: r.try_get("shutdown_reason")?,
        host: r.try_get("host")?,
    })
}

/// A new conversation.
#[derive(Debug, Clone)]
pub struct NewConversation<'a> {
    pub document: &'a serde_json::Value,
    pub replica_id: Option<&'a str>,
    pub persona_id: Option<&'a str>,
    pub callback_url: Option<&'a str>,
    pub meeting_token_hash: Option<&'a str>,
    pub host: &'a str,
}

impl Db {
    pub async fn insert_conversation(&self, new: NewConversation<'_>) -> Result<ConversationRow, DbError> {
        let id = crate::ids::new_id("c");
        let us = now_us();
        sqlx::query(
            "INSERT INTO conversations (id, document, status, replica_id, persona_id, callback_url, meeting_token_hash, created_at, created_us, host) \
             VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(new.document.to_string())
        .bind(new.replica_id)
        .bind(new.persona_id)
        .bind(new.callback_url)
        .bind(new.meeting_token_hash)
        .bind(rfc3339(us))
        .bind(us)
        .bind(new.host)
        .execute(self.pool())
        .await?;
        self.conversation(&id).await?.ok_or_else(|| DbError::Corrupt {
            what: format!("conversation {id}"),
            detail: "vanished after insert".into(),
        })
    }

    pub async fn conversation(&self, id: &str) -> Result<Option<ConversationRow>, DbError> {
        let r = sqlx::query(select_conversations!("WHERE id = $1")).bind(id).fetch_optional(self.pool()).await?;
        r.as_ref().map(row).transpose()
    }

    pub async fn list_conversations(&self, limit: i64, offset: i64) -> Result<(Vec<ConversationRow>, i64), DbError> {
        let rows = sqlx::query(select_conversations!("ORDER BY created_us DESC, id LIMIT $1 OFFSET $2"))
            .bind(limit)
            .bind(offset)
            .fetch_all(self.pool())
            .await?;
        let total: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM conversations").fetch_one(self.pool()).await?.try_get("n")?;
        Ok((rows.iter().map(row).collect::<Result<_, _>>()?, total))
    }

    /// Active conversations of any host, oldest first, at most `limit`.
    pub async fn all_active_conversations(&self, limit: i64) -> Result<Vec<ConversationRow>, DbError> {
        let rows = sqlx::query(select_conversations!("WHERE status = 'active' ORDER BY created_us LIMIT $1"))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(row).collect()
    }

    /// Active conversations run by `host`, oldest first (resumed at start-up).
    pub async fn active_conversations(&self, host: &str) -> Result<Vec<ConversationRow>, DbError> {
        let rows = sqlx::query(select_conversations!("WHERE status = 'active' AND host = $1 ORDER BY created_us"))
            .bind(host)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(row).collect()
    }

    /// Marks a conversation ended and records its end-of-call events, in
    /// one transaction: false (and nothing recorded) when it had already
    /// ended, so every end emits its webhooks exactly once.
    pub async fn end_conversation(
        &self,
        id: &str,
        reason: &str,
        events: &[(&str, serde_json::Value)],
        url: Option<&str>,
    ) -> Result<bool, DbError> {
        retry_on_conflict(|| self.try_end_conversation(id, reason, events, url)).await
    }

    async fn try_end_conversation(
        &self,
        id: &str,
        reason: &str,
        events: &[(&str, serde_json::Value)],
        url: Option<&str>,
    ) -> Result<bool, DbError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE conversations SET status = 'ended', ended_at = $1, shutdown_reason = $2 WHERE id = $3 AND status = 'active'",
        )
        .bind(rfc3339(now_us()))
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        for (event_type, body) in events {
            super::outbox::insert_event(&mut tx, id, true, event_type, body, url).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Whether `token` opens conversation `id`: true when the conversation
    /// requires no auth, or the token matches its meeting token.
    pub async fn meeting_token_ok(&self, id: &str, token: Option<&str>) -> Result<bool, DbError> {
        let Some(row) = self.conversation(id).await? else { return Ok(false) };
        Ok(match (row.meeting_token_hash.as_deref(), token) {
            (None, _) => true,
            (Some(hash), Some(token)) => {
                let given = super::keys::hash_key(token);
                given.len() == hash.len() && given.bytes().zip(hash.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
            }
            (Some(_), None) => false,
        })
    }

    pub async fn delete_conversation(&self, id: &str) -> Result<bool, DbError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM utterances WHERE conversation_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM conversation_events WHERE conversation_id = $1").bind(id).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM conversations WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Appends an utterance to a transcript as it happens.
    pub async fn append_utterance(&self, conversation_id: &str, u: &UtteranceRow) -> Result<i64, DbError> {
        retry_on_conflict(|| async {
            let mut tx = self.write_tx().await?;
            let seq = super::next_seq(&mut tx, "SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM utterances WHERE conversation_id = $1", conversation_id).await?;
            sqlx::query(
                "INSERT INTO utterances (conversation_id, seq, role, content, started_at, ended_at, interrupted) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(conversation_id)
            .bind(seq)
            .bind(&u.role)
            .bind(&u.content)
            .bind(&u.started_at)
            .bind(&u.ended_at)
            .bind(i32::from(u.interrupted))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(seq)
        })
        .await
    }

    pub async fn utterances(&self, conversation_id: &str) -> Result<Vec<UtteranceRow>, DbError> {
        let rows = sqlx::query(
            "SELECT seq, role, content, started_at, ended_at, interrupted FROM utterances WHERE conversation_id = $1 ORDER BY seq",
        )
        .bind(conversation_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UtteranceRow {
                    seq: r.try_get("seq")?,
                    role: r.try_get("role")?,
                    content: r.try_get("content")?,
                    started_at: r.try_get("started_at")?,
                    ended_at: r.try_get("ended_at")?,
                    interrupted: r.try_get::<i32, _>("interrupted")? != 0,
                })
            })
            .collect()
    }

    pub async fn events(&self, conversation_id: &str) -> Result<Vec<EventRow>, DbError> {
        let rows = sqlx::query(
            "SELECT seq, event_type, document, created_at FROM conversation_events WHERE conversation_id = $1 ORDER BY seq",
        )
        .bind(conversation_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("document")?;
                Ok(EventRow {
                    seq: r.try_get("seq")?,
                    event_type: r.try_get("event_type")?,
                    document: json_column(&text, "conversation event")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }
}
