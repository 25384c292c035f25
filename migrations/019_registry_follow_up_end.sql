-- Follow-up that ended before the plan did, as the registry counts it at each milestone: a
-- follow-up EpisodeOfCare (cartreg#car-t-follow-up) finished or cancelled, typed also
-- cartreg#lost-to-follow-up when the patient was lost rather than withdrew. A patient whose
-- follow-up ended before a milestone's window closed, unassessed, is counted as lost or
-- withdrawn there, not as a missed visit.
CREATE TABLE registry_follow_up_end (
    episode_id text PRIMARY KEY,
    patient_id text NOT NULL,
    ended_on   date NOT NULL,
    reason     text NOT NULL CHECK (reason IN ('lost', 'withdrawn'))
);
CREATE INDEX registry_follow_up_end_patient ON registry_follow_up_end (patient_id);

-- Episodes written before this migration: the follow-up package has kept them.
INSERT INTO registry_follow_up_end (episode_id, patient_id, ended_on, reason)
SELECT episode_id, patient_id, withdrawn_on, CASE WHEN lost THEN 'lost' ELSE 'withdrawn' END
FROM followup_withdrawal;
