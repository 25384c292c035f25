// Package schedules runs cartreg's periodic work, such as deriving the follow-up Tasks each
// infusion is due, on several replicas that share one database.
//
// robfig/cron decides when a job runs; PostgreSQL decides who runs it. Each activation of a job
// is a slot, named by its scheduled time, which every replica computes alike. Running a slot
// takes a transaction-scoped advisory lock on the job, so one replica at a time works on it,
// and inserts the slot into schedule_run under a unique key, so a slot that has been run is
// never run again. Jobs should derive what ought to exist from the data rather than act on
// "what happened since last time": then a slot missed during downtime, or one whose run
// failed, is made good by the next.
package schedules

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/robfig/cron/v3"
)

// Job is periodic work.
type Job struct {
	Name string
	// Spec is when it runs: a standard five-field cron spec ("30 5 * * *") or a descriptor
	// such as "@daily", in the scheduler's time zone.
	Spec string
	// Run does the work for one slot; slot is the scheduled time the run stands for.
	Run func(ctx context.Context, slot time.Time) error
}

// Options tune a Scheduler.
type Options struct {
	// Location is the time zone of the specs; UTC if nil.
	Location *time.Location
	// Seconds makes specs take a leading seconds field, for tests that cannot wait minutes.
	Seconds bool
	// Now is the clock CatchUp reads; time.Now if nil.
	Now func() time.Time
}

// Scheduler runs jobs on their schedules, each slot once across all replicas.
type Scheduler struct {
	db     *pgxpool.Pool
	parser cron.Parser
	loc    *time.Location
	now    func() time.Time
	logger *slog.Logger
	cron   *cron.Cron
	ctx    context.Context
	cancel context.CancelFunc
}

// New returns a scheduler; add jobs, then Start it.
func New(db *pgxpool.Pool, logger *slog.Logger, opts Options) *Scheduler {
	loc := opts.Location
	if loc == nil {
		loc = time.UTC
	}
	fields := cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor
	if opts.Seconds {
		fields |= cron.Second
	}
	parser := cron.NewParser(fields)
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Scheduler{db: db, parser: parser, loc: loc, now: now, logger: logger,
		cron: cron.New(cron.WithLocation(loc), cron.WithParser(parser)), ctx: ctx, cancel: cancel}
}

// Add schedules job. It fails on a spec cron cannot parse.
func (s *Scheduler) Add(job Job) error {
	var id cron.EntryID
	id, err := s.cron.AddFunc(job.Spec, func() {
		// Prev is the activation that fired: the same instant on every replica.
		slot := s.cron.Entry(id).Prev
		if _, err := s.RunSlot(s.ctx, job, slot); err != nil {
			s.logger.Error("scheduled job failed", "job", job.Name, "slot", slot, "error", err)
		}
	})
	if err != nil {
		return fmt.Errorf("schedule %q for job %s: %w", job.Spec, job.Name, err)
	}
	return nil
}

// LatestSlot is the last activation of spec at or before at, looked for up to a year back:
// the slot a replica that was down when it fired should still run.
func (s *Scheduler) LatestSlot(spec string, at time.Time) (time.Time, bool, error) {
	sched, err := s.parser.Parse(spec)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("schedule %q: %w", spec, err)
	}
	at = at.In(s.loc)
	// Walk forward from a little before the window, in growing steps, to the last
	// activation not after at: cron schedules only answer "next".
	const day = 24 * time.Hour
	for _, back := range []time.Duration{time.Hour, day, 8 * day, 32 * day, 367 * day} {
		var latest time.Time
		for t := sched.Next(at.Add(-back)); !t.IsZero() && !t.After(at); t = sched.Next(t) {
			latest = t
		}
		if !latest.IsZero() {
			return latest, true, nil
		}
	}
	return time.Time{}, false, nil
}

// CatchUp runs job's latest slot now unless it has been run: at start-up, it makes good the
// run a downtime missed. Every replica computes the same slot, so starting several at once
// still runs it once.
func (s *Scheduler) CatchUp(ctx context.Context, job Job) (ran bool, err error) {
	slot, ok, err := s.LatestSlot(job.Spec, s.now())
	if err != nil || !ok {
		return false, err
	}
	return s.RunSlot(ctx, job, slot)
}

// Start runs the schedule in the background.
func (s *Scheduler) Start() { s.cron.Start() }

// Stop stops scheduling and waits for running jobs to finish; if ctx ends first, it cancels
// their context and returns.
func (s *Scheduler) Stop(ctx context.Context) {
	done := s.cron.Stop()
	select {
	case <-done.Done():
	case <-ctx.Done():
	}
	s.cancel()
}

// RunSlot runs job for slot unless another replica is running the job right now or the slot
// has been run already; ran says whether it ran here. A run that fails is recorded with its
// error and not retried: the next slot makes good what this one missed. A run whose process
// dies leaves nothing recorded, so the slot may still be run.
func (s *Scheduler) RunSlot(ctx context.Context, job Job, slot time.Time) (ran bool, err error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("starting job %s: %w", job.Name, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	var locked bool
	if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(hashtext('cartreg.schedules:' || $1))`, job.Name).Scan(&locked); err != nil {
		return false, fmt.Errorf("locking job %s: %w", job.Name, err)
	}
	if !locked {
		s.logger.Debug("job is running on another replica", "job", job.Name, "slot", slot)
		return false, nil
	}
	tag, err := tx.Exec(ctx, `INSERT INTO schedule_run (job, slot, started_at) VALUES ($1, $2, clock_timestamp())
		ON CONFLICT (job, slot) DO NOTHING`, job.Name, slot)
	if err != nil {
		return false, fmt.Errorf("claiming slot %s of job %s: %w", slot, job.Name, err)
	}
	if tag.RowsAffected() == 0 {
		s.logger.Debug("slot already run", "job", job.Name, "slot", slot)
		return false, nil
	}

	started := time.Now()
	jobErr := runRecovering(ctx, job, slot)
	var errText *string
	if jobErr != nil {
		msg := jobErr.Error()
		errText = &msg
	}
	// What the run did is recorded even if it was cancelled meanwhile: a cancelled run that
	// left its slot unrecorded would be run again.
	record := context.WithoutCancel(ctx)
	if _, err := tx.Exec(record, `UPDATE schedule_run SET finished_at = clock_timestamp(), error = $3
		WHERE job = $1 AND slot = $2`, job.Name, slot, errText); err != nil {
		return true, fmt.Errorf("recording slot %s of job %s: %w", slot, job.Name, err)
	}
	if err := tx.Commit(record); err != nil {
		return true, fmt.Errorf("recording slot %s of job %s: %w", slot, job.Name, err)
	}
	s.logger.Info("job ran", "job", job.Name, "slot", slot, "duration", time.Since(started), "error", jobErr)
	return true, jobErr
}

func runRecovering(ctx context.Context, job Job, slot time.Time) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("job %s panicked: %v", job.Name, r)
		}
	}()
	return job.Run(ctx, slot)
}
