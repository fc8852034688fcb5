//! Accounts, their API keys (stored only as SHA-256 hashes) and their credits.

pub mod key_cache;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod rate;
pub mod usage;

use std::sync::Arc;

use base64::Engine;
use serde::Serialize;
use sqlx::Row;

use crate::db::{Db, now_ms};
use crate::ids::{AccountId, random_bytes};
use crate::money::Micros;

use key_cache::KeyCache;
pub use keys::{ApiKey, IssuedKey};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("an account named {0:?} already exists")]
    NameTaken(String),
    #[error("account {0} does not exist")]
    NotFound(String),
    #[error("the account name must be 1 to 64 characters")]
    BadName,
    #[error("the credit would take the account past the largest balance, {}", Micros::MAX_BALANCE)]
    BalanceLimit,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Clone, Serialize)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub balance: Micros,
    pub held: Micros,
    #[serde(skip)]
    pub webhook_secret: String,
    pub created_at: i64,
}

/// An API key as its account's pages list it: never the key itself.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub key_id: String,
    /// `sk-…` and the key's last four characters.
    pub hint: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// What `accounts create` hands back: the only time the key is shown.
#[derive(Debug, Clone)]
pub struct CreatedAccount {
    pub account: Account,
    pub key: IssuedKey,
}

#[derive(Clone, Debug)]
pub struct Accounts {
    db: Db,
    keys: Arc<KeyCache>,
}

fn new_webhook_secret() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(random_bytes::<24>()))
}

const ACCOUNT_COLUMNS: &str = "id, name, balance_micros, held_micros, webhook_secret, created_at";

