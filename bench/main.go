// Command bench is cartreg's benchmark harness, what `make bench` runs. It measures the server
// the way its users meet it: it generates a cohort with `cartreg synth`, starts `cartreg serve`
// on a fresh embedded database, and drives it over HTTP with concurrent clients, then runs the
// follow-up scheduler as `cartreg schedule run` against the same database. It prints one table
// of figures against the targets of issue 7 and writes them as JSON (bench/results.json), so
// runs can be compared, and with -readme puts the table in README.md.
//
// The phases, in order, on one growing database:
//
//	ingest       the cohort's patient transaction Bundles from 8 clients: resources created per second
//	small-tx     Patient + Observation transaction Bundles from 32 clients: tx/s, median and p99
//	read         reads by id of ingested resources from 32 clients: req/s, median and p99
//	scheduler    the first follow-up run (it makes every Task the cohort's history calls for),
//	             then the next day's run: seconds and the process's peak RSS
//	search       Observation?patient&code&date and Patient?name&birthdate, one client, once the
//	             database holds the Tasks too (over 1,000,000 resources at the default size)
//	outcomes     survival and response queries over the whole cohort: medians
//	export       a Bulk Data $export of every resource: resources/s to the manifest, the download, RSS
//	memory       the server's peak RSS over the whole run
//
// Every request is checked: a failed one stops the run, so a figure is never made of errors.
//
// -only search times the searches alone on a database an earlier run kept (-keep -work DIR).
//
// -only export runs the export step alone, on a database filled to -export-resources (see
// exportOnly), and writes its figures beside the full run's (results-export.json).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

type options struct {
	bin        string
	patients   int
	seed       uint64
	asOf       time.Time
	work       string
	keep       bool
	duration   time.Duration
	searches   int
	rounds     int
	outcomes   int
	out        string
	readme     string
	profile    string
	serverArgs []string

	only            string
	statements      int
	exportResources int
	exportSeed      int

	attack       time.Duration
	attackOut    string
	attackRSS    float64
	attackKillMB float64
}

