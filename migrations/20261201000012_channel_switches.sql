-- Channels the operator switched off or on at run time, by the channel's configured id; a channel
-- with no row is on. `enabled` is 1 or 0 (an integer reads alike from SQLite and PostgreSQL).
CREATE TABLE channel_switches (
    channel_id TEXT PRIMARY KEY,
    enabled    BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    changed_at BIGINT NOT NULL
);
