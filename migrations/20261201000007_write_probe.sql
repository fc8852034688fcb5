-- One row that `/readyz` rewrites to learn whether the database takes writes: on a full disk
-- reads still answer while every write fails.
CREATE TABLE write_probe (
    id        INTEGER PRIMARY KEY,
    probed_at BIGINT NOT NULL
);
