package fhir

import "github.com/jackc/pgx/v5"

// endingRows are a query's rows read from a pipeline that must be ended once they are done
// with: end reads the pipeline to its end (and, for the limited reader, gives the connection
// back to the pool). It runs once, at the last row or at Close.
type endingRows struct {
	pgx.Rows
	end    func() error
	ended  bool
	endErr error
}

// Next ends the pipeline once the last row is read, as pgx's rows end their query then: a caller that runs its next statement before its deferred Close (a search's count
// after its page) would otherwise hold two connections, and a full pool of such callers
// would wait on each other.
func (r *endingRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *endingRows) Close() {
	r.Rows.Close()
	if !r.ended {
		r.ended, r.endErr = true, r.end()
	}
}

func (r *endingRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.endErr
}

// firstRow is QueryRow's row made from Query's answer, as pgx's own: the first row, or
// pgx.ErrNoRows.
type firstRow struct {
	rows pgx.Rows
	err  error
}

func (r firstRow) Scan(dest ...any) error {
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
