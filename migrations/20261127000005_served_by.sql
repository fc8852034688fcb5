-- The channel that last worked on a task (for metrics and the admin API).
ALTER TABLE tasks ADD COLUMN served_by TEXT;
