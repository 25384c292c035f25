package pgtest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/postgres"
)

var (
	standbyOnce sync.Once
	standbyErr  error
	standby     *postgres.Cluster
	standbyDir  string
)

// NewDatabaseWithReplica creates a migrated database of the test's own, as NewDatabaseURL
// does, and returns its URL on the primary and on a hot standby that follows the primary by
// streaming replication: a real read replica, for code that sends reads there. The standby
// is started once per test binary and stopped by Main. Against a server named by
// CARTREG_TEST_DATABASE_URL there is no cluster to copy, and the test is skipped.
func NewDatabaseWithReplica(t testing.TB) (primaryURL, replicaURL string) {
	t.Helper()
	if os.Getenv(EnvURL) != "" {
		t.Skipf("pgtest: a read replica needs the throwaway cluster, not %s", EnvURL)
	}
	primaryURL = NewDatabaseURL(t)
	standbyOnce.Do(func() { standbyErr = startStandby() })
	if standbyErr != nil {
		t.Fatalf("pgtest: starting the standby: %v", standbyErr)
	}
	u, err := withDatabase(standby.URL("postgres"), databaseOf(t, primaryURL))
	if err != nil {
		t.Fatal(err)
	}
	WaitForReplay(t, u)
	return primaryURL, u
}

// WaitForReplay waits until the standby at replicaURL has replayed everything written on
// the primary so far.
func WaitForReplay(t testing.TB, replicaURL string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var lsn string
	if err := admin.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatalf("pgtest: the primary's WAL position: %v", err)
	}
	for {
		caughtUp, err := replayedTo(ctx, replicaURL, lsn)
		if err == nil && caughtUp {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pgtest: the standby has not replayed %s in time (last error: %v)", lsn, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func replayedTo(ctx context.Context, replicaURL, lsn string) (bool, error) {
	conn, err := pgx.Connect(ctx, replicaURL)
	if err != nil {
		return false, err // the database may not have arrived yet
	}
	defer conn.Close(ctx)
	var ok bool
	err = conn.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn).Scan(&ok)
	return ok, err
}

func startStandby() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	if standbyDir, err = os.MkdirTemp("", "cartreg-test-standby-"); err != nil {
		return err
	}
	if err := os.Chmod(standbyDir, 0o755); err != nil {
		return err
	}
	standby = &postgres.Cluster{Dir: standbyDir, Binaries: cluster.Binaries, RunAs: cluster.RunAs,
		Settings: cluster.Settings, Primary: cluster}
	if err := standby.Start(ctx); err != nil {
		os.RemoveAll(standbyDir)
		standby = nil
		return err
	}
	return nil
}

func stopStandby() {
	if standby == nil {
		return
	}
	if err := standby.Stop(30 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: stopping the standby:", err)
	}
	os.RemoveAll(standbyDir)
}

func databaseOf(t testing.TB, dbURL string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Database
}
