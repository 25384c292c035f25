package registry_test

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/registry/stats"
)

var calendarDate = regexp.MustCompile(`\d{4}-\d{2}(-\d{2})?`)

// analysisRows downloads the analysis file as a researcher and returns it as column → values.
func analysisRows(t *testing.T, tr *testRegistry, query string) (map[string][]string, int) {
	t.Helper()
	r := tr.h.As(tr.h.Token(auth.RoleResearcher), "GET", "/registry/export/analysis"+query, nil)
	if r.Status != 200 {
		t.Fatalf("analysis file: %d %s", r.Status, r.Body)
	}
	recs, err := csv.NewReader(strings.NewReader(string(r.Body))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	cols := map[string][]string{}
	for _, rec := range recs[1:] {
		for i, name := range recs[0] {
			cols[name] = append(cols[name], rec[i])
		}
	}
	return cols, len(recs) - 1
}

// The analysis file of a synthetic cohort reproduces the server's own figures when analysed
// as a researcher would: Kaplan-Meier of its OS and PFS columns, the counts of each
// milestone's standing, best responses and worst CRS grades. Nothing in it is a date but the
// year, and its pseudonyms change with every export.
func TestAnalysisFileReproducesTheServersFigures(t *testing.T) {
	t.Parallel()
	tr := newTestRegistryWith(t, func(c *app.Config) { c.Registry = registry.Config{MinCell: 1, AnalysisExport: true} })
	loadCohortDirect(t, tr, generate(t, 600, 17))
	cols, n := analysisRows(t, tr, "")
	if n != 600 {
		t.Fatalf("%d rows, want one per patient (600)", n)
	}
	ctx := context.Background()
	obs := func(daysCol, eventCol string) []stats.Observation {
		var out []stats.Observation
		for i, d := range cols[daysCol] {
			if d == "" {
				continue
			}
			v, _ := strconv.ParseFloat(d, 64)
			out = append(out, stats.Observation{Time: v, Event: cols[eventCol][i] == "1"})
		}
		return out
	}
	for endpoint, columns := range map[string][2]string{registry.EndpointOS: {"os_days", "os_event"},
		registry.EndpointPFS: {"pfs_days", "pfs_event"}, registry.EndpointDOR: {"dor_days", "dor_event"}} {
		fromFile := stats.KaplanMeier(obs(columns[0], columns[1]), 0.95)
		report, err := tr.reg.Survival(ctx, registry.Filter{}, endpoint, "")
		if err != nil {
			t.Fatal(err)
		}
		g := report.Groups[0]
		if *g.N != fromFile.N || *g.Events != fromFile.Events || len(g.Curve) != len(fromFile.Steps) {
			t.Errorf("%s: server n %d events %d steps %d; from the file %d, %d, %d", endpoint, *g.N, *g.Events, len(g.Curve),
				fromFile.N, fromFile.Events, len(fromFile.Steps))
			continue
		}
		for i, p := range g.Curve {
			if s := fromFile.Steps[i]; p.TDays != s.Time || math.Abs(p.Survival-s.Survival) > 1e-12 {
				t.Errorf("%s step %d: server (%v, %v), from the file (%v, %v)", endpoint, i, p.TDays, p.Survival, s.Time, s.Survival)
				break
			}
		}
	}

	response, err := tr.reg.Response(ctx, registry.Filter{}, "", tr.now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tp := range response.Groups[0].Timepoints {
		counts := map[string]int{}
		for _, v := range cols["response_"+tp.Milestone] {
			counts[v]++
		}
		assessed := 0
		for _, cat := range tp.Categories {
			if counts[cat.Code] != *cat.Count {
				t.Errorf("%s %s: file %d, server %d", tp.Milestone, cat.Code, counts[cat.Code], *cat.Count)
			}
			assessed += counts[cat.Code]
		}
		for status, want := range map[string]*int{"not_yet_due": tp.NotYetDue, "dead_before": tp.DeadBefore, "pending": tp.Pending,
			"missing": tp.Missing, "progressed_before": tp.ProgressedBefore, "lost": tp.LostToFollowUp, "withdrawn": tp.Withdrawn} {
			if counts[status] != *want {
				t.Errorf("%s %s: file %d, server %d", tp.Milestone, status, counts[status], *want)
			}
		}
		if assessed != *tp.Assessed {
			t.Errorf("%s assessed: file %d, server %d", tp.Milestone, assessed, *tp.Assessed)
		}
	}

	best, err := tr.reg.BestResponse(ctx, registry.Filter{}, "")
	if err != nil {
		t.Fatal(err)
	}
	byBest := map[string]int{}
	for _, v := range cols["best_response"] {
		byBest[v]++
	}
	for _, cat := range best.Groups[0].Categories {
		if byBest[cat.Code] != *cat.Count {
			t.Errorf("best %s: file %d, server %d", cat.Code, byBest[cat.Code], *cat.Count)
		}
	}
	tox, err := tr.reg.Toxicity(ctx, registry.Filter{}, "")
	if err != nil {
		t.Fatal(err)
	}
	byGrade := map[string]int{}
	for _, v := range cols["crs_max_grade"] {
		byGrade[v]++
	}
	for grade, want := range tox.Groups[0].CRS.MaxGrade {
		if byGrade[grade] != *want {
			t.Errorf("CRS worst grade %s: file %d, server %d", grade, byGrade[grade], *want)
		}
	}

	// De-identified: no calendar date anywhere, pseudonyms differ between exports.
	again, _ := analysisRows(t, tr, "")
	for name, values := range cols {
		for _, v := range values {
			if calendarDate.MatchString(v) {
				t.Fatalf("column %s holds a date: %s", name, v)
			}
		}
	}
	if cols["study_id"][0] == again["study_id"][0] || cols["site_code"][0] == again["site_code"][0] {
		t.Error("two exports share pseudonyms: they could be linked")
	}
	if got := tr.count(`SELECT count(*) FROM registry_analysis_export WHERE rows = 600`); got != 2 {
		t.Errorf("%d exports in the manifest, want 2", got)
	}
	// Row-level data, even de-identified, is the researchers' and the administrator's only:
	// a coordinator or an EHR client is refused, and nothing is recorded for them.
	for _, role := range []auth.Role{auth.RoleCoordinator, auth.RoleEHR} {
		var sites []string
		if role == auth.RoleCoordinator {
			sites = []string{"some-site"}
		}
		tok := tr.h.Token(role, sites...)
		if r := tr.h.As(tok, "GET", "/registry/export/analysis", nil); r.Status != 403 {
			t.Errorf("%s takes the analysis file: %d", role, r.Status)
		}
	}
	if got := tr.count(`SELECT count(*) FROM registry_analysis_export`); got != 2 {
		t.Errorf("%d exports in the manifest after refusals, want 2", got)
	}
}

// The file is off unless the setting allows it; its dictionary names every column.
func TestAnalysisFileIsOffByDefault(t *testing.T) {
	t.Parallel()
	tr := newTestRegistry(t, registry.Config{MinCell: 5})
	researcher := tr.h.Token(auth.RoleResearcher)
	if r := tr.h.As(researcher, "GET", "/registry/export/analysis", nil); r.Status != 403 || !strings.Contains(string(r.Body), "CARTREG_ANALYSIS_EXPORT") {
		t.Errorf("analysis file with the setting off: %d %s", r.Status, r.Body)
	}
	r := tr.h.As(researcher, "GET", "/registry/export/analysis/dictionary", nil)
	var dict struct {
		Columns []registry.AnalysisColumn `json:"columns"`
	}
	if err := json.Unmarshal(r.Body, &dict); err != nil || len(dict.Columns) < 20 || dict.Columns[0].Name != "study_id" {
		t.Errorf("dictionary: %v %s", err, r.Body)
	}
	if r := tr.h.As(tr.h.Token(auth.RoleCoordinator, "some-site"), "GET", "/registry/export/analysis/dictionary", nil); r.Status != 403 {
		t.Errorf("a coordinator reads the analysis dictionary: %d", r.Status)
	}
}

var updateAnalysis = flag.Bool("update-analysis", false, "rewrite registry/testdata/analysis/cohort.csv from a fresh export (make fixtures does, before R)")

// The analysis file analysed in R gives the server's own figures: testdata/analysis/cohort.csv
// is this cohort's export, and r_km.csv what R's survival package makes of it
// (testdata/analysis/analyse.R, run by make fixtures). The export must still match the file
// (pseudonyms aside), and the server's Kaplan-Meier figures R's to 1e-6.
func TestAnalysisFileAgreesWithR(t *testing.T) {
	t.Parallel()
	tr := newTestRegistryWith(t, func(c *app.Config) { c.Registry = registry.Config{MinCell: 1, AnalysisExport: true} })
	loadCohortDirect(t, tr, generate(t, 300, 23))
	r := tr.h.As(tr.h.Token(auth.RoleResearcher), "GET", "/registry/export/analysis", nil)
	fresh, err := csv.NewReader(strings.NewReader(string(r.Body))).ReadAll()
	if err != nil || r.Status != 200 {
		t.Fatalf("export: %d %v", r.Status, err)
	}
	path := filepath.Join("testdata", "analysis", "cohort.csv")
	if *updateAnalysis {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := csv.NewWriter(f).WriteAll(fresh); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := csv.NewReader(strings.NewReader(string(raw))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	pseudonyms := map[int]bool{}
	for i, name := range fresh[0] {
		pseudonyms[i] = name == "study_id" || name == "site_code"
	}
	if len(stored) != len(fresh) {
		t.Fatalf("%s has %d rows, a fresh export %d: run make fixtures", path, len(stored), len(fresh))
	}
	for i := range fresh {
		for j := range fresh[i] {
			if !pseudonyms[j] && (j >= len(stored[i]) || stored[i][j] != fresh[i][j]) {
				t.Fatalf("%s row %d column %s differs from a fresh export: run make fixtures", path, i, fresh[0][j])
			}
		}
	}

	for _, row := range readRTable(t, filepath.Join("testdata", "analysis", "r_km.csv")) {
		report, err := tr.reg.Survival(context.Background(), registry.Filter{}, row["endpoint"], "")
		if err != nil {
			t.Fatal(err)
		}
		g := report.Groups[0]
		check := func(what string, got *float64, want string) {
			t.Helper()
			w, err := strconv.ParseFloat(want, 64)
			if want == "NA" {
				if got != nil {
					t.Errorf("%s %s: server %v, R NA", row["endpoint"], what, *got)
				}
				return
			}
			if err != nil || got == nil || math.Abs(*got-w) > 1e-6 {
				t.Errorf("%s %s: server %v, R %s", row["endpoint"], what, deref(got), want)
			}
		}
		n, events := float64(*g.N), float64(*g.Events)
		check("n", &n, row["n"])
		check("events", &events, row["events"])
		check("median", g.MedianDays, row["median"])
		for _, day := range []string{"365", "730", "1825"} {
			var s *float64
			if lm := g.Landmarks[day]; lm != nil {
				s = lm.Survival
			}
			check("S("+day+")", s, row["s"+day])
		}
	}
}

func deref(v *float64) any {
	if v == nil {
		return "null"
	}
	return *v
}

// readRTable reads a CSV that R wrote, skipping its "#" provenance line.
func readRTable(t *testing.T, path string) []map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comment = '#'
	recs, err := r.ReadAll()
	if err != nil || len(recs) < 2 {
		t.Fatalf("%s: %v (%d records)", path, err, len(recs))
	}
	var out []map[string]string
	for _, rec := range recs[1:] {
		row := map[string]string{}
		for i, h := range recs[0] {
			row[h] = rec[i]
		}
		out = append(out, row)
	}
	return out
}

// The analysis file is written as it is read: what the server holds while writing it does not
// grow with the rows already written. The live heap at the last of 2,000 rows is compared
// with that at the 100th; building the file whole first, as the server once did, holds every
// row (about 1 MB here) by the end.
func TestAnalysisFileIsStreamedInBoundedMemory(t *testing.T) {
	// Not parallel: the heap is the process's, and other tests' allocations would be counted.
	tr := newTestRegistryWith(t, func(c *app.Config) { c.Registry = registry.Config{MinCell: 1, AnalysisExport: true} })
	loadCohortDirect(t, tr, generate(t, 2000, 29))
	live := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	var early, late uint64
	rows := 0
	n, err := tr.reg.Analysis(context.Background(), registry.Filter{}, tr.now, func(row []string) error {
		rows++
		switch rows {
		case 100:
			early = live()
		case 2000:
			late = live()
		}
		return nil
	})
	if err != nil || n != 2000 {
		t.Fatalf("%d rows, %v", n, err)
	}
	if grown := int64(late) - int64(early); grown > 256<<10 {
		t.Errorf("the live heap grew by %d KB between the 100th and the 2,000th row: rows are being kept", grown>>10)
	} else {
		t.Logf("live heap at row 100: %d KB; at row 2,000: %d KB", early>>10, late>>10)
	}
}

// A selection with no course gives the CSV's header line alone, and its record says 0 rows; an
// error before the first row is still an OperationOutcome, and leaves no record.
func TestAnEmptyAnalysisFileHasItsHeaderAndARecord(t *testing.T) {
	t.Parallel()
	tr := newTestRegistryWith(t, func(c *app.Config) { c.Registry = registry.Config{MinCell: 1, AnalysisExport: true} })
	loadCohortDirect(t, tr, generate(t, 20, 31))
	researcher := tr.h.Token(auth.RoleResearcher)
	r := tr.h.As(researcher, "GET", "/registry/export/analysis?disease=sle", nil)
	recs, err := csv.NewReader(strings.NewReader(string(r.Body))).ReadAll()
	if r.Status != 200 || err != nil || len(recs) != 1 || recs[0][0] != "study_id" {
		t.Fatalf("an empty selection: %d %v %q", r.Status, err, r.Body)
	}
	if r := tr.h.As(researcher, "GET", "/registry/export/analysis?_format=ndjson&disease=sle", nil); r.Status != 200 || len(r.Body) != 0 {
		t.Errorf("an empty NDJSON file: %d %q", r.Status, r.Body)
	}
	if got := tr.count(`SELECT count(*) FROM registry_analysis_export WHERE rows = 0`); got != 2 {
		t.Errorf("%d records of empty exports, want 2", got)
	}
	if r := tr.h.As(researcher, "GET", "/registry/export/analysis?_format=xml", nil); r.Status != 400 {
		t.Errorf("an unknown format: %d %s", r.Status, r.Body)
	}
	// NDJSON rows carry every column by name.
	r = tr.h.As(researcher, "GET", "/registry/export/analysis?_format=ndjson", nil)
	lines := strings.Split(strings.TrimSpace(string(r.Body)), "\n")
	var first map[string]string
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first["study_id"] == "" || len(lines) != 20 {
		t.Errorf("NDJSON file: %d lines, %v, %v", len(lines), err, first)
	}
	if got := tr.count(`SELECT count(*) FROM registry_analysis_export`); got != 3 {
		t.Errorf("%d records, want 3 (the refused format is not one)", got)
	}
}
