package ingest_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/ingest"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/internal/shareddata"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func importer(t testing.TB, count *atomic.Int64) *ingest.Importer {
	db := pgtest.NewDatabase(t)
	params := searchparam.Default()
	store := fhir.NewStore(db, params, time.Now)
	bundles := fhir.NewBundleProcessor(store, fhir.NewSearcher(store, params, ""), fhir.BundleConfig{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return &ingest.Importer{Store: store, Bundles: bundles, Progress: func(_ string, n int) { count.Add(int64(n)) }}
}

func bulkFiles(t testing.TB) []string {
	t.Helper()
	return shareddata.Glob(t, "synthea/bulk-10-patients/*.ndjson.gz")
}

func TestProgressIsReportedPerCommittedBatch(t *testing.T) {
	var count atomic.Int64
	im := importer(t, &count)
	im.BatchSize = 100
	total := 0
	for _, f := range bulkFiles(t) {
		res, err := im.ImportFile(context.Background(), f)
		if err != nil {
			t.Fatal(err)
		}
		total += res.Resources
	}
	if total != 7160 || count.Load() != 7160 {
		t.Fatalf("imported %d, progress reported %d; want 7160 both", total, count.Load())
	}
}

// BenchmarkBulkIngest imports the 10-patient Bulk Data export (7,160 resources) into a fresh
// database per round and reports resources per second.
func BenchmarkBulkIngest(b *testing.B) {
	files := bulkFiles(b)
	var resources int64
	for b.Loop() {
		b.StopTimer()
		var count atomic.Int64
		im := importer(b, &count)
		b.StartTimer()
		for _, f := range files {
			if _, err := im.ImportFile(context.Background(), f); err != nil {
				b.Fatal(err)
			}
		}
		resources += count.Load()
	}
	b.ReportMetric(float64(resources)/b.Elapsed().Seconds(), "resources/s")
}
