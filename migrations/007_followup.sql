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

-- Withdrawals from follow-up: an EpisodeOfCare of type cartreg#car-t-follow-up that is
-- finished or cancelled (schedules/followup/doc.go says why EpisodeOfCare). A withdrawn
-- patient's open Tasks are cancelled and no new ones are made; an episode set back to active
-- removes its row, and follow-up resumes.
CREATE TABLE followup_withdrawal (
    episode_id   text PRIMARY KEY,
    patient_id   text NOT NULL,
    withdrawn_on date NOT NULL      -- EpisodeOfCare.period.end, else the day it was recorded
);
CREATE INDEX followup_withdrawal_patient ON followup_withdrawal (patient_id);

-- What each Task's owner must be told in the next digest: a new Task, or one newly overdue.
-- The key tells an owner of each once; digest_key is set when a digest has been queued for
-- delivery, in the same transaction, so a run that dies in between leaves the notices for the
-- next one.
CREATE TABLE followup_notice (
    task_id    text        NOT NULL,
    reason     text        NOT NULL,  -- new | overdue
    owner      text        NOT NULL,  -- the Task.owner reference at the time
    noticed_at timestamptz NOT NULL,
    digest_key text,
    PRIMARY KEY (task_id, reason)
);
CREATE INDEX followup_notice_pending ON followup_notice (owner) WHERE digest_key IS NULL;
