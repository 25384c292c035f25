package followup_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/registry/synth"
)

// The digests after a registry's first run are planned on statistics that predate the Tasks
// the run made (autovacuum has not analysed them yet). Each notice's Task must still be read
// by its key: planned as a join on those statistics, the digests once read every Task
// version for every Task, once per owner (minutes at 30,000 infusions). The measure is the
// shared buffers the digests touch per notice, which does not depend on the machine's load.
func TestFirstRunDigestsReadEachTaskByItsKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	asOf := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	cohort, err := synth.Generate(synth.Options{Patients: 600, Seed: 20, AsOf: asOf})
	if err != nil {
		t.Fatal(err)
	}
	// Statistics from before the run, kept so: autovacuum would otherwise analyse the tables
	// whenever it came by.
	db, store, reg := planTestDatabase(t, cohort, asOf, nil, "resource", "resource_version", "followup_task", "followup_notice")
	// One coordinator for every site: one owner's digest of every notice, where reading every
	// Task for each of them costs most.
	owners := map[string]string{}
	for i := range cohort.Sites {
		owners[fmt.Sprintf("s%d", i)] = "Practitioner/coordinator"
	}
	planner := followup.New(followup.Config{LeadDays: 14, Owners: owners}, store, reg.Plan())
	if _, err := planner.Run(ctx, asOf); err != nil {
		t.Fatal(err)
	}
	var notices int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM followup_notice`).Scan(&notices); err != nil {
		t.Fatal(err)
	}
	if notices < 200 {
		t.Fatalf("%d notices after the first run: too few to tell a lookup by key from a scan", notices)
	}

	blocks := func() int64 { return blocksTouched(t, db) }
	before := blocks()
	queued, err := planner.Digests(ctx, asOf, followup.DigestConfig{Webhook: "http://127.0.0.1:9/digests"})
	if err != nil {
		t.Fatal(err)
	}
	spent := blocks() - before
	if queued == 0 {
		t.Fatal("no digest queued")
	}
	// A notice's Task and patient by key are a few index pages and a heap page each, and
	// marking it told and queueing the digest a few more: about 15 in all. The digests read
	// 156 a notice when they joined with every Task, and 41 when they found the current
	// version through resource, whose index on the type alone the planner took for the key.
	if perNotice := float64(spent) / float64(notices); perNotice > 30 {
		t.Errorf("the digests of %d notices touched %d blocks, %.0f a notice: they do not read each Task by its key", notices, spent, perNotice)
	} else {
		t.Logf("the digests of %d notices touched %d blocks, %.1f a notice", notices, spent, perNotice)
	}
}
