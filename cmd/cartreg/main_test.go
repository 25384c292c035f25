package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/migrations"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

// binary is cartreg built once for these tests, which run it as users do: as a process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cartreg-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "cartreg")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building cartreg: %v\n%s", err, out)
		os.Exit(1)
	}
	code := pgtest.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is a running cartreg.
type process struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   chan string
	mu     sync.Mutex
	output strings.Builder
	exited chan error
}

// childEnv is the test's environment without any CARTREG_, PG or XDG_DATA_HOME setting, plus
// extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		// XDG_DATA_HOME too: it moves the default data dir, which a test must choose itself.
		if !strings.HasPrefix(kv, "CARTREG_") && !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "XDG_DATA_HOME=") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

func startCartreg(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	return startCartregIn(t, "", env, args...)
}

// startCartregIn starts cartreg in the working directory dir ("" for the test's own).
func startCartregIn(t *testing.T, dir string, env []string, args ...string) *process {
	t.Helper()
	p := &process{t: t, addr: make(chan string, 1), exited: make(chan error, 1)}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Dir = dir
	p.cmd.Env = childEnv(append([]string{"CARTREG_ADDR=127.0.0.1:0", "CARTREG_LOG_FORMAT=json"}, env...)...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.output.WriteString(line + "\n")
			p.mu.Unlock()
			var entry struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "listening" {
				p.addr <- entry.Addr
			}
		}
		p.exited <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

func (p *process) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// waitReady waits for the listening address, then for /readyz to answer 200.
func (p *process) waitReady(timeout time.Duration) string {
	p.t.Helper()
	deadline := time.After(timeout)
	var addr string
	select {
	case addr = <-p.addr:
	case err := <-p.exited:
		p.t.Fatalf("cartreg exited before listening (%v):\n%s", err, p.logs())
	case <-deadline:
		p.t.Fatalf("cartreg did not listen within %s:\n%s", timeout, p.logs())
	}
	url := "http://" + addr + "/readyz"
	for {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return "http://" + addr
			}
		}
		select {
		case <-deadline:
			p.t.Fatalf("/readyz not 200 within %s:\n%s", timeout, p.logs())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends sig and waits for the process to end, returning its exit error.
func (p *process) stop(sig syscall.Signal) error {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		return err
	case <-time.After(time.Minute):
		p.t.Fatalf("cartreg did not exit within a minute of %s:\n%s", sig, p.logs())
		return nil
	}
}

// wait is for a process expected to end by itself.
func (p *process) wait() error {
	p.t.Helper()
	select {
	case err := <-p.exited:
		return err
	case <-time.After(2 * time.Minute):
		p.t.Fatalf("cartreg did not exit:\n%s", p.logs())
		return nil
	}
}

// processesIn lists live processes whose working directory is dir: a postmaster's is its
// data directory.
func processesIn(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err == nil && cwd == dir {
			pids = append(pids, pid)
		}
	}
	return pids
}

func waitNoProcessesIn(t *testing.T, dir string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := processesIn(dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres processes still running on %s: %v", dir, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestServeOnTheEmbeddedDatabaseSurvivesStopsAndKills(t *testing.T) {
	t.Parallel()
	data := pgtest.ReachableDir(t)
	env := []string{"CARTREG_DATA_DIR=" + data}
	pgdata := filepath.Join(data, "postgres", "data")

	first := startCartreg(t, env, "serve")
	first.waitReady(time.Minute) // initdb included
	// The postmaster runs with the embedded settings (autovacuum_naptime: see embeddedSettings).
	var postmaster string
	for _, pid := range processesIn(pgdata) {
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmdline, []byte("-D\x00")) {
			postmaster = string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
	if !strings.Contains(postmaster, "autovacuum_naptime=10s") {
		t.Errorf("the embedded postmaster's command line %q does not set autovacuum_naptime=10s", postmaster)
	}
	if err := first.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, first.logs())
	}
	if left := processesIn(pgdata); len(left) > 0 {
		t.Fatalf("SIGTERM left postgres processes behind: %v", left)
	}

	second := startCartreg(t, env, "serve")
	second.waitReady(30 * time.Second)
	_ = second.stop(syscall.SIGKILL)
	// The killed server's postgres is told to shut down by the kernel.
	waitNoProcessesIn(t, pgdata, 30*time.Second)

	third := startCartreg(t, env, "serve")
	third.waitReady(30 * time.Second)
	if err := third.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, third.logs())
	}
	waitNoProcessesIn(t, pgdata, time.Second)
}

