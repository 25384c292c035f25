-- The number of each Task's current version, beside the version the scheduler wrote
-- (written_version): when the two differ the current version is someone else's, which the
-- scheduler leaves alone. Kept with current_status, by the scheduler when it writes a Task
-- and by the follow-up write hook when anyone else does, so that a scheduler run tells its
-- own Tasks from coordinators' from this row alone, instead of looking up every Task's
-- latest version in the store (a third of a daily run's reads at 100,000 infusions).
ALTER TABLE followup_task ADD COLUMN current_version integer;

UPDATE followup_task t SET current_version = r.version_id
FROM resource r
WHERE r.resource_type = 'Task' AND r.resource_id = t.task_id;

-- A Task with no resource row cannot be: treat it as the scheduler's own.
UPDATE followup_task SET current_version = written_version WHERE current_version IS NULL;

ALTER TABLE followup_task ALTER COLUMN current_version SET NOT NULL;
