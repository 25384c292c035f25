package followup_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/schedules"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// world is the registry as serve wires it, on a throwaway database, with a simulated clock.
type world struct {
	t *testing.T
	h *apptest.Harness
	// owners are the coordinators of sites, as the tracker the app wires is configured:
	// tests add a site's coordinator once they have made both.
	owners map[string]string
	db     *pgxpool.Pool
	store  *fhir.Store
	api    *fhir.API
	// searcher is the API's search, for hooks that match criteria (Subscriptions).
	searcher *fhir.Searcher
	reg      *registry.Registry
	now      time.Time
}

func newWorld(t *testing.T) *world {
	// The clock starts before any test's story does; each test sets the day it needs.
	w := &world{t: t, now: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), owners: map[string]string{}}
	h := apptest.New(t, apptest.WithClock(func() time.Time { return w.now }),
		apptest.WithConfig(func(c *app.Config) {
			c.FHIR.DefaultCount, c.FHIR.MaxCount = 10, 100
			c.FHIR.Bundles.MaxEntries = 100
			c.FollowUp = followup.Config{LeadDays: 14, Owners: w.owners}
			c.Subscriptions.Endpoints = loopbackHooks
		}))
	w.h, w.db, w.store, w.reg, w.searcher, w.api = h, h.DB, h.App.Store, h.App.Registry, h.App.Searcher, h.App.API
	return w
}

// post runs a transaction of the given resources and returns the ids they got, in order.
func (w *world) post(resources ...map[string]any) []string {
	w.t.Helper()
	entries := make([]any, len(resources))
	for i, r := range resources {
		entries[i] = map[string]any{"fullUrl": "urn:uuid:" + string(rune('a'+i)) + "0000000-0000-4000-8000-000000000000",
			"resource": r, "request": map[string]any{"method": "POST", "url": r["resourceType"]}}
	}
	raw, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": entries})
	out, err := w.api.ProcessBundle(context.Background(), raw, "")
	if err != nil {
		w.t.Fatalf("transaction refused: %v", err)
	}
	var resp struct {
		Entry []struct{ Response struct{ Location string } }
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		w.t.Fatal(err)
	}
	ids := make([]string, len(resp.Entry))
	for i, e := range resp.Entry {
		ids[i] = refOf(e.Response.Location)
	}
	return ids
}

// refOf turns "Patient/1/_history/1" into "Patient/1".
func refOf(location string) string {
	n, slashes := len(location), 0
	for i := len(location) - 1; i >= 0; i-- {
		if location[i] == '/' {
			slashes++
			if slashes == 2 {
				n = i
				break
			}
		}
	}
	return location[:n]
}

func urn(i int) string {
	return "urn:uuid:" + string(rune('a'+i)) + "0000000-0000-4000-8000-000000000000"
}

func ref(to string) map[string]any { return map[string]any{"reference": to} }

func cc(system, code string) map[string]any {
	return map[string]any{"coding": []any{map[string]any{"system": system, "code": code}}}
}

// enrol posts a site, a patient with DLBCL and an axi-cel infusion on day 0; it returns the
// patient, the condition and the infusion.
func (w *world) enrol(site, on string) (patient, condition, infusion string) {
	ids := w.post(
		map[string]any{"resourceType": "Patient", "gender": "male", "birthDate": "1961-05-02", "managingOrganization": ref(site)},
		map[string]any{"resourceType": "Condition", "subject": ref(urn(0)), "code": cc(registry.SystemICD10CM, "C83.30")},
		w.infusionOf(urn(0), urn(1), site, on),
	)
	return ids[0], ids[1], ids[2]
}

func (w *world) infusionOf(patient, condition, site, on string) map[string]any {
	return map[string]any{"resourceType": "Procedure", "status": "completed",
		"code": cc(registry.SystemCartreg, "cart-infusion"), "subject": ref(patient), "performedDateTime": on,
		"usedCode": []any{cc(registry.SystemProduct, "axi-cel")}, "reasonReference": []any{ref(condition)},
		"performer": []any{map[string]any{"actor": ref(site)}}}
}

func (w *world) assess(patient, infusion, on, category string) string {
	return w.post(map[string]any{"resourceType": "Observation", "status": "final",
		"code": cc(registry.SystemLOINC, registry.CodeDiseaseStat), "subject": ref(patient), "effectiveDateTime": on,
		"partOf": []any{ref(infusion)}, "valueCodeableConcept": cc(registry.SystemResponse, category)})[0]
}

