//! The files this node stored a moment ago, kept in memory for the reads that follow at once:
//! an OpenAI `b64_json` answer reads its task's results back, a worker the references its API
//! just stored. Bounded by bytes and by age; an entry is at most [`KEPT_FOR`] old, so a file
//! deleted on another node is never answered from here long after (results are deleted days
//! later, at the end of their retention), and a delete on this node drops its entry at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long a file stays after it was stored.
const KEPT_FOR: Duration = Duration::from_secs(30);
/// The most bytes kept; the oldest go first.
const BUDGET: usize = 32 << 20;

#[derive(Default)]
pub struct Recent {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    files: HashMap<String, (Instant, Bytes)>,
    /// Keys in the order stored (a key stored again appears twice; the stale one is skipped).
    order: VecDeque<(Instant, String)>,
    bytes: usize,
}

impl Recent {
    pub fn keep(&self, key: &str, bytes: Bytes) {
        if bytes.len() > BUDGET / 8 {
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.bytes += bytes.len();
        if let Some((_, old)) = inner.files.insert(key.to_owned(), (now, bytes)) {
            inner.bytes -= old.len();
        }
        inner.order.push_back((now, key.to_owned()));
        inner.evict(now);
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("not poisoned");
        inner.evict(now);
        inner.files.get(key).map(|(_, bytes)| bytes.clone())
    }

    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.lock().expect("not poisoned");
        if let Some((_, old)) = inner.files.remove(key) {
            inner.bytes -= old.len();
        }
    }
}

impl Inner {
    /// Drops what is too old, then the oldest until the rest fits the budget.
    fn evict(&mut self, now: Instant) {
        while let Some((stored, key)) = self.order.front() {
            if now.duration_since(*stored) < KEPT_FOR && self.bytes <= BUDGET {
                break;
            }
            let (stored, key) = (*stored, key.clone());
            self.order.pop_front();
            // Only the entry this line stands for: a key stored again since has a later line.
            if self.files.get(&key).is_some_and(|(at, _)| *at == stored) {
                let (_, old) = self.files.remove(&key).expect("present");
                self.bytes -= old.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_kept_within_the_budget_and_forgotten_on_delete() {
        let recent = Recent::default();
        recent.keep("a", Bytes::from_static(b"one"));
        recent.keep("a", Bytes::from_static(b"two"));
        assert_eq!(recent.get("a").as_deref(), Some(&b"two"[..]), "the latest write");
        recent.forget("a");
        assert_eq!(recent.get("a"), None);

        let big = Bytes::from(vec![0u8; BUDGET / 8]);
        for i in 0..10 {
            recent.keep(&format!("big{i}"), big.clone());
        }
        assert_eq!(recent.get("big0"), None, "the oldest went first");
        assert!(recent.get("big9").is_some());
        assert!(recent.inner.lock().unwrap().bytes <= BUDGET);
        recent.keep("huge", Bytes::from(vec![0u8; BUDGET]));
        assert_eq!(recent.get("huge"), None, "a file larger than an eighth of the budget is not kept");
    }
}
