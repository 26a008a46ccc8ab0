//! API keys, stored as sha256 hashes: the key itself is shown once, at creation.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Db, DbError, now_us, rfc3339};

#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Db {
    /// Creates a key; returns its row and the secret (shown once).
    pub async fn create_api_key(&self, name: &str) -> Result<(ApiKeyRow, String), DbError> {
        let id = crate::ids::new_id("k");
        let secret = format!("tete_{}", crate::ids::random_token(24));
        let created_at = rfc3339(now_us());
        sqlx::query("INSERT INTO api_keys (id, name, key_hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(name)
            .bind(hash_key(&secret))
            .bind(&created_at)
            .execute(self.pool())
            .await?;
        Ok((ApiKeyRow { id, name: name.to_string(), created_at, revoked_at: None }, secret))
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRow>, DbError> {
        let rows = sqlx::query("SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY created_at, id")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKeyRow {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes a key by id; false when no such active key exists.
    pub async fn revoke_api_key(&self, id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(rfc3339(now_us()))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether `key` is an active (not revoked) key.
    pub async fn api_key_valid(&self, key: &str) -> Result<bool, DbError> {
        let row = sqlx::query("SELECT id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(hash_key(key))
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }
}

impl Db {
    /// The webhook signing secret shared by every host of this database,
    /// created by whichever host asks first.
    pub async fn webhook_secret(&self) -> Result<String, DbError> {
        sqlx::query(
            "INSERT INTO host_settings (name, value) VALUES ('webhook_secret', $1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(crate::ids::random_token(32))
        .execute(self.pool())
        .await?;
        Ok(sqlx::query("SELECT value FROM host_settings WHERE name = 'webhook_secret'")
            .fetch_one(self.pool())
            .await?
            .try_get("value")?)
    }
}
