-- Concurrency limits count an account's unfinished tasks of one model.
CREATE INDEX tasks_active ON tasks (account_id, model, state);

-- Idempotent submits: one row per (account, Idempotency-Key). The task id is written in the
-- same transaction that creates the task, so a replay always finds the task it names.
CREATE TABLE idempotency_keys (
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    -- NULL while the first request is in flight.
    task_id       TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_by_age ON idempotency_keys (created_at);
