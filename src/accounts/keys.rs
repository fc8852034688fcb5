//! API keys: `sk-` followed by 48 hex digits, stored as a SHA-256 hash. Keys carry 192 random
//! bits, so a fast hash is enough; a slow password hash would add latency to every request.

use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use super::key_cache::KeyCache;
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

/// The active key `presented` names: from `cache` if it was seen a moment ago, else from the
/// database (and then cached).
pub(super) async fn lookup(db: &Db, cache: &KeyCache, presented: &str) -> Result<Option<ApiKey>, super::AccountError> {
    if !presented.starts_with("sk-") || presented.len() > 128 {
        return Ok(None);
    }
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    if let Some(key) = cache.get(&digest) {
        return Ok(Some(key));
    }
    let row = sqlx::query("SELECT id, account_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
        .bind(hex::encode(digest))
        .fetch_optional(&db.read)
        .await?;
    let Some(r) = row else { return Ok(None) };
    let key =
        ApiKey { key_id: KeyId::from_db(r.try_get("id")?), account_id: AccountId::from_db(r.try_get("account_id")?) };
    cache.insert(digest, key.clone());
    Ok(Some(key))
}
