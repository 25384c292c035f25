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
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/followup"
	"github.com/cartreg/cartreg/internal/procstat"
	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/registry/synth"
)

// BenchmarkRun100k times the scheduler over 100,000 infusions of a synthetic cohort loaded
// straight into the registry tables: the first run, which makes every Task the cohort's
// history calls for, and the daily runs after it, which find little to change. It reports
// the process's peak RSS during the runs (the counter is reset first, so the cohort generated
// in memory does not count), the CPU seconds each run cost this process and PostgreSQL, and
// the time the digests queued after each run take (the scheduled job's second step).
//
//	go test ./followup -run '^$' -bench Run100k -benchtime 1x
//	go test ./followup -run '^$' -bench Run100k/first -benchtime 1x -args -bench-patients 30000
func BenchmarkRun100k(b *testing.B) {
	asOf := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	cohort, err := synth.Generate(synth.Options{Patients: *benchPatients, Seed: 2026, AsOf: asOf})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	db := pgtest.NewDatabase(b)
	store, reg := loadCohort(b, db, cohort, asOf)
	if _, err := db.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		b.Fatal(err)
	}
	cohort = nil
	planner := followup.New(followup.Config{LeadDays: 14}, store, reg.Plan())
	// A webhook, so that each owner's digest is made (it is queued, never sent, here): with
	// nowhere to send them, the notices are only marked as told.
	digestsTo := followup.DigestConfig{Webhook: "http://127.0.0.1:9/digests"}

	measure := func(b *testing.B, at func(i int) time.Time) {
		runtime.GC()
		debug.FreeOSMemory()
		resetPeakRSS(b)
		var sum followup.Summary
		var goSpent, pgSpent, digests float64
		pgLocal := postgresCPU(b, db) >= 0
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			goBefore, pgBefore := goCPU(b), postgresCPU(b, db)
			s, err := planner.Run(ctx, at(i))
			if err != nil {
				b.Fatal(err)
			}
			goSpent, pgSpent = goSpent+goCPU(b)-goBefore, pgSpent+postgresCPU(b, db)-pgBefore
			sum.Created += s.Created
			sum.Updated += s.Updated
			if !*benchDigests {
				continue
			}
			// The scheduled job queues the owners' digests after each run; timed apart, as
			// ns/op has always been the run alone.
			b.StopTimer()
			started := time.Now()
			if _, err := planner.Digests(ctx, at(i), digestsTo); err != nil {
				b.Fatal(err)
			}
			digests += time.Since(started).Seconds()
			b.StartTimer()
		}
		b.StopTimer()
		b.ReportMetric(goSpent/float64(b.N), "go-cpu-s/run")
		if pgLocal {
			b.ReportMetric(pgSpent/float64(b.N), "pg-cpu-s/run")
		}
		b.ReportMetric(digests/float64(b.N), "digests-s/run")
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

// loadCohort writes cohort straight into db's registry tables and starts the registry on
// them (its plan applied), with the clock at asOf: the scheduler's tests' and benchmark's
// starting point.
func loadCohort(tb testing.TB, db *pgxpool.Pool, cohort *synth.Cohort, asOf time.Time) (*fhir.Store, *registry.Registry) {
	tb.Helper()
	ctx := context.Background()
	clock := func() time.Time { return asOf }
	store := fhir.NewStore(db, searchparam.Default(), clock)
	reg, err := registry.New(registry.Config{}, db, store, clock, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	if err := synth.LoadDirect(ctx, db, cohort, reg.Terminology()); err != nil {
		tb.Fatal(err)
	}
	if err := reg.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	return store, reg
}

// goCPU is the user and system time this process has used, in seconds.
func goCPU(b *testing.B) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// postgresCPU is the CPU time, in seconds, PostgreSQL's processes have used: the postmaster
// (the parent of this connection's backend) with the children it has reaped, and its running
// children, backends and background workers alike. On a shared machine a run's CPU time moves
// far less than its wall time. It is -1 when the server is not on this machine.
func postgresCPU(b *testing.B, db *pgxpool.Pool) float64 {
	var backend int
	if err := db.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		b.Fatal(err)
	}
	_, postmaster, err := procstat.CPU(backend, false)
	if err != nil {
		return -1
	}
	total, err := procstat.TreeCPU(postmaster)
	if err != nil {
		return -1
	}
	return total
}

// benchDigests leaves the digests out, to compare runs alone: -args -bench-digests=false.
var benchDigests = flag.Bool("bench-digests", true, "queue the owners' digests after each run of BenchmarkRun100k, timed apart")

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
