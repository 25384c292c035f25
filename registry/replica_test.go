package registry_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry"
)

// With a read replica configured, outcomes are answered from it: while the standby's replay
// is paused a new patient is invisible to them, and once it resumes and catches up the
// patient counts. Writes go to the primary throughout.
func TestOutcomesAreReadFromTheReplica(t *testing.T) {
	tr := newTestRegistryWith(t, func(c *app.Config) { c.Registry = registry.Config{MinCell: 1} }, apptest.WithReadReplica())
	ctx := context.Background()
	var standby bool
	if err := tr.h.App.ReadDB.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil || !standby {
		t.Fatalf("the read pool is not on a standby: %v %v", standby, err)
	}
	outcomeCohort(t, tr)
	pgtest.WaitForReplay(t, tr.h.ReplicaURL)
	n := func() any {
		t.Helper()
		g := tr.expect(200, "GET", "/registry/outcomes/survival?disease=lbcl", nil).json(t)["groups"].([]any)[0]
		return g.(map[string]any)["n"]
	}
	if got := n(); got != 6.0 {
		t.Fatalf("lymphoma patients on the replica: %v, want 6", got)
	}

	replica, err := pgx.Connect(ctx, tr.h.ReplicaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer replica.Close(ctx)
	if _, err := replica.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			replica.Exec(ctx, "SELECT pg_wal_replay_resume()")
		}
	}()
	tr.expect(200, "POST", "/fhir", transaction(
		post("urn:uuid:site", organization("Riverside")),
		post("urn:uuid:pat", patient("urn:uuid:site")),
		post("urn:uuid:dx", condition("urn:uuid:pat", "C83.30")),
		post("urn:uuid:inf", infusion("urn:uuid:pat", "urn:uuid:dx", "urn:uuid:site", "2025-03-01", "axi-cel"))))
	if got := tr.count(`SELECT count(*) FROM registry_infusion WHERE disease = 'lbcl'`); got != 7 {
		t.Fatalf("the primary has %d lymphoma infusions, want 7", got)
	}
	if got := n(); got != 6.0 {
		t.Errorf("outcomes counted %v lymphoma patients while the replica's replay was paused: not read from the replica", got)
	}
	if _, err := replica.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatal(err)
	}
	resumed = true
	pgtest.WaitForReplay(t, tr.h.ReplicaURL)
	if got := n(); got != 7.0 {
		t.Errorf("after replay: %v lymphoma patients, want 7", got)
	}
}

// A read URL that is not a standby is refused at start: it would hide the mistake.
func TestReadURLMustBeAStandby(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabaseURL(t)
	pool := pgtest.NewDatabase(t)
	_, err := app.New(context.Background(), app.Config{ReadURL: url}, pool, nil, apptest.Logger(t))
	if err == nil {
		t.Fatal("a primary accepted as the read replica")
	}
}
