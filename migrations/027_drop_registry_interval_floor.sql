-- The response report now works out each course's standing at the milestones in Go, from the
-- day counts themselves (package registry, standingDays), and no longer groups courses by
-- the interval of the plan's window bounds their day counts fall in: nothing calls this.
DROP FUNCTION registry_interval_floor(integer, integer[]);