func main() {
	var o options
	var asOf, serverArgs string
	flag.StringVar(&o.bin, "bin", "bin/cartreg", "the cartreg binary to measure")
	flag.IntVar(&o.patients, "patients", 100_000, "cohort size: patients, each with one infusion")
	flag.Uint64Var(&o.seed, "seed", 1, "cohort seed (the same seed gives the same cohort)")
	flag.StringVar(&asOf, "as-of", "2026-11-30", "the cohort's data cut-off; the scheduler runs the next two mornings")
	flag.StringVar(&o.work, "work", "", "directory for the cohort and the database (default: a new temporary one, removed afterwards)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (cohort, database, server log)")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "how long the small-transaction and read phases each run")
	flag.IntVar(&o.searches, "searches", 1000, "queries of each search")
	flag.IntVar(&o.rounds, "rounds", 5, "with -only search: rounds of -searches queries each, after one that warms up")
	flag.IntVar(&o.outcomes, "outcomes", 20, "requests of each outcome query")
	flag.StringVar(&o.out, "out", "bench/results.json", "where to write the results as JSON (empty: nowhere)")
	flag.StringVar(&o.readme, "readme", "", "README to put the results table in, between its bench markers (empty: none)")
	flag.StringVar(&o.profile, "profile", "", "directory to write the server's CPU profiles of the ingest, small-transaction and read phases to, or with -only search of its rounds, for -duration (empty: none)")
	flag.StringVar(&serverArgs, "server-args", "", "extra flags for cartreg serve, space-separated")
	flag.DurationVar(&o.attack, "attack", 0, "instead of the benchmark, the attack soak of issue 15 for this long (e.g. 60s): every attack at once, RSS sampled, fails on any 5xx or RSS over -attack-rss")
	flag.StringVar(&o.attackOut, "attack-out", "", "where to write the soak's results as JSON (empty: nowhere)")
	flag.Float64Var(&o.attackRSS, "attack-rss", 500, "the soak fails if the server's RSS reaches this many MB")
	flag.Float64Var(&o.attackKillMB, "attack-kill-rss", 3000, "the soak kills the server if its RSS passes this many MB, to spare the machine")
	flag.StringVar(&o.only, "only", "", "run one step alone instead of every phase: export (a $export of -export-resources resources; see exportonly.go), writes (ingest and small transactions, for A/B runs of the write path), or search (the searches alone on the database of a run kept with -keep -work DIR, for A/B runs and profiles of the search path; see searchonly.go)")
	flag.IntVar(&o.statements, "statements", 0, "after ingest and small transactions, print this many statements by total time from pg_stat_statements (the server's database must load it)")
	flag.IntVar(&o.exportResources, "export-resources", 1_000_000, "with -only export: resources in the database the export reads")
	flag.IntVar(&o.exportSeed, "export-seed-patients", 1000, "with -only export: patients ingested through the API, whose resources are then copied up to -export-resources")
	flag.Parse()
	var err error
	if o.asOf, err = time.Parse(time.DateOnly, asOf); err != nil {
		fatalf("-as-of %q: want YYYY-MM-DD", asOf)
	}
	o.serverArgs = strings.Fields(serverArgs)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.attack > 0 {
		os.Exit(runSoak(ctx, o))
	}
	switch o.only {
	case "", "writes":
	case "search":
		res, err := searchOnly(ctx, o)
		if err != nil {
			fatalf("%v", err)
		}
		printSearchRun(res)
		writeBeside(o.out, "search", res)
		return
	case "export":
		res, err := exportOnly(ctx, o)
		if err != nil {
			fatalf("%v", err)
		}
		printExportRun(res)
		writeBeside(o.out, "export", res)
		return
	default:
		fatalf("-only %q: the steps that run alone are export, writes and search", o.only)
	}
	res, err := run(ctx, o)
	if err != nil {
		fatalf("%v", err)
	}
	if o.only == "writes" {
		// Not the whole run's figures: neither the JSON nor README's table is written.
		fmt.Printf("ingest: %.0f resources/s; CPU per resource: server %.3f ms, PostgreSQL %.3f ms\n",
			res.Ingest.ResourcesPerSecond, res.IngestCPU.ServerMS, res.IngestCPU.PostgresMS)
		fmt.Printf("small transactions: %.0f tx/s, p99 %.1f ms; CPU per transaction: server %.3f ms, PostgreSQL %.3f ms\n",
			res.SmallTx.PerSecond, res.SmallTx.P99MS, res.SmallTxCPU.ServerMS, res.SmallTxCPU.PostgresMS)
		return
	}
	printTable(os.Stdout, res)
	if o.out != "" {
		if err := writeJSON(o.out, res); err != nil {
			fatalf("%v", err)
		}
		fmt.Printf("\nwrote %s\n", o.out)
	}
	if o.readme != "" {
		if err := updateReadme(o.readme, res); err != nil {
			fatalf("%v", err)
		}
		fmt.Printf("updated the table in %s\n", o.readme)
	}
}

// writeBeside writes the figures of a step run alone next to the full run's JSON (-out
// results.json: results-export.json). They are not the whole run's, so README's table of the
// last full run is left as it is.
func writeBeside(out, step string, res any) {
	if out == "" {
		return
	}
	out = strings.TrimSuffix(out, ".json") + "-" + step + ".json"
	if err := writeRunJSON(out, res); err != nil {
		fatalf("%v", err)
	}
	fmt.Printf("\nwrote %s (README's table is the full run's, and was left alone)\n", out)
}

// serveProfiled starts the server on dataDir, with its -debug-addr listener when -profile
// asks for CPU profiles, and connects to its database.
func serveProfiled(ctx context.Context, o options, bin, dataDir, logPath string) (*server, *pgxpool.Pool, *profiler, error) {
	serverArgs := o.serverArgs
	var prof *profiler
	if o.profile != "" {
		var err error
		if prof, err = newProfiler(o.profile); err != nil {
			return nil, nil, nil, err
		}
		serverArgs = append(serverArgs, "-debug-addr", prof.addr)
	}
	srv, err := startServer(ctx, bin, dataDir, logPath, serverArgs)
	if err != nil {
		return nil, nil, nil, err
	}
	db, err := srv.database(ctx)
	if err != nil {
		srv.stop()
		return nil, nil, nil, err
	}
	return srv, db, prof, nil
}

