package bulk_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/fhir/ingest"
	"github.com/cartreg/cartreg/internal/shareddata"
)

// An export of Synthea patients, loaded into an empty registry with the importer behind
// `cartreg import`, gives the same resources of every type.
func TestSyntheaExportRoundTripsThroughImport(t *testing.T) {
	files := shareddata.Glob(t, "synthea/hiv-bundles/*.json.gz")
	// The batch Bundles every patient refers to, and the three smallest patients.
	var batches, patients []string
	for _, f := range files {
		if strings.Contains(filepath.Base(f), "Information") {
			batches = append(batches, f)
		} else {
			patients = append(patients, f)
		}
	}
	size := func(f string) int64 { st, _ := os.Stat(f); return st.Size() }
	sort.Slice(patients, func(i, j int) bool { return size(patients[i]) < size(patients[j]) })
	h := newHarness(t)
	for _, f := range append(batches, patients[:3]...) {
		h.Expect(http.StatusOK, "POST", "/fhir", shareddata.ReadGzip(t, f))
	}
	want := dbCounts(t, h)
	if want["Patient"] < 3 || want["Observation"] == 0 {
		t.Fatalf("loaded %v", want)
	}

	// Export, and keep the files as a client would.
	m := finish(t, h, kickOff(t, h, "GET", "/fhir/$export", nil))
	dir := t.TempDir()
	for _, f := range m.Output {
		r := h.DoURL("GET", on(h, f.URL), nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d", f.URL, r.Status)
		}
		if err := os.WriteFile(filepath.Join(dir, f.Type+".ndjson"), r.Body, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// An empty registry imports them: what others refer to first, as an operator would.
	empty := newHarness(t)
	im := &ingest.Importer{Store: empty.App.Store, Bundles: empty.App.API.Bundles(), BatchSize: 100}
	ctx := auth.WithPrincipal(context.Background(), auth.Operator("round-trip test"))
	first := []string{"Organization", "Location", "Practitioner", "PractitionerRole", "Medication", "Patient"}
	names, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	sort.SliceStable(names, func(i, j int) bool {
		rank := func(p string) int {
			if k := slices.Index(first, strings.TrimSuffix(filepath.Base(p), ".ndjson")); k >= 0 {
				return k
			}
			return len(first)
		}
		return rank(names[i]) < rank(names[j])
	})
	for _, name := range names {
		if _, err := im.ImportFile(ctx, name); err != nil {
			t.Fatalf("importing %s: %v", filepath.Base(name), err)
		}
	}
	sameCounts(t, dbCounts(t, empty), want)
}
