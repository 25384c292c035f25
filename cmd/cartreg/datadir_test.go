package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cartreg/cartreg/postgres/pgtest"
)

// The README's first steps with the default data dir, from two directories: `make run` in the
// repository, `cartreg demo` (and `client add`, `token`) from anywhere else. They must share
// one database: the server finds the patients the demo loaded.
func TestDemoFromAnotherDirectoryUsesTheServersDatabase(t *testing.T) {
	t.Parallel()
	home := pgtest.ReachableDir(t) // the per-user default, moved here by XDG_DATA_HOME
	repo, elsewhere := t.TempDir(), t.TempDir()
	env := []string{"XDG_DATA_HOME=" + home, testBaseURL}
	server := startCartregIn(t, repo, env, "serve", "-addr", "127.0.0.1:0")
	base := server.waitReady(time.Minute)
	defer server.stop(syscall.SIGTERM)

	out, err := runCartregIn(t, elsewhere, append(env, "CARTREG_LOG_FORMAT=json"), "demo")
	if err != nil || !strings.Contains(out, "5 example patients loaded") {
		t.Fatalf("demo from another directory: %v\n%s", err, out)
	}
	// The log says which database it used, without an "embedded":false beside it.
	if !strings.Contains(out, `"database":"embedded, shared with the running server"`) || strings.Contains(out, `"embedded":`) {
		t.Errorf("demo's log does not say it used the server's embedded database:\n%s", out)
	}
	res := authGet(t, newClientToken(t, env, "admin"), base+"/fhir/Patient?identifier="+examplePatientSystem+"|&_summary=count")
	defer res.Body.Close()
	var bundle struct{ Total int }
	if err := json.NewDecoder(res.Body).Decode(&bundle); err != nil || res.StatusCode != 200 || bundle.Total != 5 {
		t.Errorf("the server sees %d example patients (status %d, %v), want 5", bundle.Total, res.StatusCode, err)
	}
	for _, dir := range []string{repo, elsewhere} {
		if _, err := os.Stat(filepath.Join(dir, "var")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a data dir was made in the working directory %s: %v", dir, err)
		}
	}
}

// A command pointed at a data dir with no database refuses, naming the data dir and how to
// name the server's, and makes nothing; with -init it makes the database.
func TestCommandsNeverMakeASecondDatabaseWithoutInit(t *testing.T) {
	t.Parallel()
	home := pgtest.ReachableDir(t)
	env := []string{"XDG_DATA_HOME=" + home, "CARTREG_LOG_LEVEL=warn"}
	dataDir := filepath.Join(home, "cartreg")
	for _, args := range [][]string{{"demo"}, {"schedule", "run"}, {"import", "x.ndjson"}, {"migrate", "up"}, {"client", "list"}} {
		wd := t.TempDir()
		if err := os.WriteFile(filepath.Join(wd, "x.ndjson"), []byte(`{"resourceType":"Patient","id":"p1"}`+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := runCartregIn(t, wd, env, args...)
		if err == nil {
			t.Errorf("%s without a database: succeeded\n%s", strings.Join(args, " "), out)
			continue
		}
		for _, want := range []string{"no embedded database", dataDir, "-data-dir", "CARTREG_DATA_DIR", "-init"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: the refusal does not say %q:\n%s", strings.Join(args, " "), want, out)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgres", "data")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused command left a cluster behind: %v", err)
	}
	if out, err := runCartregIn(t, t.TempDir(), env, "migrate", "up", "-init"); err != nil {
		t.Fatalf("migrate up -init: %v\n%s", err, out)
	}
	if out, err := runCartregIn(t, t.TempDir(), env, "migrate", "status"); err != nil {
		t.Fatalf("migrate status on the database -init made: %v\n%s", err, out)
	}
}

// On a terminal the log is read by people: durations as 1.2s, never nanoseconds, and no
// "<nil>" for an error that did not happen.
func TestLogsAreReadable(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		cfg := defaultConfig()
		cfg.LogFormat = format
		var buf bytes.Buffer
		logger, err := cfg.newLogger(&buf)
		if err != nil {
			t.Fatal(err)
		}
		var noErr error
		logger.Info("job ran", "duration", 1234567891*time.Nanosecond, "took", 9865019*time.Nanosecond, "error", noErr,
			slog.Duration("latency", 230400*time.Nanosecond))
		line := buf.String()
		want := map[string][]string{
			"text": {"duration=1.2s", "took=9.9ms", "latency=230µs"},
			"json": {`"duration":"1.2s"`, `"took":"9.9ms"`, `"latency":"230µs"`},
		}[format]
		for _, w := range want {
			if !strings.Contains(line, w) {
				t.Errorf("%s log lacks %s: %s", format, w, line)
			}
		}
		if strings.Contains(line, "error") || strings.Contains(line, "1234567891") {
			t.Errorf("%s log: %s", format, line)
		}
	}
}
