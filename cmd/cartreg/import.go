package main

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"
	"github.com/schollz/progressbar/v3"

	"github.com/cartreg/cartreg/fhir/ingest"
)

func importCommand(stdout, stderr io.Writer) *ffcli.Command {
	cfg := defaultConfig()
	cfg.shareEmbedded = true
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	cfg.registerDatabaseFlags(fs)
	cfg.registerRegistryFlags(fs)
	batchSize := fs.Int("batch-size", 500, "NDJSON resources per database transaction")
	workers := fs.Int("workers", 0, "resources parsed in parallel (0: one per CPU)")
	return &ffcli.Command{
		Name:       "import",
		ShortUsage: "cartreg import [flags] FILE|DIR...",
		ShortHelp:  "load NDJSON (Bulk Data) and Bundle files, validated and indexed like the API; resumable",
		LongHelp: "Imports *.ndjson and *.json files, gzipped or not; a directory means the files in it.\n" +
			"Batch Bundles are loaded before transaction Bundles, as shared resources must exist before\n" +
			"patients refer to them. An interrupted or failed import picks up where it stopped when run\n" +
			"again, and files already imported are skipped.",
		FlagSet: fs,
		Options: ffOptions(),
		Exec: func(ctx context.Context, args []string) error {
			if len(args) == 0 {
				return errors.New("import needs files or directories to import")
			}
			return runImport(ctx, &cfg, args, *batchSize, *workers, stdout, stderr)
		},
	}
}

func runImport(ctx context.Context, cfg *Config, args []string, batchSize, workers int, stdout, stderr io.Writer) error {
	batches, others, err := importOrder(args)
	if err != nil {
		return err
	}
	ctx = asOperator(ctx, "import")
	a, db, logger, err := openApp(ctx, cfg, time.Now, stderr)
	if err != nil {
		return err
	}
	defer db.close(logger)
	defer a.Close(context.WithoutCancel(ctx))
	store, bundles := a.Store, a.API.Bundles()

	report := newReporter(stderr, logger)
	defer report.finish()
	im := &ingest.Importer{Store: store, Bundles: bundles, BatchSize: batchSize, Workers: workers, Progress: report.add}
	start := time.Now()
	var (
		mu       sync.Mutex
		total    int
		firstErr error
	)
	importOne := func(f string) {
		res, err := im.ImportFile(ctx, f)
		mu.Lock()
		defer mu.Unlock()
		total += res.Resources
		if err != nil && firstErr == nil {
			firstErr = err
		}
		switch {
		case res.Complete:
			logger.Debug("already imported", "file", f)
		case res.Skipped > 0:
			logger.Info("resumed", "file", f, "skipped", res.Skipped, "imported", res.Resources)
		}
	}
	// Batch Bundles first, one at a time: they hold what the rest refers to. Then the other
	// files side by side, each in transactions of its own.
	for _, f := range batches {
		if importOne(f); firstErr != nil {
			return firstErr
		}
	}
	queue := make(chan string)
	var wg sync.WaitGroup
	for w := 0; w < max(2, runtime.GOMAXPROCS(0)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range queue {
				importOne(f)
			}
		}()
	}
	for _, f := range others {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		queue <- f
	}
	close(queue)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	report.finish()
	elapsed := time.Since(start)
	fmt.Fprintf(stdout, "imported %d resources from %d files in %s (%.0f resources/s)\n",
		total, len(batches)+len(others), elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds())
	return nil
}

// importOrder expands directories and separates the batch Bundles, which load first, from
// the other files. Each file is looked into once.
func importOrder(args []string) (batches, others []string, err error) {
	var files []string
	for _, a := range args {
		info, err := os.Stat(a)
		if err != nil {
			return nil, nil, err
		}
		if !info.IsDir() {
			files = append(files, a)
			continue
		}
		entries, err := os.ReadDir(a)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range entries {
			name := strings.TrimSuffix(strings.ToLower(e.Name()), ".gz")
			if !e.IsDir() && (strings.HasSuffix(name, ".ndjson") || strings.HasSuffix(name, ".json")) {
				files = append(files, filepath.Join(a, e.Name()))
			}
		}
	}
	for _, f := range files {
		if isBatchBundle(f) {
			batches = append(batches, f)
		} else {
			others = append(others, f)
		}
	}
	return batches, others, nil
}

func isBatchBundle(path string) bool {
	name := strings.TrimSuffix(strings.ToLower(path), ".gz")
	if !strings.HasSuffix(name, ".json") {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(strings.ToLower(path), ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			return false
		}
		r = zr
	}
	var head struct{ Type string }
	return json.NewDecoder(r).Decode(&head) == nil && head.Type == "batch"
}

// reporter shows progress: a bar with the rate on a terminal, a log line every few seconds
// otherwise.
type reporter struct {
	mu       sync.Mutex
	bar      *progressbar.ProgressBar
	logger   *slog.Logger
	total    int
	start    time.Time
	lastLog  time.Time
	finished bool
}

func newReporter(w io.Writer, logger *slog.Logger) *reporter {
	r := &reporter{logger: logger, start: time.Now(), lastLog: time.Now()}
	if f, ok := w.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode()&os.ModeCharDevice != 0 {
			r.bar = progressbar.NewOptions(-1, progressbar.OptionSetWriter(w), progressbar.OptionSetItsString("resources"),
				progressbar.OptionShowIts(), progressbar.OptionShowCount(), progressbar.OptionSetDescription("importing"),
				progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
		}
	}
	return r
}

func (r *reporter) add(file string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total += n
	if r.bar != nil {
		_ = r.bar.Add(n)
		return
	}
	if time.Since(r.lastLog) >= 5*time.Second {
		r.lastLog = time.Now()
		r.logger.Info("importing", "resources", r.total, "per_second", int(float64(r.total)/time.Since(r.start).Seconds()), "file", filepath.Base(file))
	}
}

func (r *reporter) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bar != nil && !r.finished {
		_ = r.bar.Finish()
	}
	r.finished = true
}
