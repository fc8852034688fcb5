-- Which channel holds the upstream task id (an asynchronous upstream resumes on that channel),
-- and the channels each task was tried on, with their outcomes (JSON array).
ALTER TABLE tasks ADD COLUMN upstream_channel TEXT;
ALTER TABLE tasks ADD COLUMN channel_log TEXT;
