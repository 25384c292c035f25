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
	lsn, err := flushedWAL(ctx)
	if err != nil {
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

// flushedWAL flushes the primary's WAL and answers its position then. The throwaway cluster
// commits with synchronous_commit off, so a commit the tests have seen may still sit in WAL
// buffers, past pg_current_wal_lsn(): waiting for that position alone let a standby count as
// caught up without the last commit (about one run in 30 of TestOutcomesAreReadFromTheReplica).
// A transaction that writes WAL and commits synchronously flushes all the WAL up to its own
// commit record, every earlier commit's included.
func flushedWAL(ctx context.Context) (string, error) {
	var lsn string
	err := pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = on"); err != nil {
			return err
		}
		// It must write WAL of its own: a commit that wrote none is not flushed, even with
		// synchronous_commit on.
		_, err := tx.Exec(ctx, "SELECT pg_logical_emit_message(true, 'pgtest', 'wait for replay')")
		return err
	})
	if err != nil {
		return "", err
	}
	err = admin.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&lsn)
	return lsn, err
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
