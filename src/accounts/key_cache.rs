//! Keys that authenticated a moment ago, so that a busy client does not cost a database read on
//! every request. An entry lives [`KEY_CACHE_TTL`]: a key revoked through another process (the
//! CLI, another node) stops working within that time; one revoked through this process at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::keys::ApiKey;

pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// Past this many entries, expired ones are swept before the next insert.
const SWEEP_AT: usize = 10_000;

/// Active keys by the SHA-256 of the key (the plain key is never kept).
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<[u8; 32], (ApiKey, Instant)>>,
}

impl KeyCache {
    pub fn get(&self, hash: &[u8; 32]) -> Option<ApiKey> {
        let entries = self.entries.lock().expect("the key cache's lock is never poisoned");
        entries.get(hash).filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL).map(|(key, _)| key.clone())
    }

    pub fn insert(&self, hash: [u8; 32], key: ApiKey) {
        let mut entries = self.entries.lock().expect("the key cache's lock is never poisoned");
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, (_, at)| at.elapsed() < KEY_CACHE_TTL);
        }
        entries.insert(hash, (key, Instant::now()));
    }

    /// Forgets a key as it is revoked.
    pub fn forget(&self, key_id: &str) {
        let mut entries = self.entries.lock().expect("the key cache's lock is never poisoned");
        entries.retain(|_, (key, _)| key.key_id.as_str() != key_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{AccountId, KeyId};

    fn key(id: &str) -> ApiKey {
        ApiKey { key_id: KeyId::from_db(id.to_owned()), account_id: AccountId::from_db("acct_1".to_owned()) }
    }

    #[test]
    fn entries_expire_and_revoked_keys_are_forgotten() {
        let cache = KeyCache::default();
        cache.insert([1; 32], key("key_a"));
        cache.insert([2; 32], key("key_b"));
        assert_eq!(cache.get(&[1; 32]).unwrap().key_id.as_str(), "key_a");
        cache.forget("key_a");
        assert!(cache.get(&[1; 32]).is_none());
        assert!(cache.get(&[2; 32]).is_some());
        cache.entries.lock().unwrap().get_mut(&[2; 32]).unwrap().1 -= KEY_CACHE_TTL;
        assert!(cache.get(&[2; 32]).is_none(), "an entry older than the TTL is not used");
    }
}
