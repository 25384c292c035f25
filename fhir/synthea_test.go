package fhir_test

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/internal/shareddata"
)

// syntheaBundles returns the batch Bundles (which must load first) and the patient
// transactions, decompressed.
func syntheaBundles(t testing.TB) (batches, transactions [][]byte) {
	t.Helper()
	files := shareddata.Glob(t, "synthea/hiv-bundles/*.json.gz")
	for _, f := range files {
		raw := shareddata.ReadGzip(t, f)
		if strings.Contains(filepath.Base(f), "Information") {
			batches = append(batches, raw)
		} else {
			transactions = append(transactions, raw)
		}
	}
	return batches, transactions
}

// entryCounts counts a Bundle's entries per resource type; with conditionalOnly false it
// skips the conditional creates (ifNoneExist), which a second load does not repeat.
func entryCounts(t testing.TB, raw []byte, into map[string]int, skipConditional bool) {
	var b struct {
		Entry []struct {
			Resource struct{ ResourceType string }
			Request  struct{ IfNoneExist string }
		}
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	for _, e := range b.Entry {
		if skipConditional && e.Request.IfNoneExist != "" {
			continue
		}
		into[e.Resource.ResourceType]++
	}
}

func (s *testServer) countsByType() map[string]int {
	s.t.Helper()
	rows, err := s.db.Query(context.Background(), "SELECT resource_type, count(*) FROM resource WHERE NOT deleted GROUP BY 1")
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var typ string
		var n int
		if err := rows.Scan(&typ, &n); err != nil {
			s.t.Fatal(err)
		}
		if n -= s.publishedTypes[typ]; n > 0 {
			out[typ] = n
		}
	}
	return out
}

func TestSyntheaBundlesLoadThroughTheAPI(t *testing.T) {
	t.Parallel()
	batches, transactions := syntheaBundles(t)
	if testing.Short() {
		transactions = transactions[:5]
	}
	s := newTestServer(t)
	want := map[string]int{}
	for _, raw := range append(append([][]byte{}, batches...), transactions...) {
		entryCounts(t, raw, want, false)
	}
	for _, raw := range batches {
		r := s.expect(s.do("POST", "/", string(raw), "Content-Type", "application/json"), http.StatusOK)
		for _, st := range entryStatuses(t, r) {
			if st != "201 Created" {
				t.Fatalf("a batch entry answered %s", st)
			}
		}
	}
	var locations [][]string // what each patient's transaction created
	for _, raw := range transactions {
		r := s.expect(s.do("POST", "/", string(raw), "Content-Type", "application/json"), http.StatusOK)
		var created []string
		for _, e := range asSlice(r.json(t)["entry"]) {
			loc := e.(map[string]any)["response"].(map[string]any)["location"].(string)
			created = append(created, strings.SplitN(loc, "/_history", 2)[0])
		}
		locations = append(locations, created)
	}
	got := s.countsByType()
	if len(got) != len(want) {
		t.Errorf("types on the server %v, in the files %v", got, want)
	}
	for typ, n := range want {
		if got[typ] != n {
			t.Errorf("%s: %d on the server, %d in the files", typ, got[typ], n)
		}
	}

	t.Run("Patient $everything", func(t *testing.T) { checkEverything(t, s.with(t), locations, len(transactions)) })

	// A second load of the batch Bundles repeats only their unconditional entries.
	repeated := map[string]int{}
	for _, raw := range batches {
		entryCounts(t, raw, repeated, true)
		s.expect(s.do("POST", "/", string(raw)), http.StatusOK)
	}
	again := s.countsByType()
	for _, typ := range []string{"Organization", "Location", "Practitioner", "PractitionerRole"} {
		if again[typ] != got[typ]+repeated[typ] {
			t.Errorf("%s after reloading the batches: %d, want %d + %d unconditional", typ, again[typ], got[typ], repeated[typ])
		}
	}
	t.Logf("loaded %d resources of %d types; reload repeated %v", sum(got), len(got), repeated)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// checkEverything checks the record of the first patient loaded: everything their own Bundle
// created, what it refers to, and nothing of the second patient.
func checkEverything(t *testing.T, s *testServer, locations [][]string, patients int) {
	patient := locations[0][0]
	if !strings.HasPrefix(patient, "Patient/") {
		t.Fatalf("the first entry of a Synthea Bundle is not its Patient: %s", patient)
	}

	seen := map[string]bool{}
	next := "/" + patient + "/$everything?_count=100"
	for pages := 0; next != ""; pages++ {
		if pages > 100 {
			t.Fatal("paging does not end")
		}
		b := s.expect(s.do("GET", next, ""), http.StatusOK).json(t)
		for _, e := range asSlice(b["entry"]) {
			r := e.(map[string]any)["resource"].(map[string]any)
			key := r["resourceType"].(string) + "/" + r["id"].(string)
			if seen[key] {
				t.Fatalf("%s on two pages", key)
			}
			seen[key] = true
		}
		next = link(b, "next", s.base)
	}
	for _, created := range locations[0] {
		if !seen[created] {
			t.Errorf("%s, created by the patient's own Bundle, is missing from $everything", created)
		}
	}
	for _, other := range locations[1] {
		if seen[other] {
			t.Errorf("%s belongs to the other patient", other)
		}
	}
	var practitioners, organizations int
	for key := range seen {
		switch strings.SplitN(key, "/", 2)[0] {
		case "Practitioner":
			practitioners++
		case "Organization":
			organizations++
		}
	}
	if practitioners == 0 || organizations == 0 {
		t.Errorf("referenced practitioners (%d) and organizations (%d) are missing", practitioners, organizations)
	}

	only := s.expect(s.do("GET", "/"+patient+"/$everything?_type=Condition,Patient&_count=1000", ""), http.StatusOK).json(t)
	for _, e := range asSlice(only["entry"]) {
		if typ := e.(map[string]any)["resource"].(map[string]any)["resourceType"]; typ != "Condition" && typ != "Patient" {
			t.Fatalf("_type=Condition,Patient returned a %s", typ)
		}
	}
	future := s.expect(s.do("GET", "/"+patient+"/$everything?_since=2999-01-01", ""), http.StatusOK).json(t)
	if len(asSlice(future["entry"])) != 0 {
		t.Fatal("_since in the future returned resources")
	}
	s.expect(s.do("GET", "/Patient/nobody/$everything", ""), http.StatusNotFound)
	all := s.expect(s.do("GET", "/Patient/$everything?_type=Patient", ""), http.StatusOK).json(t)
	if n := len(asSlice(all["entry"])); n != min(patients, 10) {
		t.Fatalf("Patient/$everything?_type=Patient: %d patients on the first page, want %d", n, min(patients, 10))
	}
	t.Logf("$everything of %s: %d resources", patient, len(seen))
}
