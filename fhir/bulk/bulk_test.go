package bulk_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cartreg/cartreg/app"
	"github.com/cartreg/cartreg/app/apptest"
	"github.com/cartreg/cartreg/auth"
	"github.com/cartreg/cartreg/examples"
	"github.com/cartreg/cartreg/fhir/bulk"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var async = []string{"Prefer", "respond-async", "Accept", "application/fhir+json"}

// newHarness is cartreg with its export files in a folder of the test's own, small pages so
// that paging is exercised, and no worker running: tests call Work when they want it to.
func newHarness(t *testing.T, opts ...apptest.Option) *apptest.Harness {
	t.Helper()
	dir := t.TempDir()
	return apptest.New(t, append([]apptest.Option{apptest.WithConfig(func(c *app.Config) {
		c.Export = bulk.Config{Dir: dir, PageSize: 3}
	})}, opts...)...)
}

// loadExamples loads the five example patients through the API.
func loadExamples(t *testing.T, h *apptest.Harness) {
	t.Helper()
	err := fs.WalkDir(examples.Bundles, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := examples.Bundles.ReadFile(path)
		if err != nil {
			return err
		}
		h.Expect(http.StatusOK, "POST", "/fhir", raw)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// kickOff starts an export and returns its status URL.
func kickOff(t *testing.T, h *apptest.Harness, method, path string, body any) string {
	t.Helper()
	r := h.Do(method, path, body, async...)
	if r.Status != http.StatusAccepted {
		t.Fatalf("%s %s: status %d, want 202\n%s", method, path, r.Status, r.Body)
	}
	loc := r.Header.Get("Content-Location")
	if !strings.Contains(loc, "/fhir/$export-status/") {
		t.Fatalf("Content-Location %q is not a status URL", loc)
	}
	return loc
}

// work runs the worker until no job is left.
func work(t *testing.T, h *apptest.Harness) {
	t.Helper()
	for {
		worked, err := h.App.Export.Work(context.Background())
		if err != nil {
			t.Fatalf("export worker: %v", err)
		}
		if !worked {
			return
		}
	}
}

type manifest struct {
	TransactionTime     string `json:"transactionTime"`
	Request             string `json:"request"`
	RequiresAccessToken bool   `json:"requiresAccessToken"`
	Output              []struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Count int    `json:"count"`
	} `json:"output"`
	Error []struct {
		Type string `json:"type"`
		URL  string `json:"url"`
	} `json:"error"`
}

// on is url (of any of the test's servers) on h's server: another replica answers for the
// same job.
func on(h *apptest.Harness, url string) string {
	_, path, _ := strings.Cut(url, "/fhir/")
	return h.URL + "/fhir/" + path
}

// finish runs the worker and reads the manifest.
func finish(t *testing.T, h *apptest.Harness, status string) manifest {
	t.Helper()
	work(t, h)
	r := h.DoURL("GET", on(h, status), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("status after the worker ran: %d\n%s", r.Status, r.Body)
	}
	var m manifest
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, r.Body)
	}
	if !m.RequiresAccessToken || m.TransactionTime == "" || m.Request == "" {
		t.Errorf("manifest lacks requiresAccessToken, transactionTime or request: %s", r.Body)
	}
	return m
}

// download fetches every output file of a manifest and returns each type's resources by id,
// failing on a line of another type or an id written twice.
func download(t *testing.T, h *apptest.Harness, m manifest) map[string]map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]map[string]any{}
	for _, f := range m.Output {
		r := h.DoURL("GET", on(h, f.URL), nil)
		if r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", f.URL, r.Status, r.Body)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/fhir+ndjson" {
			t.Errorf("GET %s: Content-Type %q", f.URL, ct)
		}
		lines := 0
		sc := bufio.NewScanner(bytes.NewReader(r.Body))
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			lines++
			var res map[string]any
			if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
				t.Fatalf("%s line %d: %v", f.URL, lines, err)
			}
			if res["resourceType"] != f.Type {
				t.Fatalf("%s line %d is a %v", f.URL, lines, res["resourceType"])
			}
			if out[f.Type] == nil {
				out[f.Type] = map[string]map[string]any{}
			}
			id := res["id"].(string)
			if out[f.Type][id] != nil {
				t.Fatalf("%s/%s is exported twice", f.Type, id)
			}
			out[f.Type][id] = res
		}
		if lines != f.Count {
			t.Errorf("%s: %d lines, the manifest says %d", f.URL, lines, f.Count)
		}
	}
	return out
}

