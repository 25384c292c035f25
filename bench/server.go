package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/postgres"
)

// server is a `cartreg serve` process the harness started, on the embedded database in its
// data directory.
type server struct {
	cmd     *exec.Cmd
	base    string // http://127.0.0.1:port
	dataDir string
	exited  chan struct{}
}

func startServer(ctx context.Context, bin, dataDir, logPath string, extra []string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	// The scheduler runs only when the harness runs it, so the two runs it times are the only
	// ones, whatever the time of day.
	args := append([]string{"serve", "-addr", addr, "-data-dir", dataDir, "-follow-up-schedule", "off", "-log-format", "json"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = cleanEnv()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting cartreg serve: %w", err)
	}
	s := &server{cmd: cmd, base: "http://" + addr, dataDir: dataDir, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	step("cartreg serve on %s (log: %s)", s.base, logPath)
	deadline := time.Now().Add(3 * time.Minute) // a first start runs initdb
	for {
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case <-s.exited:
			return nil, fmt.Errorf("cartreg serve exited while starting: see %s", logPath)
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("cartreg serve not ready after 3 minutes: see %s", logPath)
		}
	}
}

// cleanEnv is the environment without CARTREG_ settings, so that the server and the commands
// use the fresh embedded database, not one the caller configured.
// cleanEnv is the harness's environment without its own CARTREG_ settings, and with the
// outcome report cache off: the outcomes phase asks each query 20 times and times the
// registry computing it, which a kept report would hide after the first (the web pages'
// benchmark times the cache). An older build ignores the variable.
func cleanEnv() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "CARTREG_") })
	return append(env, "CARTREG_OUTCOMES_CACHE_MB=0")
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (s *server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// database connects to the server's embedded database as another client, for the counts the
// report states (how many resources the searches ran on).
func (s *server) database(ctx context.Context) (*pgxpool.Pool, error) {
	cluster := &postgres.Cluster{Dir: filepath.Join(s.dataDir, "postgres")}
	url, err := cluster.SharedURL(postgres.DefaultDatabase)
	if err != nil {
		return nil, err
	}
	return pgxpool.New(ctx, url)
}

// peakRSSMB is the server process's peak resident set so far (VmHWM), in MB.
func (s *server) peakRSSMB() (float64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("reading the server's peak RSS: %w", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/PID/status")
}

func runCommand(ctx context.Context, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("cartreg %s: %v\n%s", args[0], err, out)
	}
	return nil
}

// SchedulerRun is one `cartreg schedule run`, timed from start to exit.
type SchedulerRun struct {
	At        time.Time `json:"at"`
	Infusions int       `json:"infusions"`
	Seconds   float64   `json:"seconds"`
	PeakRSSMB float64   `json:"peak_rss_mb"`
	Tasks     int       `json:"tasks"`
	Open      int       `json:"open"`
	Overdue   int       `json:"overdue"`
}

var scheduleSummary = regexp.MustCompile(`: (\d+) Tasks, (\d+) open, (\d+) overdue`)

// scheduleRun runs the follow-up scheduler once as its own process, on the running server's
// database, and measures the whole process: start-up, the run, its digests, exit. The day
// after the cohort's as-of may be later than now: -force allows it.
func scheduleRun(ctx context.Context, bin, dataDir string, at time.Time) (SchedulerRun, error) {
	r := SchedulerRun{At: at}
	cmd := exec.CommandContext(ctx, bin, "schedule", "run", "-data-dir", dataDir, "-at", at.Format(time.RFC3339), "-force", "-log-level", "warn")
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("cartreg schedule run: %v\n%s", err, out.Bytes())
	}
	r.Seconds = time.Since(start).Seconds()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.PeakRSSMB = float64(ru.Maxrss) / 1024 // kB on Linux
	}
	m := scheduleSummary.FindSubmatch(out.Bytes())
	if m == nil {
		return r, fmt.Errorf("cartreg schedule run did not run: %s", out.Bytes())
	}
	r.Tasks, _ = strconv.Atoi(string(m[1]))
	r.Open, _ = strconv.Atoi(string(m[2]))
	r.Overdue, _ = strconv.Atoi(string(m[3]))
	return r, nil
}

func countRows(ctx context.Context, db *pgxpool.Pool, query string) (int, error) {
	var n int
	err := db.QueryRow(ctx, query).Scan(&n)
	return n, err
}

// Machine is what the figures were measured on.
type Machine struct {
	CPU        string `json:"cpu"`
	Cores      int    `json:"cores"`
	MemoryGiB  int    `json:"memory_gib"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	PostgreSQL string `json:"postgresql"`
	// PostgreSQLSettings are the settings the server was started with that depart from
	// PostgreSQL's defaults (cartreg's embedded ones), as name=value; where it listens is left
	// out.
	PostgreSQLSettings []string `json:"postgresql_settings,omitempty"`
}

// postgresDescription is the server's version and how it was set up, for the table's
// machine line.
func (m Machine) postgresDescription() string {
	settings := "default settings"
	if len(m.PostgreSQLSettings) > 0 {
		settings = "default settings but " + strings.Join(m.PostgreSQLSettings, ", ")
	}
	return fmt.Sprintf("PostgreSQL %s (embedded, %s)", m.PostgreSQL, settings)
}

func describeMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	m.CPU = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.Atoi(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB")); err == nil {
		m.MemoryGiB = (kb + 1<<19) >> 20
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return m
}

// procField is the first value of a "name: value" line in a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func postgresVersion(ctx context.Context, db *pgxpool.Pool) string {
	var v string
	if err := db.QueryRow(ctx, `SHOW server_version`).Scan(&v); err != nil {
		return ""
	}
	return v
}

// postgresSettings are the settings the server was started with (its command line), but for
// where it listens: the embedded cluster's departures from PostgreSQL's defaults.
func postgresSettings(ctx context.Context, db *pgxpool.Pool) []string {
	rows, err := db.Query(ctx, `SELECT name || '=' || current_setting(name) FROM pg_settings
		WHERE source = 'command line' AND name NOT IN ('listen_addresses', 'unix_socket_directories', 'port')
		ORDER BY name`)
	if err != nil {
		return nil
	}
	settings, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil
	}
	return settings
}

func binaryVersion(bin string) string {
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
