package followup_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/postgres/pgtest"
	"github.com/cartreg/cartreg/registry"
	"github.com/cartreg/cartreg/registry/synth"
)

// planTestDatabase is the database of a test of the plans the scheduler's statements get: one
// backend, whose counts the test reads after each step, with the run-time parameters params;
// the cohort loaded as of asOf and analysed; the tables given keeping those statistics
// (autovacuum off for them), as a database does before autovacuum comes by.
func planTestDatabase(t *testing.T, cohort *synth.Cohort, asOf time.Time, params map[string]string, tables ...string) (*pgxpool.Pool, *fhir.Store, *registry.Registry) {
	t.Helper()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	store, reg := loadCohort(t, db, cohort, asOf)
	for _, table := range tables {
		if _, err := db.Exec(ctx, `ALTER TABLE `+table+` SET (autovacuum_enabled = off)`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		t.Fatal(err)
	}
	return db, store, reg
}

// blocksTouched is the shared buffers db's one backend has touched so far. Its counts reach
// pg_stat_database when it flushes them, which the first statement forces at its end.
func blocksTouched(t *testing.T, db *pgxpool.Pool) int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := db.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		t.Fatal(err)
	}
	var n int64
	if err := db.QueryRow(ctx, `SELECT blks_hit + blks_read FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
