package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cartreg/cartreg/internal/shareddata"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

// exportManifest is the part of a Bulk Data manifest these tests read.
type exportManifest struct {
	Output []struct {
		Type  string `json:"type"`
		URL   string `json:"url"`
		Count int    `json:"count"`
	} `json:"output"`
	Error []struct {
		URL string `json:"url"`
	} `json:"error"`
}

// bulkClient is a Bulk Data client of a running server, as an EHR's would be: a token, and the
// server's own address in place of the configured base URL's host, which tests cannot listen on.
type bulkClient struct {
	t     *testing.T
	base  string // http://127.0.0.1:port
	token string
}

func (c *bulkClient) do(method, url string, headers ...string) (*http.Response, []byte) {
	c.t.Helper()
	url = strings.Replace(url, "http://cartreg.test", c.base, 1)
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/fhir+json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, url, err)
	}
	return res, body
}

// kickOff starts a system-level export and returns its status URL.
func (c *bulkClient) kickOff() string {
	c.t.Helper()
	res, body := c.do("GET", c.base+"/fhir/$export", "Prefer", "respond-async")
	loc := res.Header.Get("Content-Location")
	if res.StatusCode != http.StatusAccepted || loc == "" {
		c.t.Fatalf("kick-off: %d, Content-Location %q\n%s", res.StatusCode, loc, body)
	}
	return loc
}

// poll asks the status URL once: the manifest when done, else nil and X-Progress.
func (c *bulkClient) poll(status string) (*exportManifest, string) {
	c.t.Helper()
	res, body := c.do("GET", status)
	switch res.StatusCode {
	case http.StatusAccepted:
		return nil, res.Header.Get("X-Progress")
	case http.StatusOK:
		var m exportManifest
		if err := json.Unmarshal(body, &m); err != nil {
			c.t.Fatalf("manifest: %v\n%s", err, body)
		}
		if len(m.Error) > 0 {
			c.t.Fatalf("the export has error files: %s", body)
		}
		return &m, ""
	default:
		c.t.Fatalf("status: %d\n%s", res.StatusCode, body)
		return nil, ""
	}
}