func (w *world) die(patient, site, on string) {
	w.t.Helper()
	body := map[string]any{"resourceType": "Patient", "id": patient[len("Patient/"):], "gender": "male",
		"birthDate": "1961-05-02", "managingOrganization": ref(site), "deceasedDateTime": on}
	raw, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": []any{
		map[string]any{"resource": body, "request": map[string]any{"method": "PUT", "url": patient}}}})
	if _, err := w.api.ProcessBundle(context.Background(), raw, ""); err != nil {
		w.t.Fatalf("recording a death: %v", err)
	}
}

type taskRow struct {
	id, status, business, output string
	version                      int
}

// tasks lists the follow-up Tasks of an infusion by milestone, as the FHIR store has them.
func (w *world) tasks(infusion string) map[string]taskRow {
	w.t.Helper()
	rows, err := w.db.Query(context.Background(), `SELECT t.milestone, r.resource_id, r.version_id,
		v.body::jsonb->>'status', coalesce(v.body::jsonb#>>'{businessStatus,coding,0,code}', ''),
		coalesce(v.body::jsonb#>>'{output,0,valueReference,reference}', '')
		FROM followup_task t JOIN resource r ON r.resource_type = 'Task' AND r.resource_id = t.task_id
		JOIN resource_version v ON v.resource_type = r.resource_type AND v.resource_id = r.resource_id AND v.version_id = r.version_id
		WHERE t.infusion_type || '/' || t.infusion_id = $1`, infusion)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]taskRow{}
	for rows.Next() {
		var m string
		var r taskRow
		if err := rows.Scan(&m, &r.id, &r.version, &r.status, &r.business, &r.output); err != nil {
			w.t.Fatal(err)
		}
		out[m] = r
	}
	return out
}

func (w *world) count(sql string) int {
	w.t.Helper()
	var n int
	if err := w.db.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		w.t.Fatal(err)
	}
	return n
}

