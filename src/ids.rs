//! Prefixed identifiers (`task_…`, `acct_…`, `key_…`) and random secrets.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Fills a buffer from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    buf
}

/// A random token of `N` bytes, hex encoded.
pub fn random_hex<const N: usize>() -> String {
    hex::encode(random_bytes::<N>())
}

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new time-ordered id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Accepts any string that carries the prefix; whether it exists is the store's business.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                let ok = !rest.is_empty()
                    && rest.len() <= 64
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                ok.then(|| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Wraps a value read back from the database.
            pub(crate) fn from_db(s: String) -> Self {
                Self(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(TaskId, "task_");
prefixed_id!(AccountId, "acct_");
prefixed_id!(KeyId, "key_");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_parse_back() {
        let id = TaskId::generate();
        assert!(id.as_str().starts_with("task_"));
        assert_eq!(TaskId::parse(id.as_str()), Some(id));
        assert_eq!(TaskId::parse("acct_123"), None);
        assert_eq!(TaskId::parse("task_"), None);
        assert_eq!(TaskId::parse("task_a b"), None);
    }

    #[test]
    fn new_ids_differ() {
        assert_ne!(AccountId::generate(), AccountId::generate());
        assert_ne!(random_hex::<16>(), random_hex::<16>());
    }
}
