//! Tasks that have ended, kept in memory: an ended task's row never changes again (every write
//! to a task requires it to be processing), so clients polling for a result can be answered
//! without a database read, on any node. The exception is the deletion of its images, which
//! the task API reads from the database (`TaskStore::read_for_account`); a link to a deleted
//! image answers 410 whatever a cached copy lists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Task;
use crate::ids::TaskId;

/// Tasks per generation; at most twice as many are kept.
const GENERATION: usize = 4096;

/// A two-generation cache: when the young generation fills up, it becomes the old one and the
/// previous old one is dropped, so recently read tasks stay and memory stays bounded.
#[derive(Debug, Default)]
pub struct EndedTasks {
    generations: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    young: HashMap<TaskId, Arc<Task>>,
    old: HashMap<TaskId, Arc<Task>>,
}

impl EndedTasks {
    pub fn get(&self, id: &TaskId) -> Option<Arc<Task>> {
        let mut g = self.generations.lock().expect("the ended-task cache's lock is never poisoned");
        if let Some(task) = g.young.get(id) {
            return Some(task.clone());
        }
        let task = g.old.remove(id)?;
        g.insert(task.clone());
        Some(task)
    }

    /// Keeps `task` if it has ended; a task still running is not cached.
    pub fn remember(&self, task: &Task) {
        if task.state.is_terminal() {
            let mut g = self.generations.lock().expect("the ended-task cache's lock is never poisoned");
            g.insert(Arc::new(task.clone()));
        }
    }
}

impl Generations {
    fn insert(&mut self, task: Arc<Task>) {
        if self.young.len() >= GENERATION {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(task.id.clone(), task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Routing, Size, TaskSpec};
    use crate::ids::AccountId;
    use crate::money::Micros;
    use crate::tasks::{Dialect, TaskState};

    fn task(state: TaskState) -> Task {
        Task {
            id: TaskId::generate(),
            account_id: AccountId::generate(),
            model: "gpt-image-1".into(),
            dialect: Dialect::Apixo,
            state,
            spec: TaskSpec::example("gpt-image-1", Size::new(1024, 1024)),
            param: "{}".into(),
            routing: Routing::Auto,
            callback_url: None,
            requested_images: 1,
            delivered_images: None,
            price: Micros(40_000),
            tariff: None,
            charged: None,
            files_purged_at: None,
            result_keys: Vec::new(),
            fail_code: None,
            fail_msg: None,
            attempts: 1,
            interruptions: 0,
            created_at: 0,
            completed_at: None,
            deadline_at: 0,
            upstream_task_id: None,
            upstream_channel: None,
            channel_log: Vec::new(),
            cancel_at: None,
            cancel_requested_at: None,
            callback_events: Default::default(),
            progress_percent: None,
        }
    }

    #[test]
    fn only_ended_tasks_are_kept() {
        let cache = EndedTasks::default();
        let (running, done) = (task(TaskState::Processing), task(TaskState::Success));
        cache.remember(&running);
        cache.remember(&done);
        assert!(cache.get(&running.id).is_none());
        assert_eq!(cache.get(&done.id).unwrap().state, TaskState::Success);
    }

    #[test]
    fn memory_stays_bounded_and_recent_reads_survive() {
        let cache = EndedTasks::default();
        let first = task(TaskState::Failed);
        cache.remember(&first);
        for _ in 0..GENERATION * 3 {
            cache.remember(&task(TaskState::Success));
            // Read often, the first task keeps moving to the young generation.
            assert!(cache.get(&first.id).is_some());
        }
        let g = cache.generations.lock().unwrap();
        assert!(g.young.len() + g.old.len() <= 2 * GENERATION);
        drop(g);
        let forgotten = task(TaskState::Success);
        cache.remember(&forgotten);
        for _ in 0..GENERATION * 2 {
            cache.remember(&task(TaskState::Success));
        }
        assert!(cache.get(&forgotten.id).is_none(), "a task not read for two generations is dropped");
    }
}
