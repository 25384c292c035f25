package fhir

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/postgres/pgtest"
)

// A search's reader refuses to write, stops a statement at its time limit, answers QueryRow
// as pgx does, and gives its connection back with none of its settings.
func TestTheLimitedReaderIsReadOnlyTimedAndLeavesNothingBehind(t *testing.T) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1 // every statement below, and the checks after them, on one connection
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	r := limitedReader{pool: pool, timeout: 200 * time.Millisecond}

	settingsLeft := func(when string) {
		t.Helper()
		var readOnly, timeout string
		if err := pool.QueryRow(ctx, `SELECT current_setting('transaction_read_only'), current_setting('statement_timeout')`).
			Scan(&readOnly, &timeout); err != nil {
			t.Fatal(err)
		}
		if readOnly != "off" || timeout != "0" {
			t.Errorf("after %s the connection has transaction_read_only %s, statement_timeout %s; want off and 0", when, readOnly, timeout)
		}
	}

	write := func(sql string) error {
		rows, err := r.Query(ctx, sql)
		if err != nil {
			return err
		}
		rows.Close()
		return rows.Err()
	}
	err = write(`CREATE TABLE written_by_a_search (a int)`)
	if err == nil {
		err = write(`INSERT INTO resource (resource_type, resource_id, version_id, last_updated) VALUES ('Patient', 'x', 1, now())`)
	}
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("a write through the reader: %v, want refused as read-only", err)
	}
	settingsLeft("a refused write")

	rows, err := r.Query(ctx, `SELECT pg_sleep(5)`)
	if err == nil {
		for rows.Next() {
		}
		rows.Close()
		err = rows.Err()
	}
	if !QueryCanceled(err) {
		t.Errorf("a 5 s statement under a 200 ms limit: %v, want cancelled", err)
	}
	settingsLeft("a cancelled statement")

	var n int
	if err := r.QueryRow(ctx, `SELECT count(*) FROM resource`).Scan(&n); err != nil || n != 0 {
		t.Errorf("QueryRow: %d, %v", n, err)
	}
	if err := r.QueryRow(ctx, `SELECT 1 FROM resource WHERE resource_id = $1`, pgx.QueryExecModeExec, "none").Scan(&n); !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("QueryRow of no row: %v, want pgx.ErrNoRows", err)
	}

	if err := r.QueryRow(ctx, `SELECT 1 / $1`, 0).Scan(&n); err == nil || !strings.Contains(err.Error(), "division by zero") {
		t.Errorf("a read that fails: %v, want PostgreSQL's error", err)
	}
	// A search reads its page, then counts, closing the page's rows only when it returns: the
	// one connection must be free for the count once the last row is read.
	page, err := r.Query(ctx, `SELECT generate_series(1, 3)`)
	if err != nil {
		t.Fatal(err)
	}
	for page.Next() {
	}
	waited, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = r.QueryRow(waited, `SELECT 2`).Scan(&n)
	cancel()
	page.Close()
	if err != nil || n != 2 {
		t.Errorf("a statement after a read's last row, its rows not yet closed: %d, %v", n, err)
	}
	settingsLeft("the reads")
}
