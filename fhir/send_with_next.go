package fhir

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// A write transaction pays a round trip to PostgreSQL for every statement it waits on. Some
// statements have nothing to wait for: the audit record of a write is an INSERT whose only
// possible answer that matters is an error, and an error fails the whole transaction whenever
// it arrives. SendWithNext queues such a statement on the store's transaction, and the
// transaction sends it in one pipelined batch with the next statement that is sent anyway (the
// registry's projection, the Subscription lookup), or alone before the transaction commits:
// one round trip fewer for every write, with the same rows written in the same transaction.

// pending is a statement queued by SendWithNext.
type pending struct {
	what, sql string
	args      []any
}

// SendWithNext runs sql in tx: in a transaction of Store.InTx (or DryRun), together with the
// transaction's next statement, and before it commits in any case; elsewhere at once. An
// error is reported, prefixed by what, by the statement it travelled with, and fails the
// transaction. Args must not be empty (a statement without arguments may hold several, which
// a batch cannot send).
func SendWithNext(ctx context.Context, tx DBTX, what, sql string, args ...any) error {
	if t, ok := tx.(*trackedTx); ok && canPipeline(args) {
		t.pending = append(t.pending, pending{what: what, sql: sql, args: args})
		return nil
	}
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// canPipeline says whether a statement with these arguments can go in a batch as it would be
// sent alone: pgx sends a statement without arguments by the simple protocol (which allows
// several statements in one string), and honours a query's exec mode or result formats only
// outside a batch.
func canPipeline(args []any) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0].(type) {
	case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
		return false
	}
	return true
}

// sendPending sends the queued statements on their own: before a statement that cannot carry
// them, a savepoint, a COPY, or the commit.
func (t *trackedTx) sendPending(ctx context.Context) error {
	if len(t.pending) == 0 {
		return nil
	}
	br, err := t.sendWithPending(ctx, &pgx.Batch{})
	if err != nil {
		return err
	}
	return br.Close()
}

// sendWithPending sends the queued statements, then b, as one batch, and reads the queued
// statements' results: what is left to read is b's.
func (t *trackedTx) sendWithPending(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	queued := t.pending
	t.pending = nil
	all := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(queued)+b.Len())}
	for _, p := range queued {
		all.Queue(p.sql, p.args...)
	}
	all.QueuedQueries = append(all.QueuedQueries, b.QueuedQueries...)
	br := t.Tx.SendBatch(ctx, all)
	for _, p := range queued {
		if _, err := br.Exec(); err != nil {
			err = fmt.Errorf("%s: %w", p.what, err)
			br.Close() //nolint:errcheck // the queued statement's error is the one to report
			return nil, err
		}
	}
	return br, nil
}

// Exec implements pgx.Tx, carrying the queued statements.
func (t *trackedTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if len(t.pending) == 0 {
		return t.Tx.Exec(ctx, sql, args...)
	}
	if !canPipeline(args) {
		if err := t.sendPending(ctx); err != nil {
			return pgconn.CommandTag{}, err
		}
		return t.Tx.Exec(ctx, sql, args...)
	}
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	br, err := t.sendWithPending(ctx, b)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// Query implements pgx.Tx, carrying the queued statements.
func (t *trackedTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if len(t.pending) == 0 {
		return t.Tx.Query(ctx, sql, args...)
	}
	if !canPipeline(args) {
		if err := t.sendPending(ctx); err != nil {
			return errRows{err}, err
		}
		return t.Tx.Query(ctx, sql, args...)
	}
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	br, err := t.sendWithPending(ctx, b)
	if err != nil {
		return errRows{err}, err
	}
	rows, err := br.Query()
	if err != nil {
		br.Close() //nolint:errcheck // the query's error is the one to report
		return nil, err
	}
	return &batchRows{Rows: rows, batch: br}, nil
}

// QueryRow implements pgx.Tx, carrying the queued statements.
func (t *trackedTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if len(t.pending) == 0 {
		return t.Tx.QueryRow(ctx, sql, args...)
	}
	rows, err := t.Query(ctx, sql, args...)
	return &firstRow{rows: rows, err: err}
}

// SendBatch implements pgx.Tx, putting the queued statements first in b.
func (t *trackedTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if len(t.pending) == 0 {
		return t.Tx.SendBatch(ctx, b)
	}
	br, err := t.sendWithPending(ctx, b)
	if err != nil {
		return failedBatch{err}
	}
	return br
}

// CopyFrom implements pgx.Tx: COPY cannot be pipelined, so the queued statements go first.
func (t *trackedTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.sendPending(ctx); err != nil {
		return 0, err
	}
	return t.Tx.CopyFrom(ctx, table, columns, src)
}

// Begin implements pgx.Tx. The queued statements go first: sent inside the savepoint, they
// would be undone with it.
func (t *trackedTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := t.sendPending(ctx); err != nil {
		return nil, err
	}
	return t.Tx.Begin(ctx)
}

// Commit implements pgx.Tx, sending the queued statements first. (Store.InTx commits the
// transaction it began, after Store.Flush has sent them.)
func (t *trackedTx) Commit(ctx context.Context) error {
	if err := t.sendPending(ctx); err != nil {
		return err
	}
	return t.Tx.Commit(ctx)
}

// Rollback implements pgx.Tx: the queued statements are dropped with the rest.
func (t *trackedTx) Rollback(ctx context.Context) error {
	t.pending = nil
	return t.Tx.Rollback(ctx)
}

// batchRows are a query's rows read from a batch, which must be closed, and is, with them.
type batchRows struct {
	pgx.Rows
	batch    pgx.BatchResults
	closeErr error
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.closeBatch()
	return false
}

func (r *batchRows) Close() {
	r.Rows.Close()
	r.closeBatch()
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.closeErr
}

func (r *batchRows) closeBatch() {
	if r.batch != nil {
		r.closeErr = r.batch.Close()
		r.batch = nil
	}
}

// firstRow is QueryRow's answer from rows, as pgx gives it: the first row, or ErrNoRows.
type firstRow struct {
	rows pgx.Rows
	err  error
}

func (r *firstRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// failedBatch is the results of a batch whose queued statements failed: every result is that
// error.
type failedBatch struct{ err error }

func (b failedBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b failedBatch) Query() (pgx.Rows, error)         { return errRows(b), b.err }
func (b failedBatch) QueryRow() pgx.Row                { return &firstRow{err: b.err} }
func (b failedBatch) Close() error                     { return b.err }
func (b failedBatch) Tx() pgx.Tx                       { return nil }

// errRows are the rows of a query that was never run, as pgx gives them: closed, with the error.
type errRows struct{ err error }

func (r errRows) Close()                                       {}
func (r errRows) Err() error                                   { return r.err }
func (r errRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (r errRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (r errRows) Next() bool                                   { return false }
func (r errRows) Scan(...any) error                            { return r.err }
func (r errRows) Values() ([]any, error)                       { return nil, r.err }
func (r errRows) RawValues() [][]byte                          { return nil }
func (r errRows) Conn() *pgx.Conn                              { return nil }
func (r errRows) TypeMap() *pgtype.Map                         { return nil }
