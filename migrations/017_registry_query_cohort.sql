-- The cohorts each researcher's outcome queries were answered for, remembered for a while so
-- that a query whose cohort differs from an earlier one by fewer patients than the minimum
-- cell is refused (overlap control; see README, "Outcomes for researchers"). A cohort is the
-- set of patients of one published group, each as PostgreSQL's 64-bit hash of the patient
-- id (hashtextextended): enough to count the difference between two sets, and not the ids
-- themselves. In PostgreSQL rather than in memory so that every replica refuses alike.
CREATE TABLE registry_query_cohort (
    principal text        NOT NULL, -- the auth principal, kind:subject
    digest    bytea       NOT NULL, -- SHA-256 of the sorted set: one row per distinct cohort
    size      integer     NOT NULL,
    patients  bigint[]    NOT NULL, -- sorted
    asked_at  timestamptz NOT NULL, -- the last time it was answered
    PRIMARY KEY (principal, digest)
);
CREATE INDEX registry_query_cohort_size ON registry_query_cohort (principal, size);
CREATE INDEX registry_query_cohort_asked ON registry_query_cohort (asked_at);