func TestServeRecoversFromAStalePostmasterPid(t *testing.T) {
	t.Parallel()
	data := pgtest.ReachableDir(t)
	env := []string{"CARTREG_DATA_DIR=" + data}
	first := startCartreg(t, env, "serve")
	first.waitReady(time.Minute)
	if err := first.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// As after a power cut: the pid file names a pid that now belongs to someone else.
	squatter := exec.Command("sleep", "60")
	if err := squatter.Start(); err != nil {
		t.Fatal(err)
	}
	defer squatter.Process.Kill()
	pidFile := filepath.Join(data, "postgres", "data", "postmaster.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(squatter.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	again := startCartreg(t, env, "serve")
	again.waitReady(30 * time.Second)
	if err := again.stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

func TestTwoServersOnOneEmptyDatabaseMigrateItOnce(t *testing.T) {
	t.Parallel()
	url := pgtest.NewEmptyDatabaseURL(t)
	env := []string{"CARTREG_DATABASE_URL=" + url}
	a, b := startCartreg(t, env, "serve"), startCartreg(t, env, "serve")
	a.waitReady(time.Minute)
	b.waitReady(time.Minute)

	applied := strings.Count(a.logs(), `"msg":"applying migration"`) + strings.Count(b.logs(), `"msg":"applying migration"`)
	names, _ := migrations.Names()
	if applied != len(names) {
		t.Fatalf("%d migrations applied between two servers, want %d (each once):\n%s\n%s", applied, len(names), a.logs(), b.logs())
	}
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	st, err := migrations.GetStatus(context.Background(), conn)
	if err != nil || st.Check() != nil {
		t.Fatalf("schema after both started: %+v %v", st, err)
	}
	for _, p := range []*process{a, b} {
		if err := p.stop(syscall.SIGTERM); err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	}
}

func TestServeWithoutMigratingRefusesAnOutdatedSchema(t *testing.T) {
	t.Parallel()
	p := startCartreg(t, []string{"CARTREG_DATABASE_URL=" + pgtest.NewEmptyDatabaseURL(t), "CARTREG_MIGRATE=false"}, "serve")
	err := p.wait()
	if err == nil {
		t.Fatal("served an out-of-date schema")
	}
	if !strings.Contains(p.logs(), "refusing to serve") || !strings.Contains(p.logs(), "out of date") {
		t.Fatalf("no clear reason given:\n%s", p.logs())
	}
}

func runCartreg(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	return runCartregIn(t, "", env, args...)
}

// runCartregIn runs cartreg to the end in the working directory dir ("" for the test's own).
func runCartregIn(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = childEnv(env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestMigrateStatusAndUp(t *testing.T) {
	t.Parallel()
	env := []string{"CARTREG_DATABASE_URL=" + pgtest.NewEmptyDatabaseURL(t), "CARTREG_LOG_LEVEL=warn"}
	names, _ := migrations.Names()

	out, err := runCartreg(t, env, "migrate", "status")
	if err == nil || !strings.Contains(out, "pending:") || !strings.Contains(out, names[0]) {
		t.Fatalf("status of an empty database: %v\n%s", err, out)
	}
	if out, err := runCartreg(t, env, "migrate", "up"); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	out, err = runCartreg(t, env, "migrate", "status", "-json")
	if err != nil {
		t.Fatalf("status after up: %v\n%s", err, out)
	}
	var st migrations.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || int(st.Current) != len(names) || len(st.Pending) != 0 {
		t.Fatalf("status after up = %s (%v)", out, err)
	}
}

func TestMigrateUpOnTheEmbeddedDatabase(t *testing.T) {
	t.Parallel()
	env := []string{"CARTREG_DATA_DIR=" + pgtest.ReachableDir(t), "CARTREG_LOG_LEVEL=warn"}
	if out, err := runCartreg(t, env, "migrate", "up", "-init"); err != nil {
		t.Fatalf("migrate up: %v\n%s", err, out)
	}
	out, err := runCartreg(t, env, "migrate", "status")
	if err != nil || !strings.Contains(out, "schema version:") {
		t.Fatalf("status: %v\n%s", err, out)
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	out, err := runCartreg(t, nil, "version")
	if err != nil || !strings.Contains(out, "cartreg ") || !strings.Contains(out, "google/fhir v0.7.4") {
		t.Fatalf("version: %v\n%s", err, out)
	}
	out, err = runCartreg(t, nil, "help", "serve")
	if err != nil || !strings.Contains(out, "-database-url") || !strings.Contains(out, "-addr") {
		t.Fatalf("help serve: %v\n%s", err, out)
	}
	if out, err := runCartreg(t, nil, "frobnicate"); err == nil || !strings.Contains(out, `unknown command "frobnicate"`) {
		t.Fatalf("an unknown command: %v\n%s", err, out)
	}
}
