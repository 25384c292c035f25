-- The follow-up Tasks the scheduler keeps, one per (infusion, milestone): the unique key makes
-- a second Task for the same visit impossible, whichever replica runs and however often. The
-- Task itself is an ordinary FHIR resource (resource_type 'Task', resource_id = task_id);
-- this row is what the scheduler last made of it.
CREATE TABLE followup_task (
    infusion_type   text    NOT NULL,
    infusion_id     text    NOT NULL,
    milestone       text    NOT NULL,
    task_id         text    NOT NULL UNIQUE,
    patient_id      text    NOT NULL,
    status          text    NOT NULL,   -- Task.status the scheduler wrote
    business_status text    NOT NULL,   -- upcoming | due | overdue | '' when closed
    output_id       text    NOT NULL DEFAULT '', -- the Observation a completed Task points to
    written_version integer NOT NULL,   -- the Task version the scheduler wrote; a later one is a
                                        -- coordinator's, which the scheduler leaves alone
    PRIMARY KEY (infusion_type, infusion_id, milestone)
);
CREATE INDEX followup_task_patient ON followup_task (patient_id);
