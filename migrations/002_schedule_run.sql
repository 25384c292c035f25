-- One row per (job, slot) a scheduler has run: the unique key that makes a second run of the
-- same slot impossible, whichever replica tries it and however often.
CREATE TABLE schedule_run (
    job         text        NOT NULL,
    slot        timestamptz NOT NULL,  -- the activation time the run stands for
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    error       text,                  -- NULL when the run succeeded
    PRIMARY KEY (job, slot)
);
