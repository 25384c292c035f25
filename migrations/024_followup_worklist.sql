-- What the work list filters and orders by, on followup_task itself, so that one site's page
-- is an index scan of its open Tasks ordered by urgency, and only the page's Task bodies are
-- read (package followup, Worklist.List). Kept by the scheduler when it writes a Task and by
-- the follow-up write hook when anyone else writes one (a coordinator's status, owner or
-- window, through the FHIR API or the web pages) or when the infusion's site changes.
ALTER TABLE followup_task
    ADD COLUMN site_id        text NOT NULL DEFAULT '', -- the infusion's effective site (Organization id), '' for none
    ADD COLUMN current_status text,                     -- the current Task version's status; NULL once deleted
    ADD COLUMN owner          text NOT NULL DEFAULT '', -- the current Task.owner reference as written
    ADD COLUMN window_start   date,                     -- the current Task.restriction.period, its date part;
    ADD COLUMN window_end     date;                     -- NULL when the Task has none (the plan's window applies)

UPDATE followup_task t SET site_id = i.effective_site_id
FROM registry_infusion i
WHERE i.resource_type = t.infusion_type AND i.resource_id = t.infusion_id AND i.effective_site_id IS NOT NULL;

UPDATE followup_task t SET current_status = j.status, owner = coalesce(j.owner->>'reference', ''),
    window_start = CASE WHEN length(j.restriction#>>'{period,start}') >= 10 THEN left(j.restriction#>>'{period,start}', 10)::date END,
    window_end = CASE WHEN length(j.restriction#>>'{period,end}') >= 10 THEN left(j.restriction#>>'{period,end}', 10)::date END
FROM resource r
JOIN resource_version v ON v.resource_type = r.resource_type AND v.resource_id = r.resource_id AND v.version_id = r.version_id
CROSS JOIN LATERAL jsonb_to_record(v.body::jsonb) AS j(status text, owner jsonb, restriction jsonb)
WHERE r.resource_type = 'Task' AND r.resource_id = t.task_id AND NOT r.deleted;

-- A work list asks for some statuses (the open ones by default) and, for a coordinator, some
-- sites: both lead this index. Only this one, as every Task the scheduler writes updates it.
CREATE INDEX followup_task_worklist ON followup_task (current_status, site_id);
