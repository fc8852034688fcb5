-- The web console's sign-in sessions. The browser's cookie holds a random token; `id` is its
-- SHA-256, so a copy of the database opens no session. A user's session belongs to the API key
-- it signed in with (revoking the key ends it); an operator's has no account, and `viewing` is
-- the account whose pages the operator is looking at.
CREATE TABLE console_sessions (
    id         TEXT PRIMARY KEY,
    account_id TEXT REFERENCES accounts(id),
    key_id     TEXT REFERENCES api_keys(id),
    operator   BIGINT NOT NULL DEFAULT 0,
    viewing    TEXT REFERENCES accounts(id),
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);

-- Each account's ended tasks per UTC day and model, kept in the transaction that ends a task,
-- so that the console's overview reads a few rows however many tasks an account has.
CREATE TABLE usage_daily (
    account_id   TEXT NOT NULL REFERENCES accounts(id),
    day          BIGINT NOT NULL,
    model        TEXT NOT NULL,
    succeeded    BIGINT NOT NULL DEFAULT 0,
    failed       BIGINT NOT NULL DEFAULT 0,
    cancelled    BIGINT NOT NULL DEFAULT 0,
    images       BIGINT NOT NULL DEFAULT 0,
    spent_micros BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, day, model)
);
INSERT INTO usage_daily (account_id, day, model, succeeded, failed, cancelled, images, spent_micros)
SELECT account_id, completed_at / 86400000, model,
       SUM(CASE WHEN state = 'success' THEN 1 ELSE 0 END),
       SUM(CASE WHEN state = 'failed' AND (fail_code IS NULL OR fail_code <> 'CANCELLED') THEN 1 ELSE 0 END),
       SUM(CASE WHEN state = 'failed' AND fail_code = 'CANCELLED' THEN 1 ELSE 0 END),
       SUM(COALESCE(delivered_images, 0)),
       SUM(COALESCE(charged_micros, price_micros * COALESCE(delivered_images, 0)))
FROM tasks WHERE completed_at IS NOT NULL
GROUP BY account_id, completed_at / 86400000, model;

-- An account's task list is paged by id (newest first) whatever it filters on.
CREATE INDEX tasks_by_account_id ON tasks (account_id, id);

-- The overview counts an account's waiting and running tasks from the few unfinished rows.
CREATE INDEX tasks_unfinished ON tasks (account_id, model, state) WHERE state IN ('pending', 'processing');

-- An account's latest callback deliveries, for its webhooks page.
CREATE INDEX webhook_deliveries_by_account ON webhook_deliveries (account_id, id);

-- The nodes of a deployment, each writing its own row every few seconds while it runs.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    role         TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);

-- The operator's latest failures, newest first, without reading past the successes.
CREATE INDEX tasks_failed ON tasks (completed_at) WHERE state = 'failed';
