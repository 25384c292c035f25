package web

import (
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
)

type jobRun struct {
	Job, Error    string
	Slot, Started time.Time
	Finished      *time.Time
}

type failedDelivery struct {
	Kind, Channel, LastError string
	Attempts                 int
	FailedAt                 time.Time
}

type statusPage struct {
	Schema          int
	Runs            []jobRun
	TasksByState    map[string]int // the scheduler's last word on each Task
	Pending, Failed int
	Failures        []failedDelivery
	Users, Sessions int
}

// status is the operator's page: the schema, the periodic jobs' last runs, the follow-up
// Tasks by state, and deliveries given up on (never their bodies or headers).
func (p *Pages) status(c echo.Context) error {
	ctx := c.Request().Context()
	db := p.d.Store.DB()
	var s statusPage
	if err := db.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM public.schema_version`).Scan(&s.Schema); err != nil {
		return fmt.Errorf("reading the schema version: %w", err)
	}
	rows, err := db.Query(ctx, `SELECT DISTINCT ON (job) job, slot, started_at, finished_at, coalesce(error, '')
		FROM schedule_run ORDER BY job, slot DESC`)
	if err != nil {
		return fmt.Errorf("reading the job runs: %w", err)
	}
	if s.Runs, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (jobRun, error) {
		var j jobRun
		return j, r.Scan(&j.Job, &j.Slot, &j.Started, &j.Finished, &j.Error)
	}); err != nil {
		return fmt.Errorf("reading the job runs: %w", err)
	}
	s.TasksByState = map[string]int{}
	rows, err = db.Query(ctx, `SELECT status || CASE WHEN business_status <> '' THEN ' (' || business_status || ')' ELSE '' END, count(*)
		FROM followup_task GROUP BY 1 ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("counting Tasks: %w", err)
	}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			return err
		}
		s.TasksByState[k] = n
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("counting Tasks: %w", err)
	}
	if err := db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE next_attempt_at IS NOT NULL), count(*) FILTER (WHERE failed_at IS NOT NULL)
		FROM delivery_message`).Scan(&s.Pending, &s.Failed); err != nil {
		return fmt.Errorf("counting deliveries: %w", err)
	}
	rows, err = db.Query(ctx, `SELECT kind, channel, coalesce(last_error, ''), attempts, failed_at FROM delivery_message
		WHERE failed_at IS NOT NULL ORDER BY failed_at DESC LIMIT 20`)
	if err != nil {
		return fmt.Errorf("reading failed deliveries: %w", err)
	}
	if s.Failures, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (failedDelivery, error) {
		var f failedDelivery
		return f, r.Scan(&f.Kind, &f.Channel, &f.LastError, &f.Attempts, &f.FailedAt)
	}); err != nil {
		return fmt.Errorf("reading failed deliveries: %w", err)
	}
	if err := db.QueryRow(ctx, `SELECT (SELECT count(*) FROM web_user WHERE disabled_at IS NULL), (SELECT count(*) FROM web_session)`).
		Scan(&s.Users, &s.Sessions); err != nil {
		return fmt.Errorf("counting users: %w", err)
	}
	return p.page(c, http.StatusOK, "status", pageData{Title: "Server status", Nav: "status", Data: s})
}

// timeline is one patient's follow-up on a page: each infusion's sequence, its milestones
// with their Tasks and responses, and the state it is in.
func (p *Pages) timeline(c echo.Context) error {
	ctx := c.Request().Context()
	pr, _ := auth.FromContext(ctx)
	id := c.Param("id")
	notFound := fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, fmt.Sprintf("Patient/%s is not known", id))
	if !fhir.ValidID(id) {
		return p.errorPage(c, notFound)
	}
	if pr.Role == auth.RoleCoordinator {
		ok, err := p.d.InSites(ctx, "Patient", id, pr.Sites)
		if err != nil {
			return err
		}
		if !ok {
			return p.errorPage(c, notFound)
		}
	}
	st, ok, err := p.d.FollowUp.Status(ctx, p.d.Store.DB(), id, p.d.Clock())
	if err != nil {
		return err
	}
	if !ok {
		return p.errorPage(c, fhir.NewOutcome(http.StatusNotFound, fhir.NotFound, fmt.Sprintf("Patient/%s has no CAR-T infusion in the registry", id)))
	}
	rep, err := p.worklist.List(ctx, patientQuery(id))
	if err != nil {
		return err
	}
	name := "Patient/" + id
	if len(rep.Items) > 0 && rep.Items[0].Patient.Name != "" {
		name = rep.Items[0].Patient.Name
	}
	return p.page(c, http.StatusOK, "timeline", pageData{Title: name, Nav: "work",
		Data: map[string]any{"Status": st, "Open": rep.Items, "PatientID": id}})
}