fn account_from_row(row: &sqlx::any::AnyRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        id: AccountId::from_db(row.try_get("id")?),
        name: row.try_get("name")?,
        balance: Micros(row.try_get("balance_micros")?),
        held: Micros(row.try_get("held_micros")?),
        webhook_secret: row.try_get("webhook_secret")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Accounts {
    pub fn new(db: Db) -> Self {
        Self { db, keys: Arc::default() }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Creates an account with an opening credit and a first key, in one transaction.
    #[tracing::instrument(skip(self))]
    pub async fn create(&self, name: &str, credits: Micros) -> Result<CreatedAccount, AccountError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(AccountError::BadName);
        }
        let id = AccountId::generate();
        let now = now_ms();
        let secret = new_webhook_secret();
        let mut tx = self.db.write.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (id, name, balance_micros, held_micros, webhook_secret, created_at) \
             VALUES ($1, $2, 0, 0, $3, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(name)
        .bind(&secret)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(AccountError::NameTaken(name.to_owned()));
        }
        if credits > Micros::ZERO && ledger::credit_in(&mut tx, &id, credits).await? != ledger::Credited::Done {
            return Err(AccountError::BalanceLimit);
        }
        let key = keys::issue_in(&mut tx, &id).await?;
        tx.commit().await?;
        let account = Account {
            id,
            name: name.to_owned(),
            balance: credits,
            held: Micros::ZERO,
            webhook_secret: secret,
            created_at: now,
        };
        Ok(CreatedAccount { account, key })
    }

    pub async fn get(&self, id: &AccountId) -> Result<Account, AccountError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.db.read)
            .await?
            .ok_or_else(|| AccountError::NotFound(id.to_string()))?;
        Ok(account_from_row(&row)?)
    }

    /// Every account, oldest first.
    pub async fn list(&self) -> Result<Vec<Account>, AccountError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id");
        let rows = sqlx::query(&sql).fetch_all(&self.db.read).await?;
        Ok(rows.iter().map(account_from_row).collect::<Result<_, _>>()?)
    }

    /// Looks an account up by id, accepting its name as well (friendlier on the command line).
    pub async fn find(&self, id_or_name: &str) -> Result<Account, AccountError> {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM accounts WHERE id = $1 OR name = $1")
            .bind(id_or_name)
            .fetch_optional(&self.db.read)
            .await?;
        match id {
            Some(id) => self.get(&AccountId::from_db(id)).await,
            None => Err(AccountError::NotFound(id_or_name.to_owned())),
        }
    }

    pub async fn count(&self) -> Result<i64, AccountError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM accounts").fetch_one(&self.db.read).await?)
    }

    pub async fn add_credits(&self, id: &AccountId, amount: Micros) -> Result<Account, AccountError> {
        let mut tx = self.db.write.begin().await?;
        match ledger::credit_in(&mut tx, id, amount).await? {
            ledger::Credited::Done => {}
            ledger::Credited::NoSuchAccount => return Err(AccountError::NotFound(id.to_string())),
            ledger::Credited::OverLimit => return Err(AccountError::BalanceLimit),
        }
        tx.commit().await?;
        self.get(id).await
    }

    pub async fn issue_key(&self, id: &AccountId) -> Result<IssuedKey, AccountError> {
        self.get(id).await?;
        let mut tx = self.db.write.begin().await?;
        let key = keys::issue_in(&mut tx, id).await?;
        tx.commit().await?;
        Ok(key)
    }

    /// Replaces the account's callback signing secret; deliveries signed from now on use it.
    pub async fn rotate_webhook_secret(&self, id: &AccountId) -> Result<String, AccountError> {
        let secret = new_webhook_secret();
        let done = sqlx::query("UPDATE accounts SET webhook_secret = $1 WHERE id = $2")
            .bind(&secret)
            .bind(id.as_str())
            .execute(&self.db.write)
            .await?;
        if done.rows_affected() == 0 {
            return Err(AccountError::NotFound(id.to_string()));
        }
        Ok(secret)
    }

    /// Revokes a key (of `owner` only, when given); returns false if no such key was active.
    pub async fn revoke_key(&self, key_id: &str, owner: Option<&AccountId>) -> Result<bool, AccountError> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             AND ($3 IS NULL OR account_id = $3)",
        )
        .bind(now_ms())
        .bind(key_id)
        .bind(owner.map(AccountId::as_str))
        .execute(&self.db.write)
        .await?;
        self.keys.forget(key_id);
        Ok(done.rows_affected() == 1)
    }

    /// An account's keys, newest first, revoked ones too.
    pub async fn keys_of(&self, id: &AccountId) -> Result<Vec<KeyInfo>, AccountError> {
        let rows = sqlx::query(
            "SELECT id, key_hint, created_at, revoked_at FROM api_keys WHERE account_id = $1 ORDER BY created_at DESC, id DESC",
        )
        .bind(id.as_str())
        .fetch_all(&self.db.read)
        .await?;
        let key = |r: &sqlx::any::AnyRow| -> Result<KeyInfo, sqlx::Error> {
            Ok(KeyInfo {
                key_id: r.try_get("id")?,
                hint: r.try_get("key_hint")?,
                created_at: r.try_get("created_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        };
        Ok(rows.iter().map(key).collect::<Result<_, _>>()?)
    }

    /// Accounts whose name or id contains `needle` (all when empty), by name, at most `limit`.
    pub async fn search(&self, needle: &str, limit: i64) -> Result<Vec<Account>, AccountError> {
        let pattern =
            format!("%{}%", needle.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE LOWER(name) LIKE $1 ESCAPE '\\' OR id LIKE $1 ESCAPE '\\' \
             ORDER BY name LIMIT $2"
        );
        let rows = sqlx::query(&sql).bind(pattern).bind(limit).fetch_all(&self.db.read).await?;
        Ok(rows.iter().map(account_from_row).collect::<Result<_, _>>()?)
    }

    /// The account behind an active key. A revocation takes effect at once in this process and
    /// within [`key_cache::KEY_CACHE_TTL`] on every other server.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<ApiKey>, AccountError> {
        keys::lookup(&self.db, &self.keys, presented).await
    }
}