func date(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

// Five simulated years, one scheduler run a day, as the scheduler job runs them (a slot each):
// Tasks appear at their lead time, turn due and overdue on the right day, complete when the
// assessment arrives, and are cancelled by a death or superseded by a re-infusion.
func TestFiveSimulatedYears(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	site := w.post(map[string]any{"resourceType": "Organization", "name": "Riverside Cancer Centre"})[0]
	coordinatorSite := w.post(map[string]any{"resourceType": "Organization", "name": "Harbour Hospital"})[0]
	const day0 = "2024-01-10"
	w.now = date(day0)
	assessed, _, assessedInf := w.enrol(site, day0)         // assessed at months 1 and 3, then missing
	dying, _, dyingInf := w.enrol(site, day0)               // dies on day 200
	silent, _, silentInf := w.enrol(coordinatorSite, day0)  // never assessed
	retreated, retreatedDx, firstInf := w.enrol(site, day0) // re-infused on day 150
	cured, _, curedInf := w.enrol(site, day0)               // in complete remission at every visit
	visitDays := map[string]bool{}
	for _, m := range w.reg.Plan().Milestones {
		visitDays[date(day0).AddDate(0, 0, m.TargetDay).Format(time.DateOnly)] = true
	}
	_ = silent

	coordinator := w.post(map[string]any{"resourceType": "Practitioner", "name": []any{map[string]any{"family": "Okafor", "given": []any{"Ada"}}}})[0]
	w.owners[coordinatorSite[len("Organization/"):]] = coordinator
	planner := w.h.App.FollowUp
	sched := schedules.New(w.db, slog.New(slog.NewTextHandler(io.Discard, nil)), schedules.Options{})
	job := schedules.Job{Name: "follow-up", Spec: "0 6 * * *", Run: func(ctx context.Context, slot time.Time) error {
		_, err := planner.Run(ctx, slot)
		return err
	}}

	var secondInf, m1Observation string
	seen := map[string]map[string]string{} // milestone -> business status -> first day seen, of the silent patient
	for d := date(day0); !d.After(date("2029-03-01")); d = d.AddDate(0, 0, 1) {
		w.now = d
		switch d.Format(time.DateOnly) {
		case "2024-02-09": // day 30
			m1Observation = w.assess(assessed, assessedInf, "2024-02-09", "lugano-cmr")
		case "2024-04-09": // day 90
			w.assess(assessed, assessedInf, "2024-04-09", "lugano-cmr")
		case "2024-06-08": // day 150
			secondInf = w.post(w.infusionOf(retreated, retreatedDx, site, "2024-06-08"))[0]
		case "2024-07-28": // day 200
			w.die(dying, site, "2024-07-28")
		}
		if today := d.Format(time.DateOnly); visitDays[today] {
			w.assess(cured, curedInf, today, "lugano-cmr")
		}
		slot := d.Add(6 * time.Hour)
		ran, err := sched.RunSlot(ctx, job, slot)
		if err != nil || !ran {
			t.Fatalf("%s: ran %v, %v", d.Format(time.DateOnly), ran, err)
		}
		for m, task := range w.tasks(silentInf) {
			if seen[m] == nil {
				seen[m] = map[string]string{}
			}
			if _, ok := seen[m][task.business]; !ok {
				seen[m][task.business] = d.Format(time.DateOnly)
			}
		}
	}

	// The silent patient's month-1 window is days 23–45: created 14 days before it opens, due
	// on day 23, overdue on day 46; year 5 (days 1795–1855) likewise.
	for m, want := range map[string][3]string{
		"m1": {"2024-01-19", "2024-02-02", "2024-02-25"},
		"y5": {"2028-11-25", "2028-12-09", "2029-02-08"},
	} {
		got := [3]string{seen[m][followup.Upcoming], seen[m][followup.Due], seen[m][followup.Overdue]}
		if got != want {
			t.Errorf("silent patient's %s: upcoming, due, overdue first on %v, want %v", m, got, want)
		}
	}
	silentTasks := w.tasks(silentInf)
	if len(silentTasks) != 7 {
		t.Errorf("silent patient has %d Tasks, want one per milestone (7)", len(silentTasks))
	}

	got := w.tasks(assessedInf)
	if got["m1"].status != "completed" || got["m1"].output != m1Observation || got["m3"].status != "completed" {
		t.Errorf("assessed patient's month 1 and 3: %+v, %+v (observation %s)", got["m1"], got["m3"], m1Observation)
	}
	if got["y1"].status != "requested" || got["y1"].business != followup.Overdue || len(got) != 7 {
		t.Errorf("assessed patient's Tasks: %+v", got)
	}

	got = w.tasks(dyingInf)
	if len(got) != 2 || got["m1"].status != "cancelled" || got["m3"].status != "cancelled" {
		t.Errorf("after a death on day 200 the Tasks should be month 1 and 3, cancelled: %+v", got)
	}

	got = w.tasks(firstInf)
	if len(got) != 2 || got["m1"].status != "cancelled" || got["m3"].status != "cancelled" {
		t.Errorf("a re-infusion on day 150 cancels the first course's open Tasks and stops new ones: %+v", got)
	}
	// The second sequence, from 2024-06-08, has reached year 4's lead time (2028-04-24), not
	// year 5's (2029-04-24).
	if got := w.tasks(secondInf); len(got) != 6 || got["y5"].id != "" {
		t.Errorf("the second infusion's own sequence: %+v", got)
	}

	if n := w.count(`SELECT count(*) FROM resource WHERE resource_type = 'Task'`); n != 7+7+7+2+2+6 {
		t.Errorf("%d Tasks in the store, want 31: one per visit", n)
	}
	for m, task := range w.tasks(curedInf) {
		if task.status != "completed" {
			t.Errorf("the patient assessed at every visit: %s is %+v", m, task)
		}
	}

	t.Run("the last milestone reached alive and progression-free", func(t *testing.T) {
		for _, c := range []struct {
			patient, last string
			fiveYears     bool
			state         string
		}{
			{cured, "y5", true, "in follow-up"},
			{assessed, "m3", false, "in follow-up"}, // last seen at the month 3 assessment
			{silent, "", false, "in follow-up"},     // never seen after the infusion
			{dying, "", false, "died"},
		} {
			st, ok, err := planner.Status(ctx, w.db, c.patient[len("Patient/"):], w.now)
			if err != nil || !ok || len(st.Sequences) != 1 {
				t.Fatalf("%s: %+v, %v, %v", c.patient, st, ok, err)
			}
			sq := st.Sequences[0]
			last := ""
			if sq.LastReached != nil {
				last = sq.LastReached.Code
			}
			if last != c.last || st.FiveYearSurvivalReached != c.fiveYears || sq.State != c.state {
				t.Errorf("%s: last reached %q, five years %v, %s; want %q, %v, %s", c.patient, last,
					st.FiveYearSurvivalReached, sq.State, c.last, c.fiveYears, c.state)
			}
		}
		st, _, _ := planner.Status(ctx, w.db, retreated[len("Patient/"):], w.now)
		if len(st.Sequences) != 2 || st.Sequences[0].State != "re-treated" || st.Sequences[1].State != "in follow-up" {
			t.Errorf("the re-treated patient: %+v", st)
		}
	})

	t.Run("the Tasks are valid FHIR R4", func(t *testing.T) {
		rows, err := w.db.Query(ctx, `SELECT v.body FROM resource r JOIN resource_version v USING (resource_type, resource_id)
			WHERE r.resource_type = 'Task'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var body string
			if err := rows.Scan(&body); err != nil {
				t.Fatal(err)
			}
			if _, err := fhir.Parse([]byte(body)); err != nil {
				t.Fatalf("%v\n%s", err, body)
			}
		}
	})

	t.Run("the coordinator owns the Tasks of a site that names one", func(t *testing.T) {
		if n := w.count(`SELECT count(*) FROM followup_task t JOIN resource r ON r.resource_type = 'Task' AND r.resource_id = t.task_id
			JOIN resource_version v ON v.resource_type = 'Task' AND v.resource_id = t.task_id AND v.version_id = r.version_id
			WHERE v.body::jsonb#>>'{owner,reference}' = '` + coordinator + `'`); n != 7 {
			t.Errorf("%d Tasks owned by %s, want the silent patient's 7", n, coordinator)
		}
	})

	versions := func() int { return w.count(`SELECT count(*) FROM resource_version`) }

	t.Run("the same day again changes nothing", func(t *testing.T) {
		before := versions()
		sum, err := planner.Run(ctx, w.now)
		if err != nil || sum.Created+sum.Updated != 0 || versions() != before {
			t.Errorf("second run of a day: %v, %v; %d versions, %d before", sum, err, versions(), before)
		}
	})

	t.Run("two replicas run one slot once", func(t *testing.T) {
		w.now = w.now.AddDate(0, 0, 40)
		other := schedules.New(w.db, slog.New(slog.NewTextHandler(io.Discard, nil)), schedules.Options{})
		var wg sync.WaitGroup
		ran := make([]bool, 2)
		errs := make([]error, 2)
		for i, s := range []*schedules.Scheduler{sched, other} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ran[i], errs[i] = s.RunSlot(ctx, job, w.now)
			}()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil || ran[0] == ran[1] {
			t.Errorf("ran %v, errors %v", ran, errs)
		}
		// Even without the lock, two runs at once that both want a new Task (the second
		// sequence's year 5, from 2029-04-24) make it once: the unique key refuses the other.
		w.now = date("2029-04-30")
		var wg2 sync.WaitGroup
		for range 2 {
			wg2.Add(1)
			go func() {
				defer wg2.Done()
				_, _ = planner.Run(ctx, w.now)
			}()
		}
		wg2.Wait()
		if n := w.count(`SELECT count(*) FROM resource WHERE resource_type = 'Task'`); n != 32 {
			t.Errorf("%d Tasks after concurrent runs, want 32", n)
		}
		if got := w.tasks(secondInf); got["y5"].business != followup.Upcoming {
			t.Errorf("second sequence's year 5: %+v", got["y5"])
		}
	})

	t.Run("a coordinator's change is never overwritten", func(t *testing.T) {
		task := w.tasks(silentInf)["y5"]
		var raw string
		if err := w.db.QueryRow(ctx, `SELECT body FROM resource_version WHERE resource_type = 'Task' AND resource_id = $1
			AND version_id = $2`, task.id, task.version).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		if err := json.Unmarshal([]byte(raw), &body); err != nil {
			t.Fatal(err)
		}
		body["status"] = "on-hold"
		body["statusReason"] = map[string]any{"text": "patient moved abroad; trying to reach the new oncologist"}
		delete(body, "meta")
		bundle, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "transaction", "entry": []any{
			map[string]any{"resource": body, "request": map[string]any{"method": "PUT", "url": "Task/" + task.id}}}})
		if _, err := w.api.ProcessBundle(ctx, bundle, ""); err != nil {
			t.Fatal(err)
		}
		sum, err := planner.Run(ctx, w.now.AddDate(0, 0, 2))
		after := w.tasks(silentInf)["y5"]
		if err != nil || after.status != "on-hold" || after.version != task.version+1 || sum.LeftToCoordinator == 0 {
			t.Errorf("after a coordinator put the Task on hold: %+v, %v, %v", after, sum, err)
		}
	})
}
