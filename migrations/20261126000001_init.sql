-- Easel schema, in SQL that both SQLite and PostgreSQL accept.
-- Times are Unix milliseconds; money is integer micro-dollars.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE accounts (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    -- Spendable balance: credits added - settled - held.
    balance_micros BIGINT NOT NULL DEFAULT 0 CHECK (balance_micros >= 0),
    held_micros    BIGINT NOT NULL DEFAULT 0 CHECK (held_micros >= 0),
    webhook_secret TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE account_limits (
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    model          TEXT NOT NULL,
    rpm            BIGINT,
    max_concurrent BIGINT,
    PRIMARY KEY (account_id, model)
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    key_hash   TEXT NOT NULL UNIQUE,
    key_hint   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    account_id       TEXT NOT NULL REFERENCES accounts(id),
    model            TEXT NOT NULL,
    dialect          TEXT NOT NULL,
    state            TEXT NOT NULL,
    spec             TEXT NOT NULL,
    param            TEXT NOT NULL,
    routing          TEXT NOT NULL,
    callback_url     TEXT,
    requested_images BIGINT NOT NULL,
    delivered_images BIGINT,
    price_micros     BIGINT NOT NULL,
    result_keys      TEXT,
    fail_code        TEXT,
    fail_msg         TEXT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    lease_token      TEXT,
    lease_until      BIGINT,
    upstream_task_id TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    completed_at     BIGINT,
    deadline_at      BIGINT NOT NULL,
    files_purged_at  BIGINT
);
CREATE INDEX tasks_claimable ON tasks (state, created_at);
CREATE INDEX tasks_by_account ON tasks (account_id, created_at);
CREATE INDEX tasks_by_completion ON tasks (completed_at);

CREATE TABLE ledger (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id),
    task_id       TEXT,
    kind          TEXT NOT NULL CHECK (kind IN ('credit', 'hold', 'settle', 'release')),
    amount_micros BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
-- A task is held, settled and released at most once each: retries and recovery cannot pay twice.
CREATE UNIQUE INDEX ledger_once_per_task ON ledger (task_id, kind) WHERE task_id IS NOT NULL;
CREATE INDEX ledger_by_account ON ledger (account_id, created_at);
