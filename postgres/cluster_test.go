package postgres

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func newTestCluster(t *testing.T, dir string) *Cluster {
	t.Helper()
	bins, err := FindBinaries(os.Getenv("CARTREG_PG_BIN_DIR"))
	if err != nil {
		t.Fatalf("these tests need PostgreSQL server binaries: %v", err)
	}
	runAs := os.Getenv("CARTREG_PG_USER")
	if runAs == "" {
		runAs = "postgres"
	}
	return &Cluster{Dir: dir, Binaries: bins, RunAs: runAs, Settings: map[string]string{"fsync": "off"}}
}

// clusterRoot is a fresh directory the postgres user can enter when the tests run as root.
func clusterRoot(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir makes both 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "pg")
}

func start(t *testing.T, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("starting cluster: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop(10 * time.Second) })
}

// exec1 runs sql and returns the int it selects, if it is a query.
func exec1(t *testing.T, c *Cluster, sql string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.URL(DefaultDatabase))
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if !strings.HasPrefix(sql, "SELECT") {
		_, err = conn.Exec(ctx, sql)
	} else {
		err = conn.QueryRow(ctx, sql).Scan(&n)
	}
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// postmastersOn lists live processes whose working directory is dir.
func postmastersOn(t *testing.T, dir string) []int {
	t.Helper()
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

func TestClusterKeepsDataAcrossRestartsAndLeavesNoProcess(t *testing.T) {
	c := newTestCluster(t, clusterRoot(t))
	start(t, c)
	exec1(t, c, "CREATE TABLE kept AS SELECT 42 AS n")
	if err := c.Stop(10 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if left := postmastersOn(t, c.dataDir()); len(left) > 0 {
		t.Fatalf("postgres processes left after Stop: %v", left)
	}

	again := newTestCluster(t, c.Dir)
	start(t, again)
	if n := exec1(t, again, "SELECT n FROM kept"); n != 42 {
		t.Fatalf("after restart kept.n = %d, want 42", n)
	}
}

func TestClusterRefusesASecondOwner(t *testing.T) {
	first := newTestCluster(t, clusterRoot(t))
	start(t, first)
	second := newTestCluster(t, first.Dir)
	err := second.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "in use by another cartreg process") {
		t.Fatalf("second Start: err = %v, want 'in use by another cartreg process'", err)
	}
	if exec1(t, first, "SELECT 1") != 1 {
		t.Fatal("first cluster stopped working")
	}
}

func TestClusterRemovesStalePostmasterPid(t *testing.T) {
	c := newTestCluster(t, clusterRoot(t))
	start(t, c)
	if err := c.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	// A postmaster.pid naming a live process that is not our postgres, as after a crash and
	// a reboot that handed the pid to something else. postgres itself would refuse to start.
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer other.Process.Kill()
	pidFile := filepath.Join(c.dataDir(), "postmaster.pid")
	stale := fmt.Sprintf("%d\n%s\n1700000000\n5432\n\n\n  5432001   0\n", other.Process.Pid, c.dataDir())
	if err := os.WriteFile(pidFile, []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}

	again := newTestCluster(t, c.Dir)
	start(t, again)
	if exec1(t, again, "SELECT 1") != 1 {
		t.Fatal("cluster not usable")
	}
	if !syscallAlive(other.Process.Pid) {
		t.Fatal("the unrelated process was killed")
	}
}

func TestClusterStopsAPostgresLeftByADeadOwner(t *testing.T) {
	dead := newTestCluster(t, clusterRoot(t))
	start(t, dead)
	// The owner dies: the kernel drops its lock, its postgres keeps running.
	dead.release()

	heir := newTestCluster(t, dead.Dir)
	start(t, heir)
	select {
	case <-dead.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the orphaned postgres is still running")
	}
	if exec1(t, heir, "SELECT 1") != 1 {
		t.Fatal("cluster not usable")
	}
	if pids := postmastersOn(t, heir.dataDir()); len(pids) == 0 {
		t.Fatal("no postmaster for the new owner")
	}
}

func TestClusterRefusesDataFromAnotherMajorVersion(t *testing.T) {
	c := newTestCluster(t, clusterRoot(t))
	start(t, c)
	if err := c.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dataDir(), "PG_VERSION"), []byte("9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := newTestCluster(t, c.Dir).Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "made by PostgreSQL 9") {
		t.Fatalf("err = %v, want a version mismatch", err)
	}
}

func TestFindBinariesExplainsWhatIsMissing(t *testing.T) {
	_, err := FindBinaries(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "apt-get install -y postgresql") {
		t.Fatalf("err = %v, want advice to install postgresql", err)
	}
}

func syscallAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	return err == nil && p.Signal(syscall.Signal(0)) == nil
}
