//! API keys: `sk-` followed by 48 hex digits, stored as a SHA-256 hash. Keys carry 192 random
//! bits, so a fast hash is enough; a slow password hash would add latency to every request.

use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use crate::db::{Db, now_ms};
use crate::ids::{AccountId, KeyId, random_hex};

#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub key_id: KeyId,
    /// The secret itself; never stored, shown once.
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub key_id: KeyId,
    pub account_id: AccountId,
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub(super) async fn issue_in(tx: &mut Transaction<'_, Any>, account: &AccountId) -> Result<IssuedKey, sqlx::Error> {
    let key = format!("sk-{}", random_hex::<24>());
    let key_id = KeyId::generate();
    let hint = format!("sk-…{}", &key[key.len() - 4..]);
    sqlx::query("INSERT INTO api_keys (id, account_id, key_hash, key_hint, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(key_id.as_str())
        .bind(account.as_str())
        .bind(hash(&key))
        .bind(hint)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(IssuedKey { key_id, key })
}

pub(super) async fn lookup(db: &Db, presented: &str) -> Result<Option<ApiKey>, super::AccountError> {
    if !presented.starts_with("sk-") || presented.len() > 128 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT id, account_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .bind(hash(presented))
        .fetch_optional(&db.read)
        .await?;
    row.map(|r| {
        Ok(ApiKey {
            key_id: KeyId::from_db(r.try_get("id")?),
            account_id: AccountId::from_db(r.try_get("account_id")?),
        })
    })
    .transpose()
}
