package bulk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cartreg/cartreg/fhir"
)

// errGone means the job was deleted while it ran.
var errGone = errors.New("export job deleted")

// Run works on queued jobs until ctx ends: one job at a time, woken by a kick-off on this
// replica or every Config.Poll for jobs queued elsewhere (or left by a replica that died).
func (x *Exporter) Run(ctx context.Context) {
	tick := time.NewTicker(x.cfg.Poll)
	defer tick.Stop()
	for {
		for {
			worked, err := x.Work(ctx)
			if err != nil && ctx.Err() == nil {
				x.logger.Error("export worker", "error", err)
			}
			if !worked || err != nil || ctx.Err() != nil {
				break // a fault is tried again at the next tick, not at once
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-x.wake:
		}
	}
}

// Work takes one unfinished job no other worker holds and runs it to the end, or until ctx
// ends (it is then left for the next worker to resume). It reports whether it found one.
func (x *Exporter) Work(ctx context.Context) (bool, error) {
	rows, err := x.db.Query(ctx, `SELECT id FROM bulk_export_job WHERE state IN ('accepted', 'in-progress') ORDER BY created_at, id`)
	if err != nil {
		return false, fmt.Errorf("looking for export jobs: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, fmt.Errorf("looking for export jobs: %w", err)
	}
	for _, id := range ids {
		conn, locked, err := x.lock(ctx, id)
		if err != nil {
			return false, err
		}
		if !locked {
			continue
		}
		err = x.runLocked(ctx, id)
		x.unlock(conn, id)
		if errors.Is(err, errGone) {
			// Deleted while it ran: what was written after the DELETE removed the folder goes too.
			return true, os.RemoveAll(x.jobDir(id))
		}
		if errors.Is(err, errNoJob) {
			return true, nil
		}
		return true, err
	}
	return false, nil
}

// maxClaims is how often a job is taken up before it is failed: a worker that stops on a
// fault of the server's leaves the job to be tried again, and a fault that lasts must end.
const maxClaims = 20

// lockKey is the advisory lock of a job.
const lockKey = `hashtext('cartreg.bulk.job:' || $1)`

// lock takes the job's session advisory lock on a connection of its own, held while the job
// runs. Were the process to die, PostgreSQL would end the session and free the job.
func (x *Exporter) lock(ctx context.Context, id string) (*pgxpool.Conn, bool, error) {
	conn, err := x.db.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("locking an export job: %w", err)
	}
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+lockKey+`)`, id).Scan(&locked); err != nil {
		conn.Release()
		return nil, false, fmt.Errorf("locking an export job: %w", err)
	}
	if !locked {
		conn.Release()
	}
	return conn, locked, nil
}

