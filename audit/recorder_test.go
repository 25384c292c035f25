package audit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var (
	quiet = slog.New(slog.NewTextHandler(io.Discard, nil))
	t0    = time.Date(2025, 3, 14, 9, 26, 53, 589793000, time.UTC)
)

func fixedClock() time.Time { return t0 }

func newRecorder(t *testing.T, cfg Config) (*Recorder, *pgxpool.Pool) {
	t.Helper()
	db := pgtest.NewDatabase(t)
	r := NewRecorder(db, cfg, fixedClock, quiet)
	t.Cleanup(func() { r.Close(context.Background()) })
	return r, db
}

// sample is a plausible read of one patient's Observations.
func sample(i int) Event {
	return Event{
		Interaction: "search-type",
		Outcome:     200,
		Agent:       Agent{Kind: KindClient, Who: "site-a-ehr", Name: "Site A EHR", Role: "site-writer", Sites: []string{"org-a"}},
		Source:      "10.0.0.7",
		RequestID:   fmt.Sprintf("req-%d", i),
		Method:      "GET",
		Path:        "/fhir/Observation",
		Query:       fmt.Sprintf("patient=Patient/p%d&access_token=secret&code=97509-4", i),
		Entities:    []string{fmt.Sprintf("Observation/o%d", i)},
		Patients:    []string{fmt.Sprintf("p%d", i)},
	}
}

func countEvents(t *testing.T, db *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `SELECT count(*) FROM audit_event`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRecordCommitsAndRollsBackWithTheWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, db := newRecorder(t, Config{})

	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Record(ctx, tx, sample(1)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countEvents(t, db); n != 0 {
		t.Fatalf("%d events after a rolled-back write, want 0", n)
	}

	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error { return r.Record(ctx, tx, sample(2)) })
	if err != nil {
		t.Fatal(err)
	}
	if n := countEvents(t, db); n != 1 {
		t.Fatalf("%d events after a committed write, want 1", n)
	}
	var query, action string
	var recorded time.Time
	if err := db.QueryRow(ctx, `SELECT event->>'query', action, recorded FROM audit_event`).Scan(&query, &action, &recorded); err != nil {
		t.Fatal(err)
	}
	if query != "patient=Patient/p2&code=97509-4" {
		t.Errorf("stored query %q still carries the access token or lost a parameter", query)
	}
	if action != "R" {
		t.Errorf("action = %q, want R for a search", action)
	}
	if !recorded.Equal(t0.Truncate(time.Microsecond)) {
		t.Errorf("recorded = %v, want the injected clock's %v", recorded, t0)
	}
}

func TestStripAccessToken(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                                   "",
		"access_token=x":                     "",
		"a=1&access_token=x&b=2":             "a=1&b=2",
		"access%5Ftoken=x&name=M%C3%BCller":  "name=M%C3%BCller",
		"ACCESS_TOKEN=x&_count=5&access_tok": "_count=5&access_tok",
	} {
		if got := StripAccessToken(in); got != want {
			t.Errorf("StripAccessToken(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoggedEventsAreWrittenByFlushAndClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, db := newRecorder(t, Config{FlushInterval: time.Hour}) // only Flush and Close write
	r.Start(ctx)
	r.Log(sample(1))
	r.Log(sample(2))
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countEvents(t, db); n != 2 {
		t.Fatalf("%d events after Flush, want 2", n)
	}
	r.Log(sample(3))
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countEvents(t, db); n != 3 {
		t.Fatalf("%d events after Close, want 3", n)
	}
	r.Log(sample(4)) // after Close: written directly, not lost in a queue nobody reads
	if n := countEvents(t, db); n != 4 {
		t.Fatalf("%d events after a Log following Close, want 4", n)
	}
}

func TestLoggedEventsAreWrittenWithinTheFlushInterval(t *testing.T) {
	t.Parallel()
	r, db := newRecorder(t, Config{FlushInterval: 20 * time.Millisecond})
	r.Start(context.Background())
	r.Log(sample(1))
	deadline := time.Now().Add(5 * time.Second)
	for countEvents(t, db) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a logged event was not written without Flush or Close")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLogUnderLoadLosesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A small queue, so the writers meet back-pressure many times over.
	r, db := newRecorder(t, Config{QueueSize: 64})
	r.Start(ctx)
	const writers, each = 16, 625
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r.Log(sample(w*each + i))
			}
		}()
	}
	wg.Wait()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var total, distinct int
	if err := db.QueryRow(ctx, `SELECT count(*), count(DISTINCT request_id) FROM audit_event`).Scan(&total, &distinct); err != nil {
		t.Fatal(err)
	}
	if total != writers*each || distinct != writers*each {
		t.Fatalf("%d events (%d distinct) written, want %d", total, distinct, writers*each)
	}
}

func TestCloseWithoutStartWritesTheQueue(t *testing.T) {
	t.Parallel()
	r, db := newRecorder(t, Config{})
	r.Log(sample(1))
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := countEvents(t, db); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
}

func TestContentHashTellsFieldsApart(t *testing.T) {
	t.Parallel()
	base := normalize(sample(1), fixedClock)
	base.ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
	h := contentHash(base)
	// Moving a character from one field to its neighbour must change the hash.
	moved := base
	moved.Method, moved.Path = base.Method+"/", base.Path[1:]
	changed := base
	changed.Patients = []string{"p1", ""}
	for name, ev := range map[string]Event{"moved": moved, "changed": changed} {
		if string(contentHash(ev)) == string(h) {
			t.Errorf("%s event hashes like the original", name)
		}
	}
}

func TestLoggedEventsSurviveADatabaseFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, db := newRecorder(t, Config{FlushInterval: 5 * time.Millisecond})
	if _, err := db.Exec(ctx, `ALTER TABLE audit_event RENAME TO audit_event_away`); err != nil {
		t.Fatal(err)
	}
	r.Start(ctx)
	for i := range 20 {
		r.Log(sample(i))
	}
	time.Sleep(300 * time.Millisecond) // several failed inserts and retries
	if _, err := db.Exec(ctx, `ALTER TABLE audit_event_away RENAME TO audit_event`); err != nil {
		t.Fatal(err)
	}
	closeCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := r.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	if n := countEvents(t, db); n != 20 {
		t.Fatalf("%d events after the database came back, want 20", n)
	}
}