// runSoak runs the attack soak and reports it; its result is the exit code.
func runSoak(ctx context.Context, o options) int {
	res, err := soak(ctx, soakOptions{bin: o.bin, duration: o.attack, work: o.work, limitRSS: o.attackRSS,
		killRSS: o.attackKillMB, serverArgs: o.serverArgs})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	printSoak(os.Stdout, res)
	if o.attackOut != "" {
		if err := writeSoakJSON(o.attackOut, res); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 1
		}
	}
	if res.Failed() != "" {
		return 1
	}
	return 0
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

// workDir is the folder for a run's cohort and database: o.work, else a new temporary one,
// which done removes unless o.keep. The embedded database runs as another user when we are
// root, so it must be able to reach the folder.
func workDir(o options, prefix string) (work string, done func(), err error) {
	done = func() {}
	if work = o.work; work == "" {
		if work, err = os.MkdirTemp("", prefix); err != nil {
			return "", nil, err
		}
		done = func() { os.RemoveAll(work) }
		if o.keep {
			done = func() { fmt.Fprintf(os.Stderr, "kept %s\n", work) }
		}
	}
	if err := os.Chmod(work, 0o755); err != nil {
		done()
		return "", nil, err
	}
	return work, done, nil
}

// run does every phase and returns the figures.
func run(ctx context.Context, o options) (*Results, error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return nil, err
	}
	work, cleanUp, err := workDir(o, "cartreg-bench-")
	if err != nil {
		return nil, err
	}
	defer cleanUp()
	res := &Results{Started: time.Now().UTC(), Machine: describeMachine(), Version: binaryVersion(bin)}

	cohortDir := filepath.Join(work, "cohort")
	step("generating %d patients with cartreg synth", o.patients)
	if err := runCommand(ctx, bin, "synth", "-patients", fmt.Sprint(o.patients), "-seed", fmt.Sprint(o.seed),
		"-as-of", o.asOf.Format(time.DateOnly), "-out", cohortDir); err != nil {
		return nil, err
	}
	cohort, err := listCohort(cohortDir)
	if err != nil {
		return nil, err
	}

	dataDir := filepath.Join(work, "data")
	srv, db, prof, err := serveProfiled(ctx, o, bin, dataDir, filepath.Join(work, "serve.log"))
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	defer db.Close()
	res.Machine.PostgreSQL = postgresVersion(ctx, db)
	res.Machine.PostgreSQLSettings = postgresSettings(ctx, db)

	// The server publishes the registry's own definitions (StructureDefinitions, CodeSystems…).
	if res.ResourcesAtStart, err = countRows(ctx, db, `SELECT count(*) FROM resource WHERE NOT deleted`); err != nil {
		return nil, err
	}
	creds, err := registerClient(ctx, o.bin, srv.dataDir, srv.base)
	if err != nil {
		return nil, err
	}
	c := newClient(srv.base, 32, creds)
	step("ingest: %d transaction Bundles from %d clients", len(cohort), ingestClients)
	done := prof.start(ctx, "ingest", 30*time.Second)
	if err := resetStatements(ctx, db, o.statements); err != nil {
		return nil, err
	}
	cpu, err := srv.cpuMeter()
	if err != nil {
		return nil, err
	}
	loaded, err := ingest(ctx, c, cohort)
	if err != nil {
		return nil, err
	}
	if res.IngestCPU, err = cpu(loaded.figures.Resources); err != nil {
		return nil, err
	}
	if err := done(); err != nil {
		return nil, err
	}
	res.Ingest = loaded.figures
	if err := printStatements(ctx, db, o.statements, "ingest", loaded.figures.Resources, "resource"); err != nil {
		return nil, err
	}

	step("small transactions: %d clients for %s", smallTxClients, o.duration)
	done = prof.start(ctx, "small-tx", o.duration)
	if err := resetStatements(ctx, db, o.statements); err != nil {
		return nil, err
	}
	if cpu, err = srv.cpuMeter(); err != nil {
		return nil, err
	}
	if res.SmallTx, err = smallTransactions(ctx, c, o.duration); err != nil {
		return nil, err
	}
	if res.SmallTxCPU, err = cpu(res.SmallTx.Operations); err != nil {
		return nil, err
	}
	if err := done(); err != nil {
		return nil, err
	}
	if err := printStatements(ctx, db, o.statements, "small transactions", res.SmallTx.Operations, "transaction"); err != nil {
		return nil, err
	}
	if o.only == "writes" {
		return res, nil
	}

	if err := res.settle(ctx, db, "after the writes"); err != nil {
		return nil, err
	}
	step("read by id: %d clients for %s", readClients, o.duration)
	done = prof.start(ctx, "read", o.duration)
	if cpu, err = srv.cpuMeter(); err != nil {
		return nil, err
	}
	if res.Read, err = reads(ctx, c, loaded.locations, readClients, o.duration); err != nil {
		return nil, err
	}
	if res.ReadCPU, err = cpu(res.Read.Operations); err != nil {
		return nil, err
	}
	if err := done(); err != nil {
		return nil, err
	}
	// Under 32 clients a request's latency is mostly its wait for the 2 cores (Little's law:
	// 32 clients / 5,000 req/s = 6.4 ms); the latency of one read on its own is this.
	step("read by id: 1 client for %s", o.duration/3)
	if res.ReadAlone, err = reads(ctx, c, loaded.locations, 1, o.duration/3); err != nil {
		return nil, err
	}

	step("scheduler: the first follow-up run")
	first := o.asOf.AddDate(0, 0, 1).Add(6 * time.Hour)
	if res.SchedulerFirst, err = scheduleRun(ctx, bin, dataDir, first); err != nil {
		return nil, err
	}
	if err := res.settle(ctx, db, "after the first run"); err != nil {
		return nil, err
	}
	step("scheduler: the next day's run")
	if res.SchedulerDaily, err = scheduleRun(ctx, bin, dataDir, first.AddDate(0, 0, 1)); err != nil {
		return nil, err
	}
	if res.SchedulerFirst.Infusions, err = countRows(ctx, db, `SELECT count(*) FROM registry_infusion`); err != nil {
		return nil, err
	}
	res.SchedulerDaily.Infusions = res.SchedulerFirst.Infusions

	if res.Resources, err = countRows(ctx, db, `SELECT count(*) FROM resource WHERE NOT deleted`); err != nil {
		return nil, err
	}
	if err := res.settle(ctx, db, "after the next day's run"); err != nil {
		return nil, err
	}
	step("search: %d queries each, on %d resources", o.searches, res.Resources)
	if res.SearchObservation, res.SearchPatient, err = searches(ctx, c, srv, loaded.samples, o.searches); err != nil {
		return nil, err
	}

	step("outcomes: %d requests of each query over %d patients", o.outcomes, len(cohort))
	if res.Outcomes, err = outcomes(ctx, c, o.outcomes); err != nil {
		return nil, err
	}

	step("$export: every resource, kick-off to manifest, then each file downloaded")
	if res.Export, err = exportAll(ctx, c, srv); err != nil {
		return nil, err
	}

	res.ServerPeakRSSMB, err = srv.peakRSSMB()
	if err != nil {
		return nil, err
	}
	res.Patients = len(cohort)
	res.Finished = time.Now().UTC()
	res.Rows = res.rows()
	return res, nil
}

// settle vacuums and analyzes the database, then checkpoints it, as an operator does after a
// bulk load, and records how long that took. Each phase then measures its own work: without
// it, the reads, the daily run and the searches ran beside PostgreSQL's catching up on the
// writes before them (autovacuum on the largest tables and back-to-back checkpoints), and
// their figures moved with how far it had got. On a 2-core machine the searches' medians went
// from 1.2–1.7 ms on a quiet database to 2.5 ms, and their p95 to 28 ms (2026-12-03).
func (r *Results) settle(ctx context.Context, db *pgxpool.Pool, after string) error {
	step("settling %s: VACUUM (ANALYZE), CHECKPOINT", after)
	t0 := time.Now()
	if _, err := db.Exec(ctx, "VACUUM (ANALYZE)"); err != nil {
		return fmt.Errorf("settling %s: %w", after, err)
	}
	if _, err := db.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("settling %s: %w", after, err)
	}
	r.Settles = append(r.Settles, Settle{After: after, Seconds: time.Since(t0).Seconds()})
	return nil
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
