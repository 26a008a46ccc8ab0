//! Personas, stored as their JSON document (secrets included; the API redacts them).

use sqlx::Row;

use super::{Db, DbError, json_column, now_us, rfc3339};

#[derive(Debug, Clone)]
pub struct PersonaRow {
    pub id: String,
    pub document: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}

fn row(r: &sqlx::any::AnyRow) -> Result<PersonaRow, DbError> {
    let id: String = r.try_get("id")?;
    let text: String = r.try_get("document")?;
    Ok(PersonaRow {
        document: json_column(&text, &format!("persona {id}"))?,
        id,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Db {
    pub async fn insert_persona(&self, document: &serde_json::Value) -> Result<PersonaRow, DbError> {
        let id = crate::ids::new_id("p");
        let now = rfc3339(now_us());
        sqlx::query("INSERT INTO personas (id, document, created_at, updated_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(document.to_string())
            .bind(&now)
            .bind(&now)
            .execute(self.pool())
            .await?;
        Ok(PersonaRow { id, document: document.clone(), created_at: now.clone(), updated_at: now })
    }

    pub async fn persona(&self, id: &str) -> Result<Option<PersonaRow>, DbError> {
        let r = sqlx::query("SELECT id, document, created_at, updated_at FROM personas WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        r.as_ref().map(row).transpose()
    }

    pub async fn list_personas(&self, limit: i64, offset: i64) -> Result<(Vec<PersonaRow>, i64), DbError> {
        let rows = sqlx::query(
            "SELECT id, document, created_at, updated_at FROM personas ORDER BY created_at DESC, id LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(self.pool())
        .await?;
        let total: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM personas").fetch_one(self.pool()).await?.try_get("n")?;
        Ok((rows.iter().map(row).collect::<Result<_, _>>()?, total))
    }

    /// Replaces a persona's document if `expected` is still the stored one
    /// (optimistic concurrency: two patches at once cannot lose one).
    pub async fn replace_persona(
        &self,
        id: &str,
        expected: &serde_json::Value,
        document: &serde_json::Value,
    ) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE personas SET document = $1, updated_at = $2 WHERE id = $3 AND document = $4")
            .bind(document.to_string())
            .bind(rfc3339(now_us()))
            .bind(id)
            .bind(expected.to_string())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_persona(&self, id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("DELETE FROM personas WHERE id = $1").bind(id).execute(self.pool()).await?;
        Ok(done.rows_affected() == 1)
    }
}
