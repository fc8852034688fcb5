-- Every change in a task's life, in order, written in the transaction that makes the change:
-- the source of live event streams (`GET /api/v1/tasks/{id}/events`, resumable by `seq`).
CREATE TABLE task_events (
    task_id TEXT NOT NULL,
    -- 1, 2, 3… within the task; the SSE event id.
    seq     BIGINT NOT NULL,
    -- created | started | progress | image | succeeded | failed | cancelled
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL,
    at      BIGINT NOT NULL,
    PRIMARY KEY (task_id, seq)
);
-- A `Cancel-After` deadline: a task not finished by then is cancelled.
ALTER TABLE tasks ADD COLUMN cancel_at BIGINT;
CREATE INDEX tasks_cancel_at ON tasks (cancel_at) WHERE cancel_at IS NOT NULL;
-- Its owner asked a running task to stop; the node running it ends it as cancelled.
ALTER TABLE tasks ADD COLUMN cancel_requested_at BIGINT;
-- Which events the owner wants callbacks for (comma-separated); NULL: only the final one.
ALTER TABLE tasks ADD COLUMN callback_events TEXT;
-- The provider's own progress of the running task, 0-100, where it reports one.
ALTER TABLE tasks ADD COLUMN progress_percent BIGINT;
-- The event a delivery reports (`started`, `progress`); NULL: the task's final state.
ALTER TABLE webhook_deliveries ADD COLUMN event TEXT;
