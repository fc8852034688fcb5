-- Callback deliveries: written in the transaction that ends a task, sent by the dispatcher.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL REFERENCES tasks(id),
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    url              TEXT NOT NULL,
    -- pending | delivered | failed
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    -- Start of the retry window; set by the first attempt.
    first_attempt_at BIGINT,
    lease_until      BIGINT,
    created_at       BIGINT NOT NULL,
    completed_at     BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_by_task ON webhook_deliveries (task_id);

CREATE TABLE webhook_attempts (
    id          TEXT PRIMARY KEY,
    delivery_id TEXT NOT NULL REFERENCES webhook_deliveries(id),
    attempt     BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    status      BIGINT,
    error       TEXT,
    latency_ms  BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, attempt);
