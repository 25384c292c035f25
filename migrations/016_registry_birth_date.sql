-- The patient's date of birth, for outcomes by age band at infusion. A date known only to the
-- month or year is taken at its mid-point, as the registry imputes partial dates
-- (registry/definitions/README.md, "Partial dates"); age bands are whole years apart.
ALTER TABLE registry_patient ADD COLUMN birth_on date;

-- Patients projected before this migration: read from their current version.
UPDATE registry_patient rp SET birth_on = p.first + (p.last - p.first) / 2
FROM (SELECT resource_id, first, CASE length(b)
             WHEN 4 THEN (b || '-12-31')::date
             WHEN 7 THEN (first + interval '1 month' - interval '1 day')::date
             ELSE first END AS last
      FROM (SELECT r.resource_id, v.body::jsonb ->> 'birthDate' AS b,
                   CASE WHEN v.body::jsonb ->> 'birthDate' ~ '^\d{4}(-\d{2}(-\d{2})?)?$'
                        THEN rpad(v.body::jsonb ->> 'birthDate', 10, CASE length(v.body::jsonb ->> 'birthDate')
                                  WHEN 4 THEN '-01-01' ELSE '-01' END)::date END AS first
            FROM resource r JOIN resource_version v USING (resource_type, resource_id, version_id)
            WHERE r.resource_type = 'Patient' AND NOT r.deleted) births
      WHERE first IS NOT NULL) p
WHERE p.resource_id = rp.patient_id;
