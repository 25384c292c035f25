-- Dates known only to the month or year (Patient.deceasedDateTime "2014-06", an AdverseEvent's
-- onset "2014") are ranges of days. The fact keeps the first day of the range (deceased_on,
-- onset_on) and now its last day too; the registry imputes one day within it (see
-- registry/definitions/README.md, "Partial dates"). NULL as the last day means the date was
-- full: the range is that one day, as every row written before this migration reads.

ALTER TABLE registry_patient ADD COLUMN deceased_until date; -- last possible day of the death, when partial

ALTER TABLE registry_toxicity
    ADD COLUMN onset_until date,      -- last possible day of the onset, when partial
    ADD COLUMN onset_imputed_on date; -- derived: the day counted as the onset
UPDATE registry_toxicity SET onset_imputed_on = onset_on;
