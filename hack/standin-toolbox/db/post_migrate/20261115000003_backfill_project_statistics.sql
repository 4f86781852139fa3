-- A batched backfill: slow enough (3 s) for a test to kill the operator mid-run.
CREATE TABLE project_statistics (project_id bigint NOT NULL, computed_at timestamptz NOT NULL DEFAULT now());
SELECT pg_sleep(3);
INSERT INTO project_statistics (project_id) SELECT id FROM projects;
