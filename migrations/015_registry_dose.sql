-- A dose that is part of a course begun by an earlier registry_infusion row: the same product
-- again within a few days of the first dose (one infusion recorded twice, a split dose; see
-- registry/definitions/README.md, "One course"). Its facts are those of registry_infusion; it
-- has no follow-up of its own, so nothing that counts courses (outcomes, the follow-up
-- scheduler) sees it. The projection moves a row between the two tables when a write changes
-- which dose begins the course.
CREATE TABLE registry_dose (
    resource_type text NOT NULL,
    resource_id   text NOT NULL,
    patient_id    text NOT NULL,
    infused_on    date NOT NULL,
    product       text NOT NULL,
    product_label text NOT NULL,
    targets       text[] NOT NULL,
    condition_ids text[] NOT NULL,
    site_id       text,
    prior_lines   integer,
    -- derived
    course_type   text NOT NULL,       -- the registry_infusion row of the course's first dose
    course_id     text NOT NULL,
    PRIMARY KEY (resource_type, resource_id)
);
CREATE INDEX registry_dose_patient ON registry_dose (patient_id);