// wait polls until the export is done.
func (c *bulkClient) wait(status string, within time.Duration) *exportManifest {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if m, _ := c.poll(status); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the export did not finish within %s", within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// download writes each output file to dir as Type.ndjson, checking its lines against the
// manifest's count.
func (c *bulkClient) download(m *exportManifest, dir string) {
	c.t.Helper()
	for _, f := range m.Output {
		res, body := c.do("GET", f.URL, "Accept", "application/fhir+ndjson")
		if res.StatusCode != http.StatusOK {
			c.t.Fatalf("GET %s: %d\n%s", f.URL, res.StatusCode, body)
		}
		if n := bytes.Count(body, []byte("\n")); n != f.Count {
			c.t.Errorf("%s: %d lines, the manifest says %d", f.Type, n, f.Count)
		}
		if err := os.WriteFile(filepath.Join(dir, f.Type+".ndjson"), body, 0o600); err != nil {
			c.t.Fatal(err)
		}
	}
}

// ndjsonIDs reads the exported files in dir: each type's ids, failing on a line that is not
// a resource of the file's type or an id written twice.
func ndjsonIDs(t *testing.T, dir string) map[string]map[string]bool {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	out := map[string]map[string]bool{}
	for _, name := range names {
		typ := strings.TrimSuffix(filepath.Base(name), ".ndjson")
		fh, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for line := 1; sc.Scan(); line++ {
			var res struct{ ResourceType, ID string }
			if err := json.Unmarshal(sc.Bytes(), &res); err != nil || res.ResourceType != typ || res.ID == "" {
				t.Fatalf("%s line %d is not a %s (%v): %.200q", filepath.Base(name), line, typ, err, sc.Text())
			}
			if ids[res.ID] {
				t.Fatalf("%s/%s is written twice", typ, res.ID)
			}
			ids[res.ID] = true
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		out[typ] = ids
	}
	return out
}

func sizes(ids map[string]map[string]bool) map[string]int {
	out := map[string]int{}
	for typ, set := range ids {
		out[typ] = len(set)
	}
	return out
}

// sameTypeCounts fails unless got and want have the same count of every type.
func sameTypeCounts(t *testing.T, what string, got, want map[string]int) {
	t.Helper()
	for typ, n := range want {
		if got[typ] != n {
			t.Errorf("%s: %s %d, want %d", what, typ, got[typ], n)
		}
	}
	for typ, n := range got {
		if _, ok := want[typ]; !ok {
			t.Errorf("%s: %d %s, want none", what, n, typ)
		}
	}
}

// The issue's round trip, as operators would do it: the Synthea set imported with `cartreg
// import`, exported over HTTP by a Bulk Data client of `cartreg serve` (kick-off, poll,
// download), and the downloaded files loaded with `cartreg import` into an empty database,
// which then holds as many resources of every type. Without -short (make acceptance, and CI's
// full run) every Synthea Bundle goes through, 79 patients and about 46,000 resources, which
// takes four to five minutes on two shared cores; -short (make test) takes the batch Bundles
// and the first ten patients.
func TestSyntheaExportRoundTripsThroughTheImportCommand(t *testing.T) {
	t.Parallel()
	all := shareddata.Glob(t, "synthea/hiv-bundles/*.json.gz")
	source := t.TempDir()
	patients := 0
	for _, f := range all {
		if !strings.Contains(f, "Information") {
			if testing.Short() && patients == 10 {
				continue
			}
			patients++
		}
		abs, _ := filepath.Abs(f)
		if err := os.Symlink(abs, filepath.Join(source, filepath.Base(f))); err != nil {
			t.Fatal(err)
		}
	}
	from := pgtest.NewEmptyDatabaseURL(t)
	env := []string{"CARTREG_DATABASE_URL=" + from, "CARTREG_EXPORT_DIR=" + t.TempDir(), testBaseURL}
	start := time.Now()
	if out, err := runCartreg(t, append(env, "CARTREG_LOG_LEVEL=warn"), "import", source); err != nil {
		t.Fatalf("import of the Synthea Bundles: %v\n%s", err, out)
	}
	want := countsIn(t, from, perType)
	if want["Patient"] != patients || want["Observation"] == 0 {
		t.Fatalf("after importing %d patients' Bundles: %v", patients, want)
	}

	imported := time.Since(start)
	server := startCartreg(t, env, "serve")
	c := &bulkClient{t: t, base: server.waitReady(time.Minute), token: newClientToken(t, env, "admin")}
	start = time.Now()
	m := c.wait(c.kickOff(), 5*time.Minute)
	files := t.TempDir()
	c.download(m, files)
	if err := server.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("stopping the server: %v", err)
	}
	exportedIn := time.Since(start)
	exported := sizes(ndjsonIDs(t, files))
	sameTypeCounts(t, "exported", exported, want)

	to := pgtest.NewEmptyDatabaseURL(t)
	start = time.Now()
	out, err := runCartreg(t, []string{"CARTREG_DATABASE_URL=" + to, "CARTREG_LOG_LEVEL=warn"}, "import", files)
	if err != nil {
		t.Fatalf("import of the export: %v\n%s", err, out)
	}
	sameTypeCounts(t, "after importing the export", countsIn(t, to, perType), want)
	t.Logf("%d patients, %d types; Bundles imported in %s, exported and downloaded in %s, the export imported in %s: %s",
		patients, len(want), imported.Round(time.Second), exportedIn.Round(time.Second), time.Since(start).Round(time.Second), strings.TrimSpace(out))
}

var progressed = regexp.MustCompile(`in-progress: \d+ of \d+ types, (\d+) resources`)

// writeNDJSON writes n small resources of typ, ids typ-1…, to dir/typ.ndjson; each
// Observation is about one of patients Patients.
func writeNDJSON(t *testing.T, dir, typ string, n, patients int) {
	t.Helper()
	var b strings.Builder
	for i := 1; i <= n; i++ {
		switch typ {
		case "Patient":
			fmt.Fprintf(&b, `{"resourceType":"Patient","id":"p-%d","gender":"female","birthDate":"19%02d-01-01"}`+"\n", i, i%100)
		case "Observation":
			fmt.Fprintf(&b, `{"resourceType":"Observation","id":"o-%d","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},`+
				`"subject":{"reference":"Patient/p-%d"},"valueQuantity":{"value":%d,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}`+"\n",
				i, 1+i%patients, 40+i%100)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, typ+".ndjson"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// An export whose server is killed with SIGKILL while it writes resumes when the server
// starts again on the same database and data dir, and its files then hold every resource
// once: no gap, no duplicate.
func TestAnExportResumesAfterItsServerIsKilled(t *testing.T) {
	t.Parallel()
	seed := t.TempDir()
	const patients, observations = 2000, 6000
	writeNDJSON(t, seed, "Patient", patients, patients)
	writeNDJSON(t, seed, "Observation", observations, patients)
	url := pgtest.NewEmptyDatabaseURL(t)
	// A small page makes the export take seconds (each page is written, synced and recorded),
	// and it is killed past its first thousand resources, in the middle of a file.
	env := []string{"CARTREG_DATABASE_URL=" + url, "CARTREG_DATA_DIR=" + t.TempDir(), "CARTREG_EXPORT_PAGE_SIZE=20", testBaseURL}
	if out, err := runCartreg(t, append(env, "CARTREG_LOG_LEVEL=warn"), "import", seed); err != nil {
		t.Fatalf("seeding: %v\n%s", err, out)
	}
	want := countsIn(t, url, perType)

	first := startCartreg(t, env, "serve")
	c := &bulkClient{t: t, base: first.waitReady(time.Minute), token: newClientToken(t, env, "admin")}
	status := c.kickOff()
	deadline := time.Now().Add(2 * time.Minute)
	var before int
	for {
		m, progress := c.poll(status)
		if m != nil {
			t.Fatalf("the export finished before it could be killed: make it bigger")
		}
		if p := progressed.FindStringSubmatch(progress); p != nil {
			if before, _ = strconv.Atoi(p[1]); before >= 1000 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress within 2 minutes: %q\n%s", progress, first.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = first.stop(syscall.SIGKILL)

	second := startCartreg(t, env, "serve")
	c.base = second.waitReady(time.Minute)
	if m, progress := c.poll(status); m != nil || !strings.Contains(progress, "resources") {
		t.Fatalf("after the restart the job should still be running: %q", progress)
	}
	m := c.wait(status, 5*time.Minute)
	files := t.TempDir()
	c.download(m, files)
	if err := second.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("stopping: %v\n%s", err, second.logs())
	}
	got := ndjsonIDs(t, files)
	sameTypeCounts(t, "exported after the kill", sizes(got), want)
	for i := 1; i <= patients; i++ {
		if !got["Patient"][fmt.Sprintf("p-%d", i)] {
			t.Fatalf("Patient/p-%d is missing", i)
		}
	}
	for i := 1; i <= observations; i++ {
		if !got["Observation"][fmt.Sprintf("o-%d", i)] {
			t.Fatalf("Observation/o-%d is missing", i)
		}
	}
	if n := countsIn(t, url, `SELECT 'claims', claims FROM bulk_export_job`)["claims"]; n != 2 {
		t.Errorf("the job was taken up %d times, want 2: once before the kill, once after", n)
	}
	t.Logf("killed after %d resources", before)
}
