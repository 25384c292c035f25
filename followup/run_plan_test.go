package followup_test

import (
	"context"
	"testing"
	"time"

	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/registry/synth"
)

// A daily run reads every infusion's visits, so what it reads per infusion is what it costs:
// each infusion's patient, counted assessments and Tasks by key. The run is held to that
// under the plans a long run gets: the generic plan a prepared statement settles on after
// five runs (forced here from the first), on statistics that predate the first run's Tasks.
// Under such plans a daily run over 1,000 infusions in chunks of 100 read registry_patient
// ten times over (every dead patient hashed for each chunk), followup_task a thousand times
// (a sequential scan for each infusion) and the store's resource table six times, and
// touched 78 blocks an infusion (each Task's current version was looked up in the store
// too): at 100,000 infusions its reads grew with the square of the registry. The measures,
// rows read by sequential scans and shared buffers touched, do not depend on the machine's
// load.
func TestADailyRunReadsEachInfusionsRowsByKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	asOf := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	cohort, err := synth.Generate(synth.Options{Patients: 1000, Seed: 21, AsOf: asOf})
	if err != nil {
		t.Fatal(err)
	}
	tables := []string{"registry_patient", "registry_infusion", "registry_assessment", "followup_task",
		"followup_withdrawal", "resource", "resource_version"}
	db, store, reg := planTestDatabase(t, cohort, asOf, map[string]string{"plan_cache_mode": "force_generic_plan"}, tables...)
	planner := followup.New(followup.Config{LeadDays: 14}, store, reg.Plan())
	followup.SetChunk(planner, 100) // ten chunks
	if _, err := planner.Run(ctx, asOf); err != nil {
		t.Fatal(err)
	}
	var infusions, tasks int
	if err := db.QueryRow(ctx, `SELECT (SELECT count(*) FROM registry_infusion), (SELECT count(*) FROM followup_task)`).Scan(&infusions, &tasks); err != nil {
		t.Fatal(err)
	}
	if tasks < 2*infusions {
		t.Fatalf("%d Tasks for %d infusions after the first run: too few for the daily run to read", tasks, infusions)
	}

	live := map[string]int64{}
	for _, table := range tables {
		var n int64
		if err := db.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		live[table] = n
	}
	type counts struct {
		blocks  int64
		seqRead map[string]int64 // by table, the rows read by sequential scans
	}
	// blocksTouched flushes the backend's counts to the statistics views first.
	read := func() counts {
		t.Helper()
		c := counts{blocks: blocksTouched(t, db), seqRead: map[string]int64{}}
		rows, err := db.Query(ctx, `SELECT relname, coalesce(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = ANY($1)`, tables)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var n int64
			if err := rows.Scan(&name, &n); err != nil {
				t.Fatal(err)
			}
			c.seqRead[name] = n
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	read() // so that the counts above are in the statistics before the run, not after it
	before := read()
	sum, err := planner.Run(ctx, asOf.AddDate(0, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	after := read()
	if sum.Created+sum.Updated == 0 {
		t.Error("the daily run changed nothing: the cohort no longer has a window that opens or closes on its day")
	}
	// A planner may read a small table's share by a sequential scan where that is cheaper than
	// its index, but the chunks together must not read a table more than once over.
	for _, table := range tables {
		n, rows := after.seqRead[table]-before.seqRead[table], live[table]
		if n > rows {
			t.Errorf("the daily run read %d rows of %s (of %d) by sequential scans: %.1f times the table, where one chunk's rows are a tenth of it",
				n, table, rows, float64(n)/float64(rows))
		} else if n > 0 {
			t.Logf("the daily run read %d rows of %s (of %d) by sequential scans", n, table, rows)
		}
	}
	// The patient, its assessments and its Tasks are a few index pages and heap pages each
	// (11 blocks an infusion in all), and the writes of the few Tasks that change add a little.
	spent := after.blocks - before.blocks
	if perInfusion := float64(spent) / float64(infusions); perInfusion > 20 {
		t.Errorf("the daily run over %d infusions (%s) touched %d blocks, %.1f an infusion", infusions, sum, spent, perInfusion)
	} else {
		t.Logf("the daily run over %d infusions (%s) touched %d blocks, %.1f an infusion", infusions, sum, spent, perInfusion)
	}
}