// unlock frees the job's lock, even when the job's context has ended; a connection whose
// lock cannot be freed is closed, which frees it too.
func (x *Exporter) unlock(conn *pgxpool.Conn, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(`+lockKey+`)`, id); err != nil {
		_ = conn.Hijack().Close(ctx)
		return
	}
	conn.Release()
}

// runLocked runs a job whose lock this worker holds.
func (x *Exporter) runLocked(ctx context.Context, id string) error {
	// The job may have finished, or been deleted, between the listing and the lock.
	j, err := scanJob(x.db.QueryRow(ctx, `UPDATE bulk_export_job SET state = 'in-progress', claims = claims + 1, updated_at = $2
		WHERE id = $1 AND state IN ('accepted', 'in-progress') RETURNING `+jobColumns, id, x.now()))
	if err != nil {
		return err
	}
	if j.Claims > maxClaims {
		return x.fail(ctx, j, fmt.Errorf("taken up %d times without finishing", j.Claims))
	}
	if err := os.MkdirAll(x.jobDir(id), 0o700); err != nil {
		return x.fail(ctx, j, fmt.Errorf("making the export's folder: %w", err))
	}
	files, err := x.loadFiles(ctx, x.db, id)
	if err != nil {
		return err
	}
	recorded := map[string]file{}
	for _, f := range files {
		recorded[f.Name] = f
	}
	for _, typ := range j.Params.Types {
		f, ok := recorded[typ+".ndjson"]
		if !ok {
			f = file{Kind: "output", Type: typ, Name: typ + ".ndjson"}
			if _, err := x.db.Exec(ctx, `INSERT INTO bulk_export_file (job_id, kind, resource_type, name) VALUES ($1, 'output', $2, $3)
				ON CONFLICT DO NOTHING`, id, typ, f.Name); err != nil {
				return x.stopped(ctx, fmt.Errorf("recording an export file: %w", err))
			}
		}
		if f.Done && (f.Kind == "error" || f.Count == 0 || x.intact(j.ID, f)) {
			continue
		}
		if err := x.exportType(ctx, j, &f); err != nil {
			var o *fhir.Outcome
			if ctx.Err() != nil || errors.Is(err, errGone) || !errors.As(err, &o) {
				// Stopped, deleted, or a fault of the server's (the database, the disk): the
				// job stays as it is, for this worker or another to take up again.
				return x.stopped(ctx, err)
			}
			// The type's query itself is refused (a _typeFilter past the search limits): that
			// type gets an error file, the others are still exported.
			if err := x.writeError(ctx, j, typ, o); err != nil {
				return x.stopped(ctx, err)
			}
		}
	}
	tag, err := x.db.Exec(ctx, `UPDATE bulk_export_job SET state = 'completed', updated_at = $2, expires_at = $3 WHERE id = $1`,
		id, x.now(), x.now().Add(x.cfg.Retention))
	if err != nil {
		return x.stopped(ctx, fmt.Errorf("completing an export: %w", err))
	}
	if tag.RowsAffected() == 0 {
		return x.stopped(ctx, errGone)
	}
	return nil
}

// stopped is what a worker says of a job it could not finish: nothing, when its context ended
// (the next worker resumes it) or the job was deleted (its files go too).
func (x *Exporter) stopped(ctx context.Context, err error) error {
	if errors.Is(err, errGone) {
		return err
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// fail marks a job failed for its status to report. The client is told it failed; why is in
// the server's log.
func (x *Exporter) fail(ctx context.Context, j *job, cause error) error {
	x.logger.Error("export failed", "job", j.ID, "error", cause)
	_, err := x.db.Exec(ctx, `UPDATE bulk_export_job SET state = 'failed', error = $2, updated_at = $3, expires_at = $4 WHERE id = $1`,
		j.ID, "the server could not complete it; its log has why", x.now(), x.now().Add(x.cfg.Retention))
	return err
}

// exportType writes one type's file, a page at a time, from where its row says it got.
func (x *Exporter) exportType(ctx context.Context, j *job, f *file) error {
	path := filepath.Join(x.jobDir(j.ID), f.Name)
	fd, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s: %w", f.Name, err)
	}
	defer fd.Close()
	if st, err := fd.Stat(); err != nil {
		return fmt.Errorf("reading %s: %w", f.Name, err)
	} else if st.Size() < f.Bytes {
		// Pages recorded as written are not on disk (the files were lost, or the export
		// folder is not the one this job began in): cutting the file "back" would pad it
		// with zero bytes, so the type is written again from its start instead.
		x.logger.Warn("export file shorter than recorded: writing it again", "job", j.ID, "file", f.Name,
			"recorded_bytes", f.Bytes, "bytes", st.Size())
		f.Cursor, f.Count, f.Bytes = "", 0, 0
		if err := x.record(ctx, j.ID, f, false); err != nil {
			return err
		}
	}
	// A page written after the last recorded one (the worker stopped before recording it)
	// is cut off: it will be read and written again.
	if err := fd.Truncate(f.Bytes); err != nil {
		return fmt.Errorf("cutting %s back to its last page: %w", f.Name, err)
	}
	if _, err := fd.Seek(f.Bytes, 0); err != nil {
		return fmt.Errorf("seeking in %s: %w", f.Name, err)
	}
	q := fhir.ExportQuery{Type: f.Type, AsOf: j.TransactionTime, Since: j.Params.Since, Filters: j.Params.TypeFilters[f.Type],
		Compartment: j.Level != levelSystem, Patients: j.Patients, Base: j.Base, After: f.Cursor, Limit: x.cfg.PageSize}
	var buf bytes.Buffer
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		page, err := x.searcher.ExportPage(ctx, x.db, q)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		buf.Reset()
		for _, v := range page {
			if err := json.Compact(&buf, v.JSON); err != nil {
				return fmt.Errorf("writing %s: %w", v.Path(), err)
			}
			buf.WriteByte('\n')
		}
		if _, err := fd.Write(buf.Bytes()); err != nil {
			return fmt.Errorf("writing %s: %w", f.Name, err)
		}
		// On disk before the row says so: the row never claims what a crash could lose.
		if err := fd.Sync(); err != nil {
			return fmt.Errorf("writing %s: %w", f.Name, err)
		}
		q.After = page[len(page)-1].ID
		f.Cursor, f.Count, f.Bytes = q.After, f.Count+int64(len(page)), f.Bytes+int64(buf.Len())
		if err := x.record(ctx, j.ID, f, false); err != nil {
			return err
		}
		if x.OnPage != nil {
			x.OnPage(j.ID, f.Type, f.Count)
		}
		if len(page) < q.Limit {
			break
		}
	}
	if err := x.record(ctx, j.ID, f, true); err != nil {
		return err
	}
	if f.Count == 0 {
		_ = os.Remove(path)
	}
	return nil
}

// intact reports whether a finished file still holds every byte recorded of it.
func (x *Exporter) intact(jobID string, f file) bool {
	st, err := os.Stat(filepath.Join(x.jobDir(jobID), f.Name))
	return err == nil && st.Size() >= f.Bytes
}

// record writes how far a file got; errGone when its job was deleted meanwhile.
func (x *Exporter) record(ctx context.Context, jobID string, f *file, done bool) error {
	tag, err := x.db.Exec(ctx, `UPDATE bulk_export_file SET cursor = $3, count = $4, bytes = $5, done = $6
		WHERE job_id = $1 AND name = $2`, jobID, f.Name, f.Cursor, f.Count, f.Bytes, done)
	if err != nil {
		return fmt.Errorf("recording an export's progress: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return errGone
	}
	f.Done = done
	return nil
}

// writeError replaces what a failed type wrote with nothing, and records the OperationOutcome
// that says why in the type's error file.
func (x *Exporter) writeError(ctx context.Context, j *job, typ string, cause *fhir.Outcome) error {
	msg := fmt.Sprintf("the export of %s failed", typ)
	if len(cause.Issues) > 0 && cause.Status < http.StatusInternalServerError {
		msg += ": " + cause.Issues[0].Diagnostics
	}
	oo, err := fhir.MarshalOutcome([]fhir.Issue{{Severity: fhir.Error, Code: fhir.Exception, Diagnostics: msg}}, false)
	if err != nil {
		return err
	}
	var line bytes.Buffer
	if err := json.Compact(&line, oo); err != nil {
		return err
	}
	line.WriteByte('\n')
	name := typ + ".error.ndjson"
	if err := os.WriteFile(filepath.Join(x.jobDir(j.ID), name), line.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing an export's error file: %w", err)
	}
	_ = os.Remove(filepath.Join(x.jobDir(j.ID), typ+".ndjson"))
	return pgx.BeginFunc(ctx, x.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE bulk_export_file SET count = 0, bytes = 0, done = true WHERE job_id = $1 AND name = $2`,
			j.ID, typ+".ndjson"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO bulk_export_file (job_id, kind, resource_type, name, count, bytes, done)
			VALUES ($1, 'error', $2, $3, 1, $4, true) ON CONFLICT (job_id, name) DO UPDATE SET count = 1, bytes = $4, done = true`,
			j.ID, typ, name, line.Len())
		return err
	})
}

// Sweep deletes the jobs, and their files, that expired by now: finished ones past their
// retention, and unfinished ones past twice it (their client has long stopped asking).
func (x *Exporter) Sweep(ctx context.Context, now time.Time) (int, error) {
	rows, err := x.db.Query(ctx, `SELECT id FROM bulk_export_job
		WHERE (state IN ('completed', 'failed') AND expires_at <= $1) OR expires_at + $2::interval <= $1`, now, x.cfg.Retention)
	if err != nil {
		return 0, fmt.Errorf("finding expired exports: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("finding expired exports: %w", err)
	}
	for _, id := range ids {
		if err := x.remove(ctx, id); err != nil {
			return 0, err
		}
	}
	// Folders whose job is gone: a replica that deleted the row but died before the files.
	entries, err := os.ReadDir(x.cfg.Dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return len(ids), fmt.Errorf("reading the export folder: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || !validJobID(e.Name()) {
			continue
		}
		var exists bool
		if err := x.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM bulk_export_job WHERE id = $1)`, e.Name()).Scan(&exists); err != nil {
			return len(ids), err
		}
		if !exists {
			_ = os.RemoveAll(filepath.Join(x.cfg.Dir, e.Name()))
		}
	}
	return len(ids), nil
}
