package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry/synth"
)

// TestHarnessOnASmallCohort runs every phase of the harness against a real server on a small
// cohort, so that `make bench` cannot rot unnoticed, and checks the figures add up.
func TestHarnessOnASmallCohort(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "cartreg")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/cartreg").CombinedOutput(); err != nil {
		t.Fatalf("building cartreg: %v\n%s", err, out)
	}
	o := options{bin: bin, patients: 60, seed: 3, asOf: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC),
		work: pgtest.ReachableDir(t), duration: time.Second, searches: 20, outcomes: 2}
	res, err := run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	cohort, err := synth.Generate(synth.Options{Patients: o.patients, Seed: o.seed, AsOf: o.asOf})
	if err != nil {
		t.Fatal(err)
	}
	if res.Patients != 60 || res.Ingest.Operations != 60 || res.Ingest.Resources != cohort.Resources() {
		t.Errorf("ingest: %d patients, %d Bundles, %d resources created; want 60, 60 and %d",
			res.Patients, res.Ingest.Operations, res.Ingest.Resources, cohort.Resources())
	}
	if res.SmallTx.Operations == 0 || res.Read.Operations == 0 || res.ReadAlone.Operations == 0 {
		t.Errorf("throughput phases did nothing: %+v %+v %+v", res.SmallTx, res.Read, res.ReadAlone)
	}
	// Every small transaction made a Patient and an Observation; every Task is a resource too.
	want := res.ResourcesAtStart + cohort.Resources() + 2*res.SmallTx.Operations + res.SchedulerDaily.Tasks
	if res.Resources != want {
		t.Errorf("the searches ran on %d resources, want %d", res.Resources, want)
	}
	first, daily := res.SchedulerFirst, res.SchedulerDaily
	if first.Infusions != 60 || first.Tasks == 0 || daily.Tasks < first.Tasks || first.PeakRSSMB <= 0 || first.Seconds <= 0 {
		t.Errorf("scheduler runs: %+v then %+v", first, daily)
	}
	for _, s := range []Search{res.SearchObservation, res.SearchPatient} {
		if s.Queries != 20 || s.MeanMatches < 1 || s.MedianMS <= 0 || s.P95MS < s.MedianMS {
			t.Errorf("search %+v", s)
		}
	}
	if len(res.Outcomes) != len(outcomeQueries) || res.ServerPeakRSSMB <= 0 {
		t.Errorf("outcomes %+v, server peak RSS %.0f MB", res.Outcomes, res.ServerPeakRSSMB)
	}

	// The phases after bulk writes start on a vacuumed, checkpointed database, and the table
	// says so, and names the settings the embedded PostgreSQL departs from its defaults in.
	if len(res.Settles) != 3 || res.Settles[2].After != "after the next day's run" || res.Settles[0].Seconds <= 0 {
		t.Errorf("settles between phases: %+v", res.Settles)
	}
	if line := res.machineLine(); !strings.Contains(line, "autovacuum_naptime=10s") || strings.Contains(line, "unix_socket") {
		t.Errorf("the machine line does not name the embedded settings: %s", line)
	}
	if e := res.Export; e.Resources != res.Resources || e.Files == 0 || e.PeakRSSMB <= 0 {
		t.Errorf("$export %+v of %d resources", e, res.Resources)
	}

	readme := filepath.Join(t.TempDir(), "README.md")
	if err := os.WriteFile(readme, []byte("# x\n\nbefore\n"+readmeBegin+"\nold table\n"+readmeEnd+"\nafter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateReadme(readme, res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if strings.Contains(text, "old table") || !strings.Contains(text, "before\n"+readmeBegin) || !strings.HasSuffix(text, readmeEnd+"\nafter\n") ||
		len(res.Rows) != 9 || strings.Count(text, "\n| ") != 1+len(res.Rows) || !strings.Contains(text, res.settleLine()) {
		t.Errorf("README after the update:\n%s", text)
	}
	if err := writeJSON(filepath.Join(t.TempDir(), "results.json"), res); err != nil {
		t.Fatal(err)
	}

	// -only search on the database the run left: the same samples are found again without a
	// write, and the searches are timed in rounds.
	o.rounds = 3
	again, err := searchOnly(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if again.Resources != res.Resources || len(again.ObservationMedians) != 3 || len(again.PatientMedians) != 3 {
		t.Errorf("search alone: %+v after a run on %d resources", again, res.Resources)
	}
	for _, s := range []Search{again.SearchObservation, again.SearchPatient} {
		if s.Queries != 20 || s.MeanMatches < 1 || s.MedianMS <= 0 {
			t.Errorf("search alone: %+v", s)
		}
	}
}

func TestQuantilesAndThousands(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	q := quantiles(d)
	if q(0.5) != 50 || q(0.95) != 95 || q(0.99) != 99 || q(1) != 100 || q(0) != 1 {
		t.Errorf("quantiles of 1..100 ms: median %v, p95 %v, p99 %v, max %v, min %v", q(0.5), q(0.95), q(0.99), q(1), q(0))
	}
	for f, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -1500: "-1,500"} {
		if got := thousands(f); got != want {
			t.Errorf("thousands(%v) = %q, want %q", f, got, want)
		}
	}
}

// The $export step runs alone (-only export) on a database filled by copies of an ingested
// cohort, and exports every resource once: the copies carry ids of their own.
func TestExportStepRunsAlone(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "cartreg")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/cartreg").CombinedOutput(); err != nil {
		t.Fatalf("building cartreg: %v\n%s", err, out)
	}
	o := options{bin: bin, seed: 5, asOf: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC), work: pgtest.ReachableDir(t),
		only: "export", exportResources: 3000, exportSeed: 15}
	res, err := exportOnly(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ingested == 0 || res.Copies < 1 || res.Resources < 3000 || res.Resources > 3000+res.Ingested {
		t.Errorf("seeding: %d ingested, %d copies, %d resources; want just over 3,000", res.Ingested, res.Copies, res.Resources)
	}
	if e := res.Export; e.Resources != res.Resources || e.Files == 0 || e.ResourcesPerSecond <= 0 || res.ServerPeakMB <= 0 {
		t.Errorf("$export %+v of %d resources, server peak %.0f MB", e, res.Resources, res.ServerPeakMB)
	}
}
