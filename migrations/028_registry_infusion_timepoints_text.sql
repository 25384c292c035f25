-- Each course's counted assessments (timepoints) as text, kept with the row: the response
-- report reads every course's and works out its standings in Go, and rendering 100,000
-- jsonb values as text for it cost PostgreSQL 30 to 50 ms a report. A generated column, so
-- that no writer can let it disagree with timepoints.
ALTER TABLE registry_infusion ADD COLUMN timepoints_text text GENERATED ALWAYS AS (timepoints::text) STORED;