// dbCounts is the number of resources of each type the database holds.
func dbCounts(t *testing.T, h *apptest.Harness) map[string]int {
	t.Helper()
	rows, err := h.DB.Query(context.Background(), `SELECT resource_type, count(*) FROM resource WHERE NOT deleted GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var typ string
		var n int
		if err := rows.Scan(&typ, &n); err != nil {
			t.Fatal(err)
		}
		out[typ] = n
	}
	return out
}

func counts(files map[string]map[string]map[string]any) map[string]int {
	out := map[string]int{}
	for typ, byID := range files {
		out[typ] = len(byID)
	}
	return out
}

func sameCounts(t *testing.T, got, want map[string]int) {
	t.Helper()
	for typ, n := range want {
		if got[typ] != n {
			t.Errorf("%s: exported %d, the database holds %d", typ, got[typ], n)
		}
	}
	for typ, n := range got {
		if _, ok := want[typ]; !ok {
			t.Errorf("%s: exported %d, expected none", typ, n)
		}
	}
}

func TestSystemExportIsTheWholeDatabase(t *testing.T) {
	h := newHarness(t)
	loadExamples(t, h)
	status := kickOff(t, h, "GET", "/fhir/$export", nil)

	r := h.DoURL("GET", status, nil)
	if r.Status != http.StatusAccepted || r.Header.Get("X-Progress") == "" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("status before the worker ran: %d, X-Progress %q, Retry-After %q", r.Status, r.Header.Get("X-Progress"), r.Header.Get("Retry-After"))
	}
	m := finish(t, h, status)
	if len(m.Error) != 0 {
		t.Errorf("errors: %+v", m.Error)
	}
	if !strings.HasSuffix(m.Request, "/fhir/$export") {
		t.Errorf("request %q", m.Request)
	}
	files := download(t, h, m)
	sameCounts(t, counts(files), dbCounts(t, h))

	// gzip when asked for, the same bytes.
	plain := h.DoURL("GET", m.Output[0].URL, nil)
	zipped := h.DoURL("GET", m.Output[0].URL, nil, "Accept-Encoding", "gzip")
	if zipped.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Accept-Encoding: gzip gave Content-Encoding %q", zipped.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(zipped.Body))
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(unzipped, plain.Body) {
		t.Errorf("gzipped file differs from the plain one (%v)", err)
	}
}

func TestExportIsOnlyForItsOwnerAndTheRightRoles(t *testing.T) {
	h := newHarness(t)
	loadExamples(t, h)
	ehr := h.Token(auth.RoleEHR)
	r := h.As(ehr, "GET", "/fhir/$export?_type=Patient", nil, async...)
	if r.Status != http.StatusAccepted {
		t.Fatalf("EHR kick-off: %d %s", r.Status, r.Body)
	}
	status := r.Header.Get("Content-Location")
	path := strings.TrimPrefix(status, h.URL)
	work(t, h)
	if r := h.As(ehr, "GET", path, nil); r.Status != http.StatusOK {
		t.Fatalf("owner's status: %d %s", r.Status, r.Body)
	}
	other := h.Token(auth.RoleEHR)
	if r := h.As(other, "GET", path, nil); r.Status != http.StatusNotFound {
		t.Errorf("another client's status: %d, want 404", r.Status)
	}
	var m manifest
	_ = json.Unmarshal(h.As(ehr, "GET", path, nil).Body, &m)
	file := strings.TrimPrefix(m.Output[0].URL, h.URL)
	if r := h.As(other, "GET", file, nil); r.Status != http.StatusNotFound {
		t.Errorf("another client's download: %d, want 404", r.Status)
	}
	if r := h.As(other, "DELETE", path, nil); r.Status != http.StatusNotFound {
		t.Errorf("another client's delete: %d, want 404", r.Status)
	}
	if r := h.Do("GET", file, nil); r.Status != http.StatusOK {
		t.Errorf("an administrator's download: %d, want 200", r.Status)
	}
	for _, role := range []auth.Role{auth.RoleResearcher, auth.RoleCoordinator} {
		var sites []string
		if role == auth.RoleCoordinator {
			sites = []string{"org-1"}
		}
		tok := h.Token(role, sites...)
		if r := h.As(tok, "GET", "/fhir/$export", nil, async...); r.Status != http.StatusForbidden {
			t.Errorf("%s kick-off: %d, want 403", role, r.Status)
		}
		if r := h.As(tok, "GET", path, nil); r.Status != http.StatusForbidden {
			t.Errorf("%s status: %d, want 403", role, r.Status)
		}
	}
	if r := h.Do("GET", "/fhir/$export", nil, "Prefer", "respond-async", "Authorization", ""); r.Status != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", r.Status)
	}
}

func TestScopesLimitTheTypes(t *testing.T) {
	h := newHarness(t)
	loadExamples(t, h)
	client, _, err := h.App.Auth.AddClient(context.Background(), auth.NewClient{Name: "observations only", Role: auth.RoleEHR,
		Scopes: "system/Observation.read"}) // with a secret, though the test never uses it
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := h.App.Auth.IssueToken(context.Background(), client.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if r := h.As(tok, "GET", "/fhir/$export?_type=Patient", nil, async...); r.Status != http.StatusForbidden {
		t.Errorf("_type=Patient with system/Observation.read: %d, want 403", r.Status)
	}
	r := h.As(tok, "GET", "/fhir/$export", nil, async...)
	if r.Status != http.StatusAccepted {
		t.Fatalf("kick-off: %d %s", r.Status, r.Body)
	}
	work(t, h)
	var m manifest
	_ = json.Unmarshal(h.As(tok, "GET", strings.TrimPrefix(r.Header.Get("Content-Location"), h.URL), nil).Body, &m)
	if len(m.Output) != 1 || m.Output[0].Type != "Observation" || m.Output[0].Count != dbCounts(t, h)["Observation"] {
		t.Errorf("system/Observation.read exported %+v", m.Output)
	}
}

func TestKickOffRefusals(t *testing.T) {
	h := newHarness(t)
	for _, c := range []struct {
		name, method, path string
		body               any
		headers            []string
		status             int
		location           string
	}{
		{"no Prefer", "GET", "/fhir/$export", nil, []string{"Accept", "application/fhir+json"}, 400, "Prefer"},
		{"XML", "GET", "/fhir/$export", nil, []string{"Prefer", "respond-async", "Accept", "application/fhir+xml"}, 406, "Accept"},
		{"output format", "GET", "/fhir/$export?_outputFormat=text/csv", nil, async, 400, "_outputFormat"},
		{"type", "GET", "/fhir/$export?_type=Patient,Nonsense", nil, async, 400, "_type"},
		{"since", "GET", "/fhir/$export?_since=yesterday", nil, async, 400, "_since"},
		{"since without zone", "GET", "/fhir/$export?_since=2026-01-01T00:00:00", nil, async, 400, "_since"},
		{"unknown", "GET", "/fhir/$export?_count=5", nil, async, 400, "_count"},
		{"unsupported", "GET", "/fhir/$export?_elements=id", nil, async, 400, "_elements"},
		{"type filter", "GET", "/fhir/$export?_typeFilter=Observation%3Fnonsense%3D1", nil, async, 400, "_typeFilter"},
		{"type filter outside _type", "GET", "/fhir/$export?_type=Patient&_typeFilter=Observation%3Fcode%3D1", nil, async, 400, "_typeFilter"},
		{"patient on system", "POST", "/fhir/$export", map[string]any{"resourceType": "Parameters", "parameter": []any{
			map[string]any{"name": "patient", "valueReference": map[string]any{"reference": "Patient/a"}}}}, async, 400, "Parameters.parameter[0]"},
		{"not Parameters", "POST", "/fhir/$export", map[string]any{"resourceType": "Patient"}, async, 400, "Parameters"},
		{"POST unknown", "POST", "/fhir/$export", map[string]any{"resourceType": "Parameters", "parameter": []any{
			map[string]any{"name": "_type", "valueString": "Patient"}, map[string]any{"name": "colour", "valueString": "red"}}}, async, 400, "Parameters.parameter[1]"},
		{"Group unknown", "GET", "/fhir/Group/nope/$export", nil, async, 404, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := h.Do(c.method, c.path, c.body, c.headers...)
			if r.Status != c.status {
				t.Fatalf("status %d, want %d\n%s", r.Status, c.status, r.Body)
			}
			if c.location != "" && !strings.Contains(string(r.Body), `"expression":["`+c.location+`"]`) {
				t.Errorf("OperationOutcome not located at %s: %s", c.location, r.Body)
			}
		})
	}
	// Lenient handling ignores what it does not know.
	h.Expect(http.StatusAccepted, "GET", "/fhir/$export?_elements=id&colour=red", nil, "Prefer", "respond-async, handling=lenient")
	// POST with Parameters.
	kickOff(t, h, "POST", "/fhir/$export", map[string]any{"resourceType": "Parameters", "parameter": []any{
		map[string]any{"name": "_type", "valueString": "Patient"}, map[string]any{"name": "_outputFormat", "valueString": "ndjson"}}})
}

func TestTooManyJobsIsA429NamingTheSetting(t *testing.T) {
	dir := t.TempDir()
	h := apptest.New(t, apptest.WithConfig(func(c *app.Config) { c.Export = bulk.Config{Dir: dir, MaxJobs: 2} }))
	kickOff(t, h, "GET", "/fhir/$export", nil)
	kickOff(t, h, "GET", "/fhir/$export", nil)
	r := h.Do("GET", "/fhir/$export", nil, async...)
	if r.Status != http.StatusTooManyRequests || !strings.Contains(string(r.Body), "CARTREG_EXPORT_MAX_JOBS=2") {
		t.Fatalf("third unfinished job: %d %s", r.Status, r.Body)
	}
	work(t, h)
	kickOff(t, h, "GET", "/fhir/$export", nil) // finished jobs do not count
}

func TestTypeSinceAndTypeFilterNarrow(t *testing.T) {
	h := newHarness(t)
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	h.SetNow(t0)
	loadExamples(t, h)
	all := dbCounts(t, h)

	// _type
	m := finish(t, h, kickOff(t, h, "GET", "/fhir/$export?_type=Patient,Observation", nil))
	sameCounts(t, counts(download(t, h, m)), map[string]int{"Patient": all["Patient"], "Observation": all["Observation"]})

	// _since: only what changed after it.
	h.SetNow(t0.Add(time.Hour))
	var pid string
	if err := h.DB.QueryRow(context.Background(), `SELECT resource_id FROM resource WHERE resource_type = 'Patient' ORDER BY 1 LIMIT 1`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	pat := h.Expect(http.StatusOK, "GET", "/fhir/Patient/"+pid, nil).JSON(t)
	pat["active"] = false
	h.Expect(http.StatusOK, "PUT", "/fhir/Patient/"+pid, pat)
	since := t0.Add(30 * time.Minute).Format(time.RFC3339)
	m = finish(t, h, kickOff(t, h, "GET", "/fhir/$export?_since="+since, nil))
	files := download(t, h, m)
	if len(files) != 1 || len(files["Patient"]) != 1 || files["Patient"][pid] == nil {
		t.Errorf("_since=%s exported %v, want Patient/%s alone", since, counts(files), pid)
	}

	// _typeFilter: what the same search finds.
	var code string // the rarest response category of the Observations
	if err := h.DB.QueryRow(context.Background(), `SELECT value FROM search_token WHERE resource_type = 'Observation' AND code = 'value-concept'
		GROUP BY value ORDER BY count(DISTINCT resource_id), value LIMIT 1`).Scan(&code); err != nil {
		t.Fatal(err)
	}
	search := h.Expect(http.StatusOK, "GET", "/fhir/Observation?value-concept="+code+"&_total=accurate&_count=0", nil).JSON(t)
	want := fmt.Sprint(search["total"])
	m = finish(t, h, kickOff(t, h, "GET", "/fhir/$export?_type=Observation,Patient&_typeFilter=Observation%3Fvalue-concept%3D"+code, nil))
	files = download(t, h, m)
	if fmt.Sprint(len(files["Observation"])) != want || len(files["Patient"]) != all["Patient"] {
		t.Errorf("_typeFilter=Observation?value-concept=%s exported %v; the search finds %s Observations", code, counts(files), want)
	}
	if want == "0" || want == fmt.Sprint(all["Observation"]) {
		t.Errorf("the filter (%s of %d) does not narrow anything: the test proves nothing", want, all["Observation"])
	}
}

func TestExportIsAsOfItsTransactionTime(t *testing.T) {
	h := newHarness(t)
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	h.SetNow(t0)
	loadExamples(t, h)
	h.Expect(http.StatusCreated, "POST", "/fhir/Organization", map[string]any{"resourceType": "Organization", "name": "Closing"})
	before := dbCounts(t, h)
	var orgID string
	if err := h.DB.QueryRow(context.Background(), `SELECT resource_id FROM resource r JOIN resource_version v USING (resource_type, resource_id, version_id)
		WHERE resource_type = 'Organization' AND v.body LIKE '%Closing%'`).Scan(&orgID); err != nil {
		t.Fatal(err)
	}
	h.SetNow(t0.Add(time.Minute))
	status := kickOff(t, h, "GET", "/fhir/$export?_type=Patient,Organization", nil)
	// Written after the kick-off: a new Patient, and a deleted Organization.
	h.SetNow(t0.Add(2 * time.Minute))
	h.Expect(http.StatusCreated, "POST", "/fhir/Patient", map[string]any{"resourceType": "Patient", "gender": "female"})
	h.Expect(http.StatusNoContent, "DELETE", "/fhir/Organization/"+orgID, nil)
	files := download(t, h, finish(t, h, status))
	sameCounts(t, counts(files), map[string]int{"Patient": before["Patient"], "Organization": before["Organization"]})
	if files["Organization"][orgID] == nil {
		t.Errorf("Organization/%s, deleted after the transaction time, is not exported as it was", orgID)
	}
}

func TestDeleteRemovesTheJobAndItsFiles(t *testing.T) {
	h := newHarness(t)
	loadExamples(t, h)
	status := kickOff(t, h, "GET", "/fhir/$export", nil)
	m := finish(t, h, status)
	dir := filepath.Join(h.App.Export.Config().Dir, status[strings.LastIndex(status, "/")+1:])
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the job's folder: %v", err)
	}
	h.Expect(http.StatusAccepted, "DELETE", strings.TrimPrefix(status, h.URL), nil)
	h.Expect(http.StatusNotFound, "GET", strings.TrimPrefix(status, h.URL), nil)
	h.Expect(http.StatusNotFound, "GET", strings.TrimPrefix(m.Output[0].URL, h.URL), nil)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the job's folder is still there (%v)", err)
	}
	if n := h.Count(`SELECT count(*) FROM bulk_export_file`); n != 0 {
		t.Errorf("%d file rows left", n)
	}
}

func TestDeletingARunningJobStopsIt(t *testing.T) {
	h := newHarness(t)
	loadExamples(t, h)
	status := kickOff(t, h, "GET", "/fhir/$export", nil)
	pages := 0
	h.App.Export.OnPage = func(job, typ string, count int64) {
		if pages++; pages == 2 {
			h.Expect(http.StatusAccepted, "DELETE", strings.TrimPrefix(status, h.URL), nil)
		}
	}
	work(t, h)
	if pages != 2 {
		t.Errorf("the worker wrote %d pages, want it to stop after the second, when the job was deleted", pages)
	}
	entries, _ := os.ReadDir(h.App.Export.Config().Dir)
	if len(entries) != 0 || h.Count(`SELECT count(*) FROM bulk_export_job`) != 0 {
		t.Errorf("after deleting the running job: %d folders, %d jobs", len(entries), h.Count(`SELECT count(*) FROM bulk_export_job`))
	}
	h.Expect(http.StatusNotFound, "GET", strings.TrimPrefix(status, h.URL), nil)
}

func TestAJobThatCannotBeWrittenFailsWithAnOperationOutcome(t *testing.T) {
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h := apptest.New(t, apptest.WithConfig(func(c *app.Config) { c.Export = bulk.Config{Dir: notADir} }))
	status := kickOff(t, h, "GET", "/fhir/$export?_type=Patient", nil)
	work(t, h)
	r := h.DoURL("GET", status, nil)
	if r.Status != http.StatusInternalServerError || !strings.Contains(string(r.Body), `"resourceType":"OperationOutcome"`) {
		t.Fatalf("status of a failed job: %d %s", r.Status, r.Body)
	}
	// A failed job no longer counts against the client's limit, and can be deleted.
	h.Expect(http.StatusAccepted, "DELETE", strings.TrimPrefix(status, h.URL), nil)
}

// A type whose query can no longer run (the server restarted with tighter search limits after
// the kick-off) gets an error file; the other types are still exported.
func TestATypeThatCannotBeExportedGetsAnErrorFile(t *testing.T) {
	h := newHarness(t)
	loadExamples(t, h)
	status := kickOff(t, h, "GET", "/fhir/$export?_type=Patient,Observation&_typeFilter=Observation%3Fstatus%3Dfinal,amended,corrected", nil)
	restarted := apptest.New(t, apptest.WithDatabase(h.DB), apptest.WithConfig(func(c *app.Config) {
		c.Export = bulk.Config{Dir: h.App.Export.Config().Dir, PageSize: 3}
		c.FHIR.Search.MaxValues = 2
	}))
	m := finish(t, restarted, status)
	if len(m.Error) != 1 || m.Error[0].Type != "OperationOutcome" {
		t.Fatalf("manifest errors %+v, want one OperationOutcome file", m.Error)
	}
	r := restarted.DoURL("GET", on(restarted, m.Error[0].URL), nil)
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), "Observation") || strings.Count(string(r.Body), "\n") != 1 {
		t.Errorf("error file: %d %s", r.Status, r.Body)
	}
	sameCounts(t, counts(download(t, restarted, m)), map[string]int{"Patient": dbCounts(t, h)["Patient"]})
}

func TestExpiredJobsAreSwept(t *testing.T) {
	h := newHarness(t)
	t0 := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	h.SetNow(t0)
	loadExamples(t, h)
	status := kickOff(t, h, "GET", "/fhir/$export?_type=Patient", nil)
	finish(t, h, status)
	if n, err := h.App.Export.Sweep(context.Background(), t0.Add(23*time.Hour)); err != nil || n != 0 {
		t.Fatalf("sweep within the retention deleted %d (%v)", n, err)
	}
	h.SetNow(t0.Add(25 * time.Hour))
	h.Expect(http.StatusNotFound, "GET", strings.TrimPrefix(status, h.URL), nil) // expired: gone to the client
	if n, err := h.App.Export.Sweep(context.Background(), t0.Add(25*time.Hour)); err != nil || n != 1 {
		t.Fatalf("sweep after the retention deleted %d (%v), want 1", n, err)
	}
	entries, _ := os.ReadDir(h.App.Export.Config().Dir)
	if len(entries) != 0 || h.Count(`SELECT count(*) FROM bulk_export_job`) != 0 {
		t.Errorf("after the sweep: %d folders, %d jobs", len(entries), h.Count(`SELECT count(*) FROM bulk_export_job`))
	}
}

func TestTwoReplicasRunAJobOnce(t *testing.T) {
	h := newHarness(t)
	loadExamples(t, h)
	dir := h.App.Export.Config().Dir
	second := apptest.New(t, apptest.WithDatabase(h.DB), apptest.WithConfig(func(c *app.Config) {
		c.Export = bulk.Config{Dir: dir, PageSize: 3}
	}))
	status := kickOff(t, h, "GET", "/fhir/$export", nil)
	// Both workers go for it at once, each as often as it can until it is done.
	done := make(chan error, 2)
	for _, r := range []*apptest.Harness{h, second} {
		go func() {
			for {
				worked, err := r.App.Export.Work(context.Background())
				if err != nil || !worked {
					done <- err
					return
				}
			}
		}()
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := h.Count(`SELECT claims FROM bulk_export_job`); n != 1 {
		t.Errorf("the job was taken up %d times, want once", n)
	}
	m := finish(t, second, status) // the other replica serves it too
	sameCounts(t, counts(download(t, second, m)), dbCounts(t, h))
}

func TestAnExportKilledMidwayResumesCompleteAndWithoutDuplicates(t *testing.T) {
	h := newHarness(t)
	loadExamples(t, h)
	want := dbCounts(t, h)
	status := kickOff(t, h, "GET", "/fhir/$export", nil)
	jobID := status[strings.LastIndex(status, "/")+1:]

	// The worker dies after its second page of Observations: its context ends mid-job.
	ctx, cancel := context.WithCancel(context.Background())
	h.App.Export.OnPage = func(job, typ string, count int64) {
		if typ == "Observation" && count == 6 {
			cancel()
		}
	}
	if _, err := h.App.Export.Work(ctx); err != nil {
		t.Fatalf("the interrupted worker: %v", err)
	}
	h.App.Export.OnPage = nil
	if r := h.DoURL("GET", status, nil); r.Status != http.StatusAccepted {
		t.Fatalf("status of the interrupted job: %d, want 202", r.Status)
	}
	// A page written to disk but not recorded, as a kill between the two would leave.
	obs := filepath.Join(h.App.Export.Config().Dir, jobID, "Observation.ndjson")
	f, err := os.OpenFile(obs, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("the interrupted file: %v", err)
	}
	if _, err := f.WriteString(`{"resourceType":"Observation","id":"half-written"}` + "\n" + `{"resourceType":"Obs`); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// The server restarts on the same database and files.
	restarted := apptest.New(t, apptest.WithDatabase(h.DB), apptest.WithConfig(func(c *app.Config) {
		c.Export = bulk.Config{Dir: h.App.Export.Config().Dir, PageSize: 3}
	}))
	files := download(t, restarted, finish(t, restarted, status))
	sameCounts(t, counts(files), want)
	if files["Observation"]["half-written"] != nil {
		t.Error("the unrecorded page survived the resume")
	}
	if n := h.Count(`SELECT claims FROM bulk_export_job`); n != 2 {
		t.Errorf("claims = %d, want 2 (the killed worker, then the restarted one)", n)
	}
}

// compartmentOf reports whether an exported resource is a patient or refers to one of ids.
func refersTo(res map[string]any, ids []string) bool {
	raw, _ := json.Marshal(res)
	for _, id := range ids {
		if res["resourceType"] == "Patient" && res["id"] == id || bytes.Contains(raw, []byte(`"Patient/`+id+`"`)) {
			return true
		}
	}
	return false
}

func TestPatientAndGroupExportsAreTheirPatientsCompartments(t *testing.T) {
	h := newHarness(t)
	loadExamples(t, h)
	all := dbCounts(t, h)
	rows, err := h.DB.Query(context.Background(), `SELECT resource_id FROM resource WHERE resource_type = 'Patient' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var patients []string
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		patients = append(patients, id)
	}
	rows.Close()

	// Patient level: every patient, and nothing outside their compartments.
	files := download(t, h, finish(t, h, kickOff(t, h, "GET", "/fhir/Patient/$export", nil)))
	if len(files["Patient"]) != all["Patient"] || len(files["Observation"]) != all["Observation"] {
		t.Errorf("Patient/$export: %v; the database %v", counts(files), all)
	}
	for _, typ := range []string{"Organization", "Practitioner", "StructureDefinition", "CodeSystem"} {
		if len(files[typ]) > 0 {
			t.Errorf("Patient/$export exported %d %s, outside every patient's compartment", len(files[typ]), typ)
		}
	}

	// A Group of two members.
	members := patients[:2]
	group := map[string]any{"resourceType": "Group", "type": "person", "actual": true, "member": []any{
		map[string]any{"entity": map[string]any{"reference": "Patient/" + members[0]}},
		map[string]any{"entity": map[string]any{"reference": "Patient/" + members[1]}},
		map[string]any{"entity": map[string]any{"reference": "Patient/" + patients[2]}, "inactive": true},
	}}
	gid := h.Expect(http.StatusCreated, "POST", "/fhir/Group", group).JSON(t)["id"].(string)
	files = download(t, h, finish(t, h, kickOff(t, h, "GET", "/fhir/Group/"+gid+"/$export?_type=Patient,Observation,Procedure,Condition", nil)))
	if got := slices.Sorted(func(yield func(string) bool) {
		for id := range files["Patient"] {
			if !yield(id) {
				return
			}
		}
	}); !slices.Equal(got, members) {
		t.Errorf("Group export's Patients %v, want %v", got, members)
	}
	n := 0
	for typ, byID := range files {
		for id, res := range byID {
			n++
			if !refersTo(res, members) {
				t.Errorf("%s/%s is exported but not in the members' compartments", typ, id)
			}
		}
	}
	var want int
	if err := h.DB.QueryRow(context.Background(), `SELECT count(DISTINCT (resource_type, resource_id)) FROM search_reference
		WHERE target_type = 'Patient' AND target_id = ANY($1) AND resource_type IN ('Observation', 'Procedure', 'Condition')`, members).Scan(&want); err != nil {
		t.Fatal(err)
	}
	if n != want+2 {
		t.Errorf("Group export: %d resources, the members' compartments hold %d", n, want+2)
	}

	// A Group defined by a registry cohort: the registry's myeloma patients.
	var myeloma []string
	rows, err = h.DB.Query(context.Background(), `SELECT DISTINCT patient_id FROM registry_infusion WHERE disease = 'myeloma' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		myeloma = append(myeloma, id)
	}
	rows.Close()
	if len(myeloma) == 0 || len(myeloma) == len(patients) {
		t.Fatalf("the examples have %d myeloma patients of %d: the cohort proves nothing", len(myeloma), len(patients))
	}
	cohort := map[string]any{"resourceType": "Group", "type": "person", "actual": false, "characteristic": []any{map[string]any{
		"code":                 map[string]any{"coding": []any{map[string]any{"system": bulk.CohortSystem, "code": "cohort-disease"}}},
		"valueCodeableConcept": map[string]any{"coding": []any{map[string]any{"code": "myeloma"}}},
		"exclude":              false,
	}}}
	cid := h.Expect(http.StatusCreated, "POST", "/fhir/Group", cohort).JSON(t)["id"].(string)
	files = download(t, h, finish(t, h, kickOff(t, h, "GET", "/fhir/Group/"+cid+"/$export?_type=Patient", nil)))
	got := slices.Sorted(func(yield func(string) bool) {
		for id := range files["Patient"] {
			if !yield(id) {
				return
			}
		}
	})
	if !slices.Equal(got, myeloma) {
		t.Errorf("cohort Group's Patients %v, want the registry's myeloma patients %v", got, myeloma)
	}

	// A cohort characteristic the server does not know is a located 422 at kick-off.
	cohort["characteristic"] = []any{map[string]any{
		"code":         map[string]any{"coding": []any{map[string]any{"system": bulk.CohortSystem, "code": "cohort-colour"}}},
		"valueBoolean": true, "exclude": false,
	}}
	bad := h.Expect(http.StatusCreated, "POST", "/fhir/Group", cohort).JSON(t)["id"].(string)
	r := h.Do("GET", "/fhir/Group/"+bad+"/$export", nil, async...)
	if r.Status != http.StatusUnprocessableEntity || !strings.Contains(string(r.Body), "Group.characteristic[0]") {
		t.Errorf("unknown characteristic: %d %s", r.Status, r.Body)
	}
}

func TestCapabilityStatementNamesTheExportOperations(t *testing.T) {
	h := newHarness(t)
	cs := string(h.Expect(http.StatusOK, "GET", "/fhir/metadata", nil, "Authorization", "").Body)
	for _, def := range []string{"OperationDefinition/export", "OperationDefinition/patient-export", "OperationDefinition/group-export",
		"CapabilityStatement/bulk-data"} {
		if !strings.Contains(cs, "http://hl7.org/fhir/uv/bulkdata/"+def) {
			t.Errorf("the CapabilityStatement does not name %s", def)
		}
	}
}

// A job resumed where its files are not (the export folder was lost, or the server restarted
// with another one) writes them again rather than padding them with zero bytes up to what
// its rows recorded, or listing files that are gone.
func TestAResumedExportWhoseFilesAreGoneWritesThemAgain(t *testing.T) {
	h := newHarness(t)
	loadExamples(t, h)
	want := dbCounts(t, h)
	status := kickOff(t, h, "GET", "/fhir/$export", nil)

	ctx, cancel := context.WithCancel(context.Background())
	h.App.Export.OnPage = func(job, typ string, count int64) {
		if typ == "Observation" && count == 6 {
			cancel()
		}
	}
	if _, err := h.App.Export.Work(ctx); err != nil {
		t.Fatalf("the interrupted worker: %v", err)
	}
	h.App.Export.OnPage = nil
	if n := h.Count(`SELECT count(*) FROM bulk_export_file WHERE done AND count > 0`); n == 0 {
		t.Fatal("no type was finished before Observation: the test needs one")
	}

	// The server restarts with an empty export folder.
	restarted := apptest.New(t, apptest.WithDatabase(h.DB), apptest.WithConfig(func(c *app.Config) {
		c.Export = bulk.Config{Dir: t.TempDir(), PageSize: 3}
	}))
	files := download(t, restarted, finish(t, restarted, status))
	sameCounts(t, counts(files), want)
}
