package fhir

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// limitedReader is what searches, histories and $everything read through: each statement goes
// to PostgreSQL in one round trip, as a pipeline of two statements (one Sync) that PostgreSQL
// runs as one implicit transaction. The first makes that transaction read-only and limits its
// statements to the search timeout; the second is the read, parsed, planned and run under
// those limits (a lock that keeps it waiting while PostgreSQL parses it counts against the
// limit too). Beginning and committing a read-only transaction around the statements cost
// two more round trips a search, three in all.
//
// The read is sent as pgx's QueryExecModeExec sends a query (an unnamed statement, its
// parameters typed from their Go values): planned for its own values every time. A prepared
// statement, which PostgreSQL may switch to a generic plan made without the values from its
// sixth run, was tried on make bench's 1.1 million resources and took Patient?name&birthdate's
// median from 1.8 to 3.2 ms, and the Observation search ran out of its time limit; pgx also
// prepares a batch's new statements in a round trip of their own, outside the limits.
type limitedReader struct {
	pool    *pgxpool.Pool
	timeout time.Duration
}

// limitSQL sets the implicit transaction's limits; local settings end with it, so the pooled
// connection goes back as it came.
const limitSQL = `SELECT set_config('transaction_read_only', 'on', true), set_config('statement_timeout', $1, true)`

func (r limitedReader) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if len(args) > 0 { // the statement is sent as QueryExecModeExec would send it, whatever it asks
		if _, ok := args[0].(pgx.QueryExecMode); ok {
			args = args[1:]
		}
	}
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	typeMap := conn.Conn().TypeMap()
	batch := &pgconn.Batch{}
	var params pgx.ExtendedQueryBuilder
	for _, q := range []struct {
		sql  string
		args []any
	}{{limitSQL, []any{StatementTimeoutSetting(r.timeout)}}, {sql, args}} {
		if err := params.Build(typeMap, nil, q.args); err != nil {
			conn.Release()
			return nil, err
		}
		batch.ExecParams(q.sql, params.ParamValues, nil, params.ParamFormats, params.ResultFormats)
	}
	results := conn.Conn().PgConn().ExecBatch(ctx, batch)
	end := func() error {
		err := results.Close()
		conn.Release()
		return err
	}
	// A statement that fails ends the pipeline: its error is the one results.Close returns.
	fail := func(err error) (pgx.Rows, error) {
		if endErr := end(); endErr != nil {
			return nil, endErr
		}
		return nil, err
	}
	if !results.NextResult() {
		return fail(errors.New("reading: no result for the limits"))
	}
	if _, err := results.ResultReader().Close(); err != nil {
		return fail(err)
	}
	if !results.NextResult() {
		return fail(errors.New("reading: no result for the read"))
	}
	return &endingRows{Rows: pgx.RowsFromResultReader(typeMap, results.ResultReader()), end: end}, nil
}

func (r limitedReader) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := r.Query(ctx, sql, args...)
	return firstRow{rows: rows, err: err}
}
