package fhir

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A write transaction pays a round trip to PostgreSQL for every statement it waits on. Some
// statements have nothing to wait for: the audit record of a write is an INSERT whose only
// possible answer that matters is an error, and an error fails the whole transaction whenever
// it arrives. SendWithNext queues such a statement on the store's transaction, and the
// transaction sends it in one pipelined batch with the next statement that is sent anyway (the
// registry's projection, the Subscription lookup), or alone before the transaction commits:
// one round trip fewer for every write, with the same rows written in the same transaction.

// The BEGIN itself is such a statement: its answer matters only when it is an error. A
// transaction of Store.InTx or Store.DryRun begins lazily, its BEGIN (and its statement time limit) sent in
// the batch of its first statement (pgx's Batch.BeginTx), so a write is one round trip
// shorter again. Until then trackedTx.Tx is nil, and there is nothing to commit or roll back.

// lazyBegin is what a transaction not yet begun needs to begin: where to send its first
// batch (the pool, which then keeps the connection for the transaction) and its statement
// time limit, if any.
type lazyBegin struct {
	db interface {
		SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
	}
	timeout string // a statement_timeout setting, or "" for none
}

// setTimeoutSQL limits the transaction's later statements; a local setting ends with it.
const setTimeoutSQL = `SELECT set_config('statement_timeout', $1, true)`

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

// flushPending sends the queued statements on their own, when there are any (and the BEGIN
// with them, if the transaction has not begun): what the write hooks queued and no statement
// carried.
func (t *trackedTx) flushPending(ctx context.Context) error {
	if len(t.pending) == 0 {
		return nil
	}
	return t.sendPending(ctx)
}

// sendPending begins the transaction if it has not begun and sends the queued statements, on
// their own: before a statement that cannot carry them, a savepoint, a COPY, or the commit.
func (t *trackedTx) sendPending(ctx context.Context) error {
	if t.ready() {
		return nil
	}
	br, err := t.sendWithPending(ctx, &pgx.Batch{})
	if err != nil {
		return err
	}
	return br.Close()
}

// sendWithPending sends the BEGIN of a transaction not yet begun, the queued statements, then
// b, as one batch, and reads the results of all but b's: what is left to read is b's.
func (t *trackedTx) sendWithPending(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	queued := t.pending
	t.pending = nil
	all := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(queued)+b.Len()+2)}
	begin := t.begin
	if begin != nil {
		all.BeginTx(pgx.TxOptions{})
		if begin.timeout != "" {
			queued = append([]pending{{what: "setting statement_timeout", sql: setTimeoutSQL, args: []any{begin.timeout}}}, queued...)
		}
	}
	for _, p := range queued {
		all.Queue(p.sql, p.args...)
	}
	all.QueuedQueries = append(all.QueuedQueries, b.QueuedQueries...)
	var br pgx.BatchResults
	if begin == nil {
		br = t.Tx.SendBatch(ctx, all)
	} else {
		// From here the transaction is the batch's, begun or closed: InTx rolls it back on an
		// error, which gives its connection back to the pool either way.
		br = begin.db.SendBatch(ctx, all)
		t.Tx, t.begin = br.Tx(), nil
		if _, err := br.Exec(); err != nil {
			br.Close() //nolint:errcheck // the BEGIN's error is the one to report
			return nil, fmt.Errorf("beginning a transaction: %w", err)
		}
	}
	for _, p := range queued {
		if _, err := br.Exec(); err != nil {
			err = fmt.Errorf("%s: %w", p.what, err)
			br.Close() //nolint:errcheck // the queued statement's error is the one to report
			return nil, err
		}
	}
	return br, nil
}

// carry sends the queued statements: with sql in one batch when it can be pipelined (ok, and
// what is left to read of br is sql's), otherwise alone, before the caller sends sql itself.
func (t *trackedTx) carry(ctx context.Context, sql string, args []any) (br pgx.BatchResults, ok bool, err error) {
	if !canPipeline(args) {
		return nil, false, t.sendPending(ctx)
	}
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	br, err = t.sendWithPending(ctx, b)
	return br, err == nil, err
}

// ready says whether a statement can go to the transaction as it is: it has begun and nothing
// is queued to go with the statement.
func (t *trackedTx) ready() bool { return t.begin == nil && len(t.pending) == 0 }

// Exec implements pgx.Tx, carrying the queued statements.
func (t *trackedTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.ready() {
		return t.Tx.Exec(ctx, sql, args...)
	}
	br, ok, err := t.carry(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	if !ok {
		return t.Tx.Exec(ctx, sql, args...)
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// Query implements pgx.Tx, carrying the queued statements.
func (t *trackedTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.ready() {
		return t.Tx.Query(ctx, sql, args...)
	}
	br, ok, err := t.carry(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	if !ok {
		return t.Tx.Query(ctx, sql, args...)
	}
	rows, err := br.Query()
	if err != nil {
		br.Close() //nolint:errcheck // the query's error is the one to report
		return nil, err
	}
	return &endingRows{Rows: rows, end: br.Close}, nil
}

// QueryRow implements pgx.Tx, carrying the queued statements.
func (t *trackedTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if t.ready() {
		return t.Tx.QueryRow(ctx, sql, args...)
	}
	rows, err := t.Query(ctx, sql, args...)
	return firstRow{rows: rows, err: err}
}

// SendBatch implements pgx.Tx, putting the queued statements first in b.
func (t *trackedTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if t.ready() {
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

// Commit implements pgx.Tx, sending the queued statements first. A transaction that never
// began has nothing to commit.
func (t *trackedTx) Commit(ctx context.Context) error {
	if err := t.flushPending(ctx); err != nil {
		return err
	}
	if t.Tx == nil {
		return nil
	}
	return t.Tx.Commit(ctx)
}

// Rollback implements pgx.Tx: the queued statements are dropped with the rest, and a
// transaction that never began has nothing to roll back.
func (t *trackedTx) Rollback(ctx context.Context) error {
	t.pending, t.begin = nil, nil
	if t.Tx == nil {
		return nil
	}
	return t.Tx.Rollback(ctx)
}

// failedBatch is the results of a batch whose queued statements failed: every result is that
// error.
type failedBatch struct{ err error }

func (b failedBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b failedBatch) Query() (pgx.Rows, error)         { return nil, b.err }
func (b failedBatch) QueryRow() pgx.Row                { return firstRow{err: b.err} }
func (b failedBatch) Close() error                     { return b.err }
func (b failedBatch) Tx() pgx.Tx                       { return nil }
