package fhir_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/fhir"
	"github.com/cartreg/cartreg/fhir/searchparam"
	"github.com/cartreg/cartreg/postgres/pgtest"
)

// hookFunc is a write hook made of a function.
type hookFunc func(ctx context.Context, tx pgx.Tx, changes []fhir.Change) error

func (f hookFunc) BeforeCommit(ctx context.Context, tx pgx.Tx, changes []fhir.Change) error {
	return f(ctx, tx, changes)
}

// sentLog lists what the pool's connections send: "query: SQL" for a statement sent alone,
// "batch: SQL | SQL" for a pipelined batch.
type sentLog struct {
	mu   sync.Mutex
	sent []string
}

func (l *sentLog) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = append(l.sent, s)
}

func (l *sentLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.sent
	l.sent = nil
	return out
}

func (l *sentLog) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	l.add("query: " + strings.Join(strings.Fields(d.SQL), " "))
	return ctx
}
func (l *sentLog) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (l *sentLog) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	var sqls []string
	for _, q := range d.Batch.QueuedQueries {
		sqls = append(sqls, strings.Join(strings.Fields(q.SQL), " "))
	}
	l.add("batch: " + strings.Join(sqls, " | "))
	return ctx
}
func (l *sentLog) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (l *sentLog) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

// A statement queued by SendWithNext travels with the transaction's next statement, is undone
// with the transaction when it or anything else fails, survives a savepoint rolled back after
// it, and is sent before the commit when nothing else is; the transaction's BEGIN travels with
// its first statement.
func TestSendWithNext(t *testing.T) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	sent := &sentLog{}
	cfg.ConnConfig.Tracer = sent
	cfg.MaxConns = 1 // one connection: what it sends is the transaction's, in order
	db, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if _, err := db.Exec(ctx, `CREATE TABLE note (n int PRIMARY KEY CHECK (n > 0), what text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	note := func(n int, what string) hookFunc {
		return func(ctx context.Context, tx pgx.Tx, _ []fhir.Change) error {
			return fhir.SendWithNext(ctx, tx, fmt.Sprintf("noting %d", n), `INSERT INTO note (n, what) VALUES ($1, $2)`, n, what)
		}
	}
	// write stores a new Patient with hooks installed, and returns what InTx returned.
	write := func(t *testing.T, hooks ...fhir.WriteHook) error {
		t.Helper()
		store := fhir.NewStore(db, searchparam.Default(), time.Now)
		for _, h := range hooks {
			store.AddHook(h)
		}
		res, err := fhir.Parse([]byte(`{"resourceType": "Patient", "name": [{"family": "Queued"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		sent.take()
		return store.InTx(ctx, func(tx pgx.Tx) error {
			_, err := store.Create(ctx, tx, res)
			return err
		})
	}
	notes := func(t *testing.T) string {
		t.Helper()
		rows, err := db.Query(ctx, `SELECT n, what FROM note ORDER BY n`)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var n int
			var what string
			err := r.Scan(&n, &what)
			return fmt.Sprintf("%d:%s", n, what), err
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, " ")
	}
	patients := func(t *testing.T) int {
		t.Helper()
		var n int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM resource WHERE resource_type = 'Patient'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	reset := func(t *testing.T) {
		t.Helper()
		if _, err := db.Exec(ctx, `TRUNCATE note`); err != nil {
			t.Fatal(err)
		}
	}
	alone := func(log []string, sql string) bool {
		for _, s := range log {
			if strings.HasPrefix(s, "query: ") && strings.Contains(s, sql) {
				return true
			}
		}
		return false
	}

	t.Run("it goes with the next query, which sees it", func(t *testing.T) {
		reset(t)
		var seen int
		var readToTheEnd []int
		err := write(t, note(1, "first"), hookFunc(func(ctx context.Context, tx pgx.Tx, _ []fhir.Change) error {
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM note WHERE n = $1`, 1).Scan(&seen); err != nil {
				return err
			}
			// Rows read to their end and never closed give the connection back, as pgx's do.
			if err := fhir.SendWithNext(ctx, tx, "noting 2", `INSERT INTO note (n, what) VALUES ($1, $2)`, 2, "second"); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, `SELECT n FROM note WHERE n >= $1 ORDER BY n`, 1)
			if err != nil {
				return err
			}
			for rows.Next() {
				var n int
				if err := rows.Scan(&n); err != nil {
					return err
				}
				readToTheEnd = append(readToTheEnd, n)
			}
			if err := rows.Err(); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE note SET what = what || $1`, "!")
			return err
		}))
		if err != nil {
			t.Fatal(err)
		}
		log := sent.take()
		if seen != 1 || fmt.Sprint(readToTheEnd) != "[1 2]" {
			t.Errorf("the next statements saw %d and %v, want 1 and [1 2]", seen, readToTheEnd)
		}
		if got := notes(t); got != "1:first! 2:second!" {
			t.Errorf("notes %q, want 1:first! 2:second!", got)
		}
		if alone(log, "INSERT INTO note") {
			t.Errorf("a queued INSERT was sent alone:\n%s", strings.Join(log, "\n"))
		}
		var carried int
		for _, s := range log {
			if strings.HasPrefix(s, "batch: INSERT INTO note") && strings.Contains(s, "| SELECT") {
				carried++
			}
		}
		if carried != 2 {
			t.Errorf("%d batches carried a queued INSERT with a SELECT, want 2:\n%s", carried, strings.Join(log, "\n"))
		}
	})

	t.Run("it is sent before the commit when nothing follows", func(t *testing.T) {
		reset(t)
		if err := write(t, note(3, "last")); err != nil {
			t.Fatal(err)
		}
		if got := notes(t); got != "3:last" {
			t.Errorf("notes %q, want 3:last", got)
		}
	})

	t.Run("it fails the transaction, named, and nothing is written", func(t *testing.T) {
		reset(t)
		before := patients(t)
		var queryErr error
		err := write(t, note(-1, "breaks the check"), hookFunc(func(ctx context.Context, tx pgx.Tx, _ []fhir.Change) error {
			var n int
			queryErr = tx.QueryRow(ctx, `SELECT count(*) FROM note WHERE n > $1`, 0).Scan(&n)
			return queryErr
		}))
		if err == nil || !strings.Contains(err.Error(), "noting -1") || !strings.Contains(err.Error(), "note_n_check") {
			t.Fatalf("InTx returned %v, want the queued statement's error, named", err)
		}
		if queryErr == nil {
			t.Error("the statement the failed one travelled with reported no error")
		}
		if got := notes(t); got != "" {
			t.Errorf("notes %q after a failed transaction, want none", got)
		}
		if after := patients(t); after != before {
			t.Errorf("%d Patients after a failed transaction, %d before", after, before)
		}
	})

	t.Run("a savepoint rolled back after it does not undo it", func(t *testing.T) {
		reset(t)
		err := write(t, note(4, "before the savepoint"), hookFunc(func(ctx context.Context, tx pgx.Tx, _ []fhir.Change) error {
			sp, err := tx.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := sp.Exec(ctx, `INSERT INTO note (n, what) VALUES ($1, $2)`, 5, "in the savepoint"); err != nil {
				return err
			}
			return sp.Rollback(ctx)
		}))
		if err != nil {
			t.Fatal(err)
		}
		if got := notes(t); got != "4:before the savepoint" {
			t.Errorf("notes %q, want only 4, written before the savepoint", got)
		}
	})

	t.Run("a hook's failure undoes it", func(t *testing.T) {
		reset(t)
		err := write(t, note(6, "undone"), hookFunc(func(ctx context.Context, tx pgx.Tx, _ []fhir.Change) error {
			if _, err := tx.Exec(ctx, `UPDATE note SET what = $1`, "seen"); err != nil {
				return err
			}
			return fmt.Errorf("a business rule refuses the write")
		}))
		if err == nil || !strings.Contains(err.Error(), "business rule") {
			t.Fatalf("InTx returned %v, want the hook's error", err)
		}
		if got := notes(t); got != "" {
			t.Errorf("notes %q after the hook failed, want none", got)
		}
	})

	t.Run("it is sent by a store without hooks too", func(t *testing.T) {
		reset(t)
		store := fhir.NewStore(db, searchparam.Default(), time.Now)
		err := store.InTx(ctx, func(tx pgx.Tx) error {
			return fhir.SendWithNext(ctx, tx, "noting 8", `INSERT INTO note (n, what) VALUES ($1, $2)`, 8, "no hooks")
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := notes(t); got != "8:no hooks" {
			t.Errorf("notes %q, want 8:no hooks", got)
		}
	})

	// The BEGIN is such a statement too: a transaction of InTx begins in the batch of its first
	// statement, and gives its connection back whatever ends it.
	idle := func(t *testing.T) {
		t.Helper()
		if n := db.Stat().AcquiredConns(); n != 0 {
			t.Errorf("%d connections still held after the transaction", n)
		}
	}
	store := fhir.NewStore(db, searchparam.Default(), time.Now)
	t.Run("the BEGIN goes with the first statement", func(t *testing.T) {
		reset(t)
		sent.take()
		err := store.InTx(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO note (n, what) VALUES ($1, $2)`, 9, "first")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		log := sent.take()
		if len(log) != 2 || log[0] != "batch: begin | INSERT INTO note (n, what) VALUES ($1, $2)" || log[1] != "query: commit" {
			t.Errorf("sent:\n%s\nwant the BEGIN and the INSERT in one batch, then the commit", strings.Join(log, "\n"))
		}
		if got := notes(t); got != "9:first" {
			t.Errorf("notes %q, want 9:first", got)
		}
		idle(t)
	})
	t.Run("its time limit is set in that batch and holds", func(t *testing.T) {
		sent.take()
		limited := fhir.WithStatementTimeout(ctx, 50*time.Millisecond, "A_LIMIT")
		err := store.InTx(limited, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SELECT pg_sleep($1)`, 5.0)
			return err
		})
		if !strings.Contains(fmt.Sprint(err), "A_LIMIT") {
			t.Errorf("InTx returned %v, want the time limit's outcome", err)
		}
		log := sent.take()
		if len(log) == 0 || log[0] != "batch: begin | SELECT set_config('statement_timeout', $1, true) | SELECT pg_sleep($1)" {
			t.Errorf("sent:\n%s\nwant the BEGIN, the limit and the statement in one batch", strings.Join(log, "\n"))
		}
		idle(t)
	})
	t.Run("a transaction that sends nothing costs nothing", func(t *testing.T) {
		sent.take()
		if err := store.InTx(ctx, func(tx pgx.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := store.InTx(ctx, func(tx pgx.Tx) error { return fmt.Errorf("refused before writing") }); err == nil {
			t.Error("InTx dropped fn's error")
		}
		if log := sent.take(); len(log) != 0 {
			t.Errorf("sent:\n%s\nwant nothing", strings.Join(log, "\n"))
		}
		idle(t)
	})
	t.Run("a first statement that cannot be pipelined runs inside it", func(t *testing.T) {
		reset(t)
		sent.take()
		err := store.InTx(ctx, func(tx pgx.Tx) error {
			// No arguments: pgx sends it by the simple protocol, so the BEGIN goes first alone.
			if _, err := tx.Exec(ctx, `INSERT INTO note (n, what) VALUES (10, 'no arguments')`); err != nil {
				return err
			}
			return fmt.Errorf("refused after writing")
		})
		if err == nil || !strings.Contains(err.Error(), "refused after writing") {
			t.Fatalf("InTx returned %v, want fn's error", err)
		}
		log := sent.take()
		if got := notes(t); got != "" {
			t.Errorf("notes %q after a rolled-back transaction, want none", got)
		}
		if len(log) != 3 || log[0] != "batch: begin" || !strings.HasPrefix(log[1], "query: INSERT INTO note") || log[2] != "query: rollback" {
			t.Errorf("sent:\n%s\nwant the BEGIN, the INSERT, the rollback", strings.Join(log, "\n"))
		}
		idle(t)
	})
	t.Run("a failing first statement or a panic leaves nothing and gives the connection back", func(t *testing.T) {
		reset(t)
		err := store.InTx(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO note (n, what) VALUES ($1, $2)`, -2, "breaks the check")
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "note_n_check") {
			t.Errorf("InTx returned %v, want the INSERT's error", err)
		}
		idle(t)
		func() {
			defer func() {
				if recover() == nil {
					t.Error("the panic did not reach InTx's caller")
				}
			}()
			store.InTx(ctx, func(tx pgx.Tx) error { //nolint:errcheck // it panics
				if _, err := tx.Exec(ctx, `INSERT INTO note (n, what) VALUES ($1, $2)`, 11, "then a panic"); err != nil {
					return err
				}
				panic("a bug in a write")
			})
		}()
		idle(t)
		if got := notes(t); got != "" {
			t.Errorf("notes %q, want none", got)
		}
	})

	t.Run("a dry run begins the same way, under its time limit, and keeps nothing", func(t *testing.T) {
		reset(t)
		sent.take()
		err := store.DryRun(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO note (n, what) VALUES ($1, $2)`, 12, "tried out")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		log := sent.take()
		if len(log) != 2 || log[0] != "batch: begin | INSERT INTO note (n, what) VALUES ($1, $2)" || log[1] != "query: rollback" {
			t.Errorf("sent:\n%s\nwant the BEGIN and the INSERT in one batch, then the rollback", strings.Join(log, "\n"))
		}
		limited := fhir.WithStatementTimeout(ctx, 50*time.Millisecond, "A_LIMIT")
		err = store.DryRun(limited, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SELECT pg_sleep($1)`, 5.0)
			return err
		})
		if !strings.Contains(fmt.Sprint(err), "A_LIMIT") {
			t.Errorf("DryRun returned %v, want the time limit's outcome", err)
		}
		if got := notes(t); got != "" {
			t.Errorf("notes %q after dry runs, want none", got)
		}
		idle(t)
	})

	t.Run("outside a store transaction it runs at once", func(t *testing.T) {
		reset(t)
		if err := fhir.SendWithNext(ctx, db, "noting 7", `INSERT INTO note (n, what) VALUES ($1, $2)`, 7, "now"); err != nil {
			t.Fatal(err)
		}
		if got := notes(t); got != "7:now" {
			t.Errorf("notes %q, want 7:now", got)
		}
		err := fhir.SendWithNext(ctx, db, "noting 0", `INSERT INTO note (n, what) VALUES ($1, $2)`, 0, "refused")
		if err == nil || !strings.HasPrefix(err.Error(), "noting 0: ") {
			t.Errorf("SendWithNext returned %v, want the INSERT's error, named", err)
		}
	})
}
