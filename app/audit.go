package app

import (
	"context"
	"net/http"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/cartreg/cartreg/access"
	"github.com/cartreg/cartreg/audit"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/web"
)

// requestAudit is what the audit middleware knows of a request, shared with the write hook
// through the request's context: a write records the request's event in its own transaction,
// and the middleware then records nothing more.
type requestAudit struct {
	event audit.Event
	mu    sync.Mutex
	txs   map[pgx.Tx]bool // the transactions that recorded the event
}

type requestAuditKey struct{}

func auditOf(ctx context.Context) *requestAudit {
	ra, _ := ctx.Value(requestAuditKey{}).(*requestAudit)
	return ra
}

// auditRequests records one audit event for every request that is not public: reads and
// refusals through the recorder's batched queue once the response is known, writes in their
// own transaction (by auditWrites). It runs before authentication, so refused tokens are
// recorded too.
func (a *App) auditRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if access.IsPublic(c) && c.Path() != auth.PathToken {
			return next(c)
		}
		req := c.Request()
		interaction := interactionOf(c)
		ra := &requestAudit{txs: map[pgx.Tx]bool{}, event: audit.Event{
			Action:      audit.ActionFor(interaction),
			Interaction: interaction,
			Source:      c.RealIP(),
			RequestID:   c.Response().Header().Get(echo.HeaderXRequestID),
			Method:      req.Method,
			Path:        req.URL.Path,
			Query:       web.RedactFeedToken(req.URL.RawQuery),
			Entities:    entitiesOf(c),
			Patients:    patientsOf(c),
		}}
		ctx := context.WithValue(req.Context(), requestAuditKey{}, ra)
		if interaction == "transaction" {
			// A POST to the base is a transaction or a batch, as its Bundle says: FHIR has a
			// code for each.
			ctx = fhir.WithBundleTypeObserver(ctx, func(bundleType string) {
				ra.mu.Lock()
				defer ra.mu.Unlock()
				ra.event.Interaction, ra.event.Action = bundleType, audit.ActionFor(bundleType)
			})
		}
		c.SetRequest(req.WithContext(ctx))
		// The error is rendered here, through the server's one error handler, so the record
		// has the status the client got (a body read error is a 400 there, not a 500 here).
		if err := next(c); err != nil {
			c.Error(err)
		}
		status := c.Response().Status
		ra.mu.Lock()
		recorded, ev := len(ra.txs) > 0, ra.event
		ra.mu.Unlock()
		if recorded && status < 400 {
			return nil
		}
		ev.Agent = agentOf(c.Request().Context())
		ev.Outcome = status
		if status >= 400 {
			ev.OutcomeText = http.StatusText(status)
		}
		a.Audit.Log(ev)
		return nil
	}
}

// auditWrites is the write hook that records, in each write's transaction, who wrote what:
// the request's event when an HTTP request caused it, otherwise the operator's or the
// server's own (a command, the scheduler).
type auditWrites struct{ recorder *audit.Recorder }

func (h auditWrites) BeforeCommit(ctx context.Context, tx pgx.Tx, changes []fhir.Change) error {
	if fhir.IsDryRun(ctx) {
		// $validate: nothing will be written, so the request is recorded as the operation it
		// is, by auditRequests, and not as the writes it tried out.
		return nil
	}
	ra := auditOf(ctx)
	var ev audit.Event
	if ra != nil {
		ra.mu.Lock()
		done := ra.txs[tx]
		ra.txs[tx] = true
		ev = ra.event
		ra.mu.Unlock()
		if done {
			return nil // a later round of the hooks: the server's own consequences of the write
		}
		// The write commits with this record, so it succeeded: as the response will say.
		ev.Outcome = http.StatusOK
		if ev.Interaction == "create" {
			ev.Outcome = http.StatusCreated
		}
	} else {
		// A command or a scheduled job: its principal (an operator) is on ctx.
		ev = audit.Event{Interaction: "batch", Action: actionOf(changes), Outcome: http.StatusOK}
	}
	ev.Agent = agentOf(ctx)
	ev.Entities, ev.Patients = nil, nil
	seenPatient := map[string]bool{}
	for _, ch := range changes {
		ev.Entities = append(ev.Entities, ch.Type+"/"+ch.ID)
		for _, p := range patientsIn(ch) {
			if !seenPatient[p] {
				seenPatient[p] = true
				ev.Patients = append(ev.Patients, p)
			}
		}
	}
	sql, args, err := h.recorder.Insert(ev)
	if err != nil {
		return err
	}
	return fhir.SendWithNext(ctx, tx, "recording an audit event", sql, args...)
}

