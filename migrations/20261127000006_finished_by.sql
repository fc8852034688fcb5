-- The node whose worker ended a task (for operators of a cluster, and the cluster test).
ALTER TABLE tasks ADD COLUMN finished_by TEXT;
