package followup_test

import (
	"bufio"
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/registry/synth"
)

// BenchmarkRun100k times the scheduler over 100,000 infusions of a synthetic cohort loaded
// straight into the registry tables: the first run, which makes every Task the cohort's
// history calls for, and the daily runs after it, which find little to change. It reports
// the process's peak RSS during the runs (the counter is reset first, so the cohort generated
// in memory does not count).
//
//	go test ./followup -run '^$' -bench Run100k -benchtime 1x
func BenchmarkRun100k(b *testing.B) {
	asOf := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	cohort, err := synth.Generate(synth.Options{Patients: *benchPatients, Seed: 2026, AsOf: asOf})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	db := pgtest.NewDatabase(b)
	clock := func() time.Time { return asOf }
	store := fhir.NewStore(db, searchparam.Default(), clock)
	reg, err := registry.New(registry.Config{}, db, store, clock, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	if err := synth.LoadDirect(ctx, db, cohort, reg.Terminology()); err != nil {
		b.Fatal(err)
	}
	if err := reg.Start(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		b.Fatal(err)
	}
	cohort = nil
	planner := followup.New(followup.Config{LeadDays: 14}, store, reg.Plan())

	measure := func(b *testing.B, at func(i int) time.Time) {
		runtime.GC()
		debug.FreeOSMemory()
		resetPeakRSS(b)
		var sum followup.Summary
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			s, err := planner.Run(ctx, at(i))
			if err != nil {
				b.Fatal(err)
			}
			sum.Created += s.Created
			sum.Updated += s.Updated
		}
		b.StopTimer()
		b.ReportMetric(peakRSSMB(b), "peak-RSS-MB")
		b.ReportMetric(float64(sum.Created)/float64(b.N), "created/run")
		b.ReportMetric(float64(sum.Updated)/float64(b.N), "updated/run")
	}
	b.Run("first", func(b *testing.B) {
		measure(b, func(int) time.Time { return asOf })
	})
	b.Run("daily", func(b *testing.B) {
		measure(b, func(i int) time.Time { return asOf.AddDate(0, 0, i+1) })
	})
}

// benchPatients shrinks the cohort for profiling: -args -bench-patients 10000.
var benchPatients = flag.Int("bench-patients", 100_000, "patients (one infusion each) in BenchmarkRun100k's cohort")

// resetPeakRSS sets the kernel's high-water mark of this process's RSS to the current RSS.
func resetPeakRSS(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Skip("cannot reset the peak RSS here:", err)
	}
}

// peakRSSMB is VmHWM, the peak RSS since the last reset, in MB.
func peakRSSMB(b *testing.B) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmHWM in /proc/self/status")
	return 0
}
