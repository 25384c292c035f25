-- The registry's projection of the FHIR data: what outcome queries and the follow-up
-- scheduler read, so they never parse resources. Rows are written by the FHIR store's write
-- hook in the same transaction as the resources they come from, so the two never disagree.
--
-- Each table has the facts read from one kind of resource (keyed by that resource), and
-- derived columns recomputed for the whole patient whenever any of the patient's registry
-- resources changes (marked "derived" below).

CREATE TABLE registry_patient (
    patient_id      text PRIMARY KEY,
    deceased_on     date,          -- Patient.deceasedDateTime
    managing_org    text,          -- Patient.managingOrganization: the site when an infusion names none
    last_contact_on date           -- derived: latest dated registry event of the patient (infusion,
                                   -- assessment, toxicity, encounter or death)
);

CREATE TABLE registry_site (
    organization_id text PRIMARY KEY,
    name            text NOT NULL
);

CREATE TABLE registry_condition (
    condition_id text PRIMARY KEY,
    patient_id   text NOT NULL,
    disease      text              -- disease-group code, NULL when the code maps to none
);
CREATE INDEX registry_condition_patient ON registry_condition (patient_id);

-- A CAR-T infusion (Procedure or MedicationAdministration): day 0 of a follow-up sequence.
CREATE TABLE registry_infusion (
    resource_type      text NOT NULL,
    resource_id        text NOT NULL,
    patient_id         text NOT NULL,
    infused_on         date NOT NULL,
    product            text NOT NULL,  -- cart-product code, or the sender's code or text
    product_label      text NOT NULL,
    targets            text[] NOT NULL, -- target antigens, in code-system order
    condition_ids      text[] NOT NULL, -- reasonReference, indication first
    site_id            text,            -- the treating Organization named on the infusion
    prior_lines        integer,
    -- derived
    disease            text,            -- of the first indication
    effective_site_id  text,            -- site_id, else the patient's managing organization
    sequence           integer,         -- 1 for the patient's first infusion
    next_infused_on    date,            -- the patient's next infusion, which ends this sequence
    death_on           date,            -- the patient's death, when on or after this infusion
    last_contact_on    date,            -- the patient's last contact
    first_response_on  date,            -- first assessment in a responding category
    progression_on     date,            -- first assessment in a progression category
    last_progression_free_on date,      -- last assessment before progression (PFS censoring)
    timepoints         jsonb NOT NULL DEFAULT '{}', -- milestone code -> response category of the
                                        -- assessment that counts there (registry_assessment.counted)
    PRIMARY KEY (resource_type, resource_id)
);
-- In the order outcome queries pick each patient's first selected infusion in.
CREATE INDEX registry_infusion_patient ON registry_infusion (patient_id, infused_on, resource_type, resource_id);
CREATE INDEX registry_infusion_first ON registry_infusion (infused_on) WHERE sequence = 1;

-- A remission assessment (Observation, LOINC 97509-4 with a registry response category).
CREATE TABLE registry_assessment (
    observation_id  text PRIMARY KEY,
    patient_id      text NOT NULL,
    assessed_on     date NOT NULL,
    category        text NOT NULL,      -- response-category code
    condition_id    text,               -- Observation.focus
    infusion_ref    text,               -- Observation.partOf, as Type/id
    mrd_negative    boolean,
    -- derived
    infusion_type   text,
    infusion_id     text,
    day             integer,            -- days after the infusion (day 0)
    milestone       text,               -- follow-up plan timepoint, NULL when unscheduled
    counted         boolean NOT NULL DEFAULT false -- the one assessment that counts at its
                                        -- milestone: nearest the target day, the later on a tie
);
CREATE INDEX registry_assessment_patient ON registry_assessment (patient_id);
CREATE INDEX registry_assessment_infusion ON registry_assessment (infusion_type, infusion_id, milestone);
CREATE INDEX registry_assessment_counted ON registry_assessment (infusion_type, infusion_id, milestone) INCLUDE (category)
    WHERE counted;

-- CRS and ICANS (AdverseEvent) with their ASTCT grade.
CREATE TABLE registry_toxicity (
    adverse_event_id text PRIMARY KEY,
    patient_id       text NOT NULL,
    kind             text NOT NULL,     -- crs | icans
    grade            integer,
    onset_on         date NOT NULL,
    infusion_ref     text
);
CREATE INDEX registry_toxicity_patient ON registry_toxicity (patient_id);

-- Encounters: visits that are neither an infusion nor an assessment but show the patient was
-- alive and in follow-up that day, so survival is censored there and not earlier.
CREATE TABLE registry_contact (
    encounter_id text PRIMARY KEY,
    patient_id   text NOT NULL,
    contact_on   date NOT NULL      -- Encounter.period.end, else period.start
);
CREATE INDEX registry_contact_patient ON registry_contact (patient_id);

-- Settings the derived columns depend on (the follow-up plan's digest), so a changed plan is
-- applied to stored assessments at start-up.
CREATE TABLE registry_state (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- The lowest day of the interval between sorted bounds that a day count falls in
-- (width_bucket's answer): outcome queries compare that instead of the count, which compares
-- with every bound alike, so courses collapse into a few classes. NULL stays NULL.
CREATE FUNCTION registry_interval_floor(bucket integer, bounds integer[]) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN bucket = 0 THEN bounds[1] - 1 ELSE bounds[bucket] END;