// agentOf is the request's principal as the audit trail names it.
func agentOf(ctx context.Context) audit.Agent {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return audit.Agent{Kind: audit.KindAnonymous}
	}
	ag := audit.Agent{Kind: p.Kind, Who: p.Subject, Name: p.Name, Role: string(p.Role), Sites: p.Sites}
	if p.Kind == auth.KindUser {
		if iss, _, ok := strings.Cut(p.Subject, "|"); ok {
			ag.Issuer = iss
		}
	}
	return ag
}

// interactionOf names what a request does, as FHIR's restful-interaction codes do.
func interactionOf(c echo.Context) string {
	method, path := c.Request().Method, c.Path()
	switch {
	case path == auth.PathToken:
		return "login"
	case !strings.HasPrefix(path, "/fhir"):
		return "operation" // work lists, a patient's follow-up, outcomes
	case strings.Contains(path, "$"):
		return "operation"
	case path == "/fhir" && method == http.MethodPost:
		return "transaction"
	case path == "/fhir":
		return "search-system"
	case strings.HasSuffix(path, "/_history/:vid"):
		return "vread"
	case path == "/fhir/_history":
		return "history-system"
	case strings.HasSuffix(path, "/:id/_history"):
		return "history-instance"
	case strings.HasSuffix(path, "/_history"):
		return "history-type"
	case strings.HasSuffix(path, "/_search"):
		return "search-type"
	}
	hasID := strings.HasSuffix(path, "/:id")
	switch method {
	case http.MethodGet, http.MethodHead:
		if hasID {
			return "read"
		}
		return "search-type"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return "operation"
}

// entitiesOf is the resource a request names in its path, if any.
func entitiesOf(c echo.Context) []string {
	typ, id := c.Param("type"), c.Param("id")
	if typ == "" && strings.HasPrefix(c.Path(), "/fhir/Patient/") || strings.HasPrefix(c.Path(), "/follow-up/Patient/") {
		typ = "Patient"
	}
	if strings.HasPrefix(c.Path(), "/fhir/AuditEvent") {
		typ = "AuditEvent"
	}
	if typ != "" && id != "" {
		return []string{typ + "/" + id}
	}
	return nil
}

// patientsOf is the patients a request names: in its path, or in its patient, subject or
// Patient _id search parameters.
func patientsOf(c echo.Context) []string {
	var out []string
	for _, e := range entitiesOf(c) {
		if id, ok := strings.CutPrefix(e, "Patient/"); ok {
			out = append(out, id)
		}
	}
	q := c.Request().URL.Query()
	for _, name := range []string{"patient", "subject", "patient:Patient", "subject:Patient"} {
		for _, v := range q[name] {
			for _, one := range strings.Split(v, ",") {
				one = strings.TrimPrefix(one, "Patient/")
				if one != "" && !strings.Contains(one, "/") {
					out = append(out, one)
				}
			}
		}
	}
	if c.Param("type") == "Patient" {
		for _, v := range q["_id"] {
			out = append(out, strings.Split(v, ",")...)
		}
	}
	return out
}

// patientsIn is the patient a written resource concerns: itself, or its subject or patient.
func patientsIn(ch fhir.Change) []string {
	if ch.Type == "Patient" {
		return []string{ch.ID}
	}
	var out []string
	for _, field := range []string{"subject", "patient", "for", "beneficiary"} {
		ref, _ := ch.Body[field].(map[string]any)
		if s, _ := ref["reference"].(string); strings.HasPrefix(s, "Patient/") {
			out = append(out, strings.TrimPrefix(s, "Patient/"))
		}
	}
	return out
}

// actionOf is what a set of writes did: delete if any was a deletion, create if all were
// first versions, update otherwise.
func actionOf(changes []fhir.Change) string {
	action := "C"
	for _, ch := range changes {
		switch {
		case ch.Body == nil:
			return "D"
		case ch.VersionID > 1:
			action = "U"
		}
	}
	return action
}
