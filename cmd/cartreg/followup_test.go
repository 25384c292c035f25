package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/postgres/pgtest"
)

// An operator's one-shot run, as of a date of their choosing, on the five example patients:
// Tasks are made, a second run for the same time changes nothing, and the coordinators' digest
// reaches the webhook.
func TestScheduleRunAt(t *testing.T) {
	t.Parallel()
	url := pgtest.NewEmptyDatabaseURL(t)
	var mu sync.Mutex
	var digests []map[string]any
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var b map[string]any
		if json.Unmarshal(raw, &b) != nil || r.Header.Get("X-Cartreg-Owner") == "" {
			http.Error(w, "not a digest", http.StatusBadRequest)
			return
		}
		mu.Lock()
		digests = append(digests, b)
		mu.Unlock()
	}))
	defer receiver.Close()
	env := []string{"CARTREG_DATABASE_URL=" + url, "CARTREG_LOG_LEVEL=warn", "CARTREG_DIGEST_WEBHOOK=" + receiver.URL}
	if out, err := runCartreg(t, env, "demo"); err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	out, err := runCartreg(t, env, "schedule", "run", "-at", "2027-03-01T06:00:00Z", "-force")
	if err != nil {
		t.Fatalf("schedule run: %v\n%s", err, out)
	}
	// On 1 March 2027 the transformed FL patient (infused 2023-11-22) has missed the year 3
	// visit (window closed 2026-12-21), the myeloma patient (2024-03-12) is due for year 3, and
	// every earlier visit of the examples has its assessment.
	if !strings.Contains(out, "follow-up run as of 2027-03-01T06:00:00Z") || !strings.Contains(out, "2 open, 1 overdue") ||
		!strings.Contains(out, "2 delivered") {
		t.Errorf("schedule run said:\n%s", out)
	}
	const taskVersions = `SELECT task_id || ':' || status || ':' || business_status, written_version FROM followup_task`
	tasks := countsIn(t, url, taskVersions)
	if len(tasks) == 0 {
		t.Fatalf("no follow-up Tasks after the run")
	}
	again, err := runCartreg(t, env, "schedule", "run", "-at", "2027-03-01T06:00:00Z", "-force")
	if err != nil || !strings.Contains(again, "not started") {
		t.Errorf("the same run again: %v\n%s", err, again)
	}
	if got := countsIn(t, url, taskVersions); !maps.Equal(got, tasks) {
		t.Errorf("Tasks changed by a repeated run: %v, then %v", tasks, got)
	}
	mu.Lock()
	defer mu.Unlock()
	// No coordinators are configured: each site owns its Tasks, and each got its digest.
	if len(digests) != 2 || len(digests[0]["entry"].([]any)) != 1 || len(digests[1]["entry"].([]any)) != 1 {
		t.Errorf("digests received: %v", digests)
	}
	listing, err := runCartreg(t, env, "schedule", "deliveries", "-state", "delivered")
	if err != nil || strings.Count(listing, "\ndelivered  digest") != 2 {
		t.Errorf("schedule deliveries: %v\n%s", err, listing)
	}
	if out, err := runCartreg(t, env, "schedule", "deliveries", "-state", "lost"); err == nil {
		t.Errorf("an unknown state was accepted:\n%s", out)
	}
	if _, err := runCartreg(t, env, "schedule", "run", "-at", "yesterday"); err == nil {
		t.Error("a bad -at was accepted")
	}
}

// Two replicas started on one registry catch up on the day's missed run once between them, and
// serve each patient's follow-up.
func TestServeCatchesUpOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	url := pgtest.NewEmptyDatabaseURL(t)
	env := []string{"CARTREG_DATABASE_URL=" + url, "CARTREG_LOG_LEVEL=info", testBaseURL}
	if out, err := runCartreg(t, env, "demo"); err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	a, b := startCartreg(t, env, "serve"), startCartreg(t, env, "serve")
	addr := a.waitReady(time.Minute)
	b.waitReady(time.Minute)
	deadline := time.Now().Add(time.Minute)
	for countsIn(t, url, `SELECT job, count(*) FROM schedule_run WHERE finished_at IS NOT NULL GROUP BY 1`)["follow-up"] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no follow-up run after start-up:\n%s\n%s", a.logs(), b.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The B-ALL patient of 2016, in remission at every yearly visit: five years reached.
	var patient string
	for id := range countsIn(t, url, `SELECT patient_id, 1 FROM registry_infusion WHERE infused_on = '2016-06-14'`) {
		patient = id
	}
	admin := newClientToken(t, env, "admin")
	res := authGet(t, admin, addr+"/follow-up/Patient/"+patient)
	var status struct {
		FiveYears bool `json:"five_year_survival_reached"`
		Sequences []struct {
			LastReached struct{ Code string } `json:"last_milestone_reached"`
		}
	}
	err := json.NewDecoder(res.Body).Decode(&status)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 || !status.FiveYears || len(status.Sequences) != 1 || status.Sequences[0].LastReached.Code != "y5" {
		t.Errorf("follow-up of Patient/%s: %d %+v %v", patient, res.StatusCode, status, err)
	}
	if res := authGet(t, admin, addr+"/follow-up/Patient/nobody"); res.StatusCode != 404 {
		t.Errorf("follow-up of an unknown patient: %v", res)
	}
	// The coordinators' calendar, on the real clock: the transformed FL patient's year 3 visit
	// (window 2026-10-22 to 2026-12-21) has no assessment, so from late 2026 on there is always
	// an open Task, due or overdue.
	res = authGet(t, admin, addr+"/worklist.ics")
	ics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/calendar") ||
		!strings.Contains(string(ics), "BEGIN:VEVENT") {
		t.Errorf("worklist.ics: %d %s\n%s", res.StatusCode, res.Header.Get("Content-Type"), ics)
	}
	for _, p := range []*process{a, b} {
		if err := p.stop(syscall.SIGTERM); err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	}
	runs := strings.Count(a.logs(), `"msg":"follow-up run"`) + strings.Count(b.logs(), `"msg":"follow-up run"`)
	jobs := countsIn(t, url, `SELECT job, count(*) FROM schedule_run GROUP BY 1`)
	if runs != 1 || jobs["follow-up"] != 1 || jobs["delivery-prune"] != 1 {
		t.Errorf("%d follow-up runs logged, want 1; runs per job %v:\n%s\n%s", runs, jobs, a.logs(), b.logs())
	}
}

