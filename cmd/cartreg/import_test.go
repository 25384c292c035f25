package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/internal/shareddata"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

// linesPerType counts the resources in a Bulk Data export's files, by file name's type.
func linesPerType(t *testing.T, files []string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(fh)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(zr)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) != "" {
				out[strings.SplitN(filepath.Base(f), ".", 2)[0]]++
			}
		}
		fh.Close()
	}
	return out
}

func countsIn(t *testing.T, url, query string) map[string]int {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(context.Background(), query)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		out[k] = n
	}
	return out
}

const perType = "SELECT resource_type, count(*) FROM resource WHERE NOT deleted GROUP BY 1"
const versionCount = "SELECT 'versions', count(*) FROM resource_version"

func TestImportBulkDataThenAgain(t *testing.T) {
	t.Parallel()
	want := linesPerType(t, shareddata.Glob(t, "synthea/bulk-10-patients/*.ndjson.gz"))
	dir := shareddata.Path("synthea/bulk-10-patients")
	url := pgtest.NewEmptyDatabaseURL(t)
	env := []string{"CARTREG_DATABASE_URL=" + url, "CARTREG_LOG_LEVEL=warn"}

	out, err := runCartreg(t, env, "import", dir)
	if err != nil || !strings.Contains(out, "imported 7160 resources from 13 files") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	got := countsIn(t, url, perType)
	for typ, n := range want {
		if got[typ] != n {
			t.Errorf("%s: %d imported, %d in the file", typ, got[typ], n)
		}
	}
	versions := countsIn(t, url, versionCount)["versions"]

	out, err = runCartreg(t, env, "import", dir)
	if err != nil || !strings.Contains(out, "imported 0 resources") {
		t.Fatalf("second import: %v\n%s", err, out)
	}
	if again := countsIn(t, url, versionCount)["versions"]; again != versions {
		t.Fatalf("a second import wrote %d versions", again-versions)
	}
}

func TestImportResumesAfterAFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "Patient.ndjson")
	write := func(badLine int) {
		var b strings.Builder
		for i := 1; i <= 1000; i++ {
			birth := "1970-01-01"
			if i == badLine {
				birth = "1970-02-30" // not a date
			}
			fmt.Fprintf(&b, `{"resourceType":"Patient","id":"imp-%d","birthDate":"%s"}`+"\n", i, birth)
		}
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(700)
	url := pgtest.NewEmptyDatabaseURL(t)
	env := []string{"CARTREG_DATABASE_URL=" + url, "CARTREG_LOG_LEVEL=info", "CARTREG_LOG_FORMAT=text"}

	out, err := runCartreg(t, env, "import", "-batch-size", "100", "-workers", "2", file)
	if err == nil || !strings.Contains(out, "Patient.ndjson:700") || !strings.Contains(out, "Patient.birthDate") {
		t.Fatalf("a bad line 700 should fail the import, naming the line and element: %v\n%s", err, out)
	}
	if n := countsIn(t, url, perType)["Patient"]; n != 600 {
		t.Fatalf("%d patients committed before the failure, want the 600 of the batches before line 700", n)
	}

	write(0) // the file is corrected
	out, err = runCartreg(t, env, "import", "-batch-size", "100", file)
	if err != nil || !strings.Contains(out, "imported 400 resources") || !strings.Contains(out, "skipped=600") {
		t.Fatalf("resumed import: %v\n%s", err, out)
	}
	if n := countsIn(t, url, `SELECT 'versions', count(*) FROM resource_version WHERE resource_type = 'Patient'`)["versions"]; n != 1000 {
		t.Fatalf("%d Patient versions after resuming, want 1000: the first 600 must not be imported again", n)
	}
}

func TestImportSyntheaBundles(t *testing.T) {
	t.Parallel()
	all := shareddata.Glob(t, "synthea/hiv-bundles/*.json.gz")
	// The batch Bundles and five patients (all of them without -short: about a minute).
	dir := t.TempDir()
	patients := 0
	for _, f := range all {
		if !strings.Contains(f, "Information") {
			if testing.Short() && patients == 5 {
				continue
			}
			patients++
		}
		abs, _ := filepath.Abs(f)
		if err := os.Symlink(abs, filepath.Join(dir, filepath.Base(f))); err != nil {
			t.Fatal(err)
		}
	}
	url := pgtest.NewEmptyDatabaseURL(t)
	out, err := runCartreg(t, []string{"CARTREG_DATABASE_URL=" + url, "CARTREG_LOG_LEVEL=warn"}, "import", dir)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	got := countsIn(t, url, perType)
	if got["Patient"] != patients || got["Practitioner"] == 0 || got["Organization"] == 0 || got["Observation"] == 0 {
		t.Fatalf("after importing %d patients' Bundles: %v", patients, got)
	}
	t.Log(strings.TrimSpace(out))
}

// The demo loads the five example patients into the configured database, says where each
// assessment falls in the follow-up plan, and changes nothing when run again.
func TestDemoLoadsTheExamplesOnce(t *testing.T) {
	t.Parallel()
	url := pgtest.NewEmptyDatabaseURL(t)
	env := []string{"CARTREG_DATABASE_URL=" + url, "CARTREG_LOG_LEVEL=warn"}
	out, err := runCartreg(t, env, "demo")
	if err != nil || !strings.Contains(out, "5 example patients loaded") {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"2023-11-22", "lugano-cmr", "m1", "y5", "unscheduled", "sle-doris", "Ex02", "CD19+BCMA", "imwg-scr"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	versions := countsIn(t, url, versionCount)["versions"]
	out, err = runCartreg(t, env, "demo")
	if err != nil || !strings.Contains(out, "(0 resources written") {
		t.Fatalf("second demo: %v\n%s", err, out)
	}
	if again := countsIn(t, url, versionCount)["versions"]; again != versions {
		t.Errorf("a second demo wrote %d versions", again-versions)
	}
}

// What the README tells a new user: with `make run` serving the embedded database, `cartreg
// demo` loads the examples into it, and the server's outcomes show them.
func TestDemoIntoTheRunningServersEmbeddedDatabase(t *testing.T) {
	t.Parallel()
	data := pgtest.ReachableDir(t)
	env := []string{"CARTREG_DATA_DIR=" + data, "CARTREG_OUTCOMES_MIN_CELL=1", "CARTREG_OUTCOMES_ROUND_TO=1", testBaseURL}
	server := startCartreg(t, env, "serve", "-addr", "127.0.0.1:0")
	base := server.waitReady(time.Minute)
	defer server.stop(syscall.SIGTERM)

	out, err := runCartreg(t, append(env, "CARTREG_LOG_LEVEL=warn"), "demo")
	if err != nil || !strings.Contains(out, "5 example patients loaded") {
		t.Fatalf("demo beside a running server: %v\n%s", err, out)
	}
	// The README's next step: a researcher's client and token, then the outcomes.
	res := authGet(t, newClientToken(t, env, "researcher"), base+"/registry/outcomes/response?disease=lbcl")
	defer res.Body.Close()
	var report struct {
		Groups []struct {
			N int `json:"n"`
		} `json:"groups"`
	}
	if err := json.NewDecoder(res.Body).Decode(&report); err != nil || len(report.Groups) != 1 || report.Groups[0].N != 2 {
		t.Errorf("lymphoma outcomes after the demo: %v %+v", err, report)
	}
}
