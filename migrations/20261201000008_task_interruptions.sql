-- Runs of a task lost without an end or a hand-back (crash, expired lease), counted at the next
-- claim: past `server.max_task_interruptions` the task fails instead of crash-looping its node.
ALTER TABLE tasks ADD COLUMN interruptions BIGINT NOT NULL DEFAULT 0;