// tableCounts is the number of rows in every table of the database at url.
func tableCounts(t *testing.T, url string) map[string]int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name)
		FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, table := range tables {
		var n int
		if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[table] = n
	}
	return out
}

// A run as of a future day is refused without -force; -dry-run shows what it would write and
// writes nothing (every table's row count unchanged); the forced run then makes what the dry
// run showed.
func TestScheduleRunDryRunAndForce(t *testing.T) {
	t.Parallel()
	url := pgtest.NewEmptyDatabaseURL(t)
	env := []string{"CARTREG_DATABASE_URL=" + url, "CARTREG_LOG_LEVEL=warn"}
	if out, err := runCartreg(t, env, "demo"); err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	before := tableCounts(t, url)
	const future = "2099-03-01T06:00:00Z"
	out, err := runCartreg(t, env, "schedule", "run", "-at", future)
	if err == nil || !strings.Contains(out, "later than now") || !strings.Contains(out, "-force") || !strings.Contains(out, "-dry-run") {
		t.Errorf("a run in the future without -force: %v\n%s", err, out)
	}
	dry, err := runCartreg(t, env, "schedule", "run", "-at", future, "-dry-run")
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, dry)
	}
	if after := tableCounts(t, url); !maps.Equal(before, after) {
		for table, n := range after {
			if before[table] != n {
				t.Errorf("the dry run changed %s: %d rows, then %d", table, before[table], n)
			}
		}
	}
	creates := strings.Count(dry, "\ncreate ")
	if creates == 0 || !strings.Contains(dry, fmt.Sprintf("would write: %d created", creates)) || !strings.Contains(dry, "digests (not sent") ||
		!strings.Contains(dry, "Organization/") {
		t.Errorf("the dry run said:\n%s", dry)
	}
	if out, err := runCartreg(t, env, "schedule", "run", "-at", future, "-force"); err != nil || !strings.Contains(out, "follow-up run as of "+future) {
		t.Fatalf("forced run: %v\n%s", err, out)
	}
	if tasks := countsIn(t, url, `SELECT 'tasks', count(*) FROM followup_task`)["tasks"]; tasks != creates {
		t.Errorf("the run made %d Tasks, the dry run showed %d", tasks, creates)
	}
}

// schedule run's summary counts Tasks as their current versions say: a Task a coordinator
// marked failed is neither open nor overdue, though the scheduler last wrote it overdue.
func TestScheduleRunCountsCoordinatorsVersions(t *testing.T) {
	t.Parallel()
	url := pgtest.NewEmptyDatabaseURL(t)
	env := []string{"CARTREG_DATABASE_URL=" + url, "CARTREG_LOG_LEVEL=warn"}
	if out, err := runCartreg(t, env, "demo"); err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	out, err := runCartreg(t, env, "schedule", "run", "-at", "2027-03-01T06:00:00Z", "-force")
	if err != nil || !strings.Contains(out, "2 open, 1 overdue") {
		t.Fatalf("schedule run: %v\n%s", err, out)
	}
	// The coordinator's change, as a new version of the overdue Task.
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	err = conn.QueryRow(context.Background(), `SELECT v.body FROM followup_task t
		JOIN resource r ON r.resource_type = 'Task' AND r.resource_id = t.task_id
		JOIN resource_version v ON v.resource_type = r.resource_type AND v.resource_id = r.resource_id AND v.version_id = r.version_id
		WHERE t.business_status = 'overdue'`).Scan(&body)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var task map[string]any
	if err := json.Unmarshal(body, &task); err != nil {
		t.Fatal(err)
	}
	delete(task, "meta")
	task["status"] = "failed"
	task["statusReason"] = map[string]any{"text": "the patient moved abroad"}
	line, _ := json.Marshal(task)
	file := filepath.Join(t.TempDir(), "task.ndjson")
	if err := os.WriteFile(file, append(line, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runCartreg(t, env, "import", file); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	out, err = runCartreg(t, env, "schedule", "run", "-at", "2027-03-02T06:00:00Z", "-force")
	if err != nil || !strings.Contains(out, "1 open, 0 overdue") {
		t.Errorf("schedule run after a coordinator failed the overdue Task: %v\n%s", err, out)
	}
}
